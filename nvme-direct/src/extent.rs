//! Where a file lies on its block device (FIEMAP), as NVMe logical block ranges.
//!
//! Procedure: copy the file onto an ext4/xfs filesystem on the NVMe namespace, `sync`, call
//! [`file_extents`] (and [`partition_start`]) while the filesystem is mounted, unmount, bind the
//! controller to `vfio-pci`, then read the returned LBA ranges with the driver.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, Result};

/// FIEMAP extent flags that make raw reads wrong (linux/fiemap.h: UNKNOWN, DELALLOC,
/// ENCODED, DATA_ENCRYPTED, NOT_ALIGNED, DATA_INLINE, DATA_TAIL).
const NOT_RAW: u32 = 0x2 | 0x4 | 0x8 | 0x80 | 0x100 | 0x200 | 0x400;
/// FIEMAP_EXTENT_UNWRITTEN: allocated but reads as zeros.
pub const EXTENT_UNWRITTEN: u32 = 0x800;
/// FIEMAP_EXTENT_LAST.
const LAST: u32 = 0x1;

/// One extent: `length` bytes of the file at `logical` live at byte `physical` of the device
/// (or partition) that holds the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileExtent {
    /// Byte offset in the file.
    pub logical: u64,
    /// Byte offset on the block device (relative to the partition).
    pub physical: u64,
    /// Length in bytes.
    pub length: u64,
    /// FIEMAP flags.
    pub flags: u32,
}

/// An extent as NVMe blocks: read `blocks` blocks from `lba` to get file bytes `logical..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LbaExtent {
    /// Byte offset in the file.
    pub logical: u64,
    /// First logical block on the namespace.
    pub lba: u64,
    /// Number of blocks.
    pub blocks: u64,
}

/// Checks extents that came from outside (a user's `.extents` file, FIEMAP, a device's block
/// size) before any LBA is computed from them: the block size is a power of two of at least
/// 512 bytes; each extent is non-empty, starts block-aligned in the file, and its byte and
/// block ends fit in `u64`; it lies inside the namespace's `namespace_blocks`; extents are in
/// file order without overlap. After this, [`locate`] cannot overflow.
pub fn check_extents(list: &[LbaExtent], block_size: u32, namespace_blocks: u64) -> Result<()> {
    if block_size < 512 || !block_size.is_power_of_two() {
        return Err(Error::BadExtent {
            index: None,
            reason: format!("block size {block_size} is not a power of two >= 512"),
        });
    }
    let bs = u64::from(block_size);
    let bad = |i: usize, reason: String| Error::BadExtent {
        index: Some(i),
        reason,
    };
    let mut file_end = 0u64;
    for (i, e) in list.iter().enumerate() {
        if e.blocks == 0 {
            return Err(bad(i, "it has no blocks".into()));
        }
        if e.logical % bs != 0 {
            return Err(bad(
                i,
                format!(
                    "file offset {} is not a multiple of the {bs}-byte block",
                    e.logical
                ),
            ));
        }
        let end = e
            .blocks
            .checked_mul(bs)
            .and_then(|len| e.logical.checked_add(len))
            .ok_or_else(|| {
                bad(
                    i,
                    format!("file offset {} + {} blocks overflows", e.logical, e.blocks),
                )
            })?;
        let last = e
            .lba
            .checked_add(e.blocks)
            .ok_or_else(|| bad(i, format!("LBA {} + {} blocks overflows", e.lba, e.blocks)))?;
        if last > namespace_blocks {
            return Err(bad(
                i,
                format!(
                    "LBAs {}..{last} end past the namespace's {namespace_blocks} blocks",
                    e.lba
                ),
            ));
        }
        if e.logical < file_end {
            return Err(bad(
                i,
                format!(
                    "file offset {} overlaps or precedes the previous extent (ends at {file_end})",
                    e.logical
                ),
            ));
        }
        file_end = end;
    }
    Ok(())
}

/// The LBA holding file byte `pos` and how many file bytes follow it contiguously there (a
/// multiple of the block size), or `None` when no extent covers `pos` (or `block_size` is 0).
/// Checked arithmetic throughout: hostile extents give `None`, never a wrong LBA.
pub fn locate(list: &[LbaExtent], pos: u64, block_size: u32) -> Option<(u64, u64)> {
    let bs = u64::from(block_size);
    if bs == 0 {
        return None;
    }
    list.iter().find_map(|e| {
        let len = e.blocks.checked_mul(bs)?;
        let rel = pos.checked_sub(e.logical)?;
        if rel >= len {
            return None;
        }
        Some((e.lba.checked_add(rel / bs)?, len - rel))
    })
}

/// All extents of the file at `path` (synced first), in file order.
pub fn file_extents(path: &Path) -> Result<Vec<FileExtent>> {
    let file = File::open(path).map_err(|source| Error::Sys {
        op: format!("open {}", path.display()),
        source,
        hint: "check the path",
    })?;
    let mut out: Vec<FileExtent> = Vec::new();
    let mut start = 0u64;
    loop {
        let batch =
            crate::sys::fiemap::fiemap_batch(&file, start).map_err(|source| {
                match source.raw_os_error() {
                    Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY) | Some(libc::EINVAL) => {
                        Error::FiemapUnsupported {
                            path: path.display().to_string(),
                            source,
                        }
                    }
                    _ => Error::Sys {
                        op: format!("FIEMAP {}", path.display()),
                        source,
                        hint: "filesystem error",
                    },
                }
            })?;
        let Some(last) = batch.last().copied() else {
            break;
        };
        out.extend(batch.iter().map(|e| FileExtent {
            logical: e.fe_logical,
            physical: e.fe_physical,
            length: e.fe_length,
            flags: e.fe_flags,
        }));
        if last.fe_flags & LAST != 0 {
            break;
        }
        let next = last.fe_logical.saturating_add(last.fe_length);
        if next <= start {
            break;
        }
        start = next;
    }
    Ok(out)
}

/// Byte offset of the partition holding `path` from the start of its whole disk (0 when the
/// filesystem sits on the whole device), from `/sys/dev/block/MAJ:MIN/start`.
pub fn partition_start(path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Sys {
        op: format!("stat {}", path.display()),
        source,
        hint: "check the path",
    })?;
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    match std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/start")) {
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .ok()
            .and_then(|sectors| sectors.checked_mul(512))
            .ok_or_else(|| Error::Unsupported(format!("bad partition start {s:?}"))),
        Err(_) => Ok(0),
    }
}

/// Converts byte extents to namespace blocks, adding `partition_offset` bytes. Extents must be
/// block aligned and raw (not inline, encoded or delayed); the last one may end mid-block.
pub fn to_lba_extents(
    extents: &[FileExtent],
    partition_offset: u64,
    block_size: u32,
) -> Result<Vec<LbaExtent>> {
    let bs = u64::from(block_size.max(1));
    extents
        .iter()
        .map(|e| {
            if e.flags & NOT_RAW != 0 {
                return Err(Error::ExtentNotRaw {
                    logical: e.logical,
                    flags: e.flags,
                });
            }
            let phys = e
                .physical
                .checked_add(partition_offset)
                .ok_or_else(|| Error::InvalidArgument("extent offset overflows".into()))?;
            if phys % bs != 0 {
                return Err(Error::ExtentNotRaw {
                    logical: e.logical,
                    flags: e.flags,
                });
            }
            Ok(LbaExtent {
                logical: e.logical,
                lba: phys / bs,
                blocks: e.length.div_ceil(bs),
            })
        })
        .collect()
}
