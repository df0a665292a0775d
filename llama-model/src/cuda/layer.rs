//! One transformer block on the GPU for one new token (decode), the same steps as the CPU
//! reference (`cpu::forward_layer`):
//!
//! ```text
//! h   = x + Wo · attention(rope(Wq · norm(x)), rope(Wk · norm(x)), Wv · norm(x))
//! out = h + Wdown · (silu(Wgate · norm(h)) * (Wup · norm(h)))
//! ```
//!
//! Weights are [`DeviceWeight`] views into device memory the caller owns (a resident buffer or
//! a freshly streamed slot); the state ([`GpuState`]) owns the activations and the f16 KV cache
//! of every layer in VRAM.

pub(crate) mod batch;
pub(crate) mod hybrid;
pub(crate) mod multi;

use std::sync::Arc;

use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, DevicePtr, PushKernelArg};
use gguf::GgmlType;

use crate::config::LlamaConfig;

use super::attention::AttnShape;
use super::backend::{cfg, grid_for, i32_arg, need_len, CudaBackend, RED_THREADS};
use super::error::{driver, CudaError, Result};
use super::sys::Launch;
use super::weights::DeviceWeight;

/// The nine tensors of one transformer block, as views into device memory the caller owns
/// (fields in the order of `cpu::LAYER_TENSOR_NAMES`). Norm weights must be F32.
#[derive(Debug)]
pub struct DeviceLayerWeights<'a> {
    /// RMSNorm weight before attention (dim).
    pub attn_norm: DeviceWeight<'a>,
    /// Query projection (dim rows of dim).
    pub attn_q: DeviceWeight<'a>,
    /// Key projection (kv_dim rows of dim).
    pub attn_k: DeviceWeight<'a>,
    /// Value projection (kv_dim rows of dim).
    pub attn_v: DeviceWeight<'a>,
    /// Attention output projection (dim rows of dim).
    pub attn_output: DeviceWeight<'a>,
    /// RMSNorm weight before the FFN (dim).
    pub ffn_norm: DeviceWeight<'a>,
    /// FFN gate projection (ffn_dim rows of dim).
    pub ffn_gate: DeviceWeight<'a>,
    /// FFN up projection (ffn_dim rows of dim).
    pub ffn_up: DeviceWeight<'a>,
    /// FFN down projection (dim rows of ffn_dim).
    pub ffn_down: DeviceWeight<'a>,
}

fn expect(w: &DeviceWeight<'_>, what: &str, row_len: usize, n_rows: usize) -> Result<()> {
    if w.row_len != row_len || w.n_rows != n_rows {
        return Err(CudaError::Shape {
            op: "layer weights",
            detail: format!(
                "{what} is {} rows x {}, the config needs {n_rows} x {row_len}",
                w.n_rows, w.row_len
            ),
        });
    }
    Ok(())
}

