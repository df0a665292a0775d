//! FS_IOC_FIEMAP: where a file's bytes lie on its block device.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// struct fiemap (linux/fiemap.h) without the flexible array.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct FiemapHeader {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
}

/// struct fiemap_extent (linux/fiemap.h).
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub(crate) struct RawExtent {
    pub fe_logical: u64,
    pub fe_physical: u64,
    pub fe_length: u64,
    fe_reserved64: [u64; 2],
    pub fe_flags: u32,
    fe_reserved: [u32; 3],
}

/// FS_IOC_FIEMAP = _IOWR('f', 11, struct fiemap), computed with libc's ioctl macro.
const FS_IOC_FIEMAP: libc::Ioctl = libc::_IOWR::<FiemapHeader>(b'f' as u32, 11);
/// FIEMAP_FLAG_SYNC: flush dirty data before mapping.
const FIEMAP_FLAG_SYNC: u32 = 1;

#[repr(C)]
struct Request {
    header: FiemapHeader,
    extents: [RawExtent; BATCH],
}

const BATCH: usize = 64;

/// Up to 64 extents of `file` starting at byte `start`.
pub(crate) fn fiemap_batch(file: &File, start: u64) -> io::Result<Vec<RawExtent>> {
    let mut req = Box::new(Request {
        header: FiemapHeader {
            fm_start: start,
            fm_length: u64::MAX - start,
            fm_flags: FIEMAP_FLAG_SYNC,
            fm_extent_count: BATCH as u32,
            ..Default::default()
        },
        extents: [RawExtent::default(); BATCH],
    });
    // SAFETY: `req` is a properly laid out struct fiemap followed by room for fm_extent_count
    // extents, exclusively borrowed for the call; the fd is open for the duration.
    super::cvt(unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut *req as *mut Request) })?;
    let n = (req.header.fm_mapped_extents as usize).min(BATCH);
    Ok(req.extents[..n].to_vec())
}
