//! Tokenizer speed on the real Llama 3 vocabulary (llama.cpp's `ggml-vocab-llama-bpe.gguf`):
//! building the tokenizer from GGUF metadata (128,256 tokens, 280,147 merges), and encoding
//! llama.cpp's vocab-test inputs (1.9 kB of mixed scripts, emoji, digits and whitespace) with a
//! cold word cache (every word merged) and a warm one.

use std::path::{Path, PathBuf};

use criterion::{black_box, Criterion, Throughput};
use llama_model::tokenizer::Tokenizer;

fn vocab_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../llama-model/tests/fixtures/vocab")
}

fn load(file: &gguf::GgufFile) -> Tokenizer {
    Tokenizer::from_gguf(file.metadata()).expect("Llama 3 tokenizer")
}

fn bench_tokenizer(c: &mut Criterion) {
    let path = vocab_dir().join("ggml-vocab-llama-bpe.gguf");
    let inp = vocab_dir().join("ggml-vocab-llama-bpe.gguf.inp");
    let (Ok(file), Ok(sample)) = (gguf::GgufFile::open(&path), std::fs::read_to_string(&inp))
    else {
        eprintln!(
            "*** SKIPPED tokenizer bench: {} or its .inp is missing ***",
            path.display()
        );
        return;
    };

    let mut group = c.benchmark_group("tokenizer_load");
    group.sample_size(10);
    group.bench_function("llama3_vocab_from_gguf_metadata", |b| {
        b.iter(|| black_box(load(&file)))
    });
    group.bench_function("llama3_vocab_open_and_build", |b| {
        b.iter(|| {
            let f = gguf::GgufFile::open(&path).expect("open");
            black_box(load(&f))
        })
    });
    group.finish();

    let tok = load(&file);
    let text = sample.replace("\n__ggml_vocab_test__\n", "\n");
    let mut group = c.benchmark_group("tokenizer_encode");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("llama3_cold_cache", |b| {
        b.iter(|| {
            tok.clear_cache();
            black_box(tok.encode(&text, false).expect("encode"))
        })
    });
    group.bench_function("llama3_warm_cache", |b| {
        b.iter(|| black_box(tok.encode(&text, false).expect("encode")))
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_tokenizer(&mut c);
    c.final_summary();
}
