//! Weight tensors in device memory, described in place (no repacking).

use cudarc::driver::CudaView;
use gguf::GgmlType;

use super::error::{CudaError, Result};

/// Weight types the kernels read, with the code the kernels use for each.
pub const SUPPORTED_TYPES: [GgmlType; 10] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// The kernels' type code of `ty` (its index in [`SUPPORTED_TYPES`], matching `T_*` in
/// `kernels/common.cuh`).
pub fn type_code(ty: GgmlType) -> Result<i32> {
    SUPPORTED_TYPES
        .iter()
        .position(|&t| t == ty)
        .and_then(|i| i32::try_from(i).ok())
        .ok_or(CudaError::UnsupportedType(ty))
}

/// A 2-D weight (`n_rows` rows of `row_len` elements, ggml row-major layout) inside device
/// memory the caller owns: a resident buffer or a freshly streamed slot.
#[derive(Debug)]
pub struct DeviceWeight<'a> {
    /// The tensor's bytes (at least `n_rows * row_bytes`).
    pub data: CudaView<'a, u8>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Elements per row (ggml `ne0`).
    pub row_len: usize,
    /// Number of rows (ggml `ne1`).
    pub n_rows: usize,
}

impl<'a> DeviceWeight<'a> {
    /// Describes `data` as a `n_rows` x `row_len` tensor of `ggml_type`, checking that the type
    /// has kernels, that rows are whole blocks, that the sizes fit the kernels' 32-bit indices
    /// and that `data` holds every row.
    pub fn new(
        data: CudaView<'a, u8>,
        ggml_type: GgmlType,
        row_len: usize,
        n_rows: usize,
    ) -> Result<Self> {
        type_code(ggml_type)?;
        let shape = |detail: String| CudaError::Shape {
            op: "weight",
            detail,
        };
        let bs = ggml_type.block_size();
        if row_len == 0 || row_len % bs != 0 {
            return Err(shape(format!(
                "row length {row_len} is not a positive multiple of {ggml_type}'s block size {bs}"
            )));
        }
        if i32::try_from(row_len).is_err() || i32::try_from(n_rows).is_err() {
            return Err(shape(format!(
                "{n_rows} rows of {row_len} exceed the kernels' 32-bit indices"
            )));
        }
        let need = (row_len / bs)
            .checked_mul(ggml_type.type_size())
            .and_then(|rb| rb.checked_mul(n_rows))
            .ok_or_else(|| shape("tensor size overflows usize".into()))?;
        if data.len() < need {
            return Err(shape(format!(
                "{n_rows} x {row_len} {ggml_type} needs {need} bytes, the buffer holds {}",
                data.len()
            )));
        }
        Ok(Self {
            data,
            ggml_type,
            row_len,
            n_rows,
        })
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.row_len / self.ggml_type.block_size() * self.ggml_type.type_size()
    }
}