impl<'a> DeviceLayerWeights<'a> {
    /// Builds the layer from nine views given in `cpu::LAYER_TENSOR_NAMES` order.
    pub fn from_array(v: [DeviceWeight<'a>; 9]) -> Self {
        let [attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down] =
            v;
        Self {
            attn_norm,
            attn_q,
            attn_k,
            attn_v,
            attn_output,
            ffn_norm,
            ffn_gate,
            ffn_up,
            ffn_down,
        }
    }

    /// Checks every tensor's shape against the config (and that the norms are F32).
    pub fn validate(&self, c: &LlamaConfig) -> Result<()> {
        let (d, kv, f) = (c.dim, c.kv_dim(), c.ffn_dim);
        expect(&self.attn_norm, "attn_norm", d, 1)?;
        expect(&self.attn_q, "attn_q", d, d)?;
        expect(&self.attn_k, "attn_k", d, kv)?;
        expect(&self.attn_v, "attn_v", d, kv)?;
        expect(&self.attn_output, "attn_output", d, d)?;
        expect(&self.ffn_norm, "ffn_norm", d, 1)?;
        expect(&self.ffn_gate, "ffn_gate", d, f)?;
        expect(&self.ffn_up, "ffn_up", d, f)?;
        expect(&self.ffn_down, "ffn_down", f, d)?;
        for n in [&self.attn_norm, &self.ffn_norm] {
            if n.ggml_type != GgmlType::F32 {
                return Err(CudaError::Shape {
                    op: "layer weights",
                    detail: format!("norm weights must be F32, found {}", n.ggml_type),
                });
            }
        }
        Ok(())
    }
}

impl CudaBackend {
    /// RMSNorm of one row of `n` = `x.len()` values with an F32 weight lying in device memory
    /// the caller owns (a [`DeviceWeight`] of one row): `out = x / rms(x) * w`.
    pub fn rmsnorm_weight(
        &self,
        x: &CudaSlice<f32>,
        w: &DeviceWeight<'_>,
        out: &mut CudaSlice<f32>,
        eps: f32,
    ) -> Result<()> {
        const OP: &str = "rmsnorm";
        let n = x.len();
        self.check_norm(OP, n, w, out)?;
        let n32 = i32_arg(OP, "n", n)?;
        if n == 0 {
            return Ok(());
        }
        let mut l = Launch::new(self.stream(), &self.k.rmsnorm);
        l.0.arg(x).arg(&w.data).arg(out).arg(&n32).arg(&eps);
        l.run(OP, cfg(grid_for(1, 1, OP)?, RED_THREADS))
    }

