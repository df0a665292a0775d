//! Splitting a streamed item between its link and a compute tier that works on it in place.
//!
//! A layer that does not fit on the device crosses a link every step. A [`ComputeTier`] (CPU
//! threads reading the layer's rows from the RAM the link copies out of) can take a share of
//! the item's rows instead: that share never crosses the link, the rest does, and both sides
//! work at once. [`hybrid_split`] picks the share so both finish together, counting the
//! compute tier's fixed cost per item (activations out to it, partial results back, the join)
//! and its arithmetic limit at larger batches; a share that would not beat the link alone is 0.
//!
//! ```
//! use tier_cache::{hybrid_split, ComputeTier};
//!
//! // 500 MB layer over a 50 GB/s link; CPU threads read 60 GB/s, 20 us of fixed cost.
//! let cpu = ComputeTier::new("cpu", 60e9, 2e12, 20e-6);
//! let s = hybrid_split(500_000_000, 1_000_000_000, 1, 50e9, &cpu)?;
//! assert!(s.compute_fraction > 0.5 && s.compute_fraction < 0.56);
//! assert!(s.seconds < s.link_only_seconds / 2.0 + 1e-4);
//! # Ok::<(), tier_cache::PlanError>(())
//! ```

use crate::error::PlanError;

/// A tier that computes on an item where it lies instead of moving it.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputeTier {
    /// Name for messages.
    pub name: String,
    /// Bytes of the item it consumes per second when memory-bound (batch 1), e.g. measured
    /// with the same quant types at start.
    pub bandwidth: f64,
    /// Multiply-adds per second it sustains: with `batch` rows of activations it needs
    /// `batch x elements` of them per item, which bounds it at large batches.
    pub macs_per_s: f64,
    /// Fixed seconds per item and step on its side (activations in, partial outputs out, the
    /// join), in series with its compute.
    pub sync_seconds: f64,
}

impl ComputeTier {
    /// A compute tier of `bandwidth` bytes/s, `macs_per_s` multiply-adds/s and `sync_seconds`
    /// of fixed cost per item.
    pub fn new(name: &str, bandwidth: f64, macs_per_s: f64, sync_seconds: f64) -> Self {
        Self {
            name: name.to_string(),
            bandwidth,
            macs_per_s,
            sync_seconds,
        }
    }

    fn check(&self) -> Result<(), PlanError> {
        let bad = |reason: String| {
            Err(PlanError::InvalidTier {
                tier: 0,
                name: self.name.clone(),
                reason,
            })
        };
        if !(self.bandwidth.is_finite() && self.bandwidth > 0.0) {
            return bad(format!(
                "compute bandwidth {} is not a positive number of bytes/s",
                self.bandwidth
            ));
        }
        if !(self.macs_per_s.is_finite() && self.macs_per_s > 0.0) {
            return bad(format!(
                "compute rate {} is not a positive number of multiply-adds/s",
                self.macs_per_s
            ));
        }
        if !(self.sync_seconds.is_finite() && self.sync_seconds >= 0.0) {
            return bad(format!(
                "fixed cost {} s is not a non-negative number",
                self.sync_seconds
            ));
        }
        Ok(())
    }
}

/// How one item is split between a link and a [`ComputeTier`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HybridSplit {
    /// Fraction of the item's bytes (rows) the compute tier takes, in `[0, 1)`; 0 when
    /// splitting would not beat the link alone.
    pub compute_fraction: f64,
    /// Predicted seconds per step for the item with this split.
    pub seconds: f64,
    /// Predicted seconds per step with everything over the link.
    pub link_only_seconds: f64,
    /// Seconds the compute tier would need for the whole item (memory or arithmetic bound,
    /// whichever is slower), without its fixed cost.
    pub compute_whole_seconds: f64,
}

