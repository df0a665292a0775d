//! The crate's only `unsafe` code: runtime dispatch to copies of the hot loops compiled for
//! AVX2 + FMA + F16C, so a portable binary still uses the vector units of the machine it runs on.
//! The loops themselves are the safe, portable ones in [`crate::cpu`]'s `kernels` module.
#![allow(unsafe_code)]

use gguf::GgmlType;

use crate::cpu::flash::{self, HeadView};
use crate::cpu::kernels;
use crate::cpu::q8::BlockQ8;
use crate::cpu::tiled::{self, Block};

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

/// See [`flash::attend_head`].
pub(crate) fn attend_head(q: &[f32], keys: &[f32], values: &[f32], h: HeadView, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the features `attend_head_avx2` is compiled for were checked at run time.
        return unsafe { attend_head_avx2(q, keys, values, h, out) };
    }
    flash::attend_head(q, keys, values, h, out)
}

/// See [`tiled::attend_block`].
pub(crate) fn attend_block(q: &[f32], keys: &[f32], values: &[f32], b: Block, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the features `attend_block_avx2` is compiled for were checked at run time.
        return unsafe { attend_block_avx2(q, keys, values, b, out) };
    }
    tiled::attend_block(q, keys, values, b, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_block_avx2(q: &[f32], keys: &[f32], values: &[f32], b: Block, out: &mut [f32]) {
    tiled::attend_block(q, keys, values, b, out)
}

/// See [`flash::swiglu`].
pub(crate) fn swiglu(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the features `swiglu_avx2` is compiled for were checked at run time.
        return unsafe { swiglu_avx2(gate, up) };
    }
    flash::swiglu(gate, up)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_head_avx2(q: &[f32], keys: &[f32], values: &[f32], h: HeadView, out: &mut [f32]) {
    flash::attend_head(q, keys, values, h, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn swiglu_avx2(gate: &mut [f32], up: &[f32]) {
    flash::swiglu(gate, up)
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
    let n_tokens = xq.len() / blocks_per_row.max(1);
    let rows_fn: fn(&[u8], &[BlockQ8], usize, &mut [f32]) = match ty {
        GgmlType::Q4_0 => avx2::rows::<{ avx2::Q4_0 }>,
        GgmlType::Q4_1 => avx2::rows::<{ avx2::Q4_1 }>,
        GgmlType::Q8_0 => avx2::rows::<{ avx2::Q8_0 }>,
        _ => return kernels::rows_q8(ty, rows, row_bytes, xq, blocks_per_row, out),
    };
    for (r, o) in rows
        .chunks_exact(row_bytes)
        .zip(out.chunks_exact_mut(n_tokens))
    {
        rows_fn(r, xq, blocks_per_row, o);
    }
}

/// Hand-vectorised block dot products (the llama.cpp technique: `maddubs` of unsigned weights
/// by signed activations into i16 pairs, `madd` into i32, then one FMA per block). Each is a
/// safe `fn` pointer target that is only reached through `rows_q8_avx2`, i.e. after the
/// run-time AVX2/FMA/F16C check.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::simd_k::avx2::prefetch;
    use super::super::simd_k::PREFETCH_AHEAD;
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
    fn unpack_nibbles(qs: &[u8; 16]) -> __m256i {
        // SAFETY: `qs` is 16 readable bytes; `loadu` has no alignment requirement.
        let v = unsafe { _mm_loadu_si128(qs.as_ptr().cast()) };
        let mask = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(v, mask);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), mask);
        _mm256_set_m128i(hi, lo)
    }

    /// Two consecutive f16 values (`b[0..4]`) to f32 with the F16C instruction.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn f16_pair(b: &[u8; 4]) -> (f32, f32) {
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes(*b)));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
    }

    /// One f16 value (`b[0..2]`) to f32 with the F16C instruction.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn f16_one(b: &[u8; 2]) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
            u16::from_le_bytes(*b),
        ))))
    }

    /// A fixed-size view of `b[at..at + N]` (the caller's block slices have constant length, so
    /// the check folds away).
    #[inline(always)]
    fn arr<const N: usize>(b: &[u8], at: usize) -> &[u8; N] {
        match b.get(at..at + N).and_then(|s| <&[u8; N]>::try_from(s).ok()) {
            Some(a) => a,
            None => &[0; N],
        }
    }

    #[target_feature(enable = "avx2,fma")]
    fn load_q8(x: &BlockQ8) -> __m256i {
        // SAFETY: `x.qs` is 32 readable bytes; `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_si256(x.qs.as_ptr().cast()) }
    }

    /// Block kinds handled here.
    pub(super) const Q4_0: u8 = 0;
    pub(super) const Q4_1: u8 = 1;
    pub(super) const Q8_0: u8 = 2;

    /// Bytes per block of kind `K`.
    #[inline(always)]
    fn block_bytes<const K: u8>() -> usize {
        match K {
            Q4_1 => 20,
            Q4_0 => 18,
            _ => 34,
        }
    }

    /// One weight block as (32 weights ready for `maddubs`, their sign source, scale, min).
    #[inline(always)]
    fn weights<const K: u8>(b: &[u8]) -> (__m256i, __m256i, f32, f32) {
        // SAFETY: only reached from `rows`, which carries the avx2/fma/f16c target features
        // these intrinsics need; the only load reads a 32-byte array (no alignment needed).
        unsafe {
            match K {
                Q4_1 => {
                    let w = unpack_nibbles(arr::<16>(b, 4));
                    let (d, m) = f16_pair(arr::<4>(b, 0));
                    (w, w, d, m)
                }
                Q4_0 => {
                    let w = _mm256_sub_epi8(unpack_nibbles(arr::<16>(b, 2)), _mm256_set1_epi8(8));
                    (_mm256_sign_epi8(w, w), w, f16_one(arr::<2>(b, 0)), 0.0)
                }
                _ => {
                    let w = _mm256_loadu_si256(arr::<32>(b, 2).as_ptr().cast());
                    (_mm256_sign_epi8(w, w), w, f16_one(arr::<2>(b, 0)), 0.0)
                }
            }
        }
    }

    /// One weight row against every token of `xq` (runs of `bpr` blocks), four tokens at a
    /// time so each weight block is unpacked once per four tokens.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn rows<const K: u8>(row: &[u8], xq: &[BlockQ8], bpr: usize, out: &mut [f32]) {
        let mut t = 0;
        while t + 4 <= out.len() {
            let r = dot_n::<K, 4>(row, &xq[t * bpr..], bpr);
            out[t..t + 4].copy_from_slice(&r);
            t += 4;
        }
        while t < out.len() {
            out[t] = dot_n::<K, 1>(row, &xq[t * bpr..], bpr)[0];
            t += 1;
        }
    }

    /// Dot products of one weight row with `N` consecutive tokens' activations.
    #[inline(always)]
    fn dot_n<const K: u8, const N: usize>(row: &[u8], xq: &[BlockQ8], bpr: usize) -> [f32; N] {
        // SAFETY: only called from `rows`, which carries the avx2/fma/f16c target features.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); N];
            let mut mins = [0f32; N];
            for (bi, b) in row.chunks_exact(block_bytes::<K>()).enumerate() {
                prefetch(b, PREFETCH_AHEAD);
                let (w, sign, d, m) = weights::<K>(b);
                for k in 0..N {
                    let xb = &xq[k * bpr + bi];
                    let xv = load_q8(xb);
                    let xv = if K == Q4_1 {
                        xv
                    } else {
                        _mm256_sign_epi8(xv, sign)
                    };
                    let p = mul_sum_u8_i8(w, xv);
                    acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(d * xb.d), p, acc[k]);
                    mins[k] += m * xb.s;
                }
            }
            let mut r = [0f32; N];
            for k in 0..N {
                r[k] = hsum(acc[k]) + mins[k];
            }
            r
        }
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
