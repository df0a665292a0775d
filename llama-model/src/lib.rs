//! Llama 3.x model: config, tokenizer, chat templates, sampler and the per-layer forward pass.
//!
//! The forward pass never owns its weights: callers hand it [`cpu::LayerWeights`]-style views
//! into buffers they own (resident or freshly streamed).

// `x % n == 0` reads like the kernels' index arithmetic it mirrors; `is_multiple_of` (Rust 1.87,
// this crate's minimum) is not required.
#![allow(clippy::manual_is_multiple_of)]
// `unsafe` only in `sys` (SIMD kernels, CUDA/NVRTC FFI), each block with its SAFETY comment.
#![deny(unsafe_code)]

pub mod chat;
pub mod config;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod generation;
pub mod paged;
mod paged_step;
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

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
