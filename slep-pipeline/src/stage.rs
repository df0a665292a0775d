//! The stage traits: where bytes come from ([`Source`]) and how they reach a device slot
//! ([`Transfer`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::buffer::HostBuffer;
use crate::error::{PipelineError, Result};
use crate::schedule::Item;

/// Host memory that a transfer may copy from directly (pinned RAM, an mmap of a file).
pub trait HostMemory: Send + Sync {
    /// The bytes.
    fn bytes(&self) -> &[u8];
    /// True when the memory is page-locked (DMA engines can read it without a bounce).
    fn is_page_locked(&self) -> bool;
}

impl HostMemory for memmap2::Mmap {
    fn bytes(&self) -> &[u8] {
        self
    }

    fn is_page_locked(&self) -> bool {
        false
    }
}

/// A byte range of some host memory, kept alive until the copy from it has completed.
#[derive(Clone)]
pub struct HostRegion {
    memory: Arc<dyn HostMemory>,
    offset: usize,
    len: usize,
}

impl fmt::Debug for HostRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostRegion")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("page_locked", &self.memory.is_page_locked())
            .finish()
    }
}

impl HostRegion {
    /// `len` bytes at `offset` of `memory`; an error when that runs past its end.
    pub fn new(memory: Arc<dyn HostMemory>, offset: u64, len: u64) -> Result<Self> {
        let size = memory.bytes().len() as u64;
        crate::schedule::ByteRange::new(offset, len).check_within(size, &"host memory region")?;
        // Both fit in usize: they lie inside a slice.
        Ok(Self {
            memory,
            offset: offset as usize,
            len: len as usize,
        })
    }

    /// The region's bytes.
    pub fn bytes(&self) -> &[u8] {
        // In bounds by construction.
        &self.memory.bytes()[self.offset..self.offset + self.len]
    }

    /// True when the underlying memory is page-locked.
    pub fn is_page_locked(&self) -> bool {
        self.memory.is_page_locked()
    }
}

/// What a source produced for one item.
#[derive(Debug)]
pub enum Fetched {
    /// The item's bytes were written into the staging buffer: each `(offset, len)` span in order,
    /// delivered back to back into the slot.
    Staged(Vec<(usize, usize)>),
    /// The item's bytes already lie in host memory: copy these regions, back to back, directly.
    Direct(Vec<HostRegion>),
    /// The item lives on the device already; nothing moves.
    Resident,
}

/// Which data path serves an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// Resident on the device: no copy.
    Resident,
    /// Held in page-locked host RAM: one asynchronous copy.
    PinnedRam,
    /// Read by a userspace NVMe driver into registered staging, then copied.
    NvmeDirect,
    /// Read with O_DIRECT (io_uring or pread) into staging by worker threads, then copied.
    CpuWorkerDirect,
    /// Read with buffered I/O (the filesystem refused O_DIRECT) into staging, then copied.
    CpuWorkerBuffered,
    /// Copied out of an mmap of the file by worker threads into staging, then copied.
    CpuWorkerMmap,
    /// Baseline: the pageable mmap pointer handed straight to the copy.
    MmapBaseline,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Resident => "resident",
            Self::PinnedRam => "pinned-ram",
            Self::NvmeDirect => "nvme-direct",
            Self::CpuWorkerDirect => "cpu-worker (O_DIRECT)",
            Self::CpuWorkerBuffered => "cpu-worker (buffered)",
            Self::CpuWorkerMmap => "cpu-worker (mmap)",
            Self::MmapBaseline => "mmap-baseline",
        })
    }
}

/// Stage 1: makes an item's bytes available in host memory (or says it is resident).
pub trait Source: Send {
    /// The data path this source uses for `item`.
    fn kind_for(&self, item: &Item) -> SourceKind;

    /// Staging bytes needed for `item` (its length plus any alignment slack).
    fn staging_bytes(&self, item: &Item) -> Result<u64> {
        item.total_len()
    }

