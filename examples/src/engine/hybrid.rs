//! Hybrid streamed layers: CPU threads compute the last rows of every matrix of a layer held in
//! pinned RAM, in place, while the first rows cross the bus and are computed on the GPU.
//!
//! A layer split at fraction `f` streams, for each of its nine tensors, the first
//! `n_rows - round(f * n_rows)` rows (norms whole): since ggml rows are contiguous, those are a
//! prefix of each tensor's bytes, so the layer's streamed part is one pipeline item of nine
//! file ranges that the pinned tier serves from the layer's buffer ([`SplitLayer::gpu`]). The
//! CPU reads the remaining rows from the same buffer ([`SplitLayer::memory`]). The fraction
//! comes from `tier-cache`'s [`hybrid_split`]: the CPU's matrix-vector speed is measured at start
//! on one of the model's own pinned layers, the bus speed is the one the plan measured, and the
//! share is the one that makes both finish together.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_model::cpu::{matmul, Kernel, TensorView};
use slep_pipeline::{HostMemory, Schedule};
use tier_cache::{hybrid_split, ComputeTier};

use super::error::{EngineError, Result};
use super::hybrid_batch::BatchShares;
use super::layout::{LayerLayout, TensorSlot};
use super::options::Hybrid;
use super::plan::{ranges, Home};
use super::setup::Setup;

/// Fixed cost per split layer and token on the CPU's side: four round trips of the activations
/// (device to host, host to device) and the wake-up of the CPU threads, about 25 us each.
pub const SYNC_SECONDS_PER_LAYER: f64 = 4.0 * 25e-6;

/// One layer split between the bus and the CPU.
pub struct SplitLayer {
    /// The streamed part: the first rows of each tensor (norms whole), back to back in the
    /// slot, as a layout whose tensors have the device's row counts.
    pub gpu: LayerLayout,
    /// Rows of each of the nine tensors the CPU computes (its last rows; 0 for the norms).
    pub host_rows: [usize; 9],
    /// The layer's bytes in pinned RAM (its packed layout), read by the CPU in place.
    pub memory: Arc<dyn HostMemory>,
    /// The CPU's fraction of each matrix's rows.
    pub fraction: f64,
}

impl std::fmt::Debug for SplitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitLayer")
            .field("layer", &self.gpu.index)
            .field("fraction", &self.fraction)
            .field("host_rows", &self.host_rows)
            .finish()
    }
}

#[cfg(feature = "cuda")]
impl SplitLayer {
    /// The CPU's rows of this split of `layer` (the whole layer's layout), read in place from
    /// its pinned buffer, for `llama_model::cuda::forward_layer_hybrid`.
    pub fn host_rows<'a>(
        &'a self,
        layer: &'a LayerLayout,
        kernel: Option<Kernel>,
    ) -> Result<llama_model::cuda::HostLayerRows<'a>> {
        let bytes = self.memory.bytes();
        let v = |j: usize| host_view(layer, bytes, j, self.host_rows[j]);
        Ok(llama_model::cuda::HostLayerRows {
            attn_q: v(1)?,
            attn_k: v(2)?,
            attn_v: v(3)?,
            attn_output: v(4)?,
            ffn_gate: v(6)?,
            ffn_up: v(7)?,
            ffn_down: v(8)?,
            kernel,
        })
    }
}

/// The file offset of byte `at` of `layer`'s packed bytes.
fn file_offset(layer: &LayerLayout, at: usize) -> Option<u64> {
    let mut base = 0u64;
    for s in &layer.spans {
        let len = s.end - s.start;
        if (at as u64) < base + len {
            return Some(s.start + (at as u64 - base));
        }
        base += len;
    }
    None
}

/// Rows of a tensor of `n_rows` the CPU takes at fraction `f` (none of a norm; the device keeps
/// at least one row).
fn host_rows_of(n_rows: usize, f: f64) -> usize {
    if n_rows <= 1 {
        return 0;
    }
    ((f * n_rows as f64).round() as usize).min(n_rows - 1)
}

