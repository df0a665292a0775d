//! Runs the built `bench-decode` binary on the CPU with the default model and checks its JSON
//! line: positive figures, and weight bytes per token equal to a sum computed here from the
//! GGUF's tensor table (every layer tensor `blk.*`, `output_norm.weight` and the LM head:
//! `output.weight`, or `token_embd.weight` when the file has no separate output matrix), each
//! tensor's size from its type's block layout and element count.

use std::process::Command;

use gguf::GgufFile;
use serde_json::Value;

/// Bytes of every tensor one decode step reads, from the element counts and block layouts.
fn expected_weight_bytes(file: &GgufFile) -> u64 {
    let has_output = file.tensor("output.weight").is_some();
    file.tensors()
        .iter()
        .filter(|t| {
            t.name.starts_with("blk.")
                || t.name == "output_norm.weight"
                || t.name == "output.weight"
                || (!has_output && t.name == "token_embd.weight")
        })
        .map(|t| {
            t.ggml_type
                .bytes_for(t.n_elements())
                .expect("known tensor type")
        })
        .sum()
}

#[test]
fn cpu_run_reports_positive_figures_and_the_weight_bytes_of_the_file() {
    let Some(model) = test_support::model_or_skip() else {
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_bench-decode"))
        .args([
            "--device",
            "cpu",
            "--prompt-len",
            "8",
            "--gen",
            "4",
            "--model",
        ])
        .arg(&model)
        .output()
        .expect("run bench-decode");
    assert!(
        out.status.success(),
        "bench-decode failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8 stdout");
    let line = text.lines().last().expect("a JSON line on stdout");
    let v: Value = serde_json::from_str(line).expect("the last stdout line is JSON");
    for key in [
        "bandwidth_gb_s",
        "prefill_tok_s",
        "decode_tok_s",
        "decode_gb_s",
        "bandwidth_fraction",
    ] {
        let x = v[key].as_f64().unwrap_or(f64::NAN);
        assert!(x.is_finite() && x > 0.0, "{key} = {x} in {line}");
    }
    assert_eq!(v["prompt_len"], 8);
    assert_eq!(v["gen"], 4);
    let file = GgufFile::open(&model).expect("open the model");
    let want = expected_weight_bytes(&file);
    assert!(want > 0);
    assert_eq!(v["weight_bytes_per_token"].as_u64(), Some(want), "{line}");
}
