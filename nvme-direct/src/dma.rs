//! The two traits the safe driver logic runs over: register access and DMA memory.

use crate::error::{Error, Result};
pub use crate::sys::dma::HostRegion;

/// 32/64-bit access to the controller's BAR0 registers.
///
/// Implemented by the VFIO BAR mapping (volatile MMIO) and by the in-process emulator.
pub trait RegisterIo {
    /// Reads a 32-bit register at byte offset `offset`.
    fn read32(&self, offset: usize) -> u32;
    /// Writes a 32-bit register.
    fn write32(&self, offset: usize, value: u32);
    /// Reads a 64-bit register (two 32-bit reads, low first, by default).
    fn read64(&self, offset: usize) -> u64 {
        u64::from(self.read32(offset)) | (u64::from(self.read32(offset + 4)) << 32)
    }
    /// Writes a 64-bit register (two 32-bit writes, low first, by default).
    fn write64(&self, offset: usize, value: u64) {
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }
}

/// A page-aligned, device-visible buffer.
///
/// Access goes through copy methods taking `&self`: the device may write the memory at any time
/// while a command is in flight, so implementations must use volatile (or locked) access.
pub trait DmaBuffer {
    /// Length in bytes (a multiple of the page size).
    fn len(&self) -> usize;
    /// True when the buffer has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// I/O virtual address of byte 0, as the device sees it (never assumed equal to the VA).
    fn iova(&self) -> u64;
    /// Copies `out.len()` bytes starting at `offset` out of the buffer.
    fn read_bytes(&self, offset: usize, out: &mut [u8]) -> Result<()>;
    /// Copies `data` into the buffer at `offset`.
    fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<()>;
    /// Fills `len` bytes at `offset` with zero.
    fn zero(&self, offset: usize, len: usize) -> Result<()> {
        let chunk = [0u8; 4096];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk.len());
            self.write_bytes(offset + done, &chunk[..n])?;
            done += n;
        }
        Ok(())
    }
    /// Reads a little-endian u32.
    fn read_u32(&self, offset: usize) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read_bytes(offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    /// Writes a little-endian u64.
    fn write_u64(&self, offset: usize, value: u64) -> Result<()> {
        self.write_bytes(offset, &value.to_le_bytes())
    }
}

/// Allocator of DMA buffers mapped for the device; a cheap handle (clones share the mapping).
pub trait DmaMemory: Clone {
    /// The buffer type.
    type Buffer: DmaBuffer;
    /// Allocates a zeroed buffer of at least `len` bytes (rounded up to whole pages).
    fn alloc(&self, len: usize) -> Result<Self::Buffer>;
    /// Runs `f` with the caller's `region` mapped for the device (reads into it land there by
    /// DMA, no bounce copy) and unmaps it before returning, also when `f` fails or panics.
    /// `Ok(None)` without calling `f` when this memory cannot map caller memory, or `region`
    /// is not whole 4 KiB pages at a page-aligned address: use a buffer of [`DmaMemory::alloc`]
    /// then. The default maps nothing.
    fn with_host_region<T, F: FnOnce(&mut HostRegion) -> Result<T>>(
        &self,
        region: &mut [u8],
        f: F,
    ) -> Result<Option<T>> {
        let _ = (region, f);
        Ok(None)
    }
}

/// Checks that `offset..offset+len` lies inside a buffer of `total` bytes.
pub fn check_range(total: usize, offset: usize, len: usize) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= total => Ok(()),
        _ => Err(Error::BufferRange(format!(
            "bytes {offset}..+{len} outside a {total}-byte DMA buffer"
        ))),
    }
}
