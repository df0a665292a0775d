//! The engine that composes the vramless crates, and the OpenAI-compatible server over it;
//! shared by the example binaries.
#![forbid(unsafe_code)]

pub mod batch_run;
pub mod cpu_load;
pub mod default_model;
pub mod engine;
pub mod serve;

use std::path::PathBuf;

/// The model to run: `model` when the user gave one, else the default model (found in the
/// cache or fetched there, see [`default_model`]). `program` names the caller in the progress
/// lines printed on stderr.
pub fn model_path(program: &str, model: Option<PathBuf>) -> Result<PathBuf, String> {
    match model {
        Some(path) => Ok(path),
        None => default_model::path(program),
    }
}

/// The CUDA backend's options from the environment: `VRAMLESS_CUDA_GRAPH`,
/// `VRAMLESS_CUDA_EVENT_TRACKING`, `VRAMLESS_MATVEC_ROWS`, `VRAMLESS_MATVEC_KSPLIT`,
/// `VRAMLESS_MATVEC_Q8`, `VRAMLESS_KERNEL_CACHE` (default `$XDG_CACHE_HOME/vramless/kernels`, else
/// `~/.cache/vramless/kernels`) and `VRAMLESS_NVRTC_LIB` (see
/// `llama_model::cuda::CudaOptions::VARIABLES`). The programs' only reader of these variables.
#[cfg(feature = "cuda")]
pub fn cuda_options() -> Result<llama_model::cuda::CudaOptions, String> {
    llama_model::cuda::CudaOptions::from_vars(|k| std::env::var(k).ok()).map_err(|e| e.to_string())
}
