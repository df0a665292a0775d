//! mmap sources: worker threads copy from the mapping into staging, or (the baseline) the
//! pageable mapping is handed straight to the copy.
//!
//! Like every mmap reader, these assume the file is not truncated while mapped.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::buffer::HostBuffer;
use crate::error::{PipelineError, Result};
use crate::schedule::Item;
use crate::stage::{Fetched, HostMemory, HostRegion, Source, SourceKind};

fn map(path: &Path) -> Result<Arc<memmap2::Mmap>> {
    let io = |source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let m = crate::sys::map_file(&file).map_err(io)?;
    let _ = m.advise(memmap2::Advice::Sequential);
    Ok(Arc::new(m))
}

/// CPU-worker source over an mmap: `threads` threads memcpy each item into staging.
#[derive(Debug)]
pub struct MmapSource {
    path: PathBuf,
    map: Arc<memmap2::Mmap>,
    threads: usize,
}

impl MmapSource {
    /// Maps `path` read-only; copies use `threads` threads (at least 1).
    pub fn open(path: &Path, threads: usize) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            map: map(path)?,
            threads: threads.max(1),
        })
    }
}

impl Source for MmapSource {
    fn kind_for(&self, _item: &Item) -> SourceKind {
        SourceKind::CpuWorkerMmap
    }

    fn fetch(&mut self, item: &Item, staging: &mut HostBuffer) -> Result<Fetched> {
        let total = item.total_len()?;
        if total > staging.len() as u64 {
            return Err(PipelineError::StagingTooSmall {
                key: item.key,
                need: total,
                have: staging.len() as u64,
            });
        }
        let bytes: &[u8] = &self.map;
        let dst = staging.as_mut_slice();
        let mut pos = 0usize;
        for r in &item.ranges {
            r.check_within(bytes.len() as u64, &self.path.display())?;
            let (off, len) = (r.offset as usize, r.len as usize);
            super::copy_parallel(
                &mut dst[pos..pos + len],
                &bytes[off..off + len],
                self.threads,
            );
            pos += len;
        }
        Ok(Fetched::Staged(vec![(0, pos)]))
    }
}

/// Baseline: the pageable mmap pointer is handed straight to the copy (no staging, no workers).
#[derive(Debug)]
pub struct MmapBaselineSource {
    path: PathBuf,
    map: Arc<memmap2::Mmap>,
}

impl MmapBaselineSource {
    /// Maps `path` read-only.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            map: map(path)?,
        })
    }
}

impl Source for MmapBaselineSource {
    fn kind_for(&self, _item: &Item) -> SourceKind {
        SourceKind::MmapBaseline
    }

    fn staging_bytes(&self, _item: &Item) -> Result<u64> {
        Ok(0)
    }

    fn fetch(&mut self, item: &Item, _staging: &mut HostBuffer) -> Result<Fetched> {
        let size = self.map.len() as u64;
        let mut regions = Vec::with_capacity(item.ranges.len());
        for r in &item.ranges {
            r.check_within(size, &self.path.display())?;
            let memory: Arc<dyn HostMemory> = self.map.clone();
            regions.push(HostRegion::new(memory, r.offset, r.len)?);
        }
        Ok(Fetched::Direct(regions))
    }
}
