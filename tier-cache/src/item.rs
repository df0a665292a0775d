//! Items to place: a key, a size, an access weight and constraints.

use std::fmt;

use crate::tier::TierId;

/// A placement rule for one item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Constraint {
    /// The item must live in this tier (e.g. draft-model layers must be in VRAM).
    PinTo(TierId),
    /// The item must never live in this tier.
    Never(TierId),
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constraint::PinTo(t) => write!(f, "pin to {t}"),
            Constraint::Never(t) => write!(f, "never in {t}"),
        }
    }
}

/// Something to place: a key, its size in bytes, how often it is read per step (access
/// weight; 1.0 = once per token, 0 = not needed, e.g. a skipped layer) and constraints.
///
/// ```
/// use tier_cache::{Item, TierId};
/// let layer = Item::new(7usize, 530_000_000, 1.0).pinned(TierId(0));
/// assert_eq!(layer.pinned_tier(), Some(TierId(0)));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Item<K> {
    /// Identifies the item (a layer index, an expert id, a KV block).
    pub key: K,
    /// Size in bytes.
    pub size: u64,
    /// Expected reads per step (finite, >= 0).
    pub weight: f64,
    /// Placement rules; see [`Constraint`].
    pub constraints: Vec<Constraint>,
}

impl<K> Item<K> {
    /// An unconstrained item.
    pub fn new(key: K, size: u64, weight: f64) -> Self {
        Item {
            key,
            size,
            weight,
            constraints: Vec::new(),
        }
    }

    /// Adds a [`Constraint::PinTo`].
    pub fn pinned(mut self, tier: TierId) -> Self {
        self.constraints.push(Constraint::PinTo(tier));
        self
    }

    /// Adds a [`Constraint::Never`].
    pub fn never_in(mut self, tier: TierId) -> Self {
        self.constraints.push(Constraint::Never(tier));
        self
    }

    /// The tier this item is pinned to, if any (the first `PinTo`).
    pub fn pinned_tier(&self) -> Option<TierId> {
        self.constraints.iter().find_map(|c| match c {
            Constraint::PinTo(t) => Some(*t),
            Constraint::Never(_) => None,
        })
    }

    /// Whether the constraints allow this item to live in `tier`.
    pub fn allows(&self, tier: TierId) -> bool {
        self.constraints.iter().all(|c| match c {
            Constraint::PinTo(t) => *t == tier,
            Constraint::Never(t) => *t != tier,
        })
    }
}
