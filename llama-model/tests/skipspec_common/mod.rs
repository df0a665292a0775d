//! Shared helpers of the skip / perplexity / speculative tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

#[path = "../default_model/mod.rs"]
mod default_model;
pub use default_model::model_path;

use llama_model::cpu::Model;

/// Opens the default model, or prints loudly why the test is skipped.
pub fn open_model() -> Option<(Model, PathBuf)> {
    let Some(path) = model_path() else {
        eprintln!(
            "\n*** SKIPPED: the SmolLM2 model is unavailable (set VRAMLESS_MODEL or let \
             scripts/fetch-model.sh download it) ***\n"
        );
        return None;
    };
    Some((Model::open(&path).expect("open the model"), path))
}

/// The public-domain text shipped for perplexity and calibration.
pub fn shipped_text() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/text/genesis-kjv-1-4.txt");
    std::fs::read_to_string(p).expect("read the shipped text")
}
