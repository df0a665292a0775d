//! The multi-sequence engine: many independent sequences through one streamed pass per step.
//!
//! [`BatchEngine::add`] queues a sequence (its prompt already tokenized, its sampling settings,
//! its limits); every [`BatchEngine::step`] makes one pass over the running layers for all held
//! sequences (resident layers in place, streamed layers from the pipeline once per step): one
//! decode token for each generating sequence plus at most one prompt chunk for each sequence
//! still prefilling, so a long prompt never stalls the others for more than one chunk. The step
//! returns what happened as [`SeqEvent`]s. Each sequence computes exactly what it computes alone
//! (its own KV, its own positions): greedy tokens equal the single-sequence [`super::Engine`]'s.

use std::collections::BTreeMap;
use std::path::Path;

use gguf::GgufFile;
use llama_model::config::LlamaConfig;
use llama_model::sampler::{Sampler, SamplerConfig};

use super::backend::{Backend, SeqRows};
use super::error::{EngineError, Result};
use super::growth::{GrowthStats, KvGrowth};
use super::options::EngineOptions;
use super::plan::{Home, Plan};
use super::stats::EngineStats;

/// Prompt tokens a joining sequence feeds per step, at most (the backend's pass size caps it).
pub const DEFAULT_PREFILL_CHUNK: usize = 256;

/// Identifies one sequence inside a [`BatchEngine`] (never reused within one engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub u64);

impl std::fmt::Display for SeqId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seq{}", self.0)
    }
}

/// What a new sequence needs.
#[derive(Debug, Clone)]
pub struct SeqRequest {
    /// The prompt, already tokenized (chat template applied by the caller); not empty.
    pub prompt: Vec<u32>,
    /// Sampling settings; temperature 0 is greedy (argmax, the lowest id on ties, NaN never
    /// wins).
    pub sampler: SamplerConfig,
    /// Tokens to generate at most (>= 1).
    pub max_new_tokens: usize,
    /// Tokens that end the sequence (e.g. EOS/EOT); a stop token is not reported as a token.
    pub stop_tokens: Vec<u32>,
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// It produced one of its stop tokens.
    Stop,
    /// It reached `max_new_tokens` or its context is full.
    Length,
    /// [`BatchEngine::cancel`] ended it.
    Cancelled,
}

/// What one step produced for one sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum SeqEvent {
    /// A new token (never a stop token).
    Token {
        /// The sequence.
        id: SeqId,
        /// The token.
        token: u32,
    },
    /// The sequence is done and its KV is freed.
    Finished {
        /// The sequence.
        id: SeqId,
        /// Why.
        reason: FinishReason,
        /// Its prompt's length.
        prompt_tokens: usize,
        /// Tokens it produced (reported as [`SeqEvent::Token`]).
        completion_tokens: usize,
    },
}

/// One held sequence.
struct Seq {
    slot: usize,
    prompt_len: usize,
    /// Prompt and generated tokens (the repetition penalty reads it).
    history: Vec<u32>,
    /// Tokens of `history` already in the KV cache.
    fed: usize,
    sampler: Sampler,
    /// Plain greedy (no penalty reads the history): argmax without the sampler's sort.
    greedy: bool,
    max_new: usize,
    stop: Vec<u32>,
    generated: usize,
    /// KV blocks reserved for its whole run (KV growth only; else 0).
    reserve: usize,
}

/// Many sequences through one model, one pass over the layers per step.
pub struct BatchEngine {
    backend: Box<dyn Backend>,
    seqs: BTreeMap<SeqId, Seq>,
    next_id: u64,
    chunk: usize,
    step_tokens: usize,
    cancelled: Vec<SeqEvent>,
    keep_logits: bool,
    step_logits: BTreeMap<SeqId, Vec<f32>>,
    /// KV growth's books (`opts.kv_growth`).
    growth: Option<KvGrowth>,
}

impl std::fmt::Debug for BatchEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchEngine")
            .field("active", &self.seqs.len())
            .field("max_seqs", &self.max_seqs())
            .finish_non_exhaustive()
    }
}

