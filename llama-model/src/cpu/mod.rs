//! CPU reference forward pass over ggml blocks, multithreaded over weight rows (rayon).
//!
//! The per-layer step [`forward_layer`] reads its weights through [`LayerWeights`], views into
//! memory the caller owns (a mapped file, a RAM tier, a streamed buffer). [`Model`] is the
//! convenience that runs every layer over a memory-mapped GGUF.
//!
//! Everything is plain f32 code except the matrix products, whose [`Kernel`] picks how
//! activations meet the weights: [`Kernel::F32`] decodes each weight row to f32 (the textbook
//! reference); [`Kernel::Q8`] (default) quantizes activations to 8 bits (per block of 32 for the
//! 32-element formats, per super-block of 256 as q8_K for Q4_K/Q5_K/Q6_K) and uses integer dot
//! products like llama.cpp, with AVX2 / AVX-512 versions chosen at run time
//! (the crate's only `unsafe` code lives in its `sys` module).
//!
//! A matrix can be split by rows ([`TensorView::rows`]): [`matmul`] over a row range yields
//! that slice of the output, so partial products from two devices join by concatenation.

mod attention;
mod blocks;
mod error;
mod expf;
pub(crate) mod flash;
mod head;
pub(crate) mod kernels;
mod layer;
mod matmul;
mod membw;
mod model;
mod multi;
mod norm;
pub(crate) mod q8;
pub(crate) mod q8k;
mod rope;
use crate::sys::simd;
pub(crate) mod tiled;
mod weights;

pub use attention::{attention, AttentionShape, KvCache};
pub use blocks::{decode_row, decodes_natively};
pub use error::ForwardError;
pub use head::{embed, logits, vector};
pub use layer::{forward_layer, silu, State};
pub use matmul::{
    kquant_kernel, limit_kquant_simd, matmul, matmul_shared_input, Kernel, KquantSimd,
};
pub use membw::{measure_read_bandwidth, read_bandwidth};
pub use model::{Model, ModelOptions};
pub use multi::{forward_layer_multi, MultiState};
pub use norm::rmsnorm;
pub use rope::RopeFreqs;
pub use weights::{LayerWeights, TensorView, LAYER_TENSOR_NAMES};

/// Runs `f` on a thread of the current rayon pool (here, if this thread is one) and returns
/// its result. Every parallel product called from outside the pool hands its work to the pool
/// and puts the caller to sleep until it is done, two thread switches per product; a whole
/// forward pass run through this pays them once (its products start on a pool thread and the
/// others steal from it). Callers of many small products per token (a decode step) use it.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}
