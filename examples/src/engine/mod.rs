//! The streaming engine: the vramless crates composed into one runner of Llama GGUFs larger than
//! the device's memory.
//!
//! [`Engine::open`] reads the GGUF ([`layout`]), sets the budgets ([`budget`]), plans which layers
//! stay on the device, which stream from pinned RAM and which from storage with `tier-cache`
//! ([`plan`]; skipped layers get weight 0 and are never read), loads the resident and pinned
//! tiers, opens the data paths ([`sources`]: `slep-pipeline` sources, NVMe direct through
//! `nvme-direct`'s `ExtentReader`), and runs every token layer by layer: resident layers in place,
//! streamed ones from the pipeline's slots. Backends: the CPU reference ([`cpu`]) and CUDA
//! (`gpu`, feature `cuda`), both behind one trait ([`backend::Backend`]). [`Engine`] runs one
//! sequence; [`BatchEngine`] ([`batch`]) many at once, one pass over the layers per step for all
//! of them. [`stats`] measures what the plan predicted.

pub mod backend;
pub mod batch;
pub mod budget;
pub mod cli;
pub mod cpu;
pub mod error;
#[cfg(feature = "cuda")]
pub mod gpu;
#[cfg(feature = "cuda")]
mod gpu_hybrid;
#[cfg(feature = "cuda")]
mod gpu_trace;
#[cfg(feature = "cuda")]
mod gpu_weights;
pub mod growth;
pub mod hybrid;
pub mod hybrid_batch;
pub mod layout;
pub mod options;
pub mod plan;
pub mod rebalance;
pub mod setup;
pub mod sources;
pub mod speculative;
pub mod stats;
mod text;
pub mod trace;

use std::path::Path;

use gguf::GgufFile;
use llama_model::config::LlamaConfig;
use slep_pipeline::Source;

use backend::{Backend, Head, HeadOut};

pub use batch::{BatchEngine, FinishReason, SeqEvent, SeqId, SeqRequest};
pub use error::{EngineError, Result};
pub use options::{DataPath, Device, EngineOptions, Hybrid, Skip};
pub use plan::{Home, Plan};
pub use speculative::{SpecOptions, SpecRun};
pub use stats::EngineStats;

/// Opens the backend for `opts.device`.
fn open_backend(
    path: &Path,
    opts: &EngineOptions,
    storage: Option<Box<dyn Source>>,
    batch: bool,
) -> Result<Box<dyn Backend>> {
    match opts.device {
        Device::Cpu => Ok(Box::new(cpu::CpuEngine::open(path, opts, storage, batch)?)),
        #[cfg(feature = "cuda")]
        Device::Cuda => Ok(Box::new(gpu::GpuEngine::open(path, opts, storage, batch)?)),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => Err(EngineError::NoCuda(
            "this program was built without the `cuda` feature".into(),
        )),
    }
}