    /// Checks an RMSNorm of one row of `n` values: an F32 weight of `n` values, 4-byte aligned,
    /// and room for `n` outputs.
    pub(super) fn check_norm(
        &self,
        op: &'static str,
        n: usize,
        w: &DeviceWeight<'_>,
        out: &CudaSlice<f32>,
    ) -> Result<()> {
        if w.ggml_type != GgmlType::F32 || w.row_len * w.n_rows != n {
            return Err(CudaError::Shape {
                op,
                detail: format!(
                    "norm weight is {} x {} {}, needs {n} F32 values",
                    w.n_rows, w.row_len, w.ggml_type
                ),
            });
        }
        {
            let (ptr, _sync) = w.data.device_ptr(self.stream());
            if ptr % 4 != 0 {
                return Err(CudaError::Shape {
                    op,
                    detail: "norm weight is not 4-byte aligned in device memory".into(),
                });
            }
        }
        need_len(op, "out", out.len(), n)
    }
}

/// The running state of one sequence on the GPU: the hidden state of the token being
/// processed, scratch activations, and the f16 KV cache of every layer in VRAM.
///
/// A step is: [`GpuState::begin_token`] (embedding lookup on the GPU), [`forward_layer`] for
/// every layer in order, then [`GpuState::end_token`], which commits the position;
/// [`GpuState::head`] gives the logits (or only the argmax token) afterwards.
///
/// Everything is enqueued on one compute stream ([`GpuState::stream`]) and no step waits for
/// the GPU except the calls that return data to the host ([`GpuState::head`],
/// [`GpuState::head_argmax`]). The position and token of the current step live in device
/// memory (written by `begin_token`), so the kernels of a step take no per-token launch
/// parameters: a step can be captured once in a CUDA graph and replayed.
///
/// Streaming: a caller filling weight buffers on its own copy stream makes the compute wait
/// for a copy with [`GpuState::wait_event`] and learns when the compute has finished reading a
/// buffer (so it may be overwritten) from an event taken by [`GpuState::record_event`].
#[derive(Debug)]
pub struct GpuState {
    backend: Arc<CudaBackend>,
    config: LlamaConfig,
    shape: AttnShape,
    factors: Option<CudaSlice<f32>>,
    k_cache: Vec<CudaSlice<u16>>,
    v_cache: Vec<CudaSlice<u16>>,
    /// Positions of each layer's cache written for the sequence (checks the layer order).
    layer_len: Vec<usize>,
    n_past: usize,
    in_token: bool,
    x: CudaSlice<f32>,
    xn: CudaSlice<f32>,
    att: CudaSlice<f32>,
    gate: CudaSlice<f32>,
    up: CudaSlice<f32>,
    act: CudaSlice<f32>,
    scratch: CudaSlice<f32>,
    logits: CudaSlice<f32>,
    next: CudaSlice<u32>,
    /// Q, K and V of the current token, concatenated (what `matvec_concat` writes).
    qkv: CudaSlice<f32>,
    /// `[position, token]` of the current step, read by the kernels.
    step: CudaSlice<u32>,
    /// Attention splits of a decode step (fixed, see [`AttnShape::fixed_splits`]).
    splits: usize,
    /// Per-head arrival counters of the attention's in-kernel merge (left at zero).
    attn_counters: CudaSlice<u32>,
}

impl GpuState {
    /// A fresh state for `config` holding at most `max_context` positions (capped at the
    /// model's context length; 0 means the model's context length), allocated on `backend`'s GPU.
    pub fn new(
        backend: Arc<CudaBackend>,
        config: &LlamaConfig,
        max_context: usize,
    ) -> Result<Self> {
        let max_ctx = if max_context == 0 {
            config.context_length
        } else {
            max_context.min(config.context_length)
        };
        let shape = AttnShape {
            n_heads: config.n_heads,
            n_kv_heads: config.n_kv_heads,
            head_dim: config.head_dim,
            max_ctx,
        };
        if config.n_heads * config.head_dim != config.dim {
            return Err(CudaError::Shape {
                op: "state",
                detail: format!(
                    "{} heads of {} do not make the width {}",
                    config.n_heads, config.head_dim, config.dim
                ),
            });
        }
        let s = backend.stream().clone();
        let zeros = |n: usize| s.alloc_zeros::<f32>(n).map_err(driver("alloc"));
        let mut k_cache = Vec::with_capacity(config.n_layers);
        let mut v_cache = Vec::with_capacity(config.n_layers);
        for _ in 0..config.n_layers {
            k_cache.push(
                s.alloc_zeros::<u16>(shape.cache_len())
                    .map_err(driver("alloc"))?,
            );
            v_cache.push(
                s.alloc_zeros::<u16>(shape.cache_len())
                    .map_err(driver("alloc"))?,
            );
        }
        let factors = match &config.rope_freq_factors {
            Some(f) => Some(s.clone_htod(f.as_slice()).map_err(driver("upload"))?),
            None => None,
        };
        let (d, kv, f) = (config.dim, config.kv_dim(), config.ffn_dim);
        let splits = shape.fixed_splits();
        let fixed_scratch = shape
            .n_heads
            .saturating_mul(splits)
            .saturating_mul(shape.head_dim + 2);
        Ok(Self {
            x: zeros(d)?,
            xn: zeros(d)?,
            att: zeros(d)?,
            gate: zeros(f)?,
            up: zeros(f)?,
            act: zeros(f)?,
            scratch: zeros(shape.scratch_len(max_ctx).max(fixed_scratch).max(1))?,
            logits: zeros(config.vocab_size.max(1))?,
            next: s.alloc_zeros::<u32>(1).map_err(driver("alloc"))?,
            qkv: zeros(d + 2 * kv)?,
            step: s.alloc_zeros::<u32>(2).map_err(driver("alloc"))?,
            splits,
            attn_counters: s
                .alloc_zeros::<u32>(config.n_heads.max(1))
                .map_err(driver("alloc"))?,
            backend,
            config: config.clone(),
            shape,
            factors,
            k_cache,
            v_cache,
            layer_len: vec![0; config.n_layers],
            n_past: 0,
            in_token: false,
        })
    }

    /// The backend this state runs on.
    pub fn backend(&self) -> &Arc<CudaBackend> {
        &self.backend
    }

