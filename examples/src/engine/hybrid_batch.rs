//! The CPU's share of split layers for the multi-sequence engine's steps, per batch size.
//!
//! A step of `n` decode rows reads each weight row once for all `n` inputs, on the bus and on the
//! CPU alike: the bus's time does not grow with `n`, the CPU's does (its products are
//! compute-bound within a few rows). So each size (rounded up to a power of two) keeps its own
//! share: under `auto` it starts from the one-row share divided by the size and then follows
//! the share that balances the CPU's and the bus's rates measured in the steps of that size (damped, for the first [`LEARN_STEPS`]); a share that
//! falls below 2% is 0 and that size streams whole layers from then on. Steps of more than
//! [`MAX_HYBRID_ROWS`] rows (prefill chunks, large batches) always stream whole layers.

use std::collections::HashMap;

use super::hybrid::{balance, PassMeasure};

/// The most rows of a step whose layers are split (more stream whole layers).
pub const MAX_HYBRID_ROWS: usize = 16;

/// Steps per batch size whose measurements move that size's share (`auto`).
pub const LEARN_STEPS: u32 = 8;

/// One batch size's share and how many steps it learnt from.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Share {
    fraction: f64,
    steps: u32,
}

/// Shares per batch size (see the module documentation).
#[derive(Debug, Clone)]
pub struct BatchShares {
    base: f64,
    auto: bool,
    sizes: HashMap<usize, Share>,
}

/// The size class of a step of `n` rows.
fn size_class(n: usize) -> usize {
    n.max(1).next_power_of_two()
}

impl BatchShares {
    /// Shares starting from `base`, the one-row share; `auto`: learnt per size, else `base` at
    /// every size up to [`MAX_HYBRID_ROWS`] (a fixed `--hybrid FRACTION`).
    pub fn new(base: f64, auto: bool) -> Self {
        Self {
            base,
            auto,
            sizes: HashMap::new(),
        }
    }

    /// The CPU's share for a step of `n` rows (0: whole layers).
    pub fn fraction(&self, n: usize) -> f64 {
        if n == 0 || n > MAX_HYBRID_ROWS {
            return 0.0;
        }
        if !self.auto {
            return self.base;
        }
        let c = size_class(n);
        self.sizes
            .get(&c)
            .map_or(self.base / c as f64, |s| s.fraction)
    }

    /// Learns from a step of `n` rows measured at the share [`BatchShares::fraction`] gave it,
    /// over split matrices of `matrix_bytes` in all. Returns what changed, for the log.
    pub fn learn(&mut self, n: usize, matrix_bytes: f64, m: &PassMeasure) -> Option<String> {
        if !self.auto || n == 0 || n > MAX_HYBRID_ROWS {
            return None;
        }
        let f0 = self.fraction(n);
        let c = size_class(n);
        let share = self.sizes.entry(c).or_insert(Share {
            fraction: f0,
            steps: 0,
        });
        if share.steps >= LEARN_STEPS || f0 == 0.0 {
            return None;
        }
        let est = balance(f0, matrix_bytes, m)?;
        share.steps += 1;
        // The first step jumps to the balance; later ones move halfway (the CPU's speed under
        // the bus's load is noisy from step to step).
        let next = if share.steps == 1 {
            est.fraction
        } else {
            0.5 * (f0 + est.fraction)
        };
        let next = if next < 0.02 { 0.0 } else { next.min(0.95) };
        share.fraction = next;
        Some(format!(
            "hybrid: steps of up to {c} rows: CPU {:.1} GB/s under load, bus {:.1} GB/s at a {:.0}% share: {:.0}% next{}",
            est.cpu_rate / 1e9,
            est.bus_rate / 1e9,
            f0 * 100.0,
            next * 100.0,
            if next == 0.0 { " (whole layers from now on)" } else { "" }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn step(cpu_gbps: f64, f: f64) -> PassMeasure {
        // 10 GB of split matrices; the bus at 50 GB/s copies the rest of them plus 2 GB.
        let s = 10e9;
        let copy = 2e9 + (1.0 - f) * s;
        let cpu = f * s;
        let ms = Duration::from_secs_f64;
        let (bus_s, cpu_s) = (copy / 50e9, cpu / (cpu_gbps * 1e9));
        PassMeasure {
            wall: ms(bus_s.max(cpu_s)),
            copy_bytes: copy as u64,
            copy_busy: ms(bus_s),
            cpu_bytes: cpu as u64,
            cpu_busy: ms(cpu_s),
            // A bus behind the CPU stalls the device for the difference.
            stall: ms((bus_s - cpu_s).max(0.0)),
            ..PassMeasure::default()
        }
    }

    /// A fixed share applies to every size up to the limit; beyond it whole layers.
    #[test]
    fn a_fixed_share_holds_at_every_size_up_to_the_limit() {
        let mut b = BatchShares::new(0.4, false);
        for n in 1..=MAX_HYBRID_ROWS {
            assert_eq!(b.fraction(n), 0.4);
        }
        assert_eq!(b.fraction(MAX_HYBRID_ROWS + 1), 0.0);
        assert_eq!(b.fraction(0), 0.0);
        assert!(b.learn(4, 10e9, &step(40.0, 0.4)).is_none());
        assert_eq!(b.fraction(4), 0.4);
    }

    /// Under `auto` each size learns the share at which the CPU (slower per weight byte the
    /// more rows it serves) finishes with the bus, and a CPU too slow for a size gets none.
    #[test]
    fn auto_learns_a_share_per_size_that_balances_cpu_and_bus() {
        let mut b = BatchShares::new(0.4, true);
        assert_eq!(b.fraction(1), 0.4);
        assert_eq!(b.fraction(3), 0.1, "3 rows: size 4 starts at a quarter");
        // Weight bytes per second the CPU serves at each size: 48 GB/s for one row, falling
        // with the rows (compute-bound).
        let rate = |n: usize| 48.0 / n as f64;
        for n in [1usize, 2, 4] {
            for _ in 0..LEARN_STEPS + 2 {
                let f = b.fraction(n);
                b.learn(n, 10e9, &step(rate(n), f));
            }
            // Balance: (2e9 + (1 - f) 10e9) / 50e9 = f 10e9 / rate.
            let r = rate(n) * 1e9;
            let want = (12e9 / 50e9) / (10e9 / r + 10e9 / 50e9);
            let got = b.fraction(n);
            assert!((got - want).abs() < 0.01, "{n} rows: {got} vs {want}");
        }
        assert!(b.fraction(1) > b.fraction(2) && b.fraction(2) > b.fraction(4));
        // Learning stops after LEARN_STEPS steps of a size.
        let settled = b.fraction(2);
        assert!(b.learn(2, 10e9, &step(1.0, settled)).is_none());
        assert_eq!(b.fraction(2), settled);
        // 0.2 GB/s at 16 rows: no share, and it stays none.
        for _ in 0..3 {
            let f = b.fraction(16);
            b.learn(16, 10e9, &step(0.2, f));
        }
        assert_eq!(b.fraction(16), 0.0);
        assert!(b.learn(16, 10e9, &step(0.2, 0.0)).is_none());
    }
}