/// A model opened by the engine on one device, with one sequence's state.
pub struct Engine {
    backend: Box<dyn Backend>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens `path` on `opts.device`, plans the tiers (with the KV cache of one sequence of
    /// `opts.ctx` positions), loads the resident and pinned tiers and opens the data paths.
    /// Prints the plan when `opts.verbose`.
    pub fn open(path: &Path, opts: &EngineOptions) -> Result<Self> {
        Self::open_with_storage(path, opts, None)
    }

    /// As [`Engine::open`], with the source that serves layers living on storage supplied by the
    /// caller (e.g. an NVMe reader over another controller).
    pub fn open_with_storage(
        path: &Path,
        opts: &EngineOptions,
        storage: Option<Box<dyn Source>>,
    ) -> Result<Self> {
        Ok(Self {
            backend: open_backend(path, opts, storage, false)?,
        })
    }

    fn setup(&self) -> &setup::Setup {
        self.backend.setup()
    }

    /// The GGUF (tokenizer metadata).
    pub fn gguf(&self) -> &GgufFile {
        &self.setup().file
    }

    /// The model's config.
    pub fn config(&self) -> &LlamaConfig {
        &self.setup().config
    }

    /// The tier plan.
    pub fn plan(&self) -> &Plan {
        &self.setup().plan
    }

    /// The budgets used (device, pinned RAM), bytes.
    pub fn budgets(&self) -> (u64, u64) {
        self.setup().budgets
    }

    /// Bytes of every layer.
    pub fn layer_bytes(&self) -> Vec<u64> {
        self.setup().layout.layers.iter().map(|l| l.bytes).collect()
    }

    /// Statistics so far.
    pub fn stats(&self) -> &EngineStats {
        self.backend.stats()
    }

    /// Forgets the statistics.
    pub fn clear_stats(&mut self) {
        self.backend.stats_mut().clear()
    }

    /// Pinned host-to-device bandwidth measured at start (GB/s; CUDA only).
    pub fn h2d_gbps(&self) -> Option<f64> {
        self.backend.h2d_gbps()
    }

    /// The timeline of every pass so far, when opened with [`EngineOptions::trace`] (write it
    /// with [`trace::write`]).
    pub fn trace(&self) -> Option<&std::sync::Arc<slep_pipeline::Trace>> {
        self.backend.trace()
    }

    /// The split of streamed layers between the bus and CPU threads, when
    /// [`EngineOptions::hybrid`] found one that pays (CUDA).
    pub fn hybrid(&self) -> Option<&hybrid::HybridPlan> {
        self.backend.hybrid()
    }

    /// Feeds `tokens` in passes of at most the backend's pass size, `head` on the last; all or
    /// nothing (on error the cache is rolled back to where it was).
    fn feed(&mut self, tokens: &[u32], head: Head) -> Result<HeadOut> {
        if tokens.is_empty() {
            return Err(EngineError::Usage("no tokens to feed".into()));
        }
        let start = self.backend.n_past();
        let chunk = self.backend.max_pass_tokens().max(1);
        let n = tokens.len().div_ceil(chunk);
        let mut out = HeadOut::None;
        for (c, part) in tokens.chunks(chunk).enumerate() {
            let h = if c + 1 == n { head } else { Head::None };
            match self.backend.pass(part, h) {
                Ok(o) => out = o,
                Err(e) => {
                    self.backend.truncate(start);
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// One pass over at most one pass's worth of tokens with every row's head.
    fn verify_with(&mut self, tokens: &[u32], head: Head) -> Result<HeadOut> {
        let max = self.backend.max_pass_tokens();
        if tokens.is_empty() || tokens.len() > max {
            return Err(EngineError::Usage(format!(
                "a verify pass takes 1 to {max} tokens, not {}",
                tokens.len()
            )));
        }
        self.feed(tokens, head)
    }

    fn vocab(&self) -> usize {
        self.setup().config.vocab_size
    }

    fn one_token(&self, out: HeadOut) -> Result<u32> {
        out.into_tokens(self.vocab())
            .last()
            .copied()
            .ok_or_else(|| EngineError::Compute("the pass returned no token".into()))
    }

    /// Feeds tokens, returns the logits after the last.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        Ok(self.feed(tokens, Head::Logits)?.into_logits())
    }

    /// Feeds one token, returns the logits after it.
    pub fn decode(&mut self, token: u32) -> Result<Vec<f32>> {
        self.prefill(&[token])
    }

    /// Feeds tokens, returns the greedy next token (on the GPU only the id crosses the bus).
    pub fn prefill_argmax(&mut self, tokens: &[u32]) -> Result<u32> {
        let out = self.feed(tokens, Head::Argmax)?;
        self.one_token(out)
    }

    /// Feeds one token, returns the greedy next token.
    pub fn decode_argmax(&mut self, token: u32) -> Result<u32> {
        self.prefill_argmax(&[token])
    }

    /// Positions in the KV cache.
    pub fn n_past(&self) -> usize {
        self.backend.n_past()
    }

    /// Positions the KV cache holds.
    pub fn max_context(&self) -> usize {
        self.backend.max_context()
    }

    /// Forgets the sequence.
    pub fn reset(&mut self) {
        self.backend.reset()
    }

    /// Rolls back to the first `n` positions.
    pub fn truncate(&mut self, n: usize) {
        self.backend.truncate(n)
    }

    /// Running layers of the self-speculative draft (0: opened without one).
    pub fn draft_layers(&self) -> usize {
        self.setup().draft.len()
    }

    /// Positions in the draft's KV cache.
    pub fn draft_n_past(&self) -> usize {
        self.backend.draft_n_past()
    }

    /// Rolls the draft's cache back to its first `n` positions.
    pub fn draft_truncate(&mut self, n: usize) {
        self.backend.draft_truncate(n)
    }

    /// Feeds `tokens` through the draft, all or nothing.
    fn draft_with(&mut self, tokens: &[u32], head: Head) -> Result<HeadOut> {
        if tokens.is_empty() {
            return Err(EngineError::Usage("no tokens to feed".into()));
        }
        let start = self.backend.draft_n_past();
        self.backend
            .draft_pass(tokens, head)
            .inspect_err(|_| self.backend.draft_truncate(start))
    }

    /// Feeds `tokens` through the draft layers (into the draft's own cache); the logits after
    /// the last.
    pub fn draft_feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        Ok(self.draft_with(tokens, Head::Logits)?.into_logits())
    }

    /// Feeds `tokens` through the draft layers; the draft's greedy next token.
    pub fn draft_argmax(&mut self, tokens: &[u32]) -> Result<u32> {
        let out = self.draft_with(tokens, Head::Argmax)?;
        self.one_token(out)
    }

    /// One full-model pass over `tokens` (on CUDA batched: each streamed layer crosses the bus
    /// once): the logits after every token, `tokens.len()` rows of the vocabulary. The
    /// positions stay in the cache (roll back with [`Engine::truncate`]).
    pub fn verify_logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        Ok(self.verify_with(tokens, Head::AllLogits)?.into_logits())
    }

    /// As [`Engine::verify_logits`], returning the greedy next token after every token.
    pub fn verify_argmax(&mut self, tokens: &[u32]) -> Result<Vec<u32>> {
        let v = self.vocab();
        Ok(self.verify_with(tokens, Head::AllArgmax)?.into_tokens(v))
    }

    /// Greedy generation: feeds `prompt`, then returns up to `n` tokens (stops at none).
    pub fn greedy(&mut self, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(n);
        if n == 0 {
            return Ok(out);
        }
        let mut next = self.prefill_argmax(prompt)?;
        out.push(next);
        while out.len() < n {
            next = self.decode_argmax(next)?;
            out.push(next);
        }
        Ok(out)
    }
}

/// The greedy choice (NaN never wins): llama-model's one argmax.
pub use llama_model::sampler::argmax;
