//! Typed errors: each names what is wrong and what to change.

use thiserror::Error;

/// A byte or bandwidth quantity that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("cannot read {text:?}: expected {expected}")]
pub struct UnitError {
    /// The text given.
    pub text: String,
    /// What was expected instead.
    pub expected: &'static str,
}

/// Why a placement could not be computed.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The tier list is empty.
    #[error("no tiers given: describe at least one tier (e.g. storage with unlimited capacity)")]
    NoTiers,
    /// A tier has an unusable bandwidth or latency.
    #[error("tier {tier} ({name}): {reason}")]
    InvalidTier {
        /// Tier index.
        tier: usize,
        /// Tier name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// An item has an unusable weight.
    #[error("item {item}: {reason}")]
    InvalidItem {
        /// The item's key (Debug form).
        item: String,
        /// What is wrong.
        reason: String,
    },
    /// Two items share a key.
    #[error("item {item} is listed twice: keys must be unique")]
    DuplicateKey {
        /// The repeated key (Debug form).
        item: String,
    },
    /// A constraint names a tier that does not exist.
    #[error("item {item}: constraint \"{constraint}\" names a tier that does not exist (there are {tiers} tiers, numbered from 0)")]
    UnknownTier {
        /// The item's key (Debug form).
        item: String,
        /// The constraint.
        constraint: String,
        /// Number of tiers.
        tiers: usize,
    },
    /// An item's constraints exclude every tier or contradict each other.
    #[error("item {item}: constraints cannot all hold: {reason}")]
    ConflictingConstraints {
        /// The item's key (Debug form).
        item: String,
        /// Which constraints conflict.
        reason: String,
    },
    /// A pinned item does not fit in the tier it is pinned to.
    #[error("item {item} ({size} bytes) is pinned to {tier_name} by constraint \"{constraint}\" but only {free} of {capacity} bytes are free there: raise the tier's capacity or drop the pin")]
    PinnedDoesNotFit {
        /// The item's key (Debug form).
        item: String,
        /// The pin constraint.
        constraint: String,
        /// Tier name.
        tier_name: String,
        /// Item size.
        size: u64,
        /// Free bytes left after earlier pinned items.
        free: u64,
        /// Tier capacity.
        capacity: u64,
    },
    /// No tier the item is allowed in has room for it.
    #[error("item {item} ({size} bytes) fits in no tier it is allowed in (allowed: {allowed}; constraints: {constraints}): give a slow tier more capacity (e.g. unlimited storage) or relax the constraints")]
    NoRoom {
        /// The item's key (Debug form).
        item: String,
        /// Item size.
        size: u64,
        /// Names of the allowed tiers.
        allowed: String,
        /// The item's constraints, or "none".
        constraints: String,
    },
    /// A layer-range split was asked for no devices.
    #[error("no devices given: name at least one GPU to cut the layers for")]
    NoDevices,
    /// A device of a layer-range split has an unusable budget or bandwidth.
    #[error("device {device}: {reason}")]
    InvalidDevice {
        /// Device index in the list given.
        device: usize,
        /// What is wrong.
        reason: String,
    },
    /// Fewer layers than devices: some device would get no range.
    #[error("{layers} layers cannot be cut into {devices} non-empty ranges: use at most {layers} devices")]
    TooFewLayers {
        /// Layers given.
        layers: usize,
        /// Devices given.
        devices: usize,
    },
}

/// Why a runtime cache operation failed. The cache state is unchanged unless noted.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CacheError {
    /// Planning failed.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The key was never inserted.
    #[error("unknown item {item}: insert it first")]
    UnknownKey {
        /// The key (Debug form).
        item: String,
    },
    /// A tier index out of range.
    #[error("{tier} does not exist: the cache has {tiers} tiers, numbered from 0")]
    UnknownTier {
        /// The tier index.
        tier: usize,
        /// Number of tiers.
        tiers: usize,
    },
    /// The key is already in the cache.
    #[error("item {item} is already in the cache: keys must be unique")]
    DuplicateKey {
        /// The key (Debug form).
        item: String,
    },
    /// Inserting would exceed a tier's capacity.
    #[error("item {item} ({size} bytes) does not fit in {tier_name}: {free} bytes free")]
    NoRoom {
        /// The key (Debug form).
        item: String,
        /// Tier name.
        tier_name: String,
        /// Item size.
        size: u64,
        /// Free bytes.
        free: u64,
    },
    /// `ensure` could not make room for a streamed copy.
    #[error("cannot stream item {item} ({size} bytes) into {tier_name}: only {free} bytes are free after evicting every streamed copy; reserve streaming room (CacheOptions::streaming_reserve) or lower the item count placed there")]
    NoStreamingRoom {
        /// The key (Debug form).
        item: String,
        /// Tier name.
        tier_name: String,
        /// Item size.
        size: u64,
        /// Free bytes after eviction.
        free: u64,
    },
    /// A capacity change would force a pinned item out of its tier; the change was not made.
    #[error("cannot shrink {tier_name} to {requested} bytes: item {item} is pinned there by constraint \"{constraint}\" and pinned items need {pinned} bytes; the capacity was left unchanged")]
    ShrinkBelowPinned {
        /// Tier name.
        tier_name: String,
        /// Requested capacity.
        requested: u64,
        /// Bytes of pinned items in that tier.
        pinned: u64,
        /// One pinned item (Debug form).
        item: String,
        /// The pin constraint.
        constraint: String,
    },
    /// No slower tier allowed for the item has room to take it.
    #[error("cannot move item {item} ({size} bytes) out of {tier_name}: no slower tier it is allowed in has room; the item stays where it is")]
    CannotDemote {
        /// The key (Debug form).
        item: String,
        /// Tier name.
        tier_name: String,
        /// Item size.
        size: u64,
    },
    /// A measurement was unusable.
    #[error("invalid bandwidth measurement for {tier_name}: {reason}")]
    InvalidMeasurement {
        /// Tier name.
        tier_name: String,
        /// What is wrong.
        reason: String,
    },
    /// The storage backend failed.
    #[error("storage backend failed to {operation} item {item} in {tier_name}: {source}")]
    Storage {
        /// allocate, free or copy.
        operation: &'static str,
        /// The key (Debug form).
        item: String,
        /// Tier name.
        tier_name: String,
        /// The backend's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
