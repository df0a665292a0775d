//! Every `unsafe` operation of the crate: aligned allocation, mmap, io_uring submission, the
//! dynamic-library probe and (feature `cuda`) raw CUDA driver calls.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::File;
use std::ptr::NonNull;

#[cfg(feature = "cuda")]
pub(crate) mod cuda;
#[cfg(feature = "cuda")]
pub(crate) mod nvrtc;
#[cfg(feature = "io-uring")]
pub(crate) mod uring;
#[cfg(not(feature = "io-uring"))]
#[path = "uring_off.rs"]
pub(crate) mod uring;

/// A zeroed heap allocation with a chosen alignment.
pub(crate) struct AlignedAlloc {
    ptr: NonNull<u8>,
    from: Origin,
    len: usize,
}

/// Where an [`AlignedAlloc`]'s memory came from, for freeing it.
enum Origin {
    /// The global allocator, with this layout.
    Heap(Layout),
    /// An anonymous mapping of `len` bytes at `base` (Linux, large buffers).
    #[cfg(target_os = "linux")]
    Mapped { base: *mut libc::c_void, len: usize },
}

/// Size of a transparent huge page on x86-64 (and most aarch64 kernels).
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// `len` zeroed bytes aligned to [`HUGE_PAGE`] in a fresh anonymous mapping advised to use
/// transparent huge pages (the kernel zeroes them as they are first touched; nothing is written
/// here), as `(aligned pointer, mapping)`; `None` when the mapping fails.
#[cfg(target_os = "linux")]
fn map_huge(len: usize) -> Option<(NonNull<u8>, Origin)> {
    let map_len = len.checked_add(HUGE_PAGE)?;
    // SAFETY: a private anonymous mapping at an address of the kernel's choice touches no
    // existing memory; the result is checked against MAP_FAILED.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return None;
    }
    let offset = (HUGE_PAGE - (base as usize) % HUGE_PAGE) % HUGE_PAGE;
    // SAFETY: `offset < HUGE_PAGE`, so `base + offset .. + len` lies inside the mapping.
    let ptr = unsafe { base.cast::<u8>().add(offset) };
    // SAFETY: the range is inside the mapping just made; MADV_HUGEPAGE only changes how the
    // kernel backs it (an error, e.g. THP off, changes nothing and is ignored).
    unsafe { libc::madvise(ptr.cast(), len, libc::MADV_HUGEPAGE) };
    Some((NonNull::new(ptr)?, Origin::Mapped { base, len: map_len }))
}

// SAFETY: AlignedAlloc owns its allocation exclusively (like Vec<u8>); &/&mut access follows
// Rust's borrow rules through as_slice/as_mut_slice.
unsafe impl Send for AlignedAlloc {}
// SAFETY: shared access only hands out &[u8].
unsafe impl Sync for AlignedAlloc {}

impl AlignedAlloc {
    /// `len` zeroed bytes aligned to `align` (a power of two); `None` when allocation fails.
    ///
    /// On Linux, from [`HUGE_PAGE`] bytes on, the memory is a fresh anonymous mapping aligned
    /// to a huge page and advised to use transparent huge pages: the CPU then streams it with
    /// one TLB entry per 2 MiB instead of per 4 KiB (CPU products from RAM measured 15-30%
    /// faster on the dev VM, docs/PERF.md). Where the kernel gives no huge pages the advice is
    /// ignored.
    pub(crate) fn new(len: usize, align: usize) -> Option<Self> {
        #[cfg(target_os = "linux")]
        if len >= HUGE_PAGE && align <= HUGE_PAGE {
            let (ptr, from) = map_huge(len)?;
            return Some(Self { ptr, from, len });
        }
        // Allocate at least one byte: a zero-sized layout may not be passed to the allocator.
        let layout = Layout::from_size_align(len.max(1), align).ok()?;
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw)?;
        Some(Self {
            ptr,
            from: Origin::Heap(layout),
            len,
        })
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr points to at least len initialised (zeroed) bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedAlloc {
    fn drop(&mut self) {
        match self.from {
            // SAFETY: ptr was returned by alloc_zeroed with exactly this layout and is freed once.
            Origin::Heap(layout) => unsafe { dealloc(self.ptr.as_ptr(), layout) },
            #[cfg(target_os = "linux")]
            Origin::Mapped { base, len } => {
                // SAFETY: `base`/`len` is the mapping made in `map_huge`, unmapped exactly once;
                // no slice of it outlives `self`.
                unsafe { libc::munmap(base, len) };
            }
        }
    }
}

/// Maps a file read-only.
pub(crate) fn map_file(file: &File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the mapping is read-only; like every mmap reader we rely on the file not being
    // truncated while mapped (documented on the mmap sources).
    unsafe { memmap2::Mmap::map(file) }
}

/// Tries to load the first loadable of `names`; returns an explanation when none loads.
#[cfg(feature = "cuda")]
pub(crate) fn probe_library(names: &[&str]) -> Result<(), String> {
    let mut errors = Vec::new();
    for name in names {
        // SAFETY: loading the CUDA driver library runs its initialisers, which are designed to be
        // loaded by any process; the handle is dropped (library unloaded) right away.
        match unsafe { libloading::Library::new(name) } {
            Ok(_lib) => return Ok(()),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    Err(errors.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small and huge-page-sized allocations alike: zeroed, of the asked length and alignment
    /// (large ones aligned to a huge page on Linux), writable end to end, freed without error.
    #[test]
    fn allocations_are_zeroed_aligned_and_writable() {
        for (len, align) in [
            (1usize, 8usize),
            (4096, 4096),
            (HUGE_PAGE, 4096),
            (3 * HUGE_PAGE + 12_345, 4096),
        ] {
            let mut a = AlignedAlloc::new(len, align).expect("allocation");
            assert_eq!(a.as_slice().len(), len);
            assert!(
                a.as_slice().iter().all(|&b| b == 0),
                "{len} bytes not zeroed"
            );
            let addr = a.as_slice().as_ptr() as usize;
            assert_eq!(addr % align, 0, "{len} bytes at {addr:#x}");
            if cfg!(target_os = "linux") && len >= HUGE_PAGE {
                assert_eq!(
                    addr % HUGE_PAGE,
                    0,
                    "{len} bytes not on a huge page boundary"
                );
            }
            for (i, b) in a.as_mut_slice().iter_mut().enumerate() {
                *b = (i % 251) as u8;
            }
            assert!(a
                .as_slice()
                .iter()
                .enumerate()
                .all(|(i, &b)| b == (i % 251) as u8));
        }
    }
}
