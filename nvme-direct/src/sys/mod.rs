//! The only module of this crate with `unsafe`: VFIO and iommufd ioctls, BAR0 MMIO, locked DMA
//! memory and the FIEMAP ioctl. Every block carries a `// SAFETY:` comment.

pub(crate) mod dma;
pub(crate) mod fiemap;
pub(crate) mod hostmem;
pub(crate) mod iommufd;
pub(crate) mod vfio;

use std::io;

/// Turns a -1 return of a libc call into an `io::Error`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}
