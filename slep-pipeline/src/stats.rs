//! Per-stage statistics of a pass.

use std::fmt;
use std::time::Duration;

/// Bytes moved and time spent by one stage.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageStats {
    /// Items the stage processed.
    pub items: u64,
    /// Bytes the stage moved.
    pub bytes: u64,
    /// Time the stage was busy.
    pub busy: Duration,
}

impl StageStats {
    /// Achieved bandwidth while busy, in GB/s (10^9 bytes per second); 0 when idle.
    pub fn gbps(&self) -> f64 {
        let s = self.busy.as_secs_f64();
        if s > 0.0 {
            self.bytes as f64 / s / 1e9
        } else {
            0.0
        }
    }

    pub(crate) fn add(&mut self, bytes: u64, busy: Duration) {
        self.items += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        self.busy += busy;
    }
}

/// Statistics of one pass of [`crate::Pipeline::run`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineStats {
    /// Items consumed.
    pub items: u64,
    /// Bytes of all consumed items.
    pub bytes: u64,
    /// Source stage: bytes read into staging (resident and direct-from-host items move none here).
    pub read: StageStats,
    /// Transfer stage: bytes copied into slots.
    pub copy: StageStats,
    /// The consumer's compute.
    pub compute: StageStats,
    /// Time compute waited for data after the first item (the pipeline not keeping up).
    pub stall: Duration,
    /// Time until the first item was ready (pipeline fill).
    pub fill: Duration,
    /// Wall time of the pass.
    pub wall: Duration,
}

impl PipelineStats {
    /// Bytes of consumed items over wall time, in GB/s.
    pub fn end_to_end_gbps(&self) -> f64 {
        let s = self.wall.as_secs_f64();
        if s > 0.0 {
            self.bytes as f64 / s / 1e9
        } else {
            0.0
        }
    }
}

impl fmt::Display for PipelineStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, name: &str, s: &StageStats| {
            // Rates over less than a millisecond of work are noise: show them as "-".
            let rate = if s.busy.as_micros() >= 1000 {
                format!("{:.2}", s.gbps())
            } else {
                "-".into()
            };
            writeln!(
                f,
                "  {name:<8} {:>6} items {:>12} bytes {:>10.3} s busy {rate:>8} GB/s",
                s.items,
                s.bytes,
                s.busy.as_secs_f64(),
            )
        };
        row(f, "read", &self.read)?;
        row(f, "copy", &self.copy)?;
        row(f, "compute", &self.compute)?;
        writeln!(
            f,
            "  total    {:>6} items {:>12} bytes {:>10.3} s wall {:>8.2} GB/s (fill {:.3} s, compute stalled {:.3} s)",
            self.items,
            self.bytes,
            self.wall.as_secs_f64(),
            self.end_to_end_gbps(),
            self.fill.as_secs_f64(),
            self.stall.as_secs_f64()
        )
    }
}
