//! CPU reference forward pass: plain f32 arithmetic over ggml blocks, multithreaded over rows.
//!
//! The per-layer step [`forward_layer`] reads its weights through [`LayerWeights`], views into
//! memory the caller owns (a mapped file, a RAM tier, a streamed buffer). [`Model`] is the
//! convenience that runs every layer over a memory-mapped GGUF.

mod attention;
mod blocks;
mod error;
mod head;
mod kernels;
mod layer;
mod matmul;
mod model;
mod norm;
mod q8;
mod rope;
mod simd;
mod weights;

pub use attention::{attention, AttentionShape, KvCache};
pub use blocks::{decode_row, decodes_natively};
pub use error::ForwardError;
pub use head::{embed, logits, vector};
pub use layer::{forward_layer, silu, State};
pub use matmul::{matmul, Kernel};
pub use model::{Model, ModelOptions};
pub use norm::rmsnorm;
pub use rope::RopeFreqs;
pub use weights::{LayerWeights, TensorView, LAYER_TENSOR_NAMES};
