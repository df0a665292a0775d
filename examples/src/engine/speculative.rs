//! Self-speculative decoding in the streaming engine.
//!
//! The draft is the model's first D layers (the plan pins them to the device; opened with
//! [`super::EngineOptions::draft_layers`]) plus the final norm and LM head, with its own KV
//! cache. A round drafts K tokens one at a time, then runs ONE pass of the full model over the
//! last kept token and the K drafts (on CUDA a batched pass: every streamed layer crosses the
//! bus once for K+1 positions). The longest agreeing prefix is kept plus one token of the full
//! model, and both caches are truncated to the kept positions.
//!
//! Greedy rounds give exactly the tokens of plain greedy decoding whenever the verify pass
//! computes the same logits as single-token passes (the CPU backend does). Sampling rounds use
//! llama-model's speculative acceptance rule ([`accept_or_resample`]), so tokens follow the
//! full model's `softmax(logits / temperature)`. K adapts to the running acceptance rate with
//! llama-model's [`AdaptiveK`].

use std::time::{Duration, Instant};

use llama_model::speculative::{
    accept_or_resample, probabilities, sample_index, AdaptiveConfig, AdaptiveK, SpecStats, Verdict,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::error::{EngineError, Result};
use super::{argmax, Engine};

/// Settings of [`Engine::speculate`].
#[derive(Debug, Clone, PartialEq)]
pub struct SpecOptions {
    /// Draft tokens per round (the largest K when adaptive).
    pub k: usize,
    /// Adapt K (between `k_min` and `k_max`) to the running acceptance rate.
    pub adaptive: Option<AdaptiveConfig>,
    /// Sampling temperature; `<= 0` is greedy.
    pub temperature: f32,
    /// Seed of the sampling random generator.
    pub seed: u64,
}

impl Default for SpecOptions {
    fn default() -> Self {
        Self {
            k: 4,
            adaptive: None,
            temperature: 0.0,
            seed: 0,
        }
    }
}

/// What a speculative run produced and measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecRun {
    /// The generated tokens.
    pub tokens: Vec<u32>,
    /// Counters (verify passes, drafted, accepted, generated, draft steps; the prompt pass
    /// and its first token are not counted).
    pub stats: SpecStats,
    /// K of every round, in order.
    pub ks: Vec<usize>,
    /// Seconds spent drafting.
    pub draft_time: Duration,
    /// Seconds spent in verify passes.
    pub verify_time: Duration,
}

impl SpecRun {
    /// Tokens per streamed (full-model) pass after the prompt: plain decoding gives 1.
    pub fn tokens_per_pass(&self) -> f64 {
        self.stats.tokens_per_verify()
    }

    /// The statistics as one line of text.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        format!(
            "speculative: {} tokens after the first in {} verify passes ({:.2} tokens per streamed pass); drafted {}, accepted {} (acceptance {:.3}); {} draft steps; draft {:.3} s, verify {:.3} s",
            s.generated,
            s.verify_passes,
            self.tokens_per_pass(),
            s.drafted,
            s.accepted,
            s.acceptance_rate(),
            s.draft_steps,
            self.draft_time.as_secs_f64(),
            self.verify_time.as_secs_f64()
        )
    }
}

struct Round<'a> {
    opts: &'a SpecOptions,
    rng: StdRng,
}

impl Round<'_> {
    fn greedy(&self) -> bool {
        self.opts.temperature.is_nan() || self.opts.temperature <= 0.0
    }

    fn choose(&mut self, logits: &[f32]) -> u32 {
        if self.greedy() {
            argmax(logits)
        } else {
            sample_index(&probabilities(logits, self.opts.temperature), &mut self.rng) as u32
        }
    }
}

