//! GGUF v2/v3 reader and writer with CPU dequantization of ggml block formats.
//!
//! * [`GgufFile`] opens a file (memory-mapped) or a byte buffer, validates the header and gives
//!   zero-copy access to tensor data, per-layer byte spans and typed metadata getters.
//! * [`parse_header`] parses only the header of a byte slice.
//! * [`GgufWriter`] writes GGUF v3 files, streaming tensor data.
//!
//! Malformed input (truncated, corrupted, hostile) gives a [`GgufError`], never a panic or an
//! allocation larger than a small multiple of the input size.

// `unsafe` only in `sys` (the memory map), with its SAFETY comment.
#![deny(unsafe_code)]

pub mod error;
pub mod file;
pub mod metadata;
pub mod quant;
pub mod reader;
#[allow(unsafe_code)]
mod sys;
pub mod tensor;
pub mod types;
pub mod value;
pub mod writer;

pub use error::{GgufError, Result};
pub use file::GgufFile;
pub use metadata::Metadata;
pub use quant::{dequantize, dequantize_rows, is_dequant_supported, DequantError};
pub use reader::{
    parse_header, GgufHeader, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH,
};
pub use tensor::{TensorInfo, MAX_DIMS};
pub use types::{GgmlType, ALL_TYPES, QK_K};
pub use value::{Array, MetadataValueType, Value};
pub use writer::{GgufWriter, TensorDecl};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
