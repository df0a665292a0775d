//! Generic tiered placement planner and residency cache.
//!
//! Describe the levels of a memory hierarchy as [`Tier`]s (fastest first: e.g. VRAM, pinned RAM,
//! storage), each with a capacity, a read bandwidth and a per-access latency, and the things to
//! place as [`Item`]s (a key, a size, an access weight per step, [`Constraint`]s). The
//! [`Planner`] returns a [`Placement`] that minimises the predicted time per step (see
//! [`cost`] for the model), answers what a placement costs ([`Placement::predict`]) and why each
//! item sits where it does ([`Placement::explain`]). The runtime [`TierCache`] tracks where
//! items live on a [`Storage`] backend, streams copies into a tier on demand
//! ([`TierCache::ensure`]), demotes items when a budget shrinks, re-plans when measured
//! bandwidths move, and keeps [`Stats`]. Nothing here knows about GPUs or model layers: keys
//! are generic and storage is a trait ([`MemStorage`] is the in-memory backend). Two planners
//! for compute beside the links: [`hybrid_split`] (the share of an item a [`ComputeTier`] such
//! as CPU threads computes in place while the rest crosses the link) and [`plan_ranges`]
//! (contiguous ranges of items, one per device, each streaming over its own link).
//!
//! ```
//! use tier_cache::{CostModel, Item, Planner, Tier, TierId};
//!
//! // 10 layers of 100 MB read once per token; 350 MB of VRAM, 500 MB of pinned RAM.
//! let planner = Planner::new(vec![
//!     Tier::new("VRAM", 350_000_000, 1.0e12),
//!     Tier::new("RAM", 500_000_000, 25.0e9),
//!     Tier::unlimited("storage", 7.0e9),
//! ])?;
//! let layers: Vec<Item<usize>> = (0..10).map(|i| Item::new(i, 100_000_000, 1.0)).collect();
//! let plan = planner.plan(&layers)?;
//! assert_eq!(plan.items_in(TierId(0)).len(), 3);
//! assert_eq!(plan.items_in(TierId(1)).len(), 5);
//! assert_eq!(plan.items_in(TierId(2)).len(), 2);
//! // 3 x 0.1 ms + 5 x 4 ms + 2 x 14.29 ms
//! let expected = 3.0 * 1e8 / 1e12 + 5.0 * 1e8 / 25e9 + 2.0 * 1e8 / 7e9;
//! assert!((plan.seconds_per_step() - expected).abs() < 1e-12);
//! assert!(plan.predict(CostModel::Overlapped).seconds_per_step <= plan.seconds_per_step());
//! for line in plan.explain() {
//!     println!("{line}");
//! }
//! # Ok::<(), tier_cache::PlanError>(())
//! ```
#![forbid(unsafe_code)]

mod cache;
mod cache_state;
pub mod cost;
mod error;
mod explain;
mod hybrid;
mod item;
mod mem_storage;
mod placement;
mod planner;
mod ranges;
mod solve;
mod stats;
mod storage;
mod tier;
pub mod units;

pub use cache::{
    Access, BandwidthUpdate, CacheOptions, Eviction, Move, MoveReason, Residency, TierCache,
};
pub use cost::{item_cost, CostModel, Prediction, TierLoad};
pub use error::{CacheError, PlanError, UnitError};
pub use explain::{Explanation, PassedOver, Reason};
pub use hybrid::{hybrid_split, ComputeTier, HybridSplit};
pub use item::{Constraint, Item};
pub use mem_storage::{MemError, MemHandle, MemStorage};
pub use placement::{Placement, PlanMethod};
pub use planner::{Key, PlanOptions, Planner};
pub use ranges::{plan_ranges, DeviceShare, RangePlan};
pub use stats::{Stats, TierStats};
pub use storage::Storage;
pub use tier::{Tier, TierId};

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
