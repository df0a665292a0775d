//! Helpers shared by the integration tests: random files and random schedules.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use slep_pipeline::{ByteRange, CpuTransfer, Item, Pipeline, Schedule, Source};

/// A file of `len` random bytes in a fresh directory under the target's temp dir.
pub fn random_file(dir: &Path, name: &str, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes[..]);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    // The reference is what the filesystem returns, read back with plain std I/O.
    let back = std::fs::read(&path).unwrap();
    (path, back)
}

/// A per-test scratch directory (not tmpfs: O_DIRECT needs a real filesystem).
pub fn scratch(test: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("slep-pipeline-tests")
        .join(format!("{test}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Random items over a file of `file_len` bytes: odd sizes, unaligned offsets, 1 to 3 ranges each.
pub fn random_schedule(file_len: u64, items: usize, max_item: u64, seed: u64) -> Schedule {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut s = Schedule::default();
    for key in 0..items as u64 {
        let n_ranges = rng.gen_range(1..=3);
        let mut ranges = Vec::new();
        let mut budget = max_item;
        for _ in 0..n_ranges {
            let len = rng.gen_range(0..=budget.min(file_len));
            budget -= len;
            let offset = rng.gen_range(0..=file_len - len);
            ranges.push(ByteRange::new(offset, len));
        }
        s.push(Item::new(key, ranges));
    }
    s
}

/// The item's bytes from the reference copy of the file: its ranges back to back.
pub fn expected(file: &[u8], item: &Item) -> Vec<u8> {
    let mut out = Vec::new();
    for r in &item.ranges {
        out.extend_from_slice(&file[r.offset as usize..(r.offset + r.len) as usize]);
    }
    out
}

/// Streams `schedule` from `source` through a CPU pipeline with `slots` slots and checks every
/// item's bytes in its slot against the file. Returns the keys in consumption order.
pub fn stream_and_check<S: Source + ?Sized>(
    source: &mut S,
    schedule: &Schedule,
    file: &[u8],
    slots: usize,
    slot_bytes: usize,
) -> Vec<u64> {
    let mut p = Pipeline::new(CpuTransfer::new(2), slots, slot_bytes).unwrap();
    let mut order = Vec::new();
    let stats = p
        .run(schedule, source, |ready| {
            ready.wait()?;
            let want = expected(file, ready.item);
            assert_eq!(ready.len, want.len());
            let slot = ready.buffer().expect("streamed item has a slot");
            assert!(ready.slot.unwrap() < slots);
            assert!(
                slot.as_slice()[..ready.len] == want[..],
                "item {} ({:?}) differs from the file",
                ready.index,
                ready.item.ranges
            );
            order.push(ready.item.key);
            Ok(None)
        })
        .unwrap();
    assert_eq!(stats.items as usize, schedule.len());
    assert_eq!(stats.bytes, schedule.total_bytes().unwrap());
    order
}
