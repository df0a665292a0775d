//! Sampler inputs on the GPU (`kernels/elementwise.cu`): repetition penalty and top-k selection,
//! so that a sampled token needs only `k` (id, logit) pairs on the host, where
//! [`finish_sample`] completes the choice with the CPU [`Sampler`] (top-p, min-p, temperature,
//! seeded draw).

use cudarc::driver::{CudaSlice, DevicePtr, PushKernelArg};

use crate::sampler::{Sampler, SamplerConfig, SamplerError};

use super::backend::{cfg, grid_for, i32_arg, CudaBackend};
use super::error::{driver, CudaError, Result};
use super::sys::Launch;

/// Largest `k` of [`CudaBackend::top_k`].
pub const MAX_TOP_K: usize = 256;
/// Elements one CTA of the top-k kernel sorts (`TOPK_TILE`).
const TOPK_TILE: usize = 1024;
/// Threads of the top-k kernel (`TOPK_THREADS`).
const TOPK_THREADS: u32 = 512;

impl CudaBackend {
    /// Applies llama.cpp's repetition penalty in place to `logits` at the distinct ids of
    /// `ids` (a logit is divided by `penalty` when positive, multiplied when not). Ids past the
    /// vocabulary are ignored.
    pub fn repetition_penalty(
        &self,
        logits: &mut CudaSlice<f32>,
        ids: &[u32],
        penalty: f32,
    ) -> Result<()> {
        const OP: &str = "repetition_penalty";
        let mut uniq: Vec<u32> = ids.to_vec();
        uniq.sort_unstable();
        uniq.dedup();
        if uniq.is_empty() {
            return Ok(());
        }
        let n = i32_arg(OP, "ids", uniq.len())?;
        let vocab = i32_arg(OP, "vocab", logits.len())?;
        let s = self.stream();
        let dids = s.clone_htod(&uniq).map_err(driver("upload ids"))?;
        let mut l = Launch::new(s, &self.k.rep_penalty);
        l.0.arg(logits).arg(&dids).arg(&n).arg(&vocab).arg(&penalty);
        l.run(OP, cfg(grid_for(uniq.len(), 256, OP)?, 256))
    }

    /// The `k` (1..=[`MAX_TOP_K`]) largest `logits` with their ids, in rank order (highest
    /// first, the lower id first on ties; NaN counts as -inf), selected on the GPU: only these
    /// `k` pairs are copied to the host. Fewer than `k` when the vocabulary is smaller.
    pub fn top_k(&self, logits: &CudaSlice<f32>, k: usize) -> Result<Vec<(u32, f32)>> {
        const OP: &str = "top_k";
        if k == 0 || k > MAX_TOP_K {
            return Err(CudaError::Shape {
                op: OP,
                detail: format!("k = {k} must be in 1..={MAX_TOP_K}"),
            });
        }
        let n = logits.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let k32 = i32_arg(OP, "k", k)?;
        let s = self.stream();
        let first_blocks = n.div_ceil(TOPK_TILE);
        let cap = first_blocks
            .checked_mul(k)
            .ok_or_else(|| CudaError::Shape {
                op: OP,
                detail: "candidate buffer overflows".into(),
            })?;
        let alloc_v = || s.alloc_zeros::<f32>(cap).map_err(driver("alloc"));
        let alloc_i = || s.alloc_zeros::<u32>(cap).map_err(driver("alloc"));
        let (mut va, mut ia, mut vb, mut ib) = (alloc_v()?, alloc_i()?, alloc_v()?, alloc_i()?);
        // Pass 1: the logits, ids implicit.
        let (lp, _g) = logits.device_ptr(s);
        let null: u64 = 0;
        let n32 = i32_arg(OP, "n", n)?;
        let mut l = Launch::new(s, &self.k.topk_pass);
        l.0.arg(&lp)
            .arg(&null)
            .arg(&n32)
            .arg(&k32)
            .arg(&mut va)
            .arg(&mut ia);
        l.run(OP, cfg(grid_for(first_blocks, 1, OP)?, TOPK_THREADS))?;
        let mut len = first_blocks * k;
        let mut blocks = first_blocks;
        // Further passes until one CTA's output remains (each cuts the candidates by at least
        // TOPK_TILE / k >= 4).
        while blocks > 1 {
            blocks = len.div_ceil(TOPK_TILE);
            let len32 = i32_arg(OP, "n", len)?;
            let mut l = Launch::new(s, &self.k.topk_pass);
            l.0.arg(&va)
                .arg(&ia)
                .arg(&len32)
                .arg(&k32)
                .arg(&mut vb)
                .arg(&mut ib);
            l.run(OP, cfg(grid_for(blocks, 1, OP)?, TOPK_THREADS))?;
            std::mem::swap(&mut va, &mut vb);
            std::mem::swap(&mut ia, &mut ib);
            len = blocks * k;
        }
        let v = s
            .clone_dtoh(&va.slice(..k))
            .map_err(driver("download top-k"))?;
        let i = s
            .clone_dtoh(&ia.slice(..k))
            .map_err(driver("download top-k"))?;
        Ok(i.into_iter()
            .zip(v)
            .filter(|(id, _)| (*id as usize) < n)
            .collect())
    }
}

/// Completes a sampled choice on the host from GPU candidates (`(id, logit)` pairs, e.g. from
/// [`CudaBackend::top_k`] after [`CudaBackend::repetition_penalty`]): the candidates are laid
/// into a vocabulary of `vocab` logits at -inf and drawn by `sampler` as the CPU path would.
/// The sampler's own repetition penalty must be off (`repeat_penalty == 1.0`): the GPU applied
/// it. With `0 < top_k <= k` the result equals the CPU sampler's on the full logits for the same
/// seed (the candidate set is the same); otherwise only the `k` most likely tokens can win.
pub fn finish_sample(
    sampler: &mut Sampler,
    candidates: &[(u32, f32)],
    vocab: usize,
) -> std::result::Result<u32, SamplerError> {
    let mut dense = vec![f32::NEG_INFINITY; vocab];
    for &(id, l) in candidates {
        if let Some(d) = dense.get_mut(id as usize) {
            *d = l;
        }
    }
    sampler.sample(&dense, &[])
}

/// The sampler settings for [`finish_sample`]: `config` with the repetition penalty off (it
/// is applied on the GPU), and the `k` to ask the GPU for: `top_k` when it is in
/// 1..=[`MAX_TOP_K`], else [`MAX_TOP_K`]. The GPU applies no presence or frequency penalty:
/// with either non-zero, sample on the host from the full logits instead.
pub fn gpu_sampling_plan(config: &SamplerConfig) -> (SamplerConfig, usize) {
    let k = if config.top_k > 0 && config.top_k <= MAX_TOP_K {
        config.top_k
    } else {
        MAX_TOP_K
    };
    let mut host = config.clone();
    host.repeat_penalty = 1.0;
    (host, k)
}
