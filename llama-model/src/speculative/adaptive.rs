//! Choosing the draft length K from the running acceptance rate.
//!
//! With per-token acceptance probability `a`, a round drafting `k` tokens yields on average
//! `(1 - a^(k+1)) / (1 - a)` tokens (the accepted prefix plus the one the verify pass always
//! gives). Its cost, in verify passes, is `1 + k * draft_cost + k * verify_cost_per_token`.
//! The controller picks the `k` in `[k_min, k_max]` maximizing tokens per cost, with `a`
//! estimated from recent rounds.

/// Settings of [`AdaptiveK`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveConfig {
    /// Smallest K (0 means plain decoding is allowed).
    pub k_min: usize,
    /// Largest K.
    pub k_max: usize,
    /// Cost of one draft token relative to one verify pass (e.g. draft layers / all layers
    /// when compute bound; near 0 when the verify pass streams weights over the bus).
    pub draft_cost: f64,
    /// Extra cost of each additional position in a verify pass, relative to one pass
    /// (0 while the bus dominates).
    pub verify_cost_per_token: f64,
    /// Weight of older rounds in the estimate (0..1; 0.9 forgets with a ~10 round memory).
    pub decay: f64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            k_min: 1,
            k_max: 8,
            draft_cost: 0.25,
            verify_cost_per_token: 0.0,
            decay: 0.9,
        }
    }
}

/// Running estimate of the per-token acceptance probability and the K it implies.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveK {
    config: AdaptiveConfig,
    accepted: f64,
    rejected: f64,
}

impl AdaptiveK {
    /// A controller with no observations (prior acceptance 0.5).
    pub fn new(config: AdaptiveConfig) -> AdaptiveK {
        AdaptiveK {
            config,
            accepted: 0.0,
            rejected: 0.0,
        }
    }

    /// Records one round: `accepted` draft tokens kept, and whether a draft token was
    /// rejected (false when every drafted token was kept).
    pub fn observe(&mut self, accepted: usize, rejected: bool) {
        let d = self.config.decay.clamp(0.0, 1.0);
        self.accepted = self.accepted * d + accepted as f64;
        self.rejected = self.rejected * d + f64::from(u8::from(rejected));
    }

    /// Estimated per-token acceptance probability (Laplace-smoothed: accepted tokens over
    /// accepted plus rejected, the maximum-likelihood estimate of a geometric run length).
    pub fn acceptance(&self) -> f64 {
        (self.accepted + 1.0) / (self.accepted + self.rejected + 2.0)
    }

    /// Expected tokens per round drafting `k` tokens at acceptance `a`.
    pub fn expected_tokens(a: f64, k: usize) -> f64 {
        if a >= 1.0 {
            return (k + 1) as f64;
        }
        let k1 = i32::try_from(k + 1).unwrap_or(i32::MAX);
        (1.0 - a.powi(k1)) / (1.0 - a)
    }

    /// The K maximizing expected tokens per unit cost at the current estimate.
    pub fn best_k(&self) -> usize {
        let a = self.acceptance();
        let c = &self.config;
        let mut best = (c.k_min, f64::NEG_INFINITY);
        for k in c.k_min..=c.k_max.max(c.k_min) {
            let cost = 1.0 + k as f64 * (c.draft_cost + c.verify_cost_per_token);
            let rate = AdaptiveK::expected_tokens(a, k) / cost;
            if rate > best.1 {
                best = (k, rate);
            }
        }
        best.0
    }
}
