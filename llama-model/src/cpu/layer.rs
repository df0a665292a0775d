//! One transformer block, written top to bottom like the textbook:
//!
//! ```text
//! h   = x + Wo · attention(rope(Wq · norm(x)), rope(Wk · norm(x)), Wv · norm(x))
//! out = h + Wdown · (silu(Wgate · norm(h)) * (Wup · norm(h)))
//! ```

use crate::config::LlamaConfig;

use super::attention::{attention, AttentionShape, KvCache};
use super::error::ForwardError;
use super::head::vector;
use super::matmul::{matmul, matmul_shared_input, Kernel};
use super::norm::rmsnorm;
use super::rope::RopeFreqs;
use super::simd;
use super::weights::LayerWeights;

/// The running state of one sequence: the hidden states of the batch being processed and the
/// KV cache of every position before it.
///
/// A step is: [`State::begin_batch`] with the embeddings of the new tokens, [`forward_layer`]
/// for every layer in order, then [`State::end_batch`], which commits the new positions.
#[derive(Debug, Clone)]
pub struct State {
    config: LlamaConfig,
    kernel: Kernel,
    rope: RopeFreqs,
    kv: KvCache,
    n_past: usize,
    hidden: Vec<f32>,
    n_tokens: usize,
}

impl State {
    /// A fresh state for `config` holding at most `max_context` positions (capped at the
    /// model's context length; 0 means the model's context length).
    pub fn new(config: &LlamaConfig, max_context: usize, kernel: Kernel) -> State {
        let max = if max_context == 0 {
            config.context_length
        } else {
            max_context.min(config.context_length)
        };
        State {
            config: config.clone(),
            kernel,
            rope: RopeFreqs::new(config),
            kv: KvCache::new(config.n_layers, config.kv_dim(), max),
            n_past: 0,
            hidden: Vec::new(),
            n_tokens: 0,
        }
    }

    /// The model config.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The matmul kernel in use.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Positions committed to the KV cache.
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    /// Most positions this state accepts.
    pub fn max_context(&self) -> usize {
        self.kv.max_len()
    }

    /// The KV cache.
    pub fn kv_cache(&self) -> &KvCache {
        &self.kv
    }

    /// Tokens in the current batch.
    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    /// Hidden states of the current batch (`n_tokens` rows of `dim`).
    pub fn hidden(&self) -> &[f32] {
        &self.hidden
    }

    /// Starts a batch of `hidden.len() / dim` new tokens at positions `n_past..`.
    pub fn begin_batch(&mut self, hidden: Vec<f32>) -> Result<(), ForwardError> {
        let dim = self.config.dim;
        if hidden.is_empty() || hidden.len() % dim != 0 {
            return Err(ForwardError::Batch(format!(
                "{} hidden values is not a non-zero multiple of the width {dim}",
                hidden.len()
            )));
        }
        let n = hidden.len() / dim;
        if self.n_past + n > self.kv.max_len() {
            return Err(ForwardError::ContextFull {
                needed: self.n_past + n,
                limit: self.kv.max_len(),
            });
        }
        self.hidden = hidden;
        self.n_tokens = n;
        Ok(())
    }

    /// Commits the batch's positions to the sequence (call after the last layer).
    pub fn end_batch(&mut self) {
        self.n_past += self.n_tokens;
    }

    /// Rolls the sequence back to its first `n` positions (no-op if it holds fewer).
    pub fn truncate(&mut self, n: usize) {
        if n < self.n_past {
            self.n_past = n;
            self.kv.truncate(n);
        }
    }

    /// Forgets the whole sequence.
    pub fn reset(&mut self) {
        self.truncate(0);
        self.hidden.clear();
        self.n_tokens = 0;
    }
}

/// Runs transformer block `layer` on the current batch of `state`, in place.
pub fn forward_layer(
    layer: usize,
    w: &LayerWeights<'_>,
    state: &mut State,
) -> Result<(), ForwardError> {
    let c = &state.config;
    if layer >= c.n_layers {
        return Err(ForwardError::Batch(format!(
            "layer {layer} does not exist (the model has {})",
            c.n_layers
        )));
    }
    w.validate(c)?;
    let (dim, kv_dim, ffn_dim) = (c.dim, c.kv_dim(), c.ffn_dim);
    let n = state.n_tokens;
    let start = state.n_past;
    let kernel = state.kernel;
    let x = &mut state.hidden;

    // --- Attention ---
    let mut xn = vec![0f32; n * dim];
    rmsnorm(x, &vector(&w.attn_norm)?, c.rms_eps, &mut xn);
    let mut q = vec![0f32; n * dim];
    let mut k = vec![0f32; n * kv_dim];
    let mut v = vec![0f32; n * kv_dim];
    matmul_shared_input(
        &[&w.attn_q, &w.attn_k, &w.attn_v],
        &xn,
        n,
        &mut [&mut q, &mut k, &mut v],
        kernel,
    )?;
    for t in 0..n {
        state.rope.apply(&mut q[t * dim..(t + 1) * dim], start + t);
        state
            .rope
            .apply(&mut k[t * kv_dim..(t + 1) * kv_dim], start + t);
    }
    if !state.kv.store(layer, start, &k, &v) {
        return Err(ForwardError::Batch(format!(
            "layer {layer}'s KV cache lacks positions before {start}: run the layers in order"
        )));
    }
    let (keys, values) = state.kv.layer(layer);
    let shape = AttentionShape {
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
    };
    let mut att = vec![0f32; n * dim];
    attention(&q, keys, values, start, shape, &mut att);
    let mut o = vec![0f32; n * dim];
    matmul(&w.attn_output, &att, n, &mut o, kernel)?;
    for (xi, oi) in x.iter_mut().zip(&o) {
        *xi += oi;
    }

    // --- Feed-forward (SwiGLU) ---
    rmsnorm(x, &vector(&w.ffn_norm)?, c.rms_eps, &mut xn);
    let mut gate = vec![0f32; n * ffn_dim];
    let mut up = vec![0f32; n * ffn_dim];
    matmul_shared_input(
        &[&w.ffn_gate, &w.ffn_up],
        &xn,
        n,
        &mut [&mut gate, &mut up],
        kernel,
    )?;
    simd::swiglu(&mut gate, &up);
    matmul(&w.ffn_down, &gate, n, &mut o, kernel)?;
    for (xi, oi) in x.iter_mut().zip(&o) {
        *xi += oi;
    }
    Ok(())
}

/// `x * sigmoid(x)`, with the exponential of llama.cpp's x86 SiLU (see `expf.rs`).
pub fn silu(x: f32) -> f32 {
    x / (1.0 + super::expf::exp(0.0 - x))
}
