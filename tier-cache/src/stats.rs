//! Runtime statistics of a [`crate::TierCache`].

use crate::tier::TierId;

/// Counters of one tier.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TierStats {
    /// `ensure` calls for this tier that found the item already there.
    pub hits: u64,
    /// `ensure` calls for this tier that had to copy the item in.
    pub misses: u64,
    /// Bytes copied into this tier (streamed copies and home moves).
    pub bytes_in: u64,
    /// Bytes copied out of this tier.
    pub bytes_out: u64,
    /// Streamed copies evicted from this tier.
    pub evictions: u64,
    /// Items whose home moved out of this tier to a slower one.
    pub demotions: u64,
    /// Items whose home moved into this tier from a slower one.
    pub promotions: u64,
    /// Bandwidth measurements recorded for this tier.
    pub bandwidth_samples: u64,
}

/// A snapshot of a cache's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Per tier, fastest first.
    pub tiers: Vec<TierStats>,
    /// Re-plans run (explicit, after a capacity increase, or after a bandwidth change).
    pub replans: u64,
    /// Home moves made (each item move counts once).
    pub moves: u64,
}

impl Stats {
    pub(crate) fn new(tiers: usize) -> Self {
        Stats {
            tiers: vec![TierStats::default(); tiers],
            replans: 0,
            moves: 0,
        }
    }

    pub(crate) fn tier_mut(&mut self, tier: TierId) -> &mut TierStats {
        if tier.0 >= self.tiers.len() {
            self.tiers.resize(tier.0 + 1, TierStats::default());
        }
        &mut self.tiers[tier.0]
    }

    /// Hits over all tiers.
    pub fn hits(&self) -> u64 {
        self.tiers.iter().map(|t| t.hits).sum()
    }

    /// Misses over all tiers.
    pub fn misses(&self) -> u64 {
        self.tiers.iter().map(|t| t.misses).sum()
    }

    /// Evictions over all tiers.
    pub fn evictions(&self) -> u64 {
        self.tiers.iter().map(|t| t.evictions).sum()
    }

    /// Hits / (hits + misses), or 0 with no accesses.
    pub fn hit_rate(&self) -> f64 {
        let total = self.hits() + self.misses();
        if total == 0 {
            0.0
        } else {
            self.hits() as f64 / total as f64
        }
    }
}
