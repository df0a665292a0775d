//! Physical Region Page (PRP) construction for 4 KiB memory pages.

use crate::dma::DmaBuffer;
use crate::error::{Error, Result};
use crate::regs::PAGE_SIZE;

const PAGE: u64 = PAGE_SIZE as u64;
/// PRP entries per list page.
const ENTRIES_PER_PAGE: usize = PAGE_SIZE / 8;

/// Number of data pages after the first one that a transfer touches.
pub fn pages_after_first(addr: u64, len: usize) -> usize {
    let first = (PAGE - addr % PAGE) as usize;
    len.saturating_sub(first).div_ceil(PAGE_SIZE)
}

/// PRP list pages needed for a transfer (0 when PRP2 can hold a data page or nothing).
pub fn list_pages_needed(addr: u64, len: usize) -> usize {
    let n = pages_after_first(addr, len);
    if n <= 1 {
        0
    } else if n <= ENTRIES_PER_PAGE {
        1
    } else {
        // Every page but the last holds 511 data entries plus a chain pointer.
        (n - 1).div_ceil(ENTRIES_PER_PAGE - 1)
    }
}

/// Builds PRP1/PRP2 for `len` bytes at device address `addr` (dword aligned).
///
/// A PRP list, when needed, is written into `list` starting at byte `list_offset` (page
/// aligned), using at most `list_capacity_pages` pages; chained when over 512 entries.
pub fn build<B: DmaBuffer>(
    addr: u64,
    len: usize,
    list: &B,
    list_offset: usize,
    list_capacity_pages: usize,
) -> Result<(u64, u64)> {
    if addr % 4 != 0 {
        return Err(Error::BufferRange(format!(
            "transfer address {addr:#x} is not dword aligned (NVMe PRP rule)"
        )));
    }
    if len == 0 {
        return Err(Error::InvalidArgument("zero-length transfer".into()));
    }
    if list_offset % PAGE_SIZE != 0 {
        return Err(Error::BufferRange(
            "PRP list offset not page aligned".into(),
        ));
    }
    let n = pages_after_first(addr, len);
    let first_page = addr - addr % PAGE;
    let data_page = |i: usize| first_page + PAGE * (i as u64 + 1);
    match n {
        0 => return Ok((addr, 0)),
        1 => return Ok((addr, data_page(0))),
        _ => {}
    }
    let pages = list_pages_needed(addr, len);
    if pages > list_capacity_pages {
        return Err(Error::InvalidArgument(format!(
            "transfer of {len} bytes needs {pages} PRP list pages, only {list_capacity_pages} reserved"
        )));
    }
    let mut next = 0usize; // next data page index
    let mut page_bytes = vec![0u8; PAGE_SIZE];
    for p in 0..pages {
        let remaining = n - next;
        let last = remaining <= ENTRIES_PER_PAGE;
        let data_entries = if last {
            remaining
        } else {
            ENTRIES_PER_PAGE - 1
        };
        for e in 0..data_entries {
            page_bytes[e * 8..e * 8 + 8].copy_from_slice(&data_page(next + e).to_le_bytes());
        }
        next += data_entries;
        let mut used = data_entries * 8;
        if !last {
            let chain = list.iova() + (list_offset + (p + 1) * PAGE_SIZE) as u64;
            page_bytes[used..used + 8].copy_from_slice(&chain.to_le_bytes());
            used += 8;
        }
        list.write_bytes(list_offset + p * PAGE_SIZE, &page_bytes[..used])?;
    }
    Ok((addr, list.iova() + list_offset as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_page_counts() {
        assert_eq!(list_pages_needed(0, 4096), 0);
        assert_eq!(list_pages_needed(0, 8192), 0);
        assert_eq!(list_pages_needed(0, 12288), 1);
        // 513 pages after the first: 511 + chain, then 2 more.
        assert_eq!(list_pages_needed(0, 4096 * 514), 2);
        assert_eq!(list_pages_needed(0, 4096 * 513), 1);
        // Unaligned start: 4 bytes into a page, 8192 bytes span 3 pages.
        assert_eq!(pages_after_first(4, 8192), 2);
    }
}
