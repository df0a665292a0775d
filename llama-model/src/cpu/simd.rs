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
    let dot: fn(&[u8], &[BlockQ8]) -> f32 = match ty {
        GgmlType::Q4_0 => avx2::dot_q4_0,
        GgmlType::Q4_1 => avx2::dot_q4_1,
        GgmlType::Q8_0 => avx2::dot_q8_0,
        _ => return kernels::rows_q8(ty, rows, row_bytes, xq, blocks_per_row, out),
    };
    let n_tokens = xq.len() / blocks_per_row.max(1);
    for (r, o) in rows
        .chunks_exact(row_bytes)
        .zip(out.chunks_exact_mut(n_tokens))
    {
        for (t, ot) in o.iter_mut().enumerate() {
            *ot = dot(r, &xq[t * blocks_per_row..(t + 1) * blocks_per_row]);
        }
    }
}

/// Hand-vectorised block dot products (the llama.cpp technique: `maddubs` of unsigned weights
/// by signed activations into i16 pairs, `madd` into i32, then one FMA per block). Each is a
/// safe `fn` pointer target that is only reached through `rows_q8_avx2`, i.e. after the
/// run-time AVX2/FMA/F16C check.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::blocks::f16_at;
    use super::BlockQ8;

    /// Sum of the 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    /// 32 weights (u8 0..15, or signed via `sign`) times 32 i8 activations -> 8 i32 lanes as f32.
    #[target_feature(enable = "avx2,fma")]
    fn mul_sum_u8_i8(w: __m256i, x: __m256i) -> __m256 {
        let p16 = _mm256_maddubs_epi16(w, x);
        let p32 = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
        _mm256_cvtepi32_ps(p32)
    }

    /// The 16 packed bytes of a 4-bit block as 32 u8 nibbles (low nibbles first, like ggml).
    #[target_feature(enable = "avx2,fma")]
    fn unpack_nibbles(qs: &[u8]) -> __m256i {
        let mut buf = [0u8; 16];
        buf.copy_from_slice(&qs[..16]);
        // SAFETY: `buf` is 16 readable bytes; `loadu` has no alignment requirement.
        let v = unsafe { _mm_loadu_si128(buf.as_ptr().cast()) };
        let mask = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(v, mask);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), mask);
        _mm256_set_m128i(hi, lo)
    }

    #[target_feature(enable = "avx2,fma")]
    fn load_q8(x: &BlockQ8) -> __m256i {
        // SAFETY: `x.qs` is 32 readable bytes; `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_si256(x.qs.as_ptr().cast()) }
    }

    /// Q4_1 row (20-byte blocks: d, m, qs[16]) . q8 activations.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn dot_q4_1(row: &[u8], x: &[BlockQ8]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut mins = 0f32;
        for (b, xb) in row.chunks_exact(20).zip(x) {
            let w = unpack_nibbles(&b[4..20]);
            let p = mul_sum_u8_i8(w, load_q8(xb));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b, 0) * xb.d), p, acc);
            mins += f16_at(b, 2) * xb.s;
        }
        hsum(acc) + mins
    }

    /// Q4_0 row (18-byte blocks: d, qs[16], values q - 8) . q8 activations.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn dot_q4_0(row: &[u8], x: &[BlockQ8]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let eight = _mm256_set1_epi8(8);
        for (b, xb) in row.chunks_exact(18).zip(x) {
            let w = _mm256_sub_epi8(unpack_nibbles(&b[2..18]), eight);
            // Signed x signed via |w| . (x with w's sign), as maddubs wants an unsigned left side.
            let xv = load_q8(xb);
            let p = mul_sum_u8_i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xv, w));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b, 0) * xb.d), p, acc);
        }
        hsum(acc)
    }

    /// Q8_0 row (34-byte blocks: d, qs[32] i8) . q8 activations.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn dot_q8_0(row: &[u8], x: &[BlockQ8]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (b, xb) in row.chunks_exact(34).zip(x) {
            let mut buf = [0u8; 32];
            buf.copy_from_slice(&b[2..34]);
            // SAFETY: `buf` is 32 readable bytes; `loadu` has no alignment requirement.
            let w = unsafe { _mm256_loadu_si256(buf.as_ptr().cast()) };
            let xv = load_q8(xb);
            let p = mul_sum_u8_i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xv, w));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b, 0) * xb.d), p, acc);
        }
        hsum(acc)
    }
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
