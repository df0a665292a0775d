//! The planner: validates tiers and items, honours constraints, and assigns every item a home.

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;

use crate::cost::item_cost;
use crate::error::PlanError;
use crate::item::{Constraint, Item};
use crate::placement::{Placement, PlanMethod};
use crate::solve::{exact, greedy, Problem};
use crate::tier::{Tier, TierId};

/// What a key must support: cloning, hashing, ordering (for stable output) and `Debug` (for
/// errors and explanations). Implemented for every such type.
pub trait Key: Clone + Eq + Hash + Ord + Debug {}
impl<T: Clone + Eq + Hash + Ord + Debug> Key for T {}

/// Planner settings.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanOptions {
    /// Up to this many free (unpinned, weight > 0) items the planner searches exactly (branch and
    /// bound, provably optimal); above it, greedy by value density plus local improvement.
    pub exact_max_items: usize,
    /// Node budget of the exact search; when spent, the best placement found so far is used and
    /// [`PlanMethod::ExactStopped`] reports it.
    pub exact_node_limit: u64,
    /// Passes of the improvement step (single moves, pairwise swaps, ejections) after greedy.
    pub improvement_rounds: usize,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            exact_max_items: 14,
            exact_node_limit: 5_000_000,
            improvement_rounds: 64,
        }
    }
}

/// Computes placements that minimise the expected time per step (the serial sum of
/// [`item_cost`] over items; see [`crate::cost`]).
///
/// The order of work: pinned items go to their tier first (error if one does not fit). Then the
/// items with weight > 0 are assigned, by exact branch and bound when there are at most
/// [`PlanOptions::exact_max_items`] of them, otherwise by greedy value density (time saved per
/// byte) followed by single-move, swap and ejection improvements. Items with weight 0 (not
/// read per step) then go into the room left, slowest allowed tier first, so they never take
/// room in a fast tier from an item that is read; only if one of them finds no room that way
/// (a limited slowest tier, `Never` constraints) are all items solved together, weight-0 items
/// costing nothing, so the predicted time stays optimal. The exact search is optimal (checked against
/// brute force in the tests); greedy is optimal when the items have equal size (e.g. the
/// layers of one model) and a heuristic otherwise (a big item with the best density can block
/// two smaller ones worth more together).
///
/// ```
/// use tier_cache::{Item, Planner, Tier, TierId};
/// let planner = Planner::new(vec![
///     Tier::new("VRAM", 2_000, 1.0e12),
///     Tier::new("RAM", 4_000, 25.0e9),
///     Tier::unlimited("storage", 5.0e9),
/// ])
/// .unwrap();
/// let items: Vec<Item<u32>> = (0..8).map(|i| Item::new(i, 1_000, 1.0)).collect();
/// let plan = planner.plan(&items).unwrap();
/// assert_eq!(plan.items_in(TierId(0)).len(), 2);
/// assert_eq!(plan.items_in(TierId(1)).len(), 4);
/// assert_eq!(plan.items_in(TierId(2)).len(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct Planner {
    tiers: Vec<Tier>,
    options: PlanOptions,
}

impl Planner {
    /// A planner over `tiers`, fastest first. Fails on an empty list or a tier with a
    /// non-positive bandwidth or negative latency.
    pub fn new(tiers: Vec<Tier>) -> Result<Self, PlanError> {
        if tiers.is_empty() {
            return Err(PlanError::NoTiers);
        }
        for (i, t) in tiers.iter().enumerate() {
            t.validate(TierId(i))?;
        }
        Ok(Planner {
            tiers,
            options: PlanOptions::default(),
        })
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: PlanOptions) -> Self {
        self.options = options;
        self
    }

    /// The tiers, fastest first.
    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// The options.
    pub fn options(&self) -> &PlanOptions {
        &self.options
    }

    /// Seconds per step of `item` if it lived in `tier` (`None` for an unknown tier).
    pub fn cost<K>(&self, item: &Item<K>, tier: TierId) -> Option<f64> {
        self.tiers
            .get(tier.0)
            .map(|t| item_cost(t, item.size, item.weight))
    }

    /// Places every item. See the type docs for the method and [`PlanError`] for failures.
    pub fn plan<K: Key>(&self, items: &[Item<K>]) -> Result<Placement<K>, PlanError> {
        self.validate_items(items)?;
        let nt = self.tiers.len();
        let mut free: Vec<u128> = self.tiers.iter().map(|t| u128::from(t.capacity)).collect();
        let mut homes: Vec<Option<TierId>> = vec![None; items.len()];

        // 1. Pinned items.
        for (i, item) in items.iter().enumerate() {
            if let Some(t) = item.pinned_tier() {
                let size = u128::from(item.size);
                if size > free[t.0] {
                    return Err(PlanError::PinnedDoesNotFit {
                        item: format!("{:?}", item.key),
                        constraint: Constraint::PinTo(t).to_string(),
                        tier_name: self.tiers[t.0].name.clone(),
                        size: item.size,
                        free: u64::try_from(free[t.0]).unwrap_or(u64::MAX),
                        capacity: self.tiers[t.0].capacity,
                    });
                }
                free[t.0] -= size;
                homes[i] = Some(t);
            }
        }
        // 2. Items with weight > 0, optimised; then weight-0 items into the room left, slowest
        //    allowed tier first. Only if some weight-0 item finds no room that way are both
        //    solved together (weight-0 items cost nothing, so the cost stays optimal).
        let weighted: Vec<usize> = (0..items.len())
            .filter(|&i| homes[i].is_none() && items[i].weight != 0.0)
            .collect();
        let zero: Vec<usize> = (0..items.len())
            .filter(|&i| homes[i].is_none() && items[i].weight == 0.0)
            .collect();
        let (assign, mut left, method) = self.solve(items, &weighted, free.clone())?;
        let mut zero_homes = Vec::with_capacity(zero.len());
        for &i in &zero {
            let size = u128::from(items[i].size);
            let slot = (0..nt)
                .rev()
                .find(|&t| items[i].allows(TierId(t)) && size <= left[t]);
            match slot {
                Some(t) => {
                    left[t] -= size;
                    zero_homes.push(t);
                }
                None => break,
            }
        }
        let method = if zero_homes.len() == zero.len() {
            for (k, &i) in weighted.iter().enumerate() {
                homes[i] = Some(TierId(assign[k]));
            }
            for (k, &i) in zero.iter().enumerate() {
                homes[i] = Some(TierId(zero_homes[k]));
            }
            method
        } else {
            let all: Vec<usize> = weighted.iter().chain(&zero).copied().collect();
            let (assign, _, method) = self.solve(items, &all, free)?;
            for (k, &i) in all.iter().enumerate() {
                homes[i] = Some(TierId(assign[k]));
            }
            method
        };
        let homes: Vec<TierId> = homes
            .into_iter()
            .map(|h| h.unwrap_or(TierId(nt - 1)))
            .collect();
        Ok(Placement::new(
            self.tiers.clone(),
            items.to_vec(),
            homes,
            method,
        ))
    }

