//! Items (one or several byte ranges) and the schedule that orders them.

use crate::error::{PipelineError, Result};

/// A byte range `offset .. offset + len` of wherever the item lives (a file, a memory region).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteRange {
    /// First byte.
    pub offset: u64,
    /// Number of bytes.
    pub len: u64,
}

impl ByteRange {
    /// A range of `len` bytes starting at `offset`.
    pub fn new(offset: u64, len: u64) -> Self {
        Self { offset, len }
    }

    /// The exclusive end, or an error when it overflows `u64`.
    pub fn end(&self) -> Result<u64> {
        self.offset
            .checked_add(self.len)
            .ok_or(PipelineError::RangeOverflow {
                offset: self.offset,
                len: self.len,
            })
    }

    /// Checks that the range lies inside `0 .. size` of `what`.
    pub fn check_within(&self, size: u64, what: &dyn std::fmt::Display) -> Result<()> {
        let end = self.end()?;
        if end > size {
            return Err(PipelineError::RangeOutOfBounds {
                what: what.to_string(),
                offset: self.offset,
                end,
                size,
            });
        }
        Ok(())
    }
}

/// One unit of streaming (typically one transformer layer): a key chosen by the caller and the byte
/// ranges that make it up. The ranges are delivered back to back, in order, into one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The caller's identifier (e.g. the layer index); sources route on it.
    pub key: u64,
    /// The byte ranges, delivered contiguously in this order.
    pub ranges: Vec<ByteRange>,
}

impl Item {
    /// An item made of one byte range.
    pub fn single(key: u64, range: ByteRange) -> Self {
        Self {
            key,
            ranges: vec![range],
        }
    }

    /// An item made of several byte ranges.
    pub fn new(key: u64, ranges: Vec<ByteRange>) -> Self {
        Self { key, ranges }
    }

    /// Total bytes of the item, or an error when the sum overflows.
    pub fn total_len(&self) -> Result<u64> {
        let mut total = 0u64;
        for r in &self.ranges {
            r.end()?;
            total = total
                .checked_add(r.len)
                .ok_or(PipelineError::RangeOverflow {
                    offset: r.offset,
                    len: r.len,
                })?;
        }
        Ok(total)
    }
}

/// The ordered list of items of one pass. A new schedule may be given to every pass (skipped layers
/// disappear, items move between tiers); the pipeline's slots persist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    items: Vec<Item>,
}

impl Schedule {
    /// A schedule over the given items, consumed in this order.
    pub fn new(items: Vec<Item>) -> Self {
        Self { items }
    }

    /// Appends an item.
    pub fn push(&mut self, item: Item) {
        self.items.push(item);
    }

    /// The items in order.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when there are no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Total bytes over all items.
    pub fn total_bytes(&self) -> Result<u64> {
        let mut total = 0u64;
        for it in &self.items {
            let len = it.total_len()?;
            total = total
                .checked_add(len)
                .ok_or(PipelineError::RangeOverflow { offset: 0, len })?;
        }
        Ok(total)
    }

    /// Largest item in bytes (0 for an empty schedule).
    pub fn max_item_bytes(&self) -> Result<u64> {
        let mut max = 0;
        for it in &self.items {
            max = max.max(it.total_len()?);
        }
        Ok(max)
    }
}
