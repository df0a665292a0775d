//! Helpers of the GPU speed reports (`benches/benches/cuda_*.rs`, feature `cuda`): the backend
//! or a clear exit, timing, and the JSON sink.

use std::sync::Arc;
use std::time::Duration;

use llama_model::cuda::{CudaBackend, CudaOptions};

/// Opens device 0 with `opts`, or prints why it cannot and exits with status 2 (a speed report
/// with no GPU has nothing to say, and must not look like a run).
pub fn backend_or_exit(opts: &CudaOptions) -> Arc<CudaBackend> {
    match CudaBackend::with_options(0, opts) {
        Ok(b) => {
            eprintln!("CUDA backend on {}", b.arch());
            Arc::new(b)
        }
        Err(e) => {
            eprintln!("!!! no CUDA backend, nothing measured: {e}");
            std::process::exit(2);
        }
    }
}

/// Milliseconds of `d`.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The median of `v` (upper median for even lengths); NaN for an empty `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The device-to-device copy bandwidth (bytes/s, read + write) of a 1 GiB copy, the limit a
/// memory-bound kernel is compared with; exits with status 2 when the copy fails.
pub fn d2d_or_exit(b: &CudaBackend) -> f64 {
    match b.measure_d2d_bandwidth(1 << 30, 20) {
        Ok(bw) => {
            eprintln!("D2D copy (1 GiB, read + write): {:.0} GB/s", bw / 1e9);
            bw
        }
        Err(e) => {
            eprintln!("!!! the D2D copy failed, nothing measured: {e}");
            std::process::exit(2);
        }
    }
}
