//! `LlamaConfig::from_gguf` on synthetic GGUFs written by `gguf::GgufWriter`, and on the real
//! SmolLM2 model when available.

use std::f64::consts::PI;

use gguf::{GgmlType, GgufFile, GgufWriter, Metadata, TensorDecl, Value};
use llama_model::config::{ConfigError, LlamaConfig};
use llama_model::cpu::RopeFreqs;

const DIM: u64 = 256;
const VOCAB: u64 = 4;

fn base_meta(arch: &str) -> Metadata {
    let mut m = Metadata::new();
    m.insert("general.architecture", Value::String(arch.into()));
    m.insert("llama.block_count", Value::U32(2));
    m.insert("llama.embedding_length", Value::U32(DIM as u32));
    m.insert("llama.feed_forward_length", Value::U32(512));
    m.insert("llama.attention.head_count", Value::U32(2));
    m.insert("llama.attention.head_count_kv", Value::U32(1));
    m.insert("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    m.insert("llama.context_length", Value::U32(131072));
    m.insert("llama.vocab_size", Value::U32(VOCAB as u32));
    m
}

/// Writes a GGUF with `token_embd.weight` (F32 zeros) plus `extra` F32 tensors.
fn write(meta: &Metadata, extra: &[(&str, Vec<f32>)]) -> GgufFile {
    let mut decls = vec![TensorDecl::new(
        "token_embd.weight",
        &[DIM, VOCAB],
        GgmlType::F32,
    )];
    for (name, v) in extra {
        decls.push(TensorDecl::new(*name, &[v.len() as u64], GgmlType::F32));
    }
    let mut w = GgufWriter::new(Vec::new(), meta, &decls).unwrap();
    w.write_tensor("token_embd.weight", &vec![0u8; (DIM * VOCAB * 4) as usize])
        .unwrap();
    for (name, v) in extra {
        let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
        w.write_tensor(name, &bytes).unwrap();
    }
    GgufFile::from_bytes(w.finish().unwrap()).unwrap()
}

/// Llama 3.1's published rope scaling rule (factor 8, low_freq_factor 1, high_freq_factor 4,
/// original context 8192), as the divisors stored in `rope_freqs.weight`.
fn llama31_rope_factors(theta: f64, dim: usize) -> Vec<f32> {
    let (factor, low, high, old_ctx) = (8.0, 1.0, 4.0, 8192.0);
    let low_freq_wavelen = old_ctx / low;
    let high_freq_wavelen = old_ctx / high;
    (0..dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf(2.0 * i as f64 / dim as f64);
            let wavelen = 2.0 * PI / freq;
            let new_freq = if wavelen < high_freq_wavelen {
                freq
            } else if wavelen > low_freq_wavelen {
                freq / factor
            } else {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                (1.0 - smooth) * freq / factor + smooth * freq
            };
            (freq / new_freq) as f32
        })
        .collect()
}

#[test]
fn llama31_rope_scaling_factors_are_exposed() {
    let mut meta = base_meta("llama");
    meta.insert("llama.rope.freq_base", Value::F32(500000.0));
    let factors = llama31_rope_factors(500000.0, 128);
    // The known shape of the rule at theta 500000, dim 128: 29 x 1.0, six smooth, 29 x 8.0.
    assert_eq!(factors.iter().filter(|f| **f == 1.0).count(), 29);
    assert_eq!(factors.iter().filter(|f| **f == 8.0).count(), 29);
    assert!(factors[29..35].iter().all(|f| *f > 1.0 && *f < 8.0));
    assert!(factors.windows(2).all(|w| w[0] <= w[1]), "non-decreasing");

    let file = write(&meta, &[("rope_freqs.weight", factors.clone())]);
    let c = LlamaConfig::from_gguf(&file).unwrap();
    assert_eq!(c.head_dim, 128);
    assert_eq!(c.rope_dim, 128, "defaults to the head size");
    assert_eq!(c.rope_base, 500000.0);
    assert_eq!(c.rope_freq_factors.as_deref(), Some(&factors[..]));
    assert!(c.tied_output, "no output.weight: tied");
    assert_eq!((c.n_heads, c.n_kv_heads, c.kv_dim()), (2, 1, 128));
    assert_eq!(c.vocab_size, VOCAB as usize);
    assert_eq!(c.context_length, 131072);

    // The rotary frequencies divide theta^(-2i/d) by the factor.
    let r = RopeFreqs::new(&c);
    for (i, f) in r.inv_freq.iter().enumerate() {
        let want = 500000f64.powf(-2.0 * i as f64 / 128.0) / f64::from(factors[i]);
        assert!((f - want).abs() <= 1e-9 * want, "pair {i}");
    }
}

