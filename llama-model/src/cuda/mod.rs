//! CUDA backend (feature `cuda`): kernels that read ggml blocks in place, compiled at start-up
//! with NVRTC for the GPU's architecture and cached on disk.
//!
//! The CUDA driver and NVRTC are loaded at run time (cudarc's dynamic loading): the crate builds
//! with no CUDA toolkit, and [`CudaBackend::new`] returns [`CudaError::Unavailable`] (never
//! panics) where there is no driver, no NVRTC or no GPU.
//!
//! Kernels so far: fused dequantize x matrix-vector product and embedding-row lookup for
//! F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K; RMSNorm; rotary embedding with
//! Llama 3.1 frequency factors; SwiGLU; residual add; argmax; decode attention (GQA) over an
//! f16 KV cache, split along the context (flash-decoding) and merged by a second kernel.

mod attention;
mod backend;
pub mod compile;
mod error;
mod sys;
mod weights;

pub use attention::{AttnShape, ATTN_CHUNK};
pub use backend::{driver_available, CudaBackend};
pub use error::{CudaError, Result};
pub use weights::{type_code, DeviceWeight, SUPPORTED_TYPES};
