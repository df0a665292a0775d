//! Tests of the q8_K path against outside references: the `gguf` crate's dequantizers (which
//! follow llama.cpp's) and f64 arithmetic.

use super::*;
use crate::cpu::decode_row;
use crate::sys::simd_k;

const TYPES: [GgmlType; 3] = [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K];

/// Deterministic pseudo-random u64 stream (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Random super-blocks with sane f16 scales (random bits elsewhere: every scale, minimum and
/// quant value occurs).
fn random_blocks(ty: GgmlType, n_blocks: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let bb = block_bytes(ty);
    let mut v: Vec<u8> = (0..n_blocks * bb).map(|_| rng.next() as u8).collect();
    for b in v.chunks_exact_mut(bb) {
        let d = 0.002 + 0.01 * rng.f().abs();
        let m = 0.001 + 0.01 * rng.f().abs();
        let at = if ty == GgmlType::Q6_K { 208 } else { 0 };
        b[at..at + 2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
        if ty != GgmlType::Q6_K {
            b[2..4].copy_from_slice(&half::f16::from_f32(m).to_le_bytes());
        }
    }
    v
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed | 1);
    (0..n).map(|_| rng.f() * 3.0).collect()
}

#[test]
fn quantize_q8k_follows_llama_cpp() {
    let mut x = values(512, 3);
    x[300] = 0.0;
    // The value of largest magnitude always becomes -127; the scale carries the sign.
    x[17] = 5.0; // of block 0, positive: d < 0
    x[400] = -4.0; // of block 1, negative: d > 0
    let mut q = Vec::new();
    quantize_q8k(&x, &mut q);
    assert_eq!(q.len(), 2);
    assert_eq!(q[0].qs[17], -127);
    assert_eq!(q[1].qs[400 - 256], -127);
    assert!(q[0].d < 0.0 && q[1].d > 0.0);
    for (bi, b) in q.iter().enumerate() {
        for g in 0..16 {
            let s: i32 = b.qs[16 * g..16 * g + 16]
                .iter()
                .map(|&v| i32::from(v))
                .sum();
            assert_eq!(i32::from(b.bsums[g]), s);
        }
        for j in 0..QK_K {
            let v = x[bi * QK_K + j];
            // Half a step (plus f32 rounding of the scale products).
            let err = (b.d * f32::from(b.qs[j]) - v).abs();
            assert!(err <= b.d.abs() * 0.5001, "{bi}/{j}: {v} vs {}", b.qs[j]);
        }
    }
    // Ties go to even: with max = -127, iscale = 1 and the products are the values.
    let mut t = vec![0f32; 256];
    t[..4].copy_from_slice(&[0.5, 1.5, 2.5, -2.5]);
    t[255] = -127.0;
    quantize_q8k(&t, &mut q);
    assert_eq!(&q[0].qs[..4], &[0, 2, 2, -2]);
    assert_eq!(q[0].d, 1.0);
    // A block of zeros stays zero.
    quantize_q8k(&[0f32; 256], &mut q);
    assert_eq!(q[0].d, 0.0);
    assert!(q[0].qs.iter().all(|&v| v == 0));
}

#[test]
fn scale_unpacking_matches_the_bitwise_definition() {
    let mut rng = Rng(77);
    for _ in 0..200 {
        let mut p = [0u8; 12];
        for b in p.iter_mut() {
            *b = rng.next() as u8;
        }
        let (sc, mn) = scales_mins_k4(&p);
        for j in 0..8 {
            let (want_sc, want_m) = if j < 4 {
                (p[j] & 63, p[j + 4] & 63)
            } else {
                (
                    (p[j + 4] & 15) | ((p[j - 4] >> 6) << 4),
                    (p[j + 4] >> 4) | ((p[j] >> 6) << 4),
                )
            };
            assert_eq!((sc >> (8 * j)) as u8, want_sc);
            assert_eq!((mn >> (8 * j)) as u8, want_m);
        }
    }
}

