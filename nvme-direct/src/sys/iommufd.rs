//! iommufd + VFIO device cdev: `/dev/iommu` and `/dev/vfio/devices/vfioN` (Linux 6.6+ with
//! CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV).
//!
//! Neither `vfio-bindings` (5.0 uapi) nor `libc` carries these ioctls or structures, so they are
//! derived here, in this one place, from the kernel uapi headers' own formulas:
//! - `include/uapi/linux/iommufd.h`: `#define IOMMUFD_TYPE (';')`, an enum of commands starting
//!   at `IOMMUFD_CMD_BASE = 0x80` (`DESTROY` = base, then `IOAS_ALLOC`, `IOAS_ALLOW_IOVAS`,
//!   `IOAS_COPY`, `IOAS_IOVA_RANGES`, `IOAS_MAP`, `IOAS_UNMAP`, ...), and each ioctl is
//!   `_IO(IOMMUFD_TYPE, IOMMUFD_CMD_...)`;
//! - `include/uapi/linux/vfio.h`: `VFIO_DEVICE_BIND_IOMMUFD = _IO(VFIO_TYPE, VFIO_BASE + 18)`,
//!   `VFIO_DEVICE_ATTACH_IOMMUFD_PT = _IO(VFIO_TYPE, VFIO_BASE + 19)`.
//!
//! The unit test `ioctls_and_layouts_match_the_uapi_header` parses the installed headers
//! (linux-libc-dev >= 6.6, fetched by `nvme-direct/scripts/fetch-uapi-headers.sh` when the
//! system's are older) and checks every number, flag and structure prefix below against them.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use super::cvt;
use crate::error::{Error, Result};

/// `IOMMUFD_TYPE` (linux/iommufd.h).
const IOMMUFD_TYPE: u32 = b';' as u32;
/// `IOMMUFD_CMD_BASE` (linux/iommufd.h).
const IOMMUFD_CMD_BASE: u32 = 0x80;
/// `_IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + index)`: `index` is the position in the command enum.
const fn iommufd_io(index: u32) -> libc::Ioctl {
    libc::_IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + index)
}
pub(crate) const IOMMU_IOAS_ALLOC: libc::Ioctl = iommufd_io(1);
pub(crate) const IOMMU_IOAS_IOVA_RANGES: libc::Ioctl = iommufd_io(4);
pub(crate) const IOMMU_IOAS_MAP: libc::Ioctl = iommufd_io(5);
pub(crate) const IOMMU_IOAS_UNMAP: libc::Ioctl = iommufd_io(6);
pub(crate) const VFIO_DEVICE_BIND_IOMMUFD: libc::Ioctl = super::vfio::vfio_io(18);
pub(crate) const VFIO_DEVICE_ATTACH_IOMMUFD_PT: libc::Ioctl = super::vfio::vfio_io(19);

/// `enum iommufd_ioas_map_flags` (linux/iommufd.h).
pub(crate) const IOMMU_IOAS_MAP_FIXED_IOVA: u32 = 1 << 0;
pub(crate) const IOMMU_IOAS_MAP_WRITEABLE: u32 = 1 << 1;
pub(crate) const IOMMU_IOAS_MAP_READABLE: u32 = 1 << 2;

/// `struct vfio_device_bind_iommufd` (first fields; `argsz` tells the kernel how many).
#[repr(C)]
#[derive(Default)]
pub(crate) struct VfioDeviceBindIommufd {
    pub argsz: u32,
    pub flags: u32,
    pub iommufd: i32,
    pub out_devid: u32,
}

/// `struct vfio_device_attach_iommufd_pt` (first fields).
#[repr(C)]
#[derive(Default)]
pub(crate) struct VfioDeviceAttachIommufdPt {
    pub argsz: u32,
    pub flags: u32,
    pub pt_id: u32,
}

/// `struct iommu_ioas_alloc`.
#[repr(C)]
#[derive(Default)]
pub(crate) struct IommuIoasAlloc {
    pub size: u32,
    pub flags: u32,
    pub out_ioas_id: u32,
}