/// The split of `layer` at fraction `f`: its streamed part (first rows of every tensor, as file
/// ranges and a layout of the slot) and the CPU's row counts.
pub fn split_layout(layer: &LayerLayout, f: f64) -> Result<(LayerLayout, [usize; 9])> {
    let bad = |what: String| EngineError::Compute(format!("layer {}: {what}", layer.index));
    let mut spans = Vec::with_capacity(layer.tensors.len());
    let mut tensors = Vec::with_capacity(layer.tensors.len());
    let mut host = [0usize; 9];
    let mut at = 0usize;
    for (j, t) in layer.tensors.iter().enumerate() {
        let len = t.range.len();
        if t.n_rows == 0 || len % t.n_rows != 0 {
            return Err(bad(format!("tensor {} has no whole rows", t.name)));
        }
        let row_bytes = len / t.n_rows;
        let c = host_rows_of(t.n_rows, f);
        if let Some(h) = host.get_mut(j) {
            *h = c;
        }
        let keep = (t.n_rows - c) * row_bytes;
        let start = file_offset(layer, t.range.start)
            .ok_or_else(|| bad(format!("tensor {} lies outside its spans", t.name)))?;
        spans.push(start..start + keep as u64);
        tensors.push(TensorSlot {
            name: t.name.clone(),
            range: at..at + keep,
            ggml_type: t.ggml_type,
            row_len: t.row_len,
            n_rows: t.n_rows - c,
        });
        at += keep;
    }
    Ok((
        LayerLayout {
            index: layer.index,
            spans,
            bytes: at as u64,
            tensors,
        },
        host,
    ))
}

/// The CPU's rows of tensor `j` of `layer` as a view of `bytes` (the layer's packed bytes).
pub fn host_view<'a>(
    layer: &'a LayerLayout,
    bytes: &'a [u8],
    j: usize,
    rows: usize,
) -> Result<TensorView<'a>> {
    let t = layer
        .tensors
        .get(j)
        .ok_or_else(|| EngineError::Compute(format!("layer {} lacks tensor {j}", layer.index)))?;
    let data = bytes.get(t.range.clone()).ok_or_else(|| {
        EngineError::Compute(format!("tensor {} lies outside the pinned buffer", t.name))
    })?;
    let whole = TensorView::new(&t.name, data, t.ggml_type, t.row_len, t.n_rows)
        .map_err(|e| EngineError::Compute(e.to_string()))?;
    whole
        .rows(t.n_rows - rows..t.n_rows)
        .map_err(|e| EngineError::Compute(e.to_string()))
}

/// Bytes and elements of `layer`'s seven matrices (the norms stay whole on the device).
fn matrix_bytes(layer: &LayerLayout) -> (u64, u64) {
    layer
        .tensors
        .iter()
        .filter(|t| t.n_rows > 1)
        .fold((0, 0), |(b, e), t| {
            (b + t.range.len() as u64, e + (t.n_rows * t.row_len) as u64)
        })
}

/// Measures the CPU's matrix-vector speed (bytes of weights per second) with `kernel` on every
/// matrix of `layer`, read from `bytes` (its packed bytes in pinned RAM): one warm-up pass and
/// the best of three.
pub fn measure_cpu(layer: &LayerLayout, bytes: &[u8], kernel: Kernel) -> Result<f64> {
    let mut views = Vec::new();
    for (j, t) in layer.tensors.iter().enumerate() {
        if t.n_rows > 1 {
            views.push(host_view(layer, bytes, j, t.n_rows)?);
        }
    }
    let total: usize = views.iter().map(|v| v.data.len()).sum();
    let mut best = f64::INFINITY;
    for round in 0..4 {
        let t0 = Instant::now();
        for v in &views {
            let x: Vec<f32> = (0..v.row_len)
                .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
                .collect();
            let mut y = vec![0f32; v.n_rows];
            matmul(v, &x, 1, &mut y, kernel).map_err(|e| EngineError::Compute(e.to_string()))?;
            std::hint::black_box(&y);
        }
        if round > 0 {
            best = best.min(t0.elapsed().as_secs_f64());
        }
    }
    Ok(total as f64 / best.max(1e-9))
}

