//! A timeline of what each stage did in a pass, for a Chrome / Perfetto trace viewer.
//!
//! A [`Trace`] given to a pipeline ([`crate::Pipeline::set_trace`]) records one [`Span`] per
//! item and stage: the storage read on the reader thread, the bus copy (its start is the copy's
//! completion minus the transfer's own timing of it, so a GPU copy is placed where the copy
//! engine ran it), the consumer's wait for the item and its compute. Callers add their own
//! spans (e.g. GPU kernels timed with events, CPU threads) with [`Trace::record`] or
//! [`Trace::record_at`]. [`Trace::to_chrome_json`] writes the JSON trace-event format that
//! `chrome://tracing` and <https://ui.perfetto.dev> open: one row per stage.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use slep_pipeline::{Stage, Trace};
//!
//! let trace = Trace::new();
//! let t0 = Instant::now();
//! trace.record(Stage::Compute, 7, t0, t0 + Duration::from_micros(250));
//! let json = trace.to_chrome_json(|key| format!("layer {key}"));
//! assert!(json.contains("\"name\":\"layer 7\"") && json.contains("\"dur\":250"));
//! ```

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a span's time was spent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Reading the item from storage into host staging.
    Read,
    /// Copying the item over the bus into a device slot.
    Copy,
    /// The consumer waiting for the item to be ready.
    Wait,
    /// The consumer's work on the item as the host saw it (for device-side compute: enqueueing).
    Compute,
    /// Compute on the device, timed by the device.
    DeviceCompute,
    /// Compute on CPU threads beside the device.
    CpuCompute,
    /// CPU threads waiting for the activations their next product reads (from the device).
    CpuWait,
}

impl Stage {
    /// Every stage, in the order the viewer shows them.
    pub const ALL: [Stage; 7] = [
        Stage::Read,
        Stage::Copy,
        Stage::Wait,
        Stage::Compute,
        Stage::DeviceCompute,
        Stage::CpuCompute,
        Stage::CpuWait,
    ];

    /// The row name in the viewer.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Read => "storage read",
            Stage::Copy => "bus copy",
            Stage::Wait => "wait for data",
            Stage::Compute => "host compute / enqueue",
            Stage::DeviceCompute => "GPU compute",
            Stage::CpuCompute => "CPU compute",
            Stage::CpuWait => "CPU wait for inputs",
        }
    }

    fn row(self) -> usize {
        Stage::ALL.iter().position(|&s| s == self).unwrap_or(0) + 1
    }
}

/// One stage's work on one item, in time since the trace began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The stage.
    pub stage: Stage,
    /// The item's key (the engine's layer index).
    pub key: u64,
    /// Start, since [`Trace::new`].
    pub start: Duration,
    /// End, since [`Trace::new`] (at least `start`).
    pub end: Duration,
}

impl Span {
    /// The span's length.
    pub fn len(&self) -> Duration {
        self.end.saturating_sub(self.start)
    }

