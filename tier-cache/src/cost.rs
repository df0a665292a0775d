//! The cost model: predicted time per step of a placement.
//!
//! An item of size `s` bytes read `w` times per step from tier `t` costs
//! `w * (latency_t + s / bandwidth_t)` seconds per step. The same formula covers the fastest
//! tier (for VRAM it is the time compute spends reading the weights from device memory, with a
//! latency of usually 0) and the streamed tiers (for pinned RAM it is the host-to-device copy,
//! for storage the read). Items with weight 0 cost nothing wherever they are.
//!
//! Two views combine the per-item costs:
//! - [`CostModel::Serial`] (the default, and the objective the planner minimises): the sum over
//!   all items; nothing overlaps. Simple, and an upper bound of the real time.
//! - [`CostModel::Overlapped`]: every tier's link runs in parallel with the others (reads from
//!   storage, copies from RAM and compute all overlap perfectly, as a deep streaming pipeline
//!   approaches), so the step takes as long as the busiest tier: the maximum over tiers of the
//!   sum of its items' costs. A lower bound for a pipeline that overlaps all stages.

use crate::tier::{Tier, TierId};

/// How per-tier times combine into the time of a step. See the [module docs](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CostModel {
    /// Sum over tiers (nothing overlaps). The planner's objective.
    #[default]
    Serial,
    /// Maximum over tiers (every tier's link overlaps the others).
    Overlapped,
}

/// Seconds per step for an item of `size` bytes and access `weight` living in `tier`.
///
/// ```
/// use tier_cache::{item_cost, Tier};
/// let ram = Tier::new("RAM", 1 << 40, 25.0e9);
/// assert!((item_cost(&ram, 500_000_000, 1.0) - 0.02).abs() < 1e-12);
/// assert_eq!(item_cost(&ram, 500_000_000, 0.0), 0.0);
/// ```
pub fn item_cost(tier: &Tier, size: u64, weight: f64) -> f64 {
    if weight == 0.0 {
        0.0
    } else {
        weight * tier.read_seconds(size)
    }
}

/// What one tier contributes to a step.
#[derive(Clone, Debug, PartialEq)]
pub struct TierLoad {
    /// The tier.
    pub tier: TierId,
    /// Its name.
    pub name: String,
    /// Items whose home is this tier.
    pub items: usize,
    /// Bytes of those items.
    pub bytes: u64,
    /// Bytes read from this tier per step (size times weight, summed).
    pub bytes_per_step: f64,
    /// Seconds per step spent on this tier's items.
    pub seconds: f64,
}

/// Predicted time per step of a placement under one [`CostModel`].
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// The model used.
    pub model: CostModel,
    /// Predicted seconds per step.
    pub seconds_per_step: f64,
    /// Per-tier breakdown (always the same, whatever the model).
    pub per_tier: Vec<TierLoad>,
}

impl Prediction {
    /// Combines per-tier loads under `model`.
    pub fn from_loads(model: CostModel, per_tier: Vec<TierLoad>) -> Self {
        let seconds_per_step = match model {
            CostModel::Serial => per_tier.iter().map(|l| l.seconds).sum(),
            CostModel::Overlapped => per_tier.iter().map(|l| l.seconds).fold(0.0, f64::max),
        };
        Prediction {
            model,
            seconds_per_step,
            per_tier,
        }
    }

    /// Steps (tokens) per second: `1 / seconds_per_step` (infinite when nothing is read).
    pub fn steps_per_second(&self) -> f64 {
        if self.seconds_per_step > 0.0 {
            1.0 / self.seconds_per_step
        } else {
            f64::INFINITY
        }
    }
}