/// What one decode pass over split layers measured (the input of [`HybridPlan::learn`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct PassMeasure {
    /// Wall time of the pass.
    pub wall: Duration,
    /// Bytes the bus copied in the pass (split layers' device rows and any whole layers).
    pub copy_bytes: u64,
    /// Copy-engine time of those bytes.
    pub copy_busy: Duration,
    /// Weight bytes the CPU threads computed on.
    pub cpu_bytes: u64,
    /// CPU threads' compute time.
    pub cpu_busy: Duration,
    /// Time the host waited for the input of each split layer's first product (the layer's
    /// data still crossing the bus, or the layers before it still computing).
    pub cpu_wait_first: Duration,
    /// Time the host waited for the inputs of the later products (the exchanges' latency).
    pub cpu_wait_sync: Duration,
    /// Time the device's compute waited for streamed data in the pass (the bus behind).
    pub stall: Duration,
}

/// `auto`'s search: passes it may spend trying shares (the first pass only warms up), and the
/// smallest step of the share it tries.
const SEARCH_PASSES: u64 = 10;
const SEARCH_MIN_STEP: f64 = 0.02;

/// `auto`'s search for the share with the shortest measured pass: a pattern search started in
/// the direction the measured rates point ([`balance`]), halving its step and turning back
/// whenever a pass got slower than the best one seen.
#[derive(Debug, Clone, Copy)]
struct Search {
    best_f: f64,
    best_s: f64,
    step: f64,
    dir: f64,
    done: bool,
}

/// The hybrid plan of an opened engine: which layers are split at what fraction, and the
/// schedule of a decode token (split layers' streamed parts, the other layers whole).
pub struct HybridPlan {
    /// Split layers by index.
    pub layers: HashMap<usize, SplitLayer>,
    /// The decode token's schedule.
    pub schedule: Schedule,
    /// The CPU kernel of the CPU's rows (`None`: per matrix the GPU's kind).
    pub kernel: Option<Kernel>,
    /// CPU matrix-vector speed measured at start (bytes/s).
    pub cpu_bw: f64,
    /// The CPU's fraction of each split matrix's rows now.
    pub fraction: f64,
    /// Predicted seconds per decode token with the split (once `auto` has searched: the
    /// fastest pass it measured).
    pub predicted_s: f64,
    /// What the plan printout says.
    pub report: String,
    /// Every layer that may be split (running, homed in pinned RAM), with its buffer.
    candidates: Vec<(usize, Arc<dyn HostMemory>)>,
    /// Bytes of the candidates' matrices (the part a split shares out).
    matrix_bytes: u64,
    /// Whether the fraction is re-learnt from measured passes (`auto`).
    auto: bool,
    /// Passes measured so far.
    passes: u64,
    /// `auto`'s search state (from the second pass on).
    search: Option<Search>,
    /// The shares of the multi-sequence engine's steps, per batch size.
    batch: BatchShares,
}

impl std::fmt::Debug for HybridPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HybridPlan")
            .field("layers", &self.layers.len())
            .field("fraction", &self.fraction)
            .field("cpu_bw", &self.cpu_bw)
            .finish()
    }
}

