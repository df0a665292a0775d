//! Runs the built `tokenize` binary: `--vocab-test` on the real Llama 3 vocabulary must print
//! llama.cpp's expected `.out` file byte for byte.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vocab_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../llama-model/tests/fixtures/vocab")
}

fn tokenize(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tokenize"))
        .args(args)
        .output()
        .expect("run tokenize")
}

#[test]
fn vocab_test_output_equals_llama_cpp() {
    let dir = vocab_dir();
    let model = dir.join("ggml-vocab-llama-bpe.gguf");
    let inp = dir.join("ggml-vocab-llama-bpe.gguf.inp");
    let out = tokenize(&[
        "--model".as_ref(),
        model.as_os_str(),
        "--vocab-test".as_ref(),
        inp.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = std::fs::read_to_string(dir.join("ggml-vocab-llama-bpe.gguf.out")).unwrap();
    let got = String::from_utf8(out.stdout).unwrap();
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "line {i}");
    }
    assert_eq!(got, want);
}

#[test]
fn text_mode_prints_ids_and_pieces() {
    let model = vocab_dir().join("ggml-vocab-llama-bpe.gguf");
    // llama.cpp's .out: " Hello world" -> 22691 1917; BOS is 128000 in this vocabulary.
    let out = tokenize(&[
        "--model".as_ref(),
        model.as_os_str(),
        "--text".as_ref(),
        " Hello world".as_ref(),
        "--bos".as_ref(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids, ["128000", "22691", "1917", "3"]);
    assert!(
        text.contains("\"ĠHello\"") && text.contains("\" Hello\""),
        "{text}"
    );
    assert!(text.ends_with("3 tokens\n"));
    // Special tokens: one id with --parse-special, several without.
    let special = |parse: bool| {
        let mut args = vec![
            "--model".as_ref(),
            model.as_os_str(),
            "--text".as_ref(),
            "<|eot_id|>".as_ref(),
        ];
        if parse {
            args.push("--parse-special".as_ref());
        }
        String::from_utf8(tokenize(&args).stdout).unwrap()
    };
    assert!(special(true).ends_with("1 tokens\n"));
    assert!(!special(false).ends_with("1 tokens\n"));
}

#[test]
fn errors_and_help() {
    let out = tokenize(&[
        "--model".as_ref(),
        "/nonexistent.gguf".as_ref(),
        "--text".as_ref(),
        "x".as_ref(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.gguf"));
    // A GGUF without a tokenizer.
    let quant =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../gguf/tests/fixtures/quants/Q8_0.gguf");
    if quant.exists() {
        let out = tokenize(&[
            "--model".as_ref(),
            quant.as_os_str(),
            "--text".as_ref(),
            "x".as_ref(),
        ]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("tokenizer.ggml.model"));
    }
    let help = String::from_utf8(tokenize(&["--help".as_ref()]).stdout).unwrap();
    assert!(
        help.contains("--vocab-test") && help.contains("__ggml_vocab_test__"),
        "{help}"
    );
    assert!(
        help.contains("--parse-special") && help.contains("Examples:"),
        "{help}"
    );
}
