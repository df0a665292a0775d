//! Reads real GGUF files and compares every header field with a dump made by the reference
//! `gguf` Python package (llama.cpp's gguf-py; see `fixtures/dump_reference.py`).

use std::path::{Path, PathBuf};

use gguf::{GgufFile, MetadataValueType, Value};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn vocab_fixture() -> PathBuf {
    repo_root().join("llama-model/tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf")
}

fn py_type(name: &str) -> MetadataValueType {
    use MetadataValueType as T;
    match name {
        "UINT8" => T::U8,
        "INT8" => T::I8,
        "UINT16" => T::U16,
        "INT16" => T::I16,
        "UINT32" => T::U32,
        "INT32" => T::I32,
        "FLOAT32" => T::F32,
        "BOOL" => T::Bool,
        "STRING" => T::String,
        "ARRAY" => T::Array,
        "UINT64" => T::U64,
        "INT64" => T::I64,
        "FLOAT64" => T::F64,
        other => panic!("unknown type {other} in reference dump"),
    }
}

/// Compares `file` with the reference dump line by line.
fn check_against_reference(file: &GgufFile, reference: &str) {
    let mut kvs = file.metadata().iter();
    let mut tensors = file.tensors().iter();
    for line in reference.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| f[i].parse::<u64>().unwrap();
        match f[0] {
            "version" => assert_eq!(file.version() as u64, num(1)),
            "tensor_count" => assert_eq!(file.tensors().len() as u64, num(1)),
            "kv_count" => assert_eq!(file.metadata().len() as u64, num(1)),
            "alignment" => assert_eq!(file.alignment(), num(1)),
            "data_offset" => assert_eq!(file.data_offset(), num(1)),
            "kv" => {
                let (key, value) = kvs.next().expect("fewer keys than the reference");
                assert_eq!(key, f[1]);
                assert_eq!(value.value_type(), py_type(f[2]), "type of {key}");
                if let Value::Array(a) = value {
                    assert_eq!(a.len() as u64, num(3), "length of {key}");
                }
            }
            "tensor" => {
                let t = tensors.next().expect("fewer tensors than the reference");
                assert_eq!(t.name, f[1]);
                assert_eq!(t.ggml_type.name(), f[2], "type of {}", t.name);
                let dims: Vec<u64> = f[3].split(',').map(|d| d.parse().unwrap()).collect();
                assert_eq!(t.dims, dims, "dims of {}", t.name);
                assert_eq!(t.abs_offset, num(4), "offset of {}", t.name);
                assert_eq!(t.n_bytes, num(5), "size of {}", t.name);
                assert_eq!(file.tensor_data(t).len() as u64, t.n_bytes);
            }
            other => panic!("bad reference line kind {other}"),
        }
    }
    assert!(kvs.next().is_none(), "more keys than the reference");
    assert!(tensors.next().is_none(), "more tensors than the reference");
}

