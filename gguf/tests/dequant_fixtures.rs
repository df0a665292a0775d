//! Dequantization against external references: for every ggml type, rows quantized by
//! llama.cpp (`<t>.quantized`) must decode to what the reference `gguf` Python package decoded
//! from the same bytes (`<t>.expected`), and stay close to the original values (`<t>.source`).
//! Fixtures: `tests/fixtures/quants/<TYPE>.gguf` (copied from the project's shared fixtures;
//! see the crate README).

use std::path::PathBuf;

use gguf::{dequantize, dequantize_rows, GgmlType, GgufFile};

/// (type, exact match required, bound on the relative RMS quantization error vs the source).
///
/// Bounds come from the formats, not from our output: f16 keeps 11 significant bits
/// (relative error <= 2^-11), bf16 8 bits (<= 2^-8); an n-bit block quantizer has a step of
/// about (block range) / 2^n, so its RMS error relative to normally distributed data with
/// 0.5% large outliers is of order 2^-n to a few times that. Garbage (wrong bit order, wrong
/// scales) gives a relative error near or above 1.
const CASES: [(GgmlType, bool, f64); 12] = [
    (GgmlType::F16, true, 1e-3),
    (GgmlType::BF16, true, 5e-3),
    (GgmlType::Q8_0, true, 0.02),
    (GgmlType::Q5_0, true, 0.1),
    (GgmlType::Q5_1, true, 0.1),
    (GgmlType::Q4_0, true, 0.2),
    (GgmlType::Q4_1, true, 0.2),
    (GgmlType::Q6_K, false, 0.05),
    (GgmlType::Q5_K, false, 0.1),
    (GgmlType::Q4_K, false, 0.2),
    (GgmlType::Q3_K, false, 0.3),
    (GgmlType::Q2_K, false, 0.5),
];

/// (tensor name prefix, row length, rows).
const TENSORS: [(&str, usize, usize); 2] = [("ffn_down", 1024, 16), ("attn_q", 512, 8)];

fn fixture(ty: GgmlType) -> GgufFile {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/quants")
        .join(format!("{}.gguf", ty.name()));
    GgufFile::open(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// Reads an F32 tensor by decoding its little-endian bytes here (independent of the crate).
fn f32_tensor(file: &GgufFile, name: &str) -> Vec<f32> {
    let info = file
        .tensor(name)
        .unwrap_or_else(|| panic!("missing {name}"));
    assert_eq!(info.ggml_type, GgmlType::F32, "{name}");
    let bytes = file.tensor_bytes(name).unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn every_fixture_decodes_to_the_reference_values() {
    let mut checked = 0;
    for (ty, exact, max_rel_rms) in CASES {
        let file = fixture(ty);
        for (t, row_len, n_rows) in TENSORS {
            let what = format!("{ty} {t}");
            let qname = format!("{t}.quantized");
            let info = file
                .tensor(&qname)
                .unwrap_or_else(|| panic!("{what}: no {qname}"));
            assert_eq!(info.ggml_type, ty, "{what}");
            assert_eq!(info.dims, [row_len as u64, n_rows as u64], "{what}");
            let q = file.tensor_bytes(&qname).unwrap();

            let expected = f32_tensor(&file, &format!("{t}.expected"));
            let source = f32_tensor(&file, &format!("{t}.source"));
            assert_eq!(expected.len(), row_len * n_rows, "{what}");
            assert_eq!(source.len(), row_len * n_rows, "{what}");

            let mut got = vec![f32::NAN; row_len * n_rows];
            dequantize(ty, q, &mut got).unwrap_or_else(|e| panic!("{what}: {e}"));

            for (i, (&a, &b)) in got.iter().zip(&expected).enumerate() {
                if exact {
                    assert!(
                        a.to_bits() == b.to_bits(),
                        "{what}: element {i} (row {}, col {}): got {a}, expected {b}",
                        i / row_len,
                        i % row_len
                    );
                } else {
                    let tol = 1e-6 * b.abs().max(f32::MIN_POSITIVE);
                    assert!(
                        (a - b).abs() <= tol,
                        "{what}: element {i} (row {}, col {}): got {a}, expected {b}",
                        i / row_len,
                        i % row_len
                    );
                }
            }

            // Row ranges decode to the matching slices of the whole tensor.
            for (s, e) in [(0, 1), (1, 4), (n_rows / 2, n_rows), (0, n_rows)] {
                let mut part = vec![f32::NAN; (e - s) * row_len];
                dequantize_rows(ty, q, row_len, s..e, &mut part).unwrap();
                assert!(
                    part.iter()
                        .zip(&got[s * row_len..e * row_len])
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{what}: rows {s}..{e}"
                );
            }

            // Quantization error against the original values.
            let (mut err2, mut src2) = (0f64, 0f64);
            for (&a, &s) in got.iter().zip(&source) {
                err2 += f64::from(a - s).powi(2);
                src2 += f64::from(s).powi(2);
            }
            let rel_rms = (err2 / src2).sqrt();
            assert!(
                rel_rms < max_rel_rms,
                "{what}: relative RMS error vs source {rel_rms:.4} >= bound {max_rel_rms}"
            );
            assert!(src2 > 0.0, "{what}: empty source");
            checked += 1;
        }
    }
    assert_eq!(checked, 24);
}
