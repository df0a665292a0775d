//! Llama 3.x model: config, tokenizer, chat templates, sampler and the per-layer forward pass.
//!
//! The forward pass never owns its weights: callers hand it [`LayerWeights`]-style views
//! into buffers they own (resident or freshly streamed).

pub mod chat;
pub mod config;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod paged;
pub mod perplexity;
pub mod sampler;
pub mod skip;
pub mod speculative;
mod sys;
pub mod tokenizer;

pub use chat::{ChatMessage, ChatTemplate, Conversation};
pub use tokenizer::{StreamDecoder, Tokenizer, TokenizerError};
