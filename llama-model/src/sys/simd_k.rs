//! AVX2 kernels for the k-quant formats against q8_K activations (see [`crate::cpu::q8k`] for
//! the layouts and the arithmetic they reproduce bit for bit), chosen at run time.
//!
//! The integer work per super-block is llama.cpp's technique: unsigned weight bytes times
//! signed activation bytes with `maddubs` (i16 pairs, no saturation: `q <= 63`,
//! `|x| <= 127`, so a pair is at most 16002), then `madd` by the sub-block scale into i32.
//! Sums are exact integers, reduced once per super-block, then the shared f32 step.
//!
//! AVX-512 copies (BW: 64 bytes per `maddubs`/`madd`; VNNI: `vpdpwssd` fusing scale and add)
//! exist only when the compiler is Rust 1.89 or newer, where the AVX-512 target features became
//! stable: `build.rs` sets `cfg(vramless_avx512)` then. Under the crate's rust-version (1.88)
//! the AVX2 copy is the fastest. All copies sum the same exact integers, so they agree bit for
//! bit with the portable code.
#![allow(unsafe_code)]

use gguf::GgmlType;

use crate::cpu::q8k::{self, BlockQ8K};

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

/// The copies of the k-quant loops, as levels: 3 AVX-512 F/BW/VNNI (+ AVX2, FMA, F16C),
/// 2 AVX-512 F/BW (+ ...), 1 AVX2 + FMA + F16C, 0 portable.
pub(crate) const LEVEL_NAMES: [&str; 4] = ["portable", "avx2", "avx512bw", "avx512-vnni"];

