//! `--trace FILE`: the engine's timeline ([`super::EngineOptions::trace`]) as a Chrome /
//! Perfetto trace, and a summary of how busy each stage was.

use std::path::Path;
use std::time::Duration;

use slep_pipeline::{Stage, Trace};

use super::error::{EngineError, Result};

/// Per stage: busy time and the fraction of the traced wall time (first span's start to the
/// last span's end); then how long the bus copy overlapped each kind of compute.
pub fn summary(trace: &Trace) -> String {
    let spans = trace.spans();
    let (Some(first), Some(end)) = (
        spans.iter().map(|s| s.start).min(),
        spans.iter().map(|s| s.end).max(),
    ) else {
        return "trace: no spans (nothing streamed or computed)\n".into();
    };
    let wall = end.saturating_sub(first).max(Duration::from_nanos(1));
    let mut out = format!(
        "trace: {} spans over {:.3} s\n",
        spans.len(),
        wall.as_secs_f64()
    );
    for st in Stage::ALL {
        let n = spans.iter().filter(|s| s.stage == st).count();
        if n == 0 {
            continue;
        }
        let busy = trace.busy(st);
        out += &format!(
            "trace:   {:<24} {:>6} spans, busy {:>9.3} s = {:.3} of the wall time\n",
            st.name(),
            n,
            busy.as_secs_f64(),
            busy.as_secs_f64() / wall.as_secs_f64()
        );
    }
    for other in [Stage::Compute, Stage::DeviceCompute, Stage::CpuCompute] {
        let o = trace.overlap(Stage::Copy, other);
        if o > Duration::ZERO {
            out += &format!(
                "trace:   bus copy while {}: {:.3} s\n",
                other.name(),
                o.as_secs_f64()
            );
        }
    }
    out
}

/// Writes `trace` to `path` as Chrome JSON trace events (spans named `layer N`) and prints
/// [`summary`] on stderr.
pub fn write(trace: &Trace, path: &Path) -> Result<()> {
    let json = trace.to_chrome_json(|k| format!("layer {k}"));
    std::fs::write(path, json).map_err(|source| EngineError::Io {
        what: format!("writing the trace {}", path.display()),
        source,
    })?;
    eprint!("{}", summary(trace));
    eprintln!(
        "trace: written to {} (open in https://ui.perfetto.dev or chrome://tracing)",
        path.display()
    );
    Ok(())
}
