//! Launchers of the 8-bit-activation matrix-vector path (`kernels/matvec_q8.cu`): the input is
//! quantized once per product to blocks of 32 (llama.cpp's q8 rounding, as the CPU's
//! `cpu::q8`), then integer dot products (dp4a) read the weights' blocks in place. Taken by
//! every product of [`super::CudaBackend::matvec`] and its variants when
//! [`super::CudaOptions::matvec_q8`] is on and every weight of the launch is of a type this
//! path has (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K) at the alignment its loads need.

use cudarc::driver::{CudaSlice, DevicePtr, PushKernelArg};

use super::backend::{cfg, i32_arg, CudaBackend, Q8Scratch};
use super::error::{CudaError, Result};
use super::matvec::{Job, MV_STORE, MV_SWIGLU};
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
        q: &mut Q8Scratch,
    ) -> Result<()> {
        let cols32 = i32_arg(op, "cols", cols)?;
        let grid = (cols / 32).div_ceil(Q8_WARPS) as u32;
        let mut l = Launch::new(self.stream(), &self.k.quantize_q8);
        l.0.arg(&x)
            .arg(&cols32)
            .arg(&mut q.qs)
            .arg(&mut q.d)
            .arg(&mut q.s);
        l.run(op, cfg(grid, (Q8_WARPS * 32) as u32))
    }

    /// The quantization of `x` (first `cols` elements, a multiple of 32, at most 65536) the
    /// 8-bit path computes on the GPU, downloaded (for checking it against the CPU backend's,
    /// [`reference_quantize_q8`]).
    pub fn quantize_q8(&self, x: &CudaSlice<f32>, cols: usize) -> Result<Q8Activation> {
        const OP: &str = "quantize_q8";
        if cols % 32 != 0 || cols > MAX_Q8_COLS || x.len() < cols {
            return Err(CudaError::Shape {
                op: OP,
                detail: format!("{cols} columns (x holds {})", x.len()),
            });
        }
        let (xp, _gx) = x.device_ptr(self.stream());
        let mut g = self.q8.lock().unwrap_or_else(|e| e.into_inner());
        self.enqueue_quantize(OP, xp, cols, &mut g)?;
        let st = self.stream();
        let get = |v: &CudaSlice<f32>| {
            st.clone_dtoh(&v.slice(..cols / 32))
                .map_err(super::error::driver(OP))
        };
        let qs = st
            .clone_dtoh(&g.qs.slice(..cols))
            .map_err(super::error::driver(OP))?;
        Ok(Q8Activation {
            qs: qs.into_iter().map(|b| b as i8).collect(),
            d: get(&g.d)?,
            s: get(&g.s)?,
        })
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
        if !jobs.iter().any(|j| j.rows > 0) {
            return Ok(());
        }
        let mut guard = self.q8.lock().unwrap_or_else(|e| e.into_inner());
        let g: &mut Q8Scratch = &mut guard;
        match src {
            Q8Src::Vector(x) => self.enqueue_quantize(op, x, cols, g)?,
            Q8Src::Norm { x, w, out, eps } => {
                let cols32 = i32_arg(op, "cols", cols)?;
                let mut l = Launch::new(self.stream(), &self.k.rmsnorm_q8);
                l.0.arg(&x).arg(&w).arg(&out).arg(&cols32).arg(&eps);
                l.0.arg(&mut g.qs).arg(&mut g.d).arg(&mut g.s);
                l.run(op, cfg(1, NQ_THREADS))?;
            }
        }
        let st = self.stream();
        let ((qp, _gq), (dp, _gd), (sp, _gs)) =
            (g.qs.device_ptr(st), g.d.device_ptr(st), g.s.device_ptr(st));
        let f = if self.matvec_rows == 4 {
            &self.k.matvec_q8_4
        } else {
            &self.k.matvec_q8
        };
        let ks = self.matvec_split(jobs[0].t, cols, true);
        self.launch_jobs(op, f, &[qp, dp, sp], cols, mode, ks, jobs)
    }
}

