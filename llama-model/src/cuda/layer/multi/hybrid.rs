//! A multi-sequence step through one layer whose matrices are split by output rows between the
//! GPU and CPU threads: the batched counterpart of [`crate::cuda::forward_layer_hybrid`], for
//! decode steps of a few rows.
//!
//! As in the one-token path, the device holds the first rows of each matrix (the part that
//! crossed the bus) and the host its last rows ([`HostLayerRows`], read in place from RAM).
//! For each of the four products the step's `n` f16 input rows are widened into a mapped
//! page-locked buffer, the CPU threads compute their rows for all `n` inputs (each weight row
//! read once) while the device computes its rows into a scratch buffer, and one kernel joins
//! the two parts into the step's activations (adding to the residual for the output and down
//! projections). Norms, rope, the paged KV and attention stay on the device, as in
//! [`super::forward_layer_multi`].

use cudarc::driver::CudaSlice;

use super::{alloc, attend, no_scratch, overflow, product, GpuMultiState};
use crate::cpu::{Kernel, TensorView};
use crate::cuda::error::Result;
use crate::cuda::layer::hybrid::{on_host, products, validate, HostLayerRows, HostSpan};
use crate::cuda::layer::DeviceLayerWeights;
use crate::cuda::sys::PinnedF32;
use crate::cuda::weights::DeviceWeight;

/// Exchange buffers of split layers for steps of up to [`MultiHybridScratch::rows`] rows:
/// mapped page-locked inputs and outputs of the CPU's rows, and device buffers for the
/// device's rows before they are joined (one per [`GpuMultiState`], reused by every layer).
#[derive(Debug)]
pub struct MultiHybridScratch {
    rows: usize,
    xn: PinnedF32,
    att: PinnedF32,
    act: PinnedF32,
    out: PinnedF32,
    q: CudaSlice<f32>,
    k: CudaSlice<f32>,
    v: CudaSlice<f32>,
    gate: CudaSlice<f32>,
    up: CudaSlice<f32>,
}

impl MultiHybridScratch {
    /// Buffers for steps of up to `rows` rows of `state`'s model.
    pub fn new(state: &GpuMultiState, rows: usize) -> Result<Self> {
        let c = &state.config;
        let (d, kv, f) = (c.dim, c.kv_dim(), c.ffn_dim);
        let n = |w: usize| {
            rows.checked_mul(w)
                .ok_or_else(|| overflow("hybrid buffers"))
        };
        let ctx = state.backend.context();
        let s = state.backend.stream();
        Ok(Self {
            rows,
            xn: PinnedF32::new(ctx, n(d)?)?,
            att: PinnedF32::new(ctx, n(d)?)?,
            act: PinnedF32::new(ctx, n(f)?)?,
            out: PinnedF32::new(ctx, n((d + 2 * kv).max(2 * f))?)?,
            q: alloc(s, n(d)?)?,
            k: alloc(s, n(kv)?)?,
            v: alloc(s, n(kv)?)?,
            gate: alloc(s, n(f)?)?,
            up: alloc(s, n(f)?)?,
        })
    }

    /// The most rows of a step these buffers serve.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// One split matrix of a [`Group`]: the device's first rows and the host's last rows, the
/// device scratch its rows go to first, and the step's activations they join into.
struct Part<'p, 'w> {
    gpu: &'p DeviceWeight<'w>,
    host: &'p TensorView<'w>,
    tmp: &'p mut CudaSlice<f32>,
    dst: &'p mut CudaSlice<f32>,
}

impl<'p, 'w> Part<'p, 'w> {
    fn new(
        gpu: &'p DeviceWeight<'w>,
        host: &'p TensorView<'w>,
        tmp: &'p mut CudaSlice<f32>,
        dst: &'p mut CudaSlice<f32>,
    ) -> Self {
        Self {
            gpu,
            host,
            tmp,
            dst,
        }
    }
}

/// What every group of split products of one step shares: the backend and batch kernels, the
/// few-row limit, the step's `n` rows and the CPU kernel.
#[derive(Clone, Copy)]
struct Group<'g> {
    b: &'g crate::cuda::CudaBackend,
    k: &'g crate::cuda::BatchKernels,
    mv: usize,
    n: usize,
    kernel: Kernel,
}

