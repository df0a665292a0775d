//! A CPU "device": host buffers are the slots and the pipeline's copy thread (helped by a few
//! memcpy threads for large copies) is the copy engine. Lets the real pipeline run end to end in
//! tests and on machines without a GPU.

use std::time::{Duration, Instant};

use crate::buffer::HostBuffer;
use crate::error::{PipelineError, Result};
use crate::stage::{check_segments, CopySegment, Transfer};

/// A slot of the CPU device: a plain host buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSlot {
    data: Vec<u8>,
}

impl CpuSlot {
    /// The slot's bytes (the item occupies the first `Ready::len` of them).
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }
}

/// Completion of a CPU copy: complete on creation; records how long the copy took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuEvent {
    elapsed: Duration,
}

impl CpuEvent {
    /// An event for a release with no copy behind it.
    pub fn done() -> Self {
        Self {
            elapsed: Duration::ZERO,
        }
    }
}

/// Synchronous host-memory transfer.
#[derive(Debug, Clone)]
pub struct CpuTransfer {
    copy_threads: usize,
    split_bytes: usize,
}

impl Default for CpuTransfer {
    fn default() -> Self {
        Self::new(1)
    }
}

impl CpuTransfer {
    /// A transfer copying with `copy_threads` threads (at least 1) for copies of 8 MiB or more.
    pub fn new(copy_threads: usize) -> Self {
        Self {
            copy_threads: copy_threads.max(1),
            split_bytes: 8 << 20,
        }
    }
}

fn parallel_copy(dst: &mut [u8], src: &[u8], threads: usize) {
    let chunk = src.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (d, c) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
            s.spawn(move || d.copy_from_slice(c));
        }
    });
}

impl Transfer for CpuTransfer {
    type Slot = CpuSlot;
    type Event = CpuEvent;

    fn alloc_slot(&self, bytes: usize) -> Result<CpuSlot> {
        let mut data = Vec::new();
        data.try_reserve_exact(bytes)
            .map_err(|_| PipelineError::Alloc {
                bytes,
                what: "CPU device slot",
            })?;
        data.resize(bytes, 0);
        Ok(CpuSlot { data })
    }

    fn pin(&self, _buffer: &mut HostBuffer) -> Result<()> {
        Ok(())
    }

    fn copy(
        &self,
        segments: &[CopySegment<'_>],
        slot: &mut CpuSlot,
        _after: Option<&CpuEvent>,
    ) -> Result<CpuEvent> {
        check_segments(segments, slot.data.len())?;
        let t = Instant::now();
        for s in segments {
            let dst = &mut slot.data[s.dst_offset..s.dst_offset + s.src.len()];
            if self.copy_threads > 1 && s.src.len() >= self.split_bytes {
                parallel_copy(dst, s.src, self.copy_threads);
            } else {
                dst.copy_from_slice(s.src);
            }
        }
        Ok(CpuEvent {
            elapsed: t.elapsed(),
        })
    }

    fn wait(&self, _event: &CpuEvent) -> Result<()> {
        Ok(())
    }

    fn elapsed(&self, event: &CpuEvent) -> Option<Duration> {
        Some(event.elapsed)
    }
}
