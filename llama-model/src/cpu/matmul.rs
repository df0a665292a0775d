//! `out = x * W^T` over ggml blocks: every output row is the dot product of one weight row with
//! the activations, computed in parallel over rows (rayon). With a batch of tokens each weight
//! row is decoded once and used for all of them.

use std::cell::Cell;
use std::thread::LocalKey;

use rayon::prelude::*;

use super::error::ForwardError;
use super::q8::{has_q8_kernel, quantize_q8, BlockQ8};
use super::q8k::{has_q8k_kernel, quantize_q8k, BlockQ8K, QK_K};
use super::simd;
use super::weights::TensorView;
use crate::sys::simd_k;

thread_local! {
    /// The calling thread's buffers for quantized activations, reused across products so the
    /// decode hot path does not allocate (taken out while in use: a nested product on the same
    /// thread finds an empty one and allocates instead of aliasing).
    static SCRATCH_Q8: Cell<Vec<BlockQ8>> = const { Cell::new(Vec::new()) };
    static SCRATCH_Q8K: Cell<Vec<BlockQ8K>> = const { Cell::new(Vec::new()) };
    /// Products of several tokens, `[row][token]` before the transpose into `[token][row]`.
    static SCRATCH_BY_ROW: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer `key` (emptied by `f` as it likes).
fn with_scratch<T: 'static, R>(
    key: &'static LocalKey<Cell<Vec<T>>>,
    f: impl FnOnce(&mut Vec<T>) -> R,
) -> R {
    let mut v = key.with(Cell::take);
    let r = f(&mut v);
    key.with(|c| c.set(v));
    r
}

/// How one weight type meets the activations under a kernel choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// 8-bit activations per block of 32.
    Q8,
    /// q8_K activations per super-block of 256.
    Q8K,
    /// f32 activations, weight rows decoded to f32.
    F32,
}

fn path(kernel: Kernel, ty: gguf::GgmlType, row_len: usize) -> Path {
    match kernel {
        Kernel::Q8 if has_q8_kernel(ty) => Path::Q8,
        Kernel::Q8 if has_q8k_kernel(ty) && row_len % QK_K == 0 => Path::Q8K,
        _ => Path::F32,
    }
}

/// How matrix-vector products treat the activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernel {
    /// Activations stay f32; each weight row is decoded to f32 (the plain reference).
    F32,
    /// For 32-element block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) activations are quantized to
    /// 8 bits per block of 32, for the k-quants Q4_K, Q5_K and Q6_K to q8_K (8 bits per
    /// super-block of 256), and dotted with integer arithmetic, as llama.cpp does; other types
    /// fall back to [`Kernel::F32`].
    #[default]
    Q8,
}

/// Which copy of the k-quant (q8_K) kernels products run under [`Kernel::Q8`]:
/// `"avx512-vnni"`, `"avx512bw"`, `"avx2"` or `"portable"` (run-time detection; the AVX-512
/// copies exist when built with Rust 1.89 or newer), under [`limit_kquant_simd`]'s ceiling.
pub fn kquant_kernel() -> &'static str {
    simd_k::q8k_path()
}

/// The copies of the k-quant kernels, fastest first (see [`limit_kquant_simd`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KquantSimd {
    /// AVX-512 F/BW with VNNI.
    Avx512Vnni,
    /// AVX-512 F/BW.
    Avx512Bw,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// The portable loops.
    Portable,
}

/// Makes every later k-quant product in the process use at most the `max` copy (all copies
/// give the same bits; this is for comparing their speed, as the `cpu_matvec` bench does).
/// The CPU's own features still bound the choice.
pub fn limit_kquant_simd(max: KquantSimd) {
    simd_k::set_ceiling(match max {
        KquantSimd::Avx512Vnni => 3,
        KquantSimd::Avx512Bw => 2,
        KquantSimd::Avx2 => 1,
        KquantSimd::Portable => 0,
    });
}

/// Parallel tasks per rayon thread a product aims for: more balance the threads, fewer cost
/// less scheduling (8 measured best of 1, 2, 4 and 8 on the 16-core H200 machine, docs/PERF.md).
const TASKS_PER_THREAD: usize = 8;

