//! Borrowed views of weight tensors: the forward pass reads weights where the caller keeps them.

use gguf::GgmlType;

use super::error::ForwardError;

/// A 2-D (or 1-D) ggml tensor lying in a byte buffer the caller owns.
///
/// Rows are `row_len` elements long (ggml `dims[0]`); the view holds `n_rows` consecutive rows,
/// which may be a slice of a bigger matrix (see [`TensorView::rows`]): a matrix can be split by
/// rows across devices and the partial outputs joined.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    /// Tensor name, for error messages.
    pub name: &'a str,
    /// The raw ggml blocks, row after row.
    pub data: &'a [u8],
    /// Element type.
    pub ggml_type: GgmlType,
    /// Elements per row.
    pub row_len: usize,
    /// Number of rows in this view.
    pub n_rows: usize,
}

impl<'a> TensorView<'a> {
    /// A view of `n_rows` rows of `row_len` elements of type `ty`; checks that `data` holds
    /// exactly that many whole blocks.
    pub fn new(
        name: &'a str,
        data: &'a [u8],
        ty: GgmlType,
        row_len: usize,
        n_rows: usize,
    ) -> Result<TensorView<'a>, ForwardError> {
        let shape_err = |reason: String| ForwardError::Shape {
            name: name.to_string(),
            reason,
        };
        if row_len == 0 || row_len % ty.block_size() != 0 {
            return Err(shape_err(format!(
                "row length {row_len} is not a non-zero multiple of the {ty} block size {}",
                ty.block_size()
            )));
        }
        let row_bytes = (row_len / ty.block_size()) * ty.type_size();
        let expected = row_bytes.checked_mul(n_rows);
        if expected != Some(data.len()) {
            return Err(shape_err(format!(
                "{} bytes given, {n_rows} rows of {row_len} {ty} elements need {:?}",
                data.len(),
                expected
            )));
        }
        Ok(TensorView {
            name,
            data,
            ggml_type: ty,
            row_len,
            n_rows,
        })
    }

    /// A view from GGUF dims (ggml order: `dims[0]` is the row length, the rest multiply into
    /// the row count).
    pub fn from_dims(
        name: &'a str,
        data: &'a [u8],
        ty: GgmlType,
        dims: &[u64],
    ) -> Result<TensorView<'a>, ForwardError> {
        let bad = || ForwardError::Shape {
            name: name.to_string(),
            reason: format!("unusable dims {dims:?}"),
        };
        let row_len = usize::try_from(*dims.first().ok_or_else(bad)?).map_err(|_| bad())?;
        let mut n_rows: usize = 1;
        for d in &dims[1..] {
            n_rows = usize::try_from(*d)
                .ok()
                .and_then(|d| n_rows.checked_mul(d))
                .ok_or_else(bad)?;
        }
        TensorView::new(name, data, ty, row_len, n_rows)
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        (self.row_len / self.ggml_type.block_size()) * self.ggml_type.type_size()
    }

    /// The bytes of row `i` (None when out of range).
    pub fn row(&self, i: usize) -> Option<&'a [u8]> {
        let rb = self.row_bytes();
        self.data
            .get(i.checked_mul(rb)?..i.checked_mul(rb)?.checked_add(rb)?)
    }

    /// The rows `range` of this view, as a view of their own (for splitting a matrix by rows).
    pub fn rows(&self, range: std::ops::Range<usize>) -> Result<TensorView<'a>, ForwardError> {
        let rb = self.row_bytes();
        let bad = || ForwardError::Shape {
            name: self.name.to_string(),
            reason: format!("row range {range:?} outside 0..{}", self.n_rows),
        };
        if range.start > range.end || range.end > self.n_rows {
            return Err(bad());
        }
        let data = self
            .data
            .get(range.start * rb..range.end * rb)
            .ok_or_else(bad)?;
        TensorView::new(self.name, data, self.ggml_type, self.row_len, range.len())
    }

    /// Checks that this view is `n_rows` x `row_len`.
    pub fn expect_shape(&self, row_len: usize, n_rows: usize) -> Result<(), ForwardError> {
        if self.row_len != row_len || self.n_rows != n_rows {
            return Err(ForwardError::Shape {
                name: self.name.to_string(),
                reason: format!(
                    "is {} rows x {} elements, the model config needs {n_rows} x {row_len}",
                    self.n_rows, self.row_len
                ),
            });
        }
        Ok(())
    }
}

/// The nine tensors of one transformer block, borrowed from memory the caller owns.
#[derive(Debug, Clone, Copy)]
pub struct LayerWeights<'a> {
    /// RMSNorm weight before attention (`attn_norm`, dim).
    pub attn_norm: TensorView<'a>,
    /// Query projection (`attn_q`, dim rows of dim).
    pub attn_q: TensorView<'a>,
    /// Key projection (`attn_k`, kv_dim rows of dim).
    pub attn_k: TensorView<'a>,
    /// Value projection (`attn_v`, kv_dim rows of dim).
    pub attn_v: TensorView<'a>,
    /// Attention output projection (`attn_output`, dim rows of dim).
    pub attn_output: TensorView<'a>,
    /// RMSNorm weight before the FFN (`ffn_norm`, dim).
    pub ffn_norm: TensorView<'a>,
    /// FFN gate projection (`ffn_gate`, ffn_dim rows of dim).
    pub ffn_gate: TensorView<'a>,
    /// FFN up projection (`ffn_up`, ffn_dim rows of dim).
    pub ffn_up: TensorView<'a>,
    /// FFN down projection (`ffn_down`, dim rows of ffn_dim).
    pub ffn_down: TensorView<'a>,
}

/// The GGUF names of the nine tensors of a block, without the `blk.{i}.` prefix, in the order
/// of the fields of [`LayerWeights`].
pub const LAYER_TENSOR_NAMES: [&str; 9] = [
    "attn_norm.weight",
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_output.weight",
    "ffn_norm.weight",
    "ffn_gate.weight",
    "ffn_up.weight",
    "ffn_down.weight",
];

impl<'a> LayerWeights<'a> {
    /// Builds the layer from nine views given in [`LAYER_TENSOR_NAMES`] order.
    pub fn from_array(v: [TensorView<'a>; 9]) -> LayerWeights<'a> {
        let [attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down] =
            v;
        LayerWeights {
            attn_norm,
            attn_q,
            attn_k,
            attn_v,
            attn_output,
            ffn_norm,
            ffn_gate,
            ffn_up,
            ffn_down,
        }
    }

    /// Checks every tensor's shape against the config.
    pub fn validate(&self, c: &crate::config::LlamaConfig) -> Result<(), ForwardError> {
        let (d, kv, f) = (c.dim, c.kv_dim(), c.ffn_dim);
        self.attn_norm.expect_shape(d, 1)?;
        self.attn_q.expect_shape(d, d)?;
        self.attn_k.expect_shape(d, kv)?;
        self.attn_v.expect_shape(d, kv)?;
        self.attn_output.expect_shape(d, d)?;
        self.ffn_norm.expect_shape(d, 1)?;
        self.ffn_gate.expect_shape(d, f)?;
        self.ffn_up.expect_shape(d, f)?;
        self.ffn_down.expect_shape(f, d)
    }
}
