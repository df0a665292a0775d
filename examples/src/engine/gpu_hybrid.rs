//! The CUDA engine's layers in a pass, whole or split between the device and CPU threads
//! ([`run_layer`]), and what it measures of the split ones: the CPU threads' bytes, compute and
//! waits from each layer's host spans (into the trace as CPU compute and CPU wait rows), then
//! the pass's bus figures, for `--stats` and for the plan's learning
//! ([`super::hybrid::HybridPlan`]).

use std::sync::Arc;
use std::time::Duration;

use cudarc::driver::CudaStream;
use llama_model::cuda::{DeviceLayerWeights, HostLayerRows, HostSpan};
use slep_pipeline::{CudaTransfer, PipelineStats, Stage, Trace};

use super::backend::LayerData;
use super::error::Result;
use super::gpu_trace::LayerTimer;
use super::gpu_weights::Weights;
use super::hybrid::{HybridPlan, PassMeasure};
use super::layout::LayerLayout;
use super::stats::EngineStats;

/// Runs `layer` of a pass through `run`: split when `split` (the plan and its exchange
/// buffers) splits it and it came in a slot (the device's first rows from the slot, the host's
/// last rows read in place), else whole (`run` gets no host rows and returns no spans). Times
/// it for the trace and adds the host's spans to `cpu`.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_layer<'a, S>(
    weights: &'a Weights,
    split: Option<&mut (&HybridPlan, &mut S)>,
    layer: &LayerLayout,
    data: &LayerData<'_, 'a, CudaTransfer>,
    stream: &Arc<CudaStream>,
    timer: &mut LayerTimer,
    cpu: &mut PassMeasure,
    trace: Option<&Arc<Trace>>,
    run: impl FnOnce(
        &DeviceLayerWeights<'_>,
        Option<(&HostLayerRows<'_>, &mut S)>,
    ) -> Result<Vec<HostSpan>>,
) -> Result<()> {
    let part = split.and_then(|(plan, s)| {
        let plan: &HybridPlan = plan;
        Some((plan.layers.get(&layer.index)?, plan.kernel, &mut **s))
    });
    match (part, data) {
        (Some((sl, kernel, s)), LayerData::Slot(..)) => {
            let w = weights.views(&sl.gpu, data, stream)?;
            let host = sl.host_rows(layer, kernel)?;
            timer.before(layer.index, stream)?;
            let spans = run(&w, Some((&host, s)))?;
            timer.after(stream)?;
            account(cpu, trace, layer.index, host.bytes(), spans);
        }
        _ => {
            let w = weights.views(layer, data, stream)?;
            timer.before(layer.index, stream)?;
            run(&w, None)?;
            timer.after(stream)?;
        }
    }
    Ok(())
}

/// Adds one split layer's host spans (`bytes` of weights computed by the CPU) to `m`, and to
/// the trace.
fn account(
    m: &mut PassMeasure,
    trace: Option<&Arc<Trace>>,
    layer: usize,
    bytes: usize,
    spans: Vec<HostSpan>,
) {
    m.cpu_bytes += bytes as u64;
    for (j, sp) in spans.into_iter().enumerate() {
        m.cpu_busy += sp.end - sp.start;
        if j == 0 {
            m.cpu_wait_first += sp.start - sp.wait;
        } else {
            m.cpu_wait_sync += sp.start - sp.wait;
        }
        if let Some(tr) = trace {
            let k = layer as u64;
            tr.record(Stage::CpuWait, k, sp.wait, sp.start);
            tr.record(Stage::CpuCompute, k, sp.start, sp.end);
        }
    }
}

/// Ends a pass of `wall` whose pipeline measured `p`: the CPU's figures into `stats`, the
/// bus's into `m` (ready for the plan to learn from).
pub(super) fn finish(
    m: &mut PassMeasure,
    stats: &mut EngineStats,
    wall: Duration,
    p: Option<&PipelineStats>,
) {
    stats.add_cpu(m.cpu_bytes, m.cpu_busy, m.cpu_wait_first + m.cpu_wait_sync);
    m.wall = wall;
    if let Some(p) = p {
        m.copy_bytes = p.copy.bytes;
        m.copy_busy = p.copy.busy;
        m.stall = p.stall + p.fill;
    }
}
