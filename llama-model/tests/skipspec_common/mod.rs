//! Shared helpers of the skip / perplexity / speculative tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use llama_model::cpu::Model;

/// The default model path: $VRAMLESS_MODEL, else what scripts/fetch-model.sh prints.
pub fn model_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("VRAMLESS_MODEL") {
        return Some(PathBuf::from(p));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-model.sh");
    let out = Command::new("bash").arg(&script).output().ok()?;
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    p.exists().then_some(p)
}

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
