//! Tensor infos: name, shape, ggml type and where the data lies.

use std::ops::Range;

use crate::types::GgmlType;

/// The most dimensions a ggml tensor can have.
pub const MAX_DIMS: usize = 4;

/// One tensor's header entry, validated against the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the row length (fastest varying).
    pub dims: Vec<u64>,
    /// The element type.
    pub ggml_type: GgmlType,
    /// Offset of the data relative to the data section, as stored in the file.
    pub offset: u64,
    /// Absolute byte offset of the data in the file.
    pub abs_offset: u64,
    /// Size of the tensor's data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements (product of the dimensions; validated not to overflow when parsed).
    pub fn n_elements(&self) -> u64 {
        self.dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    /// Elements per row: `dims[0]` (1 for a tensor with no dimensions).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows: the product of `dims[1..]`.
    pub fn n_rows(&self) -> u64 {
        self.dims
            .iter()
            .skip(1)
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    /// Absolute byte range of the data in the file.
    pub fn byte_range(&self) -> Range<u64> {
        self.abs_offset..self.abs_offset.saturating_add(self.n_bytes)
    }

    /// `Some(i)` for tensors named `blk.{i}.*` (the transformer layer), `None` otherwise.
    pub fn layer_index(&self) -> Option<usize> {
        layer_index_of(&self.name)
    }
}

/// The layer index `i` of a tensor named `blk.{i}.*`.
pub(crate) fn layer_index_of(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("blk.")?;
    let (digits, _) = rest.split_once('.')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Bytes of a tensor of type `ty` with shape `dims`, or a reason why the shape is invalid.
pub(crate) fn tensor_bytes(ty: GgmlType, dims: &[u64]) -> Result<u64, String> {
    if dims.len() > MAX_DIMS {
        return Err(format!(
            "{} dimensions, ggml allows at most {MAX_DIMS}",
            dims.len()
        ));
    }
    let mut n: u64 = 1;
    for &d in dims {
        if d > i64::MAX as u64 {
            return Err(format!("dimension {d} exceeds i64::MAX"));
        }
        n = n
            .checked_mul(d)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| "element count overflows".to_string())?;
    }
    let row = dims.first().copied().unwrap_or(1);
    let bs = ty.block_size() as u64;
    if row % bs != 0 {
        return Err(format!(
            "row length {row} is not a multiple of the {ty} block size {bs}"
        ));
    }
    ty.bytes_for(n)
        .ok_or_else(|| "byte size overflows".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_index_parses_only_blk_prefix_with_digits() {
        assert_eq!(layer_index_of("blk.0.attn_q.weight"), Some(0));
        assert_eq!(layer_index_of("blk.29.ffn_up.weight"), Some(29));
        assert_eq!(layer_index_of("blk.+1.x"), None);
        assert_eq!(layer_index_of("blk..x"), None);
        assert_eq!(layer_index_of("blk.1"), None);
        assert_eq!(layer_index_of("output.weight"), None);
        assert_eq!(layer_index_of("blk.99999999999999999999999.x"), None);
    }

    #[test]
    fn tensor_bytes_checks_blocks_and_overflow() {
        // Q4_0: 32 elements per 18-byte block (ggml's block_q4_0).
        assert_eq!(tensor_bytes(GgmlType::Q4_0, &[64, 3]), Ok(2 * 3 * 18));
        assert!(tensor_bytes(GgmlType::Q4_0, &[48, 2]).is_err());
        assert!(tensor_bytes(GgmlType::F32, &[1 << 40, 1 << 40]).is_err());
        assert!(tensor_bytes(GgmlType::F32, &[1, 1, 1, 1, 1]).is_err());
        assert_eq!(tensor_bytes(GgmlType::F32, &[]), Ok(4));
    }
}
