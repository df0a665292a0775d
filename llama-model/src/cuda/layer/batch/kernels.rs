//! The batched path's kernels (`kernels/gemm.cu`, `kernels/batch.cu`): NVRTC compilation through
//! the backend's disk cache, one load per backend (owned by it, dropped with it), and checked
//! launches.

use std::sync::Arc;

use cudarc::driver::{sys::CUdevice_attribute, CudaFunction, CudaSlice, CudaStream, DevicePtr};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use gguf::GgmlType;

use crate::cuda::attention::AttnShape;
use crate::cuda::backend::{cfg, grid_for, i32_arg, need_len, CudaBackend};
use crate::cuda::compile::compile_module_cached;
use crate::cuda::error::{driver, CudaError, Result};
use crate::cuda::sys::Launch;
use crate::cuda::weights::{type_code, DeviceWeight};

/// Kernel modules of the batched path, `(name, source)`, each compiled as
/// `COMMON_PRELUDE + source` like the backend's own modules.
pub const BATCH_KERNEL_MODULES: &[(&str, &str)] = &[
    ("gemm", include_str!("../../kernels/gemm.cu")),
    ("batch", include_str!("../../kernels/batch.cu")),
];

/// Entry points loaded from each of [`BATCH_KERNEL_MODULES`].
pub const BATCH_ENTRY_POINTS: &[(&str, &[&str])] = &[
    (
        "gemm",
        &["gemm_128x128", "gemm_64x128", "gemm_64x64", "gemm_32x16"],
    ),
    (
        "batch",
        &[
            "bt_rmsnorm_f16",
            "bt_rope",
            "bt_kv_store",
            "bt_swiglu_f16",
            "bt_argmax_rows",
            "bt_attention",
        ],
    ),
];

/// Columns per GEMM K step (`GM_BK`): a weight's row length must be a multiple.
pub const GEMM_K_STEP: usize = 32;
/// Largest head size of the batch attention kernel (`BA_MAX_HD`).
const BA_MAX_HD: usize = 128;
/// Query rows (token, head) per attention CTA (`BA_ROWS`).
const BA_ROWS: usize = 32;
/// Threads of the row kernels (`BT_THREADS`) and of the attention kernel (`BA_THREADS`).
const BT_THREADS: u32 = 256;
const BA_THREADS: u32 = 128;

/// GEMM tile shapes: (entry index, weight rows per CTA, tokens per CTA, threads).
const TILE_128X128: (usize, usize, usize, u32) = (0, 128, 128, 256);
const TILE_64X128: (usize, usize, usize, u32) = (1, 64, 128, 256);
const TILE_64X64: (usize, usize, usize, u32) = (2, 64, 64, 128);
const TILE_32X16: (usize, usize, usize, u32) = (3, 32, 16, 64);

/// The batched path's kernels, loaded once per [`CudaBackend`] and owned by it (shared by every
/// [`super::GpuBatch`] on that backend; see [`BatchKernels::get`]): they are unloaded when the
/// backend and the last batch using them are dropped.
#[derive(Debug)]
pub struct BatchKernels {
    gemm: [CudaFunction; 4],
    rmsnorm_f16: CudaFunction,
    rope: CudaFunction,
    kv_store: CudaFunction,
    swiglu_f16: CudaFunction,
    argmax_rows: CudaFunction,
    attention: CudaFunction,
    sm_count: usize,
    /// Split-K scratch of the GEMM: the partial sums of every (split, tile) of one launch.
    split_part: CudaSlice<f32>,
    /// Split-K arrival count per output tile (zero between launches).
    split_count: CudaSlice<u32>,
    /// The backend's compute stream: every launch goes there, so two GEMMs never use the
    /// split-K scratch at once.
    stream: Arc<CudaStream>,
}

