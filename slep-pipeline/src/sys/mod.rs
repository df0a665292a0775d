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
    layout: Layout,
    len: usize,
}

// SAFETY: AlignedAlloc owns its allocation exclusively (like Vec<u8>); &/&mut access follows
// Rust's borrow rules through as_slice/as_mut_slice.
unsafe impl Send for AlignedAlloc {}
// SAFETY: shared access only hands out &[u8].
unsafe impl Sync for AlignedAlloc {}

impl AlignedAlloc {
    /// `len` zeroed bytes aligned to `align` (a power of two); `None` when allocation fails.
    pub(crate) fn new(len: usize, align: usize) -> Option<Self> {
        // Allocate at least one byte: a zero-sized layout may not be passed to the allocator.
        let layout = Layout::from_size_align(len.max(1), align).ok()?;
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw)?;
        Some(Self { ptr, layout, len })
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
        // SAFETY: ptr was returned by alloc_zeroed with exactly this layout and is freed once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
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
