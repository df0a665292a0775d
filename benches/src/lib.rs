//! Shared helpers for the workspace benchmarks.
#![forbid(unsafe_code)]

#[cfg(feature = "cuda")]
pub mod cuda_report;
pub mod quant_data;