/// Most CTAs per SM any GEMM tile runs with (`__launch_bounds__` of the 32 x 16 tile).
const MAX_CTAS_PER_SM: usize = 8;
/// Largest (CTAs per SM) x (tile elements) over the tile shapes: 2 x 128 x 128 (the 64 x 128,
/// 64 x 64 and 32 x 16 tiles at 2, 4 and 8 CTAs per SM need less); split K never runs more
/// CTAs than the SMs hold, so the scratch holds this many f32 per SM.
const SPLIT_PART_PER_SM: usize = 2 * 128 * 128;

fn check_f16_rows(op: &'static str, x: &CudaSlice<u16>, n: usize, width: usize) -> Result<()> {
    let need = n.checked_mul(width).ok_or_else(|| CudaError::Shape {
        op,
        detail: format!("{n} rows of {width} overflow"),
    })?;
    need_len(op, "f16 rows", x.len(), need)
}

fn rows_len(op: &'static str, n: usize, width: usize) -> Result<usize> {
    let v = n.checked_mul(width).ok_or_else(|| CudaError::Shape {
        op,
        detail: format!("{n} rows of {width} overflow"),
    })?;
    i32_arg(op, "elements", v)?;
    Ok(v)
}

impl BatchKernels {
    /// The batch kernels of `backend`: compiled with NVRTC (or read from the disk cache) and
    /// loaded the first time, then shared by later calls on the same backend.
    pub fn get(backend: &CudaBackend) -> Result<Arc<Self>> {
        let mut slot = backend
            .batch_kernels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(k) = slot.as_ref() {
            return Ok(k.clone());
        }
        let k = Arc::new(Self::load(backend)?);
        *slot = Some(k.clone());
        Ok(k)
    }

