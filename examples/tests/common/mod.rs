//! Shared by the engine tests: the default model (or a loud skip), the prompt, and the greedy
//! reference tokens of llama-model's resident CPU model (itself checked against llama.cpp).

use std::path::Path;

use llama_model::cpu::Model;
use llama_model::tokenizer::Tokenizer;
use vramless_engine::engine::argmax;

/// The prompt every engine test feeds.
pub const PROMPT: &str = "The capital of France is";

/// The default model's path, or a loud skip of the calling test (a failure under CI); see
/// `test_support::model_or_skip`.
macro_rules! model_or_skip {
    () => {
        match test_support::model_or_skip() {
            Some(p) => p,
            None => return,
        }
    };
}

/// [`PROMPT`] encoded as llama.cpp would (BOS per the model's metadata).
pub fn prompt(model: &Path) -> Vec<u32> {
    let m = Model::open(model).unwrap();
    let tok = Tokenizer::from_gguf(m.gguf().metadata()).unwrap();
    tok.encode_prompt(PROMPT).unwrap()
}

/// The first `n` greedy tokens of llama-model's resident CPU model after `prompt`.
pub fn reference(model: &Path, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut m = Model::open(model).unwrap();
    let mut out = vec![argmax(&m.prefill(prompt).unwrap())];
    while out.len() < n {
        let next = argmax(&m.decode(*out.last().unwrap()).unwrap());
        out.push(next);
    }
    out
}
