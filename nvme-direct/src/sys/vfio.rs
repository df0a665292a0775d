//! VFIO device opening (type1 container/group, or iommufd + device cdev), BAR0 MMIO and PCI
//! config space. DMA buffers are in `dma`, the iommufd ioctls in `iommufd`.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Mutex};

use vfio_bindings::bindings::vfio as vb;

use super::cvt;
use super::dma::{Container, Mapper, VfioDma};
use super::hostmem::{HugePages, HUGE};
use super::iommufd;
use crate::dma::RegisterIo;
use crate::error::{Error, Result};
use crate::iova::IovaAllocator;
use crate::options::VfioOptions;

/// VFIO ioctls are all `_IO(VFIO_TYPE, VFIO_BASE + n)` (linux/vfio.h).
pub(crate) const fn vfio_io(n: u32) -> libc::Ioctl {
    libc::_IO(vb::VFIO_TYPE, vb::VFIO_BASE + n)
}
const VFIO_GET_API_VERSION: libc::Ioctl = vfio_io(0);
const VFIO_CHECK_EXTENSION: libc::Ioctl = vfio_io(1);
const VFIO_SET_IOMMU: libc::Ioctl = vfio_io(2);
const VFIO_GROUP_GET_STATUS: libc::Ioctl = vfio_io(3);
const VFIO_GROUP_SET_CONTAINER: libc::Ioctl = vfio_io(4);
const VFIO_GROUP_GET_DEVICE_FD: libc::Ioctl = vfio_io(6);
const VFIO_DEVICE_GET_REGION_INFO: libc::Ioctl = vfio_io(8);
const VFIO_IOMMU_GET_INFO: libc::Ioctl = vfio_io(12);
/// linux/vfio.h `VFIO_IOMMU_INFO_CAPS`: the info carries a capability chain (Linux 5.4+;
/// newer than the 5.0 bindings).
const VFIO_IOMMU_INFO_CAPS: u32 = 1 << 1;
/// linux/vfio.h `VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`.
const CAP_IOVA_RANGE: u16 = 1;
/// Size of `struct vfio_iommu_type1_info` with `cap_offset` and its padding (Linux 5.4+).
const INFO_WITH_CAPS: usize = 24;

/// First IOVA handed out: 64 GiB, far from typical user addresses and below a 39-bit limit.
const IOVA_BASE: u64 = 64 << 30;
/// Highest IOVA (exclusive) used: 2^39, what a 39-bit address-width IOMMU can translate.
const IOVA_LIMIT: u64 = 1 << 39;

fn sys_err(op: impl Into<String>, hint: &'static str) -> impl FnOnce(io::Error) -> Error {
    let op = op.into();
    move |source| Error::Sys { op, source, hint }
}

/// Which kernel IOMMU interface maps DMA memory for the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IommuMode {
    /// iommufd when `/dev/iommu` exists and the device has a VFIO cdev
    /// (`/dev/vfio/devices/vfioN`), else (or when opening it fails) type1.
    #[default]
    Auto,
    /// The VFIO type1v2 container (`/dev/vfio/vfio` + `/dev/vfio/<group>`).
    Type1,
    /// iommufd (`/dev/iommu`) with the VFIO device cdev (Linux 6.6+, CONFIG_IOMMUFD and
    /// CONFIG_VFIO_DEVICE_CDEV).
    Iommufd,
}

impl std::fmt::Display for IommuMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Type1 => "type1",
            Self::Iommufd => "iommufd",
        })
    }
}

/// A PCI function opened through VFIO (type1 container or iommufd), with BAR0 mapped.
pub struct VfioDevice {
    ranges: Vec<(u64, u64)>,
    window: (u64, u64),
    mode: IommuMode,
    note: Option<String>,
    container: Arc<Container>,
    device: Arc<File>,
    bar0: Bar0,
    config_offset: u64,
    huge: HugePages,
}

/// BAR0 of the device, mapped for volatile 32-bit MMIO.
pub struct Bar0 {
    ptr: NonNull<u8>,
    len: usize,
    _device: Arc<File>,
}

