//! Choosing the next token from logits: greedy, or random with temperature after repetition,
//! presence and frequency penalties, top-k, top-p and min-p filtering; seeded and deterministic.
//!
//! Order, as llama.cpp's default chain: penalties (repetition, then frequency and presence, all
//! over the last `repeat_last_n` history tokens, as llama.cpp's penalties sampler), top-k,
//! top-p, min-p (the three
//! filters judge the probabilities `softmax(logits)` before temperature), then temperature and
//! a draw from `softmax(logits / temperature)` over the surviving tokens.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Sampling settings. The default is greedy decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; `<= 0` (or NaN) means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `top_k` highest logits (0: off).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probabilities sum to at least `top_p`
    /// (1.0: off).
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the top probability (0: off).
    pub min_p: f32,
    /// Repetition penalty (1.0: off): a logit of a recently seen token is divided by it when
    /// positive and multiplied by it when negative.
    pub repeat_penalty: f32,
    /// How many of the most recent history tokens the penalties look at.
    pub repeat_last_n: usize,
    /// OpenAI's presence penalty (0: off): subtracted once from the logit of every token seen
    /// in the window.
    pub presence_penalty: f32,
    /// OpenAI's frequency penalty (0: off): subtracted from a token's logit once per time it
    /// occurs in the window.
    pub frequency_penalty: f32,
    /// Random seed.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }
}

/// Why no token could be sampled.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum SamplerError {
    /// The logits slice is empty.
    #[error("no logits to sample from")]
    Empty,
    /// Every logit is NaN or negative infinity.
    #[error("every logit is NaN or -inf: the model output is broken")]
    NoFiniteLogit,
}

/// A seeded token sampler.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplerConfig,
    rng: StdRng,
}

impl Sampler {
    /// A sampler with `config`, its random generator seeded with `config.seed`.
    pub fn new(config: SamplerConfig) -> Sampler {
        let rng = StdRng::seed_from_u64(config.seed);
        Sampler { config, rng }
    }

    /// The settings.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Picks the next token from `logits` (one per vocabulary entry); `history` holds the tokens
    /// so far (prompt and generated), used by the repetition penalty.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32, SamplerError> {
        if logits.is_empty() {
            return Err(SamplerError::Empty);
        }
        let c = &self.config;
        // Candidates (token, logit); NaN counts as impossible.
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, if l.is_nan() { f32::NEG_INFINITY } else { l }))
            .collect();
        let repeat = c.repeat_penalty != 1.0 && c.repeat_penalty > 0.0;
        let additive = c.presence_penalty != 0.0 || c.frequency_penalty != 0.0;
        if repeat || additive {
            let recent = &history[history.len().saturating_sub(c.repeat_last_n)..];
            let mut count = vec![0u32; cand.len()];
            for &t in recent {
                if let Some(n) = count.get_mut(t as usize) {
                    *n += 1;
                }
            }
            for (&n, (_, l)) in count.iter().zip(cand.iter_mut()) {
                if n == 0 {
                    continue;
                }
                if repeat {
                    *l = if *l > 0.0 {
                        *l / c.repeat_penalty
                    } else {
                        *l * c.repeat_penalty
                    };
                }
                if additive {
                    *l -= n as f32 * c.frequency_penalty + c.presence_penalty;
                }
            }
        }
        cand.retain(|(_, l)| *l > f32::NEG_INFINITY);
        if cand.is_empty() {
            return Err(SamplerError::NoFiniteLogit);
        }
        // Highest first; ties keep the lower token id first.
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if c.temperature.is_nan() || c.temperature <= 0.0 {
            return Ok(cand[0].0);
        }
        if c.top_k > 0 {
            cand.truncate(c.top_k);
        }
        if c.top_p < 1.0 || c.min_p > 0.0 {
            let probs = softmax(cand.iter().map(|x| x.1), 1.0);
            let mut keep = cand.len();
            if c.top_p < 1.0 {
                let mut cum = 0f64;
                for (i, p) in probs.iter().enumerate() {
                    cum += p;
                    if cum >= f64::from(c.top_p) {
                        keep = keep.min(i + 1);
                        break;
                    }
                }
            }
            if c.min_p > 0.0 {
                let threshold = probs[0] * f64::from(c.min_p);
                let n = probs.iter().take_while(|p| **p >= threshold).count();
                keep = keep.min(n.max(1));
            }
            cand.truncate(keep.max(1));
        }
        let probs = softmax(cand.iter().map(|x| x.1), c.temperature);
        let r: f64 = self.rng.gen::<f64>();
        let mut cum = 0f64;
        for (p, (tok, _)) in probs.iter().zip(&cand) {
            cum += p;
            if r < cum {
                return Ok(*tok);
            }
        }
        // Rounding left r just above the total: the last candidate.
        Ok(cand[cand.len() - 1].0)
    }
}

/// The greedy choice: the index of the largest logit, the lowest index among equal maxima.
/// A NaN never wins (it is skipped; `-inf` is an ordinary, smallest value). 0 when `logits` is
/// empty or all NaN. The one argmax of the CPU side (engine, sampler, speculative decoding,
/// tests); the CUDA `argmax` / `bt_argmax_rows` kernels follow the same rules.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in logits.iter().enumerate() {
        if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map_or(0, |(i, _)| i as u32)
}

/// Probabilities of `logits / temperature`, computed in f64 (sorted input: first is the max).
fn softmax(logits: impl Iterator<Item = f32> + Clone, temperature: f32) -> Vec<f64> {
    let t = f64::from(temperature);
    let max = logits
        .clone()
        .fold(f64::NEG_INFINITY, |a, b| a.max(f64::from(b)));
    let e: Vec<f64> = logits.map(|l| ((f64::from(l) - max) / t).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}
