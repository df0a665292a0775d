//! Per-item dispatch to several sources (the result of automatic source choice).

use std::collections::HashMap;

use crate::buffer::HostBuffer;
use crate::error::{PipelineError, Result};
use crate::schedule::Item;
use crate::stage::{Fetched, Source, SourceKind};

/// Dispatches each item to the source its key is routed to.
#[derive(Default)]
pub struct RoutedSource {
    sources: Vec<Box<dyn Source>>,
    routes: HashMap<u64, usize>,
}

impl std::fmt::Debug for RoutedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutedSource")
            .field("sources", &self.sources.len())
            .field("routes", &self.routes.len())
            .finish()
    }
}

impl RoutedSource {
    /// No sources, no routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a source; returns its index for [`RoutedSource::route`].
    pub fn add(&mut self, source: Box<dyn Source>) -> usize {
        self.sources.push(source);
        self.sources.len() - 1
    }

    /// Routes item `key` to source `index`; false (and nothing changes) when there is no such
    /// source.
    pub fn route(&mut self, key: u64, index: usize) -> bool {
        if index < self.sources.len() {
            self.routes.insert(key, index);
            true
        } else {
            false
        }
    }

    fn get(&self, item: &Item) -> Result<&dyn Source> {
        self.routes
            .get(&item.key)
            .and_then(|&i| self.sources.get(i))
            .map(|s| s.as_ref())
            .ok_or_else(|| unrouted(item))
    }
}

fn unrouted(item: &Item) -> PipelineError {
    PipelineError::NotInSource {
        source_name: "routed",
        key: item.key,
        reason: "no source is routed for this key".into(),
    }
}

impl Source for RoutedSource {
    /// The routed source's kind; unrouted items (which fail in `fetch` and so never reach the
    /// consumer) report `MmapBaseline`.
    fn kind_for(&self, item: &Item) -> SourceKind {
        self.get(item)
            .map_or(SourceKind::MmapBaseline, |s| s.kind_for(item))
    }

    fn staging_bytes(&self, item: &Item) -> Result<u64> {
        self.get(item)?.staging_bytes(item)
    }

    fn prepare_staging(&mut self, staging: &mut HostBuffer) -> Result<()> {
        self.sources
            .iter_mut()
            .try_for_each(|s| s.prepare_staging(staging))
    }

    fn fetch(&mut self, item: &Item, staging: &mut HostBuffer) -> Result<Fetched> {
        let i = *self.routes.get(&item.key).ok_or_else(|| unrouted(item))?;
        let s = self.sources.get_mut(i).ok_or_else(|| unrouted(item))?;
        s.fetch(item, staging)
    }
}
