//! The ends of the network: token embedding lookup and the final norm + LM head.

use super::blocks::decode_row;
use super::error::ForwardError;
use super::matmul::{matmul, Kernel};
use super::norm::rmsnorm;
use super::weights::TensorView;

/// Decodes a 1-row tensor (a norm weight) to f32.
pub fn vector(w: &TensorView<'_>) -> Result<Vec<f32>, ForwardError> {
    let mut out = vec![0f32; w.row_len * w.n_rows];
    decode_row(w.ggml_type, w.data, &mut out).map_err(|reason| ForwardError::Dequant {
        name: w.name.to_string(),
        reason,
    })?;
    Ok(out)
}

/// Looks up the embedding rows of `tokens` (any decodable type; one row decoded per token).
pub fn embed(token_embd: &TensorView<'_>, tokens: &[u32]) -> Result<Vec<f32>, ForwardError> {
    let dim = token_embd.row_len;
    let mut out = vec![0f32; tokens.len() * dim];
    for (o, &t) in out.chunks_exact_mut(dim).zip(tokens) {
        let row = token_embd
            .row(t as usize)
            .ok_or(ForwardError::TokenOutOfRange {
                token: t,
                vocab_size: token_embd.n_rows,
            })?;
        decode_row(token_embd.ggml_type, row, o).map_err(|reason| ForwardError::Dequant {
            name: token_embd.name.to_string(),
            reason,
        })?;
    }
    Ok(out)
}

/// Final RMSNorm of the LAST row of `hidden` followed by the LM head: the next-token logits.
pub fn logits(
    hidden: &[f32],
    output_norm: &TensorView<'_>,
    lm_head: &TensorView<'_>,
    eps: f32,
    kernel: Kernel,
) -> Result<Vec<f32>, ForwardError> {
    let dim = lm_head.row_len;
    if hidden.len() < dim || output_norm.row_len * output_norm.n_rows != dim {
        return Err(ForwardError::Batch(format!(
            "final norm: {} hidden values, norm of {}, head rows of {dim}",
            hidden.len(),
            output_norm.row_len
        )));
    }
    let last = &hidden[hidden.len() - dim..];
    let mut xn = vec![0f32; dim];
    rmsnorm(last, &vector(output_norm)?, eps, &mut xn);
    let mut out = vec![0f32; lm_head.n_rows];
    matmul(lm_head, &xn, 1, &mut out, kernel)?;
    Ok(out)
}