impl Engine {
    /// Self-speculative generation of up to `n` tokens after `prompt`, from a fresh sequence
    /// (the engine is reset first). Needs an engine opened with `draft_layers > 0`.
    pub fn speculate(&mut self, prompt: &[u32], n: usize, opts: &SpecOptions) -> Result<SpecRun> {
        if self.draft_layers() == 0 {
            return Err(EngineError::Usage(
                "speculative decoding needs draft layers: open the engine with some (EngineOptions::draft_layers)"
                    .into(),
            ));
        }
        if prompt.is_empty() {
            return Err(EngineError::Usage("no prompt tokens".into()));
        }
        self.reset();
        let mut run = SpecRun::default();
        if n == 0 {
            return Ok(run);
        }
        let mut r = Round {
            opts,
            rng: StdRng::seed_from_u64(opts.seed),
        };
        let first = if r.greedy() {
            self.prefill_argmax(prompt)?
        } else {
            let l = self.prefill(prompt)?;
            r.choose(&l)
        };
        run.tokens.push(first);
        let mut seq = prompt.to_vec();
        seq.push(first);
        let mut adaptive = opts.adaptive.map(AdaptiveK::new);
        while run.tokens.len() < n {
            let remaining = n - run.tokens.len();
            let want = adaptive.as_ref().map_or(opts.k, AdaptiveK::best_k);
            let k = want.min(remaining - 1);
            let (kept, accepted, rejected) = self.round(&seq, k, &mut r, &mut run)?;
            run.ks.push(k);
            run.stats.drafted += k;
            run.stats.accepted += accepted;
            run.stats.generated += kept.len();
            run.stats.verify_passes += 1;
            if let Some(a) = &mut adaptive {
                a.observe(accepted, rejected);
            }
            for t in kept {
                if run.tokens.len() >= n {
                    break;
                }
                run.tokens.push(t);
                seq.push(t);
            }
        }
        Ok(run)
    }

    /// One round after `seq` (its last token not yet in the full model's cache): drafts `k`
    /// tokens, verifies them in one pass, rolls both caches back to the kept positions.
    /// Returns the kept tokens, the accepted draft count and whether a draft was rejected.
    fn round(
        &mut self,
        seq: &[u32],
        k: usize,
        r: &mut Round<'_>,
        run: &mut SpecRun,
    ) -> Result<(Vec<u32>, usize, bool)> {
        let base = seq.len() - 1;
        if self.n_past() != base {
            return Err(EngineError::Compute(format!(
                "speculative round: the cache holds {} positions, expected {base}",
                self.n_past()
            )));
        }
        // Draft.
        let t0 = Instant::now();
        let mut drafts = Vec::with_capacity(k);
        let mut qs: Vec<Vec<f32>> = Vec::new();
        if k > 0 {
            let from = self.draft_n_past().min(base);
            self.draft_truncate(from);
            let mut feed: Vec<u32> = seq[from..].to_vec();
            for j in 0..k {
                let d = if r.greedy() {
                    self.draft_argmax(&feed)?
                } else {
                    let q = probabilities(&self.draft_feed(&feed)?, r.opts.temperature);
                    let d = sample_index(&q, &mut r.rng) as u32;
                    qs.push(q);
                    d
                };
                run.stats.draft_steps += 1;
                drafts.push(d);
                if j + 1 < k {
                    feed = vec![d];
                }
            }
        }
        run.draft_time += t0.elapsed();
        // Verify: one pass over the last token and the drafts.
        let t1 = Instant::now();
        let mut batch = Vec::with_capacity(k + 1);
        batch.push(seq[base]);
        batch.extend_from_slice(&drafts);
        let mut kept = Vec::with_capacity(k + 1);
        let mut rejected = false;
        if r.greedy() {
            let g = self.verify_argmax(&batch)?;
            for (j, &d) in drafts.iter().enumerate() {
                let t = g.get(j).copied().unwrap_or(0);
                kept.push(t);
                if t != d {
                    rejected = true;
                    break;
                }
            }
            if !rejected {
                kept.push(g.get(k).copied().unwrap_or(0));
            }
        } else {
            let logits = self.verify_logits(&batch)?;
            let vocab = logits.len() / batch.len();
            let rows: Vec<&[f32]> = logits.chunks_exact(vocab.max(1)).collect();
            for (j, &d) in drafts.iter().enumerate() {
                let p = probabilities(rows.get(j).copied().unwrap_or(&[]), r.opts.temperature);
                match accept_or_resample(&p, &qs[j], d as usize, &mut r.rng) {
                    Verdict::Accept => kept.push(d),
                    Verdict::Reject(t) => {
                        kept.push(t as u32);
                        rejected = true;
                        break;
                    }
                }
            }
            if !rejected {
                let row = rows.get(k).copied().unwrap_or(&[]);
                kept.push(r.choose(row));
            }
        }
        run.verify_time += t1.elapsed();
        let accepted = kept.len().saturating_sub(1);
        // Positions base..=base+accepted hold the last token and the accepted drafts.
        let keep = base + 1 + accepted;
        self.truncate(keep);
        let d = self.draft_n_past().min(keep);
        self.draft_truncate(d);
        Ok((kept, accepted, rejected))
    }
}
