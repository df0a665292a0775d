//! Decoding ggml blocks to f32, one row at a time (the readable reference path).
//!
//! Layouts (ggml, little-endian; `d`/`m` are f16 scale/minimum, 32 elements per block):
//! - Q4_0: `d, qs[16]`; element `j` is `(qs[j] & 15) - 8`, element `j + 16` is `(qs[j] >> 4) - 8`, times `d`.
//! - Q4_1: `d, m, qs[16]`; same nibbles without the `- 8`, value `d * q + m`.
//! - Q5_0: `d, qh: u32, qs[16]`; bit `j` of `qh` is the fifth bit of element `j`; value `d * (q - 16)`.
//! - Q5_1: `d, m, qh: u32, qs[16]`; value `d * q + m`.
//! - Q8_0: `d, qs[32]` (i8); value `d * q`.
//!
//! Other types (k-quants) go through the `gguf` crate's dequantizer.

use gguf::GgmlType;

/// Converts IEEE half-precision bits to f32 exactly (normals, subnormals, infinities, NaN).
#[inline(always)]
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = (u32::from(h) & 0x8000) << 16;
    let em = u32::from(h) & 0x7fff;
    // Shifting exponent+mantissa into f32 position scales the value by 2^-112 for normal and
    // subnormal halves alike; multiplying by 2^112 (exact, a power of two) undoes it.
    let scaled = f32::from_bits(em << 13) * f32::from_bits(0x7780_0000);
    let v = if em >= 0x7c00 {
        f32::from_bits((em << 13) | 0x7f80_0000)
    } else {
        scaled
    };
    f32::from_bits(v.to_bits() | sign)
}

/// Reads the f16 at `b[i..i + 2]` as f32.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}

/// True when [`decode_row`] decodes `ty` itself (without the `gguf` dequantizer).
pub fn decodes_natively(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
    )
}

/// Decodes one row (`bytes` holds exactly `out.len()` elements of type `ty`) into `out`.
/// Returns an error message for unsupported types or inconsistent lengths.
pub fn decode_row(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), String> {
    let bs = ty.block_size();
    if out.len() % bs != 0 || bytes.len() != out.len() / bs * ty.type_size() {
        return Err(format!(
            "{} bytes cannot hold {} {ty} elements",
            bytes.len(),
            out.len()
        ));
    }
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16);
            }
        }
        GgmlType::Q4_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(18)) {
                let d = f16_at(b, 0);
                let qs = &b[2..18];
                for j in 0..16 {
                    o[j] = d * (f32::from(qs[j] & 15) - 8.0);
                    o[j + 16] = d * (f32::from(qs[j] >> 4) - 8.0);
                }
            }
        }
        GgmlType::Q4_1 => {
            for (o, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(20)) {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qs = &b[4..20];
                for j in 0..16 {
                    o[j] = d * f32::from(qs[j] & 15) + m;
                    o[j + 16] = d * f32::from(qs[j] >> 4) + m;
                }
            }
        }
        GgmlType::Q5_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(22)) {
                let d = f16_at(b, 0);
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                let qs = &b[6..22];
                for j in 0..16 {
                    let lo = u32::from(qs[j] & 15) | (((qh >> j) & 1) << 4);
                    let hi = u32::from(qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
                    o[j] = d * (lo as f32 - 16.0);
                    o[j + 16] = d * (hi as f32 - 16.0);
                }
            }
        }
        GgmlType::Q5_1 => {
            for (o, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(24)) {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                let qs = &b[8..24];
                for j in 0..16 {
                    let lo = u32::from(qs[j] & 15) | (((qh >> j) & 1) << 4);
                    let hi = u32::from(qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
                    o[j] = d * lo as f32 + m;
                    o[j + 16] = d * hi as f32 + m;
                }
            }
        }
        GgmlType::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(34)) {
                let d = f16_at(b, 0);
                for (oj, q) in o.iter_mut().zip(&b[2..34]) {
                    *oj = d * f32::from(*q as i8);
                }
            }
        }
        _ => return decode_row_fallback(ty, bytes, out),
    }
    Ok(())
}

/// Types this module does not decode itself: the `gguf` crate's dequantizer.
fn decode_row_fallback(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), String> {
    gguf::dequantize(ty, bytes, out).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_matches_half_for_every_value() {
        for bits in 0..=u16::MAX {
            let want = half::f16::from_bits(bits).to_f32();
            let got = f16_to_f32(bits);
            if want.is_nan() {
                assert!(got.is_nan(), "bits {bits:#x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "bits {bits:#x}");
            }
        }
    }

    #[test]
    fn q4_1_block_by_hand() {
        // d = 0.5, m = -1.0, nibbles: low = j % 16, high = 15 - j % 16.
        let mut b = Vec::new();
        b.extend_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        b.extend_from_slice(&half::f16::from_f32(-1.0).to_le_bytes());
        for j in 0..16u8 {
            b.push(j | ((15 - j) << 4));
        }
        let mut out = [0f32; 32];
        decode_row(GgmlType::Q4_1, &b, &mut out).unwrap();
        for j in 0..16 {
            assert_eq!(out[j], 0.5 * j as f32 - 1.0);
            assert_eq!(out[j + 16], 0.5 * (15 - j) as f32 - 1.0);
        }
    }

    #[test]
    fn q5_0_fifth_bit_by_hand() {
        // d = 1, all nibbles 0, qh with bits 0 and 16 set: elements 0 and 16 are 16 - 16 = 0,
        // all others 0 - 16.
        let mut b = Vec::new();
        b.extend_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        b.extend_from_slice(&(1u32 | 1 << 16).to_le_bytes());
        b.extend_from_slice(&[0u8; 16]);
        let mut out = [0f32; 32];
        decode_row(GgmlType::Q5_0, &b, &mut out).unwrap();
        for (j, v) in out.iter().enumerate() {
            let want = if j == 0 || j == 16 { 0.0 } else { -16.0 };
            assert_eq!(*v, want, "element {j}");
        }
    }

    #[test]
    fn bad_lengths_are_errors() {
        let mut out = [0f32; 32];
        assert!(decode_row(GgmlType::Q8_0, &[0u8; 33], &mut out).is_err());
        assert!(decode_row(GgmlType::Q8_0, &[0u8; 34], &mut out[..31]).is_err());
    }
}
