//! IOMMU-mapped DMA buffers for a VFIO device, through either IOMMU interface: the type1
//! container (`VFIO_IOMMU_MAP_DMA`) or an iommufd IO address space (`IOMMU_IOAS_MAP`).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Mutex};

use vfio_bindings::bindings::vfio as vb;

use super::cvt;
use super::hostmem::{HugePages, LockedMemory, HUGE, SMALL};
use super::iommufd;
use crate::dma::{check_range, DmaBuffer, DmaMemory};
use crate::error::{Error, Result};
use crate::iova::IovaAllocator;

/// VFIO type1 ioctls used for DMA mapping (`_IO(VFIO_TYPE, VFIO_BASE + n)`, linux/vfio.h).
const VFIO_IOMMU_MAP_DMA: libc::Ioctl = super::vfio::vfio_io(13);
const VFIO_IOMMU_UNMAP_DMA: libc::Ioctl = super::vfio::vfio_io(14);

/// How IOVAs are mapped: one of the two kernel interfaces.
pub(crate) enum Mapper {
    /// VFIO type1v2 container; the group fd must stay open while mappings exist.
    Type1 { container: File, _group: File },
    /// iommufd with one IO address space the device is attached to.
    Iommufd { iommufd: File, ioas: u32 },
}

impl Mapper {
    fn map(&self, vaddr: u64, iova: u64, len: u64) -> io::Result<()> {
        match self {
            Self::Type1 { container, .. } => {
                let mut map = vb::vfio_iommu_type1_dma_map {
                    argsz: std::mem::size_of::<vb::vfio_iommu_type1_dma_map>() as u32,
                    flags: vb::VFIO_DMA_MAP_FLAG_READ | vb::VFIO_DMA_MAP_FLAG_WRITE,
                    vaddr,
                    iova,
                    size: len,
                };
                // SAFETY: map describes a locked mapping of ours; the kernel pins it.
                cvt(unsafe {
                    libc::ioctl(
                        container.as_raw_fd(),
                        VFIO_IOMMU_MAP_DMA,
                        &mut map as *mut _,
                    )
                })
                .map(|_| ())
            }
            Self::Iommufd { iommufd: fd, ioas } => iommufd::ioas_map(fd, *ioas, vaddr, iova, len),
        }
    }

    fn unmap(&self, iova: u64, len: u64) -> io::Result<()> {
        match self {
            Self::Type1 { container, .. } => {
                let mut unmap = vb::vfio_iommu_type1_dma_unmap {
                    argsz: std::mem::size_of::<vb::vfio_iommu_type1_dma_unmap>() as u32,
                    flags: 0,
                    iova,
                    size: len,
                };
                // SAFETY: unmap is a valid struct for the call; the range was mapped by us.
                cvt(unsafe {
                    libc::ioctl(
                        container.as_raw_fd(),
                        VFIO_IOMMU_UNMAP_DMA,
                        &mut unmap as *mut _,
                    )
                })
                .map(|_| ())
            }
            Self::Iommufd { iommufd: fd, ioas } => iommufd::ioas_unmap(fd, *ioas, iova, len),
        }
    }
}

/// The IOMMU side shared by the allocator and its buffers.
pub(crate) struct Container {
    pub mapper: Mapper,
    pub iova: Mutex<IovaAllocator>,
}

/// Allocator of locked, IOMMU-mapped DMA buffers for one VFIO device.
#[derive(Clone)]
pub struct VfioDma {
    pub(crate) container: Arc<Container>,
    pub(crate) huge: HugePages,
}

impl VfioDma {
    /// Chooses the pages of later buffers (default: the device's `VfioOptions::huge_pages`).
    pub fn with_huge_pages(mut self, huge: HugePages) -> Self {
        self.huge = huge;
        self
    }
    /// The page policy in force.
    pub fn huge_pages(&self) -> HugePages {
        self.huge
    }
}