impl HybridPlan {
    /// Plans the split of every running layer homed in pinned RAM (`homes`), reading their
    /// buffers through `memory` (the pinned tier's lookup). `None` when `mode` is off or no
    /// layer is in pinned RAM.
    ///
    /// `auto` starts from the share that makes the CPU (its speed measured now, on one of those
    /// layers) and the bus (the plan's measured speed) finish a layer together, then re-learns
    /// it from the first decode passes ([`HybridPlan::learn`]): under load the CPU computes
    /// slower than alone (the bus's DMA reads the same RAM), and each split layer waits on
    /// exchanges with the device.
    pub fn new(
        setup: &Setup,
        homes: &[Home],
        mode: Hybrid,
        kernel: Option<Kernel>,
        memory: impl Fn(usize) -> Option<Arc<dyn HostMemory>>,
    ) -> Result<Option<Self>> {
        if mode == Hybrid::Off {
            return Ok(None);
        }
        let mut candidates = Vec::new();
        for &i in &setup.running {
            if homes.get(i) == Some(&Home::Pinned) {
                let m = memory(i).ok_or_else(|| {
                    EngineError::Compute(format!(
                        "layer {i} is homed in pinned RAM but has no buffer"
                    ))
                })?;
                candidates.push((i, m));
            }
        }
        let Some((first, probe)) = candidates.first().cloned() else {
            return Ok(None);
        };
        // Following the GPU, the k-quant and Q8_0 matrices of Llama GGUFs take 8-bit inputs.
        let measured_with = kernel.unwrap_or(Kernel::Q8);
        let cpu_bw = measure_cpu(&setup.layout.layers[first], probe.bytes(), measured_with)?;
        let link_bw = setup.bandwidth[1];
        let fraction = match mode {
            Hybrid::Fraction(f) => f,
            _ => {
                let tier = ComputeTier::new("cpu", cpu_bw, cpu_bw * 2.0, SYNC_SECONDS_PER_LAYER);
                let (bytes, elements) = matrix_bytes(&setup.layout.layers[first]);
                hybrid_split(bytes, elements, 1, link_bw, &tier)
                    .map_err(|e| EngineError::Compute(e.to_string()))?
                    .compute_fraction
            }
        };
        let matrix_bytes = candidates
            .iter()
            .map(|(i, _)| matrix_bytes(&setup.layout.layers[*i]).0)
            .sum();
        let mut plan = Self {
            layers: HashMap::new(),
            schedule: Schedule::new(Vec::new()),
            kernel,
            cpu_bw,
            fraction: 0.0,
            predicted_s: setup.plan.predicted_s,
            report: String::new(),
            candidates,
            matrix_bytes,
            auto: mode == Hybrid::Auto,
            passes: 0,
            search: None,
            batch: BatchShares::new(fraction, mode == Hybrid::Auto),
        };
        plan.split(setup, fraction)?;
        // The predicted time of a split layer: the longer of its bus part and its CPU part.
        let mut saved = 0.0;
        for sl in plan.layers.values() {
            let whole = &setup.layout.layers[sl.gpu.index];
            let cpu_s = (whole.bytes - sl.gpu.bytes) as f64 / cpu_bw + SYNC_SECONDS_PER_LAYER;
            let split_s = (sl.gpu.bytes as f64 / link_bw).max(cpu_s);
            saved += whole.bytes as f64 / link_bw - split_s;
        }
        plan.predicted_s = (setup.plan.predicted_s - saved).max(1e-9);
        let bus_alone = 1.0 / setup.plan.predicted_s.max(1e-9);
        plan.report = if plan.layers.is_empty() {
            format!(
                "hybrid: off: CPU threads compute {:.1} GB/s with {measured_with:?} (measured now on layer {first}), too slow to beat the bus at {:.1} GB/s\n",
                cpu_bw / 1e9,
                link_bw / 1e9
            )
        } else {
            format!(
                "hybrid: layers {} split: CPU threads compute {:.0}% of each matrix's rows in place from pinned RAM ({:.1} GB/s with {measured_with:?}, measured now on layer {first}) while the rest crosses the bus ({:.1} GB/s); predicted {:.2} tok/s decode (bus alone {bus_alone:.2}){}\n",
                ranges(&plan.split_layers()),
                plan.fraction * 100.0,
                cpu_bw / 1e9,
                link_bw / 1e9,
                1.0 / plan.predicted_s,
                if plan.auto { "; the share is then searched for on the first decode passes" } else { "" }
            )
        };
        Ok(Some(plan))
    }

    /// Splits the layers at the share of a multi-sequence step of `n` rows (none for large
    /// steps; see [`crate::engine::hybrid_batch`]) before the step runs.
    pub fn split_for_rows(&mut self, setup: &Setup, n: usize) -> Result<()> {
        let f = self.batch.fraction(n);
        if f != self.fraction {
            self.split(setup, f)?;
        }
        Ok(())
    }

    /// Learns from a multi-sequence step of `n` rows run at [`HybridPlan::split_for_rows`]'s
    /// share. Returns what changed, for the log.
    pub fn learn_rows(&mut self, n: usize, m: &PassMeasure) -> Option<String> {
        self.batch.learn(n, self.matrix_bytes as f64, m)
    }

    /// Keeps only the candidates still homed in pinned RAM after layers moved (`homes`), and
    /// re-splits them at the current share.
    pub fn rehome(&mut self, setup: &Setup, homes: &[Home]) -> Result<()> {
        self.candidates
            .retain(|(i, _)| homes.get(*i) == Some(&Home::Pinned));
        self.matrix_bytes = self
            .candidates
            .iter()
            .map(|(i, _)| matrix_bytes(&setup.layout.layers[*i]).0)
            .sum();
        self.split(setup, self.fraction)
    }

