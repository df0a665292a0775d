//! The NVMe-direct data path end to end over the emulated controller: nvme-direct's
//! `ExtentReader` (a file scattered over a namespace) under an `NvmeSource`, streamed through the
//! pipeline; every item's bytes must equal the file's bytes, assembled here from the namespace
//! image by plain slicing.

mod common;

use common::*;
use nvme_direct::emu::{EmuConfig, Emulator};
use nvme_direct::extent::LbaExtent;
use nvme_direct::{Config, Controller, ExtentReader, FileLocation};
use slep_pipeline::{NvmeReader, NvmeSource, PrefetchSource, Source, SourceKind};

const BS: u64 = 4096;

fn image(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// A file of `len` bytes in three extents at LBAs out of order, and the file's bytes.
fn scattered(img: &[u8], len: u64) -> (Vec<LbaExtent>, Vec<u8>) {
    let third = len.div_ceil(3).div_ceil(BS) * BS;
    let lbas = [700u64, 20, 350];
    let extents: Vec<LbaExtent> = (0..3u64)
        .map(|k| LbaExtent {
            logical: k * third,
            lba: lbas[k as usize],
            blocks: third / BS,
        })
        .collect();
    let mut file = Vec::with_capacity(len as usize);
    for e in &extents {
        let n = (third).min(len - e.logical.min(len)) as usize;
        let at = (e.lba * BS) as usize;
        file.extend_from_slice(&img[at..at + n]);
    }
    (extents, file)
}

fn reader(img: Vec<u8>, extents: Vec<LbaExtent>, len: u64) -> ExtentReader<Emulator, Emulator> {
    let emu = Emulator::new(
        EmuConfig {
            block_size: BS as u32,
            ..EmuConfig::default()
        },
        img,
    );
    let ctrl = Controller::new(emu.clone(), emu, Config::default()).unwrap();
    ExtentReader::new(ctrl, 1, FileLocation::Extents(extents), len).unwrap()
}

#[test]
fn file_streams_off_the_emulated_namespace() {
    let len: u64 = 3 * 1024 * 1024 + 12_345;
    let img = image(8 << 20);
    let (extents, file) = scattered(&img, len);
    let r = reader(img, extents, len);
    assert_eq!(NvmeReader::block_size(&r), BS);
    assert_eq!(r.capacity(), len.div_ceil(BS) * BS);
    let mut src = NvmeSource::new(r);
    let schedule = random_schedule(len, 30, 300_001, 5);
    assert_eq!(src.kind_for(&schedule.items()[0]), SourceKind::NvmeDirect);
    let order = stream_and_check(&mut src, &schedule, &file, 3, 300_001);
    assert_eq!(order.len(), 30);
}

#[test]
fn prefetched_nvme_reads_match_the_file() {
    let len: u64 = 2 * 1024 * 1024 + 999;
    let img = image(8 << 20);
    let (extents, file) = scattered(&img, len);
    let src = NvmeSource::new(reader(img, extents, len));
    let schedule = random_schedule(len, 12, 200_000, 9);
    let need = schedule
        .items()
        .iter()
        .map(|i| src.staging_bytes(i).unwrap())
        .max()
        .unwrap() as usize;
    let bufs = (0..3)
        .map(|_| slep_pipeline::HostBuffer::new(need).unwrap())
        .collect();
    let mut pf = PrefetchSource::new(Box::new(src), schedule.items().to_vec(), bufs);
    // Two passes: the read-ahead wraps around to the first item again.
    for _ in 0..2 {
        stream_and_check(&mut pf, &schedule, &file, 2, 200_000);
    }
    let (bytes, _) = *pf.totals().lock().unwrap();
    assert!(bytes >= schedule.total_bytes().unwrap() * 2, "{bytes}");
}
