//! A computed placement: where each item lives, what it costs, and a summary.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::cost::{item_cost, CostModel, Prediction, TierLoad};
use crate::item::Item;
use crate::planner::Key;
use crate::tier::{Tier, TierId};
use crate::units::{format_bytes, format_seconds};

/// How the planner found a placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanMethod {
    /// Exact branch and bound that finished: optimal for the serial cost model.
    Exact,
    /// Exact search stopped at its node limit: the best placement found, not proven optimal.
    ExactStopped,
    /// Greedy by value density plus local improvement: optimal for equal-size items, a
    /// heuristic otherwise.
    Greedy,
    /// The homes a [`crate::TierCache`] tracks before its first re-plan.
    Tracked,
}

/// Where every item lives (its *home*), with cost queries and explanations.
#[derive(Clone, Debug)]
pub struct Placement<K> {
    pub(crate) tiers: Vec<Tier>,
    pub(crate) items: Vec<Item<K>>,
    pub(crate) homes: Vec<TierId>,
    index: HashMap<K, usize>,
    method: PlanMethod,
}

impl<K: Key> Placement<K> {
    pub(crate) fn new(
        tiers: Vec<Tier>,
        items: Vec<Item<K>>,
        homes: Vec<TierId>,
        method: PlanMethod,
    ) -> Self {
        let index = items
            .iter()
            .enumerate()
            .map(|(i, it)| (it.key.clone(), i))
            .collect();
        Placement {
            tiers,
            items,
            homes,
            index,
            method,
        }
    }

    /// The tiers planned for (fastest first).
    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// The items, in the order given to the planner.
    pub fn items(&self) -> &[Item<K>] {
        &self.items
    }

    /// How the placement was found.
    pub fn method(&self) -> PlanMethod {
        self.method
    }

    /// The home tier of `key`, or `None` for an unknown key.
    pub fn tier_of(&self, key: &K) -> Option<TierId> {
        self.index.get(key).map(|&i| self.homes[i])
    }

    /// Every item with its home, in input order.
    pub fn assignments(&self) -> impl Iterator<Item = (&Item<K>, TierId)> + '_ {
        self.items.iter().zip(self.homes.iter().copied())
    }

    /// Keys whose home is `tier`, in input order.
    pub fn items_in(&self, tier: TierId) -> Vec<&K> {
        self.assignments()
            .filter(|(_, t)| *t == tier)
            .map(|(it, _)| &it.key)
            .collect()
    }

    /// Bytes of the items whose home is `tier`.
    pub fn used_bytes(&self, tier: TierId) -> u64 {
        self.assignments()
            .filter(|(_, t)| *t == tier)
            .fold(0u64, |acc, (it, _)| acc.saturating_add(it.size))
    }

    /// Predicted seconds per step under the serial model (the planner's objective).
    pub fn seconds_per_step(&self) -> f64 {
        self.predict(CostModel::Serial).seconds_per_step
    }

    /// Predicted time per step under `model`, with a per-tier breakdown.
    pub fn predict(&self, model: CostModel) -> Prediction {
        let mut loads: Vec<TierLoad> = self
            .tiers
            .iter()
            .enumerate()
            .map(|(i, t)| TierLoad {
                tier: TierId(i),
                name: t.name.clone(),
                items: 0,
                bytes: 0,
                bytes_per_step: 0.0,
                seconds: 0.0,
            })
            .collect();
        for (item, t) in self.assignments() {
            if let Some(load) = loads.get_mut(t.0) {
                load.items += 1;
                load.bytes = load.bytes.saturating_add(item.size);
                load.bytes_per_step += item.weight * item.size as f64;
                load.seconds += item_cost(&self.tiers[t.0], item.size, item.weight);
            }
        }
        Prediction::from_loads(model, loads)
    }

    /// A few lines: per tier, the items, bytes used of capacity and time per step, then the
    /// predicted time per step and steps per second under both cost models.
    pub fn summary(&self) -> String {
        let serial = self.predict(CostModel::Serial);
        let overlapped = self.predict(CostModel::Overlapped);
        let mut s = String::new();
        for (load, tier) in serial.per_tier.iter().zip(&self.tiers) {
            let _ = writeln!(
                s,
                "{:<10} {:>4} items  {:>10} of {:<10}  {:>10}/step",
                tier.name,
                load.items,
                format_bytes(load.bytes),
                format_bytes(tier.capacity),
                format_seconds(load.seconds)
            );
        }
        let _ = writeln!(
            s,
            "predicted (serial, planner objective): {}/step = {:.2} steps/s",
            format_seconds(serial.seconds_per_step),
            serial.steps_per_second()
        );
        let _ = write!(
            s,
            "predicted (overlapped tiers):          {}/step = {:.2} steps/s",
            format_seconds(overlapped.seconds_per_step),
            overlapped.steps_per_second()
        );
        s
    }
}
