//! Cutting a model's layers into contiguous ranges, one per GPU, for pipeline-parallel
//! streaming: each GPU keeps what its budget holds of its range resident and streams the rest
//! over its own link, all links at once.
//!
//! A range `r` on device `d` costs, per token,
//!
//! ```text
//! t(d, r) = max(0, bytes(r) - budget_d) / link_d  +  bytes(r) / compute_d
//! ```
//!
//! (the bytes that do not fit cross the device's link; every byte of the range is read once by
//! its kernels). With micro-batches in flight every device works at once, so a step takes as
//! long as the slowest device: [`plan_ranges`] minimises the largest `t(d, r)` over the cut
//! points, then the sum among the cuts with that bottleneck (so that a lightly loaded plan does
//! not waste links), exactly, by two dynamic programs over (devices, layers).

use std::ops::Range;

use crate::error::PlanError;

/// One GPU of a layer-range split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceShare {
    /// Device bytes for the range's resident layers (after its fixed part and slots).
    pub budget: u64,
    /// Host-to-device bandwidth of its link, bytes/s (measured, pinned).
    pub link_bw: f64,
    /// Rate at which its kernels read resident weights, bytes/s (e.g. its HBM bandwidth times
    /// the fraction the decode kernels reach).
    pub compute_bw: f64,
}

impl DeviceShare {
    /// Seconds per token for a range of `bytes` on this device.
    pub fn seconds(&self, bytes: u64) -> f64 {
        bytes.saturating_sub(self.budget) as f64 / self.link_bw + bytes as f64 / self.compute_bw
    }
}

/// The cut [`plan_ranges`] chose.
#[derive(Debug, Clone, PartialEq)]
pub struct RangePlan {
    /// Layer range of each device, in device order, contiguous and covering every layer.
    pub ranges: Vec<Range<usize>>,
    /// Seconds per token of each device on its range ([`DeviceShare::seconds`]).
    pub seconds: Vec<f64>,
    /// The slowest device's seconds: a step's time with every device busy.
    pub bottleneck_s: f64,
}

/// Cuts `layer_bytes` (each layer's bytes, in model order) into one non-empty contiguous range
/// per device of `devices`, in order, minimising the slowest device's time per token (ties: the
/// total time). Errors name what to change: no devices, a bandwidth that is not a positive
/// finite number, fewer layers than devices.
pub fn plan_ranges(layer_bytes: &[u64], devices: &[DeviceShare]) -> Result<RangePlan, PlanError> {
    if devices.is_empty() {
        return Err(PlanError::NoDevices);
    }
    for (i, d) in devices.iter().enumerate() {
        for (what, v) in [
            ("link bandwidth", d.link_bw),
            ("compute bandwidth", d.compute_bw),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(PlanError::InvalidDevice {
                    device: i,
                    reason: format!("{what} {v} bytes/s: give a positive measured figure"),
                });
            }
        }
    }
    let (n, g) = (layer_bytes.len(), devices.len());
    if n < g {
        return Err(PlanError::TooFewLayers {
            layers: n,
            devices: g,
        });
    }
    let mut prefix = vec![0u64; n + 1];
    for (i, &b) in layer_bytes.iter().enumerate() {
        prefix[i + 1] = prefix[i].saturating_add(b);
    }
    let cost = |d: usize, a: usize, b: usize| devices[d].seconds(prefix[b] - prefix[a]);
    // Two exact passes: the smallest bottleneck (min-max has optimal substructure), then the
    // smallest total among the cuts whose every range stays within it. `run(limit)` fills
    // best[k][i] with the best score of layers 0..i on devices 0..=k, from[k][i] with where
    // device k's range starts.
    let run = |score: &dyn Fn(f64, f64) -> f64, limit: f64| {
        let mut best = vec![vec![f64::INFINITY; n + 1]; g];
        let mut from = vec![vec![0usize; n + 1]; g];
        for (i, b) in best[0].iter_mut().enumerate().skip(1) {
            let c = cost(0, 0, i);
            if c <= limit {
                *b = score(0.0, c);
            }
        }
        for k in 1..g {
            for i in (k + 1)..=n {
                for j in k..i {
                    let before = best[k - 1][j];
                    let c = cost(k, j, i);
                    if !before.is_finite() || c > limit {
                        continue;
                    }
                    let cand = score(before, c);
                    if cand < best[k][i] {
                        best[k][i] = cand;
                        from[k][i] = j;
                    }
                }
            }
        }
        (best, from)
    };
    let (by_max, _) = run(&|before, c| before.max(c), f64::INFINITY);
    let bottleneck = by_max[g - 1][n];
    // Rounding: sums of the same terms in another order may differ in the last bits.
    let limit = bottleneck * (1.0 + 1e-12);
    let (_, from) = run(&|before, c| before + c, limit);
    let mut ranges = vec![0..0; g];
    let mut end = n;
    for k in (0..g).rev() {
        let start = if k == 0 { 0 } else { from[k][end] };
        ranges[k] = start..end;
        end = start;
    }
    let seconds: Vec<f64> = ranges
        .iter()
        .enumerate()
        .map(|(d, r)| cost(d, r.start, r.end))
        .collect();
    Ok(RangePlan {
        bottleneck_s: seconds.iter().copied().fold(0.0, f64::max),
        ranges,
        seconds,
    })
}
