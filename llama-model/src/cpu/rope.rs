//! Rotary position embedding as llama.cpp applies it to GGUF Llama tensors.
//!
//! The GGUF converter permutes the Q and K projection rows so that each rotation pair is two
//! ADJACENT elements `(2i, 2i + 1)` of a head ("normal" rope mode). Pair `i` turns by the angle
//! `pos * base^(-2i / rope_dim) / factor_i`, where the optional factors are Llama 3.1's rope
//! scaling (`rope_freqs.weight`). Elements past `rope_dim` are left as they are.

use crate::config::LlamaConfig;

/// The per-pair angular frequencies of one model.
#[derive(Debug, Clone)]
pub struct RopeFreqs {
    /// `base^(-2i/rope_dim) / factor_i` for each pair `i < rope_dim / 2`.
    pub inv_freq: Vec<f64>,
    /// Size of one head.
    pub head_dim: usize,
    /// `base^(-2 / rope_dim)` in f32, the ratio between consecutive pair frequencies.
    theta_scale: f32,
    /// Llama 3.1 frequency factors (empty: all 1).
    factors: Vec<f32>,
}

impl RopeFreqs {
    /// The frequencies of `c` (with its rope scaling factors, if any).
    pub fn new(c: &LlamaConfig) -> RopeFreqs {
        let half = c.rope_dim / 2;
        let inv_freq = (0..half)
            .map(|i| {
                let f = f64::from(c.rope_base).powf(-2.0 * i as f64 / c.rope_dim as f64);
                let factor = c
                    .rope_freq_factors
                    .as_ref()
                    .and_then(|v| v.get(i))
                    .map_or(1.0, |v| f64::from(*v));
                f / factor
            })
            .collect();
        RopeFreqs {
            inv_freq,
            head_dim: c.head_dim,
            theta_scale: c.rope_base.powf(-2.0 / c.rope_dim as f32),
            factors: c.rope_freq_factors.clone().unwrap_or_default(),
        }
    }

    /// Rotates every head of `x` (a whole number of heads of one token) for position `pos`.
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        let hd = self.head_dim.max(1);
        // llama.cpp's arithmetic (all f32): the angle of pair i is `theta_i / factor_i` with
        // `theta_0 = pos` and `theta_{i+1} = theta_i * base^(-2/rope_dim)`.
        let mut theta = pos as f32;
        for i in 0..self.inv_freq.len() {
            let ff = self.factors.get(i).copied().unwrap_or(1.0);
            let t = theta / ff;
            theta *= self.theta_scale;
            let (sin, cos) = (t.sin(), t.cos());
            for head in x.chunks_exact_mut(hd) {
                let (a, b) = (head[2 * i], head[2 * i + 1]);
                // llama.cpp's `x0*cos - x1*sin` and `x0*sin + x1*cos`, as GCC compiles them
                // (-O3, GNU C++ mode: floating-point contraction on): the product with `x0`
                // fused into the add, the other one rounded first.
                head[2 * i] = a.mul_add(cos, -(b * sin));
                head[2 * i + 1] = a.mul_add(sin, b * cos);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rope_dim: usize, head_dim: usize, factors: Option<Vec<f32>>) -> LlamaConfig {
        LlamaConfig {
            n_layers: 1,
            dim: head_dim * 2,
            ffn_dim: 8,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim,
            rope_dim,
            rope_base: 10000.0,
            rope_freq_factors: factors,
            rms_eps: 1e-5,
            context_length: 16,
            vocab_size: 4,
            tied_output: true,
        }
    }

    #[test]
    fn pairs_are_adjacent_and_turn_by_the_textbook_angle() {
        let r = RopeFreqs::new(&cfg(4, 6, None));
        // Head 0: pair 0 = (1, 0), pair 1 = (0, 1), tail untouched; head 1 all ones.
        let mut x = vec![1.0, 0.0, 0.0, 1.0, 5.0, 6.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        r.apply(&mut x, 3);
        let a0 = 3.0f64; // pair 0: 10000^0 = 1
        let a1 = 3.0f64 * 10000f64.powf(-0.5); // pair 1: 10000^(-2/4)
        assert!((x[0] as f64 - a0.cos()).abs() < 1e-6);
        assert!((x[1] as f64 - a0.sin()).abs() < 1e-6);
        assert!((x[2] as f64 + a1.sin()).abs() < 1e-6);
        assert!((x[3] as f64 - a1.cos()).abs() < 1e-6);
        assert_eq!((x[4], x[5]), (5.0, 6.0));
        assert!((x[6] as f64 - (a0.cos() - a0.sin())).abs() < 1e-6);
        assert_eq!((x[10], x[11]), (1.0, 1.0));
    }

    #[test]
    fn freq_factors_divide_the_frequency() {
        let r = RopeFreqs::new(&cfg(4, 4, Some(vec![1.0, 8.0])));
        assert!((r.inv_freq[1] - 0.01 / 8.0).abs() < 1e-12);
        assert_eq!(r.inv_freq[0], 1.0);
    }

    #[test]
    fn position_zero_is_identity() {
        let r = RopeFreqs::new(&cfg(4, 4, None));
        let mut x = vec![0.3, -0.2, 0.9, 0.1, 1.0, 2.0, 3.0, 4.0];
        let orig = x.clone();
        r.apply(&mut x, 0);
        assert_eq!(x, orig);
    }
}