/// An activation quantized as the 8-bit path does, per block `b` of 32 elements `j`:
/// `x_j ~= d[b] * qs[j]`, and `s[b]` (llama.cpp's q8_1 sum term `f16((amax / 127) * sum qs)`,
/// which Q4_1's minimum multiplies).
#[derive(Debug, Clone, PartialEq)]
pub struct Q8Activation {
    /// The quants, `cols` of them.
    pub qs: Vec<i8>,
    /// The scale of each block (an f16 value widened to f32).
    pub d: Vec<f32>,
    /// The sum term of each block (an f16 value widened to f32).
    pub s: Vec<f32>,
}

/// The CPU backend's quantization of `x` (`llama_model::cpu`'s 8-bit kernel, bit-identical to
/// llama.cpp's x86 `quantize_row_q8_1`; the length a multiple of 32): the reference the GPU's
/// [`CudaBackend::quantize_q8`] equals bit for bit.
pub fn reference_quantize_q8(x: &[f32]) -> Q8Activation {
    let mut blocks = Vec::with_capacity(x.len() / 32);
    crate::cpu::q8::quantize_q8(&x[..x.len() / 32 * 32], &mut blocks);
    Q8Activation {
        qs: blocks.iter().flat_map(|b| b.qs).collect(),
        d: blocks.iter().map(|b| b.d).collect(),
        s: blocks.iter().map(|b| b.s).collect(),
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

#[cfg(test)]
mod tests {
    use super::reference_quantize_q8;

    /// `kernels/matvec_q8.cu`'s `q8_store` for one block, operation by operation in f32 (the
    /// kernel's intrinsics are IEEE single-precision operations rounded to nearest even):
    /// `fmaxf` of `fabsf` over the warp, `__fdiv_rn(127, amax)`, `__float2int_rn(__fmul_rn(v,
    /// id))`, the warp's integer sum of the quants, `cvt.rn.f16.f32` of `__fdiv_rn(amax, 127)`
    /// and of `__fmul_rn(that, sum)`.
    fn kernel_block(v: &[f32]) -> ([i8; 32], f32, f32) {
        let amax = v.iter().fold(0f32, |a, x| a.max(x.abs()));
        let id = if amax != 0.0 { 127.0f32 / amax } else { 0.0 };
        let mut qs = [0i8; 32];
        let mut sum = 0i32;
        for (q, x) in qs.iter_mut().zip(v) {
            let r = (x * id).round_ties_even() as i32;
            *q = r as i8;
            sum += r;
        }
        let dr = amax / 127.0;
        let h = |f: f32| half::f16::from_f32(f).to_f32();
        (qs, h(dr), h(dr * sum as f32))
    }

    /// The kernel's arithmetic (above) equals the CPU backend's quantizer (`cpu::q8`, llama.cpp's
    /// x86 rounding: its ties-to-even by adding and subtracting 1.5 * 2^23) bit for bit, on
    /// blocks of every magnitude, with exact ties, zeros and single values: the GPU test
    /// (`tests/cuda_matvec_q8.rs`) then only has to show the kernel does what it says.
    #[test]
    fn kernel_quantizer_arithmetic_equals_the_cpu_quantizer() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 23) as f32 * 2.0 - 1.0
        };
        let mut x = Vec::new();
        for k in 0..4000 {
            let scale = 10f32.powf((k % 160) as f32 / 10.0 - 8.0);
            let bias = if k % 3 == 0 { 0.8 } else { 0.0 };
            let mut b: Vec<f32> = (0..32).map(|_| (next() + bias) * scale).collect();
            match k % 7 {
                // amax = 127: the products are the values, so halves are exact ties.
                0 => {
                    for (j, v) in b.iter_mut().enumerate() {
                        *v = ((*v * 50.0 / scale).round() + 0.5).clamp(-126.5, 126.5);
                        if j == 5 {
                            *v = -127.0;
                        }
                    }
                }
                1 => b.fill(0.0),
                2 => {
                    b.fill(0.0);
                    b[k % 32] = scale;
                }
                _ => {}
            }
            x.extend(b);
        }
        let cpu = reference_quantize_q8(&x);
        for (i, c) in x.chunks_exact(32).enumerate() {
            let (qs, d, s) = kernel_block(c);
            assert_eq!(&qs[..], &cpu.qs[32 * i..32 * i + 32], "block {i}: quants");
            assert_eq!(d.to_bits(), cpu.d[i].to_bits(), "block {i}: scale");
            assert_eq!(s.to_bits(), cpu.s[i].to_bits(), "block {i}: sum term");
        }
    }
}
