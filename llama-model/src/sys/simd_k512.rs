//! AVX-512 per-super-block integer sums for [`super`]'s row loops: 64 weight bytes per
//! instruction. Two entry points per format: `*_bw` (AVX-512F/BW: `maddubs`, then `madd` by the
//! scales and an add) and `*_vnni` (the `madd` and add fused into `vpdpwssd`); both compute the
//! exact integers of the portable code.
//!
//! Compiled only under `cfg(vramless_avx512)`, i.e. by Rust 1.89 or newer (see `build.rs`), so
//! the intrinsics stabilised in 1.89 are fine here despite the crate's rust-version.
#![allow(clippy::incompatible_msrv)]

use std::arch::x86_64::*;

use super::avx2::{arr, bsums_vec, hsum_i32, load16, reduce_k4};
use super::BlockQ8K;
use crate::cpu::q8k::scales_mins_k4;

/// See [`k4`]; AVX-512F/BW.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
pub(super) fn sums_k4_bw<const QH: bool>(b: &[u8], x: &BlockQ8K) -> (i32, i32) {
    // SAFETY: this function has every feature `k4::<_, false>` uses.
    unsafe { k4::<QH, false>(b, x) }
}

/// See [`k4`]; AVX-512F/BW/VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(super) fn sums_k4_vnni<const QH: bool>(b: &[u8], x: &BlockQ8K) -> (i32, i32) {
    // SAFETY: this function has every feature `k4::<_, true>` uses.
    unsafe { k4::<QH, true>(b, x) }
}

/// See [`q6k`]; AVX-512F/BW.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
pub(super) fn sum_q6k_bw(b: &[u8], x: &BlockQ8K) -> i32 {
    // SAFETY: this function has every feature `q6k::<false>` uses.
    unsafe { q6k::<false>(b, x) }
}

/// See [`q6k`]; AVX-512F/BW/VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(super) fn sum_q6k_vnni(b: &[u8], x: &BlockQ8K) -> i32 {
    // SAFETY: this function has every feature `q6k::<true>` uses.
    unsafe { q6k::<true>(b, x) }
}

/// `a` in the low 256 bits, `b` in the high 256 bits.
#[target_feature(enable = "avx512f,avx512bw,avx2")]
fn join(a: __m256i, b: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a), b)
}

/// 64 bytes from a 64-byte array.
#[target_feature(enable = "avx512f,avx512bw,avx2")]
fn load64(p: &[u8; 64]) -> __m512i {
    // SAFETY: `p` is 64 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(p.as_ptr().cast()) }
}

/// Activations `x.qs[at..at + 32]` and `x.qs[at2..at2 + 32]` in one register.
#[target_feature(enable = "avx512f,avx512bw,avx2")]
fn load_x2(x: &BlockQ8K, at: usize, at2: usize) -> __m512i {
    let p = |a: usize| -> &[i8; 32] {
        x.qs.get(a..a + 32)
            .and_then(|s| s.try_into().ok())
            .unwrap_or(&[0; 32])
    };
    // SAFETY: each pointer is 32 readable bytes; `loadu` has no alignment requirement.
    unsafe {
        join(
            _mm256_loadu_si256(p(at).as_ptr().cast()),
            _mm256_loadu_si256(p(at2).as_ptr().cast()),
        )
    }
}

/// Activations `x.qs[at..at + 64]`.
#[target_feature(enable = "avx512f,avx512bw,avx2")]
fn load_x64(x: &BlockQ8K, at: usize) -> __m512i {
    let s: &[i8; 64] =
        x.qs.get(at..at + 64)
            .and_then(|s| s.try_into().ok())
            .unwrap_or(&[0; 64]);
    // SAFETY: `s` is 64 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(s.as_ptr().cast()) }
}

/// i16 lanes `sa` (low 256 bits) and `sb` (high 256 bits) of `s16`, each repeated 16 times.
#[target_feature(enable = "avx512f,avx512bw,avx2")]
fn pick2(s16: __m512i, sa: i16, sb: i16) -> __m512i {
    let idx = join(_mm256_set1_epi16(sa), _mm256_set1_epi16(sb));
    _mm512_permutexvar_epi16(idx, s16)
}

/// i16 lanes `s..s + 4` of `s16`, each repeated 8 times (one per 16 weights).
#[target_feature(enable = "avx512f,avx512bw,avx2")]
fn pick4(s16: __m512i, s: i16) -> __m512i {
    let lo = _mm256_set_m128i(_mm_set1_epi16(s + 1), _mm_set1_epi16(s));
    let hi = _mm256_set_m128i(_mm_set1_epi16(s + 3), _mm_set1_epi16(s + 2));
    _mm512_permutexvar_epi16(join(lo, hi), s16)
}

/// `acc + madd(p, sc)`, fused (`vpdpwssd`) when `VNNI`.
///
/// # Safety
/// The CPU must have AVX-512F/BW, and AVX-512 VNNI when `VNNI`.
#[inline(always)]
unsafe fn madd_acc<const VNNI: bool>(acc: __m512i, p: __m512i, sc: __m512i) -> __m512i {
    // SAFETY: the caller guarantees the features of the branch taken.
    unsafe {
        if VNNI {
            _mm512_dpwssd_epi32(acc, p, sc)
        } else {
            _mm512_add_epi32(acc, _mm512_madd_epi16(p, sc))
        }
    }
}

