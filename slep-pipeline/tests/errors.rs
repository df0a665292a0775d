//! Bad input gives typed errors, never a panic or a hang.

mod common;

use std::time::{Duration, Instant};

use common::*;
use slep_pipeline::{
    ByteRange, CpuTransfer, FileSource, IoEngine, Item, MmapBaselineSource, MmapSource,
    PinnedRamSource, Pipeline, PipelineError, ReadMode, RoutedSource, Schedule, Source,
};

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let path = scratch("missing").join("does-not-exist.bin");
    for r in [
        FileSource::open(&path, ReadMode::Direct, IoEngine::Auto).map(|_| ()),
        MmapSource::open(&path, 1).map(|_| ()),
        MmapBaselineSource::open(&path).map(|_| ()),
    ] {
        match r {
            Err(PipelineError::Io { path: p, source }) => {
                assert_eq!(p, path);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }
}

fn sources(path: &std::path::Path) -> Vec<Box<dyn Source>> {
    vec![
        Box::new(FileSource::open(path, ReadMode::Direct, IoEngine::Auto).unwrap()),
        Box::new(FileSource::open(path, ReadMode::Buffered, IoEngine::Pread).unwrap()),
        Box::new(MmapSource::open(path, 2).unwrap()),
        Box::new(MmapBaselineSource::open(path).unwrap()),
    ]
}

#[test]
fn range_past_eof_is_a_typed_error_and_the_pass_stops() {
    let dir = scratch("eof");
    let (path, _file) = random_file(&dir, "data.bin", 10_000, 1);
    // Item 3 runs one byte past the end; items before it are consumed, nothing after it.
    let schedule = Schedule::new(vec![
        Item::single(0, ByteRange::new(0, 100)),
        Item::single(1, ByteRange::new(5000, 100)),
        Item::single(2, ByteRange::new(9000, 1000)),
        Item::single(3, ByteRange::new(9000, 1001)),
        Item::single(4, ByteRange::new(0, 10)),
    ]);
    for mut src in sources(&path) {
        for slots in [2, 3, 6] {
            let mut p = Pipeline::new(CpuTransfer::default(), slots, 4096).unwrap();
            let mut consumed = Vec::new();
            let t = Instant::now();
            let err = p
                .run(&schedule, &mut src, |ready| {
                    consumed.push(ready.item.key);
                    Ok(None)
                })
                .unwrap_err();
            assert!(t.elapsed() < Duration::from_secs(60), "no hang");
            match err {
                PipelineError::RangeOutOfBounds {
                    offset, end, size, ..
                } => assert_eq!((offset, end, size), (9000, 10_001, 10_000)),
                other => panic!("expected RangeOutOfBounds, got {other}"),
            }
            assert_eq!(consumed, vec![0, 1, 2]);
            // The pipeline is still usable afterwards.
            let ok = Schedule::new(vec![Item::single(9, ByteRange::new(1, 4095))]);
            p.run(&ok, &mut src, |_| Ok(None)).unwrap();
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn overflowing_range_is_a_typed_error() {
    let dir = scratch("overflow");
    let (path, _) = random_file(&dir, "data.bin", 1000, 2);
    let schedule = Schedule::new(vec![Item::single(0, ByteRange::new(u64::MAX - 5, 10))]);
    for mut src in sources(&path) {
        let mut p = Pipeline::new(CpuTransfer::default(), 2, 4096).unwrap();
        let err = p.run(&schedule, &mut src, |_| Ok(None)).unwrap_err();
        assert!(
            matches!(
                err,
                PipelineError::RangeOverflow { .. } | PipelineError::ItemTooLarge { .. }
            ),
            "{err}"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn item_larger_than_slot_and_too_few_slots_are_rejected() {
    assert!(matches!(
        Pipeline::new(CpuTransfer::default(), 1, 100),
        Err(PipelineError::TooFewSlots(1))
    ));
    let dir = scratch("too-large");
    let (path, _) = random_file(&dir, "data.bin", 1000, 3);
    let mut src = MmapSource::open(&path, 1).unwrap();
    let mut p = Pipeline::new(CpuTransfer::default(), 2, 100).unwrap();
    let schedule = Schedule::new(vec![Item::new(
        7,
        vec![ByteRange::new(0, 60), ByteRange::new(500, 41)],
    )]);
    match p.run(&schedule, &mut src, |_| Ok(None)) {
        Err(PipelineError::ItemTooLarge {
            index: 0,
            key: 7,
            bytes: 101,
            slot_bytes: 100,
        }) => {}
        other => panic!("expected ItemTooLarge, got {other:?}"),
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn consumer_error_stops_the_pass_without_hanging() {
    let dir = scratch("consumer");
    let (path, _) = random_file(&dir, "data.bin", 100_000, 4);
    let schedule = random_schedule(100_000, 50, 5000, 5);
    let mut src = FileSource::open(&path, ReadMode::Direct, IoEngine::Auto).unwrap();
    let mut p = Pipeline::new(CpuTransfer::default(), 3, 5000).unwrap();
    let err = p
        .run(&schedule, &mut src, |ready| {
            if ready.index == 7 {
                return Err("kernel launch failed".into());
            }
            Ok(None)
        })
        .unwrap_err();
    match err {
        PipelineError::Consumer { index: 7, .. } => {}
        other => panic!("expected a consumer error, got {other}"),
    }
    // Next pass works and reallocates whatever the aborted pass left in flight.
    let mut n = 0;
    p.run(&schedule, &mut src, |_| {
        n += 1;
        Ok(None)
    })
    .unwrap();
    assert_eq!(n, 50);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn unrouted_and_missing_pinned_items_are_typed_errors() {
    let mut routed = RoutedSource::new();
    let schedule = Schedule::new(vec![Item::single(3, ByteRange::new(0, 10))]);
    let mut p = Pipeline::new(CpuTransfer::default(), 2, 100).unwrap();
    assert!(matches!(
        p.run(&schedule, &mut routed, |_| Ok(None)),
        Err(PipelineError::NotInSource { key: 3, .. })
    ));
    let mut pinned = PinnedRamSource::new();
    assert!(matches!(
        p.run(&schedule, &mut pinned, |_| Ok(None)),
        Err(PipelineError::NotInSource { key: 3, .. })
    ));
}

#[test]
fn file_truncated_after_open_is_a_typed_error() {
    let dir = scratch("truncate");
    let (path, _) = random_file(&dir, "data.bin", 50_000, 6);
    let mut src = FileSource::open(&path, ReadMode::Direct, IoEngine::Auto).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(10_000)
        .unwrap();
    let schedule = Schedule::new(vec![Item::single(0, ByteRange::new(20_000, 5000))]);
    let mut p = Pipeline::new(CpuTransfer::default(), 2, 8192).unwrap();
    let err = p.run(&schedule, &mut src, |_| Ok(None)).unwrap_err();
    assert!(matches!(err, PipelineError::ShortRead { .. }), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn consumer_panic_propagates_without_hanging() {
    let dir = scratch("panic");
    let (path, _) = random_file(&dir, "data.bin", 100_000, 7);
    let schedule = random_schedule(100_000, 30, 5000, 8);
    let mut src = MmapSource::open(&path, 1).unwrap();
    let mut p = Pipeline::new(CpuTransfer::default(), 4, 5000).unwrap();
    let t = Instant::now();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.run(&schedule, &mut src, |ready| {
            if ready.index == 3 {
                panic!("consumer bug");
            }
            Ok(None)
        })
    }));
    assert!(r.is_err(), "the consumer's panic reaches the caller");
    assert!(t.elapsed() < Duration::from_secs(60), "no hang");
    std::fs::remove_dir_all(dir).ok();
}