/// A locked, page-aligned buffer mapped at an IOVA (unmapped and freed on drop).
///
/// [`VfioBuffer::as_ptr`] gives the host address, e.g. for `cuMemHostRegister`.
pub struct VfioBuffer {
    mem: LockedMemory,
    iova: u64,
    container: Arc<Container>,
}

impl VfioBuffer {
    /// Host virtual address of byte 0 (register it with CUDA to let the GPU copy from it).
    pub fn as_ptr(&self) -> *mut u8 {
        self.mem.ptr().as_ptr()
    }
    /// True when backed by 2 MiB hugetlb pages.
    pub fn is_huge(&self) -> bool {
        self.mem.is_huge()
    }
    /// The bytes; `&mut self` guarantees no command is using the buffer.
    pub fn as_slice(&mut self) -> &[u8] {
        fence(Ordering::Acquire);
        // SAFETY: ptr/len is our live mapping; &mut self excludes concurrent driver use.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.mem.len()) }
    }
    /// The bytes, writable; `&mut self` guarantees no command is using the buffer.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice, and the borrow is unique.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.mem.len()) }
    }
}

impl DmaBuffer for VfioBuffer {
    fn len(&self) -> usize {
        self.mem.len()
    }
    fn iova(&self) -> u64 {
        self.iova
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        check_range(self.len(), offset, out.len())?;
        fence(Ordering::Acquire);
        let p = self.as_ptr();
        for (i, o) in out.iter_mut().enumerate() {
            // SAFETY: offset + i < len (checked above); volatile because the device may write.
            *o = unsafe { p.add(offset + i).read_volatile() };
        }
        Ok(())
    }
    fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<()> {
        check_range(self.len(), offset, data.len())?;
        let p = self.as_ptr();
        for (i, d) in data.iter().enumerate() {
            // SAFETY: offset + i < len (checked above); volatile because the device may read.
            unsafe { p.add(offset + i).write_volatile(*d) };
        }
        fence(Ordering::Release);
        Ok(())
    }
    fn read_u32(&self, offset: usize) -> Result<u32> {
        check_range(self.len(), offset, 4)?;
        if offset % 4 != 0 {
            return Err(Error::BufferRange("unaligned u32".into()));
        }
        // SAFETY: aligned and in range; the device writes completion entries concurrently.
        let v = unsafe { self.as_ptr().add(offset).cast::<u32>().read_volatile() };
        fence(Ordering::Acquire);
        Ok(u32::from_le(v))
    }
}

impl Drop for VfioBuffer {
    fn drop(&mut self) {
        let len = self.mem.len() as u64;
        if self.container.mapper.unmap(self.iova, len).is_ok() {
            // Only a range the IOMMU no longer translates may be handed out again.
            self.container
                .iova
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .free(self.iova, len);
        }
        // `mem` is unmapped from the process when the fields drop, after the IOMMU unmap.
    }
}

impl DmaMemory for VfioDma {
    type Buffer = VfioBuffer;
    fn with_host_region<T, F: FnOnce(&mut HostRegion) -> Result<T>>(
        &self,
        region: &mut [u8],
        f: F,
    ) -> Result<Option<T>> {
        self.map_host_region(region, f)
    }
    fn alloc(&self, len: usize) -> Result<VfioBuffer> {
        let mem = LockedMemory::new(len, self.huge)?;
        let len = mem.len() as u64;
        let align = if mem.is_huge() { HUGE } else { SMALL } as u64;
        let mut iova_alloc = self
            .container
            .iova
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let iova = iova_alloc
            .alloc(len, align)
            .ok_or_else(|| Error::Dma("IOVA window exhausted".into()))?;
        drop(iova_alloc);
        if let Err(e) = self
            .container
            .mapper
            .map(mem.ptr().as_ptr() as u64, iova, len)
        {
            self.container
                .iova
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .free(iova, len);
            return Err(Error::Sys {
                op: "IOMMU map (VFIO_IOMMU_MAP_DMA / IOMMU_IOAS_MAP)".into(),
                source: e,
                hint: "IOVA range reserved or RLIMIT_MEMLOCK too low",
            });
        }
        Ok(VfioBuffer {
            mem,
            iova,
            container: self.container.clone(),
        })
    }
}

