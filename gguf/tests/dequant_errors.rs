//! Input validation of the dequantization API and row-range decoding.

use gguf::quant::{dequantize_to_vec, dequantized_len};
use gguf::types::ALL_TYPES;
use gguf::{dequantize, dequantize_rows, is_dequant_supported, DequantError, GgmlType};

const SUPPORTED: [GgmlType; 14] = [
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
    GgmlType::Q8_K,
];

/// Pseudo-random bytes with bit 6 of every odd byte clear (keeps f16/bf16/f32 fields finite).
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let b = (s >> 24) as u8;
            if i % 2 == 1 {
                b & !0x40
            } else {
                b
            }
        })
        .collect()
}

#[test]
fn supported_set_is_exactly_the_documented_one() {
    for ty in ALL_TYPES {
        assert_eq!(is_dequant_supported(ty), SUPPORTED.contains(&ty), "{ty}");
    }
}

#[test]
fn unsupported_types_are_refused_with_a_clear_message() {
    for ty in ALL_TYPES.into_iter().filter(|t| !SUPPORTED.contains(t)) {
        let bytes = vec![0u8; ty.type_size() * 2];
        let mut out = vec![0.0; ty.block_size() * 2];
        let err = dequantize(ty, &bytes, &mut out).unwrap_err();
        assert_eq!(err, DequantError::Unsupported(ty));
        let msg = err.to_string();
        assert!(
            msg.contains(ty.name()) && msg.contains("not supported"),
            "{msg}"
        );
        assert_eq!(
            dequantize_rows(
                ty,
                &bytes,
                ty.block_size(),
                0..1,
                &mut out[..ty.block_size()]
            ),
            Err(DequantError::Unsupported(ty))
        );
    }
}

#[test]
fn partial_blocks_and_wrong_output_lengths_are_errors() {
    for ty in SUPPORTED {
        let ts = ty.type_size();
        let bs = ty.block_size();
        // One byte short of two blocks (for 1-byte-per-element types there is none; F32, F16,
        // BF16 have type sizes 4 and 2, so `2 * ts - 1` is never a multiple).
        let bytes = vec![0u8; 2 * ts - 1];
        let mut out = vec![0.0; 2 * bs];
        assert_eq!(
            dequantize(ty, &bytes, &mut out),
            Err(DequantError::PartialBlock {
                ty,
                len: 2 * ts - 1,
                type_size: ts
            }),
            "{ty}"
        );
        let bytes = vec![0u8; 2 * ts];
        for wrong in [0, 2 * bs - 1, 2 * bs + 1, 4 * bs] {
            let mut out = vec![0.0; wrong];
            assert_eq!(
                dequantize(ty, &bytes, &mut out),
                Err(DequantError::OutputLength {
                    ty,
                    expected: 2 * bs,
                    got: wrong
                }),
                "{ty} out {wrong}"
            );
        }
        assert_eq!(dequantized_len(ty, 3 * ts), Ok(3 * bs));
        assert_eq!(dequantize_to_vec(ty, &[]), Ok(vec![]));
    }
}

#[test]
fn row_arguments_are_checked() {
    let ty = GgmlType::Q4_K;
    let row_len = 512;
    let row_bytes = 2 * ty.type_size();
    let bytes = vec![0u8; 3 * row_bytes];
    let mut out = vec![0.0; row_len];
    for bad_len in [0, 100, 256 + 32] {
        assert_eq!(
            dequantize_rows(ty, &bytes, bad_len, 0..1, &mut out),
            Err(DequantError::RowLength {
                ty,
                row_len: bad_len,
                block_size: 256
            })
        );
    }
    // 3 rows of 512 are also 6 rows of 256, but not whole rows of 1024.
    assert!(matches!(
        dequantize_rows(ty, &bytes, 1024, 0..1, &mut vec![0.0; 1024]),
        Err(DequantError::PartialRow { .. })
    ));
    assert_eq!(
        dequantize_rows(ty, &bytes, row_len, 2..4, &mut vec![0.0; 2 * row_len]),
        Err(DequantError::RowRange {
            start: 2,
            end: 4,
            n_rows: 3
        })
    );
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = 2..1;
    assert!(matches!(
        dequantize_rows(ty, &bytes, row_len, backwards, &mut out),
        Err(DequantError::RowRange { .. })
    ));
    assert!(matches!(
        dequantize_rows(ty, &bytes, row_len, usize::MAX - 1..usize::MAX, &mut out),
        Err(DequantError::RowRange { .. })
    ));
    assert_eq!(
        dequantize_rows(ty, &bytes, row_len, 1..2, &mut vec![0.0; row_len + 1]),
        Err(DequantError::OutputLength {
            ty,
            expected: row_len,
            got: row_len + 1
        })
    );
    // An empty range is fine and writes nothing.
    assert_eq!(dequantize_rows(ty, &bytes, row_len, 3..3, &mut []), Ok(()));
    // A huge row length must not overflow or allocate.
    assert!(dequantize_rows(ty, &bytes, usize::MAX / 256 * 256, 0..1, &mut out).is_err());
}

#[test]
fn row_ranges_equal_slices_of_the_whole_tensor() {
    for (seed, ty) in SUPPORTED.into_iter().enumerate() {
        let row_len = 2 * 256;
        let n_rows = 5;
        let n_bytes = n_rows * row_len / ty.block_size() * ty.type_size();
        let bytes = random_bytes(n_bytes, seed as u64 + 7);
        let whole = dequantize_to_vec(ty, &bytes).unwrap();
        assert_eq!(whole.len(), n_rows * row_len);
        for (start, end) in [(0, 1), (1, 3), (4, 5), (0, 5), (2, 2)] {
            let mut out = vec![f32::NAN; (end - start) * row_len];
            dequantize_rows(ty, &bytes, row_len, start..end, &mut out).unwrap();
            let want = &whole[start * row_len..end * row_len];
            assert!(
                out.iter()
                    .zip(want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{ty} rows {start}..{end}"
            );
        }
    }
}
