//! The crate's only `unsafe`: memory-mapping a file read-only.

use std::fs::File;

use memmap2::Mmap;

/// Maps `file` read-only into memory.
pub(crate) fn map_readonly(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: the mapping is read-only and private to this process. Another process truncating
    // or rewriting the file while it is mapped could change or invalidate the bytes under us;
    // like every mmap-based model loader, we document that model files must not be modified
    // while open (see `GgufFile::open`).
    unsafe { Mmap::map(file) }
}
