//! The CUDA device, its compute stream, the loaded kernels and safe launches of each kernel.

use std::path::Path;
use std::sync::{Arc, Mutex};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use super::compile::{compile_module_cached, nvrtc_available, use_nvrtc_library, KERNEL_MODULES};
use super::error::{driver, CudaError, Result};
use super::layer::batch::BatchKernels;
use super::options::{CudaOptions, MatvecKsplit};
use super::sys::{self, Launch};
use super::weights::{type_code, DeviceWeight};

/// Threads of the argmax kernel (`ARGMAX_THREADS` in `kernels/elementwise.cu`).
const ARGMAX_THREADS: u32 = 1024;
/// Threads of the reduction kernels (`RED_THREADS` in `kernels/elementwise.cu`).
pub(super) const RED_THREADS: u32 = 1024;
/// Threads per CTA of the element-wise kernels.
const EW_THREADS: u32 = 256;

/// Checks that libcuda can be loaded, without touching cudarc (whose loader panics when the
/// library is absent).
pub fn driver_available() -> Result<()> {
    let names: Vec<String> = ["libcuda.so.1", "libcuda.so", "nvcuda.dll"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    sys::probe_library(&names)
        .map_err(|why| CudaError::Unavailable(format!("cannot load libcuda ({why})")))
}

#[derive(Debug)]
pub(super) struct Kernels {
    pub(super) matvec: CudaFunction,
    pub(super) matvec4: CudaFunction,
    pub(super) embed_rows: CudaFunction,
    pub(super) rmsnorm: CudaFunction,
    rope: CudaFunction,
    swiglu: CudaFunction,
    add_inplace: CudaFunction,
    store_f32: CudaFunction,
    argmax: CudaFunction,
    pub(super) kv_store: CudaFunction,
    pub(super) rope_kv: CudaFunction,
    pub(super) rep_penalty: CudaFunction,
    pub(super) topk_pass: CudaFunction,
    pub(super) attn_partial: CudaFunction,
    pub(super) quantize_q8: CudaFunction,
    pub(super) rmsnorm_q8: CudaFunction,
    pub(super) matvec_q8: CudaFunction,
    pub(super) matvec_q8_4: CudaFunction,
}

/// Device buffers of the 8-bit activation of the matrix-vector products
/// ([`CudaOptions::matvec_q8`]): `qs` holds [`super::matvec_q8::MAX_Q8_COLS`] quants, `d` one
/// scale and `s` one sum term per block of 32. One per backend, shared by every product: a product enqueues its
/// quantization and its kernel while holding the lock, so on the one compute stream each
/// product reads the quants it wrote.
#[derive(Debug)]
pub(super) struct Q8Scratch {
    pub(super) qs: CudaSlice<u8>,
    pub(super) d: CudaSlice<f32>,
    pub(super) s: CudaSlice<f32>,
}

/// One GPU with its compute stream and every kernel compiled for its architecture.
///
/// Every launch goes to the one compute stream, and cudarc's automatic per-buffer event
/// tracking is off (unless [`CudaOptions::event_tracking`]): a buffer written on another stream
/// (e.g. a weight slot filled by a copy stream) must be ordered before its use with an event by
/// the caller, and must not be freed before an event recorded after its last use completed.
#[derive(Debug)]
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: String,
    pub(super) k: Kernels,
    options: CudaOptions,
    /// Rows per unit of the matrix-vector kernel (2 or 4).
    pub(super) matvec_rows: usize,
    /// Warps per unit forced by the options (1, 2 or 4), else chosen per launch.
    pub(super) matvec_ksplit: Option<usize>,
    /// The batched path's kernels, loaded at the first batch ([`BatchKernels::get`]) and
    /// dropped with the backend.
    pub(super) batch_kernels: Mutex<Option<Arc<BatchKernels>>>,
    /// The quantized activation of the matrix-vector products.
    pub(super) q8: Mutex<Q8Scratch>,
}

pub(super) fn i32_arg(op: &'static str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| CudaError::Shape {
        op,
        detail: format!("{what} = {v} exceeds the kernels' 32-bit indices"),
    })
}

