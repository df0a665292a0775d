//! Launchers of the fused dequantize x matrix-vector kernel (`kernels/matvec.cu`): plain,
//! accumulating (residual add in the epilogue), several weights sharing one input (Q/K/V into
//! one concatenated output) and gate/up with SwiGLU in the epilogue.

use cudarc::driver::{CudaSlice, DevicePtr, PushKernelArg};

use super::backend::{cfg, i32_arg, need_len, CudaBackend};
use super::error::{CudaError, Result};
use super::sys::Launch;
use super::weights::{type_code, DeviceWeight};

/// Warps per CTA (`MV_WARPS`): a CTA computes 2 or 4 rows (half as many outputs in SwiGLU
/// mode; `CudaBackend::matvec_rows`), its warps splitting the row length.
pub(super) const MV_WARPS: usize = 4;
pub(super) const MV_STORE: i32 = 0;
pub(super) const MV_ACCUM: i32 = 1;
pub(super) const MV_SWIGLU: i32 = 2;

/// One weight of a launch: device pointer, type code, rows, output pointer.
pub(super) struct Job {
    pub(super) w: u64,
    pub(super) t: i32,
    pub(super) rows: i32,
    pub(super) y: u64,
}

pub(super) const NO_JOB: Job = Job {
    w: 0,
    t: 0,
    rows: 0,
    y: 0,
};

/// Elements one warp covers per loop step in the kernel path `t` takes (fast paths; the
/// generic path counted as one super-block or 8 legacy blocks a step).
pub(super) fn elems_per_step(t: i32) -> usize {
    match t {
        7 => 1024,    // Q4_K: 4 super-blocks
        9 | 6 => 512, // Q6_K: 2 super-blocks; Q8_0: 16 blocks
        0 => 128,     // F32
        _ => 256,     // F16/BF16: 8 a lane; generic
    }
}

impl CudaBackend {
    /// Warps that split one unit's row length: [`super::CudaOptions::matvec_ksplit`] when fixed,
    /// else 4 for rows of at least 8 warp steps, 2 from 4 steps, 1 below (a warp should keep a
    /// few steps of loads in flight; short rows split over many warps pay the reduction).
    pub(super) fn matvec_split(&self, t: i32, cols: usize, q8: bool) -> usize {
        if let Some(k) = self.matvec_ksplit {
            return k;
        }
        let per = if q8 {
            super::matvec_q8::q8_elems_per_step(t)
        } else {
            elems_per_step(t)
        };
        let steps = cols / per;
        if steps >= 8 {
            4
        } else if steps >= 4 {
            2
        } else {
            1
        }
    }

    pub(super) fn check_x(&self, op: &'static str, x: &CudaSlice<f32>, cols: usize) -> Result<u64> {
        need_len(op, "x", x.len(), cols)?;
        let (p, _g) = x.device_ptr(self.stream());
        if p % 16 != 0 {
            return Err(CudaError::Shape {
                op,
                detail: "x is not 16-byte aligned".into(),
            });
        }
        Ok(p)
    }

    /// The job of weight `w` writing (or adding) its outputs at device address `y`.
    pub(super) fn job(&self, w: &DeviceWeight<'_>, y: u64) -> Result<Job> {
        let (p, _g) = w.data.device_ptr(self.stream());
        Ok(Job {
            w: p,
            t: type_code(w.ggml_type)?,
            rows: i32_arg("matvec", "rows", w.n_rows)?,
            y,
        })
    }

    pub(super) fn launch_matvec(
        &self,
        op: &'static str,
        mode: i32,
        x: u64,
        cols: usize,
        jobs: [Job; 3],
    ) -> Result<()> {
        if self.q8_eligible(cols, &jobs) {
            return self.launch_matvec_q8(op, mode, super::matvec_q8::Q8Src::Vector(x), cols, jobs);
        }
        let ks = self.matvec_split(jobs[0].t, cols, false);
        let f = if self.matvec_rows == 4 {
            &self.k.matvec4
        } else {
            &self.k.matvec
        };
        self.launch_jobs(op, f, &[x], cols, mode, ks, jobs)
    }

