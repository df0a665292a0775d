//! CUDA transfer (feature `cuda`). Without a CUDA driver: a typed "not available" error and no
//! panic. With a GPU: every source streams a file into VRAM and the bytes read back equal the
//! file's.
#![cfg(feature = "cuda")]

mod common;

use common::*;
use slep_pipeline::{
    cuda_available, CudaTransfer, FileSource, IoEngine, MmapBaselineSource, MmapSource,
    PinnedRamSource, Pipeline, PipelineError, ReadMode, Source,
};

#[test]
fn cuda_transfer_without_driver_is_a_typed_error() {
    if cuda_available().is_ok() {
        test_support::not_applicable(
            "a CUDA driver is present; the no-driver path cannot be tested here",
        );
        return;
    }
    match CudaTransfer::new(0) {
        Err(PipelineError::CudaUnavailable(why)) => eprintln!("as expected: {why}"),
        other => panic!("expected CudaUnavailable, got {other:?}"),
    }
}

#[test]
fn every_source_streams_into_vram_exactly() {
    let t = match CudaTransfer::new(0) {
        Ok(t) => t,
        Err(e) => {
            test_support::skip_gpu(format!("GPU streaming test: {e}"));
            return;
        }
    };
    let dir = scratch("cuda");
    let len = 64 * 1024 * 1024 + 4097;
    let (path, file) = random_file(&dir, "data.bin", len, 1);
    let max_item = 9 * 1024 * 1024 + 3;
    let schedule = random_schedule(len as u64, 24, max_item, 2);
    let mut pinned = PinnedRamSource::new();
    for item in schedule.items() {
        pinned.load_from_file(&t, &path, item).unwrap();
    }
    let mut sources: Vec<Box<dyn Source>> = vec![
        Box::new(FileSource::open(&path, ReadMode::Direct, IoEngine::Auto).unwrap()),
        Box::new(MmapSource::open(&path, 4).unwrap()),
        Box::new(MmapBaselineSource::open(&path).unwrap()),
        Box::new(pinned),
    ];
    let mut p = Pipeline::new(t, 3, max_item as usize).unwrap();
    for src in &mut sources {
        let stats = p
            .run(&schedule, src, |ready| {
                ready.wait()?;
                let slot = ready.buffer().expect("streamed");
                let back = ready.transfer().read_back(slot, ready.len)?;
                assert!(
                    back == expected(&file, ready.item),
                    "item {} differs",
                    ready.index
                );
                Ok(None)
            })
            .unwrap();
        eprintln!("{stats}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn device_side_consumer_with_release_events() {
    let t = match CudaTransfer::new(0) {
        Ok(t) => t,
        Err(e) => {
            test_support::skip_gpu(format!("GPU release-event test: {e}"));
            return;
        }
    };
    let dir = scratch("cuda-release");
    let len = 32 * 1024 * 1024 + 77;
    let (path, file) = random_file(&dir, "data.bin", len, 3);
    let max_item = 3 * 1024 * 1024 + 5;
    let schedule = random_schedule(len as u64, 40, max_item, 4);
    let total = schedule.total_bytes().unwrap() as usize;
    // The consumer works on its own stream: it waits on the copy's event, copies the slot into
    // an accumulation buffer (device to device, asynchronously) and returns its release event.
    let compute = t.context().new_stream().unwrap();
    let mut acc = compute.alloc_zeros::<u8>(total.max(1)).unwrap();
    let mut src = FileSource::open(&path, ReadMode::Direct, IoEngine::Auto).unwrap();
    let mut p = Pipeline::new(t, 2, max_item as usize).unwrap();
    let mut at = 0usize;
    p.run(&schedule, &mut src, |ready| {
        let slot = ready.buffer().expect("streamed");
        if ready.len > 0 {
            compute.wait(ready.event().expect("copied").event())?;
            let view = slot.slice().slice(..ready.len);
            let mut dst = acc.slice_mut(at..at + ready.len);
            compute.memcpy_dtod(&view, &mut dst)?;
        }
        at += ready.len;
        Ok(Some(ready.transfer().release_signal(&compute)?))
    })
    .unwrap();
    let back = compute.clone_dtoh(&acc).unwrap();
    let mut want = Vec::with_capacity(total);
    for item in schedule.items() {
        want.extend_from_slice(&expected(&file, item));
    }
    assert!(
        back[..total] == want[..],
        "device-side consumer saw wrong bytes"
    );
    std::fs::remove_dir_all(dir).ok();
}