#[test]
fn default_model_matches_reference_dump() {
    let Some(path) = test_support::model_or_skip() else {
        return;
    };
    let file = GgufFile::open(&path).unwrap();
    check_against_reference(
        &file,
        include_str!("fixtures/smollm2-135m-q4_1.reference.txt"),
    );
    assert_eq!(file.tensors().len(), 272);

    let m = file.metadata();
    // Values published for SmolLM2-135M (fixtures README): 30 layers, 576 wide, 9/3 heads.
    assert_eq!(m.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(m.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(m.get_u64("llama.embedding_length").unwrap(), 576);
    assert_eq!(m.get_i32("llama.attention.head_count").unwrap(), 9);
    assert_eq!(m.get_u32("llama.attention.head_count_kv").unwrap(), 3);
    assert!(!m.get_bool("tokenizer.ggml.add_bos_token").unwrap());
    assert_eq!(
        m.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
        49152
    );
    assert_eq!(
        m.get_i32_array("tokenizer.ggml.token_type").unwrap().len(),
        49152
    );
    assert!(m.get_f32("llama.rope.freq_base").unwrap() > 0.0);
    assert_eq!(m.opt_str("no.such.key").unwrap(), None);

    // Layers: 30 blocks of 9 tensors, each one contiguous byte range; the rest are non-layer.
    assert_eq!(file.block_count(), 30);
    let mut layer_bytes = 0;
    for i in 0..30 {
        let ts = file.layer_tensors(i);
        assert_eq!(ts.len(), 9, "layer {i}");
        let span = file.layer_span(i);
        assert_eq!(span.len(), 1, "layer {i} should be one range: {span:?}");
        let lo = ts.iter().map(|t| t.abs_offset).min().unwrap();
        let hi = ts.iter().map(|t| t.abs_offset + t.n_bytes).max().unwrap();
        assert_eq!(span[0], lo..hi);
        layer_bytes += ts.iter().map(|t| t.n_bytes).sum::<u64>();
    }
    let non_layer: Vec<&str> = file
        .non_layer_tensors()
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(non_layer.len(), 272 - 270);
    assert!(non_layer.contains(&"token_embd.weight"));
    let all: u64 = file.tensors().iter().map(|t| t.n_bytes).sum();
    let rest: u64 = file.non_layer_tensors().iter().map(|t| t.n_bytes).sum();
    assert_eq!(layer_bytes + rest, all);

    // The last tensor ends at the end of the file (ggml pads only between tensors here).
    let end = file
        .tensors()
        .iter()
        .map(|t| t.byte_range().end)
        .max()
        .unwrap();
    assert!(end <= file.as_bytes().len() as u64);
    assert_eq!(
        file.tensor_bytes("token_embd.weight").unwrap().len(),
        30081024
    );
    assert!(file.tensor_bytes("output.weight").is_err());
}

#[test]
fn llama3_vocab_matches_reference_dump() {
    let path = test_support::fixture(vocab_fixture());
    let file = GgufFile::open(&path).unwrap();
    check_against_reference(
        &file,
        include_str!("fixtures/ggml-vocab-llama-bpe.reference.txt"),
    );
    let m = file.metadata();
    assert_eq!(
        m.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
        128256
    );
    assert_eq!(
        m.get_str_array("tokenizer.ggml.merges").unwrap().len(),
        280147
    );
    assert_eq!(m.get_str("tokenizer.ggml.pre").unwrap(), "llama-bpe");
    assert_eq!(file.block_count(), 0);
    // Parsing from a slice gives the same header as the memory map.
    let copy = GgufFile::parse(file.as_bytes()).unwrap();
    assert_eq!(copy.header(), file.header());
}

#[test]
fn quant_fixtures_match_reference_dumps() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    const TYPES: [&str; 12] = [
        "BF16", "F16", "Q2_K", "Q3_K", "Q4_0", "Q4_1", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K",
        "Q8_0",
    ];
    // Every fixture in the folder is one of TYPES (a new one must be added here to be checked).
    // Provenance and regeneration commands of the fixtures.
    test_support::fixture(dir.join("README.md"));
    test_support::fixture(dir.join("quants/README.md"));
    let on_disk = std::fs::read_dir(test_support::fixture(dir.join("quants")))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "gguf")
        })
        .count();
    assert_eq!(on_disk, TYPES.len(), "quants/ holds {on_disk} GGUFs");
    let mut checked = 0;
    for ty in TYPES {
        let path = test_support::fixture(dir.join(format!("quants/{ty}.gguf")));
        let reference = std::fs::read_to_string(test_support::fixture(
            dir.join(format!("quant-references/{ty}.reference.txt")),
        ))
        .unwrap();
        let file = GgufFile::open(&path).unwrap();
        check_against_reference(&file, &reference);
        assert_eq!(
            file.tensor("ffn_down.quantized").unwrap().ggml_type.name(),
            ty
        );
        checked += 1;
    }
    assert_eq!(checked, TYPES.len());
}
