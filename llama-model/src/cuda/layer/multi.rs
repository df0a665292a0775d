//! Several sequences through one pass over the layers on the GPU, the CUDA counterpart of
//! `cpu::MultiState`: the rows of every sequence's part of a step (one decode token or a
//! prefill chunk) go through each weight product together, each weight read once per step (up
//! to [`DEFAULT_MATVEC_ROWS`] rows, at most [`MATVEC_MAX_ROWS`], a few-row matvec that decodes
//! every weight block once for all rows, beyond that the batched tensor-core GEMM), rope at each
//! row's own position, keys and values into a paged f16 pool in VRAM through a device-side block
//! table, and one attention launch over every sequence's own blocks (causal within a prefill
//! chunk).
//!
//! A step: [`GpuMultiState::begin_step`] (blocks reserved all or nothing, the step's positions,
//! pool slots, attention tiles and block table uploaded in one copy, embeddings looked up on
//! the GPU), [`forward_layer_multi`] for every layer in order (weights where the caller keeps
//! them: resident buffer or streamed slot), [`GpuMultiState::end_step`], then
//! [`GpuMultiState::logits`] or [`GpuMultiState::argmax`] for the parts that asked.
//!
//! Precision is the batched prefill's (f16 GEMM inputs, f32 products and accumulators), so a
//! row's logits are close to, not bit-equal with, the one-token path's.

pub(crate) mod hybrid;
mod kernels;

use std::sync::Arc;

use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, DevicePtr};

use crate::config::LlamaConfig;
use crate::cuda::attention::AttnShape;
use crate::cuda::backend::CudaBackend;
use crate::cuda::error::{driver, CudaError, Result};
use crate::cuda::layer::batch::BatchKernels;
use crate::cuda::weights::DeviceWeight;
use crate::paged::{KvPool, KvPoolOptions, KvSeq, PartRows, StepPart, KV_BLOCK};
use crate::paged_step::StepBook;

use super::DeviceLayerWeights;
use kernels::MultiKernels;
pub use kernels::{DEFAULT_MATVEC_ROWS, MATVEC_MAX_ROWS, MULTI_ENTRY_POINTS, MULTI_KERNEL_MODULES};

/// Scratch activations for up to `cap` rows.
#[derive(Debug)]
struct Scratch {
    cap: usize,
    x: CudaSlice<f32>,
    h16: CudaSlice<u16>,
    q: CudaSlice<f32>,
    k: CudaSlice<f32>,
    v: CudaSlice<f32>,
    gate: CudaSlice<f32>,
    up: CudaSlice<f32>,
    /// Token ids of the step.
    ids: CudaSlice<u32>,
}

/// Where the step's index arrays lie in the metadata buffer (offsets in i32).
#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    pos: usize,
    slot: usize,
    tiles: usize,
    n_tiles: usize,
    table: usize,
    sel: usize,
    n_sel: usize,
    end: usize,
}

/// Paged f16 KV of several sequences in VRAM and the activations of the current step (see the
/// module documentation).
#[derive(Debug)]
pub struct GpuMultiState {
    backend: Arc<CudaBackend>,
    config: LlamaConfig,
    shape: AttnShape,
    /// Block tables, the step's parts, layers done, phase.
    book: StepBook,
    batch: Arc<BatchKernels>,
    mk: MultiKernels,
    factors: Option<CudaSlice<f32>>,
    /// Per layer, keys and values `[block * KV_BLOCK + offset][kv_dim]` f16.
    k_pool: Vec<CudaSlice<u16>>,
    v_pool: Vec<CudaSlice<u16>>,
    scratch: Option<Scratch>,
    meta_buf: Option<CudaSlice<i32>>,
    meta: Meta,
    /// Rows per attention tile (query heads per KV head permitting).
    tile_rows: usize,
    /// Steps of at most this many rows take the few-row matvec instead of the GEMM.
    matvec_rows: usize,
    /// Head scratch: gathered rows, their f16 norm, logits, argmax ids.
    sel_x: Option<CudaSlice<f32>>,
    sel_h16: Option<CudaSlice<u16>>,
    logits: Option<CudaSlice<f32>>,
    ids: Option<CudaSlice<u32>>,
}

fn alloc<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    s: &Arc<CudaStream>,
    n: usize,
) -> Result<CudaSlice<T>> {
    s.alloc_zeros::<T>(n.max(1)).map_err(driver("alloc"))
}

fn overflow(what: &str) -> CudaError {
    CudaError::Shape {
        op: "multi step",
        detail: format!("{what} overflows"),
    }
}

