//! Inner loops over a run of weight rows, shared by the portable build and the AVX2 copies in
//! [`super::simd`]. Output layout: `out[row * n_tokens + token]`.

use gguf::GgmlType;

use super::blocks::decode_row;
use super::q8::{dot_f32, dot_q8, BlockQ8};

/// Rows of a 32-block format against 8-bit activations (`xq`: `n_tokens` runs of
/// `blocks_per_row` blocks).
#[inline(always)]
pub(crate) fn rows_q8(
    ty: GgmlType,
    rows: &[u8],
    row_bytes: usize,
    xq: &[BlockQ8],
    blocks_per_row: usize,
    out: &mut [f32],
) {
    let n_tokens = xq.len() / blocks_per_row.max(1);
    for (r, o) in rows
        .chunks_exact(row_bytes)
        .zip(out.chunks_exact_mut(n_tokens))
    {
        for (t, ot) in o.iter_mut().enumerate() {
            *ot = dot_q8(ty, r, &xq[t * blocks_per_row..(t + 1) * blocks_per_row]);
        }
    }
}

/// Rows of any decodable type: each row decoded to f32 once, then dotted with every token of
/// `x` (`n_tokens` runs of `row_len` f32).
#[inline(always)]
pub(crate) fn rows_f32(
    ty: GgmlType,
    rows: &[u8],
    row_bytes: usize,
    x: &[f32],
    row_len: usize,
    out: &mut [f32],
) -> Result<(), String> {
    let n_tokens = x.len() / row_len.max(1);
    let mut w = vec![0f32; row_len];
    for (r, o) in rows
        .chunks_exact(row_bytes)
        .zip(out.chunks_exact_mut(n_tokens))
    {
        decode_row(ty, r, &mut w)?;
        for (t, ot) in o.iter_mut().enumerate() {
            *ot = dot_f32(&w, &x[t * row_len..(t + 1) * row_len]);
        }
    }
    Ok(())
}
