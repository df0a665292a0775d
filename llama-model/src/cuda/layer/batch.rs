//! Batched forward on the GPU: `n` consecutive tokens of one sequence through a layer at once,
//! every weight product on tensor cores (prefill, and verification of drafted tokens).
//!
//! The steps of each token are those of [`super::forward_layer`]; only the grouping differs:
//!
//! ```text
//! X   = n hidden rows (f32)                   positions n_past .. n_past + n
//! Xn  = f16(rmsnorm(X))                       one GEMM input per layer input
//! Q, K, V = Xn · Wq^T, Xn · Wk^T, Xn · Wv^T   tensor-core GEMMs reading ggml blocks in place
//! rope(Q), rope(K) at each row's position; K, V stored in the f16 cache
//! A   = f16(causal attention of each row over cache positions 0 ..= its position)
//! X  += A · Wo^T                              (GEMM accumulating into X)
//! X  += f16(silu(Xn · Wgate^T) * (Xn · Wup^T)) · Wdown^T   with Xn = f16(rmsnorm(X))
//! ```
//!
//! A batch is driven like a token (the same [`GpuState`] and KV cache):
//!
//! 1. [`GpuBatch::begin`]: embedding rows of the `n` tokens (GPU lookup);
//! 2. [`forward_layer_batch`] for every layer, in order, weights read where the caller keeps
//!    them (resident buffer or streamed slot: the same [`DeviceLayerWeights`] views);
//! 3. [`GpuBatch::end`]: commits the `n` positions and makes the last row the state's hidden
//!    state, so [`GpuState::head`] / [`GpuState::head_argmax`] give the next token after the
//!    batch, and decoding goes on token by token;
//! 4. optionally [`GpuBatch::head_all`] / [`GpuBatch::head_argmax_all`]: the logits or greedy
//!    tokens after *every* position of the batch (self-speculative verification of `K` drafted
//!    tokens is one batch of `K + 1` positions and one call).
//!
//! ```no_run
//! use llama_model::cuda::{forward_layer_batch, CudaModel, GpuBatch, GpuState};
//!
//! # fn main() -> llama_model::cuda::Result<()> {
//! // Weights resident in VRAM here; a streaming engine passes views of its own slots instead.
//! let model = CudaModel::open("model.gguf", 0)?;
//! let c = model.config().clone();
//! let mut state = GpuState::new(model.backend().clone(), &c, 4096)?;
//! let mut batch = GpuBatch::new(&state)?;
//! let (norm, head) = model.head_weights()?;
//!
//! // Prefill: the whole prompt as one batch (longer prompts: several batches in a row).
//! let prompt = [128000u32, 791, 6864, 315, 9822, 374];
//! batch.begin(&mut state, &model.token_embd_weight()?, &prompt)?;
//! for i in 0..c.n_layers {
//!     forward_layer_batch(i, &model.layer_weights(i)?, &mut state, &mut batch)?;
//! }
//! batch.end(&mut state)?;
//! let next = state.head_argmax(&norm, &head)?;
//!
//! // Verification of two drafted tokens: feed [next, d1, d2], one argmax per position.
//! let (d1, d2) = (12366u32, 13);
//! let before = state.n_past();
//! batch.begin(&mut state, &model.token_embd_weight()?, &[next, d1, d2])?;
//! for i in 0..c.n_layers {
//!     forward_layer_batch(i, &model.layer_weights(i)?, &mut state, &mut batch)?;
//! }
//! batch.end(&mut state)?;
//! let greedy = batch.head_argmax_all(&state, &norm, &head)?;
//! // greedy[0] is the target's token after `next`: d1 is accepted if equal, and so on.
//! let accepted = if greedy[0] != d1 { 0 } else if greedy[1] != d2 { 1 } else { 2 };
//! state.truncate(before + 1 + accepted); // keep `next` and the accepted drafts
//! let _next_to_feed = greedy[accepted]; // the target's own token after them
//! # Ok(())
//! # }
//! ```
//!
//! A failed call leaves positions half written: call [`GpuBatch::cancel`] (or
//! [`GpuState::truncate`] to the position before the batch). Do not interleave single-token
//! steps with an open batch. Scratch buffers are allocated at the first batch and grown to the
//! largest batch seen; a prompt longer than a chosen chunk (e.g. [`PREFILL_CHUNK`]) is best fed
//! as several batches.
//!
//! Precision: the GEMM inputs (normalized activations, attention output, SwiGLU output) and the
//! dequantized weights are rounded to f16 (relative 2^-11); products and every other step are
//! f32, as in the one-token path, whose matrix-vector products keep f32 activations.

