//! Dequantization of hand-built blocks against values worked out by hand from the ggml format
//! definitions, and of pseudo-random blocks against a second, deliberately naive decoder
//! written here element by element ("element i lives in byte b, bits s..s+n") from the same
//! definitions.

use gguf::{dequantize, GgmlType};

// ---------------------------------------------------------------------------------------------
// Independent helpers: IEEE half decoding by the textbook formula, pseudo-random bytes.

/// IEEE 754 binary16 -> f32 by sign / exponent / mantissa (no half crate).
fn half(lo: u8, hi: u8) -> f32 {
    let h = u16::from_le_bytes([lo, hi]);
    let sign = if h >> 15 == 1 { -1.0f64 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1F);
    let man = f64::from(h & 0x3FF);
    let v = match exp {
        0 => sign * man * 2f64.powi(-24),
        31 => panic!("test blocks must hold finite halves"),
        e => sign * (1.0 + man / 1024.0) * 2f64.powi(e - 15),
    };
    v as f32
}

/// Deterministic pseudo-random bytes where every byte at an odd offset has bit 6 clear, so
/// every f16 field (always at even offsets in these formats) is finite.
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

fn decode(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let n = bytes.len() / ty.type_size() * ty.block_size();
    let mut out = vec![f32::NAN; n];
    dequantize(ty, bytes, &mut out).expect("valid input");
    out
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-6 * w.abs().max(1e-30);
        assert!(
            (g - w).abs() <= tol,
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Naive per-element reference decoders, one block at a time.

fn ref_block(ty: GgmlType, b: &[u8]) -> Vec<f32> {
    match ty {
        GgmlType::Q4_0 => (0..32)
            .map(|i| {
                let byte = b[2 + i % 16];
                let q = if i < 16 { byte & 15 } else { byte >> 4 };
                half(b[0], b[1]) * (f32::from(q) - 8.0)
            })
            .collect(),
        GgmlType::Q4_1 => (0..32)
            .map(|i| {
                let byte = b[4 + i % 16];
                let q = if i < 16 { byte & 15 } else { byte >> 4 };
                half(b[0], b[1]) * f32::from(q) + half(b[2], b[3])
            })
            .collect(),
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let off = if ty == GgmlType::Q5_0 { 2 } else { 4 };
            let qh = u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]]);
            (0..32)
                .map(|i| {
                    let byte = b[off + 4 + i % 16];
                    let low = if i < 16 { byte & 15 } else { byte >> 4 };
                    let q = f32::from(low) + 16.0 * ((qh >> i) & 1) as f32;
                    if ty == GgmlType::Q5_0 {
                        half(b[0], b[1]) * (q - 16.0)
                    } else {
                        half(b[0], b[1]) * q + half(b[2], b[3])
                    }
                })
                .collect()
        }
        GgmlType::Q8_0 => (0..32)
            .map(|i| half(b[0], b[1]) * f32::from(b[2 + i] as i8))
            .collect(),
        GgmlType::Q8_K => {
            let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            (0..256).map(|i| d * f32::from(b[4 + i] as i8)).collect()
        }
        GgmlType::Q2_K => {
            // scales[16] | qs[64] | d | dmin
            let (d, dmin) = (half(b[80], b[81]), half(b[82], b[83]));
            (0..256)
                .map(|i| {
                    let (half_, r) = (i / 128, i % 128);
                    let (k, l) = (r / 32, r % 32);
                    let q = (b[16 + half_ * 32 + l] >> (2 * k)) & 3;
                    let sc = b[i / 16];
                    d * f32::from(sc & 15) * f32::from(q) - dmin * f32::from(sc >> 4)
                })
                .collect()
        }
        GgmlType::Q3_K => {
            // hmask[32] | qs[64] | scales[12] | d
            let d = half(b[108], b[109]);
            let sc = &b[96..108];
            (0..256)
                .map(|i| {
                    let (half_, r) = (i / 128, i % 128);
                    let (k, l) = (r / 32, r % 32);
                    let low = i32::from((b[32 + half_ * 32 + l] >> (2 * k)) & 3);
                    let high = (b[l] >> (half_ * 4 + k)) & 1;
                    let q = if high == 1 { low } else { low - 4 };
                    let g = i / 16;
                    let nib = if g < 8 { sc[g] & 15 } else { sc[g - 8] >> 4 };
                    let top = (sc[8 + g % 4] >> (2 * (g / 4))) & 3;
                    let s = i32::from(nib | (top << 4)) - 32;
                    d * s as f32 * q as f32
                })
                .collect()
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            // d | dmin | scales[12] | (qh[32] for Q5_K) | qs[128]
            let (d, dmin) = (half(b[0], b[1]), half(b[2], b[3]));
            let sc = &b[4..16];
            let qs_off = if ty == GgmlType::Q4_K { 16 } else { 48 };
            (0..256)
                .map(|i| {
                    let g = i / 32;
                    let (c, r) = (i / 64, i % 64);
                    let byte = b[qs_off + c * 32 + r % 32];
                    let mut q = if r < 32 { byte & 15 } else { byte >> 4 };
                    if ty == GgmlType::Q5_K {
                        q += 16 * ((b[16 + i % 32] >> g) & 1);
                    }
                    let (s, m) = if g < 4 {
                        (sc[g] & 63, sc[g + 4] & 63)
                    } else {
                        (
                            (sc[g + 4] & 15) | ((sc[g - 4] >> 6) << 4),
                            (sc[g + 4] >> 4) | ((sc[g] >> 6) << 4),
                        )
                    };
                    d * f32::from(s) * f32::from(q) - dmin * f32::from(m)
                })
                .collect()
        }
        GgmlType::Q6_K => {
            // ql[128] | qh[64] | scales[16] (i8) | d
            let d = half(b[208], b[209]);
            (0..256)
                .map(|i| {
                    let (half_, r) = (i / 128, i % 128);
                    let (quarter, l) = (r / 32, r % 32);
                    let ql = b[half_ * 64 + l + (quarter % 2) * 32];
                    let low = if quarter < 2 { ql & 15 } else { ql >> 4 };
                    let high = (b[128 + half_ * 32 + l] >> (2 * quarter)) & 3;
                    let q = i32::from(low | (high << 4)) - 32;
                    let s = f32::from(b[192 + i / 16] as i8);
                    d * s * q as f32
                })
                .collect()
        }
        other => panic!("no reference decoder for {other}"),
    }
}

