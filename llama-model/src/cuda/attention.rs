//! Decode attention over an f16 KV cache (one query token, grouped-query heads), split along
//! the context (each split walked in tiles of [`ATTN_CHUNK`] positions with an online softmax)
//! and merged by a second kernel; and the rotary embedding fused with the KV store.

use cudarc::driver::{CudaSlice, DevicePtr, PushKernelArg};

use super::backend::{cfg, grid_for, i32_arg, need_len, CudaBackend};
use super::error::{driver, CudaError, Result};
use super::sys::Launch;

/// Context positions per tile of a split (`ATTN_CHUNK` in `kernels/attention.cu`).
pub const ATTN_CHUNK: usize = 256;
/// Threads of the partial-attention kernel (`ATTN_THREADS`).
const ATTN_THREADS: u32 = 128;
/// Largest head size the kernel's shared query buffer holds (`ATTN_MAX_HEAD_DIM`).
const ATTN_MAX_HEAD_DIM: usize = 256;

/// Shape of one layer's attention and KV cache. Each cache (K and V) is
/// `[n_kv_heads][max_ctx][head_dim]` IEEE half values stored as `u16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (divides `n_heads`).
    pub n_kv_heads: usize,
    /// Size of one head (even, at most 256).
    pub head_dim: usize,
    /// Positions the cache holds.
    pub max_ctx: usize,
}

impl AttnShape {
    fn check(&self, op: &'static str) -> Result<()> {
        let ok = self.n_heads > 0
            && self.n_kv_heads > 0
            && self.n_heads % self.n_kv_heads == 0
            && self.head_dim > 0
            && self.head_dim <= ATTN_MAX_HEAD_DIM
            && self.max_ctx > 0;
        if !ok {
            return Err(CudaError::Shape {
                op,
                detail: format!("unsupported attention shape {self:?} (kv heads must divide heads, head_dim 1..=256)"),
            });
        }
        i32_arg(op, "cache elements", self.cache_len())?;
        Ok(())
    }

    /// Elements of one cache (K or V) of this shape.
    pub fn cache_len(&self) -> usize {
        self.n_kv_heads
            .saturating_mul(self.max_ctx)
            .saturating_mul(self.head_dim)
    }

    /// Splits of the attention the decode state uses (fixed for a CUDA graph): about 512 CTAs
    /// over all heads, never more than one split per 32 positions of the cache.
    pub fn fixed_splits(&self) -> usize {
        (512 / self.n_heads.max(1))
            .min(self.max_ctx.div_ceil(32))
            .max(1)
    }

    /// Scratch floats [`CudaBackend::attention_decode`] needs for `n_ctx` positions.
    pub fn scratch_len(&self, n_ctx: usize) -> usize {
        self.n_heads
            .saturating_mul(n_ctx.div_ceil(ATTN_CHUNK))
            .saturating_mul(self.head_dim + 2)
    }
}

impl CudaBackend {
    /// Stores one token's keys and values (`[n_kv_heads][head_dim]` f32, rounded to f16) at
    /// position `pos` of the caches.
    pub fn kv_store(
        &self,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        k_cache: &mut CudaSlice<u16>,
        v_cache: &mut CudaSlice<u16>,
        shape: AttnShape,
        pos: usize,
    ) -> Result<()> {
        const OP: &str = "kv_store";
        shape.check(OP)?;
        let n = shape.n_kv_heads * shape.head_dim;
        need_len(OP, "k", k.len(), n)?;
        need_len(OP, "v", v.len(), n)?;
        need_len(OP, "k_cache", k_cache.len(), shape.cache_len())?;
        need_len(OP, "v_cache", v_cache.len(), shape.cache_len())?;
        if pos >= shape.max_ctx {
            return Err(CudaError::Shape {
                op: OP,
                detail: format!(
                    "position {pos} is past the cache ({} positions)",
                    shape.max_ctx
                ),
            });
        }
        let (nkv, hd, mc, p) = (
            i32_arg(OP, "n_kv_heads", shape.n_kv_heads)?,
            i32_arg(OP, "head_dim", shape.head_dim)?,
            i32_arg(OP, "max_ctx", shape.max_ctx)?,
            i32_arg(OP, "pos", pos)?,
        );
        let grid = grid_for(n, 256, OP)?;
        let mut l = Launch::new(self.stream(), &self.k.kv_store);
        l.0.arg(k)
            .arg(v)
            .arg(k_cache)
            .arg(v_cache)
            .arg(&nkv)
            .arg(&hd)
            .arg(&mc)
            .arg(&p);
        l.run(OP, cfg(grid, 256))
    }

