//! The fast path for 32-element block formats: activations quantized to 8 bits per block of 32
//! (as llama.cpp does for its q8_0/q8_1 dot products), then integer dot products per block.
//!
//! For a weight block with scale `dw` (and minimum `m` for the `_1` formats) and an activation
//! block with scale `dx`, integers `qx` and `sx = dx * sum(qx)`:
//! `sum_j w_j x_j ~= dw * dx * sum_j qw_j qx_j (+ m * sx)`.

use gguf::GgmlType;

use super::blocks::f16_at;

/// One block of 32 activations quantized to i8: `x_j ~= d * qs[j]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockQ8 {
    /// Scale.
    pub d: f32,
    /// `d * sum(qs)`, used by formats with a minimum.
    pub s: f32,
    /// Quantized values.
    pub qs: [i8; 32],
}

/// True for the weight types [`dot_q8`] handles.
pub(crate) fn has_q8_kernel(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0
    )
}

/// Quantizes `x` (a multiple of 32 long) into blocks appended to `out`, with llama.cpp's x86
/// (AVX2) arithmetic for `quantize_row_q8_0` / `quantize_row_q8_1`:
/// - `amax = max |x_j|`, scale `d = amax / 127` stored as f16 (so `BlockQ8::d` holds the f16
///   value widened back to f32), inverse `id = 127 / amax` (not `1 / d`);
/// - `q_j = round(x_j * id)` with ties to EVEN (`_mm256_round_ps(.., _MM_ROUND_NEAREST)`; the
///   portable C reference uses `roundf`, ties away from zero, which llama.cpp's x86 builds never
///   run);
/// - for q8_1, `s = f16(d * sum_j q_j)` with the unrounded f32 `d`.
///
/// The q8_0 and q8_1 integers and scales are identical, so one block serves both pairings.
pub(crate) fn quantize_q8(x: &[f32], out: &mut Vec<BlockQ8>) {
    for c in x.chunks_exact(32) {
        let amax = c.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut qs = [0i8; 32];
        let mut sum = 0i32;
        for (q, v) in qs.iter_mut().zip(c) {
            // |v * id| <= 127 (+ rounding) by construction, so the cast cannot saturate.
            // Ties to even by adding and subtracting 1.5 * 2^23 (exact for |v * id| < 2^22;
            // `round_ties_even` would be a library call without SSE4.1).
            *q = ((v * id + 12_582_912.0) - 12_582_912.0) as i8;
            sum += i32::from(*q);
        }
        out.push(BlockQ8 {
            d: f16_round(d),
            s: f16_round(d * sum as f32),
            qs,
        });
    }
}

