//! Memory budgets: parsing sizes such as "24GiB", free memory on this machine, and the bytes the
//! device must hold whatever the plan (non-layer tensors, KV cache, workspaces).

use super::error::{EngineError, Result};

/// Parses a size flag ("24GiB", "512MiB", "0") into bytes.
pub fn parse_size(flag: &'static str, text: &str) -> Result<u64> {
    tier_cache::units::parse_bytes(text).map_err(|e| EngineError::BadSize {
        flag,
        text: text.to_string(),
        reason: e.to_string(),
    })
}

/// Human-readable bytes.
pub fn show(bytes: u64) -> String {
    tier_cache::units::format_bytes(bytes)
}

/// Host memory available to this process (bytes), or `None` where it cannot be read: the
/// probe of `slep-pipeline`'s machine capabilities.
pub fn mem_available() -> Option<u64> {
    slep_pipeline::MachineCaps::available_memory()
}

/// Host memory kept free for the OS, the page cache and the process itself by the automatic
/// RAM budget.
pub const RAM_HEADROOM: u64 = 4 << 30;

/// Device memory kept free for the CUDA context, kernels and allocator slack by the automatic
/// VRAM budget.
pub const VRAM_HEADROOM: u64 = 1 << 30;

/// Bytes of activations and scratch the forward pass allocates besides the KV cache (generous:
/// logits, attention scratch, per-layer vectors).
pub fn workspace_bytes(vocab: usize, dim: usize, ffn: usize, ctx: usize, n_heads: usize) -> u64 {
    let f = 4u64;
    let vecs = (8 * dim as u64 + 4 * ffn as u64) * f;
    let logits = 2 * vocab as u64 * f;
    let scratch = (n_heads as u64) * (ctx as u64 / 16 + 64) * 4 * f;
    vecs + logits + scratch + (64 << 20)
}

/// KV cache bytes for `layers` layers of `kv_dim` values per position, `ctx` positions, at
/// `bytes_per_value` (2 on the GPU's f16 cache, 4 on the CPU's f32 cache).
pub fn kv_bytes(layers: usize, kv_dim: usize, ctx: usize, bytes_per_value: u64) -> u64 {
    2 * layers as u64 * kv_dim as u64 * ctx as u64 * bytes_per_value
}
