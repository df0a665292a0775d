//! The sources: where an item's bytes come from.

pub(crate) mod file;
pub(crate) mod mmap;
pub(crate) mod nvme;
#[cfg(feature = "nvme-direct")]
mod nvme_direct;
pub(crate) mod pinned;
pub(crate) mod prefetch;
pub(crate) mod resident;
pub(crate) mod routed;

/// Copies `src` into `dst` (same length) with up to `threads` threads for large copies.
pub(crate) fn copy_parallel(dst: &mut [u8], src: &[u8], threads: usize) {
    const SPLIT: usize = 8 << 20;
    if threads <= 1 || src.len() < SPLIT {
        dst.copy_from_slice(src);
        return;
    }
    let chunk = src.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (d, c) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
            s.spawn(move || d.copy_from_slice(c));
        }
    });
}
