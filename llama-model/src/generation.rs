//! One text-generation interface over every backend: [`TextGenerator`] (prefill, decode, greedy
//! and sampled next tokens, rollback), implemented here by the CPU [`Model`](crate::cpu::Model)
//! and, with feature `cuda`, the resident `CudaModel`, and by engines built on this crate (the
//! vramless streaming engine). Programs drive any of them through `&mut dyn TextGenerator`.
//!
//! The constants that every backend's batching must agree on live here too.

use gguf::GgufFile;

use crate::config::LlamaConfig;
use crate::sampler::{argmax, Sampler};

/// Most tokens fed through the layers as one batch: longer prompts are prefilled in consecutive
/// batches of at most this many (bounds the scratch memory; larger batches gain little once
/// every matrix tile is full). A verify pass of speculative decoding takes at most this many.
/// llama.cpp's default micro-batch (`n_ubatch`), so long prompts meet the same attention kernels
/// as there.
pub const PREFILL_CHUNK: usize = 512;

/// Shortest prompt a CUDA backend prefills as a batch: on an H100 with a Llama-3.1-8B Q4_K_M one
/// batched layer pass costs about 3.5 one-token decode steps whatever its size up to 9 tokens
/// (docs/PERF.md), so 3 tokens are still faster one at a time.
pub const BATCHED_MIN_TOKENS: usize = 4;

/// The error of a [`TextGenerator`]: the backend's own typed error, boxed (downcast to it for
/// details; `source()` chains are kept).
pub type GenerateError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a generation loop needs of a model: one sequence's KV cache that grows with
/// [`prefill`](TextGenerator::prefill) and [`decode`](TextGenerator::decode) and shrinks with
/// [`truncate`](TextGenerator::truncate).
///
/// ```no_run
/// use llama_model::cpu::Model;
/// use llama_model::generation::TextGenerator;
///
/// fn greedy(m: &mut dyn TextGenerator, prompt: &[u32], n: usize) -> Result<Vec<u32>, llama_model::generation::GenerateError> {
///     let mut out = vec![m.prefill_argmax(prompt)?];
///     while out.len() < n {
///         let last = *out.last().unwrap();
///         out.push(m.decode_argmax(last)?);
///     }
///     Ok(out)
/// }
/// let mut model = Model::open("model.gguf")?;
/// let tokens = greedy(&mut model, &[1, 2, 3], 8)?;
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// ```
pub trait TextGenerator {
    /// The GGUF (metadata for the tokenizer and chat template).
    fn gguf(&self) -> &GgufFile;

    /// The model's config.
    fn config(&self) -> &LlamaConfig;

    /// Feeds `tokens` after the cached positions and returns the logits after the last of them
    /// (one row of the vocabulary). On error the cache is as it was before the call.
    fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>, GenerateError>;

    /// Feeds one token and returns the logits after it.
    fn decode(&mut self, token: u32) -> Result<Vec<f32>, GenerateError>;

    /// Feeds `tokens` and returns the greedy next token (backends on a device take the argmax
    /// there, so only the id crosses the bus).
    fn prefill_argmax(&mut self, tokens: &[u32]) -> Result<u32, GenerateError> {
        Ok(argmax(&self.prefill(tokens)?))
    }

    /// Feeds one token and returns the greedy next token.
    fn decode_argmax(&mut self, token: u32) -> Result<u32, GenerateError> {
        Ok(argmax(&self.decode(token)?))
    }

    /// Feeds one token and returns the `k` best next-token candidates (id, logit) after the
    /// repetition `penalty` over `recent`, where the backend selects them on its device so only
    /// `k` pairs cross the bus; `Ok(None)` (the default) where it has no such path and the caller
    /// should use [`decode`](TextGenerator::decode). A `None` feeds nothing.
    fn decode_top_k(
        &mut self,
        _token: u32,
        _k: usize,
        _penalty: f32,
        _recent: &[u32],
    ) -> Result<Option<Vec<(u32, f32)>>, GenerateError> {
        Ok(None)
    }

    /// Feeds one token and draws the next one from its logits with `sampler` (`history`: the
    /// tokens so far, for the repetition penalty).
    fn decode_sample(
        &mut self,
        token: u32,
        sampler: &mut Sampler,
        history: &[u32],
    ) -> Result<u32, GenerateError> {
        let logits = self.decode(token)?;
        Ok(sampler.sample(&logits, history)?)
    }

    /// Positions in the KV cache.
    fn n_past(&self) -> usize;

    /// Most positions the KV cache holds.
    fn max_context(&self) -> usize;

    /// Rolls the sequence back to its first `n` positions (no-op when `n >= n_past`).
    fn truncate(&mut self, n: usize);

    /// Forgets the whole sequence.
    fn reset(&mut self) {
        self.truncate(0);
    }

    /// A human-readable report of what the backend measured (bytes moved, time per stage), for
    /// backends that keep one; `None` by default.
    fn stats_report(&self) -> Option<String> {
        None
    }
}

impl TextGenerator for crate::cpu::Model {
    fn gguf(&self) -> &GgufFile {
        crate::cpu::Model::gguf(self)
    }
    fn config(&self) -> &LlamaConfig {
        crate::cpu::Model::config(self)
    }
    fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>, GenerateError> {
        Ok(crate::cpu::Model::prefill(self, tokens)?)
    }
    fn decode(&mut self, token: u32) -> Result<Vec<f32>, GenerateError> {
        Ok(crate::cpu::Model::decode(self, token)?)
    }
    fn n_past(&self) -> usize {
        crate::cpu::Model::n_past(self)
    }
    fn max_context(&self) -> usize {
        self.state().max_context()
    }
    fn truncate(&mut self, n: usize) {
        crate::cpu::Model::truncate(self, n);
    }
    fn reset(&mut self) {
        crate::cpu::Model::reset(self);
    }
}

#[cfg(feature = "cuda")]
impl TextGenerator for crate::cuda::CudaModel {
    fn gguf(&self) -> &GgufFile {
        crate::cuda::CudaModel::gguf(self)
    }
    fn config(&self) -> &LlamaConfig {
        crate::cuda::CudaModel::config(self)
    }
    fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>, GenerateError> {
        Ok(crate::cuda::CudaModel::prefill(self, tokens)?)
    }
    fn decode(&mut self, token: u32) -> Result<Vec<f32>, GenerateError> {
        Ok(crate::cuda::CudaModel::decode(self, token)?)
    }
    fn prefill_argmax(&mut self, tokens: &[u32]) -> Result<u32, GenerateError> {
        Ok(crate::cuda::CudaModel::prefill_argmax(self, tokens)?)
    }
    fn decode_argmax(&mut self, token: u32) -> Result<u32, GenerateError> {
        Ok(crate::cuda::CudaModel::decode_argmax(self, token)?)
    }
    fn decode_top_k(
        &mut self,
        token: u32,
        k: usize,
        penalty: f32,
        recent: &[u32],
    ) -> Result<Option<Vec<(u32, f32)>>, GenerateError> {
        Ok(Some(crate::cuda::CudaModel::decode_top_k(
            self, token, k, penalty, recent,
        )?))
    }
    fn n_past(&self) -> usize {
        crate::cuda::CudaModel::n_past(self)
    }
    fn max_context(&self) -> usize {
        crate::cuda::CudaModel::max_context(self)
    }
    fn truncate(&mut self, n: usize) {
        crate::cuda::CudaModel::truncate(self, n);
    }
    fn reset(&mut self) {
        crate::cuda::CudaModel::reset(self);
    }
}
