//! Llama 3.x model: config, tokenizer, chat templates, sampler and the per-layer forward pass.
//!
//! The forward pass never owns its weights: callers hand it [`LayerWeights`]-style views
//! into buffers they own (resident or freshly streamed).

// `unsafe` only in `sys` (SIMD kernels, CUDA/NVRTC FFI), each block with its SAFETY comment.
#![deny(unsafe_code)]

pub mod chat;
pub mod config;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod generation;
pub mod paged;
pub mod perplexity;
pub mod sampler;
pub mod skip;
pub mod speculative;
#[allow(unsafe_code)]
mod sys;
pub mod tokenizer;

pub use chat::{ChatMessage, ChatTemplate, Conversation};
pub use generation::{GenerateError, TextGenerator, BATCHED_MIN_TOKENS, PREFILL_CHUNK};
pub use tokenizer::{StreamDecoder, Tokenizer, TokenizerError};
