//! The storage backend trait: where the bytes of an item actually live.

use std::fmt::Debug;

use crate::tier::TierId;

/// A backend that holds item bytes in tiers. The CUDA backends (device memory, pinned host
/// memory) and file-backed storage live with whoever composes the crates; [`crate::MemStorage`]
/// is the in-memory backend for tests and examples.
///
/// The cache calls these methods while holding its lock, one call at a time per cache, so an
/// implementation only needs `Send + Sync` to be shared, not internal ordering guarantees.
pub trait Storage: Send + Sync {
    /// Identifies one allocation (a device pointer, an offset, a buffer id).
    type Handle: Clone + Debug + Send + Sync;
    /// The backend's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Allocates `bytes` in `tier`.
    fn allocate(&self, tier: TierId, bytes: u64) -> Result<Self::Handle, Self::Error>;

    /// Frees an allocation made by [`Storage::allocate`] in `tier` (or handed to the cache).
    fn free(&self, tier: TierId, handle: Self::Handle) -> Result<(), Self::Error>;

    /// Copies `bytes` from `src` (in `src_tier`) to `dst` (in `dst_tier`), completing before it
    /// returns (a backend with asynchronous copies waits, or tracks completion itself).
    fn copy(
        &self,
        src_tier: TierId,
        src: &Self::Handle,
        dst_tier: TierId,
        dst: &Self::Handle,
        bytes: u64,
    ) -> Result<(), Self::Error>;
}
