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
//!
//! The per-layer decode step [`forward_layer`] reads a layer's nine weights through
//! [`DeviceLayerWeights`] (views into device memory the caller owns) and keeps activations and
//! the f16 KV cache of every layer in a [`GpuState`]. [`CudaModel`] is the resident-mode
//! convenience: the whole GGUF in one device buffer, final norm, LM head and argmax on the GPU.
//! Prompts still go through the decode path one token at a time (no batched prefill yet).

mod attention;
mod backend;
mod bandwidth;
pub mod compile;
mod error;
mod layer;
mod model;
mod sys;
mod weights;

pub use attention::{AttnShape, ATTN_CHUNK};
pub use backend::{driver_available, CudaBackend};
pub use error::{CudaError, Result};
pub use layer::{forward_layer, DeviceLayerWeights, GpuState};
pub use model::CudaModel;
pub use weights::{type_code, DeviceWeight, SUPPORTED_TYPES};
