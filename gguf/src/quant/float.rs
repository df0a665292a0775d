//! Plain float element types: `F32`, `F16` and `BF16` (little-endian in GGUF files).

use half::f16;

/// Decodes little-endian `f32` values; `out.len() * 4 == bytes.len()` is checked by the caller.
pub(super) fn f32_le(bytes: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

/// Decodes little-endian IEEE halves; `out.len() * 2 == bytes.len()` is checked by the caller.
pub(super) fn f16_le(bytes: &[u8], out: &mut [f32]) {
    // Fast path: a 2-byte aligned slice on a little-endian host can be viewed as `[f16]` and
    // converted with half's SIMD slice conversion. Anything else takes the byte-wise path.
    if cfg!(target_endian = "little") {
        if let Ok(halves) = bytemuck::try_cast_slice::<u8, f16>(bytes) {
            if halves.len() == out.len() {
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(halves, out);
                return;
            }
        }
    }
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
    }
}

/// Decodes little-endian bfloat16 values (the top half of an `f32`); lengths checked by the
/// caller.
pub(super) fn bf16_le(bytes: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16);
    }
}