/// The share of an item of `bytes` (holding `elements` weights) that `tier` should compute in
/// place for a batch of `batch` activation rows, while the rest crosses a link of `link_bw`
/// bytes/s: both sides finish together, `(1 - f) * link = f * compute + sync`. Errors for
/// unusable numbers (non-positive bandwidths, NaN).
pub fn hybrid_split(
    bytes: u64,
    elements: u64,
    batch: usize,
    link_bw: f64,
    tier: &ComputeTier,
) -> Result<HybridSplit, PlanError> {
    tier.check()?;
    if !(link_bw.is_finite() && link_bw > 0.0) {
        return Err(PlanError::InvalidTier {
            tier: 0,
            name: "link".into(),
            reason: format!("link bandwidth {link_bw} is not a positive number of bytes/s"),
        });
    }
    let link = bytes as f64 / link_bw;
    let memory = bytes as f64 / tier.bandwidth;
    let arithmetic = batch.max(1) as f64 * elements as f64 / tier.macs_per_s;
    let compute = memory.max(arithmetic);
    let f = if compute + link > 0.0 {
        ((link - tier.sync_seconds) / (compute + link)).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (f, seconds) = if f > 0.0 && (1.0 - f) * link < link {
        (f, (1.0 - f) * link)
    } else {
        (0.0, link)
    };
    Ok(HybridSplit {
        compute_fraction: f,
        seconds,
        link_only_seconds: link,
        compute_whole_seconds: compute,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_finish_together() {
        let cpu = ComputeTier::new("cpu", 66.7e9, 1e13, 30e-6);
        let s = hybrid_split(530_000_000, 1_000_000_000, 1, 50e9, &cpu).unwrap();
        let link_part = (1.0 - s.compute_fraction) * 530e6 / 50e9;
        let cpu_part = s.compute_fraction * s.compute_whole_seconds + 30e-6;
        assert!(
            (link_part - cpu_part).abs() < 1e-12,
            "{link_part} vs {cpu_part}"
        );
        assert!((s.seconds - link_part).abs() < 1e-15);
        // Without fixed cost the split is the bandwidth ratio.
        let free = ComputeTier::new("cpu", 66.7e9, 1e13, 0.0);
        let s = hybrid_split(530_000_000, 1_000_000_000, 1, 50e9, &free).unwrap();
        assert!((s.compute_fraction - 66.7 / 116.7).abs() < 1e-12);
    }

    #[test]
    fn a_slow_or_arithmetic_bound_cpu_takes_nothing() {
        // Fixed cost above the link time: no share.
        let slow = ComputeTier::new("cpu", 1e9, 1e12, 1.0);
        let s = hybrid_split(1_000_000, 2_000_000, 1, 50e9, &slow).unwrap();
        assert_eq!(s.compute_fraction, 0.0);
        assert_eq!(s.seconds, s.link_only_seconds);
        // A batch of 512 rows: the CPU is arithmetic-bound and its share shrinks toward 0.
        let cpu = ComputeTier::new("cpu", 66.7e9, 2e12, 30e-6);
        let b1 = hybrid_split(530_000_000, 1_000_000_000, 1, 50e9, &cpu).unwrap();
        let b512 = hybrid_split(530_000_000, 1_000_000_000, 512, 50e9, &cpu).unwrap();
        assert!(
            b512.compute_fraction < b1.compute_fraction / 10.0,
            "{b512:?}"
        );
        assert!(b512.seconds <= b512.link_only_seconds);
    }

    #[test]
    fn unusable_numbers_are_typed_errors() {
        let ok = ComputeTier::new("cpu", 1e9, 1e12, 0.0);
        assert!(hybrid_split(1, 1, 1, f64::NAN, &ok).is_err());
        assert!(hybrid_split(1, 1, 1, 0.0, &ok).is_err());
        for bad in [
            ComputeTier::new("cpu", 0.0, 1e12, 0.0),
            ComputeTier::new("cpu", 1e9, f64::INFINITY, 0.0),
            ComputeTier::new("cpu", 1e9, 1e12, -1.0),
        ] {
            assert!(matches!(
                hybrid_split(1, 1, 1, 1e9, &bad),
                Err(PlanError::InvalidTier { .. })
            ));
        }
        // An empty item costs nothing either way.
        let s = hybrid_split(0, 0, 1, 1e9, &ok).unwrap();
        assert_eq!((s.compute_fraction, s.seconds), (0.0, 0.0));
    }
}