impl BatchEngine {
    /// Opens the model like [`super::Engine::open`]; `opts.max_seqs` sequences of `opts.ctx`
    /// positions size the KV pool, which the plan budgets together with the weights.
    pub fn open(path: &Path, opts: &EngineOptions) -> Result<Self> {
        Self::open_with_storage(path, opts, None)
    }

    /// As [`BatchEngine::open`], with the storage path's source supplied by the caller.
    pub fn open_with_storage(
        path: &Path,
        opts: &EngineOptions,
        storage: Option<Box<dyn slep_pipeline::Source>>,
    ) -> Result<Self> {
        if opts.max_seqs == 0 {
            return Err(EngineError::Usage(
                "the batch engine needs room for at least one sequence".into(),
            ));
        }
        let backend = super::open_backend(path, opts, storage, true)?;
        let chunk = DEFAULT_PREFILL_CHUNK.min(backend.max_pass_tokens());
        let step_tokens = backend_max_step(&*backend);
        let growth = if opts.kv_growth {
            Some(KvGrowth::new(&*backend)?.ok_or_else(|| {
                if backend.setup().plan.streaming {
                    super::backend::no_growth()
                } else {
                    EngineError::Usage(
                        "KV growth moves resident layers to streaming, but this plan keeps every layer resident and has no streaming slots: open without KV growth (the pool holds max_seqs sequences), or with a smaller device budget".into(),
                    )
                }
            })?)
        } else {
            None
        };
        Ok(Self {
            growth,
            backend,
            seqs: BTreeMap::new(),
            next_id: 0,
            chunk,
            step_tokens,
            cancelled: Vec::new(),
            keep_logits: false,
            step_logits: BTreeMap::new(),
        })
    }

    /// Prompt tokens a joining sequence feeds per step at most (default
    /// [`DEFAULT_PREFILL_CHUNK`]).
    pub fn prefill_chunk(&self) -> usize {
        self.chunk
    }

    /// Sets the prompt chunk per step (1 up to the backend's pass size).
    pub fn set_prefill_chunk(&mut self, n: usize) {
        self.chunk = n.clamp(1, self.backend.max_pass_tokens());
    }

    /// Tokens one step feeds at most over all sequences (decode tokens always run; prompt
    /// chunks share the rest). Default: the backend's pass size (512).
    pub fn step_tokens(&self) -> usize {
        self.step_tokens
    }

    /// Sets the step's token budget (at least 1).
    pub fn set_step_tokens(&mut self, n: usize) {
        self.step_tokens = n.max(1);
    }

    /// Keeps the logits each sequence sampled from in the last step (off by default), for
    /// [`BatchEngine::step_logits`].
    pub fn set_keep_logits(&mut self, on: bool) {
        self.keep_logits = on;
        self.step_logits.clear();
    }

    /// The logits each sequence sampled its token from in the last step (kept only after
    /// [`BatchEngine::set_keep_logits`]`(true)`; sequences that only fed a prompt chunk have
    /// none).
    pub fn step_logits(&self) -> &BTreeMap<SeqId, Vec<f32>> {
        &self.step_logits
    }