mod kernels;

use std::sync::Arc;

use cudarc::driver::CudaSlice;

use super::{DeviceLayerWeights, GpuState};
use crate::cuda::error::{driver, CudaError, Result};
use crate::cuda::weights::DeviceWeight;

pub use kernels::{BatchKernels, BATCH_ENTRY_POINTS, BATCH_KERNEL_MODULES, GEMM_K_STEP};

pub use crate::generation::PREFILL_CHUNK;

/// Scratch activations for up to `cap` tokens.
#[derive(Debug)]
struct Scratch {
    cap: usize,
    /// Hidden rows `[cap][dim]`.
    x: CudaSlice<f32>,
    /// f16 GEMM inputs `[cap][max(dim, ffn_dim)]`.
    h16: CudaSlice<u16>,
    /// Queries `[cap][dim]`.
    q: CudaSlice<f32>,
    /// Keys and values `[cap][kv_dim]`.
    k: CudaSlice<f32>,
    v: CudaSlice<f32>,
    /// FFN gate and up projections `[cap][ffn_dim]`.
    gate: CudaSlice<f32>,
    up: CudaSlice<f32>,
}

/// Where a batch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No batch yet (or cancelled).
    Idle,
    /// Between [`GpuBatch::begin`] and [`GpuBatch::end`].
    Open,
    /// Ended: the hidden rows of every position are still available to the heads.
    Ended,
}

/// Scratch space and bookkeeping of batched forward passes over one [`GpuState`] (see the
/// module documentation for the call sequence). Reusable for any number of batches; the
/// buffers grow to the largest batch seen.
#[derive(Debug)]
pub struct GpuBatch {
    kernels: Arc<BatchKernels>,
    scratch: Option<Scratch>,
    /// Tokens of the current (or last) batch.
    n: usize,
    /// Position of its first token.
    pos0: usize,
    phase: Phase,
    logits: Option<CudaSlice<f32>>,
    ids: Option<CudaSlice<u32>>,
}

impl GpuBatch {
    /// Batch scratch for `state`'s model (loads the batch kernels on first use on this GPU;
    /// allocates nothing until the first batch). Fails on shapes the batch attention kernel
    /// does not handle (head size over 128, odd head size, more than 32 query heads per KV
    /// head).
    pub fn new(state: &GpuState) -> Result<Self> {
        BatchKernels::check_attention_shape(&state.shape)?;
        Ok(Self {
            kernels: BatchKernels::get(&state.backend)?,
            scratch: None,
            n: 0,
            pos0: 0,
            phase: Phase::Idle,
            logits: None,
            ids: None,
        })
    }

    /// The batch kernels (GEMM and friends) this batch launches.
    pub fn kernels(&self) -> &Arc<BatchKernels> {
        &self.kernels
    }

