//! Launchers of the 8-bit-activation matrix-vector path (`kernels/matvec_q8.cu`): the input is
//! quantized once per product to blocks of 32 (llama.cpp's q8 rounding, as the CPU's
//! `cpu::q8`), then integer dot products (dp4a) read the weights' blocks in place. Taken by
//! every product of [`super::CudaBackend::matvec`] and its variants when
//! [`super::CudaOptions::matvec_q8`] is on and every weight of the launch is of a type this
//! path has (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K) at the alignment its loads need.

use cudarc::driver::{CudaSlice, DevicePtr, PushKernelArg};

use super::backend::{cfg, i32_arg, CudaBackend};
use super::error::{CudaError, Result};
use super::matvec::{Job, MV_STORE, MV_SWIGLU, MV_WARPS};
use super::sys::Launch;
use super::weights::{type_code, DeviceWeight};

/// Threads of the fused RMSNorm + quantization kernel (`NQ_THREADS`).
const NQ_THREADS: u32 = 1024;

/// Where the 8-bit activation of a launch comes from.
#[derive(Clone, Copy)]
pub(super) enum Q8Src {
    /// Quantize the f32 vector at this device address.
    Vector(u64),
    /// RMSNorm of the row at `x` with the F32 weight at `w` into `out` (`n` values), quantized
    /// in the same kernel.
    Norm { x: u64, w: u64, out: u64, eps: f32 },
}

/// The longest row (elements) the 8-bit path takes; longer rows take the f32 kernel.
pub(super) const MAX_Q8_COLS: usize = 1 << 16;
/// Warps (blocks of 32 activations) per CTA of the quantization kernel (`Q8_WARPS`).
const Q8_WARPS: usize = 8;

/// Bytes per block, elements per block and the byte alignment the kernel's loads need of a
/// row, for the type codes the 8-bit path has.
fn q8_layout(t: i32) -> Option<(usize, usize, usize)> {
    match t {
        3 => Some((18, 32, 2)),    // Q4_0
        4 => Some((20, 32, 2)),    // Q4_1
        5 => Some((22, 32, 2)),    // Q5_0
        6 => Some((34, 32, 2)),    // Q8_0
        7 => Some((144, 256, 16)), // Q4_K
        9 => Some((210, 256, 2)),  // Q6_K
        _ => None,
    }
}

/// Elements one warp covers per loop step of the 8-bit kernel for type `t`.
pub(super) fn q8_elems_per_step(t: i32) -> usize {
    match t {
        7 => 1024, // Q4_K: 4 super-blocks
        _ => 512,  // Q6_K: 2 super-blocks; 32-element types: 16 blocks
    }
}

/// Whether weight `t` at device address `w` with rows of `cols` takes the 8-bit kernel.
fn q8_weight_ok(t: i32, w: u64, cols: usize) -> bool {
    let Some((bytes, per, align)) = q8_layout(t) else {
        return false;
    };
    let rb = (cols / per) * bytes;
    cols % per == 0 && w % align as u64 == 0 && rb % align == 0
}

impl CudaBackend {
    /// Whether a launch of these jobs takes the 8-bit path.
    pub(super) fn q8_eligible(&self, cols: usize, jobs: &[Job; 3]) -> bool {
        if !self.options().matvec_q8 || cols == 0 || cols % 32 != 0 || cols > MAX_Q8_COLS {
            return false;
        }
        let mut any = false;
        for j in jobs {
            if j.rows <= 0 {
                continue;
            }
            if !q8_weight_ok(j.t, j.w, cols) {
                return false;
            }
            any = true;
        }
        any
    }

    /// Whether [`CudaBackend::matvec`] of `w` takes the 8-bit-activation path (integer dot
    /// products against the quantized input) rather than the f32 kernel: the option is on and
    /// the weight's type and alignment allow it.
    pub fn matvec_uses_q8(&self, w: &DeviceWeight<'_>) -> bool {
        let Ok(t) = type_code(w.ggml_type) else {
            return false;
        };
        let (p, _g) = w.data.device_ptr(self.stream());
        let job = Job {
            w: p,
            t,
            rows: 1,
            y: 0,
        };
        let none = || Job {
            w: 0,
            t: 0,
            rows: 0,
            y: 0,
        };
        self.q8_eligible(w.row_len, &[job, none(), none()])
    }

