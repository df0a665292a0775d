//! CUDA backend (feature `cuda`): kernels that read ggml blocks in place, compiled at start-up
//! with NVRTC for the GPU's architecture and cached on disk.
//!
//! The CUDA driver and NVRTC are loaded at run time (cudarc's dynamic loading): the crate builds
//! with no CUDA toolkit, and [`CudaBackend::new`] returns [`CudaError::Unavailable`] (never
//! panics) where there is no driver, no NVRTC or no GPU.
//!
//! Kernels: fused dequantize x matrix-vector product and embedding-row lookup for F32, F16,
//! BF16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K (wide-load kernels specialised for Q4_K,
//! Q6_K, Q8_0 and the float types where the weight is aligned, a generic one otherwise; two
//! rows per warp; variants with the residual add in the epilogue, Q/K/V in one launch and
//! gate/up with SwiGLU in the epilogue); with [`CudaOptions::matvec_q8`] (off by default) products with
//! Q4_0, Q4_1, Q5_0, Q8_0, Q4_K and Q6_K weights instead quantize their input to 8 bits per
//! block of 32 (bit for bit as the CPU backend's and llama.cpp's q8_1; fused into the preceding
//! RMSNorm where there is one) and
//! use integer dot products; RMSNorm; rotary embedding with Llama 3.1 frequency
//! factors fused with the f16 KV store; SwiGLU; residual add; argmax; decode attention (GQA)
//! over an f16 KV cache, split along the context (flash-decoding, online softmax) and merged by
//! the last CTA of each head; repetition penalty and top-k selection for sampling.
//!
//! The per-layer decode step [`forward_layer`] reads a layer's nine weights through
//! [`DeviceLayerWeights`] (views into device memory the caller owns) and keeps activations and
//! the f16 KV cache of every layer in a [`GpuState`] (8 launches a layer, no host sync; the
//! position and token live in device memory; streams and events for a streaming caller).
//! [`CudaModel`] is the resident-mode convenience: the whole GGUF in one device buffer, the
//! decode step replayed from a CUDA graph ([`CudaOptions::cuda_graph`] or
//! [`CudaModel::set_cuda_graph`] turns it off), final norm, LM head and argmax (or top-k) on the
//! GPU. Prompts of four or more tokens go through the batched tensor-core path.

mod attention;
mod backend;
mod bandwidth;
pub mod compile;
pub(crate) mod error;
mod layer;
mod matvec;
mod matvec_q8;
mod model;
mod options;
mod sample;
use crate::sys::cuda as sys;
mod weights;

pub use attention::{AttnShape, ATTN_CHUNK};
pub use backend::{driver_available, CudaBackend};
pub use error::{CudaError, Result};
pub use layer::batch::{
    forward_layer_batch, BatchKernels, GpuBatch, BATCH_ENTRY_POINTS, BATCH_KERNEL_MODULES,
    GEMM_K_STEP, PREFILL_CHUNK,
};
pub use layer::hybrid::{forward_layer_hybrid, HostLayerRows, HostSpan, HybridScratch};
pub use layer::multi::hybrid::{forward_layer_multi_hybrid, MultiHybridScratch};
pub use layer::multi::{
    forward_layer_multi, GpuMultiState, DEFAULT_MATVEC_ROWS, MATVEC_MAX_ROWS, MULTI_ENTRY_POINTS,
    MULTI_KERNEL_MODULES,
};
pub use layer::{forward_layer, DeviceLayerWeights, GpuState};
pub use matvec_q8::{reference_quantize_q8, Q8Activation};
pub use model::CudaModel;
pub use options::{CudaOptions, MatvecKsplit};
pub use sample::{finish_sample, gpu_sampling_plan, MAX_TOP_K};
pub use weights::{type_code, DeviceWeight, SUPPORTED_TYPES};
