//! The host's memory-read bandwidth with every thread of the current rayon pool reading: the
//! ceiling of CPU products over weights in RAM, and (where a copy engine reads the same RAM)
//! of CPU products and bus copies together.

use std::time::Instant;

use rayon::prelude::*;

/// Bytes each parallel task sums.
const TASK_BYTES: usize = 512 << 10;

/// Read bandwidth in bytes per second of `buf` (RAM the caller filled, larger than the
/// last-level cache for a RAM figure): the threads of the current rayon pool sum its 8-byte
/// words in tasks of 512 KiB; the best of `rounds` passes (after one warm-up pass).
pub fn read_bandwidth(buf: &[u64], rounds: usize) -> f64 {
    let pass = || {
        buf.par_chunks(TASK_BYTES / 8)
            .map(|c| c.iter().fold(0u64, |a, v| a.wrapping_add(*v)))
            .reduce(|| 0, u64::wrapping_add)
    };
    std::hint::black_box(pass());
    let mut best = f64::MAX;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        std::hint::black_box(pass());
        best = best.min(t.elapsed().as_secs_f64());
    }
    (buf.len() * 8) as f64 / best.max(1e-12)
}

/// [`read_bandwidth`] over a fresh buffer of `bytes` (filled first, so every page is backed by
/// RAM), best of 4 passes.
pub fn measure_read_bandwidth(bytes: usize) -> f64 {
    let buf: Vec<u64> = (0..(bytes / 8).max(1) as u64).collect();
    read_bandwidth(&buf, 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A positive, finite rate that a larger buffer does not make absurd (nothing is skipped:
    /// the sum is kept).
    #[test]
    fn the_rate_is_positive_and_plausible() {
        let bw = measure_read_bandwidth(64 << 20);
        assert!(bw.is_finite() && bw > 1e8, "{bw}");
        assert!(bw < 1e13, "{bw} B/s is beyond any RAM");
    }
}
