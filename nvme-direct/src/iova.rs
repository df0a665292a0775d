//! I/O virtual address allocator: first fit over freed ranges, then a bump pointer, inside
//! `[base, limit)`. IOVAs are the device's view of DMA memory and are never assumed to equal
//! host virtual addresses.

/// Allocator state for one IOMMU domain.
#[derive(Debug, Clone)]
pub struct IovaAllocator {
    next: u64,
    limit: u64,
    free: Vec<(u64, u64)>,
}

impl IovaAllocator {
    /// Hands out addresses in `[base, limit)`.
    pub fn new(base: u64, limit: u64) -> Self {
        Self {
            next: base,
            limit,
            free: Vec::new(),
        }
    }

    /// An `align`-aligned range of `len` bytes (align: a power of two), or `None` when full.
    pub fn alloc(&mut self, len: u64, align: u64) -> Option<u64> {
        let align = align.max(1);
        if !align.is_power_of_two() || len == 0 {
            return None;
        }
        for i in 0..self.free.len() {
            let (start, size) = self.free[i];
            let aligned = start.checked_next_multiple_of(align)?;
            let pad = aligned - start;
            if pad.checked_add(len).is_some_and(|need| need <= size) {
                self.free.swap_remove(i);
                if pad > 0 {
                    self.free.push((start, pad));
                }
                let tail = size - pad - len;
                if tail > 0 {
                    self.free.push((aligned + len, tail));
                }
                return Some(aligned);
            }
        }
        let start = self.next.checked_next_multiple_of(align)?;
        let end = start.checked_add(len).filter(|e| *e <= self.limit)?;
        if start > self.next {
            // Keep the alignment padding usable by smaller allocations.
            self.free.push((self.next, start - self.next));
        }
        self.next = end;
        Some(start)
    }

    /// Returns a range obtained from [`IovaAllocator::alloc`]; adjacent free ranges merge.
    pub fn free(&mut self, start: u64, len: u64) {
        self.free.push((start, len));
        self.free.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.free.len());
        for &(s, l) in &self.free {
            match merged.last_mut() {
                Some((ms, ml)) if *ms + *ml == s => *ml += l,
                _ => merged.push((s, l)),
            }
        }
        // A free range that ends at the bump pointer goes back to it.
        if let Some(&(s, l)) = merged.last() {
            if s + l == self.next {
                self.next = s;
                merged.pop();
            }
        }
        self.free = merged;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_disjoint_and_reused() {
        let mut a = IovaAllocator::new(1 << 36, 1 << 39);
        let x = a.alloc(4096, 4096).unwrap();
        let y = a.alloc(2 << 20, 2 << 20).unwrap();
        assert_eq!(x, 1 << 36);
        assert_eq!(y % (2 << 20), 0);
        assert!(y >= x + 4096);
        a.free(x, 4096);
        assert_eq!(a.alloc(4096, 4096), Some(x), "freed range is reused");
        a.free(y, 2 << 20);
        a.free(x, 4096);
        // Everything freed: the bump pointer is back at the base.
        assert_eq!(a.alloc(8192, 4096), Some(1 << 36));
    }

    #[test]
    fn limit_is_respected() {
        let mut a = IovaAllocator::new(0x1000, 0x4000);
        assert!(a.alloc(0x2000, 0x1000).is_some());
        assert!(a.alloc(0x2000, 0x1000).is_none());
        assert!(a.alloc(0x1000, 0x1000).is_some());
        assert!(a.alloc(0, 0x1000).is_none());
        assert!(a.alloc(0x1000, 3).is_none());
    }
}

#[cfg(test)]
mod props {
    use super::IovaAllocator;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn iova_ranges_never_overlap(ops in proptest::collection::vec((any::<bool>(), 1u64..64, 0u32..10, any::<usize>()), 1..200)) {
            let (base, limit) = (1u64 << 30, (1u64 << 30) + (64 << 20));
            let mut a = IovaAllocator::new(base, limit);
            let mut live: Vec<(u64, u64)> = Vec::new();
            for (is_alloc, pages, align_log, pick) in ops {
                if is_alloc || live.is_empty() {
                    let (len, align) = (pages * 4096, 4096u64 << align_log);
                    if let Some(s) = a.alloc(len, align) {
                        prop_assert_eq!(s % align, 0);
                        prop_assert!(s >= base && s + len <= limit);
                        for &(ls, ll) in &live {
                            prop_assert!(s + len <= ls || ls + ll <= s, "overlap {s:#x}+{len:#x} with {ls:#x}+{ll:#x}");
                        }
                        live.push((s, len));
                    }
                } else {
                    let (s, l) = live.swap_remove(pick % live.len());
                    a.free(s, l);
                }
            }
            // Everything freed: the whole space is available again as one range.
            for (s, l) in live.drain(..) {
                a.free(s, l);
            }
            prop_assert_eq!(a.alloc(limit - base, 4096), Some(base));
        }
    }
}