pub(super) fn need_len(op: &'static str, what: &str, have: usize, need: usize) -> Result<()> {
    if have < need {
        return Err(CudaError::Shape {
            op,
            detail: format!("{what} holds {have} elements, needs {need}"),
        });
    }
    Ok(())
}

pub(super) fn grid_for(n: usize, per: usize, op: &'static str) -> Result<u32> {
    u32::try_from(n.div_ceil(per)).map_err(|_| CudaError::Shape {
        op,
        detail: format!("{n} items need too many CTAs"),
    })
}

pub(super) fn cfg(grid: u32, block: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl CudaBackend {
    /// Opens GPU `ordinal` with the default [`CudaOptions`] (no disk cache of compiled kernels:
    /// see [`CudaBackend::with_options`]).
    pub fn new(ordinal: usize) -> Result<Self> {
        Self::with_options(ordinal, &CudaOptions::default())
    }

    /// Opens GPU `ordinal`, creates a compute stream and compiles (or loads from the disk cache
    /// named by the options) every kernel module for the GPU's architecture.
    /// [`CudaError::Unavailable`] when there is no driver, no NVRTC or no such GPU,
    /// [`CudaError::Options`] for options out of range.
    pub fn with_options(ordinal: usize, options: &CudaOptions) -> Result<Self> {
        options.check()?;
        driver_available()?;
        if let Some(lib) = &options.nvrtc_lib {
            use_nvrtc_library(lib)?;
        }
        nvrtc_available()?;
        let ctx = std::panic::catch_unwind(|| CudaContext::new(ordinal))
            .map_err(|_| CudaError::Unavailable("the CUDA driver failed to load".into()))?
            .map_err(|e| CudaError::Unavailable(format!("GPU {ordinal}: {e}")))?;
        // One compute stream orders everything this backend does, so cudarc's per-buffer event
        // tracking is only overhead (kept when the options ask, for comparison).
        if !options.event_tracking {
            sys::disable_event_tracking(&ctx);
        }
        let (major, minor) = ctx
            .compute_capability()
            .map_err(driver("compute capability"))?;
        let arch = format!("sm_{major}{minor}");
        let stream = ctx.new_stream().map_err(driver("stream create"))?;
        let cache = options.kernel_cache.as_deref();
        let mut modules: Vec<(&str, Arc<CudaModule>)> = Vec::new();
        for (name, body) in KERNEL_MODULES {
            let cubin = compile_module_cached(name, body, &arch, cache)?;
            let m = ctx
                .load_module(Ptx::from_binary(cubin))
                .map_err(driver("module load"))?;
            modules.push((name, m));
        }
        let get = |module: &str, f: &str| -> Result<CudaFunction> {
            let m = modules
                .iter()
                .find(|(n, _)| *n == module)
                .map(|(_, m)| m)
                .ok_or_else(|| CudaError::Unavailable(format!("kernel module {module} missing")))?;
            m.load_function(f).map_err(driver("function load"))
        };
        let k = Kernels {
            matvec: get("matvec", "matvec_multi")?,
            matvec4: get("matvec", "matvec_multi4")?,
            embed_rows: get("embed", "embed_rows")?,
            rmsnorm: get("elementwise", "rmsnorm")?,
            rope: get("elementwise", "rope")?,
            swiglu: get("elementwise", "swiglu")?,
            add_inplace: get("elementwise", "add_inplace")?,
            store_f32: get("elementwise", "store_f32")?,
            argmax: get("elementwise", "argmax")?,
            kv_store: get("attention", "kv_store")?,
            rope_kv: get("attention", "rope_kv")?,
            rep_penalty: get("elementwise", "rep_penalty")?,
            topk_pass: get("elementwise", "topk_pass")?,
            attn_partial: get("attention", "attn_partial")?,
            quantize_q8: get("matvec_q8", "quantize_q8")?,
            rmsnorm_q8: get("matvec_q8", "rmsnorm_q8")?,
            matvec_q8: get("matvec_q8", "matvec_q8")?,
            matvec_q8_4: get("matvec_q8", "matvec_q8_4")?,
        };
        let q8 = Q8Scratch {
            qs: stream
                .alloc_zeros::<u8>(super::matvec_q8::MAX_Q8_COLS)
                .map_err(driver("alloc"))?,
            d: stream
                .alloc_zeros::<f32>(super::matvec_q8::MAX_Q8_COLS / 32)
                .map_err(driver("alloc"))?,
            s: stream
                .alloc_zeros::<f32>(super::matvec_q8::MAX_Q8_COLS / 32)
                .map_err(driver("alloc"))?,
        };
        let matvec_ksplit = match options.matvec_ksplit {
            MatvecKsplit::Auto => None,
            MatvecKsplit::Fixed(k) => Some(k),
        };
        Ok(Self {
            ctx,
            stream,
            arch,
            k,
            matvec_rows: options.matvec_rows,
            matvec_ksplit,
            options: options.clone(),
            batch_kernels: Mutex::new(None),
            q8: Mutex::new(q8),
        })
    }

    /// The options the backend was opened with.
    pub fn options(&self) -> &CudaOptions {
        &self.options
    }

    /// The compiled-kernel cache folder, if any.
    pub(super) fn kernel_cache(&self) -> Option<&Path> {
        self.options.kernel_cache.as_deref()
    }

    /// The CUDA context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The compute stream every launch goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The architecture the kernels were built for, e.g. `sm_90`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// `out[i] = w[tokens[i]]` (dequantized rows, `tokens.len()` rows of `w.row_len`). Token
    /// ids are checked by the kernel: an id past the table writes a row of NaN.
    pub fn embed(
        &self,
        w: &DeviceWeight<'_>,
        tokens: &CudaSlice<u32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let n = tokens.len();
        let (tp, _g) = tokens.device_ptr(&self.stream);
        self.embed_launch(w, tp, n, out)
    }

    /// Embedding rows of the `n` token ids at device address `tokens` into `out` (the caller
    /// checked that `tokens` holds `n` ids).
    pub(super) fn embed_launch(
        &self,
        w: &DeviceWeight<'_>,
        tokens: u64,
        n: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        const OP: &str = "embed";
        let need = n.checked_mul(w.row_len).ok_or_else(|| CudaError::Shape {
            op: OP,
            detail: "output size overflows".into(),
        })?;
        need_len(OP, "out", out.len(), need)?;
        let t = type_code(w.ggml_type)?;
        let rows = i32_arg(OP, "rows", w.n_rows)?;
        let cols = i32_arg(OP, "cols", w.row_len)?;
        if n == 0 {
            return Ok(());
        }
        let grid = grid_for(n, 1, OP)?;
        let mut l = Launch::new(&self.stream, &self.k.embed_rows);
        l.0.arg(&w.data)
            .arg(&t)
            .arg(&rows)
            .arg(&cols)
            .arg(&tokens)
            .arg(out);
        l.run(OP, cfg(grid, RED_THREADS))
    }

    /// RMSNorm of each of the `x.len() / n` rows of `x`: `out = x / rms(x) * w` with `rms =
    /// sqrt(mean(x^2) + eps)`.
    pub fn rmsnorm(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        n: usize,
        eps: f32,
    ) -> Result<()> {
        const OP: &str = "rmsnorm";
        if n == 0 || x.len() % n != 0 {
            return Err(CudaError::Shape {
                op: OP,
                detail: format!(
                    "x holds {} elements, not a whole number of rows of {n}",
                    x.len()
                ),
            });
        }
        need_len(OP, "w", w.len(), n)?;
        need_len(OP, "out", out.len(), x.len())?;
        let rows = x.len() / n;
        let n32 = i32_arg(OP, "n", n)?;
        if rows == 0 {
            return Ok(());
        }
        let grid = grid_for(rows, 1, OP)?;
        let mut l = Launch::new(&self.stream, &self.k.rmsnorm);
        l.0.arg(x).arg(w).arg(out).arg(&n32).arg(&eps);
        l.run(OP, cfg(grid, RED_THREADS))
    }

    /// Rotary embedding in place on `n_heads` heads of `head_dim` (llama.cpp's adjacent-pair
    /// mode): pair `i < rope_dim / 2` turns by `pos * base^(-2i / rope_dim) / factors[i]`.
    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        &self,
        x: &mut CudaSlice<f32>,
        n_heads: usize,
        head_dim: usize,
        rope_dim: usize,
        pos: usize,
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
        let total = n_heads
            .checked_mul(head_dim)
            .ok_or_else(|| CudaError::Shape {
                op: OP,
                detail: "size overflows".into(),
            })?;
        need_len(OP, "x", x.len(), total)?;
        if let Some(f) = factors {
            need_len(OP, "factors", f.len(), rope_dim / 2)?;
        }
        let pairs = n_heads * (rope_dim / 2);
        let (nh, hd, rd, p) = (
            i32_arg(OP, "n_heads", n_heads)?,
            i32_arg(OP, "head_dim", head_dim)?,
            i32_arg(OP, "rope_dim", rope_dim)?,
            i32_arg(OP, "pos", pos)?,
        );
        i32_arg(OP, "pairs", pairs)?;
        if pairs == 0 {
            return Ok(());
        }
        let grid = grid_for(pairs, EW_THREADS as usize, OP)?;
        let null: u64 = 0;
        let mut l = Launch::new(&self.stream, &self.k.rope);
        l.0.arg(x).arg(&nh).arg(&hd).arg(&rd).arg(&p).arg(&base);
        match factors {
            Some(f) => l.0.arg(f),
            None => l.0.arg(&null),
        };
        l.run(OP, cfg(grid, EW_THREADS))
    }

    /// `out[i] = silu(gate[i]) * up[i]` over `gate.len()` elements.
    pub fn swiglu(
        &self,
        gate: &CudaSlice<f32>,
        up: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        const OP: &str = "swiglu";
        let n = gate.len();
        need_len(OP, "up", up.len(), n)?;
        need_len(OP, "out", out.len(), n)?;
        let n32 = i32_arg(OP, "n", n)?;
        if n == 0 {
            return Ok(());
        }
        let grid = grid_for(n, EW_THREADS as usize, OP)?;
        let mut l = Launch::new(&self.stream, &self.k.swiglu);
        l.0.arg(gate).arg(up).arg(out).arg(&n32);
        l.run(OP, cfg(grid, EW_THREADS))
    }

    /// Residual add: `x[i] += y[i]` over `x.len()` elements.
    pub fn add_inplace(&self, x: &mut CudaSlice<f32>, y: &CudaSlice<f32>) -> Result<()> {
        need_len("add", "y", y.len(), x.len())?;
        let n = x.len();
        let (xp, _gx) = x.device_ptr(&self.stream);
        let (yp, _gy) = y.device_ptr(&self.stream);
        self.add_at(xp, yp, n)
    }

    /// `x[i] += y[i]` for `n` values at device addresses `x` and `y` (parts of larger buffers,
    /// which the caller keeps alive and in bounds).
    pub(super) fn add_at(&self, x: u64, y: u64, n: usize) -> Result<()> {
        self.elementwise_at("add", &self.k.add_inplace, x, y, n)
    }

    /// `x[i] = y[i]` for `n` values at device addresses `x` and `y` (either may be mapped
    /// page-locked host memory), as [`CudaBackend::add_at`].
    pub(super) fn store_at(&self, x: u64, y: u64, n: usize) -> Result<()> {
        self.elementwise_at("store", &self.k.store_f32, x, y, n)
    }

    fn elementwise_at(
        &self,
        op: &'static str,
        f: &CudaFunction,
        x: u64,
        y: u64,
        n: usize,
    ) -> Result<()> {
        let n32 = i32_arg(op, "n", n)?;
        if n == 0 {
            return Ok(());
        }
        let grid = grid_for(n, EW_THREADS as usize, op)?;
        let mut l = Launch::new(&self.stream, f);
        l.0.arg(&x).arg(&y).arg(&n32);
        l.run(op, cfg(grid, EW_THREADS))
    }

    /// Writes to `out[0]` the index of the largest element of `x` (lowest index on ties; NaN
    /// never wins).
    pub fn argmax(&self, x: &CudaSlice<f32>, out: &mut CudaSlice<u32>) -> Result<()> {
        const OP: &str = "argmax";
        need_len(OP, "out", out.len(), 1)?;
        let n = i32_arg(OP, "n", x.len())?;
        let mut l = Launch::new(&self.stream, &self.k.argmax);
        l.0.arg(x).arg(&n).arg(out);
        l.run(OP, cfg(1, ARGMAX_THREADS))
    }
}
