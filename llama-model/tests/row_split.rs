//! A weight matrix split by output rows (the hybrid CPU + GPU split, the multi-device split)
//! joins back by concatenation, bit for bit: for every quant type, odd row counts and split
//! points (one-row parts too), one and several tokens, both CPU kernels,
//! `matmul` over each part's row view equals the rows of the product over the whole matrix.
//! The whole product is itself checked against an f64 dot product of the dequantized rows
//! (`gguf::dequantize`, whose decoders match llama.cpp's), so the parts are not merely equal
//! to each other.

use gguf::GgmlType;
use llama_model::cpu::{matmul, Kernel, TensorView};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Random blocks with every 16-bit scale finite: each scalar field of the ggml formats starts
/// at an even offset, so clearing bit 6 of every odd byte caps f16/bf16 exponents; f32
/// tensors get uniform values in [-1, 1).
fn random_tensor(rng: &mut StdRng, ty: GgmlType, n: usize) -> Vec<u8> {
    if ty == GgmlType::F32 {
        return (0..n)
            .flat_map(|_| rng.gen_range(-1.0f32..1.0).to_le_bytes())
            .collect();
    }
    let bytes = usize::try_from(ty.bytes_for(n as u64).expect("whole blocks")).unwrap();
    let mut v = vec![0u8; bytes];
    rng.fill(v.as_mut_slice());
    for b in v.iter_mut().skip(1).step_by(2) {
        *b &= !0x40;
    }
    v
}

#[test]
fn row_split_products_join_to_the_whole_product_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(0x0501_1017);
    let mut checked = 0usize;
    for ty in TYPES {
        let cols = 512; // two 256-element super-blocks, sixteen 32-element blocks
        for rows in [1usize, 7, 37, 130] {
            let data = random_tensor(&mut rng, ty, rows * cols);
            let w = TensorView::new("w", &data, ty, cols, rows).expect("view");
            let mut deq = vec![0f32; rows * cols];
            gguf::dequantize(ty, &data, &mut deq).expect("dequantize");
            for n_tokens in [1usize, 3] {
                let x: Vec<f32> = (0..n_tokens * cols)
                    .map(|_| rng.gen_range(-1.0f32..1.0))
                    .collect();
                for kernel in [Kernel::F32, Kernel::Q8] {
                    let mut whole = vec![f32::NAN; n_tokens * rows];
                    matmul(&w, &x, n_tokens, &mut whole, kernel).expect("whole");
                    // The whole product against f64 (loose for the 8-bit activation kernel).
                    for t in 0..n_tokens {
                        for r in 0..rows {
                            let row = &deq[r * cols..(r + 1) * cols];
                            let xt = &x[t * cols..(t + 1) * cols];
                            let e: f64 = row
                                .iter()
                                .zip(xt)
                                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                                .sum();
                            let scale: f64 = row
                                .iter()
                                .zip(xt)
                                .map(|(a, b)| (f64::from(*a) * f64::from(*b)).abs())
                                .sum::<f64>()
                                .max(1e-30);
                            let got = f64::from(whole[t * rows + r]);
                            let tol = if kernel == Kernel::F32 { 1e-5 } else { 2e-2 };
                            assert!(
                                (got - e).abs() <= tol * scale,
                                "{ty} {rows}x{cols} {kernel:?} token {t} row {r}: {got} vs f64 {e}"
                            );
                        }
                    }
                    let mut splits = vec![0, rows / 2, rows];
                    if rows > 2 {
                        splits = vec![0, 1, rows / 3, rows - 1, rows];
                    }
                    let mut joined = vec![f32::NAN; n_tokens * rows];
                    for pair in splits.windows(2) {
                        let (a, b) = (pair[0], pair[1]);
                        if a == b {
                            continue;
                        }
                        let part = w.rows(a..b).expect("row view");
                        let mut out = vec![f32::NAN; n_tokens * (b - a)];
                        matmul(&part, &x, n_tokens, &mut out, kernel).expect("part");
                        for t in 0..n_tokens {
                            joined[t * rows + a..t * rows + b]
                                .copy_from_slice(&out[t * (b - a)..(t + 1) * (b - a)]);
                        }
                    }
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&joined),
                        bits(&whole),
                        "{ty} {rows} rows {kernel:?} {n_tokens} tokens, splits {splits:?}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, TYPES.len() * 4 * 2 * 2);
}

/// A part of no rows (a matrix wholly on the other side of a split) is an empty product for
/// any number of tokens and either kernel, not an error or a panic.
#[test]
fn an_empty_row_part_is_an_empty_product() {
    let mut rng = StdRng::seed_from_u64(0x0501_1018);
    for ty in [GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::F16] {
        let (rows, cols) = (5usize, 256usize);
        let data = random_tensor(&mut rng, ty, rows * cols);
        let w = TensorView::new("w", &data, ty, cols, rows).expect("view");
        let none = w.rows(rows..rows).expect("empty view");
        assert_eq!(none.n_rows, 0);
        for n_tokens in [1usize, 2, 5] {
            let x = vec![0.5f32; n_tokens * cols];
            for kernel in [Kernel::Q8, Kernel::F32] {
                let mut out: Vec<f32> = Vec::new();
                matmul(&none, &x, n_tokens, &mut out, kernel)
                    .unwrap_or_else(|e| panic!("{ty} x {n_tokens} tokens, {kernel:?}: {e}"));
            }
        }
    }
}