/// `struct iommu_ioas_iova_ranges`.
#[repr(C)]
#[derive(Default)]
pub(crate) struct IommuIoasIovaRanges {
    pub size: u32,
    pub ioas_id: u32,
    pub num_iovas: u32,
    pub reserved: u32,
    pub allowed_iovas: u64,
    pub out_iova_alignment: u64,
}

/// `struct iommu_iova_range`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub(crate) struct IommuIovaRange {
    pub start: u64,
    pub last: u64,
}

/// `struct iommu_ioas_map`.
#[repr(C)]
#[derive(Default)]
pub(crate) struct IommuIoasMap {
    pub size: u32,
    pub flags: u32,
    pub ioas_id: u32,
    pub reserved: u32,
    pub user_va: u64,
    pub length: u64,
    pub iova: u64,
}

/// `struct iommu_ioas_unmap`.
#[repr(C)]
#[derive(Default)]
pub(crate) struct IommuIoasUnmap {
    pub size: u32,
    pub ioas_id: u32,
    pub iova: u64,
    pub length: u64,
}

fn size_u32<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

fn sys_err(op: &str, hint: &'static str) -> impl FnOnce(io::Error) -> Error {
    let op = op.to_string();
    move |source| Error::Sys { op, source, hint }
}

/// The VFIO cdev of `bdf` (`/dev/vfio/devices/vfioN`), when the kernel created one.
pub(crate) fn cdev_path(bdf: &str) -> Option<PathBuf> {
    let dir = std::fs::read_dir(format!("/sys/bus/pci/devices/{bdf}/vfio-dev")).ok()?;
    dir.filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("vfio"))
        .map(|n| PathBuf::from("/dev/vfio/devices").join(n))
}

/// True when `/dev/iommu` exists and `bdf` has a VFIO cdev.
pub(crate) fn available(bdf: &str) -> bool {
    std::path::Path::new("/dev/iommu").exists() && cdev_path(bdf).is_some_and(|p| p.exists())
}

/// An opened cdev device bound to a fresh iommufd and attached to a new IOAS.
pub(crate) struct Opened {
    pub device: File,
    pub iommufd: File,
    pub ioas: u32,
    /// Allowed IOVA ranges `(start, inclusive last)` of the IOAS with the device attached.
    pub ranges: Vec<(u64, u64)>,
}

/// Opens `bdf` through iommufd: bind the cdev to `/dev/iommu`, allocate an IOAS, attach the
/// device to it and read the IOAS's allowed IOVA ranges.
pub(crate) fn open(bdf: &str) -> Result<Opened> {
    let cdev = cdev_path(bdf).ok_or_else(|| {
        Error::Unsupported(format!(
            "{bdf} has no VFIO device cdev (/sys/bus/pci/devices/{bdf}/vfio-dev): the kernel \
             needs CONFIG_VFIO_DEVICE_CDEV and the device must be bound to vfio-pci"
        ))
    })?;
    let rw = |p: &std::path::Path| OpenOptions::new().read(true).write(true).open(p);
    let iommufd = rw("/dev/iommu".as_ref()).map_err(sys_err(
        "open /dev/iommu",
        "the kernel needs CONFIG_IOMMUFD (modprobe iommufd); run as root or grant access",
    ))?;
    let cdev_name = cdev.display().to_string();
    let device = rw(&cdev).map_err(sys_err(&cdev_name, "VFIO device cdev not accessible"))?;
    let mut bind = VfioDeviceBindIommufd {
        argsz: size_u32::<VfioDeviceBindIommufd>(),
        iommufd: iommufd.as_raw_fd(),
        ..Default::default()
    };
    // SAFETY: bind is a valid, exclusively borrowed vfio_device_bind_iommufd with argsz set.
    cvt(unsafe {
        libc::ioctl(
            device.as_raw_fd(),
            VFIO_DEVICE_BIND_IOMMUFD,
            &mut bind as *mut _,
        )
    })
    .map_err(sys_err(
        "VFIO_DEVICE_BIND_IOMMUFD",
        "device already opened through its group or another iommufd?",
    ))?;
    let mut alloc = IommuIoasAlloc {
        size: size_u32::<IommuIoasAlloc>(),
        ..Default::default()
    };
    // SAFETY: alloc is a valid, exclusively borrowed iommu_ioas_alloc with size set.
    cvt(unsafe { libc::ioctl(iommufd.as_raw_fd(), IOMMU_IOAS_ALLOC, &mut alloc as *mut _) })
        .map_err(sys_err(
            "IOMMU_IOAS_ALLOC",
            "iommufd refused a new IO address space",
        ))?;
    let ioas = alloc.out_ioas_id;
    let mut attach = VfioDeviceAttachIommufdPt {
        argsz: size_u32::<VfioDeviceAttachIommufdPt>(),
        flags: 0,
        pt_id: ioas,
    };
    // SAFETY: attach is a valid, exclusively borrowed vfio_device_attach_iommufd_pt.
    cvt(unsafe {
        libc::ioctl(
            device.as_raw_fd(),
            VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            &mut attach as *mut _,
        )
    })
    .map_err(sys_err("VFIO_DEVICE_ATTACH_IOMMUFD_PT", "is the IOMMU on?"))?;
    let ranges = iova_ranges(&iommufd, ioas)?;
    Ok(Opened {
        device,
        iommufd,
        ioas,
        ranges,
    })
}

