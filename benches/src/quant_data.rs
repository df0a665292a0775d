//! Synthetic tensor data for the dequantization benchmarks.

use gguf::GgmlType;

/// Bytes of `n_elements` elements of `ty` filled with pseudo-random but valid blocks:
/// quant bits are uniformly random and every f16 / bf16 / f32 scale is finite.
///
/// Every scalar field of the ggml formats starts at an even offset and blocks have even sizes,
/// so each field's most significant byte sits at an odd offset; clearing bit 6 there caps the
/// exponent and rules out infinities and NaNs. Returns `None` when `n_elements` is not a whole
/// number of blocks.
pub fn random_tensor_bytes(ty: GgmlType, n_elements: usize, seed: u64) -> Option<Vec<u8>> {
    let n_bytes = usize::try_from(ty.bytes_for(n_elements as u64)?).ok()?;
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bytes = Vec::with_capacity(n_bytes);
    while bytes.len() < n_bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(n_bytes);
    for b in bytes.iter_mut().skip(1).step_by(2) {
        *b &= !0x40;
    }
    Some(bytes)
}