    /// Split layers' indices, ascending.
    pub fn split_layers(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.layers.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Splits every candidate layer at fraction `f` (none at 0) and rebuilds the schedule.
    fn split(&mut self, setup: &Setup, f: f64) -> Result<()> {
        let mut layers = HashMap::new();
        if f > 0.0 {
            for (i, memory) in &self.candidates {
                let (gpu, host_rows) = split_layout(&setup.layout.layers[*i], f)?;
                layers.insert(
                    *i,
                    SplitLayer {
                        gpu,
                        host_rows,
                        memory: memory.clone(),
                        fraction: f,
                    },
                );
            }
        }
        self.schedule = Schedule::new(
            setup
                .running
                .iter()
                .map(|&i| match layers.get(&i) {
                    Some(s) => s.gpu.item(),
                    None => setup.layout.layers[i].item(),
                })
                .collect(),
        );
        self.layers = layers;
        self.fraction = f;
        Ok(())
    }

    /// Learns from one decode pass (`auto` only): on the second pass the measured rates
    /// (the CPU's speed under the pass's load, the bus's, the exchanges' waits and
    /// the host's time outside the products) point the direction and the first step; from then
    /// on each pass's measured time decides, a pattern search that keeps the fastest share seen
    /// (the CPU's speed under load changes with its share, so no fixed model finds the optimum
    /// alone). Stops after ten passes or once its step is below 2%. Returns what
    /// changed, for the log.
    pub fn learn(&mut self, setup: &Setup, m: &PassMeasure) -> Result<Option<String>> {
        if !self.auto || m.copy_busy.is_zero() {
            return Ok(None);
        }
        self.passes += 1;
        if self.passes < 2 || self.passes > SEARCH_PASSES {
            return Ok(None);
        }
        let f = self.fraction;
        let pass_s = m.wall.as_secs_f64();
        let note;
        let next = match self.search {
            Some(Search { done: true, .. }) => return Ok(None),
            None => {
                let Some(est) = balance(f, self.matrix_bytes as f64, m) else {
                    return Ok(None);
                };
                let dir = if est.fraction > f { 1.0 } else { -1.0 };
                let step = (est.fraction - f).abs().clamp(0.03, 0.1);
                self.search = Some(Search {
                    best_f: f,
                    best_s: pass_s,
                    step,
                    dir,
                    done: false,
                });
                note = format!(
                    "CPU {:.1} GB/s under load, bus {:.1} GB/s, exchanges {:.1} ms, host outside the products {:.1} ms point to {:.0}%",
                    est.cpu_rate / 1e9,
                    est.bus_rate / 1e9,
                    m.cpu_wait_sync.as_secs_f64() * 1e3,
                    est.other_s * 1e3,
                    est.fraction * 100.0
                );
                f + dir * step
            }
            Some(mut sr) => {
                if pass_s < sr.best_s {
                    sr.best_f = f;
                    sr.best_s = pass_s;
                    note = "faster: on in the same direction".to_string();
                } else {
                    sr.step /= 2.0;
                    sr.dir = -sr.dir;
                    note = format!(
                        "slower than {:.0}% ({:.1} ms): back, step halved",
                        sr.best_f * 100.0,
                        sr.best_s * 1e3
                    );
                }
                let next = if sr.step < SEARCH_MIN_STEP || self.passes == SEARCH_PASSES {
                    sr.done = true;
                    sr.best_f
                } else {
                    sr.best_f + sr.dir * sr.step
                };
                self.search = Some(sr);
                next
            }
        };
        let next = next.clamp(0.0, 0.95);
        let best = self.search.map_or(pass_s, |s| s.best_s);
        self.predicted_s = best;
        let done = self.search.is_some_and(|s| s.done);
        if (next - f).abs() < 1e-9 && !done {
            return Ok(None);
        }
        self.split(setup, next)?;
        Ok(Some(format!(
            "hybrid: pass {}: CPU share {:.0}%: {:.1} ms ({note}); {} {:.0}%{}",
            self.passes,
            f * 100.0,
            pass_s * 1e3,
            if done { "settled at" } else { "trying" },
            next * 100.0,
            if done {
                format!(" ({:.2} tok/s)", 1.0 / best.max(1e-9))
            } else {
                String::new()
            }
        )))
    }
}

/// The balance [`balance`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Balance {
    /// The CPU's share that balances the two paths.
    pub fraction: f64,
    /// The pass time predicted at that share.
    pub pass_s: f64,
    /// The CPU's measured rate (weight bytes per second under the pass's load).
    pub cpu_rate: f64,
    /// The bus's measured rate.
    pub bus_rate: f64,
    /// Host time outside the products.
    pub other_s: f64,
}