// SAFETY: the mapping is plain MMIO addressed with volatile accesses; it stays valid as long as
// this value lives (unmapped in Drop) and may be used from any thread.
unsafe impl Send for Bar0 {}
// SAFETY: every access is a single volatile load or store, which the device serialises.
unsafe impl Sync for Bar0 {}

impl VfioDevice {
    /// Opens PCI function `bdf` (e.g. `0000:00:04.0`), which must be bound to `vfio-pci`,
    /// with the default [`VfioOptions`] (automatic IOMMU interface and page policy).
    pub fn open(bdf: &str) -> Result<Self> {
        Self::open_with(bdf, VfioOptions::default())
    }

    /// Opens `bdf` with explicit options (IOMMU interface, page policy of the DMA buffers).
    pub fn open_with(bdf: &str, options: VfioOptions) -> Result<Self> {
        let mut dev = Self::open_mode(bdf, options.iommu)?;
        dev.huge = options.huge_pages;
        Ok(dev)
    }

    fn open_mode(bdf: &str, mode: IommuMode) -> Result<Self> {
        match mode {
            IommuMode::Type1 => Self::open_type1(bdf, None),
            IommuMode::Iommufd => Self::open_iommufd(bdf),
            IommuMode::Auto if iommufd::available(bdf) => match Self::open_iommufd(bdf) {
                Ok(d) => Ok(d),
                Err(e) => Self::open_type1(bdf, Some(format!("iommufd failed ({e}); using type1"))),
            },
            IommuMode::Auto => Self::open_type1(
                bdf,
                Some("no /dev/iommu or no VFIO device cdev; using type1".into()),
            ),
        }
    }

    fn open_iommufd(bdf: &str) -> Result<Self> {
        let o = iommufd::open(bdf)?;
        let mapper = Mapper::Iommufd {
            iommufd: o.iommufd,
            ioas: o.ioas,
        };
        Self::finish(o.device, mapper, o.ranges, IommuMode::Iommufd, None)
    }

