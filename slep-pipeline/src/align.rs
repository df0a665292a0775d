//! O_DIRECT alignment: read the block-aligned superset of a range, deliver the exact bytes.

use crate::error::{PipelineError, Result};
use crate::schedule::ByteRange;

/// Block size used for O_DIRECT when the device's is not known (a multiple of every common
/// logical block size: 512 and 4096 bytes).
pub const DEFAULT_BLOCK: u64 = 4096;

/// How to read one byte range with block-aligned I/O: read `read_len` bytes at `read_offset` into an
/// aligned buffer, then the wanted bytes are at `head .. head + len` of what was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlignedSpan {
    /// Block-aligned file offset of the read.
    pub read_offset: u64,
    /// Block-multiple length of the read.
    pub read_len: u64,
    /// Bytes to skip at the start of what was read.
    pub head: u64,
    /// Bytes wanted (the range's length).
    pub len: u64,
}

impl AlignedSpan {
    /// The aligned read covering `range` for a power-of-two `block` size.
    pub fn for_range(range: ByteRange, block: u64) -> Result<Self> {
        debug_assert!(block.is_power_of_two());
        let block = block.max(1);
        let end = range.end()?;
        let read_offset = range.offset - range.offset % block;
        if range.len == 0 {
            return Ok(Self {
                read_offset,
                read_len: 0,
                head: range.offset - read_offset,
                len: 0,
            });
        }
        let rem = end % block;
        let aligned_end = if rem == 0 {
            end
        } else {
            end.checked_add(block - rem)
                .ok_or(PipelineError::RangeOverflow {
                    offset: range.offset,
                    len: range.len,
                })?
        };
        Ok(Self {
            read_offset,
            read_len: aligned_end - read_offset,
            head: range.offset - read_offset,
            len: range.len,
        })
    }

    /// Staging bytes needed to read all `ranges` aligned, each read starting on a block boundary.
    pub fn staging_for(ranges: &[ByteRange], block: u64) -> Result<u64> {
        let mut total = 0u64;
        for r in ranges {
            let s = Self::for_range(*r, block)?;
            total = total
                .checked_add(s.read_len)
                .ok_or(PipelineError::RangeOverflow {
                    offset: r.offset,
                    len: r.len,
                })?;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_superset_covers_range_and_is_block_multiple() {
        // Brute force against the definition over small offsets and lengths.
        for block in [1u64, 512, 4096] {
            for offset in [0u64, 1, 511, 512, 513, 4095, 4096, 4097, 10_000] {
                for len in [0u64, 1, 2, 511, 512, 4096, 5000, 9000] {
                    let s = AlignedSpan::for_range(ByteRange::new(offset, len), block).unwrap();
                    assert_eq!(s.read_offset % block, 0);
                    assert_eq!(s.read_len % block, 0);
                    assert!(s.read_offset <= offset);
                    assert_eq!(s.read_offset + s.head, offset);
                    // Covering and minimal: no whole block of slack on either side. (An empty
                    // range reads nothing.)
                    if len == 0 {
                        assert_eq!(s.read_len, 0);
                    } else {
                        assert!(s.read_offset + s.read_len >= offset + len);
                        assert!(s.head < block);
                        assert!(s.read_offset + s.read_len - (offset + len) < block);
                    }
                }
            }
        }
    }

    #[test]
    fn overflowing_range_is_an_error() {
        let r = ByteRange::new(u64::MAX - 10, 100);
        assert!(matches!(
            AlignedSpan::for_range(r, 4096),
            Err(PipelineError::RangeOverflow { .. })
        ));
        let r = ByteRange::new(u64::MAX - 10, 5);
        assert!(AlignedSpan::for_range(r, 4096).is_err());
    }
}
