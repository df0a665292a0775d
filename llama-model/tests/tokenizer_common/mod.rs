//! Shared helpers for the tokenizer and chat tests: fixture paths, the default model, and the
//! llama.cpp vocab-test file format.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use llama_model::tokenizer::Tokenizer;

/// `tests/fixtures/<rel>` (part of the repository: a missing one fails the test; provenance
/// in the README of its folder, checked here too).
pub fn fixture(rel: &str) -> PathBuf {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    if let Some(folder) = Path::new(rel).parent() {
        test_support::fixture(base.join(folder).join("README.md"));
    }
    test_support::fixture(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(rel),
    )
}

/// The Llama 3 vocabulary (llama.cpp's `ggml-vocab-llama-bpe.gguf`).
pub fn llama3_vocab() -> Tokenizer {
    let file = gguf::GgufFile::open(fixture("vocab/ggml-vocab-llama-bpe.gguf"))
        .expect("open the Llama 3 vocab GGUF");
    Tokenizer::from_gguf(file.metadata()).expect("build the Llama 3 tokenizer")
}

/// The default model's GGUF (SmolLM2-135M-Instruct), or `None` after a loud skip (a failure
/// under CI).
pub fn smollm2_file() -> Option<gguf::GgufFile> {
    let p = test_support::model_or_skip()?;
    Some(gguf::GgufFile::open(&p).expect("open the SmolLM2 GGUF"))
}

/// The inputs of a llama.cpp `.inp` vocab-test file: texts separated by the line
/// `__ggml_vocab_test__`, i.e. split at "\n__ggml_vocab_test__\n"; the file ends with a
/// separator, so the empty piece after the last one is not an input.
pub fn vocab_test_inputs(text: &str) -> Vec<String> {
    let mut parts: Vec<String> = text
        .split("\n__ggml_vocab_test__\n")
        .map(str::to_owned)
        .collect();
    if parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    parts
}

/// Parses a `.out` line (" id id id") into ids.
pub fn parse_out_line(line: &str) -> Vec<u32> {
    line.split_whitespace()
        .map(|t| {
            t.parse()
                .unwrap_or_else(|_| panic!("bad id {t:?} in expected output"))
        })
        .collect()
}

/// Tokenizes every input (no BOS, special tokens not parsed) and compares with the expected
/// `.out` lines; returns the number of lines checked, panicking with a diff on mismatch.
pub fn check_vocab_test(tok: &Tokenizer, out_file: &str) -> usize {
    let inp =
        std::fs::read_to_string(fixture("vocab/ggml-vocab-llama-bpe.gguf.inp")).expect("read .inp");
    let out = std::fs::read_to_string(fixture(out_file)).expect("read expected output");
    let inputs = vocab_test_inputs(&inp);
    let expected: Vec<&str> = out.lines().collect();
    assert_eq!(
        inputs.len(),
        expected.len(),
        "{out_file}: one output line per input"
    );
    let mut failures = Vec::new();
    for (i, (text, line)) in inputs.iter().zip(&expected).enumerate() {
        let want = parse_out_line(line);
        let got = tok.encode(text, false).expect("encode");
        if got != want {
            let pieces: Vec<String> = got
                .iter()
                .map(|&id| format!("{:?}", tok.token_text(id).unwrap_or("?")))
                .collect();
            failures.push(format!(
                "input {i} {text:?}\n  expected {want:?}\n  got      {got:?}\n  pieces   {}",
                pieces.join(" ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{out_file}: {} of {} lines differ from llama.cpp:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
    inputs.len()
}