    /// Whether the span has zero length.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// Spans recorded from any thread (see the module documentation).
#[derive(Debug)]
pub struct Trace {
    epoch: Instant,
    spans: Mutex<Vec<Span>>,
}

impl Default for Trace {
    fn default() -> Self {
        Self::new()
    }
}

impl Trace {
    /// An empty trace whose clock starts now.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            spans: Mutex::new(Vec::new()),
        }
    }

    /// The instant the trace's clock counts from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Records `stage` working on `key` from `start` to `end` (host instants; an end before the
    /// start records an empty span).
    pub fn record(&self, stage: Stage, key: u64, start: Instant, end: Instant) {
        let s = start.saturating_duration_since(self.epoch);
        let e = end.saturating_duration_since(self.epoch).max(s);
        self.record_at(stage, key, s, e);
    }

    /// Records a span given as times since [`Trace::epoch`].
    pub fn record_at(&self, stage: Stage, key: u64, start: Duration, end: Duration) {
        let span = Span {
            stage,
            key,
            start,
            end: end.max(start),
        };
        // A poisoned lock means a recording thread panicked; the spans stay usable.
        let mut v = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        v.push(span);
    }

    /// Every span so far, sorted by start.
    pub fn spans(&self) -> Vec<Span> {
        let mut v = self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone();
        v.sort_by_key(|s| (s.start, s.stage));
        v
    }

    /// Time in which spans of `stage` were active, overlaps counted once.
    pub fn busy(&self, stage: Stage) -> Duration {
        union(self.spans().iter().filter(|s| s.stage == stage))
    }

    /// Time in which a span of `a` and a span of `b` were active at once.
    pub fn overlap(&self, a: Stage, b: Stage) -> Duration {
        let spans = self.spans();
        let only = |st: Stage| -> Vec<(Duration, Duration)> {
            merged(spans.iter().filter(|s| s.stage == st))
        };
        let (x, y) = (only(a), only(b));
        let (mut i, mut j, mut total) = (0, 0, Duration::ZERO);
        while i < x.len() && j < y.len() {
            let lo = x[i].0.max(y[j].0);
            let hi = x[i].1.min(y[j].1);
            total += hi.saturating_sub(lo);
            if x[i].1 < y[j].1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        total
    }

    /// The spans in Chrome's JSON trace-event format: complete events (`"ph":"X"`, times in
    /// microseconds) named by `name(key)`, one thread row per [`Stage`].
    pub fn to_chrome_json(&self, name: impl Fn(u64) -> String) -> String {
        let mut out = String::from("{\"displayTimeUnit\":\"ms\",\"traceEvents\":[");
        let mut first = true;
        let mut sep = |out: &mut String| {
            if !first {
                out.push(',');
            }
            first = false;
        };
        for st in Stage::ALL {
            sep(&mut out);
            let _ = write!(
                out,
                "{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":{},\"args\":{{\"name\":\"{}\"}}}}",
                st.row(),
                st.name()
            );
        }
        for s in self.spans() {
            sep(&mut out);
            let _ = write!(
                out,
                "{{\"name\":\"{}\",\"cat\":\"{}\",\"ph\":\"X\",\"pid\":1,\"tid\":{},\"ts\":{},\"dur\":{}}}",
                escape(&name(s.key)),
                st_cat(s.stage),
                s.stage.row(),
                s.start.as_micros(),
                s.len().as_micros()
            );
        }
        out.push_str("]}");
        out
    }
}

fn st_cat(s: Stage) -> &'static str {
    match s {
        Stage::Read => "read",
        Stage::Copy => "copy",
        Stage::Wait => "wait",
        Stage::Compute => "compute",
        Stage::DeviceCompute => "gpu",
        Stage::CpuCompute => "cpu",
        Stage::CpuWait => "cpu-wait",
    }
}

/// `s` as the inside of a JSON string.
fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o
}

/// Sorted, merged intervals of `spans`.
fn merged<'a>(spans: impl Iterator<Item = &'a Span>) -> Vec<(Duration, Duration)> {
    let mut v: Vec<(Duration, Duration)> = spans.map(|s| (s.start, s.end)).collect();
    v.sort();
    let mut out: Vec<(Duration, Duration)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn union<'a>(spans: impl Iterator<Item = &'a Span>) -> Duration {
    merged(spans)
        .iter()
        .map(|(s, e)| e.saturating_sub(*s))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn busy_and_overlap_count_shared_time_once() {
        let t = Trace::new();
        t.record_at(Stage::Copy, 0, ms(0), ms(10));
        t.record_at(Stage::Copy, 1, ms(5), ms(20));
        t.record_at(Stage::Compute, 0, ms(15), ms(30));
        t.record_at(Stage::Compute, 1, ms(40), ms(45));
        assert_eq!(t.busy(Stage::Copy), ms(20));
        assert_eq!(t.busy(Stage::Compute), ms(20));
        assert_eq!(t.overlap(Stage::Copy, Stage::Compute), ms(5));
        assert_eq!(t.overlap(Stage::Compute, Stage::Copy), ms(5));
        assert_eq!(t.overlap(Stage::Read, Stage::Copy), Duration::ZERO);
    }

    #[test]
    fn chrome_json_parses_and_names_every_span() {
        let t = Trace::new();
        t.record_at(Stage::Read, 3, ms(1), ms(2));
        t.record_at(Stage::DeviceCompute, 4, ms(2), ms(3));
        let j = t.to_chrome_json(|k| format!("layer \"{k}\""));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        let ev = v["traceEvents"].as_array().unwrap();
        let spans: Vec<_> = ev.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0]["name"], "layer \"3\"");
        assert_eq!(spans[0]["ts"], 1000);
        assert_eq!(spans[0]["dur"], 1000);
        assert_eq!(spans[1]["cat"], "gpu");
        let rows = ev.iter().filter(|e| e["ph"] == "M").count();
        assert_eq!(rows, Stage::ALL.len());
    }
}
