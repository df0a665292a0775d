//! Runs the built `gguf-info` binary on real files and compares its output with header dumps
//! made by the reference `gguf` Python package (gguf/tests/fixtures/*.reference.txt).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn gguf_info(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gguf-info"))
        .args(args)
        .output()
        .expect("run gguf-info")
}

fn json_of(path: &Path) -> Value {
    let out = gguf_info(&[path.as_os_str(), "--json".as_ref()]);
    assert!(
        out.status.success(),
        "gguf-info --json {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.trim_end().lines().count(),
        1,
        "one JSON object on one line"
    );
    serde_json::from_str(&text).unwrap()
}

/// Checks the JSON against a reference dump (see gguf/tests/fixtures/dump_reference.py).
fn check_json(json: &Value, reference: &str) {
    let tensors = json["tensors"].as_array().unwrap();
    let metadata = json["metadata"].as_object().unwrap();
    let mut ti = tensors.iter();
    let mut keys = metadata.keys();
    for line in reference.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f[0] {
            "version" => assert_eq!(json["version"].to_string(), f[1]),
            "tensor_count" => {
                assert_eq!(json["tensor_count"].to_string(), f[1]);
                assert_eq!(tensors.len().to_string(), f[1]);
            }
            "kv_count" => assert_eq!(metadata.len().to_string(), f[1]),
            "alignment" => assert_eq!(json["alignment"].to_string(), f[1]),
            "data_offset" => assert_eq!(json["data_offset"].to_string(), f[1]),
            "kv" => {
                // serde_json's map keeps keys sorted unless preserve_order: compare as a set.
                assert!(metadata.contains_key(f[1]), "missing key {}", f[1]);
                keys.next();
                if f[2] == "ARRAY" {
                    assert_eq!(metadata[f[1]].as_array().unwrap().len().to_string(), f[3]);
                }
            }
            "tensor" => {
                let t = ti.next().expect("fewer tensors than the reference");
                assert_eq!(t["name"], f[1]);
                assert_eq!(t["type"], f[2]);
                let dims: Vec<String> = t["dims"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.to_string())
                    .collect();
                assert_eq!(dims.join(","), f[3], "dims of {}", f[1]);
                assert_eq!(t["abs_offset"].to_string(), f[4], "offset of {}", f[1]);
                let rel = t["abs_offset"].as_u64().unwrap() - json["data_offset"].as_u64().unwrap();
                assert_eq!(t["offset"].as_u64().unwrap(), rel);
                assert_eq!(t["bytes"].to_string(), f[5], "bytes of {}", f[1]);
            }
            other => panic!("bad reference line {other}"),
        }
    }
    assert!(ti.next().is_none(), "more tensors than the reference");
    assert!(keys.next().is_none(), "more keys than the reference");
}

fn vocab() -> PathBuf {
    test_support::fixture(repo().join("llama-model/tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf"))
}

#[test]
fn default_model_text_and_json() {
    let Some(model) = test_support::model_or_skip() else {
        return;
    };
    let json = json_of(&model);
    check_json(
        &json,
        include_str!("../../gguf/tests/fixtures/smollm2-135m-q4_1.reference.txt"),
    );
    assert_eq!(json["tensor_count"], 272);
    assert_eq!(json["metadata"]["llama.block_count"], 30);
    assert_eq!(
        json["metadata"]["tokenizer.ggml.tokens"]
            .as_array()
            .unwrap()
            .len(),
        49152
    );

    let out = gguf_info(&[model.as_os_str()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("GGUF version 3, 33 metadata keys, 272 tensors"),
        "{text}"
    );
    // The 49152-token array is summarised, not printed in full.
    let tokens_line = text
        .lines()
        .find(|l| l.contains("tokenizer.ggml.tokens"))
        .unwrap();
    assert!(tokens_line.contains("(49152 elements)") && tokens_line.len() < 1000);
    // One per-layer line for each of the 30 layers, each with 9 tensors.
    let layer_lines = text
        .lines()
        .filter(|l| l.trim_start().starts_with("blk.") && l.contains(" tensors, "))
        .count();
    assert_eq!(layer_lines, 30);
    assert!(text.contains("bytes per type:"));
    for ty in ["Q4_1", "Q8_0", "F32"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(ty) && l.contains("tensors")),
            "{ty}"
        );
    }
}

#[test]
fn llama3_vocab_json() {
    let path = vocab();
    assert!(
        path.exists(),
        "{} is part of the repository",
        path.display()
    );
    let json = json_of(&path);
    check_json(
        &json,
        include_str!("../../gguf/tests/fixtures/ggml-vocab-llama-bpe.reference.txt"),
    );
    assert_eq!(
        json["metadata"]["tokenizer.ggml.tokens"]
            .as_array()
            .unwrap()
            .len(),
        128256
    );
    assert_eq!(
        json["metadata"]["tokenizer.ggml.merges"]
            .as_array()
            .unwrap()
            .len(),
        280147
    );
    assert_eq!(json["metadata"]["tokenizer.ggml.pre"], "llama-bpe");
    let out = gguf_info(&[path.as_os_str()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("(128256 elements)") && text.contains("(280147 elements)"));
}

#[test]
fn every_quant_fixture() {
    let dir = repo().join("gguf/tests/fixtures");
    let mut n = 0;
    for entry in std::fs::read_dir(dir.join("quants")).expect("gguf/tests/fixtures/quants") {
        let path = entry.unwrap().path();
        if path.extension().map_or(true, |e| e != "gguf") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let reference =
            std::fs::read_to_string(dir.join(format!("quant-references/{stem}.reference.txt")))
                .unwrap();
        check_json(&json_of(&path), &reference);
        let out = gguf_info(&[path.as_os_str()]);
        assert!(out.status.success(), "{}", path.display());
        n += 1;
    }
    assert_eq!(n, 12, "the twelve quant fixtures");
}

fn assert_one_line_failure(out: &Output) {
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "one stderr line: {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn invalid_files_fail_with_one_line() {
    let bytes = std::fs::read(vocab()).unwrap();
    let dir = std::env::temp_dir().join(format!("gguf-info-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, data) in [
        ("truncated.gguf", &bytes[..bytes.len() / 2]),
        ("empty.gguf", &[][..]),
        ("not-gguf.gguf", &b"hello world, not a model"[..]),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        let out = gguf_info(&[p.as_os_str()]);
        assert_one_line_failure(&out);
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(name), "names the file: {err}");
    }
    let truncated_err =
        String::from_utf8(gguf_info(&[dir.join("truncated.gguf").as_os_str()]).stderr).unwrap();
    assert!(
        truncated_err.contains("truncated") || truncated_err.contains("cannot fit"),
        "{truncated_err}"
    );
    assert_one_line_failure(&gguf_info(&[dir.join("missing.gguf").as_os_str()]));
    std::fs::remove_dir_all(&dir).unwrap();
}
