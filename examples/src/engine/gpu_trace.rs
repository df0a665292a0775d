//! Per-layer GPU timing for the engine's trace ([`super::EngineOptions::trace`]).

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaEvent, CudaStream};
use slep_pipeline::{Stage, Trace};

use super::error::{EngineError, Result};

/// With a trace: events around each layer's kernels on the compute stream, turned into
/// [`Stage::DeviceCompute`] spans once the pass is done. The GPU clock is placed on the host's
/// by the pass's first event, recorded when the stream is idle (the previous pass synchronised).
pub(super) struct LayerTimer {
    trace: Option<Arc<Trace>>,
    base: Option<(CudaEvent, Instant)>,
    open: Option<(usize, CudaEvent)>,
    done: Vec<(usize, CudaEvent, CudaEvent)>,
}

fn timed_event(stream: &Arc<CudaStream>) -> Result<CudaEvent> {
    stream
        .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
        .map_err(|e| EngineError::Compute(format!("trace event: {e}")))
}

impl LayerTimer {
    pub(super) fn start(trace: Option<Arc<Trace>>, stream: &Arc<CudaStream>) -> Result<Self> {
        let base = match &trace {
            Some(_) => Some((timed_event(stream)?, Instant::now())),
            None => None,
        };
        Ok(Self {
            trace,
            base,
            open: None,
            done: Vec::new(),
        })
    }

    pub(super) fn before(&mut self, layer: usize, stream: &Arc<CudaStream>) -> Result<()> {
        if self.trace.is_some() {
            self.open = Some((layer, timed_event(stream)?));
        }
        Ok(())
    }

    pub(super) fn after(&mut self, stream: &Arc<CudaStream>) -> Result<()> {
        if let Some((layer, start)) = self.open.take() {
            self.done.push((layer, start, timed_event(stream)?));
        }
        Ok(())
    }

    /// Waits for the pass's events and records their spans.
    pub(super) fn finish(self) -> Result<()> {
        let (Some(trace), Some((base, at))) = (self.trace, self.base) else {
            return Ok(());
        };
        let ms = |e: &CudaEvent| {
            base.elapsed_ms(e)
                .map_err(|err| EngineError::Compute(format!("trace event: {err}")))
        };
        let origin = at.saturating_duration_since(trace.epoch());
        for (layer, s, e) in &self.done {
            let (a, b) = (ms(s)?, ms(e)?);
            let d =
                |m: f32| origin + std::time::Duration::from_secs_f64(f64::from(m.max(0.0)) / 1e3);
            trace.record_at(Stage::DeviceCompute, *layer as u64, d(a), d(b));
        }
        Ok(())
    }
}
