//! Locked, page-aligned host memory for DMA: 2 MiB hugetlb pages when asked for and available,
//! else 4 KiB pages (with transparent-huge-page advice).

use std::io;
use std::ptr::NonNull;

use crate::error::{Error, Result};

/// Size of one huge page (x86-64 and arm64 default hugetlb size).
pub(crate) const HUGE: usize = 2 << 20;
/// Size of one base page.
pub(crate) const SMALL: usize = 4096;

/// Which pages DMA buffers are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HugePages {
    /// Buffers of 2 MiB or more use 2 MiB hugetlb pages when the kernel has free ones
    /// (`/proc/sys/vm/nr_hugepages`), else 4 KiB pages; smaller buffers use 4 KiB pages.
    #[default]
    Auto,
    /// Buffers of 2 MiB or more must get 2 MiB hugetlb pages; allocation fails otherwise.
    Required,
    /// Always 4 KiB pages.
    Off,
}

impl HugePages {
    /// `(bytes to map, try hugetlb pages)` for a request of `len` bytes: huge-page requests
    /// are rounded up to 2 MiB, the others to 4 KiB. `None` when the size overflows.
    pub(crate) fn plan(self, len: usize) -> Option<(usize, bool)> {
        let huge = self != Self::Off && len >= HUGE;
        let round = if huge { HUGE } else { SMALL };
        Some((len.max(1).checked_next_multiple_of(round)?, huge))
    }
}

/// An anonymous, `mlock`ed mapping (unmapped on drop).
pub(crate) struct LockedMemory {
    ptr: NonNull<u8>,
    len: usize,
    huge: bool,
}

// SAFETY: the mapping is owned by this value alone; access goes through the owner's methods.
unsafe impl Send for LockedMemory {}
// SAFETY: shared access only hands out the address; the owners copy with volatile accesses.
unsafe impl Sync for LockedMemory {}

impl LockedMemory {
    /// Maps and locks at least `len` bytes following `policy` (see [`HugePages`]).
    pub fn new(len: usize, policy: HugePages) -> Result<Self> {
        let (len, want_huge) = policy
            .plan(len)
            .ok_or_else(|| Error::Dma(format!("buffer of {len} bytes too large")))?;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        let mut p = libc::MAP_FAILED;
        if want_huge {
            // SAFETY: anonymous mapping request with no address hint; the result is checked.
            p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    prot,
                    flags | libc::MAP_HUGETLB,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED && policy == HugePages::Required {
                return Err(Error::Dma(format!(
                    "no 2 MiB huge pages for {len} bytes ({}); reserve some with \
                     `echo N > /proc/sys/vm/nr_hugepages` or use HugePages::Auto",
                    io::Error::last_os_error()
                )));
            }
        }
        let huge = p != libc::MAP_FAILED;
        if !huge {
            // SAFETY: anonymous mapping request with no address hint; the result is checked.
            p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
        }
        if p == libc::MAP_FAILED {
            return Err(Error::Sys {
                op: format!("mmap {len} bytes"),
                source: io::Error::last_os_error(),
                hint: "out of memory?",
            });
        }
        if want_huge && !huge {
            // SAFETY: advice on our own fresh mapping; failure only means no transparent huge
            // pages, which changes nothing about correctness.
            unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| Error::Dma("mmap returned NULL".into()))?;
        let mem = Self { ptr, len, huge };
        // SAFETY: locks our own fresh mapping (unmapped by Drop if this fails).
        if unsafe { libc::mlock(p, len) } != 0 {
            return Err(Error::Sys {
                op: "mlock".into(),
                source: io::Error::last_os_error(),
                hint: "raise RLIMIT_MEMLOCK (ulimit -l) or run as root",
            });
        }
        Ok(mem)
    }

    /// Host address of byte 0.
    pub fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }
    /// Mapped length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when backed by 2 MiB hugetlb pages.
    pub fn is_huge(&self) -> bool {
        self.huge
    }
}