    /// Enqueues the quantization of `cols` activations at `x` into the scratch buffers.
    fn enqueue_quantize(
        &self,
        op: &'static str,
        x: u64,
        cols: usize,
        qs: &mut CudaSlice<u8>,
        d: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let cols32 = i32_arg(op, "cols", cols)?;
        let grid = (cols / 32).div_ceil(Q8_WARPS) as u32;
        let mut l = Launch::new(self.stream(), &self.k.quantize_q8);
        l.0.arg(&x).arg(&cols32).arg(qs).arg(d);
        l.run(op, cfg(grid, (Q8_WARPS * 32) as u32))
    }

    /// The quantization of `x` (first `cols` elements, a multiple of 32, at most 65536) the
    /// 8-bit path computes on the GPU, downloaded: the quants and one scale per block of 32
    /// (`x_j ~= d[j / 32] * qs[j]`). For checking the rounding against a reference.
    pub fn quantize_q8(&self, x: &CudaSlice<f32>, cols: usize) -> Result<(Vec<i8>, Vec<f32>)> {
        const OP: &str = "quantize_q8";
        if cols % 32 != 0 || cols > MAX_Q8_COLS || x.len() < cols {
            return Err(CudaError::Shape {
                op: OP,
                detail: format!("{cols} columns (x holds {})", x.len()),
            });
        }
        let (xp, _gx) = x.device_ptr(self.stream());
        let mut g = self.q8.lock().unwrap_or_else(|e| e.into_inner());
        let super::backend::Q8Scratch { qs, d } = &mut *g;
        self.enqueue_quantize(OP, xp, cols, qs, d)?;
        let qv = self
            .stream()
            .clone_dtoh(&qs.slice(..cols))
            .map_err(super::error::driver(OP))?;
        let dv = self
            .stream()
            .clone_dtoh(&d.slice(..cols / 32))
            .map_err(super::error::driver(OP))?;
        Ok((qv.into_iter().map(|b| b as i8).collect(), dv))
    }

    /// Quantizes the input (`src`) and launches the 8-bit kernel over `jobs` (the caller
    /// checked [`CudaBackend::q8_eligible`]); the lock on the scratch spans both launches.
    pub(super) fn launch_matvec_q8(
        &self,
        op: &'static str,
        mode: i32,
        src: Q8Src,
        cols: usize,
        jobs: [Job; 3],
    ) -> Result<()> {
        let r = self.matvec_rows;
        let ks = self.matvec_split(jobs[0].t, cols, true);
        let per = if mode == MV_SWIGLU { r / 2 } else { r };
        let units_per_cta = MV_WARPS / ks;
        let mut ctas = 0usize;
        for (i, j) in jobs.iter().enumerate() {
            if mode == MV_SWIGLU && i > 0 {
                break;
            }
            let rows = usize::try_from(j.rows).unwrap_or(0);
            ctas += rows.div_ceil(per).div_ceil(units_per_cta);
        }
        if ctas == 0 {
            return Ok(());
        }
        let grid = u32::try_from(ctas).map_err(|_| CudaError::Shape {
            op,
            detail: format!("{ctas} CTAs are too many"),
        })?;
        let cols32 = i32_arg(op, "cols", cols)?;
        let ks32 = ks as i32;
        let mut g = self.q8.lock().unwrap_or_else(|e| e.into_inner());
        let super::backend::Q8Scratch { qs, d } = &mut *g;
        match src {
            Q8Src::Vector(x) => self.enqueue_quantize(op, x, cols, qs, d)?,
            Q8Src::Norm { x, w, out, eps } => {
                let mut l = Launch::new(self.stream(), &self.k.rmsnorm_q8);
                l.0.arg(&x).arg(&w).arg(&out).arg(&cols32).arg(&eps);
                l.0.arg(&mut *qs).arg(&mut *d);
                l.run(op, cfg(1, NQ_THREADS))?;
            }
        }
        let [a, b, c] = jobs;
        let f = if r == 4 {
            &self.k.matvec_q8_4
        } else {
            &self.k.matvec_q8
        };
        let mut l = Launch::new(self.stream(), f);
        l.0.arg(&*qs).arg(&*d).arg(&cols32).arg(&mode).arg(&ks32);
        l.0.arg(&a.w).arg(&a.t).arg(&a.rows).arg(&a.y);
        l.0.arg(&b.w).arg(&b.t).arg(&b.rows).arg(&b.y);
        l.0.arg(&c.w).arg(&c.t).arg(&c.rows).arg(&c.y);
        l.run(op, cfg(grid, (MV_WARPS * 32) as u32))
    }
}

