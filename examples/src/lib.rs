//! The engine that composes the vramless crates; shared by the example binaries.

pub mod default_model;
pub mod engine;

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