/// The highest level this CPU (and this build) runs.
pub(crate) fn detected_level() -> u8 {
    static LEVEL: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> u8 {
    if !has_avx2() {
        return 0;
    }
    #[cfg(vramless_avx512)]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
    {
        return if std::arch::is_x86_feature_detected!("avx512vnni") {
            3
        } else {
            2
        };
    }
    1
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> u8 {
    0
}

/// A process-wide ceiling on the level (see [`crate::cpu::limit_kquant_simd`]).
static CEILING: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(u8::MAX);

/// Sets the ceiling (levels above it are not used).
pub(crate) fn set_ceiling(level: u8) {
    CEILING.store(level, std::sync::atomic::Ordering::Relaxed);
}

/// The level products run at: the detected one, under the ceiling.
pub(crate) fn level() -> u8 {
    detected_level().min(CEILING.load(std::sync::atomic::Ordering::Relaxed))
}

/// Which copy of the k-quant loops products run: "avx512-vnni", "avx512bw", "avx2" or
/// "portable".
pub(crate) fn q8k_path() -> &'static str {
    LEVEL_NAMES[usize::from(level().min(3))]
}

/// See [`q8k::rows_q8k`].
pub(crate) fn rows_q8k(
    ty: GgmlType,
    rows: &[u8],
    row_bytes: usize,
    xq: &[BlockQ8K],
    blocks_per_row: usize,
    out: &mut [f32],
) {
    rows_q8k_at(level(), ty, rows, row_bytes, xq, blocks_per_row, out)
}

/// [`rows_q8k`] with the copy of `level` (at most the detected level: a higher one runs the
/// detected level's copy).
pub(crate) fn rows_q8k_at(
    level: u8,
    ty: GgmlType,
    rows: &[u8],
    row_bytes: usize,
    xq: &[BlockQ8K],
    blocks_per_row: usize,
    out: &mut [f32],
) {
    let level = level.min(detected_level());
    #[cfg(all(target_arch = "x86_64", vramless_avx512))]
    match level {
        3 => {
            // SAFETY: `rows_q8k_vnni` only requires the CPU features enabled on it, and
            // `detected_level()` found every one of them on this CPU.
            unsafe { rows_q8k_vnni(ty, rows, row_bytes, xq, blocks_per_row, out) };
            return;
        }
        2 => {
            // SAFETY: as above, for the features of `rows_q8k_avx512`.
            unsafe { rows_q8k_avx512(ty, rows, row_bytes, xq, blocks_per_row, out) };
            return;
        }
        _ => {}
    }
    #[cfg(target_arch = "x86_64")]
    if level >= 1 {
        // SAFETY: `rows_q8k_avx2` only requires the CPU features enabled on it, and
        // `detected_level()` found every one of them on this CPU.
        unsafe { rows_q8k_avx2(ty, rows, row_bytes, xq, blocks_per_row, out) };
        return;
    }
    q8k::rows_q8k(ty, rows, row_bytes, xq, blocks_per_row, out)
}

/// How far ahead of the super-block being computed the row loops prefetch weights (bytes).
#[cfg(target_arch = "x86_64")]
pub(crate) const PREFETCH_AHEAD: usize = 2048;

/// The row loop around per-super-block integer sums `$k4` (Q4_K/Q5_K, generic over "has
/// qh") and `$q6` (Q6_K): the shared f32 steps of [`q8k`], each row's super-blocks in order.
/// (Column tiles of 16 super-blocks over groups of 8 rows, to keep the activations of wide
/// rows in L1, measured slower on the dev machine: 8 vs 13 GB/s per core for 4096 x 14336
/// Q4_K; not kept.)
#[cfg(target_arch = "x86_64")]
macro_rules! row_loop {
    ($ty:expr, $rows:expr, $row_bytes:expr, $xq:expr, $bpr:expr, $out:expr, $m:ident :: $k4:ident, $m6:ident :: $q6:ident) => {{
        let (ty, row_bytes, bpr) = ($ty, $row_bytes, $bpr);
        let n_tokens = $xq.len() / bpr.max(1);
        let bb = q8k::block_bytes(ty);
        // `acc` plus the super-blocks of `w` (whole blocks) against `x`, in order.
        let run = |mut acc: f32, w: &[u8], x: &[BlockQ8K]| -> f32 {
            let blocks = w.chunks_exact(bb).zip(x);
            match ty {
                GgmlType::Q4_K => {
                    for (b, xb) in blocks {
                        avx2::prefetch_block(b);
                        let (sumi, summ) = $m::$k4::<false>(b, xb);
                        let (d, dmin) = avx2::f16_pair(b);
                        acc = q8k::accumulate_k4(acc, d, dmin, xb.d, sumi, summ);
                    }
                }
                GgmlType::Q5_K => {
                    for (b, xb) in blocks {
                        avx2::prefetch_block(b);
                        let (sumi, summ) = $m::$k4::<true>(b, xb);
                        let (d, dmin) = avx2::f16_pair(b);
                        acc = q8k::accumulate_k4(acc, d, dmin, xb.d, sumi, summ);
                    }
                }
                GgmlType::Q6_K => {
                    for (b, xb) in blocks {
                        avx2::prefetch_block(b);
                        let d = q8k::f16_scale(b, 208);
                        acc = q8k::accumulate_q6k(acc, d, xb.d, $m6::$q6(b, xb));
                    }
                }
                _ => {}
            }
            acc
        };
        for (r, o) in $rows
            .chunks_exact(row_bytes)
            .zip($out.chunks_exact_mut(n_tokens))
        {
            for (t, ot) in o.iter_mut().enumerate() {
                *ot = run(0.0, r, &$xq[t * bpr..(t + 1) * bpr]);
            }
        }
    }};
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_q8k_avx2(
    ty: GgmlType,
    rows: &[u8],
    row_bytes: usize,
    xq: &[BlockQ8K],
    bpr: usize,
    out: &mut [f32],
) {
    row_loop!(
        ty,
        rows,
        row_bytes,
        xq,
        bpr,
        out,
        avx2::sums_k4,
        avx2::sum_q6k
    )
}

/// AVX-512BW copy of the loop (i16 products summed by `madd`).
#[cfg(all(target_arch = "x86_64", vramless_avx512))]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn rows_q8k_avx512(
    ty: GgmlType,
    rows: &[u8],
    row_bytes: usize,
    xq: &[BlockQ8K],
    bpr: usize,
    out: &mut [f32],
) {
    row_loop!(
        ty,
        rows,
        row_bytes,
        xq,
        bpr,
        out,
        avx512::sums_k4_bw,
        avx512::sum_q6k_bw
    )
}

/// AVX-512 VNNI copy of the loop (`vpdpwssd` fuses the scale multiply and the add).
#[cfg(all(target_arch = "x86_64", vramless_avx512))]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn rows_q8k_vnni(
    ty: GgmlType,
    rows: &[u8],
    row_bytes: usize,
    xq: &[BlockQ8K],
    bpr: usize,
    out: &mut [f32],
) {
    row_loop!(
        ty,
        rows,
        row_bytes,
        xq,
        bpr,
        out,
        avx512::sums_k4_vnni,
        avx512::sum_q6k_vnni
    )
}