    fn open_type1(bdf: &str, note: Option<String>) -> Result<Self> {
        let link = std::fs::read_link(format!("/sys/bus/pci/devices/{bdf}/iommu_group")).map_err(
            sys_err(
                format!("read iommu_group of {bdf}"),
                "is the IOMMU on (intel_iommu=on) and the BDF right?",
            ),
        )?;
        let group_id = link
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::InvalidArgument(format!("bad iommu_group link for {bdf}")))?
            .to_string();
        let rw = |p: &str| OpenOptions::new().read(true).write(true).open(p);
        let container = rw("/dev/vfio/vfio").map_err(sys_err(
            "open /dev/vfio/vfio",
            "load the vfio and vfio_iommu_type1 modules; run as root or grant access",
        ))?;
        let cfd = container.as_raw_fd();
        // SAFETY: argumentless ioctl on an fd we own.
        let api = cvt(unsafe { libc::ioctl(cfd, VFIO_GET_API_VERSION) }).map_err(sys_err(
            "VFIO_GET_API_VERSION",
            "is /dev/vfio/vfio a VFIO container?",
        ))?;
        if api != vb::VFIO_API_VERSION as i32 {
            return Err(Error::Unsupported(format!("VFIO API version {api}")));
        }
        // SAFETY: VFIO_CHECK_EXTENSION takes an integer argument.
        let ok = unsafe {
            libc::ioctl(
                cfd,
                VFIO_CHECK_EXTENSION,
                vb::VFIO_TYPE1v2_IOMMU as libc::c_ulong,
            )
        };
        if ok != 1 {
            return Err(Error::Unsupported(
                "VFIO type1v2 IOMMU not available; load vfio_iommu_type1".into(),
            ));
        }
        let group_path = format!("/dev/vfio/{group_id}");
        let group = rw(&group_path).map_err(sys_err(
            format!("open {group_path}"),
            "bind the device to vfio-pci first; the group must not be in use",
        ))?;
        let gfd = group.as_raw_fd();
        let mut status = vb::vfio_group_status {
            argsz: std::mem::size_of::<vb::vfio_group_status>() as u32,
            flags: 0,
        };
        // SAFETY: status is a valid vfio_group_status with argsz set, exclusively borrowed.
        cvt(unsafe {
            libc::ioctl(
                gfd,
                VFIO_GROUP_GET_STATUS,
                &mut status as *mut vb::vfio_group_status,
            )
        })
        .map_err(sys_err("VFIO_GROUP_GET_STATUS", "kernel VFIO problem"))?;
        if status.flags & vb::VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(Error::Unsupported(format!(
                "IOMMU group {group_id} is not viable: bind every device of the group to vfio-pci"
            )));
        }
        // SAFETY: the argument is a pointer to the container fd, valid for the call.
        cvt(unsafe { libc::ioctl(gfd, VFIO_GROUP_SET_CONTAINER, &cfd as *const i32) }).map_err(
            sys_err(
                "VFIO_GROUP_SET_CONTAINER",
                "group already attached elsewhere?",
            ),
        )?;
        // SAFETY: integer argument selecting the IOMMU model.
        cvt(unsafe { libc::ioctl(cfd, VFIO_SET_IOMMU, vb::VFIO_TYPE1v2_IOMMU as libc::c_ulong) })
            .map_err(sys_err("VFIO_SET_IOMMU(type1v2)", "load vfio_iommu_type1"))?;
        let name =
            CString::new(bdf).map_err(|_| Error::InvalidArgument("BDF contains NUL".into()))?;
        // SAFETY: name is a NUL-terminated string valid for the call; a new fd is returned.
        let dfd = cvt(unsafe { libc::ioctl(gfd, VFIO_GROUP_GET_DEVICE_FD, name.as_ptr()) })
            .map_err(sys_err(
                format!("VFIO_GROUP_GET_DEVICE_FD({bdf})"),
                "is the device in this group and bound to vfio-pci?",
            ))?;
        // SAFETY: dfd is a fresh fd returned by the kernel that nothing else owns.
        let device = unsafe { File::from_raw_fd(dfd) };
        let ranges = iova_ranges(&container);
        let mapper = Mapper::Type1 {
            container,
            _group: group,
        };
        Self::finish(device, mapper, ranges, IommuMode::Type1, note)
    }

    /// Region info, BAR0 mapping, IOVA window and bus mastering: the same for both paths.
    fn finish(
        device: File,
        mapper: Mapper,
        ranges: Vec<(u64, u64)>,
        mode: IommuMode,
        note: Option<String>,
    ) -> Result<Self> {
        let device = Arc::new(device);
        let dfd = device.as_raw_fd();
        let bar = region_info(&device, vb::VFIO_PCI_BAR0_REGION_INDEX)?;
        let cfg = region_info(&device, vb::VFIO_PCI_CONFIG_REGION_INDEX)?;
        if bar.flags & vb::VFIO_REGION_INFO_FLAG_MMAP == 0 || bar.size < 0x2000 {
            return Err(Error::Unsupported(format!(
                "BAR0 not mappable (flags {:#x}, size {})",
                bar.flags, bar.size
            )));
        }
        let len =
            usize::try_from(bar.size).map_err(|_| Error::Unsupported("BAR0 too large".into()))?;
        let off = libc::off_t::try_from(bar.offset)
            .map_err(|_| Error::Unsupported("BAR0 offset too large".into()))?;
        // SAFETY: maps `len` bytes of the device fd's BAR0 region; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                dfd,
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(sys_err("mmap BAR0", "VFIO region mmap refused")(
                io::Error::last_os_error(),
            ));
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| Error::Dma("mmap returned NULL".into()))?;
        let window = iova_window(&ranges);
        let dev = Self {
            ranges,
            window,
            mode,
            note,
            container: Arc::new(Container {
                mapper,
                iova: Mutex::new(IovaAllocator::new(window.0, window.1)),
            }),
            bar0: Bar0 {
                ptr,
                len,
                _device: device.clone(),
            },
            device,
            config_offset: cfg.offset,
            huge: HugePages::Auto,
        };
        dev.enable_bus_master()?;
        Ok(dev)
    }

    fn enable_bus_master(&self) -> Result<()> {
        let mut cmd = [0u8; 2];
        let at = self.config_offset + 4;
        self.device
            .read_exact_at(&mut cmd, at)
            .map_err(sys_err("read PCI command register", "config space access"))?;
        let v = u16::from_le_bytes(cmd) | 0x2 | 0x4; // memory space + bus master
        self.device
            .write_all_at(&v.to_le_bytes(), at)
            .map_err(sys_err("write PCI command register", "config space access"))
    }

    /// The IOVA window `[start, end)` DMA buffers are placed in: inside the IOMMU's valid
    /// ranges (VFIO_IOMMU_GET_INFO) when the kernel reports them, else 64 GiB .. 2^39.
    pub fn iova_window(&self) -> (u64, u64) {
        self.window
    }

    /// The IOMMU's valid IOVA ranges `(start, inclusive end)` as reported by the kernel
    /// (VFIO_IOMMU_GET_INFO capability chain); empty when it reports none.
    pub fn iova_ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// Register access to BAR0 (borrowed; the device stays open).
    pub fn bar0(&self) -> &Bar0 {
        &self.bar0
    }

    /// True when `bdf` can be opened through iommufd (`/dev/iommu` exists and the device has
    /// a VFIO cdev), i.e. what [`IommuMode::Auto`] tries first.
    pub fn iommufd_available(bdf: &str) -> bool {
        iommufd::available(bdf)
    }

    /// The IOMMU interface in use (never `Auto`).
    pub fn iommu_mode(&self) -> IommuMode {
        self.mode
    }

    /// Why `Auto` chose type1 (no `/dev/iommu`, no cdev, or the iommufd error), if it did.
    pub fn iommu_note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Splits the device into its register window and a DMA allocator for a controller
    /// (page policy from the [`VfioOptions`] it was opened with).
    pub fn into_parts(self) -> (Bar0, VfioDma) {
        (
            self.bar0,
            VfioDma {
                container: self.container,
                huge: self.huge,
            },
        )
    }
}