/// `v` rounded to the nearest f16 (ties to even, like F16C's `vcvtps2ph`), back as f32.
#[inline(always)]
fn f16_round(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

/// The integer products of one 32-element block, summed in the eight i32 lanes of llama.cpp's
/// AVX2 kernels (`maddubs` + `madd`): lane `l` holds elements `4l..4l + 4`.
#[inline(always)]
fn lanes(w: &[i32; 32], x: &[i8; 32]) -> [i32; 8] {
    let mut l = [0i32; 8];
    for (k, lane) in l.iter_mut().enumerate() {
        for j in 4 * k..4 * k + 4 {
            *lane += w[j] * i32::from(x[j]);
        }
    }
    l
}

/// Sum of eight lanes in the order of llama.cpp's `hsum_float_8` (and of [`super::simd`]):
/// `((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))`.
#[inline(always)]
pub(crate) fn hsum8(a: &[f32; 8]) -> f32 {
    let s = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (s[0] + s[2]) + (s[1] + s[3])
}

/// Dot product of one weight row (whole blocks of `ty`, one per element of `x`) with quantized
/// activations. The caller guarantees `has_q8_kernel(ty)` and `row.len() == x.len() * type_size`.
///
/// The float arithmetic is llama.cpp's AVX2 `ggml_vec_dot_*_q8_*`: per block, the eight lane
/// sums are converted to f32 and accumulated as `acc[l] = fma(dw * dx, lane[l], acc[l])`; the
/// `_1` formats add `m * s` per block into a separate scalar; the result is
/// `hsum8(acc) + mins`. The AVX2 kernels in [`super::simd`] compute the same, bit for bit.
#[inline(always)]
pub(crate) fn dot_q8(ty: GgmlType, row: &[u8], x: &[BlockQ8]) -> f32 {
    let (size, has_min) = match ty {
        GgmlType::Q4_0 => (18, false),
        GgmlType::Q4_1 => (20, true),
        GgmlType::Q5_0 => (22, false),
        GgmlType::Q5_1 => (24, true),
        GgmlType::Q8_0 => (34, false),
        _ => return 0.0,
    };
    let mut acc = [0f32; 8];
    let mut mins = 0f32;
    let mut w = [0i32; 32];
    for (b, xq) in row.chunks_exact(size).zip(x) {
        unpack(ty, b, &mut w);
        let l = lanes(&w, &xq.qs);
        let dd = f16_at(b, 0) * xq.d;
        for (a, v) in acc.iter_mut().zip(l) {
            *a = dd.mul_add(v as f32, *a);
        }
        if has_min {
            mins += f16_at(b, 2) * xq.s;
        }
    }
    hsum8(&acc) + mins
}

/// The 32 integer weights of one block, in element order (without scale or minimum).
#[inline(always)]
fn unpack(ty: GgmlType, b: &[u8], w: &mut [i32; 32]) {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let (qs, off) = if ty == GgmlType::Q4_0 {
                (&b[2..18], 8)
            } else {
                (&b[4..20], 0)
            };
            for (j, q) in qs.iter().enumerate() {
                w[j] = i32::from(q & 15) - off;
                w[j + 16] = i32::from(q >> 4) - off;
            }
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let (h, off) = if ty == GgmlType::Q5_0 {
                (2, 16)
            } else {
                (4, 0)
            };
            let qh = u32::from_le_bytes([b[h], b[h + 1], b[h + 2], b[h + 3]]);
            for (j, q) in b[h + 4..h + 20].iter().enumerate() {
                w[j] = (u32::from(q & 15) | (((qh >> j) & 1) << 4)) as i32 - off;
                w[j + 16] = (u32::from(q >> 4) | (((qh >> (j + 16)) & 1) << 4)) as i32 - off;
            }
        }
        _ => {
            for (wj, q) in w.iter_mut().zip(&b[2..34]) {
                *wj = i32::from(*q as i8);
            }
        }
    }
}