    /// Queues a sequence; it joins at the next step (its prompt prefilled in chunks inside the
    /// running steps). Errors: an empty prompt, a token outside the vocabulary, no tokens to
    /// generate, prompt + `max_new_tokens` beyond the per-sequence context, all `max_seqs`
    /// sequences held. With KV growth ([`EngineOptions::kv_growth`]) the sequence instead
    /// reserves the KV blocks of its whole run, and when the pool lacks them resident layers
    /// move off the device to make room (see [`super::growth`]); when even with no resident
    /// layer its KV does not fit, the typed error says so and nothing changes.
    pub fn add(&mut self, req: SeqRequest) -> Result<SeqId> {
        if req.prompt.is_empty() {
            return Err(EngineError::Sequence("the prompt has no tokens".into()));
        }
        if req.max_new_tokens == 0 {
            return Err(EngineError::Sequence(
                "max_new_tokens is 0: a sequence must generate at least one token".into(),
            ));
        }
        let vocab = self.config().vocab_size;
        if let Some(t) = req.prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(EngineError::Sequence(format!(
                "prompt token {t} is outside the vocabulary of {vocab}"
            )));
        }
        let ctx = self.max_context();
        if req.prompt.len() + req.max_new_tokens > ctx {
            return Err(EngineError::Sequence(format!(
                "the prompt's {} tokens plus {} new tokens exceed the context of {ctx} positions \
                 per sequence: shorten the prompt, ask for fewer tokens, or open the engine with \
                 a longer context",
                req.prompt.len(),
                req.max_new_tokens
            )));
        }
        let (held, max) = (self.seqs.len(), self.max_seqs());
        let reserve = match &mut self.growth {
            Some(g) => {
                let blocks = g.blocks_for(req.prompt.len() + req.max_new_tokens);
                g.ensure_slot(&mut *self.backend, held)?;
                g.reserve(&mut *self.backend, blocks)?;
                blocks
            }
            None if held >= max => {
                return Err(EngineError::Sequence(format!(
                    "all {max} sequences are in use: wait for one to finish, or open the engine \
                     with more sequences (or with KV growth)"
                )));
            }
            None => 0,
        };
        let slot = match self.backend.seq_alloc() {
            Ok(slot) => slot,
            Err(e) => {
                self.release(reserve);
                return Err(e);
            }
        };
        let id = SeqId(self.next_id);
        self.next_id += 1;
        self.seqs.insert(
            id,
            Seq {
                slot,
                prompt_len: req.prompt.len(),
                history: req.prompt,
                fed: 0,
                greedy: plain_greedy(&req.sampler),
                sampler: Sampler::new(req.sampler),
                max_new: req.max_new_tokens,
                stop: req.stop_tokens,
                generated: 0,
                reserve,
            },
        );
        Ok(id)
    }

    /// Cancels a sequence (running or not yet started) and frees its KV at once; the next step
    /// reports it as finished with [`FinishReason::Cancelled`]. Unknown id: no-op.
    pub fn cancel(&mut self, id: SeqId) {
        if let Some(s) = self.seqs.remove(&id) {
            self.backend.seq_free(s.slot);
            self.release(s.reserve);
            self.cancelled
                .push(finished(id, &s, FinishReason::Cancelled));
        }
    }

    /// One pass over the layers for every held sequence (the decode token of each generating
    /// one plus at most one prompt chunk of each joining one). Returns the events of this step
    /// (with nothing held: the cancellations since the last step, at once). On an error no
    /// sequence has advanced: the step can be retried or the sequences cancelled.
    pub fn step(&mut self) -> Result<Vec<SeqEvent>> {
        let mut events = std::mem::take(&mut self.cancelled);
        self.step_logits.clear();
        if self.seqs.is_empty() {
            return Ok(events);
        }
        let chunk = self.chunk;
        // Decode tokens first (one each), then prompt chunks in join order while the step's
        // token budget lasts: the step's activations stay bounded and a joining sequence
        // delays the others by at most one chunk.
        let decoding = self.seqs.values().filter(|s| s.fed >= s.prompt_len).count();
        let mut budget = self.step_tokens.saturating_sub(decoding);
        let mut plan: Vec<(SeqId, usize, usize, bool)> = Vec::with_capacity(self.seqs.len());
        for (&id, s) in &self.seqs {
            let end = if s.fed < s.prompt_len {
                let n = chunk.min(s.prompt_len - s.fed).min(budget);
                if n == 0 {
                    continue;
                }
                budget -= n;
                s.fed + n
            } else {
                s.history.len()
            };
            // Logits once the whole history is in the cache (the last prompt chunk, or a
            // decode token).
            plan.push((id, s.fed, end, end == s.history.len()));
        }
        if plan.is_empty() {
            return Ok(events);
        }
        let rows: Vec<SeqRows<'_>> = plan
            .iter()
            .map(|&(id, from, to, logits)| SeqRows {
                seq: self.seqs[&id].slot,
                tokens: &self.seqs[&id].history[from..to],
                logits,
            })
            .collect();
        let out = match self.backend.batch_pass(&rows) {
            Ok(o) => o,
            Err(e) => {
                for &(id, from, _, _) in &plan {
                    let slot = self.seqs[&id].slot;
                    self.backend.seq_truncate(slot, from);
                }
                self.cancelled = events;
                return Err(e);
            }
        };
        let ctx = self.max_context();
        for (&(id, _, to, _), logits) in plan.iter().zip(out) {
            let Some(s) = self.seqs.get_mut(&id) else {
                continue;
            };
            s.fed = to;
            let Some(logits) = logits else { continue };
            let token = if s.greedy {
                greedy_argmax(&logits)
            } else {
                s.sampler.sample(&logits, &s.history)
            }
            .map_err(|e| EngineError::Compute(format!("sampling {id}: {e}")))?;
            if self.keep_logits {
                self.step_logits.insert(id, logits);
            }
            let reason = if s.stop.contains(&token) {
                Some(FinishReason::Stop)
            } else {
                s.history.push(token);
                s.generated += 1;
                events.push(SeqEvent::Token { id, token });
                // The next step would feed this token at position `fed`.
                (s.generated >= s.max_new || s.fed >= ctx).then_some(FinishReason::Length)
            };
            if let Some(reason) = reason {
                if let Some(s) = self.seqs.remove(&id) {
                    self.backend.seq_free(s.slot);
                    self.release(s.reserve);
                    events.push(finished(id, &s, reason));
                }
            }
        }
        Ok(events)
    }

    /// A sequence's reserved blocks are given back (KV growth: the pool's free tail is trimmed
    /// and layers promoted into the room).
    fn release(&mut self, blocks: usize) {
        if let Some(g) = &mut self.growth {
            g.release(&mut *self.backend, blocks);
        }
    }

    /// Whether KV growth is on ([`EngineOptions::kv_growth`]).
    pub fn kv_growth(&self) -> bool {
        self.growth.is_some()
    }

    /// KV growth's layer moves so far (`None` without KV growth).
    pub fn growth_stats(&self) -> Option<GrowthStats> {
        self.growth.as_ref().map(KvGrowth::stats)
    }

    /// KV blocks the held sequences reserve (KV growth; 0 without it).
    pub fn kv_reserved(&self) -> usize {
        self.growth.as_ref().map_or(0, KvGrowth::reserved)
    }

    /// Every layer's home now: the plan's, until KV growth moves layers.
    pub fn homes(&self) -> Vec<Home> {
        self.backend.homes()
    }

    /// Sequences currently held (prefilling or generating).
    pub fn active(&self) -> usize {
        self.seqs.len()
    }

    /// Most sequences at once (`opts.max_seqs`; with KV growth, the planned number: more may
    /// be held).
    pub fn max_seqs(&self) -> usize {
        self.backend.setup().max_seqs
    }

    /// Per-sequence context limit (positions).
    pub fn max_context(&self) -> usize {
        self.backend.setup().ctx
    }

    /// KV pool: (blocks in use, blocks total, bytes per block).
    pub fn kv_usage(&self) -> (usize, usize, u64) {
        let u = self.backend.kv_usage();
        (u.used, u.total, u.bytes_per_block)
    }

    /// KV pool accounting with the positions per block.
    pub fn kv_pool(&self) -> super::backend::KvUsage {
        self.backend.kv_usage()
    }

    /// Positions a held sequence has in its KV cache (`None`: not held).
    pub fn seq_positions(&self, id: SeqId) -> Option<usize> {
        self.seqs.get(&id).map(|s| self.backend.seq_len(s.slot))
    }

    /// The GGUF (tokenizer metadata, `general.name`).
    pub fn gguf(&self) -> &GgufFile {
        &self.backend.setup().file
    }

    /// The model's config.
    pub fn config(&self) -> &LlamaConfig {
        &self.backend.setup().config
    }

    /// The tier plan.
    pub fn plan(&self) -> &Plan {
        &self.backend.setup().plan
    }

    /// The split of streamed layers between the bus and CPU threads, when
    /// [`EngineOptions::hybrid`](super::EngineOptions::hybrid) found one that pays (CUDA); its
    /// current share is that of the last step's size.
    pub fn hybrid(&self) -> Option<&super::hybrid::HybridPlan> {
        self.backend.hybrid()
    }

    /// Statistics so far (a pass is one step).
    pub fn stats(&self) -> &EngineStats {
        self.backend.stats()
    }

    /// The timeline of every step so far, when opened with [`EngineOptions::trace`].
    pub fn trace(&self) -> Option<&std::sync::Arc<slep_pipeline::Trace>> {
        self.backend.trace()
    }

    /// Forgets the statistics.
    pub fn clear_stats(&mut self) {
        self.backend.stats_mut().clear()
    }

    /// Pinned host-to-device bandwidth measured at start (GB/s; CUDA only).
    pub fn h2d_gbps(&self) -> Option<f64> {
        self.backend.h2d_gbps()
    }
}

