//! Shared helpers of the GPU kernel tests: the backend (or a loud skip), poisoned buffers and
//! random valid ggml blocks.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaSlice, CudaStream};
use gguf::GgmlType;
use half::{bf16, f16};
use llama_model::cuda::{CudaBackend, CudaOptions};
use rand::rngs::StdRng;
use rand::Rng;

/// Prints past the test harness's output capture, so a skip shows in a normal `cargo test`.
pub fn loud(msg: String) {
    test_support::loud(msg);
}

/// The backend options from the `VRAMLESS_*` variables (kernel cache, NVRTC library, ...), as
/// the example programs read them, except that the 8-bit-activation matrix-vector path
/// ([`CudaOptions::matvec_q8`]) is off unless `VRAMLESS_MATVEC_Q8` is set: the tests that use
/// these options compare the f32 kernels with f32 references at f32 tolerances; the 8-bit path
/// has its own tests against references that quantize the same way (`cuda_matvec_q8.rs`,
/// the q8 test of `cuda_forward.rs`).
pub fn options() -> CudaOptions {
    let mut o = CudaOptions::from_vars(|k| std::env::var(k).ok())
        .expect("CUDA options from the environment");
    if std::env::var("VRAMLESS_MATVEC_Q8")
        .ok()
        .filter(|v| !v.is_empty())
        .is_none()
    {
        o.matvec_q8 = false;
    }
    o
}

pub fn backend() -> Option<&'static CudaBackend> {
    static B: OnceLock<Option<CudaBackend>> = OnceLock::new();
    B.get_or_init(|| match CudaBackend::with_options(0, &options()) {
        Ok(b) => {
            eprintln!("CUDA backend on {}", b.arch());
            Some(b)
        }
        Err(e) => {
            // A panic (VRAMLESS_REQUIRE_GPU=1) here poisons nothing: each test that calls
            // backend() again panics the same way.
            test_support::skip_gpu(format!("GPU kernel tests: the CUDA backend failed: {e}"));
            None
        }
    })
    .as_ref()
}

pub fn nan_buf(s: &Arc<CudaStream>, n: usize) -> CudaSlice<f32> {
    s.clone_htod(&vec![f32::NAN; n]).expect("alloc")
}

pub fn f16_bytes(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_le_bytes()
}

/// Random bytes of `n_blocks` blocks of `ty` with every f16 scale field replaced by a finite
/// random value, so every block decodes to finite numbers.
pub fn random_blocks(rng: &mut StdRng, ty: GgmlType, n_elems: usize) -> Vec<u8> {
    let n_blocks = n_elems / ty.block_size();
    let bs = ty.type_size();
    let mut out = vec![0u8; n_blocks * bs];
    match ty {
        GgmlType::F32 => {
            for c in out.chunks_exact_mut(4) {
                c.copy_from_slice(&rng.gen_range(-1.0f32..1.0).to_le_bytes());
            }
            return out;
        }
        GgmlType::F16 => {
            for c in out.chunks_exact_mut(2) {
                c.copy_from_slice(&f16_bytes(rng.gen_range(-1.0f32..1.0)));
            }
            return out;
        }
        GgmlType::BF16 => {
            for c in out.chunks_exact_mut(2) {
                c.copy_from_slice(&bf16::from_f32(rng.gen_range(-1.0f32..1.0)).to_le_bytes());
            }
            return out;
        }
        _ => {}
    }
    rng.fill(out.as_mut_slice());
    // Offsets of the f16 scale fields inside one block (ggml layouts).
    let scale_offsets: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        other => panic!("no generator for {other}"),
    };
    for b in out.chunks_exact_mut(bs) {
        for &o in scale_offsets {
            b[o..o + 2].copy_from_slice(&f16_bytes(rng.gen_range(-0.05f32..0.05)));
        }
    }
    out
}

/// (index of the largest value, gap to the second largest).
pub fn top2(v: &[f32]) -> (u32, f32) {
    let best = llama_model::sampler::argmax(v) as usize;
    let second = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != best)
        .map(|(_, x)| *x)
        .fold(f32::NEG_INFINITY, f32::max);
    (best as u32, v[best] - second)
}
