//! Helpers of the GPU speed reports (`benches/benches/cuda_*.rs`, feature `cuda`): the backend
//! or a clear exit, and timing.

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
