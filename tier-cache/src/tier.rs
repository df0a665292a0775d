//! Tiers: where an item can live, from fastest to slowest.

use std::fmt;
use std::time::Duration;

use crate::error::PlanError;

/// Index of a tier in the tier list (0 = fastest, e.g. VRAM).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TierId(pub usize);

impl fmt::Display for TierId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tier {}", self.0)
    }
}

/// One level of the memory hierarchy: a capacity, a read bandwidth and a per-access latency.
///
/// Bandwidth and latency are initial estimates; the runtime cache replaces the bandwidth with
/// measurements ([`crate::TierCache::record_bandwidth`]). The slowest tier is usually storage
/// with effectively unlimited capacity ([`Tier::unlimited`], capacity `u64::MAX`).
///
/// ```
/// use std::time::Duration;
/// use tier_cache::Tier;
/// let vram = Tier::new("VRAM", 22 << 30, 1.0e12);
/// let ram = Tier::new("RAM", 44 << 30, 25.0e9).with_latency(Duration::from_micros(10));
/// let nvme = Tier::unlimited("storage", 7.0e9).with_latency(Duration::from_micros(100));
/// assert_eq!(nvme.capacity, u64::MAX);
/// assert!(ram.read_seconds(1_000_000_000) > vram.read_seconds(1_000_000_000));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Tier {
    /// Name used in explanations and errors ("VRAM", "RAM", "storage").
    pub name: String,
    /// Capacity in bytes available to placed items (`u64::MAX` = unlimited).
    pub capacity: u64,
    /// Read bandwidth in bytes per second (to the consumer, e.g. host-to-device for pinned RAM).
    pub bandwidth: f64,
    /// Fixed cost per access in seconds (request setup, DMA launch, I/O latency).
    pub latency: f64,
}

impl Tier {
    /// A tier with the given capacity (bytes) and bandwidth (bytes/s) and zero latency.
    pub fn new(name: impl Into<String>, capacity: u64, bandwidth: f64) -> Self {
        Tier {
            name: name.into(),
            capacity,
            bandwidth,
            latency: 0.0,
        }
    }

    /// A tier with unlimited capacity (`u64::MAX`), e.g. storage holding every item.
    pub fn unlimited(name: impl Into<String>, bandwidth: f64) -> Self {
        Tier::new(name, u64::MAX, bandwidth)
    }

    /// Sets the per-access latency.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency.as_secs_f64();
        self
    }

    /// Seconds for one access of `bytes` from this tier: `latency + bytes / bandwidth`.
    pub fn read_seconds(&self, bytes: u64) -> f64 {
        self.latency + bytes as f64 / self.bandwidth
    }

    /// Checks that bandwidth is finite and positive and latency finite and non-negative.
    pub fn validate(&self, id: TierId) -> Result<(), PlanError> {
        if !(self.bandwidth.is_finite() && self.bandwidth > 0.0) {
            return Err(PlanError::InvalidTier {
                tier: id.0,
                name: self.name.clone(),
                reason: format!(
                    "bandwidth must be a finite number of bytes/s above 0, got {}",
                    self.bandwidth
                ),
            });
        }
        if !(self.latency.is_finite() && self.latency >= 0.0) {
            return Err(PlanError::InvalidTier {
                tier: id.0,
                name: self.name.clone(),
                reason: format!(
                    "latency must be a finite number of seconds >= 0, got {}",
                    self.latency
                ),
            });
        }
        Ok(())
    }
}