/// Bit `bit` of every byte of `qh` moved to bit 4 (16-bit shifts: the bit stays in its byte
/// for `bit <= 7`), other bits cleared.
#[target_feature(enable = "avx512f,avx512bw,avx2")]
fn bit_to_4(qh: __m256i, bit: i32) -> __m256i {
    let v = if bit <= 4 {
        _mm256_sll_epi16(qh, _mm_cvtsi32_si128(4 - bit))
    } else {
        _mm256_srl_epi16(qh, _mm_cvtsi32_si128(bit - 4))
    };
    _mm256_and_si256(v, _mm256_set1_epi8(0x10))
}

/// `(sumi, summ)` of one Q4_K (`QH = false`) or Q5_K (`QH = true`) super-block, 128 weights
/// per step: the 64 bytes of two chunks hold sub-blocks `4p` and `4p + 2` in their low
/// nibbles, `4p + 1` and `4p + 3` in their high nibbles.
///
/// # Safety
/// The CPU must have AVX-512F/BW and AVX2, and AVX-512 VNNI when `VNNI`.
#[inline(always)]
unsafe fn k4<const QH: bool, const VNNI: bool>(b: &[u8], x: &BlockQ8K) -> (i32, i32) {
    let (sc, mins) = scales_mins_k4(arr::<12>(b, 4));
    let qs_at = if QH { 48 } else { 16 };
    // SAFETY: the caller guarantees the CPU features; loads read fixed-size arrays.
    unsafe {
        let m4 = _mm512_set1_epi8(0x0f);
        let s16 = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64)));
        let qh = if QH {
            _mm256_loadu_si256(arr::<32>(b, 16).as_ptr().cast())
        } else {
            _mm256_setzero_si256()
        };
        let mut acc = _mm512_setzero_si512();
        for p in 0..2 {
            let v = load64(arr::<64>(b, qs_at + 64 * p));
            let mut lo = _mm512_and_si512(v, m4);
            let mut hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4);
            let s = 4 * p as i32;
            if QH {
                lo = _mm512_or_si512(lo, join(bit_to_4(qh, s), bit_to_4(qh, s + 2)));
                hi = _mm512_or_si512(hi, join(bit_to_4(qh, s + 1), bit_to_4(qh, s + 3)));
            }
            let xlo = load_x2(x, 128 * p, 128 * p + 64);
            let xhi = load_x2(x, 128 * p + 32, 128 * p + 96);
            let (s0, s1, s2, s3) = (s as i16, s as i16 + 1, s as i16 + 2, s as i16 + 3);
            acc = madd_acc::<VNNI>(acc, _mm512_maddubs_epi16(lo, xlo), pick2(s16, s0, s2));
            acc = madd_acc::<VNNI>(acc, _mm512_maddubs_epi16(hi, xhi), pick2(s16, s1, s3));
        }
        let a = _mm256_add_epi32(
            _mm512_castsi512_si256(acc),
            _mm512_extracti64x4_epi64::<1>(acc),
        );
        reduce_k4(a, mins, x)
    }
}

/// `sumi` of one Q6_K super-block, 128 weights per register pair: in half `h`, the low
/// nibbles of `ql[64h..64h+64]` are elements 0..64, the high nibbles elements 64..128.
///
/// # Safety
/// The CPU must have AVX-512F/BW and AVX2, and AVX-512 VNNI when `VNNI`.
#[inline(always)]
unsafe fn q6k<const VNNI: bool>(b: &[u8], x: &BlockQ8K) -> i32 {
    let sc_bytes = arr::<16>(b, 192);
    // SAFETY: the caller guarantees the CPU features; loads read fixed-size arrays.
    unsafe {
        let m4 = _mm512_set1_epi8(0x0f);
        let m2 = _mm512_set1_epi8(0x30);
        let mut acc = _mm512_setzero_si512();
        for h in 0..2 {
            let s8 = i64::from_le_bytes(*arr::<8>(sc_bytes, 8 * h));
            let s16 = _mm512_castsi128_si512(_mm_cvtepi8_epi16(_mm_cvtsi64_si128(s8)));
            let ql = load64(arr::<64>(b, 64 * h));
            let qh = _mm256_loadu_si256(arr::<32>(b, 128 + 32 * h).as_ptr().cast());
            let qh12 = join(_mm256_slli_epi16::<4>(qh), _mm256_slli_epi16::<2>(qh));
            let qh34 = join(qh, _mm256_srli_epi16::<2>(qh));
            let q12 = _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_and_si512(qh12, m2));
            let q34 = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                _mm512_and_si512(qh34, m2),
            );
            let p12 = _mm512_maddubs_epi16(q12, load_x64(x, 128 * h));
            let p34 = _mm512_maddubs_epi16(q34, load_x64(x, 128 * h + 64));
            acc = madd_acc::<VNNI>(acc, p12, pick4(s16, 0));
            acc = madd_acc::<VNNI>(acc, p34, pick4(s16, 4));
        }
        let a = _mm256_add_epi32(
            _mm512_castsi512_si256(acc),
            _mm512_extracti64x4_epi64::<1>(acc),
        );
        // The `- 32` of every weight: 32 * sum_g sc_g * bsums_g.
        let all = _mm256_cvtepi8_epi16(load16(sc_bytes));
        let offs = hsum_i32(_mm256_madd_epi16(all, bsums_vec(x)));
        hsum_i32(a) - 32 * offs
    }
}