    fn load(backend: &CudaBackend) -> Result<Self> {
        let ctx = backend.context();
        let mut modules = Vec::new();
        for (name, body) in BATCH_KERNEL_MODULES {
            let cubin = compile_module_cached(name, body, backend.arch(), backend.kernel_cache())?;
            let m = ctx
                .load_module(Ptx::from_binary(cubin))
                .map_err(driver("module load"))?;
            modules.push((*name, m));
        }
        let get = |module: &str, f: &str| -> Result<CudaFunction> {
            let m = modules
                .iter()
                .find(|(n, _)| *n == module)
                .map(|(_, m)| m)
                .ok_or_else(|| CudaError::Unavailable(format!("kernel module {module} missing")))?;
            m.load_function(f).map_err(driver("function load"))
        };
        let sm_count = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver("device attribute"))?;
        let sm_count = usize::try_from(sm_count).unwrap_or(1).max(1);
        // Split K runs at most as many CTAs as the SMs hold (splits x tiles), the output tiles
        // filling at most half of that.
        let split_part = backend
            .stream()
            .alloc_zeros::<f32>(sm_count * SPLIT_PART_PER_SM)
            .map_err(driver("alloc"))?;
        let split_count = backend
            .stream()
            .alloc_zeros::<u32>(sm_count * MAX_CTAS_PER_SM)
            .map_err(driver("alloc"))?;
        Ok(Self {
            gemm: [
                get("gemm", "gemm_128x128")?,
                get("gemm", "gemm_64x128")?,
                get("gemm", "gemm_64x64")?,
                get("gemm", "gemm_32x16")?,
            ],
            rmsnorm_f16: get("batch", "bt_rmsnorm_f16")?,
            rope: get("batch", "bt_rope")?,
            kv_store: get("batch", "bt_kv_store")?,
            swiglu_f16: get("batch", "bt_swiglu_f16")?,
            argmax_rows: get("batch", "bt_argmax_rows")?,
            attention: get("batch", "bt_attention")?,
            sm_count,
            split_part,
            split_count,
            stream: backend.stream().clone(),
        })
    }

    /// Tile shape for `n` tokens: one pass over the weights for up to 16 tokens, 64 x 64 up to
    /// 64, else 128 x 128 (fastest for every 8B shape at 128 and 512 tokens on an H100, with
    /// split K filling the SMs where the weight has few rows).
    fn tile(&self, n: usize) -> (usize, usize, usize, u32) {
        if n <= 16 {
            TILE_32X16
        } else if n <= 64 {
            TILE_64X64
        } else {
            TILE_128X128
        }
    }

    /// Tensor-core product `y[t][r] (+)= sum_c w[r][c] * x[t][c]` for the first `n` tokens:
    /// `x` holds `n` rows of `w.row_len` f16 values (IEEE half bits), `y` `n` rows of
    /// `w.n_rows` f32 values; with `accumulate` the product is added to `y` (a residual add),
    /// else it overwrites `y`. The weight's ggml blocks are read in place and dequantized to
    /// f16 in shared memory; products accumulate in f32. The row length must be a multiple
    /// of [`GEMM_K_STEP`]. When the output tiles alone would leave SMs idle, the K dimension
    /// is split over CTAs whose partial sums are added in the fixed order of their K ranges
    /// (by the last CTA of each tile, from a scratch buffer): the same inputs give the same
    /// bits on every run. `b` must be the backend these kernels belong to.
    pub fn gemm(
        &self,
        b: &CudaBackend,
        w: &DeviceWeight<'_>,
        x: &CudaSlice<u16>,
        n: usize,
        y: &mut CudaSlice<f32>,
        accumulate: bool,
    ) -> Result<()> {
        self.gemm_with_tile(b, w, x, n, y, accumulate, None)
    }

    /// Names of the GEMM tile shapes (weight rows x tokens per CTA), indexed as `tile` in
    /// [`BatchKernels::gemm_with_tile`].
    pub const GEMM_TILES: [&'static str; 4] = ["128x128", "64x128", "64x64", "32x16"];

    /// As [`BatchKernels::gemm`], with the tile shape forced (index into
    /// [`BatchKernels::GEMM_TILES`]; `None`: chosen from the shape). For benchmarks.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_with_tile(
        &self,
        b: &CudaBackend,
        w: &DeviceWeight<'_>,
        x: &CudaSlice<u16>,
        n: usize,
        y: &mut CudaSlice<f32>,
        accumulate: bool,
        tile: Option<usize>,
    ) -> Result<()> {
        const OP: &str = "gemm";
        if w.row_len % GEMM_K_STEP != 0 {
            return Err(CudaError::Shape {
                op: OP,
                detail: format!(
                    "row length {} is not a multiple of {GEMM_K_STEP}",
                    w.row_len
                ),
            });
        }
        check_f16_rows(OP, x, n, w.row_len)?;
        need_len(OP, "y", y.len(), rows_len(OP, n, w.n_rows)?)?;
        rows_len(OP, n, w.row_len)?;
        let t = type_code(w.ggml_type)?;
        if n == 0 || w.n_rows == 0 {
            return Ok(());
        }
        let (rows, cols, n32) = (
            i32_arg(OP, "rows", w.n_rows)?,
            i32_arg(OP, "cols", w.row_len)?,
            i32_arg(OP, "n", n)?,
        );
        let acc = i32::from(accumulate);
        let (entry, bm, bn, threads) = match tile {
            None => self.tile(n),
            Some(0) => TILE_128X128,
            Some(1) => TILE_64X128,
            Some(2) => TILE_64X64,
            Some(3) => TILE_32X16,
            Some(t) => {
                return Err(CudaError::Shape {
                    op: OP,
                    detail: format!("no GEMM tile {t}"),
                })
            }
        };
        if !Arc::ptr_eq(b.stream(), &self.stream) {
            return Err(CudaError::Sequence(
                "the batch kernels were passed another backend than the one they belong to".into(),
            ));
        }
        let (gx, gy) = (grid_for(w.n_rows, bm, OP)?, grid_for(n, bn, OP)?);
        let splits = self.k_splits((gx as usize) * (gy as usize), threads, bm * bn, w.row_len);
        let c = LaunchConfig {
            grid_dim: (gx, gy, u32::try_from(splits).unwrap_or(1)),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = Launch::new(b.stream(), &self.gemm[entry]);
        l.0.arg(&w.data)
            .arg(&t)
            .arg(&rows)
            .arg(&cols)
            .arg(x)
            .arg(&n32)
            .arg(y)
            .arg(&acc)
            .arg(&self.split_part)
            .arg(&self.split_count);
        l.run(OP, c)
    }

    /// Into how many K ranges a GEMM of `ctas` output tiles (CTAs of `threads`, tiles of
    /// `tile_elems` outputs) over rows of `row_len` is split: enough to fill the SMs when the
    /// tiles alone would leave them idle, at least 4 K steps each, no empty range, and never
    /// more than the scratch holds.
    fn k_splits(&self, ctas: usize, threads: u32, tile_elems: usize, row_len: usize) -> usize {
        let per_sm = match threads {
            256 => 2,
            128 => 4,
            _ => MAX_CTAS_PER_SM,
        };
        let target = self.sm_count * per_sm;
        let ksteps = row_len / GEMM_K_STEP;
        if ctas == 0 || ctas * 2 > target || ctas > self.split_count.len() {
            return 1;
        }
        let room = self.split_part.len() / (ctas * tile_elems.max(1));
        let want = (target / ctas).min(ksteps / 4).min(room).max(1);
        // Equal ranges of `per` steps; drop the ranges that would be empty.
        let per = ksteps.div_ceil(want);
        ksteps.div_ceil(per.max(1)).max(1)
    }

    /// RMSNorm of the first `n` rows of `x` (rows of `norm.row_len`) with an F32 weight in
    /// device memory, written as f16 rows to `out` (the next GEMM's input).
    pub fn rmsnorm_f16(
        &self,
        b: &CudaBackend,
        x: &CudaSlice<f32>,
        norm: &DeviceWeight<'_>,
        out: &mut CudaSlice<u16>,
        n: usize,
        eps: f32,
    ) -> Result<()> {
        const OP: &str = "rmsnorm";
        let width = norm.row_len * norm.n_rows;
        if norm.ggml_type != GgmlType::F32 || width == 0 {
            return Err(CudaError::Shape {
                op: OP,
                detail: format!("norm weight must be F32 values, found {}", norm.ggml_type),
            });
        }
        {
            let (ptr, _sync) = norm.data.device_ptr(b.stream());
            if ptr % 4 != 0 {
                return Err(CudaError::Shape {
                    op: OP,
                    detail: "norm weight is not 4-byte aligned in device memory".into(),
                });
            }
        }
        need_len(OP, "x", x.len(), rows_len(OP, n, width)?)?;
        check_f16_rows(OP, out, n, width)?;
        let w32 = i32_arg(OP, "width", width)?;
        if n == 0 {
            return Ok(());
        }
        let mut l = Launch::new(b.stream(), &self.rmsnorm_f16);
        l.0.arg(x).arg(&norm.data).arg(out).arg(&w32).arg(&eps);
        l.run(OP, cfg(grid_for(n, 1, OP)?, BT_THREADS))
    }

    /// Rotary embedding in place on the first `n` rows of `x` (rows of `n_heads * head_dim`),
    /// row `r` at position `pos0 + r` (the one-token [`CudaBackend::rope`] per row).
    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        &self,
        b: &CudaBackend,
        x: &mut CudaSlice<f32>,
        n: usize,
        n_heads: usize,
        head_dim: usize,
        rope_dim: usize,
        pos0: usize,
        base: f32,
        factors: Option<&CudaSlice<f32>>,
    ) -> Result<()> {
        const OP: &str = "rope";
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(CudaError::Shape {
                op: OP,
                detail: format!("rope_dim {rope_dim} must be even and at most head_dim {head_dim}"),
            });
        }
        need_len(OP, "x", x.len(), rows_len(OP, n, n_heads * head_dim)?)?;
        if let Some(f) = factors {
            need_len(OP, "factors", f.len(), rope_dim / 2)?;
        }
        let pairs = rows_len(OP, n, n_heads * (rope_dim / 2))?;
        i32_arg(OP, "last position", pos0 + n)?;
        if pairs == 0 {
            return Ok(());
        }
        let (n32, nh, hd, rd, p) = (
            i32_arg(OP, "n", n)?,
            i32_arg(OP, "n_heads", n_heads)?,
            i32_arg(OP, "head_dim", head_dim)?,
            i32_arg(OP, "rope_dim", rope_dim)?,
            i32_arg(OP, "pos0", pos0)?,
        );
        let null: u64 = 0;
        let mut l = Launch::new(b.stream(), &self.rope);
        l.0.arg(x)
            .arg(&n32)
            .arg(&nh)
            .arg(&hd)
            .arg(&rd)
            .arg(&p)
            .arg(&base);
        match factors {
            Some(f) => l.0.arg(f),
            None => l.0.arg(&null),
        };
        l.run(
            OP,
            cfg(grid_for(pairs, BT_THREADS as usize, OP)?, BT_THREADS),
        )
    }

    /// Stores the first `n` rows of keys and values (`[n_kv_heads][head_dim]` f32 each) at
    /// cache positions `pos0..pos0 + n`, rounded to f16.
    #[allow(clippy::too_many_arguments)]
    pub fn kv_store(
        &self,
        b: &CudaBackend,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        k_cache: &mut CudaSlice<u16>,
        v_cache: &mut CudaSlice<u16>,
        shape: AttnShape,
        n: usize,
        pos0: usize,
    ) -> Result<()> {
        const OP: &str = "kv_store";
        let total = rows_len(OP, n, shape.n_kv_heads * shape.head_dim)?;
        need_len(OP, "k", k.len(), total)?;
        need_len(OP, "v", v.len(), total)?;
        need_len(OP, "k_cache", k_cache.len(), shape.cache_len())?;
        need_len(OP, "v_cache", v_cache.len(), shape.cache_len())?;
        i32_arg(OP, "cache elements", shape.cache_len())?;
        if pos0 + n > shape.max_ctx {
            return Err(CudaError::Shape {
                op: OP,
                detail: format!(
                    "positions {pos0}..{} are past the cache ({} positions)",
                    pos0 + n,
                    shape.max_ctx
                ),
            });
        }
        if total == 0 {
            return Ok(());
        }
        let (n32, nkv, hd, mc, p) = (
            i32_arg(OP, "n", n)?,
            i32_arg(OP, "n_kv_heads", shape.n_kv_heads)?,
            i32_arg(OP, "head_dim", shape.head_dim)?,
            i32_arg(OP, "max_ctx", shape.max_ctx)?,
            i32_arg(OP, "pos0", pos0)?,
        );
        let mut l = Launch::new(b.stream(), &self.kv_store);
        l.0.arg(k)
            .arg(v)
            .arg(k_cache)
            .arg(v_cache)
            .arg(&n32)
            .arg(&nkv)
            .arg(&hd)
            .arg(&mc)
            .arg(&p);
        l.run(
            OP,
            cfg(grid_for(total, BT_THREADS as usize, OP)?, BT_THREADS),
        )
    }

    /// Checks that the batch attention kernel handles `shape`.
    pub(crate) fn check_attention_shape(shape: &AttnShape) -> Result<()> {
        let ok = shape.n_kv_heads > 0
            && shape.n_heads % shape.n_kv_heads == 0
            && shape.n_heads / shape.n_kv_heads <= BA_ROWS
            && shape.n_heads >= shape.n_kv_heads
            && shape.head_dim > 0
            && shape.head_dim % 2 == 0
            && shape.head_dim <= BA_MAX_HD;
        if !ok {
            return Err(CudaError::Shape {
                op: "batch attention",
                detail: format!(
                    "unsupported shape {shape:?}: the batch kernel needs an even head_dim <= \
                     {BA_MAX_HD} and at most {BA_ROWS} query heads per KV head"
                ),
            });
        }
        Ok(())
    }

    /// Causal attention of `n` query rows (`q`: `[n][n_heads * head_dim]`, rotated; row `r`
    /// at position `pos0 + r`) over cache positions `0..=pos0 + r`, written as f16 rows to
    /// `out`. The cache must already hold positions `0..pos0 + n`.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        b: &CudaBackend,
        q: &CudaSlice<f32>,
        k_cache: &CudaSlice<u16>,
        v_cache: &CudaSlice<u16>,
        out: &mut CudaSlice<u16>,
        shape: AttnShape,
        n: usize,
        pos0: usize,
    ) -> Result<()> {
        const OP: &str = "batch attention";
        Self::check_attention_shape(&shape)?;
        let width = shape.n_heads * shape.head_dim;
        need_len(OP, "q", q.len(), rows_len(OP, n, width)?)?;
        check_f16_rows(OP, out, n, width)?;
        need_len(OP, "k_cache", k_cache.len(), shape.cache_len())?;
        need_len(OP, "v_cache", v_cache.len(), shape.cache_len())?;
        i32_arg(OP, "cache elements", shape.cache_len())?;
        if pos0 + n > shape.max_ctx {
            return Err(CudaError::Shape {
                op: OP,
                detail: format!("positions up to {} exceed the cache", pos0 + n),
            });
        }
        if n == 0 {
            return Ok(());
        }
        let group = shape.n_heads / shape.n_kv_heads;
        let per_cta = BA_ROWS / group;
        let (n32, nh, nkv, hd, mc, p) = (
            i32_arg(OP, "n", n)?,
            i32_arg(OP, "n_heads", shape.n_heads)?,
            i32_arg(OP, "n_kv_heads", shape.n_kv_heads)?,
            i32_arg(OP, "head_dim", shape.head_dim)?,
            i32_arg(OP, "max_ctx", shape.max_ctx)?,
            i32_arg(OP, "pos0", pos0)?,
        );
        let scale = 1.0 / (shape.head_dim as f32).sqrt();
        let c = LaunchConfig {
            grid_dim: (
                grid_for(shape.n_kv_heads, 1, OP)?,
                grid_for(n, per_cta, OP)?,
                1,
            ),
            block_dim: (BA_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = Launch::new(b.stream(), &self.attention);
        l.0.arg(q).arg(k_cache).arg(v_cache).arg(out);
        l.0.arg(&n32)
            .arg(&nh)
            .arg(&nkv)
            .arg(&hd)
            .arg(&mc)
            .arg(&p)
            .arg(&scale);
        l.run(OP, c)
    }

    /// `out[i] = f16(silu(gate[i]) * up[i])` over the first `len` elements.
    pub fn swiglu_f16(
        &self,
        b: &CudaBackend,
        gate: &CudaSlice<f32>,
        up: &CudaSlice<f32>,
        out: &mut CudaSlice<u16>,
        len: usize,
    ) -> Result<()> {
        const OP: &str = "swiglu";
        need_len(OP, "gate", gate.len(), len)?;
        need_len(OP, "up", up.len(), len)?;
        need_len(OP, "out", out.len(), len)?;
        let n32 = i32_arg(OP, "n", len)?;
        if len == 0 {
            return Ok(());
        }
        let mut l = Launch::new(b.stream(), &self.swiglu_f16);
        l.0.arg(gate).arg(up).arg(out).arg(&n32);
        l.run(OP, cfg(grid_for(len, BT_THREADS as usize, OP)?, BT_THREADS))
    }

    /// `out[r]` = index of the largest value of row `r` of `x` (`n` rows of `width`; lowest
    /// index on ties, NaN never wins).
    pub fn argmax_rows(
        &self,
        b: &CudaBackend,
        x: &CudaSlice<f32>,
        n: usize,
        width: usize,
        out: &mut CudaSlice<u32>,
    ) -> Result<()> {
        const OP: &str = "argmax";
        need_len(OP, "x", x.len(), rows_len(OP, n, width)?)?;
        need_len(OP, "out", out.len(), n)?;
        let w32 = i32_arg(OP, "width", width)?;
        if n == 0 {
            return Ok(());
        }
        let mut l = Launch::new(b.stream(), &self.argmax_rows);
        l.0.arg(x).arg(&w32).arg(out);
        l.run(OP, cfg(grid_for(n, 1, OP)?, BT_THREADS))
    }
}