    /// The compute stream every kernel of this state is enqueued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        self.backend.stream()
    }

    /// Records an event after the work enqueued so far on the compute stream. When it has
    /// completed (`CudaEvent::synchronize`, or a copy stream waiting on it), every kernel
    /// enqueued before — e.g. the layer that read a streamed weight buffer — has finished, so
    /// that buffer may be overwritten.
    pub fn record_event(&self) -> Result<CudaEvent> {
        self.stream()
            .record_event(None)
            .map_err(driver("record event"))
    }

    /// Makes the compute stream wait (on the GPU, the host does not block) until `event` has
    /// completed: e.g. the copy of the next layer's weights on another stream.
    pub fn wait_event(&self, event: &CudaEvent) -> Result<()> {
        self.stream().wait(event).map_err(driver("wait event"))
    }

    /// The model config.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Positions committed to the KV cache.
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    /// Most positions this state accepts.
    pub fn max_context(&self) -> usize {
        self.shape.max_ctx
    }

    /// The hidden state of the current token (`dim` values, on the GPU).
    pub fn hidden(&self) -> &CudaSlice<f32> {
        &self.x
    }

    /// Host-side checks of a new token at position `n_past`.
    fn check_begin(&self, token_embd: &DeviceWeight<'_>, token: u32) -> Result<()> {
        if token as usize >= token_embd.n_rows {
            return Err(CudaError::TokenOutOfRange {
                token,
                vocab_size: token_embd.n_rows,
            });
        }
        if token_embd.row_len != self.config.dim {
            return Err(CudaError::Shape {
                op: "embed",
                detail: format!(
                    "token_embd rows hold {}, the width is {}",
                    token_embd.row_len, self.config.dim
                ),
            });
        }
        if self.n_past >= self.shape.max_ctx {
            return Err(CudaError::ContextFull {
                needed: self.n_past + 1,
                limit: self.shape.max_ctx,
            });
        }
        Ok(())
    }

    /// Writes `[n_past, token]` to the step buffer the kernels read (an 8-byte upload; the
    /// host value is staged by the driver, nothing waits).
    pub(super) fn set_step(&mut self, token: u32) -> Result<()> {
        let pos = u32::try_from(self.n_past).map_err(|_| CudaError::ContextFull {
            needed: self.n_past + 1,
            limit: u32::MAX as usize,
        })?;
        let s = self.backend.stream().clone();
        s.memcpy_htod(&[pos, token][..], &mut self.step)
            .map_err(driver("upload step"))
    }

    /// Enqueues the embedding lookup of the step's token (read from the step buffer).
    pub(super) fn enqueue_embed(&mut self, token_embd: &DeviceWeight<'_>) -> Result<()> {
        let (tp, _g) = self.step.device_ptr(self.backend.stream());
        self.backend
            .embed_launch(token_embd, tp + 4, 1, &mut self.x)
    }

    /// Starts a token at position `n_past`: its embedding row of `token_embd` becomes the
    /// hidden state (looked up on the GPU).
    pub fn begin_token(&mut self, token_embd: &DeviceWeight<'_>, token: u32) -> Result<()> {
        self.check_begin(token_embd, token)?;
        self.set_step(token)?;
        self.enqueue_embed(token_embd)?;
        self.in_token = true;
        Ok(())
    }

    /// Commits the current token's position (call after the last layer).
    pub fn end_token(&mut self) -> Result<()> {
        if !self.in_token {
            return Err(CudaError::Sequence("end_token without begin_token".into()));
        }
        if let Some(i) = self.layer_len.iter().position(|&l| l != self.n_past + 1) {
            return Err(CudaError::Sequence(format!(
                "layer {i} did not run for position {}",
                self.n_past
            )));
        }
        self.n_past += 1;
        self.in_token = false;
        Ok(())
    }