impl CudaBackend {
    /// RMSNorm of `x` into `xn` (as [`CudaBackend::rmsnorm_weight`]), then the product(s) of
    /// `jobs` with `xn` in `mode`: when the 8-bit path takes the product, the norm kernel also
    /// quantizes its output (one launch instead of three).
    #[allow(clippy::too_many_arguments)]
    fn norm_then(
        &self,
        op: &'static str,
        mode: i32,
        x: &CudaSlice<f32>,
        norm: &DeviceWeight<'_>,
        xn: &mut CudaSlice<f32>,
        eps: f32,
        cols: usize,
        jobs: [Job; 3],
    ) -> Result<()> {
        if x.len() != cols || !self.q8_eligible(cols, &jobs) {
            self.rmsnorm_weight(x, norm, xn, eps)?;
            let xp = self.check_x(op, xn, cols)?;
            return self.launch_matvec(op, mode, xp, cols, jobs);
        }
        self.check_norm(op, cols, norm, xn)?;
        let (xp, _gx) = x.device_ptr(self.stream());
        let (wp, _gw) = norm.data.device_ptr(self.stream());
        let (op_, _go) = xn.device_ptr(self.stream());
        let src = Q8Src::Norm {
            x: xp,
            w: wp,
            out: op_,
            eps,
        };
        self.launch_matvec_q8(op, mode, src, cols, jobs)
    }

    /// `xn = rmsnorm(x) * norm` ([`CudaBackend::rmsnorm_weight`]), then
    /// `y = W . xn` ([`CudaBackend::matvec`]): with the 8-bit path, the norm and the activation's
    /// quantization are one kernel.
    pub fn rmsnorm_matvec(
        &self,
        x: &CudaSlice<f32>,
        norm: &DeviceWeight<'_>,
        xn: &mut CudaSlice<f32>,
        eps: f32,
        w: &DeviceWeight<'_>,
        y: &mut CudaSlice<f32>,
    ) -> Result<()> {
        const OP: &str = "rmsnorm_matvec";
        let Some((cols, jobs)) = self.concat_jobs(OP, &[w], y)? else {
            return Ok(());
        };
        self.norm_then(OP, MV_STORE, x, norm, xn, eps, cols, jobs)
    }

    /// `xn = rmsnorm(x) * norm`, then [`CudaBackend::matvec_concat`] of `ws` with `xn` into `y`
    /// (e.g. a layer's Q, K and V), the norm and the quantization in one kernel on the 8-bit
    /// path.
    pub fn rmsnorm_matvec_concat(
        &self,
        x: &CudaSlice<f32>,
        norm: &DeviceWeight<'_>,
        xn: &mut CudaSlice<f32>,
        eps: f32,
        ws: &[&DeviceWeight<'_>],
        y: &mut CudaSlice<f32>,
    ) -> Result<()> {
        const OP: &str = "rmsnorm_matvec_concat";
        let Some((cols, jobs)) = self.concat_jobs(OP, ws, y)? else {
            return self.rmsnorm_weight(x, norm, xn, eps);
        };
        self.norm_then(OP, MV_STORE, x, norm, xn, eps, cols, jobs)
    }

    /// `xn = rmsnorm(x) * norm`, then [`CudaBackend::matvec_swiglu`] of `gate` and `up` with
    /// `xn` into `out`, the norm and the quantization in one kernel on the 8-bit path.
    #[allow(clippy::too_many_arguments)]
    pub fn rmsnorm_matvec_swiglu(
        &self,
        x: &CudaSlice<f32>,
        norm: &DeviceWeight<'_>,
        xn: &mut CudaSlice<f32>,
        eps: f32,
        gate: &DeviceWeight<'_>,
        up: &DeviceWeight<'_>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        const OP: &str = "rmsnorm_matvec_swiglu";
        let (cols, jobs) = self.swiglu_jobs(OP, gate, up, out)?;
        self.norm_then(OP, MV_SWIGLU, x, norm, xn, eps, cols, jobs)
    }
}
