//! The engine's timeline (`EngineOptions::trace`, `--trace FILE`) on the CPU backend with the
//! real default model, streamed: every pass has a bus copy and a compute span for each streamed
//! layer and a compute span for every running layer, the copy of later layers runs while
//! earlier ones compute (the overlap the pipeline exists for), tracing changes no token, and
//! `generate --trace` writes a file that parses as Chrome trace events with those rows.

use std::collections::BTreeMap;
use std::process::Command;

use slep_pipeline::Stage;
use vramless_engine::engine::{DataPath, Engine, EngineOptions, Home};

#[macro_use]
#[allow(dead_code)]
mod common;

fn opts(trace: bool) -> EngineOptions {
    EngineOptions {
        vram_budget: Some(130 << 20),
        ram_budget: Some(1 << 30),
        path: DataPath::Auto,
        ctx: 128,
        trace,
        verbose: false,
        ..EngineOptions::default()
    }
}

#[test]
fn a_streamed_run_traces_every_layer_and_the_copy_overlaps_compute() {
    let model = model_or_skip!();
    let prompt = common::prompt(&model);
    const N: usize = 6;
    let mut plain = Engine::open(&model, &opts(false)).unwrap();
    assert!(plain.trace().is_none(), "no trace unless asked");
    let want = plain.greedy(&prompt, N).unwrap();
    let mut e = Engine::open(&model, &opts(true)).unwrap();
    assert!(e.plan().streaming, "the budget streams some layers");
    let got = e.greedy(&prompt, N).unwrap();
    assert_eq!(got, want, "tracing changes no token");
    let passes = e.stats().passes as usize;
    assert!(passes >= N, "{passes} passes for {N} tokens");
    let trace = e.trace().expect("opened with trace").clone();
    let homes = e.plan().homes.clone();
    let streamed: Vec<u64> = homes
        .iter()
        .enumerate()
        .filter(|(_, h)| **h == Home::Pinned)
        .map(|(i, _)| i as u64)
        .collect();
    assert!(!streamed.is_empty());
    let mut count: BTreeMap<(Stage, u64), usize> = BTreeMap::new();
    for s in trace.spans() {
        assert!(s.end >= s.start);
        *count.entry((s.stage, s.key)).or_default() += 1;
    }
    for (i, h) in homes.iter().enumerate() {
        let i = i as u64;
        let computed = count.get(&(Stage::Compute, i)).copied().unwrap_or(0);
        assert_eq!(computed, passes, "layer {i} ({h:?}) computed once a pass");
        let copied = count.get(&(Stage::Copy, i)).copied().unwrap_or(0);
        if *h == Home::Pinned {
            assert_eq!(copied, passes, "streamed layer {i} copied once a pass");
        } else {
            assert_eq!(copied, 0, "layer {i} ({h:?}) is not copied");
        }
    }
    assert!(
        trace.overlap(Stage::Copy, Stage::Compute) > std::time::Duration::ZERO,
        "the bus copy ran while layers computed"
    );
    let text = vramless_engine::engine::trace::summary(&trace);
    assert!(
        text.contains("bus copy") && text.contains("of the wall time"),
        "{text}"
    );
}

#[test]
fn generate_writes_a_chrome_trace() {
    let model = model_or_skip!();
    let dir = std::env::temp_dir().join(format!("vramless-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("run.json");
    let out = Command::new(env!("CARGO_BIN_EXE_generate"))
        .args(["--model", model.to_str().unwrap(), "--prompt", "Hi"])
        .args(["--max-tokens", "4", "--ctx", "128"])
        .args(["--vram-budget", "130MiB", "--ram-budget", "1GiB"])
        .args(["--trace", file.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("trace: written to"), "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let events = v["traceEvents"].as_array().unwrap();
    let cats: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| e["ph"] == "X")
        .filter_map(|e| e["cat"].as_str())
        .collect();
    for c in ["copy", "compute", "wait"] {
        assert!(cats.contains(c), "a {c} span in {cats:?}");
    }
    assert!(events
        .iter()
        .any(|e| e["ph"] == "X" && e["name"].as_str().is_some_and(|n| n.starts_with("layer "))));
    // A program that cannot trace says so instead of ignoring the flag.
    let chat = Command::new(env!("CARGO_BIN_EXE_chat"))
        .args(["--model", model.to_str().unwrap()])
        .args(["--trace", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!chat.status.success());
    assert!(String::from_utf8_lossy(&chat.stderr).contains("--trace"));
    let _ = std::fs::remove_dir_all(&dir);
}
