//! CPU dequantization of ggml block formats to `f32`.
//!
//! Supported element types: `F32`, `F16`, `BF16`, the legacy 32-element formats `Q4_0`,
//! `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`, and the k-quants `Q2_K`, `Q3_K`, `Q4_K`, `Q5_K`, `Q6_K`,
//! `Q8_K`. Every other type gives [`DequantError::Unsupported`].
//!
//! Input is a byte slice of whole blocks in the GGUF on-disk layout (little-endian, any
//! alignment); the block structs in [`blocks`] describe those layouts. Length mismatches are
//! typed errors, never panics.
//!
//! ```
//! use gguf::{dequantize, GgmlType};
//! // One Q8_0 block: scale 0.5 (f16 0x3800), quants 0, 1, ..., 31.
//! let mut bytes = vec![0x00, 0x38];
//! bytes.extend((0..32u8).map(|q| q));
//! let mut out = vec![0.0f32; 32];
//! dequantize(GgmlType::Q8_0, &bytes, &mut out).unwrap();
//! assert_eq!(out[3], 1.5);
//! ```

pub mod blocks;
mod float;
mod kquants;
mod legacy;

use std::ops::Range;

use bytemuck::Pod;
use thiserror::Error;

use crate::types::GgmlType;

/// Why a dequantization request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DequantError {
    /// The element type has no CPU dequantizer here.
    #[error(
        "dequantizing {0} tensors is not supported; supported types are \
         F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K \
         (re-quantize the model to one of these)"
    )]
    Unsupported(GgmlType),
    /// The input is not a whole number of blocks.
    #[error(
        "{ty} input of {len} bytes is not a whole number of {type_size}-byte blocks \
         (the tensor data is truncated or the type is wrong)"
    )]
    PartialBlock {
        /// Element type.
        ty: GgmlType,
        /// Input length in bytes.
        len: usize,
        /// Bytes per block of `ty`.
        type_size: usize,
    },
    /// The output buffer does not have exactly one slot per decoded element.
    #[error("output buffer holds {got} f32 values but the {ty} input decodes to {expected}")]
    OutputLength {
        /// Element type.
        ty: GgmlType,
        /// Number of elements the input decodes to.
        expected: usize,
        /// Length of the output buffer.
        got: usize,
    },
    /// The row length is zero or not a whole number of blocks.
    #[error("row length {row_len} is not a positive multiple of the {ty} block size {block_size}")]
    RowLength {
        /// Element type.
        ty: GgmlType,
        /// Requested elements per row.
        row_len: usize,
        /// Elements per block of `ty`.
        block_size: usize,
    },
    /// The input is not a whole number of rows.
    #[error(
        "{ty} input of {len} bytes is not a whole number of rows of {row_len} elements \
         ({row_bytes} bytes each)"
    )]
    PartialRow {
        /// Element type.
        ty: GgmlType,
        /// Input length in bytes.
        len: usize,
        /// Elements per row.
        row_len: usize,
        /// Bytes per row.
        row_bytes: usize,
    },
    /// The requested rows are not inside the tensor.
    #[error("rows {start}..{end} are out of range for a tensor of {n_rows} rows")]
    RowRange {
        /// First requested row.
        start: usize,
        /// One past the last requested row.
        end: usize,
        /// Rows in the tensor.
        n_rows: usize,
    },
    /// A size computation overflowed `usize`.
    #[error("{ty}: size of {what} overflows usize")]
    Overflow {
        /// Element type.
        ty: GgmlType,
        /// What was being computed.
        what: &'static str,
    },
}

/// True when [`dequantize`] handles `ty`.
pub fn is_dequant_supported(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16
            | BF16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | Q8_K
    )
}

/// Number of `f32` values that `n_bytes` of `ty` data decode to, checking that the bytes are a
/// whole number of blocks and that `ty` is supported.
pub fn dequantized_len(ty: GgmlType, n_bytes: usize) -> Result<usize, DequantError> {
    if !is_dequant_supported(ty) {
        return Err(DequantError::Unsupported(ty));
    }
    let type_size = ty.type_size();
    if n_bytes % type_size != 0 {
        return Err(DequantError::PartialBlock {
            ty,
            len: n_bytes,
            type_size,
        });
    }
    (n_bytes / type_size)
        .checked_mul(ty.block_size())
        .ok_or(DequantError::Overflow {
            ty,
            what: "the element count",
        })
}

