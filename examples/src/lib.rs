//! The engine that composes the vramless crates, and the OpenAI-compatible server over it;
//! shared by the example binaries.
#![forbid(unsafe_code)]

pub mod batch_run;
pub mod engine;
pub mod serve;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository root (the example binaries are run from a checkout).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The model to run: `model` when the user gave one, else the default model, fetched by
/// `scripts/fetch-model.sh` (which downloads it into the cache on first use and prints its path).
/// `program` names the caller in the progress line printed on stderr.
pub fn model_path(program: &str, model: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(path) = model {
        return Ok(path);
    }
    let script = repo_root().join("scripts/fetch-model.sh");
    eprintln!("{program}: no --model given; running {}", script.display());
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed; pass --model PATH", script.display()));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The CUDA backend's options from the environment: `VRAMLESS_CUDA_GRAPH`,
/// `VRAMLESS_CUDA_EVENT_TRACKING`, `VRAMLESS_MATVEC_ROWS`, `VRAMLESS_MATVEC_KSPLIT`,
/// `VRAMLESS_KERNEL_CACHE` (default `$XDG_CACHE_HOME/vramless/kernels`, else
/// `~/.cache/vramless/kernels`) and `VRAMLESS_NVRTC_LIB` (see
/// `llama_model::cuda::CudaOptions::VARIABLES`). The programs' only reader of these variables.
#[cfg(feature = "cuda")]
pub fn cuda_options() -> Result<llama_model::cuda::CudaOptions, String> {
    llama_model::cuda::CudaOptions::from_vars(|k| std::env::var(k).ok()).map_err(|e| e.to_string())
}
