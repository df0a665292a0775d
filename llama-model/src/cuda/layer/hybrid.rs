//! One transformer block with its weight matrices split by output rows between the GPU and CPU
//! threads (the hybrid path of a streamed layer, one decode token).
//!
//! Each of the seven matrices has its first rows on the device ([`DeviceLayerWeights`] views
//! of `n_rows` = the device share: the bytes that crossed the bus) and its last rows in host
//! memory ([`HostLayerRows`]: views the CPU reads in place, e.g. the page-locked RAM tier the
//! bus copies out of). For every product, the input vector goes to the host, both sides compute
//! their rows at the same time, and the host's rows come back into the output on the device:
//!
//! ```text
//! xn = norm(x)            -> host  | GPU: Q/K/V first rows   | CPU: Q/K/V last rows -> device
//! rope, KV store, attention on the GPU
//! att                     -> host  | GPU: x += Wo first rows | CPU: Wo last rows -> x += on device
//! xn = norm(x)            -> host  | GPU: silu(gate)*up first | CPU: the rest     -> device
//! act                     -> host  | GPU: x += Wdown first    | CPU: the rest     -> x += on device
//! ```
//!
//! The CPU's products are [`crate::cpu::matmul`] over row views, which join to the whole
//! product by concatenation (`tests/row_split.rs`); norms, attention and the KV cache stay on
//! the GPU. The exchanges go through page-locked host buffers mapped into the device's address
//! space ([`HybridScratch`]), which small kernels on the compute stream read and write in place:
//! a copy through a copy engine would queue behind the bulk copy of a later layer that the copy
//! stream has in flight (measured on an H200: up to one layer's copy time, ~5 ms, per exchange).
//! The host waits only for the small input it needs, never for the device's rows.

use std::time::Instant;

use cudarc::driver::{CudaSlice, DevicePtr};

use super::{check_step, commit_layer, enqueue_attention, expect, DeviceLayerWeights, GpuState};
use crate::cpu::{matmul, matmul_shared_input, silu, Kernel, TensorView};
use crate::cuda::error::{CudaError, Result};
use crate::cuda::matvec::{MV_ACCUM, MV_STORE, MV_SWIGLU, NO_JOB};
use crate::cuda::sys::PinnedF32;
use crate::cuda::weights::DeviceWeight;

/// The host's rows of a split layer's seven matrices: for each, the last rows of the matrix
/// (the device holds the first ones), as views of host memory the CPU reads in place. A matrix
/// wholly on the device has a view of zero rows.
#[derive(Debug, Clone, Copy)]
pub struct HostLayerRows<'a> {
    /// Last rows of the query projection.
    pub attn_q: TensorView<'a>,
    /// Last rows of the key projection.
    pub attn_k: TensorView<'a>,
    /// Last rows of the value projection.
    pub attn_v: TensorView<'a>,
    /// Last rows of the attention output projection.
    pub attn_output: TensorView<'a>,
    /// Last rows of the FFN gate projection (as many as of `ffn_up`).
    pub ffn_gate: TensorView<'a>,
    /// Last rows of the FFN up projection.
    pub ffn_up: TensorView<'a>,
    /// Last rows of the FFN down projection.
    pub ffn_down: TensorView<'a>,
    /// The CPU kernel of the host's products; `None`: for each matrix the kind of the device's
    /// product of its rows ([`Kernel::Q8`] where the GPU quantizes the input to 8 bits too,
    /// [`crate::cuda::CudaBackend::matvec_uses_q8`], else [`Kernel::F32`]; always
    /// [`Kernel::F32`] in a multi-sequence step, whose device products take f16 rows
    /// unquantized), so both parts of a split product see the same input.
    pub kernel: Option<Kernel>,
}

impl HostLayerRows<'_> {
    /// Bytes of weights the host reads per token.
    pub fn bytes(&self) -> usize {
        [
            &self.attn_q,
            &self.attn_k,
            &self.attn_v,
            &self.attn_output,
            &self.ffn_gate,
            &self.ffn_up,
            &self.ffn_down,
        ]
        .iter()
        .map(|v| v.data.len())
        .sum()
    }
}