/// The type1 IOMMU's valid IOVA ranges (inclusive ends), empty when the kernel does not say.
fn iova_ranges(container: &File) -> Vec<(u64, u64)> {
    let call = |buf: &mut Vec<u64>| -> Option<Vec<u8>> {
        let argsz = (buf.len() * 8) as u32;
        buf[0] = u64::from(argsz); // argsz in the low half (little endian), flags = 0
                                   // SAFETY: buf is an 8-aligned, writable buffer of argsz bytes that begins with a
                                   // struct vfio_iommu_type1_info whose argsz field says how much the kernel may fill.
        let r =
            unsafe { libc::ioctl(container.as_raw_fd(), VFIO_IOMMU_GET_INFO, buf.as_mut_ptr()) };
        (r == 0).then(|| buf.iter().flat_map(|w| w.to_ne_bytes()).collect())
    };
    let mut head = vec![0u64; INFO_WITH_CAPS / 8];
    let Some(b) = call(&mut head) else {
        return Vec::new();
    };
    let u32_at = |b: &[u8], o: usize| {
        b.get(o..o + 4)
            .map(|x| u32::from_ne_bytes([x[0], x[1], x[2], x[3]]))
    };
    let u64_at = |b: &[u8], o: usize| {
        b.get(o..o + 8)
            .map(|x| u64::from_ne_bytes([x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]]))
    };
    let (argsz, flags) = (
        u32_at(&b, 0).unwrap_or(0) as usize,
        u32_at(&b, 4).unwrap_or(0),
    );
    if flags & VFIO_IOMMU_INFO_CAPS == 0 || argsz <= INFO_WITH_CAPS || argsz > 1 << 20 {
        return Vec::new();
    }
    let mut full = vec![0u64; argsz.div_ceil(8)];
    let Some(b) = call(&mut full) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut off = u32_at(&b, 16).unwrap_or(0) as usize;
    for _ in 0..64 {
        if off == 0 {
            break;
        }
        let id = b
            .get(off..off + 2)
            .map(|x| u16::from_ne_bytes([x[0], x[1]]));
        if id == Some(CAP_IOVA_RANGE) {
            let n = u32_at(&b, off + 8).unwrap_or(0) as usize;
            for i in 0..n.min(4096) {
                let at = off + 16 + 16 * i;
                if let (Some(s), Some(e)) = (u64_at(&b, at), u64_at(&b, at + 8)) {
                    out.push((s, e));
                }
            }
        }
        off = u32_at(&b, off + 4).unwrap_or(0) as usize;
    }
    out
}

