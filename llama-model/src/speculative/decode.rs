//! The self-speculative decoding loop over the CPU reference backend.

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::cpu::{ForwardError, Model};
use crate::skip::{LayerPlan, Logits, Runner};

use super::adaptive::{AdaptiveConfig, AdaptiveK};
use super::sampling::{accept_or_resample, argmax, probabilities, sample_index, Verdict};

/// Settings of [`SelfSpeculative`].
#[derive(Debug, Clone, PartialEq)]
pub struct SpecConfig {
    /// Layers of the draft: the first `draft_layers` layers of the model (all of them with a
    /// non-empty `draft_skip` gives a "skip the middle" draft).
    pub draft_layers: usize,
    /// Layers (below `draft_layers`) the draft also skips.
    pub draft_skip: Vec<usize>,
    /// Draft tokens per round (the starting value when adaptive).
    pub k: usize,
    /// Adapt K to the running acceptance rate.
    pub adaptive: Option<AdaptiveConfig>,
    /// Sampling temperature; `<= 0` is greedy (then the output equals plain greedy decoding).
    pub temperature: f32,
    /// Seed of the sampling random generator.
    pub seed: u64,
    /// Most positions a sequence holds (0: the model's context length).
    pub max_context: usize,
}

impl Default for SpecConfig {
    fn default() -> Self {
        SpecConfig {
            draft_layers: 1,
            draft_skip: Vec::new(),
            k: 4,
            adaptive: None,
            temperature: 0.0,
            seed: 0,
            max_context: 0,
        }
    }
}

/// Counters of a speculative run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpecStats {
    /// Full-model (verify) passes, the prompt pass excluded.
    pub verify_passes: usize,
    /// Draft tokens proposed.
    pub drafted: usize,
    /// Draft tokens accepted.
    pub accepted: usize,
    /// Tokens produced by verify passes (accepted drafts plus one per pass).
    pub generated: usize,
    /// Draft forward steps (one token through the draft layers each).
    pub draft_steps: usize,
}

impl SpecStats {
    /// Accepted over drafted draft tokens (0 when nothing was drafted).
    pub fn acceptance_rate(&self) -> f64 {
        if self.drafted == 0 {
            0.0
        } else {
            self.accepted as f64 / self.drafted as f64
        }
    }

    /// Tokens per verify pass: how many tokens each crossing of the streamed layers yields
    /// (1.0 is plain decoding).
    pub fn tokens_per_verify(&self) -> f64 {
        if self.verify_passes == 0 {
            0.0
        } else {
            self.generated as f64 / self.verify_passes as f64
        }
    }
}

/// Self-speculative decoding: the first layers of a model draft, the whole model verifies.
///
/// The draft and the target each keep their own KV cache (the draft's holds only its layers).
/// A round drafts K tokens one at a time, then runs the full model once over the last
/// accepted token plus the K drafts; the longest agreeing prefix is kept plus one token from
/// the target (the correction, or a bonus token when every draft agreed), and both caches
/// are truncated to the kept positions.
pub struct SelfSpeculative<'m> {
    target: Runner<'m>,
    draft: Runner<'m>,
    config: SpecConfig,
    adaptive: Option<AdaptiveK>,
    rng: StdRng,
    stats: SpecStats,
    vocab: usize,
}