/// Page-locked host buffers and a device buffer for the exchanges of split layers (one per
/// [`GpuState`], reused by every layer and token).
#[derive(Debug)]
pub struct HybridScratch {
    xn: PinnedF32,
    att: PinnedF32,
    act: PinnedF32,
    out: PinnedF32,
    gate: Vec<f32>,
    up: Vec<f32>,
}

impl HybridScratch {
    /// Buffers for the model of `state`.
    pub fn new(state: &GpuState) -> Result<Self> {
        let c = &state.config;
        let (d, kv, f) = (c.dim, c.kv_dim(), c.ffn_dim);
        let ctx = state.backend.context();
        Ok(Self {
            xn: PinnedF32::new(ctx, d)?,
            att: PinnedF32::new(ctx, d)?,
            act: PinnedF32::new(ctx, f)?,
            out: PinnedF32::new(ctx, (d + 2 * kv).max(f))?,
            gate: vec![0.0; f],
            up: vec![0.0; f],
        })
    }
}

/// One product of the host's rows: when the host began waiting for its input, when the input
/// was there (its compute began), and when its rows were done.
#[derive(Debug, Clone, Copy)]
pub struct HostSpan {
    /// The host started waiting for the input vector.
    pub wait: Instant,
    /// The input was on the host; the CPU threads started.
    pub start: Instant,
    /// The host's rows were done.
    pub end: Instant,
}

/// Checks one split matrix: both parts of the config's row length and type, rows adding up.
fn expect_split(
    gpu: &DeviceWeight<'_>,
    host: &TensorView<'_>,
    what: &str,
    row_len: usize,
    n_rows: usize,
) -> Result<()> {
    expect(gpu, what, row_len, gpu.n_rows)?;
    if host.row_len != row_len
        || host.ggml_type != gpu.ggml_type
        || gpu.n_rows + host.n_rows != n_rows
    {
        return Err(CudaError::Shape {
            op: "split layer",
            detail: format!(
                "{what}: {} device rows ({}) + {} host rows of {} ({}) do not make {n_rows} x {row_len}",
                gpu.n_rows, gpu.ggml_type, host.n_rows, host.row_len, host.ggml_type
            ),
        });
    }
    Ok(())
}

/// Checks a split layer against `c`: norms whole, each matrix's two parts adding up, gate and
/// up split alike.
pub(crate) fn validate(
    w: &DeviceLayerWeights<'_>,
    h: &HostLayerRows<'_>,
    c: &crate::config::LlamaConfig,
) -> Result<()> {
    let (d, kv, f) = (c.dim, c.kv_dim(), c.ffn_dim);
    expect(&w.attn_norm, "attn_norm", d, 1)?;
    expect(&w.ffn_norm, "ffn_norm", d, 1)?;
    expect_split(&w.attn_q, &h.attn_q, "attn_q", d, d)?;
    expect_split(&w.attn_k, &h.attn_k, "attn_k", d, kv)?;
    expect_split(&w.attn_v, &h.attn_v, "attn_v", d, kv)?;
    expect_split(&w.attn_output, &h.attn_output, "attn_output", d, d)?;
    expect_split(&w.ffn_gate, &h.ffn_gate, "ffn_gate", d, f)?;
    expect_split(&w.ffn_up, &h.ffn_up, "ffn_up", d, f)?;
    expect_split(&w.ffn_down, &h.ffn_down, "ffn_down", f, d)?;
    if w.ffn_gate.n_rows != w.ffn_up.n_rows {
        return Err(CudaError::Shape {
            op: "split layer",
            detail: format!(
                "gate and up split at different rows ({} and {} on the device)",
                w.ffn_gate.n_rows, w.ffn_up.n_rows
            ),
        });
    }
    Ok(())
}

/// Enqueues the copy of the `n` device values at `src` into the start of `buf` (by a kernel
/// on the compute stream) and marks the buffer: its next host access waits for it.
fn to_host(b: &crate::cuda::CudaBackend, buf: &mut PinnedF32, src: u64, n: usize) -> Result<()> {
    b.store_at(buf.addr(0..n)?, src, n)?;
    buf.record(b.stream())
}

