//! Items held in page-locked host RAM: one asynchronous copy straight from there.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::buffer::HostBuffer;
use crate::error::{PipelineError, Result};
use crate::schedule::Item;
use crate::stage::{Fetched, HostMemory, HostRegion, Source, SourceKind, Transfer};

/// Source for items kept in pinned host memory (each item's ranges stored back to back).
#[derive(Default)]
pub struct PinnedRamSource {
    items: HashMap<u64, Arc<dyn HostMemory>>,
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
        self.items.insert(key, memory);
    }

    /// Removes item `key` (e.g. when it is evicted from the pinned tier).
    pub fn remove(&mut self, key: u64) -> Option<Arc<dyn HostMemory>> {
        self.items.remove(&key)
    }

    /// True when item `key` is held.
    pub fn contains(&self, key: u64) -> bool {
        self.items.contains_key(&key)
    }

    /// Total bytes held.
    pub fn bytes(&self) -> u64 {
        self.items.values().map(|m| m.bytes().len() as u64).sum()
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
        self.insert(item.key, Arc::new(buf));
        Ok(())
    }
}

impl Source for PinnedRamSource {
    fn kind_for(&self, _item: &Item) -> SourceKind {
        SourceKind::PinnedRam
    }

    fn staging_bytes(&self, _item: &Item) -> Result<u64> {
        Ok(0)
    }

    fn fetch(&mut self, item: &Item, _staging: &mut HostBuffer) -> Result<Fetched> {
        let memory = self
            .items
            .get(&item.key)
            .ok_or_else(|| PipelineError::NotInSource {
                source_name: "pinned-ram",
                key: item.key,
                reason: "no pinned buffer was inserted for this key".into(),
            })?;
        let len = item.total_len()?;
        let region = HostRegion::new(Arc::clone(memory), 0, len)?;
        Ok(Fetched::Direct(vec![region]))
    }
}
