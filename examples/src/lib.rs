//! The engine that composes the vramless crates, and the OpenAI-compatible server over it;
//! shared by the example binaries.

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