#[test]
fn defaults_without_optional_keys() {
    let mut meta = base_meta("llama");
    meta.insert("llama.attention.head_count_kv", Value::U32(2));
    let c = LlamaConfig::from_gguf(&write(&meta, &[])).unwrap();
    assert_eq!(c.rope_base, 10000.0);
    assert_eq!(c.rope_freq_factors, None);
    assert_eq!(c.n_kv_heads, 2);
}

#[test]
fn other_architectures_are_named_in_the_error() {
    let err = LlamaConfig::from_gguf(&write(&base_meta("gpt2"), &[])).unwrap_err();
    assert!(matches!(err, ConfigError::Architecture(ref a) if a == "gpt2"));
    assert!(err.to_string().contains("gpt2"), "{err}");
}

#[test]
fn inconsistent_values_are_errors() {
    // Wrong number of rope factors.
    let e = LlamaConfig::from_gguf(&write(
        &base_meta("llama"),
        &[("rope_freqs.weight", vec![1.0; 3])],
    ))
    .unwrap_err();
    assert!(e.to_string().contains("rope_freqs.weight"), "{e}");
    // Heads that do not divide the width.
    let mut m = base_meta("llama");
    m.insert("llama.attention.head_count", Value::U32(3));
    assert!(LlamaConfig::from_gguf(&write(&m, &[])).is_err());
    // KV heads that do not divide the heads.
    let mut m = base_meta("llama");
    m.insert("llama.attention.head_count_kv", Value::U32(3));
    assert!(LlamaConfig::from_gguf(&write(&m, &[])).is_err());
    // Missing required key.
    let mut m = Metadata::new();
    for (k, v) in base_meta("llama").iter() {
        if k != "llama.block_count" {
            m.insert(k, v.clone());
        }
    }
    let e = LlamaConfig::from_gguf(&write(&m, &[])).unwrap_err();
    assert!(e.to_string().contains("llama.block_count"), "{e}");
    // Zero layers.
    let mut m = base_meta("llama");
    m.insert("llama.block_count", Value::U32(0));
    assert!(LlamaConfig::from_gguf(&write(&m, &[])).is_err());
}

#[test]
fn smollm2_config_matches_its_published_shape() {
    let Some(path) = test_support::model_or_skip() else {
        return;
    };
    let c = LlamaConfig::from_gguf(&GgufFile::open(path).unwrap()).unwrap();
    // SmolLM2-135M: 30 layers, 576 wide, 9 heads / 3 KV heads, tied embeddings (fixture README),
    // FFN 1536, vocabulary 49152, rope theta 100000, context 8192 (its config.json).
    assert_eq!(
        (c.n_layers, c.dim, c.n_heads, c.n_kv_heads),
        (30, 576, 9, 3)
    );
    assert_eq!((c.ffn_dim, c.vocab_size, c.head_dim), (1536, 49152, 64));
    assert!(c.tied_output);
    assert_eq!(c.rope_base, 100000.0);
    assert_eq!(c.context_length, 8192);
    assert_eq!(c.rope_freq_factors, None);
}
