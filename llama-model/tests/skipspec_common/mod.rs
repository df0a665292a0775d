//! Shared helpers of the skip / perplexity / speculative tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use llama_model::cpu::Model;

/// Opens the default model, or skips loudly (fails under CI) when it is unavailable.
pub fn open_model() -> Option<(Model, PathBuf)> {
    let path = test_support::model_or_skip()?;
    Some((Model::open(&path).expect("open the model"), path))
}

/// The public-domain text shipped for perplexity and calibration.
pub fn shipped_text() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/text");
    test_support::fixture(dir.join("README.md"));
    let p = test_support::fixture(dir.join("genesis-kjv-1-4.txt"));
    std::fs::read_to_string(p).expect("read the shipped text")
}