/// Chooses `[start, end)` for DMA buffers: the valid range holding 64 GiB (capped at its end),
/// else the largest valid range starting at or above 2 MiB; the default without information.
fn iova_window(ranges: &[(u64, u64)]) -> (u64, u64) {
    if ranges.is_empty() {
        return (IOVA_BASE, IOVA_LIMIT);
    }
    if let Some(&(_, e)) = ranges
        .iter()
        .find(|(s, e)| *s <= IOVA_BASE && IOVA_BASE < *e)
    {
        return (IOVA_BASE, e.saturating_add(1));
    }
    ranges
        .iter()
        .filter_map(|&(s, e)| {
            Some((
                s.max(HUGE as u64).checked_next_multiple_of(HUGE as u64)?,
                e.saturating_add(1),
            ))
        })
        .filter(|(s, e)| s < e)
        .max_by_key(|(s, e)| e - s)
        .unwrap_or((IOVA_BASE, IOVA_LIMIT))
}

fn region_info(device: &File, index: u32) -> Result<vb::vfio_region_info> {
    let mut info = vb::vfio_region_info {
        argsz: std::mem::size_of::<vb::vfio_region_info>() as u32,
        index,
        ..Default::default()
    };
    // SAFETY: info is a valid vfio_region_info with argsz and index set, exclusively borrowed.
    cvt(unsafe {
        libc::ioctl(
            device.as_raw_fd(),
            VFIO_DEVICE_GET_REGION_INFO,
            &mut info as *mut vb::vfio_region_info,
        )
    })
    .map_err(sys_err(
        format!("VFIO_DEVICE_GET_REGION_INFO({index})"),
        "device fd",
    ))?;
    Ok(info)
}

impl Drop for Bar0 {
    fn drop(&mut self) {
        // SAFETY: ptr/len is the mapping created in open and nothing uses it after drop.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl RegisterIo for Bar0 {
    fn read32(&self, offset: usize) -> u32 {
        if offset % 4 != 0 || offset.checked_add(4).map_or(true, |e| e > self.len) {
            return u32::MAX;
        }
        // SAFETY: offset is aligned and inside the mapped BAR; MMIO needs a volatile load.
        unsafe { self.ptr.as_ptr().add(offset).cast::<u32>().read_volatile() }
    }
    fn write32(&self, offset: usize, value: u32) {
        if offset % 4 != 0 || offset.checked_add(4).map_or(true, |e| e > self.len) {
            return;
        }
        // Make queue entries written to memory visible before the doorbell.
        fence(Ordering::SeqCst);
        // SAFETY: offset is aligned and inside the mapped BAR; MMIO needs a volatile store.
        unsafe {
            self.ptr
                .as_ptr()
                .add(offset)
                .cast::<u32>()
                .write_volatile(value)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iova_window_choices() {
        assert_eq!(iova_window(&[]), (IOVA_BASE, IOVA_LIMIT));
        // Intel IOMMU, 39-bit, with the MSI hole: the window holding 64 GiB up to 2^39.
        let intel = [(0, 0xfedf_ffff), (0xfef0_0000, (1 << 39) - 1)];
        assert_eq!(iova_window(&intel), (IOVA_BASE, 1 << 39));
        // A small IOMMU (32-bit): the largest range, starting at or above 2 MiB.
        let small = [(0, 0xfedf_ffff), (0xfef0_0000, 0xffff_ffff)];
        assert_eq!(iova_window(&small), (HUGE as u64, 0xfee0_0000));
    }
}