/// One host product: waits for `input` (and for `out` to be free), runs `f` on them and times
/// the wait and the compute.
pub(crate) fn on_host(
    input: &mut PinnedF32,
    out: &mut PinnedF32,
    f: impl FnOnce(&[f32], &mut [f32]) -> Result<()>,
) -> Result<HostSpan> {
    let wait = Instant::now();
    let x = input.host()?;
    let o = out.host()?;
    let start = Instant::now();
    f(x, o)?;
    Ok(HostSpan {
        wait,
        start,
        end: Instant::now(),
    })
}

/// The host's products of several matrices sharing input `x` (`n` rows), each with its kernel:
/// one parallel pass over all their rows where the kernels agree (the threads synchronise once,
/// not once per matrix; [`matmul_shared_input`]), else one product after the other.
pub(crate) fn products(
    ws: &[&TensorView<'_>],
    kernels: &[Kernel],
    x: &[f32],
    n: usize,
    outs: &mut [&mut [f32]],
) -> Result<()> {
    match kernels.first() {
        Some(&k) if kernels.iter().all(|&o| o == k) => Ok(matmul_shared_input(ws, x, n, outs, k)?),
        _ => {
            for ((w, o), &k) in ws.iter().zip(outs.iter_mut()).zip(kernels) {
                matmul(w, x, n, o, k)?;
            }
            Ok(())
        }
    }
}

fn ptr(b: &crate::cuda::CudaBackend, x: &CudaSlice<f32>) -> u64 {
    let (p, _g) = x.device_ptr(b.stream());
    p
}

/// Runs transformer block `layer` on the current token of `state` with its matrices split by
/// rows: the device's first rows in `w`, the host's last rows in `host` (computed by CPU
/// threads on this thread's rayon pool while the GPU computes its share). Returns the host's
/// four products' wait and compute spans.
pub fn forward_layer_hybrid(
    layer: usize,
    w: &DeviceLayerWeights<'_>,
    host: &HostLayerRows<'_>,
    state: &mut GpuState,
    scratch: &mut HybridScratch,
) -> Result<Vec<HostSpan>> {
    let pos = check_step(layer, state)?;
    validate(w, host, &state.config)?;
    let s = state;
    let sc = scratch;
    let b = s.backend.clone();
    let st = b.stream().clone();
    let (d, kv, f) = (s.config.dim, s.config.kv_dim(), s.config.ffn_dim);
    let eps = s.config.rms_eps;
    let kernel_of = |w: &DeviceWeight<'_>| {
        host.kernel.unwrap_or(if b.matvec_uses_q8(w) {
            Kernel::Q8
        } else {
            Kernel::F32
        })
    };
    let mut spans = Vec::with_capacity(4);
    let (xn_p, qkv_p, x_p, att_p, act_p) = (
        ptr(&b, &s.xn),
        ptr(&b, &s.qkv),
        ptr(&b, &s.x),
        ptr(&b, &s.att),
        ptr(&b, &s.act),
    );
    let at = |base: u64, i: usize| base + 4 * i as u64;

    // --- Q, K, V ---
    b.rmsnorm_weight(&s.x, &w.attn_norm, &mut s.xn, eps)?;
    to_host(&b, &mut sc.xn, xn_p, d)?;
    let (gq, gk, gv) = (w.attn_q.n_rows, w.attn_k.n_rows, w.attn_v.n_rows);
    let jobs = [
        b.job(&w.attn_q, qkv_p)?,
        b.job(&w.attn_k, at(qkv_p, d))?,
        b.job(&w.attn_v, at(qkv_p, d + kv))?,
    ];
    b.launch_matvec("hybrid qkv", MV_STORE, xn_p, d, jobs)?;
    let (cq, ck, cv) = (host.attn_q.n_rows, host.attn_k.n_rows, host.attn_v.n_rows);
    spans.push(on_host(&mut sc.xn, &mut sc.out, |x, out| {
        let (q, rest) = out.split_at_mut(cq);
        let (kk, rest) = rest.split_at_mut(ck);
        products(
            &[&host.attn_q, &host.attn_k, &host.attn_v],
            &[
                kernel_of(&w.attn_q),
                kernel_of(&w.attn_k),
                kernel_of(&w.attn_v),
            ],
            x,
            1,
            &mut [q, kk, &mut rest[..cv]],
        )
    })?);
    b.store_at(at(qkv_p, gq), sc.out.addr(0..cq)?, cq)?;
    b.store_at(at(qkv_p, d + gk), sc.out.addr(cq..cq + ck)?, ck)?;
    b.store_at(
        at(qkv_p, d + kv + gv),
        sc.out.addr(cq + ck..cq + ck + cv)?,
        cv,
    )?;
    sc.out.record(&st)?;

    // --- Attention, then x += Wo . att ---
    enqueue_attention(layer, s)?;
    to_host(&b, &mut sc.att, att_p, d)?;
    let go = w.attn_output.n_rows;
    let job = b.job(&w.attn_output, x_p)?;
    b.launch_matvec(
        "hybrid attn_output",
        MV_ACCUM,
        att_p,
        d,
        [job, NO_JOB, NO_JOB],
    )?;
    let co = host.attn_output.n_rows;
    spans.push(on_host(&mut sc.att, &mut sc.out, |a, out| {
        let k = kernel_of(&w.attn_output);
        Ok(matmul(&host.attn_output, a, 1, &mut out[..co], k)?)
    })?);
    b.add_at(at(x_p, go), sc.out.addr(0..co)?, co)?;
    sc.out.record(&st)?;

    // --- act = silu(gate . xn) * (up . xn) ---
    b.rmsnorm_weight(&s.x, &w.ffn_norm, &mut s.xn, eps)?;
    to_host(&b, &mut sc.xn, xn_p, d)?;
    let gf = w.ffn_gate.n_rows;
    if w.ffn_gate.ggml_type == w.ffn_up.ggml_type {
        let jobs = [b.job(&w.ffn_gate, act_p)?, b.job(&w.ffn_up, 0)?, NO_JOB];
        b.launch_matvec("hybrid gate/up", MV_SWIGLU, xn_p, d, jobs)?;
    } else {
        let (gate_p, up_p) = (ptr(&b, &s.gate), ptr(&b, &s.up));
        let jobs = [b.job(&w.ffn_gate, gate_p)?, b.job(&w.ffn_up, up_p)?, NO_JOB];
        b.launch_matvec("hybrid gate/up", MV_STORE, xn_p, d, jobs)?;
        // Over every row: the host's rows of `act` are overwritten by its copy below.
        b.swiglu(&s.gate, &s.up, &mut s.act)?;
    }
    let cf = host.ffn_gate.n_rows;
    let (g, u) = (&mut sc.gate[..cf], &mut sc.up[..cf]);
    spans.push(on_host(&mut sc.xn, &mut sc.out, |x, out| {
        products(
            &[&host.ffn_gate, &host.ffn_up],
            &[kernel_of(&w.ffn_gate), kernel_of(&w.ffn_up)],
            x,
            1,
            &mut [&mut *g, &mut *u],
        )?;
        for ((o, g), u) in out[..cf].iter_mut().zip(g.iter()).zip(u.iter()) {
            *o = silu(*g) * u;
        }
        Ok(())
    })?);
    b.store_at(at(act_p, gf), sc.out.addr(0..cf)?, cf)?;
    sc.out.record(&st)?;

    // --- x += Wdown . act ---
    to_host(&b, &mut sc.act, act_p, f)?;
    let gd = w.ffn_down.n_rows;
    let job = b.job(&w.ffn_down, x_p)?;
    b.launch_matvec("hybrid ffn_down", MV_ACCUM, act_p, f, [job, NO_JOB, NO_JOB])?;
    let cd = host.ffn_down.n_rows;
    spans.push(on_host(&mut sc.act, &mut sc.out, |a, out| {
        let k = kernel_of(&w.ffn_down);
        Ok(matmul(&host.ffn_down, a, 1, &mut out[..cd], k)?)
    })?);
    b.add_at(at(x_p, gd), sc.out.addr(0..cd)?, cd)?;
    sc.out.record(&st)?;
    commit_layer(layer, pos, s);
    Ok(spans)
}
