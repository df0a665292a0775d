//! Live statistics of the engine: tokens per second, bytes streamed per token per tier, achieved
//! bandwidth of each pipeline stage, compute stall, and the plan's prediction beside them.

use std::fmt::Write as _;
use std::time::Duration;

use slep_pipeline::PipelineStats;

/// Accumulated over forward passes.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    /// Tokens fed (prompt and generated).
    pub tokens: u64,
    /// Forward passes (a batched prompt is one pass over the layers).
    pub passes: u64,
    /// Time in forward passes.
    pub wall: Duration,
    /// Bytes per pass read from each tier: device, pinned RAM, storage.
    pub bytes_per_pass: [u64; 3],
    /// Copy stage (host to device, all streamed layers): bytes and copy-engine time.
    pub copy_bytes: u64,
    /// Copy-engine busy time.
    pub copy_busy: Duration,
    /// Read stage (storage paths): bytes and reader time.
    pub read_bytes: u64,
    /// Reader busy time.
    pub read_busy: Duration,
    /// Time compute waited for streamed layers (after the first of each pass).
    pub stall: Duration,
    /// Time compute waited for the first streamed layer of each pass.
    pub fill: Duration,
    /// Predicted seconds per pass from the plan.
    pub predicted_s: f64,
    /// Read-ahead thread totals when the statistics were last cleared.
    pub prefetch_base: (u64, Duration),
    /// Hybrid layers: weight bytes the CPU threads computed on in place.
    pub cpu_bytes: u64,
    /// Hybrid layers: time the CPU threads spent on their rows.
    pub cpu_busy: Duration,
    /// Hybrid layers: time the CPU threads waited for their input vectors from the device.
    pub cpu_wait: Duration,
}

impl EngineStats {
    /// Adds one pass of `tokens` tokens.
    pub fn add_pass(&mut self, tokens: usize, wall: Duration, p: Option<&PipelineStats>) {
        self.tokens += tokens as u64;
        self.passes += 1;
        self.wall += wall;
        if let Some(p) = p {
            self.copy_bytes += p.copy.bytes;
            self.copy_busy += p.copy.busy;
            self.read_bytes += p.read.bytes;
            self.read_busy += p.read.busy;
            self.stall += p.stall;
            self.fill += p.fill;
        }
    }

    /// Adds what the storage read-ahead thread read since the last call (`totals` are its
    /// running totals).
    pub fn add_prefetch(&mut self, totals: (u64, Duration)) {
        self.read_bytes += totals.0.saturating_sub(self.prefetch_base.0);
        self.read_busy += totals.1.saturating_sub(self.prefetch_base.1);
        self.prefetch_base = totals;
    }

    /// Adds the CPU threads' share of hybrid layers: `bytes` of weights in `busy`, after
    /// waiting `wait` for their inputs.
    pub fn add_cpu(&mut self, bytes: u64, busy: Duration, wait: Duration) {
        self.cpu_bytes += bytes;
        self.cpu_busy += busy;
        self.cpu_wait += wait;
    }

    /// Forgets the measurements (keeps the per-pass bytes and the prediction).
    pub fn clear(&mut self) {
        *self = Self {
            bytes_per_pass: self.bytes_per_pass,
            predicted_s: self.predicted_s,
            prefetch_base: self.prefetch_base,
            ..Self::default()
        };
    }

    /// Seconds per pass, measured.
    pub fn seconds_per_pass(&self) -> f64 {
        if self.passes == 0 {
            0.0
        } else {
            self.wall.as_secs_f64() / self.passes as f64
        }
    }

    /// Passes per second (= tok/s in decode).
    pub fn passes_per_second(&self) -> f64 {
        let s = self.seconds_per_pass();
        if s > 0.0 {
            1.0 / s
        } else {
            0.0
        }
    }

    /// Bytes streamed over the bus per pass (pinned + storage).
    pub fn streamed_per_pass(&self) -> u64 {
        self.bytes_per_pass[1] + self.bytes_per_pass[2]
    }

    /// A few lines for `--stats`.
    pub fn report(&self) -> String {
        let gbps = |b: u64, t: Duration| {
            if t.is_zero() {
                0.0
            } else {
                b as f64 / t.as_secs_f64() / 1e9
            }
        };
        let mb = |b: u64| b as f64 / 1e6;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "stats: {} tokens in {} passes, {:.3} s/pass = {:.2} passes/s (decode tok/s); predicted by the plan {:.2}/s",
            self.tokens,
            self.passes,
            self.seconds_per_pass(),
            self.passes_per_second(),
            if self.predicted_s > 0.0 { 1.0 / self.predicted_s } else { 0.0 }
        );
        let _ = writeln!(
            s,
            "stats: per pass read from device {:.1} MB, streamed from pinned RAM {:.1} MB, from storage {:.1} MB",
            mb(self.bytes_per_pass[0]),
            mb(self.bytes_per_pass[1]),
            mb(self.bytes_per_pass[2])
        );
        if self.copy_bytes > 0 {
            let _ = writeln!(
                s,
                "stats: host-to-device copies {:.1} GB at {:.2} GB/s of copy-engine time; storage reads {:.1} GB at {:.2} GB/s of reader time; streamed {:.2} GB/s of wall time",
                self.copy_bytes as f64 / 1e9,
                gbps(self.copy_bytes, self.copy_busy),
                self.read_bytes as f64 / 1e9,
                gbps(self.read_bytes, self.read_busy),
                gbps(self.copy_bytes, self.wall)
            );
            let _ = writeln!(
                s,
                "stats: compute stalled {:.3} s waiting for streamed layers (+{:.3} s for the first layer of each pass) of {:.3} s",
                self.stall.as_secs_f64(),
                self.fill.as_secs_f64(),
                self.wall.as_secs_f64()
            );
        }
        if self.cpu_bytes > 0 {
            let _ = writeln!(
                s,
                "stats: hybrid: CPU threads computed on {:.1} GB at {:.2} GB/s of their busy time ({:.3} s busy, {:.3} s waiting for inputs from the device, of {:.3} s wall; the bus copied at {:.2} GB/s of copy-engine time)",
                self.cpu_bytes as f64 / 1e9,
                gbps(self.cpu_bytes, self.cpu_busy),
                self.cpu_busy.as_secs_f64(),
                self.cpu_wait.as_secs_f64(),
                self.wall.as_secs_f64(),
                gbps(self.copy_bytes, self.copy_busy)
            );
        }
        s
    }
}
