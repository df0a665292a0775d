//! Items held in page-locked host RAM: one asynchronous copy straight from there.
//!
//! An item loaded with its ranges ([`PinnedRamSource::load_from_file`],
//! [`PinnedRamSource::insert_ranges`]) can also be fetched in part: an item of the same key whose
//! ranges lie inside the held ones is delivered as those pieces of the buffer, back to back (a
//! layer whose rows are split between the device and CPU threads streams only its device rows,
//! while the CPU reads the rest in place through [`PinnedRamSource::memory`]).

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::buffer::HostBuffer;
use crate::error::{PipelineError, Result};
use crate::schedule::{ByteRange, Item};
use crate::stage::{Fetched, HostMemory, HostRegion, Source, SourceKind, Transfer};

/// Source for items kept in pinned host memory (each item's ranges stored back to back).
#[derive(Default)]
pub struct PinnedRamSource {
    items: HashMap<u64, Held>,
}

/// One held item: its bytes and, when known, the file ranges they hold back to back.
struct Held {
    memory: Arc<dyn HostMemory>,
    ranges: Option<Vec<ByteRange>>,
}

impl std::fmt::Debug for PinnedRamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedRamSource")
            .field("items", &self.items.len())
            .field("bytes", &self.bytes())
            .finish()
    }
}

impl PinnedRamSource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Holds `memory` as the bytes of item `key` (its ranges back to back).
    pub fn insert(&mut self, key: u64, memory: Arc<dyn HostMemory>) {
        self.items.insert(
            key,
            Held {
                memory,
                ranges: None,
            },
        );
    }

    /// Holds `memory` as the bytes of `ranges` (back to back) under `key`, so that items of the
    /// same key naming parts of those ranges can be fetched too. Errors when `memory` is
    /// smaller than the ranges.
    pub fn insert_ranges(
        &mut self,
        key: u64,
        memory: Arc<dyn HostMemory>,
        ranges: Vec<ByteRange>,
    ) -> Result<()> {
        let total = Item::new(key, ranges.clone()).total_len()?;
        if (memory.bytes().len() as u64) < total {
            return Err(PipelineError::SourceContract {
                key,
                message: format!(
                    "{} bytes of memory cannot hold ranges of {total} bytes",
                    memory.bytes().len()
                ),
            });
        }
        self.items.insert(
            key,
            Held {
                memory,
                ranges: Some(ranges),
            },
        );
        Ok(())
    }

    /// Removes item `key` (e.g. when it is evicted from the pinned tier).
    pub fn remove(&mut self, key: u64) -> Option<Arc<dyn HostMemory>> {
        self.items.remove(&key).map(|h| h.memory)
    }

    /// The memory holding item `key` (its ranges back to back), for reading it in place.
    pub fn memory(&self, key: u64) -> Option<Arc<dyn HostMemory>> {
        self.items.get(&key).map(|h| Arc::clone(&h.memory))
    }

    /// True when item `key` is held.
    pub fn contains(&self, key: u64) -> bool {
        self.items.contains_key(&key)
    }

    /// Total bytes held.
    pub fn bytes(&self) -> u64 {
        self.items
            .values()
            .map(|h| h.memory.bytes().len() as u64)
            .sum()
    }

    /// Reads `item`'s ranges from the file at `path` into a buffer pinned by `transfer`, and holds it.
    pub fn load_from_file<T: Transfer>(
        &mut self,
        transfer: &T,
        path: &Path,
        item: &Item,
    ) -> Result<()> {
        let io = |source| PipelineError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let total = item.total_len()?;
        let total = usize::try_from(total).map_err(|_| PipelineError::RangeOverflow {
            offset: 0,
            len: total,
        })?;
        let mut buf = transfer.alloc_staging(total)?;
        let mut pos = 0usize;
        for r in &item.ranges {
            r.check_within(file_len, &path.display())?;
            let len = r.len as usize;
            let dst = &mut buf.as_mut_slice()[pos..pos + len];
            file.read_exact_at(dst, r.offset).map_err(io)?;
            pos += len;
        }
        self.insert_ranges(item.key, Arc::new(buf), item.ranges.clone())
    }
}

/// Where range `r` lies in a buffer holding `held` back to back (`None` when no one held range
/// contains it).
fn buffer_offset(held: &[ByteRange], r: &ByteRange) -> Option<u64> {
    let end = r.offset.checked_add(r.len)?;
    let mut base = 0u64;
    for h in held {
        let h_end = h.offset.checked_add(h.len)?;
        if r.offset >= h.offset && end <= h_end {
            return Some(base + (r.offset - h.offset));
        }
        base += h.len;
    }
    None
}

impl Source for PinnedRamSource {
    fn kind_for(&self, _item: &Item) -> SourceKind {
        SourceKind::PinnedRam
    }

    fn staging_bytes(&self, _item: &Item) -> Result<u64> {
        Ok(0)
    }

    fn fetch(&mut self, item: &Item, _staging: &mut HostBuffer) -> Result<Fetched> {
        let held = self
            .items
            .get(&item.key)
            .ok_or_else(|| PipelineError::NotInSource {
                source_name: "pinned-ram",
                key: item.key,
                reason: "no pinned buffer was inserted for this key".into(),
            })?;
        let memory = &held.memory;
        let whole = || -> Result<Fetched> {
            let len = item.total_len()?;
            Ok(Fetched::Direct(vec![HostRegion::new(
                Arc::clone(memory),
                0,
                len,
            )?]))
        };
        let Some(held_ranges) = held.ranges.as_deref() else {
            return whole();
        };
        if held_ranges == item.ranges.as_slice() {
            return whole();
        }
        let mut regions = Vec::with_capacity(item.ranges.len());
        for r in &item.ranges {
            let at = buffer_offset(held_ranges, r).ok_or_else(|| PipelineError::NotInSource {
                source_name: "pinned-ram",
                key: item.key,
                reason: format!(
                    "bytes {}..{} are not inside the held ranges",
                    r.offset,
                    r.offset.saturating_add(r.len)
                ),
            })?;
            regions.push(HostRegion::new(Arc::clone(memory), at, r.len)?);
        }
        Ok(Fetched::Direct(regions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_held_ranges_map_into_the_buffer() {
        let held = [ByteRange::new(100, 50), ByteRange::new(400, 30)];
        assert_eq!(buffer_offset(&held, &ByteRange::new(100, 50)), Some(0));
        assert_eq!(buffer_offset(&held, &ByteRange::new(120, 10)), Some(20));
        assert_eq!(buffer_offset(&held, &ByteRange::new(400, 30)), Some(50));
        assert_eq!(buffer_offset(&held, &ByteRange::new(429, 1)), Some(79));
        // Straddling two held ranges, outside, or overflowing: not found.
        assert_eq!(buffer_offset(&held, &ByteRange::new(140, 20)), None);
        assert_eq!(buffer_offset(&held, &ByteRange::new(0, 1)), None);
        assert_eq!(buffer_offset(&held, &ByteRange::new(u64::MAX, 2)), None);
    }
}
