//! `out = x * W^T` over ggml blocks: every output row is the dot product of one weight row with
//! the activations, computed in parallel over rows (rayon). With a batch of tokens each weight
//! row is decoded once and used for all of them.

use rayon::prelude::*;

use super::error::ForwardError;
use super::q8::{has_q8_kernel, quantize_q8};
use super::simd;
use super::weights::TensorView;

/// How matrix-vector products treat the activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernel {
    /// Activations stay f32; each weight row is decoded to f32 (the plain reference).
    F32,
    /// For 32-element block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) activations are quantized to
    /// 8 bits per block of 32 and dotted with integer arithmetic, as llama.cpp does; other
    /// types fall back to [`Kernel::F32`].
    #[default]
    Q8,
}

/// Rows per parallel task: enough tasks to balance the threads, few enough to amortise.
fn rows_per_task(n_rows: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    (n_rows / (threads * 8)).clamp(8, 256)
}

/// Computes `out[t][r] = dot(W row r, x[t])` for `n_tokens` tokens.
///
/// `x` holds `n_tokens` rows of `w.row_len` values, `out` `n_tokens` rows of `w.n_rows`.
/// A view of a subset of the rows of a matrix (see [`TensorView::rows`]) gives the matching
/// slice of the output, so a matrix split by rows across devices joins by concatenation.
pub fn matmul(
    w: &TensorView<'_>,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    kernel: Kernel,
) -> Result<(), ForwardError> {
    if x.len() != n_tokens * w.row_len || out.len() != n_tokens * w.n_rows {
        return Err(ForwardError::Batch(format!(
            "matmul with `{}` ({} x {}): {} inputs and {} outputs for {n_tokens} tokens",
            w.name,
            w.n_rows,
            w.row_len,
            x.len(),
            out.len()
        )));
    }
    if n_tokens == 0 {
        return Ok(());
    }
    if n_tokens == 1 {
        return rows_times_tokens(w, x, 1, out, kernel);
    }
    // Computed as [row][token] so each task writes one contiguous run, then transposed.
    let mut by_row = vec![0f32; out.len()];
    rows_times_tokens(w, x, n_tokens, &mut by_row, kernel)?;
    let n_rows = w.n_rows;
    out.par_chunks_mut(n_rows).enumerate().for_each(|(t, o)| {
        for (r, v) in o.iter_mut().enumerate() {
            *v = by_row[r * n_tokens + t];
        }
    });
    Ok(())
}

/// `dst[r * n_tokens + t] = dot(W row r, x[t])`, in parallel over runs of rows.
fn rows_times_tokens(
    w: &TensorView<'_>,
    x: &[f32],
    n_tokens: usize,
    dst: &mut [f32],
    kernel: Kernel,
) -> Result<(), ForwardError> {
    let row_bytes = w.row_bytes();
    let chunk_rows = rows_per_task(w.n_rows);
    let ty = w.ggml_type;
    if kernel == Kernel::Q8 && has_q8_kernel(ty) {
        let blocks_per_row = w.row_len / 32;
        let mut xq = Vec::with_capacity(blocks_per_row * n_tokens);
        quantize_q8(x, &mut xq);
        dst.par_chunks_mut(chunk_rows * n_tokens)
            .zip(w.data.par_chunks(chunk_rows * row_bytes))
            .for_each(|(o, rows)| simd::rows_q8(ty, rows, row_bytes, &xq, blocks_per_row, o));
        Ok(())
    } else {
        dst.par_chunks_mut(chunk_rows * n_tokens)
            .zip(w.data.par_chunks(chunk_rows * row_bytes))
            .try_for_each(|(o, rows)| simd::rows_f32(ty, rows, row_bytes, x, w.row_len, o))
            .map_err(|reason| ForwardError::Dequant {
                name: w.name.to_string(),
                reason,
            })
    }
}

/// Several single-token products sharing one input (e.g. Q, K and V of one layer) as ONE
/// parallel pass, so the threads synchronise once instead of once per matrix. With more than
/// one token it runs [`matmul`] per matrix.
pub fn matmul_shared_input(
    ws: &[&TensorView<'_>],
    x: &[f32],
    n_tokens: usize,
    outs: &mut [&mut [f32]],
    kernel: Kernel,
) -> Result<(), ForwardError> {
    let same_input = ws.windows(2).all(|p| p[0].row_len == p[1].row_len);
    if n_tokens != 1 || ws.len() != outs.len() || !same_input {
        for (w, o) in ws.iter().zip(outs.iter_mut()) {
            matmul(w, x, n_tokens, o, kernel)?;
        }
        return Ok(());
    }
    for (w, o) in ws.iter().zip(outs.iter()) {
        if x.len() != w.row_len || o.len() != w.n_rows {
            return Err(ForwardError::Batch(format!(
                "matmul with `{}` ({} x {}): {} inputs and {} outputs",
                w.name,
                w.n_rows,
                w.row_len,
                x.len(),
                o.len()
            )));
        }
    }
    let all_q8 = kernel == Kernel::Q8 && ws.iter().all(|w| has_q8_kernel(w.ggml_type));
    let mut xq = Vec::new();
    if all_q8 {
        quantize_q8(x, &mut xq);
    }
    let total_rows: usize = ws.iter().map(|w| w.n_rows).sum();
    let chunk_rows = rows_per_task(total_rows);
    // One task per run of rows of one matrix.
    let mut tasks = Vec::new();
    for (w, o) in ws.iter().zip(outs.iter_mut()) {
        let rb = w.row_bytes();
        for (oc, rows) in o.chunks_mut(chunk_rows).zip(w.data.chunks(chunk_rows * rb)) {
            tasks.push((*w, oc, rows));
        }
    }
    tasks.into_par_iter().try_for_each(|(w, o, rows)| {
        let rb = w.row_bytes();
        if all_q8 {
            simd::rows_q8(w.ggml_type, rows, rb, &xq, w.row_len / 32, o);
            Ok(())
        } else {
            simd::rows_f32(w.ggml_type, rows, rb, x, w.row_len, o).map_err(|reason| {
                ForwardError::Dequant {
                    name: w.name.to_string(),
                    reason,
                }
            })
        }
    })
}