/// IOMMU_IOAS_IOVA_RANGES: first asks for the count (the kernel answers EMSGSIZE with
/// `num_iovas` filled in), then fetches that many ranges.
fn iova_ranges(iommufd: &File, ioas: u32) -> Result<Vec<(u64, u64)>> {
    let mut buf: Vec<IommuIovaRange> = Vec::new();
    for _ in 0..4 {
        let mut q = IommuIoasIovaRanges {
            size: size_u32::<IommuIoasIovaRanges>(),
            ioas_id: ioas,
            num_iovas: buf.len() as u32,
            allowed_iovas: buf.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: q is valid; allowed_iovas points at `num_iovas` writable ranges (or is
        // unused when the count is 0).
        let r = cvt(unsafe {
            libc::ioctl(
                iommufd.as_raw_fd(),
                IOMMU_IOAS_IOVA_RANGES,
                &mut q as *mut _,
            )
        });
        let want = q.num_iovas as usize;
        match r {
            Ok(_) if want <= buf.len() => {
                return Ok(buf[..want].iter().map(|r| (r.start, r.last)).collect());
            }
            Err(e) if e.raw_os_error() != Some(libc::EMSGSIZE) => {
                return Err(Error::Sys {
                    op: "IOMMU_IOAS_IOVA_RANGES".into(),
                    source: e,
                    hint: "kernel iommufd problem",
                });
            }
            _ if want > 4096 => {
                return Err(Error::Unsupported(format!("{want} IOVA ranges reported")));
            }
            _ => buf = vec![IommuIovaRange::default(); want],
        }
    }
    Err(Error::Unsupported("IOVA range count kept changing".into()))
}

/// IOMMU_IOAS_MAP of `len` bytes at host `vaddr` to the driver-chosen `iova` (FIXED_IOVA).
pub(crate) fn ioas_map(fd: &File, ioas: u32, vaddr: u64, iova: u64, len: u64) -> io::Result<()> {
    let mut m = IommuIoasMap {
        size: size_u32::<IommuIoasMap>(),
        flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
        ioas_id: ioas,
        reserved: 0,
        user_va: vaddr,
        length: len,
        iova,
    };
    // SAFETY: m describes a locked mapping of ours; the kernel pins the pages.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), IOMMU_IOAS_MAP, &mut m as *mut _) }).map(|_| ())
}

/// IOMMU_IOAS_UNMAP of exactly the range mapped at `iova`.
pub(crate) fn ioas_unmap(fd: &File, ioas: u32, iova: u64, len: u64) -> io::Result<()> {
    let mut u = IommuIoasUnmap {
        size: size_u32::<IommuIoasUnmap>(),
        ioas_id: ioas,
        iova,
        length: len,
    };
    // SAFETY: u is a valid iommu_ioas_unmap for a range we mapped.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), IOMMU_IOAS_UNMAP, &mut u as *mut _) }).map(|_| ())
}

#[cfg(test)]
#[path = "iommufd_header_test.rs"]
mod header_test;