    /// Launches matrix-vector kernel `f` (`kernels/matvec_body.cuh`'s layout, for the f32 and
    /// the 8-bit kernels alike) over the CTAs `jobs` need in `mode` with `ks` warps a unit: the
    /// kernel's parameters are the activation's device addresses `act`, then `cols`, `mode`,
    /// `ks` and the three jobs.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn launch_jobs(
        &self,
        op: &'static str,
        f: &cudarc::driver::CudaFunction,
        act: &[u64],
        cols: usize,
        mode: i32,
        ks: usize,
        jobs: [Job; 3],
    ) -> Result<()> {
        let r = self.matvec_rows;
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
        let [a, b, c] = jobs;
        let mut l = Launch::new(self.stream(), f);
        for p in act {
            l.0.arg(p);
        }
        l.0.arg(&cols32).arg(&mode).arg(&ks32);
        l.0.arg(&a.w).arg(&a.t).arg(&a.rows).arg(&a.y);
        l.0.arg(&b.w).arg(&b.t).arg(&b.rows).arg(&b.y);
        l.0.arg(&c.w).arg(&c.t).arg(&c.rows).arg(&c.y);
        l.run(op, cfg(grid, (MV_WARPS * 32) as u32))
    }

    /// `y[r] = sum_c w[r][c] * x[c]` for every row `r` of `w` (f32 accumulation), reading the
    /// weight's ggml blocks in place. The weight may start at any byte offset of its buffer
    /// (aligned weights take the wide-load kernels); `x` is a whole allocation, so the
    /// kernel's 16-byte vector loads of it are aligned.
    pub fn matvec(
        &self,
        w: &DeviceWeight<'_>,
        x: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
    ) -> Result<()> {
        const OP: &str = "matvec";
        let xp = self.check_x(OP, x, w.row_len)?;
        need_len(OP, "y", y.len(), w.n_rows)?;
        let (yp, _g) = y.device_ptr(self.stream());
        let job = self.job(w, yp)?;
        self.launch_matvec(OP, MV_STORE, xp, w.row_len, [job, NO_JOB, NO_JOB])
    }

    /// `y[r] += sum_c w[r][c] * x[c]` (a residual add fused into the product).
    pub fn matvec_accumulate(
        &self,
        w: &DeviceWeight<'_>,
        x: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
    ) -> Result<()> {
        const OP: &str = "matvec_accumulate";
        let xp = self.check_x(OP, x, w.row_len)?;
        need_len(OP, "y", y.len(), w.n_rows)?;
        let (yp, _g) = y.device_ptr(self.stream());
        let job = self.job(w, yp)?;
        self.launch_matvec(OP, MV_ACCUM, xp, w.row_len, [job, NO_JOB, NO_JOB])
    }

    /// The jobs of [`CudaBackend::matvec_concat`] (row length and jobs), `None` for no weight.
    pub(super) fn concat_jobs(
        &self,
        op: &'static str,
        ws: &[&DeviceWeight<'_>],
        y: &mut CudaSlice<f32>,
    ) -> Result<Option<(usize, [Job; 3])>> {
        let Some(first) = ws.first() else {
            return Ok(None);
        };
        if ws.len() > 3 || ws.iter().any(|w| w.row_len != first.row_len) {
            return Err(CudaError::Shape {
                op,
                detail: "one to three weights of equal row length".into(),
            });
        }
        let total: usize = ws.iter().map(|w| w.n_rows).sum();
        need_len(op, "y", y.len(), total)?;
        let (yp, _g) = y.device_ptr(self.stream());
        let mut jobs = [NO_JOB, NO_JOB, NO_JOB];
        let mut at = 0usize;
        for (slot, w) in jobs.iter_mut().zip(ws) {
            *slot = self.job(w, yp + 4 * at as u64)?;
            at += w.n_rows;
        }
        Ok(Some((first.row_len, jobs)))
    }

    /// The jobs of [`CudaBackend::matvec_swiglu`] (row length and jobs).
    pub(super) fn swiglu_jobs(
        &self,
        op: &'static str,
        gate: &DeviceWeight<'_>,
        up: &DeviceWeight<'_>,
        out: &mut CudaSlice<f32>,
    ) -> Result<(usize, [Job; 3])> {
        if gate.ggml_type != up.ggml_type || gate.row_len != up.row_len || gate.n_rows != up.n_rows
        {
            return Err(CudaError::Shape {
                op,
                detail: format!(
                    "gate ({} x {} {}) and up ({} x {} {}) differ",
                    gate.n_rows, gate.row_len, gate.ggml_type, up.n_rows, up.row_len, up.ggml_type
                ),
            });
        }
        need_len(op, "out", out.len(), gate.n_rows)?;
        let (yp, _g) = out.device_ptr(self.stream());
        let g = self.job(gate, yp)?;
        let u = self.job(up, 0)?;
        Ok((gate.row_len, [g, u, NO_JOB]))
    }

    /// Up to three weights with the same row length times one `x`, in one launch: the outputs
    /// are concatenated in `y` (weight 0's rows first), e.g. Q, K and V of a layer into one
    /// buffer. The weights may have different types.
    pub fn matvec_concat(
        &self,
        ws: &[&DeviceWeight<'_>],
        x: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
    ) -> Result<()> {
        const OP: &str = "matvec_concat";
        let Some((cols, jobs)) = self.concat_jobs(OP, ws, y)? else {
            return Ok(());
        };
        let xp = self.check_x(OP, x, cols)?;
        self.launch_matvec(OP, MV_STORE, xp, cols, jobs)
    }

    /// `out[r] = silu(gate[r] . x) * (up[r] . x)`: the FFN's gate and up products with SwiGLU
    /// in one launch. `gate` and `up` must have the same type and shape; otherwise use two
    /// [`CudaBackend::matvec`] and [`CudaBackend::swiglu`].
    pub fn matvec_swiglu(
        &self,
        gate: &DeviceWeight<'_>,
        up: &DeviceWeight<'_>,
        x: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        const OP: &str = "matvec_swiglu";
        let (cols, jobs) = self.swiglu_jobs(OP, gate, up, out)?;
        let xp = self.check_x(OP, x, cols)?;
        self.launch_matvec(OP, MV_SWIGLU, xp, cols, jobs)
    }
}
