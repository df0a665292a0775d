//! Automatic per-item source choice and its reasons.

mod common;

use common::*;
use slep_pipeline::{choose_source, Location, MachineCaps, SourceKind};

fn caps(nvme: Result<(), &str>, odirect: Result<(), &str>, uring: Result<(), &str>) -> MachineCaps {
    MachineCaps {
        nvme_direct: nvme.map_err(String::from),
        o_direct: odirect.map_err(String::from),
        io_uring: uring.map_err(String::from),
    }
}

#[test]
fn preference_order_and_reasons() {
    let file = Location::File("/models/m.gguf".into());
    let all = caps(Ok(()), Ok(()), Ok(()));
    assert_eq!(
        choose_source(&Location::Resident, &all).kind,
        SourceKind::Resident
    );
    assert_eq!(
        choose_source(&Location::PinnedRam, &all).kind,
        SourceKind::PinnedRam
    );
    assert_eq!(choose_source(&file, &all).kind, SourceKind::NvmeDirect);

    let c = choose_source(
        &file,
        &caps(Err("device not bound to vfio-pci"), Ok(()), Ok(())),
    );
    assert_eq!(c.kind, SourceKind::CpuWorkerDirect);
    assert!(c.reason.contains("device not bound to vfio-pci"), "{c}");
    assert!(c.reason.contains("io_uring"), "{c}");

    let c = choose_source(
        &file,
        &caps(
            Err("no driver"),
            Ok(()),
            Err("io_uring setup failed: EPERM"),
        ),
    );
    assert_eq!(c.kind, SourceKind::CpuWorkerDirect);
    assert!(
        c.reason.contains("pread") && c.reason.contains("EPERM"),
        "{c}"
    );

    let c = choose_source(
        &file,
        &caps(Err("no driver"), Err("EINVAL on open"), Ok(())),
    );
    assert_eq!(c.kind, SourceKind::CpuWorkerMmap);
    assert!(
        c.reason.contains("EINVAL on open") && c.reason.contains("/models/m.gguf"),
        "{c}"
    );
    // Resident and pinned items never touch storage, whatever the machine lacks.
    let none = caps(Err("a"), Err("b"), Err("c"));
    assert_eq!(
        choose_source(&Location::PinnedRam, &none).kind,
        SourceKind::PinnedRam
    );
}

#[test]
fn probe_on_a_real_file() {
    let dir = scratch("probe");
    let (path, _) = random_file(&dir, "data.bin", 12_345, 1);
    let caps = MachineCaps::probe(&path);
    eprintln!("probe: {caps:?}");
    assert!(
        caps.nvme_direct.is_err(),
        "only the composition can enable NVMe direct"
    );
    let choice = choose_source(&Location::File(path.clone()), &caps);
    match &caps.o_direct {
        Ok(()) => assert_eq!(choice.kind, SourceKind::CpuWorkerDirect),
        Err(_) => assert_eq!(choice.kind, SourceKind::CpuWorkerMmap),
    }
    let missing = MachineCaps::probe(&dir.join("missing.bin"));
    assert!(missing.o_direct.is_err());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn available_memory_parses_meminfo() {
    let text =
        "MemTotal:       24000000 kB\nMemFree:         1000 kB\nMemAvailable:   12345678 kB\n";
    assert_eq!(
        MachineCaps::parse_available_memory(text),
        Some(12_345_678 * 1024)
    );
    assert_eq!(
        MachineCaps::parse_available_memory("MemTotal: 5 kB\n"),
        None
    );
    assert_eq!(
        MachineCaps::parse_available_memory("MemAvailable: lots kB\n"),
        None
    );
    assert_eq!(
        MachineCaps::parse_available_memory("MemAvailable: 5 MB\n"),
        None
    );
    assert_eq!(
        MachineCaps::parse_available_memory("MemAvailable: 18446744073709551615 kB\n"),
        None,
        "overflow is not a size"
    );
}

#[test]
fn available_memory_of_this_machine_is_below_its_total() {
    let Ok(text) = std::fs::read_to_string("/proc/meminfo") else {
        assert!(
            MachineCaps::available_memory().is_none(),
            "no /proc/meminfo, yet a figure"
        );
        return;
    };
    let total_kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("MemTotal in /proc/meminfo");
    let avail = MachineCaps::available_memory().expect("MemAvailable on Linux >= 3.14");
    assert!(
        avail > 0 && avail <= total_kb * 1024,
        "{avail} vs {total_kb} kB"
    );
}
