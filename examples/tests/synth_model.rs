//! Runs the built `synth-model` on the tiny shape and reads the file back: tensor names, shapes
//! and types follow llama.cpp's rules, tokenizer metadata equals the vocabulary fixture's, the
//! Llama config parses, every weight decodes to finite values and the llama3 rope factors have
//! their known end points.

use std::path::{Path, PathBuf};
use std::process::Command;

use gguf::{GgmlType, GgufFile};
use llama_model::config::LlamaConfig;

fn vocab() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../llama-model/tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf")
}

fn synth(quant: &str, out: &Path) -> GgufFile {
    let st = Command::new(env!("CARGO_BIN_EXE_synth-model"))
        .args(["--shape", "tiny", "--quant", quant, "--vocab"])
        .arg(vocab())
        .arg("--out")
        .arg(out)
        .status()
        .expect("run synth-model");
    assert!(st.success(), "synth-model --quant {quant} failed");
    GgufFile::open(out).expect("the written file parses")
}

fn ty(f: &GgufFile, name: &str) -> GgmlType {
    f.tensor(name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
        .ggml_type
}

#[test]
fn tiny_q4_k_m_round_trip() {
    let dir = std::env::temp_dir().join(format!("vramless-synth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny-q4_k_m.gguf");
    let f = synth("q4_k_m", &path);
    let v = GgufFile::open(vocab()).unwrap();

    // Tokenizer metadata copied verbatim.
    let mut n_tok_keys = 0;
    for (k, val) in v.metadata().iter() {
        if k.starts_with("tokenizer.") {
            assert_eq!(f.metadata().get(k), Some(val), "{k} differs");
            n_tok_keys += 1;
        }
    }
    assert!(n_tok_keys >= 3, "the fixture has tokenizer keys");
    let n_vocab = v
        .metadata()
        .get_array("tokenizer.ggml.tokens")
        .unwrap()
        .len();

    // Shape: 2 layers, 256 wide, 512 FFN, 4 heads, 2 KV heads (head_dim 64).
    let c = LlamaConfig::from_gguf(&f).expect("config");
    assert_eq!(
        (c.n_layers, c.dim, c.ffn_dim, c.n_heads, c.n_kv_heads),
        (2, 256, 512, 4, 2)
    );
    assert_eq!(c.vocab_size, n_vocab);
    assert!(!c.tied_output);
    assert_eq!(f.tensors().len(), 1 + 1 + 2 * 9 + 2);
    let dims = |n: &str| f.tensor(n).unwrap().dims.clone();
    assert_eq!(dims("token_embd.weight"), vec![256, n_vocab as u64]);
    assert_eq!(dims("blk.1.attn_k.weight"), vec![256, 128]);
    assert_eq!(dims("blk.0.ffn_down.weight"), vec![512, 256]);
    assert_eq!(dims("output.weight"), vec![256, n_vocab as u64]);

    // llama.cpp Q4_K_M: output Q6_K; attn_v/ffn_down Q6_K where use_more_bits(i, 2) (i = 1 only).
    assert_eq!(ty(&f, "output.weight"), GgmlType::Q6_K);
    assert_eq!(ty(&f, "token_embd.weight"), GgmlType::Q4_K);
    assert_eq!(ty(&f, "blk.0.attn_v.weight"), GgmlType::Q4_K);
    assert_eq!(ty(&f, "blk.1.attn_v.weight"), GgmlType::Q6_K);
    assert_eq!(ty(&f, "blk.0.ffn_down.weight"), GgmlType::Q4_K);
    assert_eq!(ty(&f, "blk.1.ffn_down.weight"), GgmlType::Q6_K);
    assert_eq!(ty(&f, "blk.0.attn_q.weight"), GgmlType::Q4_K);
    assert_eq!(ty(&f, "blk.0.attn_norm.weight"), GgmlType::F32);

    // Llama 3.1 rope factors (factor 8, original context 8192): pair 0 (wavelength 2*pi)
    // keeps 1, the slowest pair (wavelength ~2e6 > 8192) gets 8, all in between are in [1, 8].
    let rf = c.rope_freq_factors.clone().expect("rope_freqs.weight");
    assert_eq!(rf.len(), 32);
    assert_eq!(rf[0], 1.0);
    assert_eq!(rf[31], 8.0);
    assert!(rf
        .windows(2)
        .all(|w| w[0] <= w[1] && (1.0..=8.0).contains(&w[1])));

    // Every tensor decodes to finite, modest values.
    for t in f.tensors() {
        let bytes = f.tensor_data(t);
        let mut out = vec![0f32; t.n_elements() as usize];
        gguf::dequantize(t.ggml_type, bytes, &mut out).unwrap();
        assert!(
            out.iter().all(|x| x.is_finite() && x.abs() < 10.0),
            "{} has bad values",
            t.name
        );
        assert!(out.iter().any(|&x| x != 0.0), "{} is all zeros", t.name);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tiny_other_presets_have_their_types() {
    let dir = std::env::temp_dir().join(format!("vramless-synth2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (quant, main, output) in [
        ("q8_0", GgmlType::Q8_0, GgmlType::Q8_0),
        ("q4_0", GgmlType::Q4_0, GgmlType::Q6_K),
        ("q6_k", GgmlType::Q6_K, GgmlType::Q6_K),
        ("f16", GgmlType::F16, GgmlType::F16),
    ] {
        let f = synth(quant, &dir.join(format!("tiny-{quant}.gguf")));
        assert_eq!(ty(&f, "blk.1.ffn_up.weight"), main, "{quant}");
        assert_eq!(ty(&f, "blk.1.attn_v.weight"), main, "{quant}");
        assert_eq!(ty(&f, "output.weight"), output, "{quant}");
        let t = f.tensor("blk.0.ffn_gate.weight").unwrap();
        let mut out = vec![0f32; t.n_elements() as usize];
        gguf::dequantize(t.ggml_type, f.tensor_data(t), &mut out).unwrap();
        assert!(
            out.iter().all(|x| x.is_finite()),
            "{quant}: non-finite weights"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
