//! Errors of the CPU forward pass.

use gguf::GgmlType;

/// An error in the CPU forward pass or in the weights handed to it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// A weight tensor has a shape the layer cannot use.
    #[error("weight `{name}`: {reason}")]
    Shape {
        /// Which weight.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A weight tensor has a ggml type the CPU backend cannot decode.
    #[error("weight `{name}` has ggml type {ty}, which the CPU backend cannot decode")]
    UnsupportedType {
        /// Which weight.
        name: String,
        /// Its type.
        ty: GgmlType,
    },
    /// A weight tensor is missing from the model file.
    #[error("tensor `{0}` is missing from the model file")]
    MissingTensor(String),
    /// A token id is outside the vocabulary.
    #[error("token id {token} is outside the vocabulary (size {vocab_size})")]
    TokenOutOfRange {
        /// The token.
        token: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// The KV cache would grow past the context limit.
    #[error(
        "context full: {needed} positions needed, the limit is {limit} (truncate or reset the sequence)"
    )]
    ContextFull {
        /// Positions the request needs.
        needed: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The batch handed to a call is inconsistent with the state.
    #[error("bad batch: {0}")]
    Batch(String),
    /// Dequantizing a weight row failed.
    #[error("dequantizing `{name}`: {reason}")]
    Dequant {
        /// Which weight.
        name: String,
        /// The dequantizer's message.
        reason: String,
    },
    /// Reading the model file failed.
    #[error("model file: {0}")]
    Gguf(#[from] gguf::GgufError),
    /// The model config is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}
