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

/// Quantizes `x` (a multiple of 32 long) into blocks appended to `out`.
pub(crate) fn quantize_q8(x: &[f32], out: &mut Vec<BlockQ8>) {
    for c in x.chunks_exact(32) {
        let amax = c.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; 32];
        let mut sum = 0i32;
        for (q, v) in qs.iter_mut().zip(c) {
            // |v * id| <= 127 by construction, so the cast cannot saturate.
            *q = (v * id).round() as i8;
            sum += i32::from(*q);
        }
        out.push(BlockQ8 {
            d,
            s: d * sum as f32,
            qs,
        });
    }
}

/// Dot product of one weight row (whole blocks of `ty`, one per element of `x`) with quantized
/// activations. The caller guarantees `has_q8_kernel(ty)` and `row.len() == x.len() * type_size`.
#[inline(always)]
pub(crate) fn dot_q8(ty: GgmlType, row: &[u8], x: &[BlockQ8]) -> f32 {
    match ty {
        GgmlType::Q4_0 => dot_blocks(row, x, 18, |b, xq| {
            let mut s = 0i32;
            for j in 0..16 {
                s += (i32::from(b[2 + j] & 15) - 8) * i32::from(xq.qs[j])
                    + (i32::from(b[2 + j] >> 4) - 8) * i32::from(xq.qs[j + 16]);
            }
            f16_at(b, 0) * xq.d * s as f32
        }),
        GgmlType::Q4_1 => dot_blocks(row, x, 20, |b, xq| {
            let mut s = 0i32;
            for j in 0..16 {
                s += i32::from(b[4 + j] & 15) * i32::from(xq.qs[j])
                    + i32::from(b[4 + j] >> 4) * i32::from(xq.qs[j + 16]);
            }
            f16_at(b, 0) * xq.d * s as f32 + f16_at(b, 2) * xq.s
        }),
        GgmlType::Q5_0 => dot_blocks(row, x, 22, |b, xq| {
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            let mut s = 0i32;
            for j in 0..16 {
                let lo = (u32::from(b[6 + j] & 15) | (((qh >> j) & 1) << 4)) as i32 - 16;
                let hi = (u32::from(b[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) as i32 - 16;
                s += lo * i32::from(xq.qs[j]) + hi * i32::from(xq.qs[j + 16]);
            }
            f16_at(b, 0) * xq.d * s as f32
        }),
        GgmlType::Q5_1 => dot_blocks(row, x, 24, |b, xq| {
            let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            let mut s = 0i32;
            for j in 0..16 {
                let lo = (u32::from(b[8 + j] & 15) | (((qh >> j) & 1) << 4)) as i32;
                let hi = (u32::from(b[8 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) as i32;
                s += lo * i32::from(xq.qs[j]) + hi * i32::from(xq.qs[j + 16]);
            }
            f16_at(b, 0) * xq.d * s as f32 + f16_at(b, 2) * xq.s
        }),
        GgmlType::Q8_0 => dot_blocks(row, x, 34, |b, xq| {
            let mut s = 0i32;
            for j in 0..32 {
                s += i32::from(b[2 + j] as i8) * i32::from(xq.qs[j]);
            }
            f16_at(b, 0) * xq.d * s as f32
        }),
        _ => 0.0,
    }
}

#[inline(always)]
fn dot_blocks(
    row: &[u8],
    x: &[BlockQ8],
    type_size: usize,
    block_dot: impl Fn(&[u8], &BlockQ8) -> f32,
) -> f32 {
    let mut acc = 0f32;
    for (b, xq) in row.chunks_exact(type_size).zip(x) {
        acc += block_dot(b, xq);
    }
    acc
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
            // which is what the integer kernel must reproduce up to float rounding.
            let mut xq = Vec::new();
            quantize_q8(&x, &mut xq);
            let want: f64 = w
                .iter()
                .enumerate()
                .map(|(i, wi)| {
                    let b = &xq[i / 32];
                    f64::from(*wi) * f64::from(b.d) * f64::from(b.qs[i % 32])
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
            assert!((b.d * f32::from(b.qs[i % 32]) - v).abs() <= b.d * 0.5 + 1e-7);
        }
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

    /// The run-time dispatched kernel (AVX2 where available) agrees with the portable one.
    #[test]
    fn dispatched_rows_match_portable_rows() {
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
        ] {
            let (bpr, n_rows, n_tokens) = (18, 5, 7);
            let rb = bpr * ty.type_size();
            let rows = tests::random_blocks_pub(ty, bpr * n_rows, 11 + ty.id() as u64);
            let x = tests::values_pub(bpr * 32 * n_tokens, 5);
            let mut xq = Vec::new();
            quantize_q8(&x, &mut xq);
            let mut a = vec![0f32; n_rows * n_tokens];
            let mut b = vec![0f32; n_rows * n_tokens];
            kernels::rows_q8(ty, &rows, rb, &xq, bpr, &mut a);
            simd::rows_q8(ty, &rows, rb, &xq, bpr, &mut b);
            for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                assert!(
                    (p - q).abs() <= 1e-5 * (1.0 + p.abs()),
                    "{ty} [{i}]: {p} vs {q}"
                );
            }
        }
    }
}