/// Each kernel (portable and run-time dispatched) against two f64 references built from the
/// dequantized weights `w` (the `gguf` decoder):
/// - with the q8_K activations `d * q` it must agree to f32 rounding (the integer sums are
///   exact; the f32 steps lose ~2^-24 relative per super-block term): tolerance
///   `1e-5 * sum |w_j| |x_j| + 1e-6`;
/// - with the exact f32 activations, the difference is the quantization error: each activation
///   is off by at most half a step, `|x_j - d_b q_j| <= |d_b| / 2` (`d_b` the q8_K scale of its
///   block), so `|err| <= sum_b |d_b| / 2 * sum_{j in b} |w_j|`, plus the same f32 term.
#[test]
fn kernels_match_f64_references_of_the_dequantized_weights() {
    for ty in TYPES {
        for (n_rows, n_sb) in [(1usize, 1usize), (5, 2), (13, 3)] {
            let row_bytes = n_sb * block_bytes(ty);
            let data = random_blocks(ty, n_rows * n_sb, 100 + ty.id() as u64 + n_rows as u64);
            let x = values(n_sb * QK_K, 9 + n_sb as u64);
            let mut xq = Vec::new();
            quantize_q8k(&x, &mut xq);
            let mut portable = vec![0f32; n_rows];
            let mut dispatched = vec![0f32; n_rows];
            rows_q8k(ty, &data, row_bytes, &xq, n_sb, &mut portable);
            simd_k::rows_q8k(ty, &data, row_bytes, &xq, n_sb, &mut dispatched);
            for r in 0..n_rows {
                let mut w = vec![0f32; n_sb * QK_K];
                decode_row(ty, &data[r * row_bytes..(r + 1) * row_bytes], &mut w).unwrap();
                let (mut exact, mut quant, mut mag, mut qbound) = (0f64, 0f64, 0f64, 0f64);
                for (j, wj) in w.iter().enumerate() {
                    let (wj, b) = (f64::from(*wj), &xq[j / QK_K]);
                    exact += wj * f64::from(x[j]);
                    quant += wj * f64::from(b.d) * f64::from(b.qs[j % QK_K]);
                    mag += wj.abs() * f64::from(x[j]).abs();
                    qbound += wj.abs() * f64::from(b.d).abs() * 0.5;
                }
                let ftol = 1e-5 * mag + 1e-6;
                for (name, got) in [("portable", portable[r]), ("dispatched", dispatched[r])] {
                    let got = f64::from(got);
                    assert!(
                        (got - quant).abs() <= ftol,
                        "{ty} {name} {n_rows}x{n_sb} row {r}: {got} vs q8_K reference {quant}"
                    );
                    assert!(
                        (got - exact).abs() <= qbound + ftol,
                        "{ty} {name} {n_rows}x{n_sb} row {r}: {got} vs {exact} (bound {qbound})"
                    );
                }
                // The bound is meaningful: well below the size of the product's terms.
                assert!(qbound < 0.05 * mag, "{ty}: bound {qbound} vs {mag}");
            }
        }
    }
}

/// Every SIMD copy the CPU runs (AVX2, AVX-512BW, VNNI: each level up to the detected one) sums the same exact integers and run the
/// same f32 steps (each row's super-blocks in order, also through the column tiles of the
/// one-token loop) as the portable ones, so they agree bit for bit, for one and several tokens.
#[test]
fn dispatched_rows_equal_portable_rows_bit_for_bit() {
    for ty in TYPES {
        // 40 super-blocks x 19 rows: several column tiles and row groups of the one-token loop.
        for (n_tokens, n_sb, n_rows) in
            [(1usize, 4usize, 7usize), (1, 40, 19), (2, 4, 7), (5, 3, 3)]
        {
            let row_bytes = n_sb * block_bytes(ty);
            let data = random_blocks(ty, n_sb * n_rows, 40 + ty.id() as u64);
            let x = values(n_sb * QK_K * n_tokens, 5 + n_tokens as u64);
            let mut xq = Vec::new();
            quantize_q8k(&x, &mut xq);
            let mut a = vec![0f32; n_rows * n_tokens];
            rows_q8k(ty, &data, row_bytes, &xq, n_sb, &mut a);
            // Every copy this CPU runs, not only the one dispatch picks.
            for level in 0..=simd_k::detected_level() {
                let name = simd_k::LEVEL_NAMES[usize::from(level)];
                let mut b = vec![0f32; n_rows * n_tokens];
                simd_k::rows_q8k_at(level, ty, &data, row_bytes, &xq, n_sb, &mut b);
                for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                    assert_eq!(
                        p.to_bits(),
                        q.to_bits(),
                        "{ty} {name} x{n_tokens} [{i}]: {p} vs {q}"
                    );
                }
            }
        }
    }
}

/// Extreme weights and activations: every quant at its maximum against +-127 activations
/// (the i16 pair sums of `maddubs` stay below saturation), still bit-identical and exact.
#[test]
fn extreme_values_do_not_saturate() {
    for ty in TYPES {
        let mut b = vec![0xffu8; block_bytes(ty)];
        let at = if ty == GgmlType::Q6_K { 208 } else { 0 };
        b[at..at + 2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        if ty != GgmlType::Q6_K {
            b[2..4].copy_from_slice(&half::f16::from_f32(0.0).to_le_bytes());
        } else {
            b[192..208].fill(0x80); // scales -128
        }
        for sign in [1.0f32, -1.0] {
            let x = vec![sign; QK_K];
            let mut xq = Vec::new();
            quantize_q8k(&x, &mut xq);
            let mut p = [0f32];
            rows_q8k(ty, &b, b.len(), &xq, 1, &mut p);
            for level in 0..=simd_k::detected_level() {
                let mut d = [0f32];
                simd_k::rows_q8k_at(level, ty, &b, b.len(), &xq, 1, &mut d);
                assert_eq!(p[0].to_bits(), d[0].to_bits(), "{ty} level {level}");
            }
            let mut w = vec![0f32; QK_K];
            decode_row(ty, &b, &mut w).unwrap();
            let want: f64 = w.iter().map(|v| f64::from(*v) * f64::from(sign)).sum();
            assert!(
                (f64::from(p[0]) - want).abs() <= 1e-5 * want.abs(),
                "{ty}: {} vs {want}",
                p[0]
            );
        }
    }
}