    /// Commits a whole step replayed from a CUDA graph (embedding and every layer ran on the
    /// GPU for position `n_past`).
    pub(super) fn commit_replayed_step(&mut self) {
        for l in &mut self.layer_len {
            *l = self.n_past + 1;
        }
        self.n_past += 1;
        self.in_token = false;
    }

    /// Rolls the sequence back to its first `n` positions (no-op if it holds fewer) and drops
    /// a token in progress.
    pub fn truncate(&mut self, n: usize) {
        self.n_past = self.n_past.min(n);
        for l in &mut self.layer_len {
            *l = (*l).min(self.n_past);
        }
        self.in_token = false;
    }

    /// Forgets the whole sequence.
    pub fn reset(&mut self) {
        self.truncate(0);
    }

    /// Final RMSNorm + LM head of the hidden state into the state's logits buffer (on the GPU).
    fn head_logits(
        &mut self,
        output_norm: &DeviceWeight<'_>,
        lm_head: &DeviceWeight<'_>,
    ) -> Result<()> {
        if lm_head.row_len != self.config.dim || lm_head.n_rows != self.logits.len() {
            return Err(CudaError::Shape {
                op: "lm head",
                detail: format!(
                    "head is {} rows x {}, width {} and vocab {}",
                    lm_head.n_rows,
                    lm_head.row_len,
                    self.config.dim,
                    self.logits.len()
                ),
            });
        }
        let b = self.backend.clone();
        b.rmsnorm_matvec(
            &self.x,
            output_norm,
            &mut self.xn,
            self.config.rms_eps,
            lm_head,
            &mut self.logits,
        )
    }

    /// The next-token logits after the current hidden state (copied to the host).
    pub fn head(
        &mut self,
        output_norm: &DeviceWeight<'_>,
        lm_head: &DeviceWeight<'_>,
    ) -> Result<Vec<f32>> {
        self.head_logits(output_norm, lm_head)?;
        self.backend
            .stream()
            .clone_dtoh(&self.logits)
            .map_err(driver("download logits"))
    }

    /// The greedy next token after the current hidden state: argmax on the GPU, only the
    /// token id crosses the bus.
    pub fn head_argmax(
        &mut self,
        output_norm: &DeviceWeight<'_>,
        lm_head: &DeviceWeight<'_>,
    ) -> Result<u32> {
        self.head_logits(output_norm, lm_head)?;
        let b = self.backend.clone();
        b.argmax(&self.logits, &mut self.next)?;
        let mut t = [0u32];
        b.stream()
            .memcpy_dtoh(&self.next, &mut t[..])
            .map_err(driver("download token"))?;
        Ok(t[0])
    }

    /// The top `k` candidates of the next-token distribution after the current hidden state,
    /// selected on the GPU (see [`CudaBackend::top_k`]): only `k` (id, logit) pairs cross the
    /// bus. `penalty` applies a repetition penalty to `recent` ids first (llama.cpp's rule:
    /// positive logits divided by it, negative ones multiplied; 1.0 = off).
    pub fn head_top_k(
        &mut self,
        output_norm: &DeviceWeight<'_>,
        lm_head: &DeviceWeight<'_>,
        k: usize,
        penalty: f32,
        recent: &[u32],
    ) -> Result<Vec<(u32, f32)>> {
        self.head_logits(output_norm, lm_head)?;
        let b = self.backend.clone();
        if penalty != 1.0 && !recent.is_empty() {
            b.repetition_penalty(&mut self.logits, recent, penalty)?;
        }
        b.top_k(&self.logits, k)
    }
}

/// Runs transformer block `layer` on the current token of `state` (one decode step), in
/// place, with `w` read where the caller keeps it.
pub fn forward_layer(layer: usize, w: &DeviceLayerWeights<'_>, state: &mut GpuState) -> Result<()> {
    let pos = check_step(layer, state)?;
    w.validate(&state.config)?;
    enqueue_layer(layer, w, state)?;
    commit_layer(layer, pos, state);
    Ok(())
}