const BLOCK_TYPES: [GgmlType; 11] = [
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

#[test]
fn random_blocks_match_the_naive_reference_decoder() {
    for (seed, ty) in BLOCK_TYPES.into_iter().enumerate() {
        let n_blocks = 37;
        let bytes = random_bytes(n_blocks * ty.type_size(), seed as u64 + 11);
        let got = decode(ty, &bytes);
        let want: Vec<f32> = bytes
            .chunks_exact(ty.type_size())
            .flat_map(|b| ref_block(ty, b))
            .collect();
        assert_close(&got, &want, ty.name());
        // Random data must not decode to something trivial.
        let distinct = want
            .iter()
            .map(|v| v.to_bits())
            .collect::<std::collections::HashSet<_>>();
        assert!(distinct.len() > 8, "{ty}: degenerate test data");
    }
}

#[test]
fn unaligned_input_decodes_like_aligned_input() {
    for (seed, ty) in BLOCK_TYPES
        .into_iter()
        .chain([GgmlType::F16, GgmlType::BF16, GgmlType::F32])
        .enumerate()
    {
        let len = 5 * ty.type_size() * if ty.is_quantized() { 1 } else { 64 };
        let base = random_bytes(len, seed as u64 + 101);
        // The same bytes at an odd address: no block or f16 field is aligned any more.
        let mut shifted = vec![0u8; len + 1];
        shifted[1..].copy_from_slice(&base);
        let a = decode(ty, &base);
        let b = decode(ty, &shifted[1..]);
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{ty}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Values worked out by hand.

#[test]
fn floats_by_hand() {
    // f16: 1.0 = 0x3C00, -2.0 = 0xC000, 65504 = 0x7BFF, smallest subnormal 0x0001 = 2^-24.
    let bytes = [0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B, 0x01, 0x00];
    assert_eq!(
        decode(GgmlType::F16, &bytes),
        [1.0, -2.0, 65504.0, 2f32.powi(-24)]
    );
    // bf16: top halves of f32 1.0 (0x3F80), -0.5 (0xBF00), 3.0 (0x4040).
    let bytes = [0x80, 0x3F, 0x00, 0xBF, 0x40, 0x40];
    assert_eq!(decode(GgmlType::BF16, &bytes), [1.0, -0.5, 3.0]);
    let bytes: Vec<u8> = [1.5f32, -7.25]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert_eq!(decode(GgmlType::F32, &bytes), [1.5, -7.25]);
}

#[test]
fn q4_0_by_hand() {
    // d = 0.5; byte j = j | (15 - j) << 4 -> x[j] = (j - 8) / 2, x[j + 16] = (7 - j) / 2.
    let mut b = vec![0x00, 0x38];
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let y = decode(GgmlType::Q4_0, &b);
    assert_eq!(y[0], -4.0);
    assert_eq!(y[15], 3.5);
    assert_eq!(y[16], 3.5);
    assert_eq!(y[31], -4.0);
    assert_eq!(y[9], 0.5);
}

#[test]
fn q4_1_by_hand() {
    // d = 0.25, m = -1.0; byte j = j | j << 4 -> x[j] = x[j + 16] = j / 4 - 1.
    let mut b = vec![0x00, 0x34, 0x00, 0xBC];
    b.extend((0..16u8).map(|j| j | (j << 4)));
    let y = decode(GgmlType::Q4_1, &b);
    assert_eq!(y[0], -1.0);
    assert_eq!(y[4], 0.0);
    assert_eq!(y[20], 0.0);
    assert_eq!(y[31], 2.75);
}

#[test]
fn q5_by_hand() {
    // Q5_0: d = 1, qh = 0xFFFF0000 (elements 16..32 have bit 4), every qs byte 0x21:
    // x[j < 16] = 1 - 16 = -15, x[j >= 16] = (2 + 16) - 16 = 2.
    let mut b = vec![0x00, 0x3C, 0x00, 0x00, 0xFF, 0xFF];
    b.extend([0x21u8; 16]);
    let y = decode(GgmlType::Q5_0, &b);
    assert!(y[..16].iter().all(|&v| v == -15.0));
    assert!(y[16..].iter().all(|&v| v == 2.0));

    // Q5_1: d = 2, m = 0.5, only bit 0 of qh set, qs zero: x[0] = 16 * 2 + 0.5, rest 0.5.
    let mut b = vec![0x00, 0x40, 0x00, 0x38, 0x01, 0x00, 0x00, 0x00];
    b.extend([0u8; 16]);
    let y = decode(GgmlType::Q5_1, &b);
    assert_eq!(y[0], 32.5);
    assert!(y[1..].iter().all(|&v| v == 0.5));
}

#[test]
fn q8_by_hand() {
    // Q8_0: d = -0.5, q = -16..16.
    let mut b = vec![0x00, 0xB8];
    b.extend((-16i8..16).map(|q| q as u8));
    let y = decode(GgmlType::Q8_0, &b);
    assert_eq!(y[0], 8.0);
    assert_eq!(y[16], 0.0);
    assert_eq!(y[31], -7.5);

    // Q8_K: f32 d = 0.125, q[i] = 127 at i = 200, -128 at i = 3.
    let mut b = 0.125f32.to_le_bytes().to_vec();
    b.extend([0u8; 256 + 32]);
    b[4 + 200] = 127;
    b[4 + 3] = 0x80;
    let y = decode(GgmlType::Q8_K, &b);
    assert_eq!(y[200], 15.875);
    assert_eq!(y[3], -16.0);
    assert_eq!(y.iter().filter(|&&v| v != 0.0).count(), 2);
}

#[test]
fn q2_k_by_hand() {
    // qs[0] = 0b11_10_01_00 gives elements 0, 32, 64, 96 the quants 0, 1, 2, 3.
    // Groups of 16: element 0 -> group 0, 32 -> 2, 64 -> 4, 96 -> 6.
    // d = 1, dmin = 0.5.
    let mut b = vec![0u8; 84];
    b[0] = 0x21; // group 0: scale 1, min 2
    b[2] = 0x03; // group 2: scale 3, min 0
    b[4] = 0x15; // group 4: scale 5, min 1
    b[6] = 0x07; // group 6: scale 7, min 0
    b[16] = 0b11_10_01_00;
    b[80..84].copy_from_slice(&[0x00, 0x3C, 0x00, 0x38]);
    let y = decode(GgmlType::Q2_K, &b);
    assert_eq!(y[0], -1.0); // 1 * 1 * 0 - 0.5 * 2
    assert_eq!(y[32], 3.0); // 3 * 1
    assert_eq!(y[64], 9.5); // 5 * 2 - 0.5 * 1
    assert_eq!(y[96], 21.0); // 7 * 3
    assert_eq!(y[1], -1.0); // same group as 0, quant 0
    assert_eq!(y[128], 0.0); // second half, group 8: scale 0, min 0
}

#[test]
fn q3_k_by_hand() {
    // d = 0.5. Element 0: group 0 scale (0 | 0 << 4) - 32 = -32, low bits 1, high bit clear
    // -> q = 1 - 4 = -3 -> 0.5 * -32 * -3 = 48.
    // Element 200 = 128 + 2 * 32 + 8: low bits in qs[32 + 8] at bits 4..6, high bit = bit 6
    // of hmask[8]; group 12: nibble = scales[4] >> 4, top bits = scales[8] >> 6.
    let mut b = vec![0u8; 110];
    b[32] = 0b01; // element 0 low bits
    b[32 + 40] = 0b0011_0000; // element 200 low bits = 3
    b[8] = 1 << 6; // element 200 high bit set
    b[96 + 4] = 0x50; // group 12 nibble 5 (group 4 nibble 0)
    b[96 + 8] = 0b10_00_00_00; // group 12 top bits 2 -> scale 37 - 32 = 5; group 0 top bits 0
    b[108..110].copy_from_slice(&[0x00, 0x38]);
    let y = decode(GgmlType::Q3_K, &b);
    assert_eq!(y[0], 48.0);
    assert_eq!(y[200], 7.5); // 0.5 * 5 * 3
    assert_eq!(y[201], -10.0); // same group, low 0, high clear -> 0.5 * 5 * -4
    b[8] = 0;
    let y = decode(GgmlType::Q3_K, &b);
    assert_eq!(y[200], -2.5); // high bit clear: 3 - 4 = -1
}

#[test]
fn q4_k_and_q5_k_by_hand() {
    // d = 1, dmin = 1. Group 5 (elements 160..192): scale = scales[9] & 15 | (scales[1] >> 6) << 4
    // = 1 | 1 << 4 = 17; min = scales[9] >> 4 | (scales[5] >> 6) << 4 = 2 | 2 << 4 = 34.
    // Groups 1 (scale scales[1] & 63 = 0) and 5 share bytes 1 and 5. Element 160 is the high
    // nibble of qs[64].
    let mut b = vec![0u8; 144];
    b[0..4].copy_from_slice(&[0x00, 0x3C, 0x00, 0x3C]);
    b[4 + 1] = 0b01_000000;
    b[4 + 5] = 0b10_000000;
    b[4 + 9] = 0x21;
    b[16 + 64] = 0x70;
    let y = decode(GgmlType::Q4_K, &b);
    assert_eq!(y[160], 85.0); // 17 * 7 - 34
    assert_eq!(y[161], -34.0); // quant 0
    assert_eq!(y[128], 0.0); // group 4: scale and min 0
    assert_eq!(y[32], 0.0); // group 1: scale and min 0 (top bits belong to group 5)

    // Q5_K: same scales; element 255 (group 7, high nibble of qs[127]) with its fifth bit =
    // bit 7 of qh[31]. Group 7: scale = scales[11] & 15 | (scales[3] >> 6) << 4, min = 0.
    let mut b = vec![0u8; 176];
    b[0..4].copy_from_slice(&[0x00, 0x38, 0x00, 0x3C]); // d = 0.5, dmin = 1
    b[4 + 11] = 0x03;
    b[4 + 3] = 0b11_000000; // group 7 scale = 3 | 3 << 4 = 51
    b[16 + 31] = 0x80;
    b[48 + 127] = 0x20; // high nibble 2
    let y = decode(GgmlType::Q5_K, &b);
    assert_eq!(y[255], 459.0); // 0.5 * 51 * (2 + 16)
    assert_eq!(y[254], 0.0);
    // Group 3 (scale = scales[3] & 63 = 0) stays 0 whatever its quants.
    assert!(y[96..128].iter().all(|&v| v == 0.0));
}

#[test]
fn q6_k_by_hand() {
    // d = 0.25. Element 0: low nibble of ql[0], bits 0..2 of qh[0], group 0.
    // Element 255 = 128 + 96 + 31: high nibble of ql[64 + 32 + 31], bits 6..8 of qh[32 + 31],
    // group 15.
    let mut b = vec![0u8; 210];
    b[0] = 0x05;
    b[128] = 0b10; // q = 5 | 2 << 4 = 37 -> 37 - 32 = 5
    b[64 + 63] = 0xF0;
    b[128 + 63] = 0b11_000000; // q = 15 | 3 << 4 = 63 -> 31
    b[192] = 4; // group 0 scale 4
    b[192 + 15] = (-2i8) as u8; // group 15 scale -2
    b[208..210].copy_from_slice(&[0x00, 0x34]);
    let y = decode(GgmlType::Q6_K, &b);
    assert_eq!(y[0], 5.0); // 0.25 * 4 * 5
    assert_eq!(y[255], -15.5); // 0.25 * -2 * 31
    assert_eq!(y[1], -32.0); // 0.25 * 4 * (0 - 32)
    assert_eq!(y[20], 0.0); // group 1 scale 0
}
