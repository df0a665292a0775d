//! Resident items: already in device memory, nothing moves.

use crate::buffer::HostBuffer;
use crate::error::Result;
use crate::schedule::Item;
use crate::stage::{Fetched, Source, SourceKind};

/// Source for items that live in device memory: the consumer is told to use its own buffer.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResidentSource;

impl Source for ResidentSource {
    fn kind_for(&self, _item: &Item) -> SourceKind {
        SourceKind::Resident
    }

    fn staging_bytes(&self, _item: &Item) -> Result<u64> {
        Ok(0)
    }

    fn fetch(&mut self, item: &Item, _staging: &mut HostBuffer) -> Result<Fetched> {
        item.total_len()?;
        Ok(Fetched::Resident)
    }
}