/// Checks that block `layer` may run on the current token of `state` (a token begun, the
/// layer's cache filled up to the token's position); the position.
pub(super) fn check_step(layer: usize, state: &GpuState) -> Result<usize> {
    if layer >= state.config.n_layers {
        return Err(CudaError::Sequence(format!(
            "layer {layer} does not exist (the model has {})",
            state.config.n_layers
        )));
    }
    if !state.in_token {
        return Err(CudaError::Sequence(
            "forward_layer before begin_token".into(),
        ));
    }
    let pos = state.n_past;
    if state.layer_len[layer] < pos {
        return Err(CudaError::Sequence(format!(
            "layer {layer}'s KV cache lacks positions before {pos}: run the layers in order"
        )));
    }
    Ok(pos)
}

/// Marks block `layer`'s cache as holding the current token (after its kernels are enqueued).
pub(super) fn commit_layer(layer: usize, pos: usize, state: &mut GpuState) {
    state.layer_len[layer] = pos + 1;
}

/// Enqueues the kernels of block `layer` for the step in the state's step buffer (no host
/// bookkeeping, no per-token launch parameter: what a CUDA graph captures). `w` must have
/// been validated against the config.
pub(super) fn enqueue_layer(
    layer: usize,
    w: &DeviceLayerWeights<'_>,
    s: &mut GpuState,
) -> Result<()> {
    let b = s.backend.clone();
    let eps = s.config.rms_eps;

    // --- Attention ---
    b.rmsnorm_matvec_concat(
        &s.x,
        &w.attn_norm,
        &mut s.xn,
        eps,
        &[&w.attn_q, &w.attn_k, &w.attn_v],
        &mut s.qkv,
    )?;
    enqueue_attention(layer, s)?;
    b.matvec_accumulate(&w.attn_output, &s.att, &mut s.x)?;

    // --- Feed-forward (SwiGLU) ---
    if w.ffn_gate.ggml_type == w.ffn_up.ggml_type {
        b.rmsnorm_matvec_swiglu(
            &s.x,
            &w.ffn_norm,
            &mut s.xn,
            eps,
            &w.ffn_gate,
            &w.ffn_up,
            &mut s.act,
        )?;
    } else {
        b.rmsnorm_weight(&s.x, &w.ffn_norm, &mut s.xn, eps)?;
        b.matvec(&w.ffn_gate, &s.xn, &mut s.gate)?;
        b.matvec(&w.ffn_up, &s.xn, &mut s.up)?;
        b.swiglu(&s.gate, &s.up, &mut s.act)?;
    }
    b.matvec_accumulate(&w.ffn_down, &s.act, &mut s.x)
}

/// Enqueues rope on the step's Q and K in `s.qkv`, the store of K and V into layer `layer`'s
/// cache and the attention of Q over the cache into `s.att`.
pub(super) fn enqueue_attention(layer: usize, s: &mut GpuState) -> Result<()> {
    let b = s.backend.clone();
    let (rope_dim, rope_base) = (s.config.rope_dim, s.config.rope_base);
    let shape = s.shape;
    let (kc, vc) = match (s.k_cache.get_mut(layer), s.v_cache.get_mut(layer)) {
        (Some(k), Some(v)) => (k, v),
        _ => {
            return Err(CudaError::Sequence(format!(
                "no KV cache for layer {layer}"
            )))
        }
    };
    let (step, _g) = s.step.device_ptr(b.stream());
    b.rope_kv_launch(
        &mut s.qkv,
        kc,
        vc,
        shape,
        rope_dim,
        0,
        step,
        rope_base,
        s.factors.as_ref(),
    )?;
    let (qp, _gq) = s.qkv.device_ptr(b.stream());
    b.attention_launch(
        qp,
        kc,
        vc,
        &mut s.scratch,
        &mut s.att,
        shape,
        0,
        step,
        s.splits,
        &mut s.attn_counters,
    )
}