    /// Attention of one query token (`q`: `[n_heads][head_dim]`, rotated) over cache positions
    /// `0..n_ctx`: `out[h] = softmax(q[h] . K[kvh] / sqrt(head_dim)) V[kvh]` with
    /// `kvh = h / (n_heads / n_kv_heads)`. `scratch` holds [`AttnShape::scratch_len`] floats.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_decode(
        &self,
        q: &CudaSlice<f32>,
        k_cache: &CudaSlice<u16>,
        v_cache: &CudaSlice<u16>,
        scratch: &mut CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        shape: AttnShape,
        n_ctx: usize,
    ) -> Result<()> {
        self.attention_decode_splits(
            q,
            k_cache,
            v_cache,
            scratch,
            out,
            shape,
            n_ctx,
            n_ctx.div_ceil(ATTN_CHUNK),
        )
    }

    /// As [`CudaBackend::attention_decode`] with the context cut into `splits` parts (of
    /// `ceil(n_ctx / splits)` positions rounded up to 32, each walked in tiles of
    /// [`ATTN_CHUNK`] with an online softmax; parts past the context stay empty) — the decode
    /// state's fixed split count. `scratch` holds `n_heads * splits * (head_dim + 2)` floats.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_decode_splits(
        &self,
        q: &CudaSlice<f32>,
        k_cache: &CudaSlice<u16>,
        v_cache: &CudaSlice<u16>,
        scratch: &mut CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        shape: AttnShape,
        n_ctx: usize,
        splits: usize,
    ) -> Result<()> {
        const OP: &str = "attention";
        shape.check(OP)?;
        if n_ctx == 0 || n_ctx > shape.max_ctx || splits == 0 {
            return Err(CudaError::Shape {
                op: OP,
                detail: format!(
                    "n_ctx {n_ctx} must be in 1..={} and splits ({splits}) positive",
                    shape.max_ctx
                ),
            });
        }
        let nq = shape.n_heads * shape.head_dim;
        need_len(OP, "q", q.len(), nq)?;
        need_len(OP, "out", out.len(), nq)?;
        need_len(OP, "k_cache", k_cache.len(), shape.cache_len())?;
        need_len(OP, "v_cache", v_cache.len(), shape.cache_len())?;
        let need = shape
            .n_heads
            .saturating_mul(splits)
            .saturating_mul(shape.head_dim + 2);
        need_len(OP, "scratch", scratch.len(), need)?;
        let (qp, _g) = q.device_ptr(self.stream());
        let nc = i32_arg(OP, "n_ctx", n_ctx)?;
        let mut counters = self
            .stream()
            .alloc_zeros::<u32>(shape.n_heads)
            .map_err(driver("alloc"))?;
        self.attention_launch(
            qp,
            k_cache,
            v_cache,
            scratch,
            out,
            shape,
            nc,
            0,
            splits,
            &mut counters,
        )
    }

    /// Launches the split attention (its last CTA per head merges the partials). The context
    /// length is `n_ctx`, or `step[0] + 1` read on the device when `step` (a device pointer) is
    /// not 0; `scratch` and `out` were checked by the caller for `splits` splits; `counters`
    /// holds `n_heads` zeros (left at zero by every launch).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_launch(
        &self,
        q: u64,
        k_cache: &CudaSlice<u16>,
        v_cache: &CudaSlice<u16>,
        scratch: &mut CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        shape: AttnShape,
        n_ctx: i32,
        step: u64,
        splits: usize,
        counters: &mut CudaSlice<u32>,
    ) -> Result<()> {
        const OP: &str = "attention";
        let splits32 = grid_for(splits, 1, OP)?;
        let heads = grid_for(shape.n_heads, 1, OP)?;
        let (nh, nkv, hd, mc) = (
            i32_arg(OP, "n_heads", shape.n_heads)?,
            i32_arg(OP, "n_kv_heads", shape.n_kv_heads)?,
            i32_arg(OP, "head_dim", shape.head_dim)?,
            i32_arg(OP, "max_ctx", shape.max_ctx)?,
        );
        let scale = 1.0 / (shape.head_dim as f32).sqrt();
        need_len(OP, "counters", counters.len(), shape.n_heads)?;
        let mut l = Launch::new(self.stream(), &self.k.attn_partial);
        l.0.arg(&q).arg(k_cache).arg(v_cache).arg(&mut *scratch);
        l.0.arg(&nh)
            .arg(&nkv)
            .arg(&hd)
            .arg(&mc)
            .arg(&n_ctx)
            .arg(&step)
            .arg(&scale)
            .arg(out)
            .arg(counters);
        let mut c = cfg(heads, ATTN_THREADS);
        c.grid_dim.1 = splits32;
        l.run(OP, c)
    }

    /// Rotary embedding of the query and key heads of one token and the f16 store of its keys
    /// and values at position `pos` of the caches, in one launch. `qkv` holds the token's
    /// `[n_heads][head_dim]` queries, then `[n_kv_heads][head_dim]` keys, then as many values
    /// (the layout [`CudaBackend::matvec_concat`] writes for Q, K, V); the queries and keys are
    /// rotated in place (as [`CudaBackend::rope`]), the keys after rotation and the values are
    /// rounded to f16 into the caches (as [`CudaBackend::kv_store`]).
    #[allow(clippy::too_many_arguments)]
    pub fn rope_kv(
        &self,
        qkv: &mut CudaSlice<f32>,
        k_cache: &mut CudaSlice<u16>,
        v_cache: &mut CudaSlice<u16>,
        shape: AttnShape,
        rope_dim: usize,
        pos: usize,
        base: f32,
        factors: Option<&CudaSlice<f32>>,
    ) -> Result<()> {
        const OP: &str = "rope_kv";
        if pos >= shape.max_ctx {
            return Err(CudaError::Shape {
                op: OP,
                detail: format!(
                    "position {pos} is past the cache ({} positions)",
                    shape.max_ctx
                ),
            });
        }
        let p = i32_arg(OP, "pos", pos)?;
        self.rope_kv_launch(qkv, k_cache, v_cache, shape, rope_dim, p, 0, base, factors)
    }

    /// As [`CudaBackend::rope_kv`], the position read on the device from `step[0]` when `step`
    /// is not 0 (its value must be below `max_ctx`: the caller checks before writing it).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rope_kv_launch(
        &self,
        qkv: &mut CudaSlice<f32>,
        k_cache: &mut CudaSlice<u16>,
        v_cache: &mut CudaSlice<u16>,
        shape: AttnShape,
        rope_dim: usize,
        pos: i32,
        step: u64,
        base: f32,
        factors: Option<&CudaSlice<f32>>,
    ) -> Result<()> {
        const OP: &str = "rope_kv";
        shape.check(OP)?;
        if rope_dim > shape.head_dim || rope_dim % 2 != 0 || shape.head_dim % 2 != 0 {
            return Err(CudaError::Shape {
                op: OP,
                detail: format!(
                    "rope_dim {rope_dim} must be even and at most the (even) head_dim {}",
                    shape.head_dim
                ),
            });
        }
        let kv = shape.n_kv_heads * shape.head_dim;
        need_len(
            OP,
            "qkv",
            qkv.len(),
            shape.n_heads * shape.head_dim + 2 * kv,
        )?;
        need_len(OP, "k_cache", k_cache.len(), shape.cache_len())?;
        need_len(OP, "v_cache", v_cache.len(), shape.cache_len())?;
        if let Some(f) = factors {
            need_len(OP, "factors", f.len(), rope_dim / 2)?;
        }
        let items = (shape.n_heads + 2 * shape.n_kv_heads) * (shape.head_dim / 2);
        let (nh, nkv, hd, rd, mc) = (
            i32_arg(OP, "n_heads", shape.n_heads)?,
            i32_arg(OP, "n_kv_heads", shape.n_kv_heads)?,
            i32_arg(OP, "head_dim", shape.head_dim)?,
            i32_arg(OP, "rope_dim", rope_dim)?,
            i32_arg(OP, "max_ctx", shape.max_ctx)?,
        );
        i32_arg(OP, "items", items)?;
        let null: u64 = 0;
        let mut l = Launch::new(self.stream(), &self.k.rope_kv);
        l.0.arg(qkv).arg(k_cache).arg(v_cache);
        l.0.arg(&nh).arg(&nkv).arg(&hd).arg(&rd).arg(&mc);
        l.0.arg(&step).arg(&pos).arg(&base);
        match factors {
            Some(f) => l.0.arg(f),
            None => l.0.arg(&null),
        };
        l.run(OP, cfg(grid_for(items, 256, OP)?, 256))
    }
}
