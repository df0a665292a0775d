//! The streaming engine: the vramless crates composed into one runner of Llama GGUFs larger than
//! the device's memory.
//!
//! [`Engine::open`] reads the GGUF ([`layout`]), sets the budgets ([`budget`]), plans which layers
//! stay on the device, which stream from pinned RAM and which from storage with `tier-cache`
//! ([`plan`]; skipped layers get weight 0 and are never read), loads the resident and pinned
//! tiers, opens the data paths ([`sources`]: `slep-pipeline` sources, NVMe direct through
//! `nvme-direct`'s `ExtentReader`), and runs every token layer by layer: resident layers in place,
//! streamed ones from the pipeline's slots. Backends: the CPU reference ([`cpu`]) and CUDA
//! (`gpu`, feature `cuda`). [`stats`] measures what the plan predicted.

pub mod budget;
pub mod cli;
pub mod cpu;
pub mod error;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod layout;
pub mod options;
pub mod plan;
pub mod setup;
pub mod sources;
pub mod speculative;
pub mod stats;
mod text;

use std::path::Path;

use gguf::GgufFile;
use llama_model::config::LlamaConfig;
use slep_pipeline::Source;

pub use error::{EngineError, Result};
pub use options::{DataPath, Device, EngineOptions, Skip};
pub use plan::{Home, Plan};
pub use speculative::{SpecOptions, SpecRun};
pub use stats::EngineStats;

enum Backend {
    Cpu(Box<cpu::CpuEngine>),
    #[cfg(feature = "cuda")]
    Cuda(Box<gpu::GpuEngine>),
}

/// A model opened by the engine on one device, with one sequence's state.
pub struct Engine {
    backend: Backend,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

macro_rules! each {
    ($self:expr, $e:ident => $body:expr) => {
        match $self {
            Backend::Cpu($e) => $body,
            #[cfg(feature = "cuda")]
            Backend::Cuda($e) => $body,
        }
    };
}

impl Engine {
    /// Opens `path` on `opts.device`, plans the tiers, loads the resident and pinned tiers and
    /// opens the data paths. Prints the plan when `opts.verbose`.
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
        let backend = match opts.device {
            Device::Cpu => Backend::Cpu(Box::new(cpu::CpuEngine::open(path, opts, storage)?)),
            #[cfg(feature = "cuda")]
            Device::Cuda => Backend::Cuda(Box::new(gpu::GpuEngine::open(path, opts, storage)?)),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda => {
                return Err(EngineError::NoCuda(
                    "this program was built without the `cuda` feature".into(),
                ))
            }
        };
        Ok(Self { backend })
    }

    fn setup(&self) -> &setup::Setup {
        each!(&self.backend, e => e.setup())
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
        each!(&self.backend, e => e.stats())
    }

    /// Forgets the statistics.
    pub fn clear_stats(&mut self) {
        each!(&mut self.backend, e => e.stats_mut().clear())
    }

    /// Pinned host-to-device bandwidth measured at start (GB/s; CUDA only).
    pub fn h2d_gbps(&self) -> Option<f64> {
        match &self.backend {
            Backend::Cpu(_) => None,
            #[cfg(feature = "cuda")]
            Backend::Cuda(e) => Some(e.h2d_gbps()),
        }
    }

    /// Feeds tokens, returns the logits after the last.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        each!(&mut self.backend, e => e.prefill(tokens))
    }

    /// Feeds one token, returns the logits after it.
    pub fn decode(&mut self, token: u32) -> Result<Vec<f32>> {
        each!(&mut self.backend, e => e.decode(token))
    }

    /// Feeds tokens, returns the greedy next token (on the GPU only the id crosses the bus).
    pub fn prefill_argmax(&mut self, tokens: &[u32]) -> Result<u32> {
        match &mut self.backend {
            Backend::Cpu(e) => Ok(argmax(&e.prefill(tokens)?)),
            #[cfg(feature = "cuda")]
            Backend::Cuda(e) => e.prefill_argmax(tokens),
        }
    }

    /// Feeds one token, returns the greedy next token.
    pub fn decode_argmax(&mut self, token: u32) -> Result<u32> {
        match &mut self.backend {
            Backend::Cpu(e) => Ok(argmax(&e.decode(token)?)),
            #[cfg(feature = "cuda")]
            Backend::Cuda(e) => e.decode_argmax(token),
        }
    }

    /// Positions in the KV cache.
    pub fn n_past(&self) -> usize {
        each!(&self.backend, e => e.n_past())
    }

    /// Positions the KV cache holds.
    pub fn max_context(&self) -> usize {
        each!(&self.backend, e => e.max_context())
    }

    /// Forgets the sequence.
    pub fn reset(&mut self) {
        each!(&mut self.backend, e => e.reset())
    }

    /// Rolls back to the first `n` positions.
    pub fn truncate(&mut self, n: usize) {
        each!(&mut self.backend, e => e.truncate(n))
    }

    /// Running layers of the self-speculative draft (0: opened without one).
    pub fn draft_layers(&self) -> usize {
        self.setup().draft.len()
    }

    /// Positions in the draft's KV cache.
    pub fn draft_n_past(&self) -> usize {
        each!(&self.backend, e => e.draft_n_past())
    }

    /// Rolls the draft's cache back to its first `n` positions.
    pub fn draft_truncate(&mut self, n: usize) {
        each!(&mut self.backend, e => e.draft_truncate(n))
    }

    /// Feeds `tokens` through the draft layers (into the draft's own cache); the logits after
    /// the last.
    pub fn draft_feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        each!(&mut self.backend, e => e.draft_feed(tokens))
    }

    /// Feeds `tokens` through the draft layers; the draft's greedy next token.
    pub fn draft_argmax(&mut self, tokens: &[u32]) -> Result<u32> {
        match &mut self.backend {
            Backend::Cpu(e) => Ok(argmax(&e.draft_feed(tokens)?)),
            #[cfg(feature = "cuda")]
            Backend::Cuda(e) => e.draft_feed_argmax(tokens),
        }
    }

    /// One full-model pass over `tokens` (on CUDA batched: each streamed layer crosses the bus
    /// once): the logits after every token, `tokens.len()` rows of the vocabulary. The
    /// positions stay in the cache (roll back with [`Engine::truncate`]).
    pub fn verify_logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        each!(&mut self.backend, e => e.verify(tokens))
    }

    /// As [`Engine::verify_logits`], returning the greedy next token after every token.
    pub fn verify_argmax(&mut self, tokens: &[u32]) -> Result<Vec<u32>> {
        match &mut self.backend {
            Backend::Cpu(e) => {
                let l = e.verify(tokens)?;
                let vocab = (l.len() / tokens.len().max(1)).max(1);
                Ok(l.chunks_exact(vocab).map(argmax).collect())
            }
            #[cfg(feature = "cuda")]
            Backend::Cuda(e) => e.verify_argmax(tokens),
        }
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
