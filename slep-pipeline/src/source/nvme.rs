//! NVMe-direct source: a userspace NVMe driver (implemented elsewhere, e.g. `vramless-nvme-direct`)
//! reads block-aligned spans straight into staging buffers that it has mapped for DMA and that the
//! transfer has registered with the GPU.

use crate::align::AlignedSpan;
use crate::buffer::HostBuffer;
use crate::error::{PipelineError, Result};
use crate::schedule::{ByteRange, Item};
use crate::stage::{Fetched, Source, SourceKind};

/// Boxed error of an adapter.
pub type NvmeError = Box<dyn std::error::Error + Send + Sync>;

/// What a userspace NVMe driver provides to the pipeline. Offsets are in the adapter's byte
/// address space (for a file on a filesystem, the adapter maps file offsets to LBAs).
pub trait NvmeReader: Send {
    /// The device's logical block size in bytes (a power of two).
    fn block_size(&self) -> u64;

    /// Bytes addressable through this adapter (the file or namespace size).
    fn capacity(&self) -> u64;

    /// Called at the start of every pass for each staging buffer, so the driver can map it for
    /// DMA (idempotent). The default does nothing.
    fn prepare_buffer(&mut self, _buffer: &mut [u8]) -> std::result::Result<(), NvmeError> {
        Ok(())
    }

    /// Reads `dst.len()` bytes (a multiple of the block size) at the block-aligned `offset` into
    /// `dst` (page-aligned, one of the staging buffers). The last block may extend past
    /// [`NvmeReader::capacity`].
    fn read_blocks(&mut self, offset: u64, dst: &mut [u8]) -> std::result::Result<(), NvmeError>;
}

/// Source over an [`NvmeReader`], with O_DIRECT-style alignment (aligned superset read, exact
/// bytes delivered).
#[derive(Debug)]
pub struct NvmeSource<R> {
    reader: R,
}

impl<R: NvmeReader> NvmeSource<R> {
    /// Wraps an adapter.
    pub fn new(reader: R) -> Self {
        Self { reader }
    }

    /// The adapter.
    pub fn reader(&self) -> &R {
        &self.reader
    }

    fn block(&self) -> u64 {
        let b = self.reader.block_size();
        if b.is_power_of_two() {
            b
        } else {
            crate::align::DEFAULT_BLOCK
        }
    }
}

impl<R: NvmeReader> Source for NvmeSource<R> {
    fn kind_for(&self, _item: &Item) -> SourceKind {
        SourceKind::NvmeDirect
    }

    fn staging_bytes(&self, item: &Item) -> Result<u64> {
        AlignedSpan::staging_for(&item.ranges, self.block())
    }

    fn prepare_staging(&mut self, staging: &mut HostBuffer) -> Result<()> {
        self.reader
            .prepare_buffer(staging.as_mut_slice())
            .map_err(|source| PipelineError::Nvme { key: 0, source })
    }

    fn fetch(&mut self, item: &Item, staging: &mut HostBuffer) -> Result<Fetched> {
        let block = self.block();
        let capacity = self.reader.capacity();
        let dst = staging.as_mut_slice();
        let mut spans: Vec<(usize, usize)> = Vec::new();
        let mut pos = 0usize;
        for r in &item.ranges {
            r.check_within(capacity, &"NVMe-direct namespace")?;
            let s = AlignedSpan::for_range(ByteRange::new(r.offset, r.len), block)?;
            let read_len = s.read_len as usize;
            let end = pos
                .checked_add(read_len)
                .filter(|&e| e <= dst.len())
                .ok_or(PipelineError::StagingTooSmall {
                    key: item.key,
                    need: pos as u64 + s.read_len,
                    have: dst.len() as u64,
                })?;
            if read_len > 0 {
                self.reader
                    .read_blocks(s.read_offset, &mut dst[pos..end])
                    .map_err(|source| PipelineError::Nvme {
                        key: item.key,
                        source,
                    })?;
            }
            spans.push((pos + s.head as usize, r.len as usize));
            pos = end;
        }
        Ok(Fetched::Staged(spans))
    }
}
