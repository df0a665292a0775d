//! Shared helpers for the workspace benchmarks.

pub mod quant_data;
