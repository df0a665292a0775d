//! llama.cpp's own tokenizer tests, line by line: the `.inp` inputs through the real Llama 3
//! vocabulary (expected `.out`) and through the SmolLM2 vocabulary of the default model
//! (expected `smollm2-135m.vocabtest.out`), no BOS, special tokens not parsed.

mod tokenizer_common;

use llama_model::tokenizer::PreTokenizer;
use tokenizer_common::*;

#[test]
fn inp_file_has_the_46_llama_cpp_inputs() {
    let inp = std::fs::read_to_string(fixture("vocab/ggml-vocab-llama-bpe.gguf.inp")).unwrap();
    let inputs = vocab_test_inputs(&inp);
    assert_eq!(inputs.len(), 46);
    // Spot checks straight from the file: the empty input, whitespace-only inputs, the
    // two-line input.
    assert_eq!(inputs[0], "ied 4 ½ months");
    assert_eq!(inputs[2], "");
    assert_eq!(inputs[3], " ");
    assert_eq!(inputs[7], "\n");
    assert_eq!(inputs[10], "\t\n");
    assert_eq!(inputs[28], "    Hello\n    Hello");
}

#[test]
fn llama3_vocab_matches_llama_cpp() {
    let tok = llama3_vocab();
    assert_eq!(tok.vocab_size(), 128_256);
    assert_eq!(tok.pre_tokenizer(), PreTokenizer::Llama3);
    let n = check_vocab_test(&tok, "vocab/ggml-vocab-llama-bpe.gguf.out");
    eprintln!("Llama 3 vocab: all {n} llama.cpp lines equal");
}

#[test]
fn smollm2_vocab_matches_llama_cpp() {
    let Some(file) = smollm2_file() else {
        return;
    };
    let tok =
        llama_model::tokenizer::Tokenizer::from_gguf(file.metadata()).expect("SmolLM2 tokenizer");
    assert_eq!(tok.vocab_size(), 49_152);
    assert_eq!(tok.pre_tokenizer(), PreTokenizer::SmolLm);
    let n = check_vocab_test(&tok, "vocab/smollm2-135m.vocabtest.out");
    eprintln!("SmolLM2 vocab: all {n} llama.cpp lines equal");
}
