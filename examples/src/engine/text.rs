//! The streaming engine as a `llama-model` [`TextGenerator`], so the programs drive it like the
//! resident backends.

use gguf::GgufFile;
use llama_model::config::LlamaConfig;
use llama_model::{GenerateError, TextGenerator};

use super::Engine;

impl TextGenerator for Engine {
    fn gguf(&self) -> &GgufFile {
        Engine::gguf(self)
    }
    fn config(&self) -> &LlamaConfig {
        Engine::config(self)
    }
    fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>, GenerateError> {
        Ok(Engine::prefill(self, tokens)?)
    }
    fn decode(&mut self, token: u32) -> Result<Vec<f32>, GenerateError> {
        Ok(Engine::decode(self, token)?)
    }
    fn prefill_argmax(&mut self, tokens: &[u32]) -> Result<u32, GenerateError> {
        Ok(Engine::prefill_argmax(self, tokens)?)
    }
    fn decode_argmax(&mut self, token: u32) -> Result<u32, GenerateError> {
        Ok(Engine::decode_argmax(self, token)?)
    }
    fn n_past(&self) -> usize {
        Engine::n_past(self)
    }
    fn max_context(&self) -> usize {
        Engine::max_context(self)
    }
    fn truncate(&mut self, n: usize) {
        Engine::truncate(self, n);
    }
    fn reset(&mut self) {
        Engine::reset(self);
    }
    fn stats_report(&self) -> Option<String> {
        Some(self.stats().report())
    }
}
