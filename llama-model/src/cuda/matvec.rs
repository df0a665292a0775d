//! Launchers of the fused dequantize x matrix-vector kernel (`kernels/matvec.cu`): plain,
//! accumulating (residual add in the epilogue), several weights sharing one input (Q/K/V into
//! one concatenated output) and gate/up with SwiGLU in the epilogue.

use cudarc::driver::{CudaSlice, DevicePtr, PushKernelArg};

use super::backend::{cfg, i32_arg, need_len, CudaBackend};
use super::error::{CudaError, Result};
use super::sys::Launch;
use super::weights::{type_code, DeviceWeight};

/// Warps per CTA (`MV_WARPS`); each warp computes two rows (one output in SwiGLU mode).
const MV_WARPS: usize = 4;
const MV_STORE: i32 = 0;
const MV_ACCUM: i32 = 1;
const MV_SWIGLU: i32 = 2;

/// One weight of a launch: device pointer, type code, rows, output pointer.
struct Job {
    w: u64,
    t: i32,
    rows: i32,
    y: u64,
}

const NO_JOB: Job = Job {
    w: 0,
    t: 0,
    rows: 0,
    y: 0,
};

impl CudaBackend {
    fn check_x(&self, op: &'static str, x: &CudaSlice<f32>, cols: usize) -> Result<u64> {
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

    fn job(&self, w: &DeviceWeight<'_>, y: u64) -> Result<Job> {
        let (p, _g) = w.data.device_ptr(self.stream());
        Ok(Job {
            w: p,
            t: type_code(w.ggml_type)?,
            rows: i32_arg("matvec", "rows", w.n_rows)?,
            y,
        })
    }

    fn launch_matvec(
        &self,
        op: &'static str,
        mode: i32,
        x: u64,
        cols: usize,
        jobs: [Job; 3],
    ) -> Result<()> {
        let cols = i32_arg(op, "cols", cols)?;
        let mut ctas = 0usize;
        for (i, j) in jobs.iter().enumerate() {
            let rows = usize::try_from(j.rows).unwrap_or(0);
            let units = if mode == MV_SWIGLU {
                if i == 0 {
                    rows
                } else {
                    0
                }
            } else {
                rows.div_ceil(2)
            };
            ctas += units.div_ceil(MV_WARPS);
        }
        if ctas == 0 {
            return Ok(());
        }
        let grid = u32::try_from(ctas).map_err(|_| CudaError::Shape {
            op,
            detail: format!("{ctas} CTAs are too many"),
        })?;
        let [a, b, c] = jobs;
        let mut l = Launch::new(self.stream(), &self.k.matvec);
        l.0.arg(&x).arg(&cols).arg(&mode);
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
        let Some(first) = ws.first() else {
            return Ok(());
        };
        if ws.len() > 3 || ws.iter().any(|w| w.row_len != first.row_len) {
            return Err(CudaError::Shape {
                op: OP,
                detail: "one to three weights of equal row length".into(),
            });
        }
        let cols = first.row_len;
        let xp = self.check_x(OP, x, cols)?;
        let total: usize = ws.iter().map(|w| w.n_rows).sum();
        need_len(OP, "y", y.len(), total)?;
        let (yp, _g) = y.device_ptr(self.stream());
        let mut jobs = [NO_JOB, NO_JOB, NO_JOB];
        let mut at = 0usize;
        for (slot, w) in jobs.iter_mut().zip(ws) {
            *slot = self.job(w, yp + 4 * at as u64)?;
            at += w.n_rows;
        }
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
        if gate.ggml_type != up.ggml_type || gate.row_len != up.row_len || gate.n_rows != up.n_rows
        {
            return Err(CudaError::Shape {
                op: OP,
                detail: format!(
                    "gate ({} x {} {}) and up ({} x {} {}) differ",
                    gate.n_rows, gate.row_len, gate.ggml_type, up.n_rows, up.row_len, up.ggml_type
                ),
            });
        }
        let xp = self.check_x(OP, x, gate.row_len)?;
        need_len(OP, "out", out.len(), gate.n_rows)?;
        let (yp, _g) = out.device_ptr(self.stream());
        let g = self.job(gate, yp)?;
        let u = self.job(up, 0)?;
        self.launch_matvec(OP, MV_SWIGLU, xp, gate.row_len, [g, u, NO_JOB])
    }
}