fn backend_max_step(b: &dyn Backend) -> usize {
    b.max_pass_tokens().max(1)
}

fn finished(id: SeqId, s: &Seq, reason: FinishReason) -> SeqEvent {
    SeqEvent::Finished {
        id,
        reason,
        prompt_tokens: s.prompt_len,
        completion_tokens: s.generated,
    }
}

/// True when `c` is greedy with every penalty off (the other settings do not matter then).
fn plain_greedy(c: &SamplerConfig) -> bool {
    let greedy = c.temperature.is_nan() || c.temperature <= 0.0;
    let off = SamplerConfig {
        temperature: c.temperature,
        seed: c.seed,
        top_k: c.top_k,
        top_p: c.top_p,
        min_p: c.min_p,
        repeat_last_n: c.repeat_last_n,
        ..SamplerConfig::default()
    };
    greedy && *c == off
}

/// The largest logit's index, the lowest on ties; NaN never wins (as the sampler's greedy).
fn greedy_argmax(logits: &[f32]) -> std::result::Result<u32, llama_model::sampler::SamplerError> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in logits.iter().enumerate() {
        if x.is_nan() || x == f32::NEG_INFINITY {
            continue;
        }
        if best.map_or(true, |(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    match best {
        Some((i, _)) => Ok(i as u32),
        None if logits.is_empty() => Err(llama_model::sampler::SamplerError::Empty),
        None => Err(llama_model::sampler::SamplerError::NoFiniteLogit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_can_live_on_its_own_thread() {
        fn send<T: Send>() {}
        send::<BatchEngine>();
        send::<SeqEvent>();
        send::<SeqRequest>();
    }

    #[test]
    fn greedy_argmax_matches_the_samplers_greedy() {
        let cases: [&[f32]; 5] = [
            &[1.0, 3.0, 3.0, -2.0],
            &[f32::NAN, 0.5, 0.25],
            &[f32::NEG_INFINITY, -1.0],
            &[-5.0, -5.0],
            &[0.0, f32::INFINITY, 1.0],
        ];
        for l in cases {
            let mut s = Sampler::new(SamplerConfig::default());
            assert_eq!(greedy_argmax(l), s.sample(l, &[]), "{l:?}");
        }
        assert!(greedy_argmax(&[f32::NAN]).is_err());
        assert!(greedy_argmax(&[]).is_err());
    }

    #[test]
    fn only_penalty_free_greedy_takes_the_fast_path() {
        assert!(plain_greedy(&SamplerConfig::default()));
        let c = SamplerConfig {
            repeat_penalty: 1.1,
            ..SamplerConfig::default()
        };
        assert!(!plain_greedy(&c));
        let c = SamplerConfig {
            temperature: 0.7,
            ..SamplerConfig::default()
        };
        assert!(!plain_greedy(&c));
    }
}