/// Caller memory mapped for the device for the duration of one
/// [`DmaMemory::with_host_region`] call (page-aligned, whole pages), so reads land in it by DMA
/// with no bounce buffer. Accessed like any [`DmaBuffer`] (volatile copies).
pub struct HostRegion {
    ptr: *mut u8,
    len: usize,
    iova: u64,
}

impl std::fmt::Debug for HostRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostRegion")
            .field("len", &self.len)
            .field("iova", &self.iova)
            .finish_non_exhaustive()
    }
}

impl DmaBuffer for HostRegion {
    fn len(&self) -> usize {
        self.len
    }
    fn iova(&self) -> u64 {
        self.iova
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        check_range(self.len, offset, out.len())?;
        fence(Ordering::Acquire);
        for (i, o) in out.iter_mut().enumerate() {
            // SAFETY: offset + i < len (checked above); the region is the caller's `&mut [u8]`,
            // borrowed for as long as this value exists (see with_host_region); volatile
            // because the device may write it.
            *o = unsafe { self.ptr.add(offset + i).read_volatile() };
        }
        Ok(())
    }
    fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<()> {
        check_range(self.len, offset, data.len())?;
        for (i, d) in data.iter().enumerate() {
            // SAFETY: as in read_bytes.
            unsafe { self.ptr.add(offset + i).write_volatile(*d) };
        }
        fence(Ordering::Release);
        Ok(())
    }
}

/// Unmaps a host region when its scope ends, on return or unwind.
struct RegionMapping<'a> {
    container: &'a Container,
    iova: u64,
    len: u64,
}

impl Drop for RegionMapping<'_> {
    fn drop(&mut self) {
        if self.container.mapper.unmap(self.iova, self.len).is_ok() {
            self.container
                .iova
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .free(self.iova, self.len);
        } else {
            // The IOMMU still translates this range into memory the caller gets back now: a
            // late device write could land in it. Nothing safe can continue.
            eprintln!("nvme-direct: IOMMU unmap of a caller's region failed; aborting");
            std::process::abort();
        }
    }
}

impl VfioDma {
    /// [`DmaMemory::with_host_region`] for VFIO: maps `region` (page-aligned start, whole
    /// 4 KiB pages) at a fresh IOVA, runs `f`, unmaps. `None` for a region that is not whole
    /// pages or is empty.
    fn map_host_region<T, F: FnOnce(&mut HostRegion) -> Result<T>>(
        &self,
        region: &mut [u8],
        f: F,
    ) -> Result<Option<T>> {
        let (ptr, len) = (region.as_mut_ptr(), region.len());
        if len == 0 || len % SMALL != 0 || (ptr as usize) % SMALL != 0 {
            return Ok(None);
        }
        let iova = self
            .container
            .iova
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .alloc(len as u64, SMALL as u64)
            .ok_or_else(|| Error::Dma("IOVA window exhausted".into()))?;
        if let Err(e) = self.container.mapper.map(ptr as u64, iova, len as u64) {
            self.container
                .iova
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .free(iova, len as u64);
            return Err(Error::Sys {
                op: "IOMMU map of a caller's buffer (VFIO_IOMMU_MAP_DMA / IOMMU_IOAS_MAP)".into(),
                source: e,
                hint: "RLIMIT_MEMLOCK too low for the buffer, or the IOVA range is reserved",
            });
        }
        let _mapping = RegionMapping {
            container: &self.container,
            iova,
            len: len as u64,
        };
        let mut r = HostRegion { ptr, len, iova };
        // `region` stays mutably borrowed until this returns, and `_mapping` unmaps it before
        // (also on unwind): the device can reach the memory only while nothing else can.
        f(&mut r).map(Some)
    }
}