/// Rows per parallel task: enough tasks to balance the threads, few enough to amortise.
fn rows_per_task(n_rows: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    (n_rows / (threads * TASKS_PER_THREAD)).clamp(8, 256)
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
    // No tokens, or a view of no rows (a split matrix wholly on the other side): no output.
    if n_tokens == 0 || w.n_rows == 0 {
        return Ok(());
    }
    if n_tokens == 1 {
        return rows_times_tokens(w, x, 1, out, kernel);
    }
    // Computed as [row][token] so each task writes one contiguous run, then transposed.
    with_scratch(&SCRATCH_BY_ROW, |by_row| {
        by_row.resize(out.len(), 0.0);
        rows_times_tokens(w, x, n_tokens, by_row, kernel)?;
        let n_rows = w.n_rows;
        let by_row = &*by_row;
        out.par_chunks_mut(n_rows).enumerate().for_each(|(t, o)| {
            for (r, v) in o.iter_mut().enumerate() {
                *v = by_row[r * n_tokens + t];
            }
        });
        Ok(())
    })
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
    let tasks = dst
        .par_chunks_mut(chunk_rows * n_tokens)
        .zip(w.data.par_chunks(chunk_rows * row_bytes));
    match path(kernel, ty, w.row_len) {
        Path::Q8 => with_scratch(&SCRATCH_Q8, |xq| {
            xq.clear();
            quantize_q8(x, xq);
            let bpr = w.row_len / 32;
            tasks.for_each(|(o, rows)| simd::rows_q8(ty, rows, row_bytes, xq, bpr, o));
            Ok(())
        }),
        Path::Q8K => with_scratch(&SCRATCH_Q8K, |xq| {
            quantize_q8k(x, xq);
            let bpr = w.row_len / QK_K;
            tasks.for_each(|(o, rows)| simd_k::rows_q8k(ty, rows, row_bytes, xq, bpr, o));
            Ok(())
        }),
        Path::F32 => tasks
            .try_for_each(|(o, rows)| simd::rows_f32(ty, rows, row_bytes, x, w.row_len, o))
            .map_err(|reason| ForwardError::Dequant {
                name: w.name.to_string(),
                reason,
            }),
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
    let paths = || ws.iter().map(|w| path(kernel, w.ggml_type, w.row_len));
    with_scratch(&SCRATCH_Q8, |xq8| {
        with_scratch(&SCRATCH_Q8K, |xq8k| {
            xq8.clear();
            xq8k.clear();
            if paths().any(|p| p == Path::Q8) {
                quantize_q8(x, xq8);
            }
            if paths().any(|p| p == Path::Q8K) {
                quantize_q8k(x, xq8k);
            }
            let total_rows: usize = ws.iter().map(|w| w.n_rows).sum();
            let chunk_rows = rows_per_task(total_rows);
            let (xq8, xq8k) = (&*xq8, &*xq8k);
            // One task per run of rows of one matrix, all in one parallel pass.
            ws.par_iter()
                .zip(outs.par_iter_mut())
                .try_for_each(|(w, o)| {
                    let (rb, ty) = (w.row_bytes(), w.ggml_type);
                    let p = path(kernel, ty, w.row_len);
                    o.par_chunks_mut(chunk_rows)
                        .zip(w.data.par_chunks(chunk_rows * rb))
                        .try_for_each(|(o, rows)| {
                            match p {
                                Path::Q8 => simd::rows_q8(ty, rows, rb, xq8, w.row_len / 32, o),
                                Path::Q8K => {
                                    simd_k::rows_q8k(ty, rows, rb, xq8k, w.row_len / QK_K, o)
                                }
                                Path::F32 => {
                                    return simd::rows_f32(ty, rows, rb, x, w.row_len, o).map_err(
                                        |reason| ForwardError::Dequant {
                                            name: w.name.to_string(),
                                            reason,
                                        },
                                    )
                                }
                            }
                            Ok(())
                        })
                })
        })
    })
}
