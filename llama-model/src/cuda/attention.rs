//! Decode attention over an f16 KV cache (one query token, grouped-query heads), split along
//! the context in chunks of [`ATTN_CHUNK`] positions and merged by a second kernel.

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::backend::{cfg, grid_for, i32_arg, need_len, CudaBackend};
use super::error::{CudaError, Result};
use super::sys::Launch;

/// Context positions per split (`ATTN_CHUNK` in `kernels/attention.cu`).
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
        const OP: &str = "attention";
        shape.check(OP)?;
        if n_ctx == 0 || n_ctx > shape.max_ctx {
            return Err(CudaError::Shape {
                op: OP,
                detail: format!("n_ctx {n_ctx} must be in 1..={}", shape.max_ctx),
            });
        }
        let nq = shape.n_heads * shape.head_dim;
        need_len(OP, "q", q.len(), nq)?;
        need_len(OP, "out", out.len(), nq)?;
        need_len(OP, "k_cache", k_cache.len(), shape.cache_len())?;
        need_len(OP, "v_cache", v_cache.len(), shape.cache_len())?;
        need_len(OP, "scratch", scratch.len(), shape.scratch_len(n_ctx))?;
        let splits = grid_for(n_ctx, ATTN_CHUNK, OP)?;
        let heads = grid_for(shape.n_heads, 1, OP)?;
        let (nh, nkv, hd, mc, nc) = (
            i32_arg(OP, "n_heads", shape.n_heads)?,
            i32_arg(OP, "n_kv_heads", shape.n_kv_heads)?,
            i32_arg(OP, "head_dim", shape.head_dim)?,
            i32_arg(OP, "max_ctx", shape.max_ctx)?,
            i32_arg(OP, "n_ctx", n_ctx)?,
        );
        let scale = 1.0 / (shape.head_dim as f32).sqrt();
        let mut l = Launch::new(self.stream(), &self.k.attn_partial);
        l.0.arg(q).arg(k_cache).arg(v_cache).arg(&mut *scratch);
        l.0.arg(&nh)
            .arg(&nkv)
            .arg(&hd)
            .arg(&mc)
            .arg(&nc)
            .arg(&scale);
        let mut c = cfg(heads, ATTN_THREADS);
        c.grid_dim.1 = splits;
        l.run(OP, c)?;
        let n_splits = i32_arg(OP, "splits", splits as usize)?;
        let mut l = Launch::new(self.stream(), &self.k.attn_combine);
        l.0.arg(&*scratch).arg(out).arg(&hd).arg(&n_splits);
        l.run(OP, cfg(heads, 128))
    }
}
