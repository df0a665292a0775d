//! Shared helpers for the workspace benchmarks.
#![forbid(unsafe_code)]

pub mod quant_data;
