//! `explain()`: why each item sits where it does.

use std::fmt;

use crate::cost::item_cost;
use crate::item::{Constraint, Item};
use crate::placement::Placement;
use crate::planner::Key;
use crate::tier::TierId;
use crate::units::{format_bytes, format_seconds};

/// Why an item was not placed in a tier that would have been cheaper for it.
#[derive(Clone, Debug, PartialEq)]
pub enum PassedOver {
    /// A constraint forbids the tier.
    Forbidden {
        /// Tier name.
        tier: String,
        /// The constraint.
        constraint: Constraint,
    },
    /// The tier is full: this item would exceed its capacity.
    Full {
        /// Tier name.
        tier: String,
        /// Bytes used there by the placement.
        used: u64,
        /// The tier's capacity.
        capacity: u64,
    },
    /// There is room, but the plan is cheaper overall with this item slower (room elsewhere
    /// in the plan went to items that save more; only seen with the exact search).
    Traded {
        /// Tier name.
        tier: String,
    },
}

/// The reason for one item's home.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    /// Placed by a pin constraint.
    Pinned,
    /// Weight 0: not read per step, so it stays in the slowest tier it may use.
    Unused,
    /// Placed by the optimisation.
    Placed {
        /// Seconds per step saved against the next slower tier it may use (0 in the slowest).
        saves_seconds: f64,
        /// That slower tier's name, if any.
        versus: Option<String>,
        /// Time saved per byte between its slowest and fastest allowed tiers (s/B per step).
        density: f64,
        /// Rank by density among the optimised items (1 = most valuable per byte).
        rank: usize,
        /// Number of optimised items.
        of: usize,
        /// Cheaper tiers this item is not in, and why.
        passed_over: Vec<PassedOver>,
    },
}

/// One line of [`Placement::explain`].
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation<K> {
    /// The item's key.
    pub key: K,
    /// Its home.
    pub tier: TierId,
    /// The home's name.
    pub tier_name: String,
    /// The item's size.
    pub size: u64,
    /// Its cost per step where it is.
    pub seconds: f64,
    /// Why it is there.
    pub reason: Reason,
}

impl<K: fmt::Debug> fmt::Display for Explanation<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} -> {}: ", self.key, self.tier_name)?;
        match &self.reason {
            Reason::Pinned => write!(f, "pinned by constraint"),
            Reason::Unused => write!(f, "weight 0, not read per step: stays in the slowest tier"),
            Reason::Placed {
                saves_seconds,
                versus,
                density,
                rank,
                of,
                passed_over,
            } => {
                match versus {
                    Some(v) => write!(f, "saves {}/step vs {v}", format_seconds(*saves_seconds))?,
                    None => write!(
                        f,
                        "slowest tier, costs {}/step",
                        format_seconds(self.seconds)
                    )?,
                }
                write!(f, ", density {density:.2e} s/B, rank {rank} of {of}")?;
                for p in passed_over {
                    match p {
                        PassedOver::Forbidden { tier, constraint } => {
                            write!(f, "; not {tier}: constraint \"{constraint}\"")?
                        }
                        PassedOver::Full {
                            tier,
                            used,
                            capacity,
                        } => write!(
                            f,
                            "; {tier} full: {} used, this item ({}) would exceed {}",
                            format_bytes(*used),
                            format_bytes(self.size),
                            format_bytes(*capacity)
                        )?,
                        PassedOver::Traded { tier } => write!(
                            f,
                            "; {tier} has room but the plan is cheaper overall with it here"
                        )?,
                    }
                }
                Ok(())
            }
        }
    }
}

impl<K: Key> Placement<K> {
    /// Why each item sits where it does, in input order. `Display` gives lines such as
    /// `7 -> VRAM: saves 19.3 ms/step vs RAM, density 3.64e-11 s/B, rank 8 of 80`.
    ///
    /// ```
    /// use tier_cache::{Item, Planner, Reason, Tier};
    /// let planner = Planner::new(vec![
    ///     Tier::new("VRAM", 1_000, 1.0e12),
    ///     Tier::unlimited("RAM", 25.0e9),
    /// ])
    /// .unwrap();
    /// let items = vec![Item::new("a", 1_000, 2.0), Item::new("b", 1_000, 1.0)];
    /// let why = planner.plan(&items).unwrap().explain();
    /// assert_eq!(why[0].tier_name, "VRAM");
    /// assert!(matches!(why[1].reason, Reason::Placed { rank: 2, .. }));
    /// assert!(why[1].to_string().contains("VRAM full"));
    /// ```
    pub fn explain(&self) -> Vec<Explanation<K>> {
        let nt = self.tiers.len();
        // Density rank among optimised items.
        let optimised: Vec<usize> = (0..self.items.len())
            .filter(|&i| self.items[i].pinned_tier().is_none() && self.items[i].weight != 0.0)
            .collect();
        let density = |it: &Item<K>| -> f64 {
            let costs: Vec<f64> = (0..nt)
                .filter(|&t| it.allows(TierId(t)))
                .map(|t| item_cost(&self.tiers[t], it.size, it.weight))
                .collect();
            let hi = costs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lo = costs.iter().copied().fold(f64::INFINITY, f64::min);
            if costs.is_empty() {
                0.0
            } else {
                (hi - lo) / it.size.max(1) as f64
            }
        };
        let mut ranked: Vec<(f64, usize)> = optimised
            .iter()
            .map(|&i| (density(&self.items[i]), i))
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut rank_of = vec![0usize; self.items.len()];
        for (r, &(_, i)) in ranked.iter().enumerate() {
            rank_of[i] = r + 1;
        }
        let used: Vec<u64> = (0..nt).map(|t| self.used_bytes(TierId(t))).collect();

        self.assignments()
            .enumerate()
            .map(|(i, (item, home))| {
                let here = item_cost(&self.tiers[home.0], item.size, item.weight);
                let reason = if item.pinned_tier().is_some() {
                    Reason::Pinned
                } else if item.weight == 0.0 {
                    Reason::Unused
                } else {
                    let slower = (home.0 + 1..nt).find(|&t| item.allows(TierId(t)));
                    let saves_seconds = slower
                        .map(|t| item_cost(&self.tiers[t], item.size, item.weight) - here)
                        .unwrap_or(0.0);
                    let mut passed_over = Vec::new();
                    for (t, tier) in self.tiers.iter().enumerate() {
                        if t == home.0 || item_cost(tier, item.size, item.weight) >= here {
                            continue;
                        }
                        let never = item
                            .constraints
                            .iter()
                            .find(|c| **c == Constraint::Never(TierId(t)));
                        if let Some(c) = never {
                            passed_over.push(PassedOver::Forbidden {
                                tier: tier.name.clone(),
                                constraint: *c,
                            });
                        } else if u128::from(used[t]) + u128::from(item.size)
                            > u128::from(tier.capacity)
                        {
                            passed_over.push(PassedOver::Full {
                                tier: tier.name.clone(),
                                used: used[t],
                                capacity: tier.capacity,
                            });
                        } else {
                            passed_over.push(PassedOver::Traded {
                                tier: tier.name.clone(),
                            });
                        }
                    }
                    Reason::Placed {
                        saves_seconds,
                        versus: slower.map(|t| self.tiers[t].name.clone()),
                        density: density(item),
                        rank: rank_of[i],
                        of: ranked.len(),
                        passed_over,
                    }
                };
                Explanation {
                    key: item.key.clone(),
                    tier: home,
                    tier_name: self.tiers[home.0].name.clone(),
                    size: item.size,
                    seconds: here,
                    reason,
                }
            })
            .collect()
    }
}
