//! The crate's only `unsafe` (the `sys` module): memory-mapping a file read-only.

use std::fs::File;

use memmap2::{Mmap, MmapOptions};

/// Maps `file` into memory as a private (copy-on-write), read-only mapping.
pub(crate) fn map_readonly(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: the mapping is read-only and private (MAP_PRIVATE): this process cannot write
    // through it, and nothing it does reaches the file. What no mapping can prevent is another
    // process truncating or rewriting the file meanwhile (a truncation makes later reads fault,
    // a rewrite may show through in pages not yet read). That is the caller's obligation,
    // stated on the only caller's public API, `GgufFile::open` ("the file must not change");
    // `GgufFile::read` is the copy-in alternative for files that may change.
    unsafe { MmapOptions::new().map_copy_read_only(file) }
}
