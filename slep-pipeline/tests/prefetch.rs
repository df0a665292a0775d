//! The read-ahead source: a cycle of items read by a background thread ahead of the pipeline.
//! Bytes are checked against the file read back with std I/O; errors against the inner source's
//! failures.

mod common;

use common::*;
use slep_pipeline::{
    Fetched, FileSource, HostBuffer, IoEngine, Item, PipelineError, PrefetchSource, ReadMode,
    Schedule, Source, SourceKind,
};

const LEN: usize = 2 * 1024 * 1024 + 4321;
const MAX_ITEM: u64 = 250_000;

fn buffers(src: &dyn Source, items: &[Item], n: usize) -> Vec<HostBuffer> {
    let need = items
        .iter()
        .map(|i| src.staging_bytes(i).unwrap())
        .max()
        .unwrap() as usize;
    (0..n).map(|_| HostBuffer::new(need).unwrap()).collect()
}

#[test]
fn cycles_deliver_file_bytes_with_every_buffer_count() {
    let dir = scratch("prefetch-cycles");
    let (path, file) = random_file(&dir, "data.bin", LEN, 3);
    let schedule = random_schedule(LEN as u64, 16, MAX_ITEM, 21);
    for n in [1usize, 2, 4] {
        let src = FileSource::open(&path, ReadMode::Direct, IoEngine::Pread).unwrap();
        let bufs = buffers(&src, schedule.items(), n);
        let kind = src.kind_for(&schedule.items()[0]);
        let mut pf = PrefetchSource::new(Box::new(src), schedule.items().to_vec(), bufs);
        assert_eq!(pf.kind_for(&schedule.items()[0]), kind);
        for _pass in 0..3 {
            let order = stream_and_check(&mut pf, &schedule, &file, 2, MAX_ITEM as usize);
            assert_eq!(order.len(), schedule.len());
        }
        let (bytes, _) = *pf.totals().lock().unwrap();
        assert!(bytes >= 3 * schedule.total_bytes().unwrap());
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn out_of_order_requests_resynchronise() {
    let dir = scratch("prefetch-order");
    let (path, file) = random_file(&dir, "data.bin", LEN, 4);
    let schedule = random_schedule(LEN as u64, 10, MAX_ITEM, 22);
    let src = FileSource::open(&path, ReadMode::Buffered, IoEngine::Pread).unwrap();
    let bufs = buffers(&src, schedule.items(), 3);
    let mut pf = PrefetchSource::new(Box::new(src), schedule.items().to_vec(), bufs);
    // Every other item, then backwards, then a single item many times.
    let items = schedule.items();
    let skip = Schedule::new(items.iter().step_by(2).cloned().collect());
    let back = Schedule::new(items.iter().rev().cloned().collect());
    let same = Schedule::new(vec![items[4].clone(); 5]);
    for s in [&skip, &back, &same, &schedule] {
        let order = stream_and_check(&mut pf, s, &file, 2, MAX_ITEM as usize);
        assert_eq!(order.len(), s.len());
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn an_item_outside_the_cycle_is_refused() {
    let dir = scratch("prefetch-outside");
    let (path, _file) = random_file(&dir, "data.bin", LEN, 5);
    let schedule = random_schedule(LEN as u64, 4, MAX_ITEM, 23);
    let src = FileSource::open(&path, ReadMode::Buffered, IoEngine::Pread).unwrap();
    let bufs = buffers(&src, schedule.items(), 2);
    let mut pf = PrefetchSource::new(Box::new(src), schedule.items().to_vec(), bufs);
    let stranger = Item::new(99, vec![slep_pipeline::ByteRange::new(0, 10)]);
    let mut staging = HostBuffer::new(4096).unwrap();
    match pf.fetch(&stranger, &mut staging) {
        Err(PipelineError::NotInSource { key: 99, .. }) => {}
        other => panic!("expected NotInSource for key 99, got {other:?}"),
    }
    std::fs::remove_dir_all(dir).ok();
}

/// Serves zeros, except that item `bad` fails.
#[derive(Debug)]
struct Failing {
    bad: u64,
}

impl Source for Failing {
    fn kind_for(&self, _item: &Item) -> SourceKind {
        SourceKind::CpuWorkerDirect
    }
    fn fetch(&mut self, item: &Item, staging: &mut HostBuffer) -> Result<Fetched, PipelineError> {
        if item.key == self.bad {
            return Err(PipelineError::NotInSource {
                source_name: "failing test source",
                key: item.key,
                reason: "injected failure".into(),
            });
        }
        let n = item.total_len()? as usize;
        staging.as_mut_slice()[..n].fill(0);
        Ok(Fetched::Staged(vec![(0, n)]))
    }
}

#[test]
fn a_failed_read_is_reported_for_its_item_and_the_rest_still_work() {
    let items: Vec<Item> = (0..4u64)
        .map(|k| Item::new(k, vec![slep_pipeline::ByteRange::new(k * 100, 100)]))
        .collect();
    let bufs = (0..2).map(|_| HostBuffer::new(4096).unwrap()).collect();
    let mut pf = PrefetchSource::new(Box::new(Failing { bad: 2 }), items.clone(), bufs);
    let mut staging = HostBuffer::new(4096).unwrap();
    let mut failures = 0;
    for round in 0..3 {
        for it in &items {
            match pf.fetch(it, &mut staging) {
                Ok(Fetched::Direct(regions)) => {
                    assert_ne!(it.key, 2, "round {round}: the failing item succeeded");
                    let bytes: usize = regions.iter().map(|r| r.bytes().len()).sum();
                    assert_eq!(bytes, 100);
                    assert!(regions.iter().all(|r| r.bytes().iter().all(|&b| b == 0)));
                }
                Err(PipelineError::SourceContract { key: 2, message }) => {
                    assert!(message.contains("injected failure"), "{message}");
                    failures += 1;
                }
                other => panic!("round {round}, item {}: unexpected {other:?}", it.key),
            }
        }
    }
    assert_eq!(failures, 3, "item 2 fails once per round");
}
