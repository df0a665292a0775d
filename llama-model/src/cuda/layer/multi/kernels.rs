//! The multi-sequence step's own kernels (`kernels/multi.cu`): rope at per-row positions, the
//! paged KV store, the paged attention over every sequence's blocks in one launch, and a row
//! gather for the heads. Loaded per [`super::GpuMultiState`] (compiled once, through the
//! backend's disk cache).

use cudarc::driver::{CudaFunction, CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

use crate::cuda::attention::AttnShape;
use crate::cuda::backend::{cfg, grid_for, i32_arg, need_len, CudaBackend};
use crate::cuda::compile::compile_module_cached;
use crate::cuda::error::{driver, CudaError, Result};
use crate::cuda::sys::Launch;
use crate::cuda::weights::{type_code, DeviceWeight};
use crate::paged::KV_BLOCK;

/// Kernel modules of the multi-sequence step, `(name, source)`, each compiled as
/// `COMMON_PRELUDE + source` like the backend's own modules.
/// The module also holds the decode matvec's block decoders (`matvec.cu`, after its work
/// layout `matvec_body.cuh`), which the few-row products (`multi_matvec.cu`) share.
pub const MULTI_KERNEL_MODULES: &[(&str, &str)] = &[(
    "multi",
    concat!(
        include_str!("../../kernels/matvec_body.cuh"),
        include_str!("../../kernels/matvec.cu"),
        include_str!("../../kernels/multi.cu"),
        include_str!("../../kernels/multi_matvec.cu")
    ),
)];

/// Entry points loaded from each of [`MULTI_KERNEL_MODULES`].
pub const MULTI_ENTRY_POINTS: &[(&str, &[&str])] = &[(
    "multi",
    &[
        "mt_rope",
        "mt_kv_store",
        "mt_gather_rows",
        "mt_attention",
        "mt_matvec2",
        "mt_matvec4",
        "mt_matvec8",
        "mt_join_cols",
        "mt_f16_to_f32",
    ],
)];

/// Threads of the row kernels (`MT_THREADS`) and of the attention (`MA_THREADS`).
const MT_THREADS: u32 = 256;
const MA_THREADS: u32 = 128;
/// Query rows (token, head) per attention CTA (`MA_ROWS`) and the largest head (`MA_MAX_HD`).
pub(super) const MA_ROWS: usize = 32;
const MA_MAX_HD: usize = 128;
/// Positions per block in the kernels (`MT_BLOCK`).
const MT_BLOCK: usize = 16;
const _: () = assert!(MT_BLOCK == KV_BLOCK);
/// Most activation rows of the few-row product (`mt_matvec8`), and its warps per CTA.
pub const MATVEC_MAX_ROWS: usize = 8;

/// The few-row matvec limit a [`GpuMultiState`](super::GpuMultiState) starts with: on the H200
/// (docs/PERF.md, 2026-12-04) the few-row matvec beat the tensor-core GEMM at 1-2 rows and lost
/// at 4-8, so steps of 3 rows or more take the GEMM.
pub const DEFAULT_MATVEC_ROWS: usize = 2;
const MM_WARPS: usize = 4;

/// The loaded functions of [`MULTI_KERNEL_MODULES`].
#[derive(Debug)]
pub(super) struct MultiKernels {
    rope: CudaFunction,
    kv_store: CudaFunction,
    gather: CudaFunction,
    attention: CudaFunction,
    /// `mt_matvec2`, `mt_matvec4`, `mt_matvec8`.
    matvec: [CudaFunction; 3],
    join: CudaFunction,
    to_f32: CudaFunction,
}

impl MultiKernels {
    /// Compiles (or reads from the disk cache) and loads the module on `backend`'s context.
    pub(super) fn load(backend: &CudaBackend) -> Result<Self> {
        let (name, body) = MULTI_KERNEL_MODULES[0];
        let cubin = compile_module_cached(name, body, backend.arch(), backend.kernel_cache())?;
        let m = backend
            .context()
            .load_module(Ptx::from_binary(cubin))
            .map_err(driver("module load"))?;
        let f = |n: &str| m.load_function(n).map_err(driver("function load"));
        Ok(Self {
            rope: f("mt_rope")?,
            kv_store: f("mt_kv_store")?,
            gather: f("mt_gather_rows")?,
            attention: f("mt_attention")?,
            matvec: [f("mt_matvec2")?, f("mt_matvec4")?, f("mt_matvec8")?],
            join: f("mt_join_cols")?,
            to_f32: f("mt_f16_to_f32")?,
        })
    }

    /// `dst[t][j] (+)= j < g ? dev[t][j] : host[t][j - g]` for `n` rows of `ld` values: the
    /// device's `g` first values of each row (`dev`, `[n][g]`) and the host's `ld - g` last
    /// (`host`: the device address of `[n][ld - g]` values, e.g. mapped page-locked memory the
    /// caller keeps alive and in bounds until the kernel has run).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn join_cols(
        &self,
        b: &CudaBackend,
        dst: &mut CudaSlice<f32>,
        dev: &CudaSlice<f32>,
        host: u64,
        n: usize,
        ld: usize,
        g: usize,
        accumulate: bool,
    ) -> Result<()> {
        const OP: &str = "join split rows";
        let total = n.checked_mul(ld).ok_or_else(|| CudaError::Shape {
            op: OP,
            detail: format!("{n} rows of {ld} overflow"),
        })?;
        if g > ld {
            return Err(CudaError::Shape {
                op: OP,
                detail: format!("{g} device values of rows of {ld}"),
            });
        }
        need_len(OP, "dst", dst.len(), total)?;
        need_len(OP, "dev", dev.len(), n * g)?;
        if total == 0 {
            return Ok(());
        }
        let (n32, ld32, g32) = (
            i32_arg(OP, "n", n)?,
            i32_arg(OP, "ld", ld)?,
            i32_arg(OP, "g", g)?,
        );
        i32_arg(OP, "values", total)?;
        let acc = i32::from(accumulate);
        let mut l = Launch::new(b.stream(), &self.join);
        l.0.arg(dst)
            .arg(dev)
            .arg(&host)
            .arg(&n32)
            .arg(&ld32)
            .arg(&g32)
            .arg(&acc);
        l.run(
            OP,
            cfg(grid_for(total, MT_THREADS as usize, OP)?, MT_THREADS),
        )
    }

    /// `dst[i] = src[i]` widened from f16 for the first `n` values of `src`, `dst` the device
    /// address of `n` f32 (mapped page-locked memory the caller keeps alive until the kernel has
    /// run).
    pub(super) fn f16_to_f32(
        &self,
        b: &CudaBackend,
        src: &CudaSlice<u16>,
        dst: u64,
        n: usize,
    ) -> Result<()> {
        const OP: &str = "f16 rows to the host";
        need_len(OP, "src", src.len(), n)?;
        let n32 = i32_arg(OP, "n", n)?;
        if n == 0 {
            return Ok(());
        }
        let mut l = Launch::new(b.stream(), &self.to_f32);
        l.0.arg(&dst).arg(src).arg(&n32);
        l.run(OP, cfg(grid_for(n, MT_THREADS as usize, OP)?, MT_THREADS))
    }

    /// `y[k][r] (+)= w[r] . x[k]` for `n <= MATVEC_MAX_ROWS` f16 activation rows `x`
    /// (`[n][w.row_len]`, the GEMM's input), each weight block decoded once for all rows; `y`
    /// is `[n][w.n_rows]` f32 (added to with `accumulate`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn matvec_rows(
        &self,
        b: &CudaBackend,
        w: &DeviceWeight<'_>,
        x: &CudaSlice<u16>,
        n: usize,
        y: &mut CudaSlice<f32>,
        accumulate: bool,
    ) -> Result<()> {
        const OP: &str = "few-row matvec";
        if n == 0 || w.n_rows == 0 {
            return Ok(());
        }
        if n > MATVEC_MAX_ROWS || w.row_len % 32 != 0 {
            return Err(CudaError::Shape {
                op: OP,
                detail: format!(
                    "{n} rows of {} (at most {MATVEC_MAX_ROWS} rows, a multiple of 32 long)",
                    w.row_len
                ),
            });
        }
        need_len(OP, "x", x.len(), n * w.row_len)?;
        need_len(OP, "y", y.len(), n * w.n_rows)?;
        let t = type_code(w.ggml_type)?;
        let (rows, cols, n32) = (
            i32_arg(OP, "rows", w.n_rows)?,
            i32_arg(OP, "cols", w.row_len)?,
            i32_arg(OP, "n", n)?,
        );
        let acc = i32::from(accumulate);
        let f = match n {
            1 | 2 => &self.matvec[0],
            3 | 4 => &self.matvec[1],
            _ => &self.matvec[2],
        };
        let mut l = Launch::new(b.stream(), f);
        l.0.arg(&w.data)
            .arg(&t)
            .arg(&rows)
            .arg(&cols)
            .arg(x)
            .arg(&n32)
            .arg(y)
            .arg(&acc);
        l.run(
            OP,
            cfg(grid_for(w.n_rows, MM_WARPS, OP)?, (MM_WARPS * 32) as u32),
        )
    }

    /// Checks that the attention kernel handles `shape`; returns the rows per tile.
    pub(super) fn tile_rows(shape: &AttnShape) -> Result<usize> {
        let ok = shape.n_kv_heads > 0
            && shape.n_heads % shape.n_kv_heads == 0
            && shape.n_heads / shape.n_kv_heads <= MA_ROWS
            && shape.head_dim > 0
            && shape.head_dim % 2 == 0
            && shape.head_dim <= MA_MAX_HD;
        if !ok {
            return Err(CudaError::Shape {
                op: "multi attention",
                detail: format!(
                    "unsupported shape {shape:?}: the kernel needs an even head_dim <= \
                     {MA_MAX_HD} and at most {MA_ROWS} query heads per KV head"
                ),
            });
        }
        Ok(MA_ROWS / (shape.n_heads / shape.n_kv_heads))
    }

    /// Rotary embedding in place on `n` rows of `n_heads` heads, row `r` at `pos[r]`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rope(
        &self,
        b: &CudaBackend,
        x: &mut CudaSlice<f32>,
        n: usize,
        n_heads: usize,
        head_dim: usize,
        rope_dim: usize,
        pos: &CudaView<'_, i32>,
        base: f32,
        factors: Option<&CudaSlice<f32>>,
    ) -> Result<()> {
        const OP: &str = "multi rope";
        let pairs = n * n_heads * (rope_dim / 2);
        if pairs == 0 {
            return Ok(());
        }
        let (n32, nh, hd, rd) = (
            i32_arg(OP, "n", n)?,
            i32_arg(OP, "n_heads", n_heads)?,
            i32_arg(OP, "head_dim", head_dim)?,
            i32_arg(OP, "rope_dim", rope_dim)?,
        );
        let null: u64 = 0;
        let mut l = Launch::new(b.stream(), &self.rope);
        l.0.arg(x)
            .arg(&n32)
            .arg(&nh)
            .arg(&hd)
            .arg(&rd)
            .arg(pos)
            .arg(&base);
        match factors {
            Some(f) => l.0.arg(f),
            None => l.0.arg(&null),
        };
        l.run(
            OP,
            cfg(grid_for(pairs, MT_THREADS as usize, OP)?, MT_THREADS),
        )
    }

    /// Stores `n` rows of keys and values (`kv_dim` f32 each) at pool slots `slot[r]` (f16).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn kv_store(
        &self,
        b: &CudaBackend,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        k_pool: &mut CudaSlice<u16>,
        v_pool: &mut CudaSlice<u16>,
        n: usize,
        kv_dim: usize,
        slot: &CudaView<'_, i32>,
    ) -> Result<()> {
        const OP: &str = "multi kv_store";
        let total = n * kv_dim;
        if total == 0 {
            return Ok(());
        }
        let (n32, kd) = (i32_arg(OP, "n", n)?, i32_arg(OP, "kv_dim", kv_dim)?);
        let mut l = Launch::new(b.stream(), &self.kv_store);
        l.0.arg(k)
            .arg(v)
            .arg(k_pool)
            .arg(v_pool)
            .arg(&n32)
            .arg(&kd)
            .arg(slot);
        l.run(
            OP,
            cfg(grid_for(total, MT_THREADS as usize, OP)?, MT_THREADS),
        )
    }

    /// `out[i] = x[rows[i]]` for `n` rows of `width`.
    pub(super) fn gather(
        &self,
        b: &CudaBackend,
        x: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        rows: &CudaView<'_, i32>,
        n: usize,
        width: usize,
    ) -> Result<()> {
        const OP: &str = "gather rows";
        if n == 0 {
            return Ok(());
        }
        let w = i32_arg(OP, "width", width)?;
        let mut l = Launch::new(b.stream(), &self.gather);
        l.0.arg(x).arg(out).arg(rows).arg(&w);
        l.run(OP, cfg(grid_for(n, 1, OP)?, MT_THREADS))
    }

    /// Paged causal attention of every tile (4 ints: first row, rows, first position,
    /// sequence) over its sequence's blocks (`table`: `width` block ids per sequence), f16
    /// output rows.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention(
        &self,
        b: &CudaBackend,
        q: &CudaSlice<f32>,
        k_pool: &CudaSlice<u16>,
        v_pool: &CudaSlice<u16>,
        out: &mut CudaSlice<u16>,
        tiles: &CudaView<'_, i32>,
        n_tiles: usize,
        table: &CudaView<'_, i32>,
        width: usize,
        shape: AttnShape,
    ) -> Result<()> {
        const OP: &str = "multi attention";
        if n_tiles == 0 {
            return Ok(());
        }
        let (w, nh, nkv, hd) = (
            i32_arg(OP, "width", width)?,
            i32_arg(OP, "n_heads", shape.n_heads)?,
            i32_arg(OP, "n_kv_heads", shape.n_kv_heads)?,
            i32_arg(OP, "head_dim", shape.head_dim)?,
        );
        let scale = 1.0 / (shape.head_dim as f32).sqrt();
        let c = LaunchConfig {
            grid_dim: (
                grid_for(shape.n_kv_heads, 1, OP)?,
                grid_for(n_tiles, 1, OP)?,
                1,
            ),
            block_dim: (MA_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = Launch::new(b.stream(), &self.attention);
        l.0.arg(q)
            .arg(k_pool)
            .arg(v_pool)
            .arg(out)
            .arg(tiles)
            .arg(table);
        l.0.arg(&w).arg(&nh).arg(&nkv).arg(&hd).arg(&scale);
        l.run(OP, c)
    }
}