/// The per-super-block integer sums. Each is a safe `fn` with the avx2 target features, only
/// reached through `rows_q8k_avx2`, i.e. after the run-time check.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    use super::BlockQ8K;
    use crate::cpu::q8k::scales_mins_k4;

    /// Asks the cache for the line `ahead` bytes past the start of `b` (the weights a row loop
    /// reaches soon), so streaming from RAM overlaps the arithmetic on the bytes before it.
    #[inline(always)]
    pub(crate) fn prefetch(b: &[u8], ahead: usize) {
        // SAFETY: a prefetch is a hint that never faults and reads nothing into the program,
        // whatever the address (here possibly past the slice's end; `wrapping_add` keeps the
        // pointer arithmetic defined); SSE is baseline on x86_64.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(b.as_ptr().wrapping_add(ahead).cast()) }
    }

    /// [`prefetch`]es the lines of the super-block [`super::PREFETCH_AHEAD`] bytes past block
    /// `b` (all of its bytes: one hint per 64).
    #[inline(always)]
    pub(super) fn prefetch_block(b: &[u8]) {
        let mut at = 0;
        while at < b.len() {
            prefetch(b, super::PREFETCH_AHEAD + at);
            at += 64;
        }
    }

    /// The f16 pair at `b[0..4]` (`d`, `dmin`) to f32 with one F16C conversion (exact, like
    /// the portable conversion).
    #[target_feature(enable = "avx2,f16c")]
    pub(super) fn f16_pair(b: &[u8]) -> (f32, f32) {
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes(*arr::<4>(b, 0))));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
    }

    /// A fixed-size view of `b[at..at + N]` (constant lengths: the check folds away).
    #[inline(always)]
    pub(super) fn arr<const N: usize>(b: &[u8], at: usize) -> &[u8; N] {
        match b.get(at..at + N).and_then(|s| <&[u8; N]>::try_from(s).ok()) {
            Some(a) => a,
            None => &[0; N],
        }
    }

    /// 32 bytes from a 32-byte array.
    #[target_feature(enable = "avx2")]
    pub(super) fn load(b: &[u8; 32]) -> __m256i {
        // SAFETY: `b` is 32 readable bytes; `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
    }

    /// Activations `x.qs[at..at + 32]`.
    #[target_feature(enable = "avx2")]
    pub(super) fn load_x(x: &BlockQ8K, at: usize) -> __m256i {
        let s: &[i8; 32] =
            x.qs.get(at..at + 32)
                .and_then(|s| s.try_into().ok())
                .unwrap_or(&[0; 32]);
        // SAFETY: `s` is 32 readable bytes; `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
    }

    /// Sum of the eight i32 lanes (exact, wrapping like the portable sum never needs to).
    #[target_feature(enable = "avx2")]
    pub(super) fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }

    /// `(sumi, summ)` of one Q4_K (`QH = false`) or Q5_K (`QH = true`) super-block.
    #[target_feature(enable = "avx2")]
    pub(super) fn sums_k4<const QH: bool>(b: &[u8], x: &BlockQ8K) -> (i32, i32) {
        let (sc, mins) = scales_mins_k4(arr::<12>(b, 4));
        let qs_at = if QH { 48 } else { 16 };
        let m4 = _mm256_set1_epi8(0x0f);
        let bit4 = _mm256_set1_epi8(0x10);
        let mut qh = if QH {
            load(arr::<32>(b, 16))
        } else {
            _mm256_setzero_si256()
        };
        let mut acc = _mm256_setzero_si256();
        for c in 0..4 {
            let q = load(arr::<32>(b, qs_at + 32 * c));
            let mut lo = _mm256_and_si256(q, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
            if QH {
                // Bit 2c of each qh byte to bit 4 (low nibbles), bit 2c + 1 (high nibbles);
                // `qh` is shifted right by 2 per chunk (16-bit shifts: only bits 0-1 of each
                // byte are read, and those still come from the same byte).
                lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16::<4>(qh), bit4));
                hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16::<3>(qh), bit4));
                qh = _mm256_srli_epi16::<2>(qh);
            }
            let s0 = ((sc >> (16 * c)) & 0xff) as i16;
            let s1 = ((sc >> (16 * c + 8)) & 0xff) as i16;
            let p0 = _mm256_maddubs_epi16(lo, load_x(x, 64 * c));
            let p1 = _mm256_maddubs_epi16(hi, load_x(x, 64 * c + 32));
            let p0 = _mm256_madd_epi16(p0, _mm256_set1_epi16(s0));
            let p1 = _mm256_madd_epi16(p1, _mm256_set1_epi16(s1));
            acc = _mm256_add_epi32(acc, _mm256_add_epi32(p0, p1));
        }
        reduce_k4(acc, mins, x)
    }

    /// `(sum of the lanes of acc, sum_j m_j * (bsums[2j] + bsums[2j + 1]))`, for the mins octet
    /// `mins` of [`scales_mins_k4`].
    #[target_feature(enable = "avx2")]
    pub(super) fn reduce_k4(acc: __m256i, mins: u64, x: &BlockQ8K) -> (i32, i32) {
        // summ: bsums pair sums (i16, at most 2 * 16 * 127) times the 8 minimums.
        let bs = bsums_vec(x);
        let pairs = _mm_hadd_epi16(
            _mm256_castsi256_si128(bs),
            _mm256_extracti128_si256::<1>(bs),
        );
        let m16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(mins as i64));
        let m = _mm_madd_epi16(pairs, m16);
        // Both reductions at once: [sumi, summ, sumi, summ].
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(acc),
            _mm256_extracti128_si256::<1>(acc),
        );
        let r = _mm_hadd_epi32(s, m);
        let r = _mm_hadd_epi32(r, r);
        (_mm_cvtsi128_si32(r), _mm_extract_epi32::<1>(r))
    }

    /// `sumi` of one Q6_K super-block: scale-weighted `q * x` minus `32 * sum_g sc_g bsums_g`.
    #[target_feature(enable = "avx2")]
    pub(super) fn sum_q6k(b: &[u8], x: &BlockQ8K) -> i32 {
        let m4 = _mm256_set1_epi8(0x0f);
        let m2 = _mm256_set1_epi8(0x30);
        // Scales as i16, both halves of the register holding the same eight.
        let sc_bytes = arr::<16>(b, 192);
        let mut acc = _mm256_setzero_si256();
        for h in 0..2 {
            let s8 = i64::from_le_bytes(*arr::<8>(sc_bytes, 8 * h));
            let s16 = _mm_cvtepi8_epi16(_mm_cvtsi64_si128(s8));
            let s16 = _mm256_broadcastsi128_si256(s16);
            let ql0 = load(arr::<32>(b, 64 * h));
            let ql1 = load(arr::<32>(b, 64 * h + 32));
            let qh = load(arr::<32>(b, 128 + 32 * h));
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(ql0, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                    _mm256_and_si256(qh, m2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m2),
                ),
            ];
            for (k, qk) in q.iter().enumerate() {
                // Low 128 bits (16 weights) take scale 2k, high 128 bits scale 2k + 1.
                let sc = shuffle_pair(s16, k);
                let p = _mm256_maddubs_epi16(*qk, load_x(x, 128 * h + 32 * k));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, sc));
            }
        }
        // The `- 32` of every weight: 32 * sum_g sc_g * bsums_g.
        let all = _mm256_cvtepi8_epi16(load16(sc_bytes));
        let bs = bsums_vec(x);
        let offs = hsum_i32(_mm256_madd_epi16(all, bs));
        hsum_i32(acc) - 32 * offs
    }

    /// A register whose low half is i16 lane `2k` of `s16` repeated, and high half lane `2k+1`.
    #[target_feature(enable = "avx2")]
    fn shuffle_pair(s16: __m256i, k: usize) -> __m256i {
        let (a, b) = ((4 * k) as i8, (4 * k + 2) as i8);
        let ctl = _mm256_setr_epi8(
            a,
            a + 1,
            a,
            a + 1,
            a,
            a + 1,
            a,
            a + 1,
            a,
            a + 1,
            a,
            a + 1,
            a,
            a + 1,
            a,
            a + 1,
            b,
            b + 1,
            b,
            b + 1,
            b,
            b + 1,
            b,
            b + 1,
            b,
            b + 1,
            b,
            b + 1,
            b,
            b + 1,
            b,
            b + 1,
        );
        _mm256_shuffle_epi8(s16, ctl)
    }

    /// 16 bytes from a 16-byte array.
    #[target_feature(enable = "avx2")]
    pub(super) fn load16(b: &[u8; 16]) -> __m128i {
        // SAFETY: `b` is 16 readable bytes; `loadu` has no alignment requirement.
        unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
    }

    /// The 16 i16 `bsums` of an activation block.
    #[target_feature(enable = "avx2")]
    pub(super) fn bsums_vec(x: &BlockQ8K) -> __m256i {
        // SAFETY: `bsums` is 16 i16 = 32 readable bytes; `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_si256(x.bsums.as_ptr().cast()) }
    }
}

#[cfg(all(target_arch = "x86_64", vramless_avx512))]
#[path = "simd_k512.rs"]
mod avx512;
