//! GGUF v2/v3 reader and writer with CPU dequantization of ggml block formats.

pub mod quant;
pub mod types;

pub use types::{GgmlType, QK_K};
