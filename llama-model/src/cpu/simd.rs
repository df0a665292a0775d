//! The crate's only `unsafe` code: runtime dispatch to copies of the hot loops compiled for
//! AVX2 + FMA + F16C, so a portable binary still uses the vector units of the machine it runs on.
//! The loops themselves are the safe, portable ones in [`super::kernels`].
#![allow(unsafe_code)]

use gguf::GgmlType;

use super::kernels;
use super::q8::BlockQ8;

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

/// See [`kernels::rows_q8`].
pub(crate) fn rows_q8(
    ty: GgmlType,
    rows: &[u8],
    row_bytes: usize,
    xq: &[BlockQ8],
    blocks_per_row: usize,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: `rows_q8_avx2` only requires the CPU features enabled on it, and
        // `has_avx2()` just checked that this CPU has every one of them.
        unsafe { rows_q8_avx2(ty, rows, row_bytes, xq, blocks_per_row, out) };
        return;
    }
    kernels::rows_q8(ty, rows, row_bytes, xq, blocks_per_row, out)
}

/// See [`kernels::rows_f32`].
pub(crate) fn rows_f32(
    ty: GgmlType,
    rows: &[u8],
    row_bytes: usize,
    x: &[f32],
    row_len: usize,
    out: &mut [f32],
) -> Result<(), String> {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as above, the features `rows_f32_avx2` is compiled for were checked at run time.
        return unsafe { rows_f32_avx2(ty, rows, row_bytes, x, row_len, out) };
    }
    kernels::rows_f32(ty, rows, row_bytes, x, row_len, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_q8_avx2(
    ty: GgmlType,
    rows: &[u8],
    row_bytes: usize,
    xq: &[BlockQ8],
    blocks_per_row: usize,
    out: &mut [f32],
) {
    kernels::rows_q8(ty, rows, row_bytes, xq, blocks_per_row, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_f32_avx2(
    ty: GgmlType,
    rows: &[u8],
    row_bytes: usize,
    x: &[f32],
    row_len: usize,
    out: &mut [f32],
) -> Result<(), String> {
    kernels::rows_f32(ty, rows, row_bytes, x, row_len, out)
}