impl GpuMultiState {
    /// A state for `config` with a KV pool of `opts.n_blocks` blocks in VRAM (allocated now:
    /// [`KvPool::bytes_per_block`] each), on `backend`'s GPU.
    pub fn new(
        backend: Arc<CudaBackend>,
        config: &LlamaConfig,
        opts: KvPoolOptions,
    ) -> Result<Self> {
        let pool = KvPool::new(config, opts)?;
        let shape = AttnShape {
            n_heads: config.n_heads,
            n_kv_heads: config.n_kv_heads,
            head_dim: config.head_dim,
            max_ctx: pool.max_context(),
        };
        if config.n_heads * config.head_dim != config.dim {
            return Err(CudaError::Shape {
                op: "multi state",
                detail: format!(
                    "{} heads of {} do not make the width {}",
                    config.n_heads, config.head_dim, config.dim
                ),
            });
        }
        let tile_rows = MultiKernels::tile_rows(&shape)?;
        let per_layer = opts
            .n_blocks
            .checked_mul(KV_BLOCK * config.kv_dim())
            .ok_or_else(|| overflow("the KV pool"))?;
        let s = backend.stream().clone();
        let mut k_pool = Vec::with_capacity(config.n_layers);
        let mut v_pool = Vec::with_capacity(config.n_layers);
        for _ in 0..config.n_layers {
            k_pool.push(alloc::<u16>(&s, per_layer)?);
            v_pool.push(alloc::<u16>(&s, per_layer)?);
        }
        let factors = match &config.rope_freq_factors {
            Some(f) => Some(s.clone_htod(f.as_slice()).map_err(driver("upload"))?),
            None => None,
        };
        Ok(Self {
            batch: BatchKernels::get(&backend)?,
            mk: MultiKernels::load(&backend)?,
            backend,
            config: config.clone(),
            shape,
            book: StepBook::new(pool, config.n_layers),
            factors,
            k_pool,
            v_pool,
            scratch: None,
            meta_buf: None,
            meta: Meta::default(),
            tile_rows,
            matvec_rows: DEFAULT_MATVEC_ROWS,
            sel_x: None,
            sel_h16: None,
            logits: None,
            ids: None,
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

    /// Records an event after the work enqueued so far (see `GpuState::record_event`).
    pub fn record_event(&self) -> Result<CudaEvent> {
        self.stream()
            .record_event(None)
            .map_err(driver("record event"))
    }

    /// Makes the compute stream wait for `event` (see `GpuState::wait_event`).
    pub fn wait_event(&self, event: &CudaEvent) -> Result<()> {
        self.stream().wait(event).map_err(driver("wait event"))
    }

    /// Steps (and heads) of at most `rows` rows compute their weight products with the few-row
    /// matvec (each weight block decoded once for all rows, f16 activations like the GEMM);
    /// larger ones with the tensor-core GEMM. Default [`DEFAULT_MATVEC_ROWS`], most
    /// [`MATVEC_MAX_ROWS`]; 0 = always the GEMM.
    pub fn set_matvec_rows(&mut self, rows: usize) {
        self.matvec_rows = rows.min(MATVEC_MAX_ROWS);
    }

    /// The few-row matvec limit in use (see [`GpuMultiState::set_matvec_rows`]).
    pub fn matvec_rows(&self) -> usize {
        self.matvec_rows
    }

    /// The model config.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The pool's bookkeeping (lengths, blocks in use).
    pub fn pool(&self) -> &KvPool {
        self.book.pool()
    }

    /// Grows the KV pool by `blocks` blocks and `seqs` sequence slots; between steps only. Each
    /// layer's keys and values move to a larger buffer in turn (the new blocks zeroed, the old
    /// contents copied on the compute stream, the old buffer freed in stream order after the
    /// copy), so the peak is the pool plus one layer's part of it. Block ids and tables in use
    /// stay valid. On an error the pool keeps its size.
    pub fn grow_pool(&mut self, blocks: usize, seqs: usize) -> Result<()> {
        self.book.not_open("grow_pool")?;
        let total = self
            .book
            .pool()
            .total_blocks()
            .checked_add(blocks)
            .ok_or_else(|| overflow("the grown KV pool"))?;
        if blocks > 0 {
            self.resize_pool(total)?;
        }
        if let Err(e) = self.book.pool_mut().grow(blocks, seqs) {
            let old = self.book.pool().total_blocks();
            // Shrinking back only drops the zeroed tail just added.
            let _ = self.resize_pool(old);
            return Err(e.into());
        }
        Ok(())
    }

    /// Shrinks the KV pool towards `keep` blocks, dropping only free blocks at its tail (see
    /// [`KvPool::trim`]) and their device memory; between steps only (no-op during a step).
    /// Returns the blocks the pool has now.
    pub fn trim_pool(&mut self, keep: usize) -> usize {
        if self.book.not_open("trim_pool").is_err() {
            return self.book.pool().total_blocks();
        }
        let before = self.book.pool().total_blocks();
        let total = self.book.pool_mut().trim(keep);
        if total < before {
            // On an error the blocks are gone from the books and their memory stays until the
            // next resize: nothing reads it.
            let _ = self.resize_pool(total);
        }
        total
    }

    /// Reallocates every layer's key and value buffers for `blocks` blocks, keeping the common
    /// prefix (the pool's books are the caller's).
    fn resize_pool(&mut self, blocks: usize) -> Result<()> {
        let len = blocks
            .checked_mul(KV_BLOCK * self.config.kv_dim())
            .ok_or_else(|| overflow("the KV pool"))?;
        let s = self.backend.stream().clone();
        for pool in self.k_pool.iter_mut().chain(self.v_pool.iter_mut()) {
            if pool.len() == len.max(1) {
                continue;
            }
            let mut next = alloc::<u16>(&s, len)?;
            let keep = pool.len().min(next.len());
            s.memcpy_dtod(&pool.slice(..keep), &mut next.slice_mut(..keep))
                .map_err(driver("copy the KV pool"))?;
            // The old buffer is freed on the same stream, after the copy and every kernel
            // enqueued before it.
            *pool = next;
        }
        Ok(())
    }

    /// Starts an empty sequence.
    pub fn add_seq(&mut self) -> Result<KvSeq> {
        Ok(self.book.add_seq()?)
    }

    /// Removes a sequence and frees its blocks (unknown: no-op); cancels an open step first.
    pub fn remove_seq(&mut self, s: KvSeq) {
        self.book.remove_seq(s);
    }

    /// Keeps the first `n` positions of `s` (speculation rollback); cancels an open step first.
    pub fn truncate(&mut self, s: KvSeq, n: usize) {
        self.book.truncate(s, n);
    }

    /// Positions committed to `s` (None: unknown).
    pub fn seq_len(&self, s: KvSeq) -> Option<usize> {
        self.book.seq_len(s)
    }

    /// Where each part's rows lie in the current (or last ended) step.
    pub fn parts(&self) -> &[PartRows] {
        self.book.rows()
    }

    fn grow(&mut self, n: usize) -> Result<()> {
        if self.scratch.as_ref().is_some_and(|s| s.cap >= n) {
            return Ok(());
        }
        self.scratch = None;
        let c = &self.config;
        let s = self.backend.stream().clone();
        let rows = |w: usize| n.checked_mul(w).ok_or_else(|| overflow("scratch"));
        self.scratch = Some(Scratch {
            cap: n,
            x: alloc(&s, rows(c.dim)?)?,
            h16: alloc(&s, rows(c.dim.max(c.ffn_dim))?)?,
            q: alloc(&s, rows(c.dim)?)?,
            k: alloc(&s, rows(c.kv_dim())?)?,
            v: alloc(&s, rows(c.kv_dim())?)?,
            gate: alloc(&s, rows(c.ffn_dim)?)?,
            up: alloc(&s, rows(c.ffn_dim)?)?,
            ids: alloc(&s, n)?,
        });
        Ok(())
    }

    /// The step's index arrays: positions, pool slots, attention tiles, block table, rows of
    /// the parts that want logits.
    fn build_meta(&self) -> Result<(Vec<i32>, Meta)> {
        let to_i32 = |v: usize| i32::try_from(v).map_err(|_| overflow("an index"));
        let n = self.book.n_rows();
        let width = self.book.pool().max_blocks_per_seq();
        let mut pos = Vec::with_capacity(n);
        let mut slot = Vec::with_capacity(n);
        let mut tiles = Vec::new();
        let mut sel = Vec::new();
        for r in self.book.rows() {
            for t in 0..r.n {
                let p = r.pos0 + t;
                let (b, off) = self.book.pool().locate(r.seq, p).ok_or_else(|| {
                    CudaError::Sequence(format!("{} has no block for position {p}", r.seq))
                })?;
                pos.push(to_i32(p)?);
                slot.push(to_i32(b * KV_BLOCK + off)?);
            }
            let mut t = 0;
            while t < r.n {
                let m = self.tile_rows.min(r.n - t);
                tiles.extend([
                    to_i32(r.row0 + t)?,
                    to_i32(m)?,
                    to_i32(r.pos0 + t)?,
                    to_i32(r.seq.0 as usize)?,
                ]);
                t += m;
            }
            if r.want_logits {
                sel.push(to_i32(r.row0 + r.n - 1)?);
            }
        }
        let mut table = vec![0i32; self.book.pool().max_seqs() * width];
        for s in self.book.pool().seqs() {
            if let Some(bl) = self.book.pool().blocks(s) {
                let row = s.0 as usize * width;
                for (i, &b) in bl.iter().enumerate() {
                    table[row + i] = to_i32(b as usize)?;
                }
            }
        }
        let mut m = Meta {
            pos: 0,
            slot: n,
            tiles: 2 * n,
            n_tiles: tiles.len() / 4,
            ..Meta::default()
        };
        m.table = m.tiles + tiles.len();
        m.sel = m.table + table.len();
        m.n_sel = sel.len();
        m.end = m.sel + sel.len();
        let mut all = pos;
        all.extend(slot);
        all.extend(tiles);
        all.extend(table);
        all.extend(sel);
        Ok((all, m))
    }

    /// Opens a step of `parts` (see [`KvPool::reserve_step`]: all or nothing) with the
    /// embedding rows of their tokens, in part order, looked up on the GPU.
    pub fn begin_step(&mut self, token_embd: &DeviceWeight<'_>, parts: &[StepPart]) -> Result<()> {
        self.book.not_open("begin_step")?;
        if token_embd.row_len != self.config.dim {
            return Err(CudaError::Shape {
                op: "embed",
                detail: format!(
                    "token_embd rows hold {}, the width is {}",
                    token_embd.row_len, self.config.dim
                ),
            });
        }
        let tokens: Vec<u32> = parts
            .iter()
            .flat_map(|p| p.tokens.iter().copied())
            .collect();
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= token_embd.n_rows) {
            return Err(CudaError::TokenOutOfRange {
                token: t,
                vocab_size: token_embd.n_rows,
            });
        }
        self.book.open(parts)?;
        if let Err(e) = self.upload_step(token_embd, &tokens) {
            self.book.cancel();
            return Err(e);
        }
        Ok(())
    }

    fn upload_step(&mut self, token_embd: &DeviceWeight<'_>, tokens: &[u32]) -> Result<()> {
        let n = tokens.len();
        self.grow(n)?;
        let (meta, m) = self.build_meta()?;
        let s = self.backend.stream().clone();
        if self.meta_buf.as_ref().is_none_or(|b| b.len() < m.end) {
            self.meta_buf = None;
            self.meta_buf = Some(alloc::<i32>(&s, m.end.next_power_of_two())?);
        }
        let (Some(buf), Some(sc)) = (self.meta_buf.as_mut(), self.scratch.as_mut()) else {
            return Err(CudaError::Sequence("multi step scratch missing".into()));
        };
        s.memcpy_htod(&meta[..], &mut buf.slice_mut(..m.end))
            .map_err(driver("upload step"))?;
        s.memcpy_htod(tokens, &mut sc.ids.slice_mut(..n))
            .map_err(driver("upload tokens"))?;
        let (tp, _g) = sc.ids.device_ptr(&s);
        self.backend.embed_launch(token_embd, tp, n, &mut sc.x)?;
        self.meta = m;
        Ok(())
    }

    /// Commits the step's positions (every layer must have run).
    pub fn end_step(&mut self) -> Result<()> {
        Ok(self.book.end()?)
    }

    /// Abandons an open step: every sequence keeps its length from before it.
    pub fn cancel_step(&mut self) {
        self.book.cancel();
    }

    /// Final norm + LM head of the selected rows into `self.logits`; returns (rows, vocab).
    fn head_rows(
        &mut self,
        output_norm: &DeviceWeight<'_>,
        lm_head: &DeviceWeight<'_>,
    ) -> Result<(usize, usize)> {
        self.book.require_ended()?;
        let dim = self.config.dim;
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
        let (k, vocab) = (self.meta.n_sel, lm_head.n_rows);
        if k == 0 {
            return Ok((0, vocab));
        }
        let s = self.backend.stream().clone();
        let need_x = k.checked_mul(dim).ok_or_else(|| overflow("head rows"))?;
        let need_l = k.checked_mul(vocab).ok_or_else(|| overflow("logit rows"))?;
        if self.sel_x.as_ref().is_none_or(|b| b.len() < need_x) {
            self.sel_x = None;
            self.sel_h16 = None;
            self.sel_x = Some(alloc(&s, need_x)?);
            self.sel_h16 = Some(alloc(&s, need_x)?);
        }
        if self.logits.as_ref().is_none_or(|b| b.len() < need_l) {
            self.logits = None;
            self.logits = Some(alloc(&s, need_l)?);
        }
        let (Some(sc), Some(buf), Some(sx), Some(sh), Some(lg)) = (
            self.scratch.as_ref(),
            self.meta_buf.as_ref(),
            self.sel_x.as_mut(),
            self.sel_h16.as_mut(),
            self.logits.as_mut(),
        ) else {
            return Err(CudaError::Sequence("multi step scratch missing".into()));
        };
        let b = &self.backend;
        let sel = buf.slice(self.meta.sel..self.meta.sel + k);
        self.mk.gather(b, &sc.x, sx, &sel, k, dim)?;
        let bk = &self.batch;
        bk.rmsnorm_f16(b, sx, output_norm, sh, k, self.config.rms_eps)?;
        product(bk, &self.mk, self.matvec_rows, b, lm_head, sh, k, lg, false)?;
        Ok((k, vocab))
    }

    /// After [`GpuMultiState::end_step`]: the logits after the last row of every part that
    /// asked for them, in part order, copied to the host.
    pub fn logits(
        &mut self,
        output_norm: &DeviceWeight<'_>,
        lm_head: &DeviceWeight<'_>,
    ) -> Result<Vec<(KvSeq, Vec<f32>)>> {
        let (k, vocab) = self.head_rows(output_norm, lm_head)?;
        let seqs: Vec<KvSeq> = self
            .book
            .rows()
            .iter()
            .filter(|r| r.want_logits)
            .map(|r| r.seq)
            .collect();
        if k == 0 {
            return Ok(Vec::new());
        }
        let lg = self
            .logits
            .as_ref()
            .ok_or_else(|| CudaError::Sequence("no logits".into()))?;
        let mut out = vec![0f32; k * vocab];
        self.backend
            .stream()
            .memcpy_dtoh(&lg.slice(..k * vocab), &mut out[..])
            .map_err(driver("download logits"))?;
        Ok(seqs
            .into_iter()
            .zip(out.chunks_exact(vocab.max(1)))
            .map(|(s, l)| (s, l.to_vec()))
            .collect())
    }

    /// After [`GpuMultiState::end_step`]: the greedy next token of every part that asked for
    /// logits (argmax on the GPU, lowest index on ties; only the ids cross the bus).
    pub fn argmax(
        &mut self,
        output_norm: &DeviceWeight<'_>,
        lm_head: &DeviceWeight<'_>,
    ) -> Result<Vec<(KvSeq, u32)>> {
        let (k, vocab) = self.head_rows(output_norm, lm_head)?;
        let seqs: Vec<KvSeq> = self
            .book
            .rows()
            .iter()
            .filter(|r| r.want_logits)
            .map(|r| r.seq)
            .collect();
        if k == 0 {
            return Ok(Vec::new());
        }
        let s = self.backend.stream().clone();
        if self.ids.as_ref().is_none_or(|b| b.len() < k) {
            self.ids = None;
            self.ids = Some(alloc(&s, k)?);
        }
        let (Some(lg), Some(ids)) = (self.logits.as_ref(), self.ids.as_mut()) else {
            return Err(CudaError::Sequence("no logits".into()));
        };
        self.batch.argmax_rows(&self.backend, lg, k, vocab, ids)?;
        let mut out = vec![0u32; k];
        s.memcpy_dtoh(&ids.slice(..k), &mut out[..])
            .map_err(driver("download tokens"))?;
        Ok(seqs.into_iter().zip(out).collect())
    }
}

/// `y (+)= x · w^T` for `n` f16 rows: the few-row matvec up to `matvec_rows` rows, else the
/// tensor-core GEMM.
#[allow(clippy::too_many_arguments)]
fn product(
    k: &BatchKernels,
    mk: &MultiKernels,
    matvec_rows: usize,
    b: &CudaBackend,
    w: &DeviceWeight<'_>,
    x: &CudaSlice<u16>,
    n: usize,
    y: &mut CudaSlice<f32>,
    accumulate: bool,
) -> Result<()> {
    if n <= matvec_rows {
        mk.matvec_rows(b, w, x, n, y, accumulate)
    } else {
        k.gemm(b, w, x, n, y, accumulate)
    }
}

/// Rope at each row's position on the step's Q and K rows (in the scratch's `q` and `k`), the
/// keys and values into `layer`'s pool, and the paged attention into the scratch's `h16`: the
/// middle of a layer, whole ([`forward_layer_multi`]) or split ([`hybrid`]).
fn attend(layer: usize, st: &mut GpuMultiState) -> Result<()> {
    let c = &st.config;
    let n = st.book.n_rows();
    let (kv, rope_dim, rope_base) = (c.kv_dim(), c.rope_dim, c.rope_base);
    let shape = st.shape;
    let m = st.meta;
    let b = st.backend.clone();
    let (Some(sc), Some(buf)) = (st.scratch.as_mut(), st.meta_buf.as_ref()) else {
        return Err(no_scratch());
    };
    let (Some(kp), Some(vp)) = (st.k_pool.get_mut(layer), st.v_pool.get_mut(layer)) else {
        return Err(CudaError::Sequence(format!("no KV pool for layer {layer}")));
    };
    let f = st.factors.as_ref();
    let pos = buf.slice(m.pos..m.pos + n);
    let slot = buf.slice(m.slot..m.slot + n);
    let tiles = buf.slice(m.tiles..m.tiles + 4 * m.n_tiles);
    let table = buf.slice(m.table..m.sel);
    let width = st.book.pool().max_blocks_per_seq();
    let (nh, nkv, hd) = (shape.n_heads, shape.n_kv_heads, shape.head_dim);
    st.mk
        .rope(&b, &mut sc.q, n, nh, hd, rope_dim, &pos, rope_base, f)?;
    st.mk
        .rope(&b, &mut sc.k, n, nkv, hd, rope_dim, &pos, rope_base, f)?;
    st.mk.kv_store(&b, &sc.k, &sc.v, kp, vp, n, kv, &slot)?;
    st.mk.attention(
        &b,
        &sc.q,
        kp,
        vp,
        &mut sc.h16,
        &tiles,
        m.n_tiles,
        &table,
        width,
        shape,
    )
}

/// The error of a layer run outside a step (no scratch allocated by
/// [`GpuMultiState::begin_step`]).
fn no_scratch() -> CudaError {
    CudaError::Sequence("multi step scratch missing".into())
}

/// Runs transformer block `layer` over every row of `st`'s open step, in place, with `w` read
/// where the caller keeps it (once for all rows). Layers run in order, each once per step.
pub fn forward_layer_multi(
    layer: usize,
    w: &DeviceLayerWeights<'_>,
    st: &mut GpuMultiState,
) -> Result<()> {
    st.book.enter_layer(layer)?;
    w.validate(&st.config)?;
    let n = st.book.n_rows();
    let (eps, ffn) = (st.config.rms_eps, st.config.ffn_dim);
    let b = st.backend.clone();
    let k = st.batch.clone();
    let mv = st.matvec_rows;
    let sc = st.scratch.as_mut().ok_or_else(no_scratch)?;
    k.rmsnorm_f16(&b, &sc.x, &w.attn_norm, &mut sc.h16, n, eps)?;
    product(&k, &st.mk, mv, &b, &w.attn_q, &sc.h16, n, &mut sc.q, false)?;
    product(&k, &st.mk, mv, &b, &w.attn_k, &sc.h16, n, &mut sc.k, false)?;
    product(&k, &st.mk, mv, &b, &w.attn_v, &sc.h16, n, &mut sc.v, false)?;
    attend(layer, st)?;
    let sc = st.scratch.as_mut().ok_or_else(no_scratch)?;
    let mk = &st.mk;
    product(&k, mk, mv, &b, &w.attn_output, &sc.h16, n, &mut sc.x, true)?;

    // --- Feed-forward (SwiGLU) ---
    k.rmsnorm_f16(&b, &sc.x, &w.ffn_norm, &mut sc.h16, n, eps)?;
    product(&k, mk, mv, &b, &w.ffn_gate, &sc.h16, n, &mut sc.gate, false)?;
    product(&k, mk, mv, &b, &w.ffn_up, &sc.h16, n, &mut sc.up, false)?;
    k.swiglu_f16(&b, &sc.gate, &sc.up, &mut sc.h16, n * ffn)?;
    product(&k, mk, mv, &b, &w.ffn_down, &sc.h16, n, &mut sc.x, true)?;
    st.book.layer_done(layer);
    Ok(())
}