impl Group<'_> {
    /// Split products sharing the step's f16 input rows `h16` (`width` values each): the input
    /// widened into the page-locked `input`, each part's device rows into its scratch while the
    /// CPU threads compute the host rows of all parts (one pass where it can) into `out`, then
    /// each part's two halves joined into its destination (added to it with `accumulate`).
    /// Returns the host's span.
    #[allow(clippy::too_many_arguments)]
    fn run<const N: usize>(
        &self,
        mk: &super::MultiKernels,
        h16: &CudaSlice<u16>,
        width: usize,
        input: &mut PinnedF32,
        out: &mut PinnedF32,
        mut parts: [Part<'_, '_>; N],
        accumulate: bool,
    ) -> Result<HostSpan> {
        let (b, n) = (self.b, self.n);
        mk.f16_to_f32(b, h16, input.addr(0..n * width)?, n * width)?;
        input.record(b.stream())?;
        for p in &mut parts {
            product(self.k, mk, self.mv, b, p.gpu, h16, n, p.tmp, false)?;
        }
        // Part i's host rows at out[at[i]..at[i + 1]], [n][its host rows].
        let mut at = [0usize; N];
        let mut end = 0;
        for (a, p) in at.iter_mut().zip(&parts) {
            *a = end;
            end += n * p.host.n_rows;
        }
        let span = on_host(input, out, |x, o| {
            let mut rest = &mut o[..end];
            let mut outs: [&mut [f32]; N] = std::array::from_fn(|i| {
                let (head, tail) = std::mem::take(&mut rest).split_at_mut(n * parts[i].host.n_rows);
                rest = tail;
                head
            });
            let views: [&TensorView<'_>; N] = std::array::from_fn(|i| parts[i].host);
            products(&views, &[self.kernel; N], &x[..n * width], n, &mut outs)
        })?;
        for (p, &a) in parts.iter_mut().zip(&at) {
            let (g, c) = (p.gpu.n_rows, p.host.n_rows);
            let host_rows = out.addr(a..a + n * c)?;
            mk.join_cols(b, p.dst, p.tmp, host_rows, n, g + c, g, accumulate)?;
        }
        out.record(b.stream())?;
        Ok(span)
    }
}

/// Runs transformer block `layer` over every row of `st`'s open step with its matrices split
/// by rows: the device's first rows in `w`, the host's last rows in `host` (computed by CPU
/// threads on this thread's rayon pool, for all the step's rows, while the GPU computes its
/// share). Returns the host's four products' wait and compute spans. Steps of more rows than
/// `scratch` serves are refused (stream those layers whole).
pub fn forward_layer_multi_hybrid(
    layer: usize,
    w: &DeviceLayerWeights<'_>,
    host: &HostLayerRows<'_>,
    st: &mut GpuMultiState,
    scratch: &mut MultiHybridScratch,
) -> Result<Vec<HostSpan>> {
    let n = st.book.n_rows();
    if n > scratch.rows {
        return Err(crate::cuda::CudaError::Shape {
            op: "split layer",
            detail: format!(
                "a step of {n} rows; the hybrid buffers serve at most {}",
                scratch.rows
            ),
        });
    }
    validate(w, host, &st.config)?;
    st.book.enter_layer(layer)?;
    let c = &st.config;
    let (d, f, eps) = (c.dim, c.ffn_dim, c.rms_eps);
    let b = st.backend.clone();
    let k = st.batch.clone();
    let mv = st.matvec_rows;
    let hs = scratch;
    // The step's device products take the f16 rows unquantized (few-row matvec and GEMM
    // alike), so the CPU's rows matching them take f32 inputs.
    let kernel = host.kernel.unwrap_or(Kernel::F32);
    let mut spans = Vec::with_capacity(4);
    let (mk, sc) = (&st.mk, st.scratch.as_mut().ok_or_else(no_scratch)?);
    let g = Group {
        b: &b,
        k: &k,
        mv,
        n,
        kernel,
    };

    // --- Q, K, V ---
    k.rmsnorm_f16(&b, &sc.x, &w.attn_norm, &mut sc.h16, n, eps)?;
    spans.push(g.run(
        mk,
        &sc.h16,
        d,
        &mut hs.xn,
        &mut hs.out,
        [
            Part::new(&w.attn_q, &host.attn_q, &mut hs.q, &mut sc.q),
            Part::new(&w.attn_k, &host.attn_k, &mut hs.k, &mut sc.k),
            Part::new(&w.attn_v, &host.attn_v, &mut hs.v, &mut sc.v),
        ],
        false,
    )?);

    // --- Attention, then x += Wo . att ---
    attend(layer, st)?;
    let (mk, sc) = (&st.mk, st.scratch.as_mut().ok_or_else(no_scratch)?);
    let wo = Part::new(&w.attn_output, &host.attn_output, &mut hs.q, &mut sc.x);
    spans.push(g.run(mk, &sc.h16, d, &mut hs.att, &mut hs.out, [wo], true)?);

    // --- act = silu(gate . xn) * (up . xn) ---
    k.rmsnorm_f16(&b, &sc.x, &w.ffn_norm, &mut sc.h16, n, eps)?;
    spans.push(g.run(
        mk,
        &sc.h16,
        d,
        &mut hs.xn,
        &mut hs.out,
        [
            Part::new(&w.ffn_gate, &host.ffn_gate, &mut hs.gate, &mut sc.gate),
            Part::new(&w.ffn_up, &host.ffn_up, &mut hs.up, &mut sc.up),
        ],
        false,
    )?);
    k.swiglu_f16(&b, &sc.gate, &sc.up, &mut sc.h16, n * f)?;

    // --- x += Wdown . act ---
    let wd = Part::new(&w.ffn_down, &host.ffn_down, &mut hs.q, &mut sc.x);
    spans.push(g.run(mk, &sc.h16, f, &mut hs.act, &mut hs.out, [wd], true)?);
    st.book.layer_done(layer);
    Ok(spans)
}
