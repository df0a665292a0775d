//! Several sequences through one pass over the layers: the rows of every sequence's part of a
//! step (one decode token, or a prefill chunk) go through each weight product together, so a
//! layer's weights are read once per step however many sequences run.
//!
//! A step is: [`MultiState::begin_step`] with the parts ([`StepPart`]: a sequence and its next
//! tokens), [`forward_layer_multi`] for every layer in order, [`MultiState::end_step`], then
//! [`MultiState::logits`] for the parts that asked for them. Keys and values live in a paged
//! f16 pool ([`KvPool`] bookkeeping, blocks of [`crate::paged::KV_BLOCK`] positions).
//!
//! Each row's arithmetic is the single-sequence path's ([`super::forward_layer`]): the matrix
//! products give every row the same result whatever the batch (one dot product per row and
//! token, in the same order), rope, norms and SwiGLU are per row or per part, and each part's
//! attention is the single path's kernel over that sequence's positions. So a sequence's
//! logits are bit-identical to running it alone through [`super::State`] with the same chunks
//! (attention uses its tiled kernel for chunks of 64 tokens or more, in both paths).

use half::f16;
use rayon::prelude::*;

use crate::config::LlamaConfig;
use crate::paged::{KvPool, KvPoolOptions, KvSeq, PartRows, StepPart, KV_BLOCK};
use crate::paged_step::StepBook;

use super::attention::{attention, AttentionShape};
use super::error::ForwardError;
use super::head::{embed, vector};
use super::matmul::{matmul, matmul_shared_input, Kernel};
use super::norm::rmsnorm;
use super::rope::RopeFreqs;
use super::simd;
use super::weights::{LayerWeights, TensorView};

/// Paged KV memory of several sequences and the activations of the current step (see the
/// module documentation).
#[derive(Debug, Clone)]
pub struct MultiState {
    config: LlamaConfig,
    kernel: Kernel,
    rope: RopeFreqs,
    /// Block tables, the step's parts, layers done, phase.
    book: StepBook,
    /// Per layer, keys and values `[block][KV_BLOCK][kv_dim]` as f16.
    keys: Vec<Vec<f16>>,
    values: Vec<Vec<f16>>,
    /// Hidden rows of the current step.
    hidden: Vec<f32>,
}

impl MultiState {
    /// An empty state for `config` with a KV pool of `opts.n_blocks` blocks (allocated now:
    /// [`KvPool::bytes_per_block`] each).
    pub fn new(
        config: &LlamaConfig,
        opts: KvPoolOptions,
        kernel: Kernel,
    ) -> Result<MultiState, ForwardError> {
        let pool = KvPool::new(config, opts)?;
        let per_layer = opts
            .n_blocks
            .checked_mul(KV_BLOCK * config.kv_dim())
            .ok_or_else(|| ForwardError::Batch(format!("{} KV blocks overflow", opts.n_blocks)))?;
        let zeros = || vec![f16::ZERO; per_layer];
        Ok(MultiState {
            config: config.clone(),
            kernel,
            rope: RopeFreqs::new(config),
            book: StepBook::new(pool, config.n_layers),
            keys: (0..config.n_layers).map(|_| zeros()).collect(),
            values: (0..config.n_layers).map(|_| zeros()).collect(),
            hidden: Vec::new(),
        })
    }

    /// The model config.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The matmul kernel in use.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The pool's bookkeeping (lengths, blocks in use).
    pub fn pool(&self) -> &KvPool {
        self.book.pool()
    }

    /// Grows the KV pool by `blocks` blocks (their keys and values allocated now, zeroed) and
    /// `seqs` sequence slots; between steps only. Block ids and tables in use stay valid.
    pub fn grow_pool(&mut self, blocks: usize, seqs: usize) -> Result<(), ForwardError> {
        self.book.not_open("grow_pool")?;
        let total = self
            .book
            .pool()
            .total_blocks()
            .checked_add(blocks)
            .and_then(|t| t.checked_mul(KV_BLOCK * self.config.kv_dim()))
            .ok_or_else(|| ForwardError::Batch(format!("{blocks} more KV blocks overflow")))?;
        self.book.pool_mut().grow(blocks, seqs)?;
        for v in self.keys.iter_mut().chain(self.values.iter_mut()) {
            v.resize(total, f16::ZERO);
        }
        Ok(())
    }

    /// Shrinks the KV pool towards `keep` blocks, dropping only free blocks at its tail (see
    /// [`KvPool::trim`]) and their memory; between steps only (no-op during a step). Returns
    /// the blocks the pool has now.
    pub fn trim_pool(&mut self, keep: usize) -> usize {
        if self.book.not_open("trim_pool").is_err() {
            return self.book.pool().total_blocks();
        }
        let total = self.book.pool_mut().trim(keep);
        let len = total * KV_BLOCK * self.config.kv_dim();
        for v in self.keys.iter_mut().chain(self.values.iter_mut()) {
            v.truncate(len);
            v.shrink_to_fit();
        }
        total
    }

