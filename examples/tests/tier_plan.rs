//! Runs the `tier-plan` binary and checks its plan against counts derived here from the
//! numbers alone: layers in VRAM = floor((24 GiB - 2 GiB - 2 slots x 530 MB) / 530 MB), the
//! rest in RAM while it fits, skipped layers on storage.

use std::process::Command;

const GIB: u64 = 1 << 30;
const LAYER: u64 = 530_000_000;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tier-plan"))
        .args(args)
        .output()
        .expect("tier-plan runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The count on the "layers read from <tier>  N:" line.
fn read_from(text: &str, tier: &str) -> usize {
    let prefix = format!("layers read from {tier}");
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line for {tier} in:\n{text}"));
    line[prefix.len()..]
        .split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("cannot read count in {line:?}"))
}

#[test]
fn default_70b_plan() {
    let (ok, text) = run(&[]);
    assert!(ok, "{text}");
    let vram = ((24 * GIB - 2 * GIB - 2 * LAYER) / LAYER) as usize;
    assert_eq!(vram, 42);
    assert_eq!(read_from(&text, "VRAM"), vram);
    assert_eq!(read_from(&text, "RAM"), 80 - vram);
    assert_eq!(read_from(&text, "storage"), 0);
    // 42 x 530 MB at 1008 GB/s + 38 x (10 us + 530 MB at 25 GB/s).
    let serial =
        vram as f64 * LAYER as f64 / 1008e9 + (80 - vram) as f64 * (10e-6 + LAYER as f64 / 25e9);
    let expected = format!("{:.2} ms serial ({:.2} tok/s)", serial * 1e3, 1.0 / serial);
    assert!(text.contains(&expected), "want {expected:?} in:\n{text}");
}

#[test]
fn skip_20_layers() {
    let (ok, text) = run(&["--skip", "20"]);
    assert!(ok, "{text}");
    let vram = ((24 * GIB - 2 * GIB - 2 * LAYER) / LAYER) as usize;
    assert_eq!(read_from(&text, "VRAM"), vram);
    assert_eq!(read_from(&text, "RAM"), 60 - vram);
    assert!(text.contains("skipped (20 layers"), "{text}");
}

#[test]
fn everything_resident_needs_no_slots() {
    // 10 layers of 1 GB in 24 GiB - 2 GiB: all resident, no streaming slots kept.
    let (ok, text) = run(&["--layers", "10", "--layer-size", "1GB"]);
    assert!(ok, "{text}");
    assert_eq!(read_from(&text, "VRAM"), 10);
    assert!(text.contains("- 0 streaming slot(s)"), "{text}");
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    for args in [
        &["--skip", "79"][..],
        &["--skip-layers", "3,80"][..],
        &["--vram", "1GiB"][..],
        &["--layer-size", "12 parsecs"][..],
    ] {
        let (ok, text) = run(args);
        assert!(!ok, "{args:?} should fail:\n{text}");
        assert!(!text.contains("panicked"), "{args:?} panicked:\n{text}");
    }
}
