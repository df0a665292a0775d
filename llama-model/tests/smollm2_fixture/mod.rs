//! llama.cpp's reference outputs for SmolLM2-135M-Instruct (`tests/fixtures/smollm2/`), shared by
//! the CPU and GPU forward tests, and the logit comparison they use.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// One fixture prompt: llama.cpp's prompt tokens, greedy steps and logits after the prompt.
pub struct Fixture {
    /// Prompt token ids (special tokens parsed, no BOS).
    pub prompt_tokens: Vec<u32>,
    /// (token, reference top-2 margin) per generated step.
    pub steps: Vec<(u32, f32)>,
    /// llama.cpp's ten highest `(token, logit)` before each generated step (logits printed
    /// with six decimals).
    pub tops: Vec<Vec<(u32, f32)>>,
    /// The logits after the last prompt token.
    pub logits: Vec<f32>,
}

/// The fixture folder: `VRAMLESS_SMOLLM2_FIXTURES` when set (a test binary run on another
/// machine, e.g. the GPU host), else the crate's `tests/fixtures/smollm2`.
pub fn fixture_dir() -> PathBuf {
    std::env::var_os("VRAMLESS_SMOLLM2_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2"))
}

/// Reads fixture `name` (`<name>.json` and `<name>.logits.f32`).
pub fn fixture(name: &str) -> Fixture {
    // Part of the repository (or carried with the test binary): missing fails, never skips.
    let dir = test_support::fixture(fixture_dir());
    // Provenance and regeneration: smollm2/README.md.
    test_support::fixture(dir.join("README.md"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap()).unwrap();
    let prompt_tokens = json["prompt_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let steps = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let top = s["top"].as_array().unwrap();
            let l = |i: usize| top[i][1].as_f64().unwrap() as f32;
            (s["token"].as_u64().unwrap() as u32, l(0) - l(1))
        })
        .collect();
    let tops = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["top"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_u64().unwrap() as u32, p[1].as_f64().unwrap() as f32))
                .collect()
        })
        .collect();
    let bytes = std::fs::read(dir.join(format!("{name}.logits.f32"))).unwrap();
    let logits = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Fixture {
        prompt_tokens,
        steps,
        tops,
        logits,
    }
}

/// (cosine similarity, max abs difference); NaN anywhere gives a NaN cosine (never passes).
pub fn compare(got: &[f32], want: &[f32]) -> (f64, f32) {
    assert_eq!(got.len(), want.len(), "logit count");
    let (mut dot, mut na, mut nb, mut maxd) = (0f64, 0f64, 0f64, 0f32);
    for (a, b) in got.iter().zip(want) {
        dot += f64::from(*a) * f64::from(*b);
        na += f64::from(*a) * f64::from(*a);
        nb += f64::from(*b) * f64::from(*b);
        let d = (a - b).abs();
        maxd = if d.is_nan() { f32::NAN } else { maxd.max(d) };
    }
    (dot / (na.sqrt() * nb.sqrt()), maxd)
}
