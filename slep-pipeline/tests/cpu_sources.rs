//! Real CPU runs: every file source streams random files (odd sizes, unaligned offsets,
//! multi-range items) through the pipeline into host "device" slots; the bytes must equal the
//! file's bytes as read back with std I/O.

mod common;

use common::*;
use slep_pipeline::{
    ByteRange, CpuTransfer, FileSource, IoEngine, Item, MmapBaselineSource, MmapSource, NvmeReader,
    NvmeSource, PinnedRamSource, Pipeline, ReadMode, ResidentSource, RoutedSource, Schedule,
    SourceKind,
};

const FILE_LEN: usize = 3 * 1024 * 1024 + 12_345; // not a multiple of any block size
const MAX_ITEM: u64 = 300_001;

fn check_order(order: &[u64], schedule: &Schedule) {
    let keys: Vec<u64> = schedule.items().iter().map(|i| i.key).collect();
    assert_eq!(order, &keys[..], "items must be consumed in schedule order");
}

#[test]
fn file_source_all_modes_deliver_file_bytes() {
    let dir = scratch("file-modes");
    let (path, file) = random_file(&dir, "data.bin", FILE_LEN, 1);
    for (mode, engine) in [
        (ReadMode::Direct, IoEngine::Auto),
        (ReadMode::Direct, IoEngine::Pread),
        (ReadMode::Buffered, IoEngine::Auto),
        (ReadMode::Buffered, IoEngine::Pread),
    ] {
        for (slots, seed) in [(2usize, 10u64), (3, 11), (5, 12)] {
            let mut src = FileSource::open(&path, mode, engine)
                .unwrap()
                .with_chunk(64 * 1024 + 1) // many requests per item, rounded to blocks
                .with_threads(3);
            eprintln!(
                "{mode:?}/{engine:?}: {} ({})",
                src.engine_name(),
                src.reason()
            );
            if mode == ReadMode::Buffered {
                assert!(!src.is_direct());
            }
            let schedule = random_schedule(FILE_LEN as u64, 40, MAX_ITEM, seed);
            let order = stream_and_check(&mut src, &schedule, &file, slots, MAX_ITEM as usize);
            check_order(&order, &schedule);
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn io_uring_engine_when_available() {
    let dir = scratch("uring");
    let (path, file) = random_file(&dir, "data.bin", FILE_LEN, 2);
    match FileSource::open(&path, ReadMode::Direct, IoEngine::IoUring) {
        Ok(src) => {
            let mut src = src.with_chunk(100_000);
            assert_eq!(src.engine_name(), "io_uring");
            let schedule = random_schedule(FILE_LEN as u64, 30, MAX_ITEM, 20);
            stream_and_check(&mut src, &schedule, &file, 3, MAX_ITEM as usize);
        }
        Err(e) => test_support::skip(format!(
            "io_uring cannot be set up here ({e}); the io_uring engine was NOT tested"
        )),
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn edge_ranges_first_last_and_empty_bytes() {
    let dir = scratch("edges");
    let (path, file) = random_file(&dir, "data.bin", 10_000, 3);
    let n = file.len() as u64;
    let schedule = Schedule::new(vec![
        Item::single(0, ByteRange::new(0, n)),
        Item::single(1, ByteRange::new(n - 1, 1)),
        Item::single(2, ByteRange::new(0, 1)),
        Item::single(3, ByteRange::new(4095, 2)),
        Item::single(4, ByteRange::new(n, 0)),
        Item::new(5, vec![ByteRange::new(8191, 1809), ByteRange::new(1, 4096)]),
        Item::new(6, vec![]),
    ]);
    for mode in [ReadMode::Direct, ReadMode::Buffered] {
        let mut src = FileSource::open(&path, mode, IoEngine::Auto).unwrap();
        stream_and_check(&mut src, &schedule, &file, 2, n as usize);
    }
    let mut m = MmapSource::open(&path, 2).unwrap();
    stream_and_check(&mut m, &schedule, &file, 2, n as usize);
    let mut b = MmapBaselineSource::open(&path).unwrap();
    stream_and_check(&mut b, &schedule, &file, 4, n as usize);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn mmap_sources_deliver_file_bytes() {
    let dir = scratch("mmap");
    let (path, file) = random_file(&dir, "data.bin", FILE_LEN, 4);
    for (slots, seed) in [(2usize, 30u64), (4, 31)] {
        let schedule = random_schedule(FILE_LEN as u64, 40, MAX_ITEM, seed);
        let mut m = MmapSource::open(&path, 3).unwrap();
        check_order(
            &stream_and_check(&mut m, &schedule, &file, slots, MAX_ITEM as usize),
            &schedule,
        );
        let mut b = MmapBaselineSource::open(&path).unwrap();
        check_order(
            &stream_and_check(&mut b, &schedule, &file, slots, MAX_ITEM as usize),
            &schedule,
        );
    }
    // Large items take the multi-threaded memcpy path (>= 8 MiB).
    let (path, file) = random_file(&dir, "big.bin", 20 << 20, 5);
    let schedule = Schedule::new(vec![
        Item::single(0, ByteRange::new(3, (9 << 20) + 7)),
        Item::single(1, ByteRange::new(11 << 20, 9 << 20)),
        Item::single(2, ByteRange::new(1, (20 << 20) - 2)),
    ]);
    let mut m = MmapSource::open(&path, 4).unwrap();
    stream_and_check(&mut m, &schedule, &file, 2, 20 << 20);
    let mut f = FileSource::open(&path, ReadMode::Direct, IoEngine::Auto).unwrap();
    stream_and_check(&mut f, &schedule, &file, 2, 20 << 20);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn pinned_ram_source_delivers_loaded_items() {
    let dir = scratch("pinned");
    let (path, file) = random_file(&dir, "data.bin", FILE_LEN, 6);
    let schedule = random_schedule(FILE_LEN as u64, 25, MAX_ITEM, 40);
    let mut src = PinnedRamSource::new();
    let t = CpuTransfer::default();
    for item in schedule.items() {
        src.load_from_file(&t, &path, item).unwrap();
    }
    assert_eq!(src.bytes(), schedule.total_bytes().unwrap());
    stream_and_check(&mut src, &schedule, &file, 3, MAX_ITEM as usize);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn pinned_ram_source_delivers_parts_of_loaded_items() {
    let dir = scratch("pinned-parts");
    let (path, file) = random_file(&dir, "data.bin", FILE_LEN, 7);
    let whole = random_schedule(FILE_LEN as u64, 12, MAX_ITEM, 41);
    let mut src = PinnedRamSource::new();
    let t = CpuTransfer::default();
    for item in whole.items() {
        src.load_from_file(&t, &path, item).unwrap();
    }
    // Each item's parts: a prefix of every range (odd lengths, empty ones too), in the order
    // a layer's device rows are streamed; the bytes must be the file's.
    let parts: Vec<Item> = whole
        .items()
        .iter()
        .map(|it| {
            let ranges = it
                .ranges
                .iter()
                .enumerate()
                .map(|(k, r)| ByteRange::new(r.offset + (k as u64 % 3), r.len / 3))
                .filter(|r| r.len > 0)
                .collect();
            Item::new(it.key, ranges)
        })
        .collect();
    let parts = Schedule::new(parts);
    stream_and_check(&mut src, &parts, &file, 3, MAX_ITEM as usize);
    // The whole items still come whole, and the memory is there to read in place.
    stream_and_check(&mut src, &whole, &file, 3, MAX_ITEM as usize);
    let first = &whole.items()[0];
    let mem = src.memory(first.key).expect("held");
    assert_eq!(
        &mem.bytes()[..first.ranges[0].len as usize],
        &expected(&file, first)[..first.ranges[0].len as usize]
    );
    // A part outside the held ranges is a typed error, not other bytes.
    let outside = Schedule::new(vec![Item::new(
        first.key,
        vec![ByteRange::new(FILE_LEN as u64 + 10, 4)],
    )]);
    let mut slot_src = src;
    let err = Pipeline::new(CpuTransfer::default(), 2, MAX_ITEM as usize)
        .unwrap()
        .run(&outside, &mut slot_src, |_| Ok(None))
        .unwrap_err();
    assert!(
        err.to_string().contains("not inside the held ranges"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A fake NVMe-direct adapter over a byte vector that insists on block-aligned requests.
struct FakeNvme {
    data: Vec<u8>,
    block: u64,
    prepared: usize,
}

impl NvmeReader for FakeNvme {
    fn block_size(&self) -> u64 {
        self.block
    }
    fn capacity(&self) -> u64 {
        self.data.len() as u64
    }
    fn prepare_buffer(&mut self, buffer: &mut [u8]) -> Result<(), slep_pipeline::NvmeError> {
        assert_eq!(
            buffer.as_ptr() as usize % 4096,
            0,
            "staging must be page-aligned"
        );
        self.prepared += 1;
        Ok(())
    }
    fn read_blocks(&mut self, offset: u64, dst: &mut [u8]) -> Result<(), slep_pipeline::NvmeError> {
        assert_eq!(offset % self.block, 0, "unaligned offset {offset}");
        assert_eq!(
            dst.len() as u64 % self.block,
            0,
            "unaligned length {}",
            dst.len()
        );
        assert_eq!(
            dst.as_ptr() as usize % self.block as usize,
            0,
            "unaligned buffer"
        );
        for (i, b) in dst.iter_mut().enumerate() {
            // Past the end of the namespace a real device returns whatever; use a marker.
            *b = self.data.get(offset as usize + i).copied().unwrap_or(0xEE);
        }
        Ok(())
    }
}

#[test]
fn nvme_adapter_gets_aligned_requests_and_exact_bytes_arrive() {
    let dir = scratch("nvme");
    let (_path, file) = random_file(&dir, "data.bin", FILE_LEN, 7);
    for block in [512u64, 4096] {
        let schedule = random_schedule(FILE_LEN as u64, 30, MAX_ITEM, 50 + block);
        let mut src = NvmeSource::new(FakeNvme {
            data: file.clone(),
            block,
            prepared: 0,
        });
        stream_and_check(&mut src, &schedule, &file, 3, MAX_ITEM as usize);
        assert!(
            src.reader().prepared >= 3,
            "every staging buffer is prepared"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn routed_source_mixes_paths_per_item_and_resident_items_skip_slots() {
    let dir = scratch("routed");
    let (path, file) = random_file(&dir, "data.bin", FILE_LEN, 8);
    let schedule = random_schedule(FILE_LEN as u64, 30, MAX_ITEM, 60);
    let t = CpuTransfer::default();
    let mut pinned = PinnedRamSource::new();
    let mut routed = RoutedSource::new();
    let kinds = [
        SourceKind::Resident,
        SourceKind::PinnedRam,
        SourceKind::CpuWorkerDirect,
        SourceKind::CpuWorkerMmap,
        SourceKind::MmapBaseline,
    ];
    for item in schedule.items().iter().filter(|i| i.key % 5 == 1) {
        pinned.load_from_file(&t, &path, item).unwrap();
    }
    let idx = [
        routed.add(Box::new(ResidentSource)),
        routed.add(Box::new(pinned)),
        routed.add(Box::new(
            FileSource::open(&path, ReadMode::Direct, IoEngine::Auto).unwrap(),
        )),
        routed.add(Box::new(MmapSource::open(&path, 2).unwrap())),
        routed.add(Box::new(MmapBaselineSource::open(&path).unwrap())),
    ];
    for item in schedule.items() {
        assert!(routed.route(item.key, idx[(item.key % 5) as usize]));
    }
    let mut p = Pipeline::new(CpuTransfer::default(), 2, MAX_ITEM as usize).unwrap();
    let mut seen = Vec::new();
    p.run(&schedule, &mut routed, |ready| {
        let want = expected(&file, ready.item);
        let k = (ready.item.key % 5) as usize;
        if k == 0 {
            assert_eq!(ready.kind, SourceKind::Resident);
            assert!(ready.buffer().is_none() && ready.slot.is_none());
        } else {
            // O_DIRECT may be refused by the filesystem: then the file source reads buffered.
            if kinds[k] != SourceKind::CpuWorkerDirect {
                assert_eq!(ready.kind, kinds[k]);
            }
            assert!(ready.buffer().unwrap().as_slice()[..ready.len] == want[..]);
        }
        seen.push(ready.item.key);
        Ok(None)
    })
    .unwrap();
    assert_eq!(seen, (0..30).collect::<Vec<u64>>());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn schedule_changes_between_passes_and_slots_persist() {
    let dir = scratch("passes");
    let (path, file) = random_file(&dir, "data.bin", FILE_LEN, 9);
    let mut src = FileSource::open(&path, ReadMode::Direct, IoEngine::Auto).unwrap();
    let mut p = Pipeline::new(CpuTransfer::default(), 3, MAX_ITEM as usize).unwrap();
    for pass in 0..4u64 {
        let mut schedule =
            random_schedule(FILE_LEN as u64, 10 + pass as usize * 7, MAX_ITEM, 70 + pass);
        if pass == 2 {
            // Skipped layers disappear.
            schedule = Schedule::new(
                schedule
                    .items()
                    .iter()
                    .filter(|i| i.key % 2 == 0)
                    .cloned()
                    .collect(),
            );
        }
        let mut slots_seen = std::collections::BTreeSet::new();
        let mut n = 0;
        p.run(&schedule, &mut src, |ready| {
            assert!(
                ready.buffer().unwrap().as_slice()[..ready.len] == expected(&file, ready.item)[..]
            );
            slots_seen.insert(ready.slot.unwrap());
            n += 1;
            Ok(None)
        })
        .unwrap();
        assert_eq!(n, schedule.len());
        assert!(slots_seen.iter().all(|&s| s < 3));
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn tmpfs_file_is_read_correctly_whether_or_not_o_direct_is_refused() {
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        test_support::skip("/dev/shm (a tmpfs) does not exist on this machine");
        return;
    }
    let dir = shm.join(format!("slep-pipeline-test-{}", std::process::id()));
    let (path, file) = random_file(&dir, "data.bin", 100_003, 10);
    let mut src = FileSource::open(&path, ReadMode::Direct, IoEngine::Auto).unwrap();
    eprintln!("tmpfs: direct={} reason: {}", src.is_direct(), src.reason());
    if !src.is_direct() {
        assert!(
            src.reason().contains("refused O_DIRECT"),
            "{}",
            src.reason()
        );
    }
    let schedule = random_schedule(file.len() as u64, 20, 30_000, 80);
    stream_and_check(&mut src, &schedule, &file, 2, 30_000);
    std::fs::remove_dir_all(dir).ok();
}