    /// Starts an empty sequence.
    pub fn add_seq(&mut self) -> Result<KvSeq, ForwardError> {
        Ok(self.book.add_seq()?)
    }

    /// Removes a sequence and frees its blocks (unknown: no-op). During an open step the step
    /// is cancelled first.
    pub fn remove_seq(&mut self, s: KvSeq) {
        self.book.remove_seq(s);
    }

    /// Keeps the first `n` positions of `s` (speculation rollback); no-op if it holds fewer.
    /// During an open step the step is cancelled first.
    pub fn truncate(&mut self, s: KvSeq, n: usize) {
        self.book.truncate(s, n);
    }

    /// Positions committed to `s` (None: unknown).
    pub fn seq_len(&self, s: KvSeq) -> Option<usize> {
        self.book.seq_len(s)
    }

    /// Opens a step of `parts` (see [`KvPool::reserve_step`]: all or nothing) with the
    /// embedding rows of their tokens, in part order.
    pub fn begin_step(
        &mut self,
        token_embd: &TensorView<'_>,
        parts: &[StepPart],
    ) -> Result<(), ForwardError> {
        self.book.not_open("begin_step")?;
        let tokens: Vec<u32> = parts
            .iter()
            .flat_map(|p| p.tokens.iter().copied())
            .collect();
        let hidden = embed(token_embd, &tokens)?;
        self.begin_step_hidden(parts, hidden)
    }

    /// [`MultiState::begin_step`] with ready hidden rows (`dim` values per token of every part,
    /// in part order).
    pub fn begin_step_hidden(
        &mut self,
        parts: &[StepPart],
        hidden: Vec<f32>,
    ) -> Result<(), ForwardError> {
        self.book.not_open("begin_step")?;
        let n: usize = parts.iter().map(|p| p.tokens.len()).sum();
        if hidden.len() != n * self.config.dim {
            return Err(ForwardError::Batch(format!(
                "{} hidden values for {n} rows of {}",
                hidden.len(),
                self.config.dim
            )));
        }
        self.book.open(parts)?;
        self.hidden = hidden;
        Ok(())
    }

    /// Commits the step's positions (every layer must have run).
    pub fn end_step(&mut self) -> Result<(), ForwardError> {
        Ok(self.book.end()?)
    }

    /// Abandons an open step: every sequence keeps its length from before it (no-op when no
    /// step is open).
    pub fn cancel_step(&mut self) {
        self.book.cancel();
    }

    /// Hidden rows of the current (or last ended) step.
    pub fn hidden(&self) -> &[f32] {
        &self.hidden
    }

    /// Where each part's rows lie in the current (or last ended) step.
    pub fn parts(&self) -> &[PartRows] {
        self.book.rows()
    }

    /// After [`MultiState::end_step`]: final norm and LM head of the last row of every part
    /// that asked for logits, in part order (the head read once for all of them).
    pub fn logits(
        &self,
        output_norm: &TensorView<'_>,
        lm_head: &TensorView<'_>,
    ) -> Result<Vec<(KvSeq, Vec<f32>)>, ForwardError> {
        self.book.require_ended()?;
        let dim = self.config.dim;
        if lm_head.row_len != dim || output_norm.row_len * output_norm.n_rows != dim {
            return Err(ForwardError::Batch(format!(
                "final norm of {} values and head rows of {}, the width is {dim}",
                output_norm.row_len * output_norm.n_rows,
                lm_head.row_len
            )));
        }
        let picked: Vec<&PartRows> = self.book.rows().iter().filter(|r| r.want_logits).collect();
        let norm = vector(output_norm)?;
        let mut xn = vec![0f32; picked.len() * dim];
        for (r, o) in picked.iter().zip(xn.chunks_exact_mut(dim)) {
            let last = r.row0 + r.n - 1;
            rmsnorm(
                &self.hidden[last * dim..(last + 1) * dim],
                &norm,
                self.config.rms_eps,
                o,
            );
        }
        let vocab = lm_head.n_rows;
        let mut out = vec![0f32; picked.len() * vocab];
        matmul(lm_head, &xn, picked.len(), &mut out, self.kernel)?;
        Ok(picked
            .iter()
            .zip(out.chunks_exact(vocab.max(1)))
            .map(|(r, l)| (r.seq, l.to_vec()))
            .collect())
    }
}

/// Splits `v` into consecutive mutable runs of `lens[i] * width` values.
fn split_runs<'a>(mut v: &'a mut [f32], lens: &[usize], width: usize) -> Vec<&'a mut [f32]> {
    let mut out = Vec::with_capacity(lens.len());
    for &n in lens {
        let (a, b) = std::mem::take(&mut v).split_at_mut(n * width);
        out.push(a);
        v = b;
    }
    out
}

