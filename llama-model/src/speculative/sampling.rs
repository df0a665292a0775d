//! The speculative sampling acceptance rule (Leviathan et al. 2023; Chen et al. 2023).
//!
//! A draft token `x` drawn from the draft distribution `q` is kept with probability
//! `min(1, p(x) / q(x))`; when rejected, the replacement is drawn from
//! `normalize(max(0, p - q))`. The token that comes out is then distributed exactly as `p`.

use rand::Rng;

pub use crate::sampler::argmax;

/// `softmax(logits / temperature)` in f64 accumulation. A temperature `<= 0` (or NaN) gives
/// the one-hot distribution of the argmax (greedy).
pub fn probabilities(logits: &[f32], temperature: f32) -> Vec<f32> {
    let mut out = vec![0f32; logits.len()];
    if logits.is_empty() {
        return out;
    }
    if temperature.is_nan() || temperature <= 0.0 {
        out[argmax(logits) as usize] = 1.0;
        return out;
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let t = f64::from(temperature);
    let mut sum = 0f64;
    let e: Vec<f64> = logits
        .iter()
        .map(|&l| {
            let v = (f64::from(l - max) / t).exp();
            sum += v;
            v
        })
        .collect();
    for (o, v) in out.iter_mut().zip(e) {
        *o = (v / sum) as f32;
    }
    out
}

/// Draws an index with probability proportional to `weights` (non-negative, not all zero;
/// otherwise the argmax).
pub fn sample_index(weights: &[f32], rng: &mut impl Rng) -> usize {
    let total: f64 = weights.iter().map(|&w| f64::from(w.max(0.0))).sum();
    if total <= 0.0 || !total.is_finite() {
        return argmax(weights) as usize;
    }
    let mut u = rng.gen::<f64>() * total;
    let mut last = 0;
    for (i, &w) in weights.iter().enumerate() {
        let w = f64::from(w.max(0.0));
        if w > 0.0 {
            last = i;
            if u < w {
                return i;
            }
            u -= w;
        }
    }
    last
}

/// What happened to one draft token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The draft token is kept.
    Accept,
    /// The draft token is rejected; this token replaces it and ends the round.
    Reject(usize),
}

/// The acceptance rule for draft token `x` drawn from `q`, under target distribution `p`
/// (both probability vectors over the same vocabulary).
pub fn accept_or_resample(p: &[f32], q: &[f32], x: usize, rng: &mut impl Rng) -> Verdict {
    let px = f64::from(p.get(x).copied().unwrap_or(0.0));
    let qx = f64::from(q.get(x).copied().unwrap_or(0.0));
    // q(x) = 0 cannot happen for a token drawn from q; treat it as "accept iff p(x) > 0".
    let keep = if qx <= 0.0 {
        px > 0.0
    } else {
        px >= qx || rng.gen::<f64>() < px / qx
    };
    if keep {
        return Verdict::Accept;
    }
    let residual: Vec<f32> = p
        .iter()
        .zip(q.iter().chain(std::iter::repeat(&0.0)))
        .map(|(&a, &b)| (a - b).max(0.0))
        .collect();
    if residual.iter().any(|&r| r > 0.0) {
        Verdict::Reject(sample_index(&residual, rng))
    } else {
        // p <= q everywhere means p == q (both sum to 1): rejection has probability 0, so
        // this is only reachable through rounding; fall back to p itself.
        Verdict::Reject(sample_index(p, rng))
    }
}