    /// Called at the start of every pass for every staging buffer, so that a driver can map it for
    /// DMA. Must be idempotent. The default does nothing.
    fn prepare_staging(&mut self, _staging: &mut HostBuffer) -> Result<()> {
        Ok(())
    }

    /// Produces `item`'s bytes, using `staging` when they must be read.
    fn fetch(&mut self, item: &Item, staging: &mut HostBuffer) -> Result<Fetched>;
}

impl<S: Source + ?Sized> Source for Box<S> {
    fn kind_for(&self, item: &Item) -> SourceKind {
        (**self).kind_for(item)
    }

    fn staging_bytes(&self, item: &Item) -> Result<u64> {
        (**self).staging_bytes(item)
    }

    fn prepare_staging(&mut self, staging: &mut HostBuffer) -> Result<()> {
        (**self).prepare_staging(staging)
    }

    fn fetch(&mut self, item: &Item, staging: &mut HostBuffer) -> Result<Fetched> {
        (**self).fetch(item, staging)
    }
}

/// One piece of a copy: host bytes and where they go in the slot.
#[derive(Debug, Clone, Copy)]
pub struct CopySegment<'a> {
    /// Source bytes in host memory.
    pub src: &'a [u8],
    /// Byte offset in the destination slot.
    pub dst_offset: usize,
}

/// Stage 2: moves host bytes into device slots (a copy engine) and reports completion as events.
pub trait Transfer: Send + Sync {
    /// A device buffer holding one item.
    type Slot: Send;
    /// A completion signal (a GPU event; already complete for synchronous transfers).
    type Event: Send + Sync;

    /// Allocates a device slot of `bytes` bytes.
    fn alloc_slot(&self, bytes: usize) -> Result<Self::Slot>;

    /// Allocates a staging buffer of `bytes` bytes that this transfer copies from efficiently.
    fn alloc_staging(&self, bytes: usize) -> Result<HostBuffer> {
        let mut buf = HostBuffer::new(bytes)?;
        self.pin(&mut buf)?;
        Ok(buf)
    }

    /// Page-locks (registers) a host buffer for fast DMA; a no-op where that means nothing.
    fn pin(&self, buffer: &mut HostBuffer) -> Result<()>;

    /// Copies `segments` into `slot` after `after` (the consumer's release of the slot) completes,
    /// returning the event that completes with the copy. The sources must stay untouched until then.
    fn copy(
        &self,
        segments: &[CopySegment<'_>],
        slot: &mut Self::Slot,
        after: Option<&Self::Event>,
    ) -> Result<Self::Event>;

    /// Blocks the calling thread until `event` completes.
    fn wait(&self, event: &Self::Event) -> Result<()>;

    /// Time the copy behind `event` took on the copy engine, once complete, when measurable.
    fn elapsed(&self, event: &Self::Event) -> Option<Duration>;

    /// Blocks until no device work that may still read a slot is pending. The pipeline calls it
    /// before it reuses or frees a slot whose last reader gave no release event (a consumer that
    /// failed, the pipeline being dropped). A no-op where consumers are done with a slot when
    /// they return (the default).
    fn settle(&self) -> Result<()> {
        Ok(())
    }
}

/// Checks the segments of a copy against the slot size.
pub(crate) fn check_segments(segments: &[CopySegment<'_>], slot_len: usize) -> Result<()> {
    for s in segments {
        let end = s
            .dst_offset
            .checked_add(s.src.len())
            .ok_or(PipelineError::RangeOverflow {
                offset: s.dst_offset as u64,
                len: s.src.len() as u64,
            })?;
        if end > slot_len {
            return Err(PipelineError::RangeOutOfBounds {
                what: "device slot".into(),
                offset: s.dst_offset as u64,
                end: end as u64,
                size: slot_len as u64,
            });
        }
    }
    Ok(())
}