/// Dequantizes `bytes` (whole blocks of type `ty`, GGUF layout, any alignment) into `out`,
/// which must hold exactly the number of elements the blocks encode.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), DequantError> {
    let expected = dequantized_len(ty, bytes.len())?;
    if out.len() != expected {
        return Err(DequantError::OutputLength {
            ty,
            expected,
            got: out.len(),
        });
    }
    use GgmlType::*;
    match ty {
        F32 => float::f32_le(bytes, out),
        F16 => float::f16_le(bytes, out),
        BF16 => float::bf16_le(bytes, out),
        Q4_0 => each_block(bytes, out, legacy::q4_0),
        Q4_1 => each_block(bytes, out, legacy::q4_1),
        Q5_0 => each_block(bytes, out, legacy::q5_0),
        Q5_1 => each_block(bytes, out, legacy::q5_1),
        Q8_0 => each_block(bytes, out, legacy::q8_0),
        Q2_K => each_block(bytes, out, kquants::q2_k),
        Q3_K => each_block(bytes, out, kquants::q3_k),
        Q4_K => each_block(bytes, out, kquants::q4_k),
        Q5_K => each_block(bytes, out, kquants::q5_k),
        Q6_K => each_block(bytes, out, kquants::q6_k),
        Q8_K => each_block(bytes, out, kquants::q8_k),
        other => return Err(DequantError::Unsupported(other)),
    }
    Ok(())
}

/// Dequantizes rows `rows` of a tensor stored in `bytes` (all of it, whole rows of `row_len`
/// elements each) into `out`, which must hold exactly `rows.len() * row_len` values.
pub fn dequantize_rows(
    ty: GgmlType,
    bytes: &[u8],
    row_len: usize,
    rows: Range<usize>,
    out: &mut [f32],
) -> Result<(), DequantError> {
    if !is_dequant_supported(ty) {
        return Err(DequantError::Unsupported(ty));
    }
    let block_size = ty.block_size();
    if row_len == 0 || row_len % block_size != 0 {
        return Err(DequantError::RowLength {
            ty,
            row_len,
            block_size,
        });
    }
    let row_bytes =
        (row_len / block_size)
            .checked_mul(ty.type_size())
            .ok_or(DequantError::Overflow {
                ty,
                what: "one row in bytes",
            })?;
    if bytes.len() % row_bytes != 0 {
        return Err(DequantError::PartialRow {
            ty,
            len: bytes.len(),
            row_len,
            row_bytes,
        });
    }
    let n_rows = bytes.len() / row_bytes;
    let Range { start, end } = rows;
    if start > end || end > n_rows {
        return Err(DequantError::RowRange { start, end, n_rows });
    }
    // Cannot overflow: end * row_bytes <= bytes.len().
    let src = &bytes[start * row_bytes..end * row_bytes];
    dequantize(ty, src, out)
}

/// Dequantizes `bytes` of type `ty` into a new vector.
pub fn dequantize_to_vec(ty: GgmlType, bytes: &[u8]) -> Result<Vec<f32>, DequantError> {
    let mut out = vec![0.0f32; dequantized_len(ty, bytes.len())?];
    dequantize(ty, bytes, &mut out)?;
    Ok(out)
}

/// Runs `f` on each block of `bytes` and its slot of `N` outputs. Lengths were checked by the
/// caller; the block structs have alignment 1, so the view never fails on alignment.
#[inline(always)]
fn each_block<B: Pod, const N: usize>(bytes: &[u8], out: &mut [f32], f: fn(&B, &mut [f32; N])) {
    let Ok(blocks) = bytemuck::try_cast_slice::<u8, B>(bytes) else {
        // Unreachable after the length checks in `dequantize`; leave `out` untouched.
        debug_assert!(false, "block view failed after length checks");
        return;
    };
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(N)) {
        if let Ok(y) = <&mut [f32; N]>::try_from(y) {
            f(b, y);
        }
    }
}
