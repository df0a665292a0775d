//! The crate's only `unsafe` code: AVX2/AVX-512 intrinsics for the CPU kernels (`simd`, chosen at
//! run time after feature detection) and the CUDA/NVRTC FFI glue (`cuda`, feature `cuda`). Every
//! block carries a `// SAFETY:` comment; everything else in the crate is safe Rust.

pub(crate) mod simd;
pub(crate) mod simd_k;

#[cfg(feature = "cuda")]
pub(crate) mod cuda;
