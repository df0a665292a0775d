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
use crate::cpu::{matmul, Kernel};
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
    let (d, kv, f, eps) = (c.dim, c.kv_dim(), c.ffn_dim, c.rms_eps);
    let b = st.backend.clone();
    let k = st.batch.clone();
    let mv = st.matvec_rows;
    let hs = scratch;
    // The step's device products take the f16 rows unquantized (few-row matvec and GEMM
    // alike), so the CPU's rows matching them take f32 inputs.
    let kernel_of = |_: &DeviceWeight<'_>| host.kernel.unwrap_or(Kernel::F32);
    let mut spans = Vec::with_capacity(4);
    let (mk, sc) = (&st.mk, st.scratch.as_mut().ok_or_else(no_scratch)?);

    // --- Q, K, V ---
    k.rmsnorm_f16(&b, &sc.x, &w.attn_norm, &mut sc.h16, n, eps)?;
    mk.f16_to_f32(&b, &sc.h16, hs.xn.addr(0..n * d)?, n * d)?;
    hs.xn.record(b.stream())?;
    product(&k, mk, mv, &b, &w.attn_q, &sc.h16, n, &mut hs.q, false)?;
    product(&k, mk, mv, &b, &w.attn_k, &sc.h16, n, &mut hs.k, false)?;
    product(&k, mk, mv, &b, &w.attn_v, &sc.h16, n, &mut hs.v, false)?;
    let (cq, ck, cv) = (host.attn_q.n_rows, host.attn_k.n_rows, host.attn_v.n_rows);
    let (oq, ok, ov) = (0, n * cq, n * (cq + ck));
    spans.push(on_host(&mut hs.xn, &mut hs.out, |x, out| {
        let (q, rest) = out[oq..ov + n * cv].split_at_mut(ok);
        let (kk, v) = rest.split_at_mut(ov - ok);
        products(
            &[&host.attn_q, &host.attn_k, &host.attn_v],
            &[
                kernel_of(&w.attn_q),
                kernel_of(&w.attn_k),
                kernel_of(&w.attn_v),
            ],
            &x[..n * d],
            n,
            &mut [q, kk, v],
        )
    })?);
    let (gq, gk, gv) = (w.attn_q.n_rows, w.attn_k.n_rows, w.attn_v.n_rows);
    mk.join_cols(&b, &mut sc.q, &hs.q, hs.out.addr(oq..ok)?, n, d, gq, false)?;
    mk.join_cols(&b, &mut sc.k, &hs.k, hs.out.addr(ok..ov)?, n, kv, gk, false)?;
    let end = ov + n * cv;
    mk.join_cols(
        &b,
        &mut sc.v,
        &hs.v,
        hs.out.addr(ov..end)?,
        n,
        kv,
        gv,
        false,
    )?;
    hs.out.record(b.stream())?;

    // --- Attention, then x += Wo . att ---
    attend(layer, st)?;
    let (mk, sc) = (&st.mk, st.scratch.as_mut().ok_or_else(no_scratch)?);
    mk.f16_to_f32(&b, &sc.h16, hs.att.addr(0..n * d)?, n * d)?;
    hs.att.record(b.stream())?;
    product(&k, mk, mv, &b, &w.attn_output, &sc.h16, n, &mut hs.q, false)?;
    let co = host.attn_output.n_rows;
    spans.push(on_host(&mut hs.att, &mut hs.out, |a, out| {
        let kernel = kernel_of(&w.attn_output);
        Ok(matmul(
            &host.attn_output,
            &a[..n * d],
            n,
            &mut out[..n * co],
            kernel,
        )?)
    })?);
    let go = w.attn_output.n_rows;
    mk.join_cols(
        &b,
        &mut sc.x,
        &hs.q,
        hs.out.addr(0..n * co)?,
        n,
        d,
        go,
        true,
    )?;
    hs.out.record(b.stream())?;

    // --- act = silu(gate . xn) * (up . xn) ---
    k.rmsnorm_f16(&b, &sc.x, &w.ffn_norm, &mut sc.h16, n, eps)?;
    mk.f16_to_f32(&b, &sc.h16, hs.xn.addr(0..n * d)?, n * d)?;
    hs.xn.record(b.stream())?;
    product(&k, mk, mv, &b, &w.ffn_gate, &sc.h16, n, &mut hs.gate, false)?;
    product(&k, mk, mv, &b, &w.ffn_up, &sc.h16, n, &mut hs.up, false)?;
    let cf = host.ffn_gate.n_rows;
    spans.push(on_host(&mut hs.xn, &mut hs.out, |x, out| {
        let (g, u) = out[..2 * n * cf].split_at_mut(n * cf);
        products(
            &[&host.ffn_gate, &host.ffn_up],
            &[kernel_of(&w.ffn_gate), kernel_of(&w.ffn_up)],
            &x[..n * d],
            n,
            &mut [g, u],
        )
    })?);
    let gf = w.ffn_gate.n_rows;
    let (host_g, host_u) = (hs.out.addr(0..n * cf)?, hs.out.addr(n * cf..2 * n * cf)?);
    mk.join_cols(&b, &mut sc.gate, &hs.gate, host_g, n, f, gf, false)?;
    mk.join_cols(&b, &mut sc.up, &hs.up, host_u, n, f, gf, false)?;
    hs.out.record(b.stream())?;
    k.swiglu_f16(&b, &sc.gate, &sc.up, &mut sc.h16, n * f)?;

    // --- x += Wdown . act ---
    mk.f16_to_f32(&b, &sc.h16, hs.act.addr(0..n * f)?, n * f)?;
    hs.act.record(b.stream())?;
    product(&k, mk, mv, &b, &w.ffn_down, &sc.h16, n, &mut hs.q, false)?;
    let cd = host.ffn_down.n_rows;
    spans.push(on_host(&mut hs.act, &mut hs.out, |a, out| {
        let kernel = kernel_of(&w.ffn_down);
        Ok(matmul(
            &host.ffn_down,
            &a[..n * f],
            n,
            &mut out[..n * cd],
            kernel,
        )?)
    })?);
    let gd = w.ffn_down.n_rows;
    mk.join_cols(
        &b,
        &mut sc.x,
        &hs.q,
        hs.out.addr(0..n * cd)?,
        n,
        d,
        gd,
        true,
    )?;
    hs.out.record(b.stream())?;
    st.book.layer_done(layer);
    Ok(spans)
}