/// Dot product of two f32 slices with eight independent accumulators (vectorisable).
#[inline(always)]
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::blocks::decode_row;

    /// Deterministic pseudo-random values in [-1, 1) (xorshift), so tests need no RNG crate.
    fn values(n: usize, mut seed: u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    pub(super) fn values_pub(n: usize, seed: u64) -> Vec<f32> {
        values(n, seed)
    }

    pub(super) fn random_blocks_pub(ty: GgmlType, n_blocks: usize, seed: u64) -> Vec<u8> {
        random_blocks(ty, n_blocks, seed)
    }

    fn random_blocks(ty: GgmlType, n_blocks: usize, seed: u64) -> Vec<u8> {
        let raw = values(n_blocks * ty.type_size(), seed);
        let mut b: Vec<u8> = raw.iter().map(|v| (v.to_bits() >> 7) as u8).collect();
        // Put sane f16 scales/minimums at the front of every block.
        for blk in b.chunks_exact_mut(ty.type_size()) {
            blk[0..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
            if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                blk[2..4].copy_from_slice(&half::f16::from_f32(-0.07).to_le_bytes());
            }
        }
        b
    }

    #[test]
    fn q8_dot_matches_f32_dot_of_decoded_blocks() {
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
        ] {
            let n_blocks = 12;
            let row = random_blocks(ty, n_blocks, 7 + ty.id() as u64);
            let x = values(n_blocks * 32, 99);
            let mut w = vec![0f32; n_blocks * 32];
            decode_row(ty, &row, &mut w).unwrap();
            // Reference: exact f64 dot of the decoded weights with the *quantized* activations,
            // which is what the integer kernel must reproduce up to float rounding. For the
            // formats with a minimum `m` (w = d q + m), the `m * sum(x)` part uses the block's
            // stored f16 sum `s` (as llama.cpp's q8_1 does) instead of `d * sum(q)`.
            let mut xq = Vec::new();
            quantize_q8(&x, &mut xq);
            let has_min = matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1);
            let want: f64 = (0..n_blocks)
                .map(|bi| {
                    let b = &xq[bi];
                    let m = if has_min {
                        f64::from(f16_at(&row[bi * ty.type_size()..], 2))
                    } else {
                        0.0
                    };
                    let dq: f64 = (0..32)
                        .map(|j| {
                            (f64::from(w[bi * 32 + j]) - m) * f64::from(b.d) * f64::from(b.qs[j])
                        })
                        .sum();
                    dq + m * f64::from(b.s)
                })
                .sum();
            let got = dot_q8(ty, &row, &xq);
            assert!(
                (f64::from(got) - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "{ty}: got {got}, want {want}"
            );
            // And close to the unquantized dot (8-bit activations lose ~1% at most here).
            let exact: f32 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
            let scale: f32 = w.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
            assert!(
                (got - exact).abs() <= 0.02 * scale,
                "{ty}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn quantize_q8_round_trips_within_half_a_step() {
        let x = values(64, 3);
        let mut q = Vec::new();
        quantize_q8(&x, &mut q);
        for (i, v) in x.iter().enumerate() {
            let b = &q[i / 32];
            // Half a step, plus the f16 rounding of the stored scale (2^-11 relative, times
            // |q| <= 127).
            assert!((b.d * f32::from(b.qs[i % 32]) - v).abs() <= b.d * (0.5 + 0.07));
        }
    }

    /// llama.cpp's x86 quantizer: `id = 127 / amax`, ties rounded to even, scale stored as f16,
    /// and for q8_1 `s = f16(d * sum q)`.
    #[test]
    fn quantize_q8_rounds_ties_to_even_with_f16_scales() {
        // amax = 127 gives d = 1 and id = 1, so the products are the values themselves.
        let mut x = [0f32; 32];
        x[..6].copy_from_slice(&[0.5, 1.5, 2.5, -0.5, -1.5, -2.5]);
        x[31] = 127.0;
        let mut q = Vec::new();
        quantize_q8(&x, &mut q);
        assert_eq!(&q[0].qs[..6], &[0, 2, 2, 0, -2, -2]);
        assert_eq!(q[0].qs[31], 127);
        assert_eq!(q[0].d, 1.0);
        assert_eq!(q[0].s, 127.0);
        // amax = 1: d = 1/127 is not an f16, so the stored scale is its f16 rounding.
        let mut x = [0f32; 32];
        x[0] = 1.0;
        x[1] = -0.3;
        let mut q = Vec::new();
        quantize_q8(&x, &mut q);
        let d16 = half::f16::from_f32(1.0 / 127.0).to_f32();
        assert_eq!(q[0].d, d16);
        assert_ne!(q[0].d, 1.0 / 127.0);
        // -0.3 * 127 = -38.1 -> -38; s = f16((1/127) * (127 - 38)).
        assert_eq!(q[0].qs[1], -38);
        assert_eq!(q[0].s, half::f16::from_f32(89.0 / 127.0).to_f32());
    }

    #[test]
    fn dot_f32_matches_naive_sum() {
        let a = values(37, 1);
        let b = values(37, 2);
        let want: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        assert!((f64::from(dot_f32(&a, &b)) - want).abs() < 1e-5);
    }
}

#[cfg(test)]
mod dispatch_tests {
    use super::*;
    use crate::cpu::{kernels, simd};

    /// The run-time dispatched kernel (AVX2 where available) and the portable one implement one
    /// definition (llama.cpp's AVX2 block arithmetic), so they must agree bit for bit, for
    /// single tokens and for the four-token batches of the AVX2 code.
    #[test]
    fn dispatched_rows_equal_portable_rows_bit_for_bit() {
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
        ] {
            for n_tokens in [1, 4, 7] {
                let (bpr, n_rows) = (18, 5);
                let rb = bpr * ty.type_size();
                let rows = tests::random_blocks_pub(ty, bpr * n_rows, 11 + ty.id() as u64);
                let x = tests::values_pub(bpr * 32 * n_tokens, 5 + n_tokens as u64);
                let mut xq = Vec::new();
                quantize_q8(&x, &mut xq);
                let mut a = vec![0f32; n_rows * n_tokens];
                let mut b = vec![0f32; n_rows * n_tokens];
                kernels::rows_q8(ty, &rows, rb, &xq, bpr, &mut a);
                simd::rows_q8(ty, &rows, rb, &xq, bpr, &mut b);
                for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                    assert_eq!(
                        p.to_bits(),
                        q.to_bits(),
                        "{ty} x{n_tokens} [{i}]: {p} vs {q}"
                    );
                }
            }
        }
    }
}