impl Drop for LockedMemory {
    fn drop(&mut self) {
        // SAFETY: ptr/len is the mapping made in `new`; its owner holds no references to it
        // any more (and has removed it from the IOMMU first).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A field of /proc/meminfo in kB (or pages for the HugePages_* counters).
    fn meminfo(key: &str) -> Option<u64> {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// The kernel's page size for the mapping that starts at `addr`, from /proc/self/smaps
    /// (the kernel's own account, independent of what `LockedMemory` believes).
    fn kernel_page_kb(addr: usize) -> Option<u64> {
        let text = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in text.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = first.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = a <= addr && addr < b;
                    continue;
                }
            }
            if inside {
                if let Some(v) = line.strip_prefix("KernelPageSize:") {
                    return v.split_whitespace().next()?.parse().ok();
                }
            }
        }
        None
    }

    fn touch(m: &LockedMemory) {
        let p = m.ptr().as_ptr();
        for off in [0, m.len() / 2, m.len() - 1] {
            // SAFETY: off < len of our live mapping; nothing else uses it.
            unsafe {
                p.add(off).write_volatile(0xa5);
                assert_eq!(p.add(off).read_volatile(), 0xa5);
            }
        }
    }

    #[test]
    fn plan_rounds_to_the_page_kind() {
        assert_eq!(HugePages::Auto.plan(1), Some((SMALL, false)));
        assert_eq!(HugePages::Auto.plan(HUGE - 1), Some((HUGE, false)));
        assert_eq!(HugePages::Auto.plan(HUGE + 1), Some((2 * HUGE, true)));
        assert_eq!(HugePages::Required.plan(3 * HUGE), Some((3 * HUGE, true)));
        assert_eq!(HugePages::Off.plan(HUGE + 1), Some((HUGE + SMALL, false)));
        assert_eq!(HugePages::Auto.plan(usize::MAX), None);
    }

    /// Auto takes hugetlb pages exactly when the kernel has free ones, else falls back to
    /// 4 KiB pages; /proc/self/smaps confirms the page size the kernel really used.
    #[test]
    fn auto_uses_hugepages_when_free_else_falls_back() {
        let free = meminfo("HugePages_Free").unwrap_or(0);
        let size_kb = meminfo("Hugepagesize").unwrap_or(0);
        let m = LockedMemory::new(4 << 20, HugePages::Auto).expect("4 MiB locked buffer");
        let kb = kernel_page_kb(m.ptr().as_ptr() as usize).expect("mapping in smaps");
        let path = if m.is_huge() {
            "2 MiB hugetlb pages"
        } else {
            "4 KiB pages (fallback)"
        };
        eprintln!(
            "hugepage test: HugePages_Free={free} Hugepagesize={size_kb} kB -> {path}, \
             smaps KernelPageSize {kb} kB"
        );
        if size_kb == 2048 && free >= 2 {
            assert!(m.is_huge(), "{free} free huge pages but fell back");
        } else {
            assert!(!m.is_huge(), "no free huge pages yet reported huge");
        }
        assert_eq!(kb, if m.is_huge() { 2048 } else { 4 });
        assert_eq!(m.len(), 4 << 20);
        touch(&m);
    }

    #[test]
    fn required_fails_cleanly_without_free_hugepages() {
        let free = meminfo("HugePages_Free").unwrap_or(0);
        match LockedMemory::new(2 << 20, HugePages::Required) {
            Ok(m) => {
                assert!(m.is_huge() && free >= 1, "free {free}");
                assert_eq!(kernel_page_kb(m.ptr().as_ptr() as usize), Some(2048));
            }
            Err(Error::Dma(msg)) => {
                eprintln!("hugepage test: Required without free huge pages -> {msg}");
                assert!(msg.contains("nr_hugepages"), "{msg}");
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn small_and_off_use_base_pages() {
        for (len, policy) in [(8192, HugePages::Auto), (4 << 20, HugePages::Off)] {
            let m = LockedMemory::new(len, policy).expect("locked buffer");
            assert!(!m.is_huge());
            let kb = kernel_page_kb(m.ptr().as_ptr() as usize).expect("mapping in smaps");
            // Base pages: 4 kB, unless transparent huge pages merged them (Off gives no advice,
            // and an 8 KiB mapping cannot hold a huge page).
            assert_eq!(kb, 4, "{len} bytes {policy:?}");
            touch(&m);
        }
    }
}
