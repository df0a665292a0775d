//! What the CUDA engine measures of split layers in one pass: the CPU threads' bytes, compute
//! and waits from each layer's host spans (into the trace as CPU compute and CPU wait rows),
//! then the pass's bus figures, for `--stats` and for the plan's learning
//! ([`super::hybrid::HybridPlan`]).

use std::sync::Arc;
use std::time::Duration;

use llama_model::cuda::HostSpan;
use slep_pipeline::{PipelineStats, Stage, Trace};

use super::hybrid::PassMeasure;
use super::stats::EngineStats;

/// Adds one split layer's host spans (`bytes` of weights computed by the CPU) to `m`, and to
/// the trace.
pub(super) fn account(
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