/// The CPU share at which a pass takes as long on the CPU's path as on the bus, from a pass
/// measured at share `f0` over split matrices of `s` bytes in all:
///
/// ```text
/// bus(f) = (copied + (f0 - f) s) / bus_rate
/// cpu(f) = f s / cpu_rate + exchanges + other
/// other  = wall - cpu busy - exchanges - stall     (host work outside the products, and the
///          device's own work that the first product of each split layer waits for)
/// ```
///
/// `None` when the pass measured nothing to learn from. Shares below 2% are 0 (not worth the
/// exchanges).
pub(super) fn balance(f0: f64, s: f64, m: &PassMeasure) -> Option<Balance> {
    let (cb, bb) = (m.cpu_busy.as_secs_f64(), m.copy_busy.as_secs_f64());
    if cb <= 0.0 || bb <= 0.0 || m.cpu_bytes == 0 || s <= 0.0 {
        return None;
    }
    let cpu_rate = m.cpu_bytes as f64 / cb;
    let bus_rate = m.copy_bytes as f64 / bb;
    let sync = m.cpu_wait_sync.as_secs_f64();
    let other = (m.wall.as_secs_f64() - cb - sync - m.stall.as_secs_f64()).max(0.0);
    let bus_at = |f: f64| (m.copy_bytes as f64 + (f0 - f) * s).max(0.0) / bus_rate;
    let cpu_at = |f: f64| f * s / cpu_rate + sync + other;
    let mut f =
        ((m.copy_bytes as f64 + f0 * s) / bus_rate - sync - other) / (s / cpu_rate + s / bus_rate);
    f = f.clamp(0.0, 0.95);
    if f < 0.02 {
        f = 0.0;
    }
    let pass_s = if f == 0.0 {
        bus_at(0.0).max(other)
    } else {
        bus_at(f).max(cpu_at(f))
    };
    Some(Balance {
        fraction: f,
        pass_s,
        cpu_rate,
        bus_rate,
        other_s: other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gguf::GgmlType;

    fn tensor(name: &str, at: usize, rows: usize, row_bytes: usize) -> TensorSlot {
        TensorSlot {
            name: name.into(),
            range: at..at + rows * row_bytes,
            ggml_type: GgmlType::Q8_0,
            row_len: row_bytes / 34 * 32,
            n_rows: rows,
        }
    }

    /// A layer of two spans: the split's file ranges are each tensor's first rows, the slot
    /// layout packs them back to back, and the CPU's view is the last rows of the same bytes.
    #[test]
    fn a_split_streams_first_rows_and_leaves_the_last_to_the_cpu() {
        let rb = 34 * 2; // two Q8_0 blocks a row
        let rows = [1usize, 10, 4, 4, 10, 1, 16, 16, 10];
        let mut tensors = Vec::new();
        let mut at = 0;
        for (j, &r) in rows.iter().enumerate() {
            tensors.push(tensor(&format!("t{j}"), at, r, rb));
            at += r * rb;
        }
        let cut = tensors[4].range.start; // second span starts at tensor 4
        let layer = LayerLayout {
            index: 3,
            spans: vec![1000..1000 + cut as u64, 50_000..50_000 + (at - cut) as u64],
            bytes: at as u64,
            tensors,
        };
        let bytes: Vec<u8> = (0..at).map(|i| (i * 31 % 251) as u8).collect();
        let (gpu, host) = split_layout(&layer, 0.3).unwrap();
        assert_eq!(host, [0, 3, 1, 1, 3, 0, 5, 5, 3]);
        assert_eq!(gpu.spans.len(), 9);
        let mut packed = Vec::new();
        for (j, t) in layer.tensors.iter().enumerate() {
            let keep = (t.n_rows - host[j]) * rb;
            // The file range is the tensor's first `keep` bytes.
            let file_start = if j < 4 {
                1000 + t.range.start as u64
            } else {
                50_000 + (t.range.start - cut) as u64
            };
            assert_eq!(
                gpu.spans[j],
                file_start..file_start + keep as u64,
                "tensor {j}"
            );
            assert_eq!(gpu.tensors[j].range, packed.len()..packed.len() + keep);
            assert_eq!(gpu.tensors[j].n_rows, t.n_rows - host[j]);
            packed.extend_from_slice(&bytes[t.range.start..t.range.start + keep]);
            if host[j] > 0 {
                let v = host_view(&layer, &bytes, j, host[j]).unwrap();
                assert_eq!(v.n_rows, host[j]);
                assert_eq!(v.data, &bytes[t.range.start + keep..t.range.end]);
            }
        }
        assert_eq!(gpu.bytes, packed.len() as u64);
        // Fractions near 1 leave the device one row; 0 leaves everything to the bus.
        let (_, host) = split_layout(&layer, 0.95).unwrap();
        assert_eq!(host[6], 15);
        let (g0, host) = split_layout(&layer, 0.0).unwrap();
        assert_eq!(host, [0; 9]);
        assert_eq!(g0.bytes, layer.bytes);
    }

    /// The learnt share makes the CPU's path and the bus take equally long on the measured
    /// rates; a CPU too slow to pay for its exchanges gets no share.
    #[test]
    fn the_learnt_share_balances_the_measured_cpu_and_bus() {
        let ms = Duration::from_secs_f64;
        let m = PassMeasure {
            wall: ms(0.13),
            copy_bytes: 6_000_000_000,
            copy_busy: ms(0.12), // 50 GB/s
            cpu_bytes: 4_000_000_000,
            cpu_busy: ms(0.1), // 40 GB/s
            cpu_wait_first: ms(0.01),
            cpu_wait_sync: ms(0.005),
            stall: ms(0.0),
        };
        let s = 10e9;
        let b = balance(0.4, s, &m).unwrap();
        let other = 0.13 - 0.1 - 0.005;
        assert!((b.other_s - other).abs() < 1e-12, "{b:?}");
        let bus = (6e9 + (0.4 - b.fraction) * s) / 50e9;
        let cpu = b.fraction * s / 40e9 + 0.005 + other;
        assert!((bus - cpu).abs() < 1e-9, "{b:?}: bus {bus} s, cpu {cpu} s");
        assert!((b.pass_s - bus).abs() < 1e-9, "{b:?}");
        assert!((b.fraction - 0.17 / 0.45).abs() < 1e-9, "{b:?}");
        // The bus stalling the device is not the CPU's cost: more of it moves the share up.
        let stalled = balance(
            0.4,
            s,
            &PassMeasure {
                stall: ms(0.02),
                ..m
            },
        )
        .unwrap();
        assert!(stalled.fraction > b.fraction, "{stalled:?} vs {b:?}");
        // A CPU at 0.5 GB/s with 20 ms of exchanges: no share.
        let slow = PassMeasure {
            cpu_busy: ms(8.0),
            cpu_wait_sync: ms(0.02),
            wall: ms(8.2),
            ..m
        };
        let z = balance(0.4, s, &slow).unwrap();
        assert_eq!(z.fraction, 0.0, "{z:?}");
        // Nothing measured: nothing learnt.
        assert!(balance(0.4, s, &PassMeasure::default()).is_none());
    }

    #[test]
    fn modes_parse_and_bad_ones_say_what_to_use() {
        assert_eq!(Hybrid::parse("off").unwrap(), Hybrid::Off);
        assert_eq!(Hybrid::parse("auto").unwrap(), Hybrid::Auto);
        assert_eq!(Hybrid::parse("0.4").unwrap(), Hybrid::Fraction(0.4));
        assert_eq!(Hybrid::parse("0").unwrap(), Hybrid::Off);
        for bad in ["1.5", "-0.1", "half", "NaN"] {
            let e = Hybrid::parse(bad).unwrap_err();
            assert!(e.contains("off, auto"), "{e}");
        }
    }
}