    /// Assigns `which` items given free room per tier: exact for small counts, greedy beyond.
    /// Returns the tier of each, the room left, and the method.
    fn solve<K: Key>(
        &self,
        items: &[Item<K>],
        which: &[usize],
        free: Vec<u128>,
    ) -> Result<(Vec<usize>, Vec<u128>, PlanMethod), PlanError> {
        let nt = self.tiers.len();
        let problem = Problem {
            sizes: which.iter().map(|&i| items[i].size).collect(),
            cost: which
                .iter()
                .map(|&i| {
                    (0..nt)
                        .map(|t| {
                            if items[i].allows(TierId(t)) {
                                item_cost(&self.tiers[t], items[i].size, items[i].weight)
                            } else {
                                f64::INFINITY
                            }
                        })
                        .collect()
                })
                .collect(),
            free,
        };
        let rounds = self.options.improvement_rounds;
        let name_failure = |k: usize| {
            let idx = which.get(k).copied().unwrap_or(0);
            match items.get(idx) {
                Some(item) => self.no_room(item),
                None => PlanError::NoTiers,
            }
        };
        let (assign, method) = if which.len() <= self.options.exact_max_items {
            let ex = exact(&problem, self.options.exact_node_limit, rounds);
            match ex.assign {
                Some(a) if ex.complete => (a, PlanMethod::Exact),
                Some(a) => (a, PlanMethod::ExactStopped),
                None => {
                    // Infeasible: let greedy name an item that finds no room.
                    let bad = greedy(&problem, rounds).err().unwrap_or(0);
                    return Err(name_failure(bad));
                }
            }
        } else {
            match greedy(&problem, rounds) {
                Ok(a) => (a, PlanMethod::Greedy),
                Err(k) => return Err(name_failure(k)),
            }
        };
        let mut left = problem.free;
        for (k, &t) in assign.iter().enumerate() {
            left[t] = left[t].saturating_sub(u128::from(problem.sizes[k]));
        }
        Ok((assign, left, method))
    }

    fn no_room<K: Debug>(&self, item: &Item<K>) -> PlanError {
        let allowed: Vec<&str> = (0..self.tiers.len())
            .filter(|&t| item.allows(TierId(t)))
            .map(|t| self.tiers[t].name.as_str())
            .collect();
        let constraints: Vec<String> = item.constraints.iter().map(|c| c.to_string()).collect();
        PlanError::NoRoom {
            item: format!("{:?}", item.key),
            size: item.size,
            allowed: allowed.join(", "),
            constraints: if constraints.is_empty() {
                "none".to_string()
            } else {
                constraints.join(", ")
            },
        }
    }

    fn validate_items<K: Key>(&self, items: &[Item<K>]) -> Result<(), PlanError> {
        let nt = self.tiers.len();
        let mut seen = HashSet::with_capacity(items.len());
        for item in items {
            let name = || format!("{:?}", item.key);
            if !(item.weight.is_finite() && item.weight >= 0.0) {
                return Err(PlanError::InvalidItem {
                    item: name(),
                    reason: format!(
                        "access weight must be a finite number >= 0, got {}",
                        item.weight
                    ),
                });
            }
            if !seen.insert(&item.key) {
                return Err(PlanError::DuplicateKey { item: name() });
            }
            let mut pin: Option<TierId> = None;
            for c in &item.constraints {
                let (Constraint::PinTo(t) | Constraint::Never(t)) = *c;
                if t.0 >= nt {
                    return Err(PlanError::UnknownTier {
                        item: name(),
                        constraint: c.to_string(),
                        tiers: nt,
                    });
                }
                if let Constraint::PinTo(t) = *c {
                    if let Some(p) = pin {
                        if p != t {
                            return Err(PlanError::ConflictingConstraints {
                                item: name(),
                                reason: format!("\"pin to {p}\" and \"pin to {t}\""),
                            });
                        }
                    }
                    pin = Some(t);
                }
            }
            if let Some(p) = pin {
                if item.constraints.contains(&Constraint::Never(p)) {
                    return Err(PlanError::ConflictingConstraints {
                        item: name(),
                        reason: format!("\"pin to {p}\" and \"never in {p}\""),
                    });
                }
            }
            if !(0..nt).any(|t| item.allows(TierId(t))) {
                return Err(PlanError::ConflictingConstraints {
                    item: name(),
                    reason: "\"never in\" excludes every tier".to_string(),
                });
            }
        }
        Ok(())
    }
}