    /// Tokens in the current (or last ended) batch.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether no batch was begun (or the last one was cancelled).
    pub fn is_empty(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// Position of the batch's first token.
    pub fn first_position(&self) -> usize {
        self.pos0
    }

    /// Most tokens the scratch holds now (grown on demand by [`GpuBatch::begin`]).
    pub fn capacity(&self) -> usize {
        self.scratch.as_ref().map_or(0, |s| s.cap)
    }

    fn grow(&mut self, state: &GpuState, n: usize) -> Result<()> {
        if self.capacity() >= n {
            return Ok(());
        }
        // Free the old buffers first (stream ordered), then allocate the larger ones.
        self.scratch = None;
        let c = &state.config;
        let s = state.backend.stream();
        let f32s = |w: usize| -> Result<CudaSlice<f32>> {
            let len = n.checked_mul(w).ok_or_else(|| CudaError::Shape {
                op: "batch",
                detail: format!("{n} rows of {w} overflow"),
            })?;
            s.alloc_zeros::<f32>(len.max(1)).map_err(driver("alloc"))
        };
        let (d, kv, f) = (c.dim, c.kv_dim(), c.ffn_dim);
        let h16_len = n
            .checked_mul(d.max(f))
            .ok_or_else(|| CudaError::Shape {
                op: "batch",
                detail: "scratch size overflows".into(),
            })?
            .max(1);
        self.scratch = Some(Scratch {
            cap: n,
            x: f32s(d)?,
            h16: s.alloc_zeros::<u16>(h16_len).map_err(driver("alloc"))?,
            q: f32s(d)?,
            k: f32s(kv)?,
            v: f32s(kv)?,
            gate: f32s(f)?,
            up: f32s(f)?,
        });
        Ok(())
    }

    /// Starts a batch of `tokens` at positions `state.n_past() ..`: their embedding rows of
    /// `token_embd` become the batch's hidden rows (looked up on the GPU). Nothing is
    /// committed until [`GpuBatch::end`].
    pub fn begin(
        &mut self,
        state: &mut GpuState,
        token_embd: &DeviceWeight<'_>,
        tokens: &[u32],
    ) -> Result<()> {
        if self.phase == Phase::Open {
            return Err(CudaError::Sequence(
                "begin while a batch is open: end or cancel it first".into(),
            ));
        }
        if state.in_token {
            return Err(CudaError::Sequence(
                "begin of a batch while a single token is in progress".into(),
            ));
        }
        if tokens.is_empty() {
            return Err(CudaError::Sequence(
                "a batch needs at least one token".into(),
            ));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= token_embd.n_rows) {
            return Err(CudaError::TokenOutOfRange {
                token: t,
                vocab_size: token_embd.n_rows,
            });
        }
        if token_embd.row_len != state.config.dim {
            return Err(CudaError::Shape {
                op: "embed",
                detail: format!(
                    "token_embd rows hold {}, the width is {}",
                    token_embd.row_len, state.config.dim
                ),
            });
        }
        let pos0 = state.n_past;
        let needed = pos0.saturating_add(tokens.len());
        if needed > state.shape.max_ctx {
            return Err(CudaError::ContextFull {
                needed,
                limit: state.shape.max_ctx,
            });
        }
        self.grow(state, tokens.len())?;
        let b = state.backend.clone();
        let ids = b
            .stream()
            .clone_htod(tokens)
            .map_err(driver("upload tokens"))?;
        let sc = self
            .scratch
            .as_mut()
            .ok_or_else(|| CudaError::Sequence("batch scratch missing".into()))?;
        b.embed(token_embd, &ids, &mut sc.x)?;
        self.n = tokens.len();
        self.pos0 = pos0;
        self.phase = Phase::Open;
        Ok(())
    }

    /// Commits the batch's positions (every layer must have run) and makes its last row the
    /// state's hidden state: [`GpuState::head`] / [`GpuState::head_argmax`] then give the
    /// next token after the batch.
    pub fn end(&mut self, state: &mut GpuState) -> Result<()> {
        if self.phase != Phase::Open {
            return Err(CudaError::Sequence("end without an open batch".into()));
        }
        let want = self.pos0 + self.n;
        if let Some(i) = state.layer_len.iter().position(|&l| l != want) {
            return Err(CudaError::Sequence(format!(
                "layer {i} did not run for the batch at positions {}..{want}",
                self.pos0
            )));
        }
        let d = state.config.dim;
        let sc = self
            .scratch
            .as_ref()
            .ok_or_else(|| CudaError::Sequence("batch scratch missing".into()))?;
        let last = sc.x.slice((self.n - 1) * d..self.n * d);
        let b = state.backend.clone();
        b.stream()
            .memcpy_dtod(&last, &mut state.x)
            .map_err(driver("copy hidden row"))?;
        state.n_past = want;
        self.phase = Phase::Ended;
        Ok(())
    }

    /// Abandons an open batch: the state goes back to the position before it.
    pub fn cancel(&mut self, state: &mut GpuState) {
        if self.phase == Phase::Open {
            state.truncate(self.pos0);
        }
        self.phase = Phase::Idle;
    }

    /// Final RMSNorm + LM head of every row of the ended batch into `self.logits`
    /// (`[n][vocab]`, on the GPU); returns the vocabulary size.
    fn head_rows(
        &mut self,
        state: &GpuState,
        output_norm: &DeviceWeight<'_>,
        lm_head: &DeviceWeight<'_>,
    ) -> Result<usize> {
        if self.phase != Phase::Ended {
            return Err(CudaError::Sequence(
                "head of a batch before its end (or after a cancel)".into(),
            ));
        }
        if state.n_past != self.pos0 + self.n {
            return Err(CudaError::Sequence(
                "the state moved since the batch ended: its rows are stale".into(),
            ));
        }
        let (n, dim) = (self.n, state.config.dim);
        if lm_head.row_len != dim || output_norm.row_len * output_norm.n_rows != dim {
            return Err(CudaError::Shape {
                op: "lm head",
                detail: format!(
                    "head is {} rows x {}, norm {} values, width {dim}",
                    lm_head.n_rows,
                    lm_head.row_len,
                    output_norm.row_len * output_norm.n_rows
                ),
            });
        }
        let vocab = lm_head.n_rows;
        let need = n.checked_mul(vocab).ok_or_else(|| CudaError::Shape {
            op: "lm head",
            detail: "logit rows overflow".into(),
        })?;
        let b = state.backend.clone();
        let s = b.stream();
        if !matches!(&self.logits, Some(l) if l.len() >= need) {
            self.logits = None;
            self.logits = Some(s.alloc_zeros::<f32>(need).map_err(driver("alloc"))?);
        }
        let (Some(sc), Some(logits)) = (self.scratch.as_mut(), self.logits.as_mut()) else {
            return Err(CudaError::Sequence("batch scratch missing".into()));
        };
        let k = &self.kernels;
        k.rmsnorm_f16(&b, &sc.x, output_norm, &mut sc.h16, n, state.config.rms_eps)?;
        k.gemm(&b, lm_head, &sc.h16, n, logits, false)?;
        Ok(vocab)
    }

    /// The logits after every position of the ended batch, `n` rows of `vocab` (row `i`:
    /// the next-token logits after the batch's token `i`), copied to the host. The head runs
    /// as one GEMM over the rows (f16 inputs), so row `n - 1` may differ slightly from
    /// [`GpuState::head`], which keeps f32 activations.
    pub fn head_all(
        &mut self,
        state: &GpuState,
        output_norm: &DeviceWeight<'_>,
        lm_head: &DeviceWeight<'_>,
    ) -> Result<Vec<f32>> {
        let vocab = self.head_rows(state, output_norm, lm_head)?;
        let logits = self
            .logits
            .as_ref()
            .ok_or_else(|| CudaError::Sequence("no logits".into()))?;
        let mut out = vec![0f32; self.n * vocab];
        state
            .backend
            .stream()
            .memcpy_dtoh(&logits.slice(..self.n * vocab), &mut out[..])
            .map_err(driver("download logits"))?;
        Ok(out)
    }

    /// The greedy next token after every position of the ended batch (argmax of each row
    /// on the GPU; only `n` token ids cross the bus). For verifying `K` drafted tokens
    /// `d_1..d_K` fed as the batch `[t, d_1, .., d_K]`: draft `d_i` is accepted while it
    /// equals entry `i - 1`, and the entry after the last accepted draft is the next token.
    pub fn head_argmax_all(
        &mut self,
        state: &GpuState,
        output_norm: &DeviceWeight<'_>,
        lm_head: &DeviceWeight<'_>,
    ) -> Result<Vec<u32>> {
        let vocab = self.head_rows(state, output_norm, lm_head)?;
        let n = self.n;
        let b = state.backend.clone();
        let s = b.stream();
        if !matches!(&self.ids, Some(l) if l.len() >= n) {
            self.ids = None;
            self.ids = Some(s.alloc_zeros::<u32>(n).map_err(driver("alloc"))?);
        }
        let (Some(logits), Some(ids)) = (self.logits.as_ref(), self.ids.as_mut()) else {
            return Err(CudaError::Sequence("no logits".into()));
        };
        self.kernels.argmax_rows(&b, logits, n, vocab, ids)?;
        let mut out = vec![0u32; n];
        s.memcpy_dtoh(&ids.slice(..n), &mut out[..])
            .map_err(driver("download tokens"))?;
        Ok(out)
    }
}

/// Runs transformer block `layer` on every token of `batch` (begun on `state` with
/// [`GpuBatch::begin`]), in place, with `w` read where the caller keeps it. Layers must run
/// in order, each once per batch; the batch's keys and values go into `state`'s cache at
/// positions `batch.first_position() ..`. The batch size is the token count given to
/// [`GpuBatch::begin`] (scratch and kernels live in the [`GpuBatch`], since the single-token
/// [`GpuState`] has none).
pub fn forward_layer_batch(
    layer: usize,
    w: &DeviceLayerWeights<'_>,
    state: &mut GpuState,
    batch: &mut GpuBatch,
) -> Result<()> {
    if batch.phase != Phase::Open {
        return Err(CudaError::Sequence(
            "forward_layer_batch without an open batch (call GpuBatch::begin)".into(),
        ));
    }
    let c = &state.config;
    if layer >= c.n_layers {
        return Err(CudaError::Sequence(format!(
            "layer {layer} does not exist (the model has {})",
            c.n_layers
        )));
    }
    let (n, pos0) = (batch.n, batch.pos0);
    if state.n_past != pos0 || state.in_token {
        return Err(CudaError::Sequence(
            "the state moved since the batch began (truncate, reset or a token step)".into(),
        ));
    }
    if state.layer_len[layer] != pos0 {
        return Err(CudaError::Sequence(format!(
            "layer {layer} already ran for this batch, or an earlier position is missing: run \
             each layer once, in order"
        )));
    }
    w.validate(c)?;
    let (eps, rope_dim, rope_base) = (c.rms_eps, c.rope_dim, c.rope_base);
    let (kv, ffn) = (c.kv_dim(), c.ffn_dim);
    let shape = state.shape;
    let b = state.backend.clone();
    let k = batch.kernels.clone();
    let sc = batch
        .scratch
        .as_mut()
        .ok_or_else(|| CudaError::Sequence("batch scratch missing".into()))?;
    let f = state.factors.as_ref();
    let (kc, vc) = match (state.k_cache.get_mut(layer), state.v_cache.get_mut(layer)) {
        (Some(kc), Some(vc)) => (kc, vc),
        _ => {
            return Err(CudaError::Sequence(format!(
                "no KV cache for layer {layer}"
            )))
        }
    };

    // --- Attention ---
    k.rmsnorm_f16(&b, &sc.x, &w.attn_norm, &mut sc.h16, n, eps)?;
    k.gemm(&b, &w.attn_q, &sc.h16, n, &mut sc.q, false)?;
    k.gemm(&b, &w.attn_k, &sc.h16, n, &mut sc.k, false)?;
    k.gemm(&b, &w.attn_v, &sc.h16, n, &mut sc.v, false)?;
    let (nh, nkv, hd) = (shape.n_heads, shape.n_kv_heads, shape.head_dim);
    k.rope(&b, &mut sc.q, n, nh, hd, rope_dim, pos0, rope_base, f)?;
    k.rope(&b, &mut sc.k, n, nkv, hd, rope_dim, pos0, rope_base, f)?;
    debug_assert_eq!(kv, nkv * hd);
    k.kv_store(&b, &sc.k, &sc.v, kc, vc, shape, n, pos0)?;
    k.attention(&b, &sc.q, kc, vc, &mut sc.h16, shape, n, pos0)?;
    k.gemm(&b, &w.attn_output, &sc.h16, n, &mut sc.x, true)?;

    // --- Feed-forward (SwiGLU) ---
    k.rmsnorm_f16(&b, &sc.x, &w.ffn_norm, &mut sc.h16, n, eps)?;
    k.gemm(&b, &w.ffn_gate, &sc.h16, n, &mut sc.gate, false)?;
    k.gemm(&b, &w.ffn_up, &sc.h16, n, &mut sc.up, false)?;
    let len = n * ffn;
    k.swiglu_f16(&b, &sc.gate, &sc.up, &mut sc.h16, len)?;
    k.gemm(&b, &w.ffn_down, &sc.h16, n, &mut sc.x, true)?;
    state.layer_len[layer] = pos0 + n;
    Ok(())
}