impl std::fmt::Debug for SelfSpeculative<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfSpeculative")
            .field("config", &self.config)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<'m> SelfSpeculative<'m> {
    /// A decoder over `model`; fails if the draft would be empty or the whole model.
    pub fn new(model: &'m Model, config: SpecConfig) -> Result<SelfSpeculative<'m>, ForwardError> {
        let n = model.config().n_layers;
        if config.draft_layers == 0 || config.draft_layers > n {
            return Err(ForwardError::Batch(format!(
                "draft layers must be between 1 and {n} (the model's layer count), not {}",
                config.draft_layers
            )));
        }
        let draft_plan = LayerPlan::prefix(n, config.draft_layers).without(&config.draft_skip);
        if draft_plan.n_running() == 0 {
            return Err(ForwardError::Batch(
                "the draft skips all of its layers".into(),
            ));
        }
        let target = Runner::new(model, LayerPlan::full(n), config.max_context)?;
        let draft = Runner::new(model, draft_plan, config.max_context)?;
        Ok(SelfSpeculative {
            target,
            draft,
            adaptive: config.adaptive.map(AdaptiveK::new),
            rng: StdRng::seed_from_u64(config.seed),
            stats: SpecStats::default(),
            vocab: model.config().vocab_size,
            config,
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> SpecStats {
        self.stats
    }

    /// The K the next round will draft.
    pub fn current_k(&self) -> usize {
        match &self.adaptive {
            Some(a) => a.best_k(),
            None => self.config.k,
        }
    }

    fn greedy(&self) -> bool {
        self.config.temperature.is_nan() || self.config.temperature <= 0.0
    }

    fn choose(&mut self, logits: &[f32]) -> u32 {
        if self.greedy() {
            argmax(logits)
        } else {
            sample_index(
                &probabilities(logits, self.config.temperature),
                &mut self.rng,
            ) as u32
        }
    }

    /// Generates up to `max_tokens` tokens after `prompt` (a fresh sequence), stopping after a
    /// token for which `stop` is true. `on_token` sees each token as it is decided.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        max_tokens: usize,
        stop: &dyn Fn(u32) -> bool,
        on_token: &mut dyn FnMut(u32),
    ) -> Result<Vec<u32>, ForwardError> {
        self.target.truncate(0);
        self.draft.truncate(0);
        let mut out = Vec::new();
        if max_tokens == 0 {
            return Ok(out);
        }
        let logits = self.target.feed(prompt, Logits::Last)?;
        let first = self.choose(&logits);
        out.push(first);
        on_token(first);
        if stop(first) {
            return Ok(out);
        }
        let mut seq = prompt.to_vec();
        seq.push(first);
        while out.len() < max_tokens {
            let remaining = max_tokens - out.len();
            let k = self.current_k().min(remaining - 1);
            let new = self.round(&seq, k)?;
            for t in new {
                out.push(t);
                seq.push(t);
                on_token(t);
                if stop(t) || out.len() >= max_tokens {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// One round after `seq` (whose last token is not yet in the target's cache): drafts `k`
    /// tokens, verifies them, returns the kept tokens (1..=k+1) and rolls back both caches.
    fn round(&mut self, seq: &[u32], k: usize) -> Result<Vec<u32>, ForwardError> {
        let base = seq.len() - 1; // position of the last token
        let last = seq[base];
        // --- Draft ---
        let mut drafts = Vec::with_capacity(k);
        let mut qs: Vec<Vec<f32>> = Vec::with_capacity(k);
        if k > 0 {
            let from = self.draft.n_past().min(base);
            self.draft.truncate(from);
            let mut q_logits = self.draft.feed(&seq[from..], Logits::Last)?;
            self.stats.draft_steps += 1;
            for j in 0..k {
                let q = probabilities(&q_logits, self.config.temperature);
                let d = if self.greedy() {
                    argmax(&q_logits)
                } else {
                    sample_index(&q, &mut self.rng) as u32
                };
                drafts.push(d);
                qs.push(q);
                if j + 1 < k {
                    q_logits = self.draft.feed(&[d], Logits::Last)?;
                    self.stats.draft_steps += 1;
                }
            }
        }
        // --- Verify: one full pass over the last token and the drafts ---
        let mut batch = Vec::with_capacity(k + 1);
        batch.push(last);
        batch.extend_from_slice(&drafts);
        let p_logits = self.target.feed(&batch, Logits::From(0))?;
        self.stats.verify_passes += 1;
        self.stats.drafted += k;
        let rows: Vec<&[f32]> = p_logits.chunks_exact(self.vocab).collect();
        let mut kept = Vec::with_capacity(k + 1);
        let mut rejected = false;
        for (j, &d) in drafts.iter().enumerate() {
            let row = rows.get(j).copied().unwrap_or(&[]);
            if self.greedy() {
                let t = argmax(row);
                if t == d {
                    kept.push(d);
                } else {
                    kept.push(t);
                    rejected = true;
                    break;
                }
            } else {
                let p = probabilities(row, self.config.temperature);
                match accept_or_resample(&p, &qs[j], d as usize, &mut self.rng) {
                    Verdict::Accept => kept.push(d),
                    Verdict::Reject(t) => {
                        kept.push(t as u32);
                        rejected = true;
                        break;
                    }
                }
            }
        }
        let accepted = if rejected { kept.len() - 1 } else { kept.len() };
        if !rejected {
            let row = rows.get(k).copied().unwrap_or(&[]);
            let bonus = self.choose(row);
            kept.push(bonus);
        }
        // Positions base..=base+accepted hold `last` and the accepted drafts.
        let keep = base + 1 + accepted;
        self.target.truncate(keep);
        self.draft.truncate(keep.min(self.draft.n_past()));
        self.stats.accepted += accepted;
        self.stats.generated += kept.len();
        if let Some(a) = &mut self.adaptive {
            a.observe(accepted, rejected);
        }
        Ok(kept)
    }
}