/// Copies positions `0..n` of a sequence's keys or values of one layer (f16, by block) into
/// contiguous f32 rows.
fn gather(store: &[f16], blocks: &[u32], n: usize, kv_dim: usize, out: &mut Vec<f32>) {
    out.clear();
    out.reserve(n * kv_dim);
    let per_block = KV_BLOCK * kv_dim;
    for (i, &b) in blocks.iter().enumerate() {
        let take = n.saturating_sub(i * KV_BLOCK).min(KV_BLOCK) * kv_dim;
        if take == 0 {
            break;
        }
        let at = b as usize * per_block;
        out.extend(store[at..at + take].iter().map(|h| h.to_f32()));
    }
}

/// Runs transformer block `layer` over every row of `st`'s open step, in place (weights read
/// once for all rows; the same [`LayerWeights`] views as [`super::forward_layer`]). Layers run
/// in order, each once per step.
pub fn forward_layer_multi(
    layer: usize,
    w: &LayerWeights<'_>,
    st: &mut MultiState,
) -> Result<(), ForwardError> {
    st.book.enter_layer(layer)?;
    let c = &st.config;
    w.validate(c)?;
    let (dim, kv_dim, ffn_dim) = (c.dim, c.kv_dim(), c.ffn_dim);
    let n = st.book.n_rows();
    let kernel = st.kernel;
    let lens: Vec<usize> = st.book.rows().iter().map(|r| r.n).collect();

    // --- Attention ---
    let mut xn = vec![0f32; n * dim];
    rmsnorm(&st.hidden, &vector(&w.attn_norm)?, c.rms_eps, &mut xn);
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
    for r in st.book.rows() {
        for t in 0..r.n {
            let (row, pos) = (r.row0 + t, r.pos0 + t);
            st.rope.apply(&mut q[row * dim..(row + 1) * dim], pos);
            st.rope.apply(&mut k[row * kv_dim..(row + 1) * kv_dim], pos);
            let (b, off) = st.book.pool().locate(r.seq, pos).ok_or_else(|| {
                ForwardError::Batch(format!("{} has no block for position {pos}", r.seq))
            })?;
            let at = (b * KV_BLOCK + off) * kv_dim;
            let src = row * kv_dim..(row + 1) * kv_dim;
            for (d, s) in st.keys[layer][at..at + kv_dim]
                .iter_mut()
                .zip(&k[src.clone()])
            {
                *d = f16::from_f32(*s);
            }
            for (d, s) in st.values[layer][at..at + kv_dim].iter_mut().zip(&v[src]) {
                *d = f16::from_f32(*s);
            }
        }
    }
    let shape = AttentionShape {
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
    };
    let mut att = vec![0f32; n * dim];
    {
        let (keys, values, pool) = (&st.keys[layer], &st.values[layer], st.book.pool());
        let outs = split_runs(&mut att, &lens, dim);
        st.book.rows().par_iter().zip(outs).try_for_each(
            |(r, out)| -> Result<(), ForwardError> {
                let blocks = pool
                    .blocks(r.seq)
                    .ok_or_else(|| ForwardError::Batch(format!("{} vanished", r.seq)))?;
                let (mut kf, mut vf) = (Vec::new(), Vec::new());
                gather(keys, blocks, r.pos0 + r.n, kv_dim, &mut kf);
                gather(values, blocks, r.pos0 + r.n, kv_dim, &mut vf);
                let qr = &q[r.row0 * dim..(r.row0 + r.n) * dim];
                attention(qr, &kf, &vf, r.pos0, shape, out);
                Ok(())
            },
        )?;
    }
    let mut o = vec![0f32; n * dim];
    matmul(&w.attn_output, &att, n, &mut o, kernel)?;
    for (xi, oi) in st.hidden.iter_mut().zip(&o) {
        *xi += oi;
    }

    // --- Feed-forward (SwiGLU) ---
    rmsnorm(&st.hidden, &vector(&w.ffn_norm)?, c.rms_eps, &mut xn);
    let mut gate = vec![0f32; n * ffn_dim];
    let mut up = vec![0f32; n * ffn_dim];
    matmul_shared_input(
        &[&w.ffn_gate, &w.ffn_up],
        &xn,
        n,
        &mut [&mut gate, &mut up],
        kernel,
    )?;
    // Per part, as the single path runs it over its batch (its tail elements differ).
    for r in st.book.rows() {
        let span = r.row0 * ffn_dim..(r.row0 + r.n) * ffn_dim;
        simd::swiglu(&mut gate[span.clone()], &up[span]);
    }
    matmul(&w.ffn_down, &gate, n, &mut o, kernel)?;
    for (xi, oi) in st.hidden.iter_mut().zip(&o) {
        *xi += oi;
    }
    st.book.layer_done(layer);
    Ok(())
}
