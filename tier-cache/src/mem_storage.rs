//! An in-memory [`Storage`] backend that really copies bytes, with optional per-tier limits.

use std::collections::HashMap;

use parking_lot::Mutex;
use thiserror::Error;

use crate::storage::Storage;
use crate::tier::TierId;

/// Identifies one buffer of a [`MemStorage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemHandle(u64);

/// Errors of [`MemStorage`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MemError {
    /// The handle was freed or never allocated.
    #[error("unknown buffer {0:?}: freed already or never allocated")]
    UnknownHandle(MemHandle),
    /// The handle belongs to another tier.
    #[error("buffer {handle:?} lives in {actual}, not in {claimed}")]
    WrongTier {
        /// The handle.
        handle: MemHandle,
        /// Tier the caller named.
        claimed: TierId,
        /// Tier it was allocated in.
        actual: TierId,
    },
    /// The allocation would pass the tier's limit.
    #[error("allocating {bytes} bytes in {tier} would use {would_use} bytes, above its limit of {limit}")]
    OverLimit {
        /// The tier.
        tier: TierId,
        /// Requested bytes.
        bytes: u64,
        /// Bytes in use after the allocation.
        would_use: u64,
        /// The limit.
        limit: u64,
    },
    /// The host could not provide the memory.
    #[error("cannot allocate {0} bytes of host memory")]
    OutOfMemory(u64),
    /// A read, write or copy outside a buffer.
    #[error("access of {len} bytes at offset {offset} is outside a buffer of {size} bytes")]
    OutOfRange {
        /// Offset.
        offset: u64,
        /// Length.
        len: u64,
        /// Buffer size.
        size: u64,
    },
}

#[derive(Default)]
struct Inner {
    next: u64,
    buffers: HashMap<u64, (TierId, Vec<u8>)>,
    used: HashMap<TierId, u64>,
    peak: HashMap<TierId, u64>,
    limits: HashMap<TierId, u64>,
}

/// Buffers in host memory, one `Vec<u8>` per allocation, tagged with their tier. Limits per tier
/// (optional) make any allocation past a tier's capacity fail, which lets tests check
/// independently of the cache's own accounting that no tier is ever over-filled.
///
/// ```
/// use tier_cache::{MemStorage, Storage, TierId};
/// let mem = MemStorage::new().with_limit(TierId(0), 16);
/// let a = mem.allocate(TierId(1), 4).unwrap();
/// mem.write(TierId(1), &a, 0, b"abcd").unwrap();
/// let b = mem.allocate(TierId(0), 4).unwrap();
/// mem.copy(TierId(1), &a, TierId(0), &b, 4).unwrap();
/// assert_eq!(mem.read(TierId(0), &b).unwrap(), b"abcd");
/// assert!(mem.allocate(TierId(0), 13).is_err()); // 4 + 13 > 16
/// ```
#[derive(Default)]
pub struct MemStorage {
    inner: Mutex<Inner>,
}

impl MemStorage {
    /// An empty store with no limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a limit in bytes for `tier` (builder form of [`MemStorage::set_limit`]).
    pub fn with_limit(self, tier: TierId, bytes: u64) -> Self {
        self.set_limit(tier, bytes);
        self
    }

    /// Sets a limit in bytes for `tier`: later allocations that would pass it fail.
    pub fn set_limit(&self, tier: TierId, bytes: u64) {
        self.inner.lock().limits.insert(tier, bytes);
    }

    /// Bytes allocated in `tier` now.
    pub fn used(&self, tier: TierId) -> u64 {
        self.inner.lock().used.get(&tier).copied().unwrap_or(0)
    }

    /// Most bytes ever allocated at once in `tier`.
    pub fn peak(&self, tier: TierId) -> u64 {
        self.inner.lock().peak.get(&tier).copied().unwrap_or(0)
    }

    /// Number of live buffers.
    pub fn buffers(&self) -> usize {
        self.inner.lock().buffers.len()
    }

    /// Writes `data` at `offset` into a buffer.
    pub fn write(
        &self,
        tier: TierId,
        handle: &MemHandle,
        offset: u64,
        data: &[u8],
    ) -> Result<(), MemError> {
        let mut inner = self.inner.lock();
        let buf = lookup(&mut inner, tier, handle)?;
        let range = range(offset, data.len() as u64, buf.len())?;
        buf[range].copy_from_slice(data);
        Ok(())
    }

    /// A copy of a buffer's bytes.
    pub fn read(&self, tier: TierId, handle: &MemHandle) -> Result<Vec<u8>, MemError> {
        let mut inner = self.inner.lock();
        Ok(lookup(&mut inner, tier, handle)?.clone())
    }
}

fn lookup<'a>(
    inner: &'a mut Inner,
    tier: TierId,
    handle: &MemHandle,
) -> Result<&'a mut Vec<u8>, MemError> {
    match inner.buffers.get_mut(&handle.0) {
        None => Err(MemError::UnknownHandle(*handle)),
        Some((t, _)) if *t != tier => Err(MemError::WrongTier {
            handle: *handle,
            claimed: tier,
            actual: *t,
        }),
        Some((_, buf)) => Ok(buf),
    }
}

fn range(offset: u64, len: u64, size: usize) -> Result<std::ops::Range<usize>, MemError> {
    let size64 = size as u64;
    match offset.checked_add(len) {
        Some(end) if end <= size64 => Ok(offset as usize..end as usize),
        _ => Err(MemError::OutOfRange {
            offset,
            len,
            size: size64,
        }),
    }
}

impl Storage for MemStorage {
    type Handle = MemHandle;
    type Error = MemError;

    fn allocate(&self, tier: TierId, bytes: u64) -> Result<MemHandle, MemError> {
        let mut inner = self.inner.lock();
        let used = inner.used.get(&tier).copied().unwrap_or(0);
        let would_use = used
            .checked_add(bytes)
            .ok_or(MemError::OutOfMemory(bytes))?;
        if let Some(&limit) = inner.limits.get(&tier) {
            if would_use > limit {
                return Err(MemError::OverLimit {
                    tier,
                    bytes,
                    would_use,
                    limit,
                });
            }
        }
        let len = usize::try_from(bytes).map_err(|_| MemError::OutOfMemory(bytes))?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(len)
            .map_err(|_| MemError::OutOfMemory(bytes))?;
        buf.resize(len, 0);
        let id = inner.next;
        inner.next += 1;
        inner.buffers.insert(id, (tier, buf));
        inner.used.insert(tier, would_use);
        let peak = inner.peak.entry(tier).or_insert(0);
        *peak = (*peak).max(would_use);
        Ok(MemHandle(id))
    }

    fn free(&self, tier: TierId, handle: MemHandle) -> Result<(), MemError> {
        let mut inner = self.inner.lock();
        let len = lookup(&mut inner, tier, &handle)?.len() as u64;
        inner.buffers.remove(&handle.0);
        let used = inner.used.entry(tier).or_insert(0);
        *used = used.saturating_sub(len);
        Ok(())
    }

    fn copy(
        &self,
        src_tier: TierId,
        src: &MemHandle,
        dst_tier: TierId,
        dst: &MemHandle,
        bytes: u64,
    ) -> Result<(), MemError> {
        let mut inner = self.inner.lock();
        let data = {
            let s = lookup(&mut inner, src_tier, src)?;
            let r = range(0, bytes, s.len())?;
            s[r].to_vec()
        };
        let d = lookup(&mut inner, dst_tier, dst)?;
        let r = range(0, bytes, d.len())?;
        d[r].copy_from_slice(&data);
        Ok(())
    }
}
