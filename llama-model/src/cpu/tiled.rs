//! Attention for batches of [`TILE`] query tokens or more, with the arithmetic of llama.cpp's
//! tiled CPU flash attention (the kernel it switches to at that batch size):
//! - keys are taken in tiles of [`TILE`] positions; each score is an f32 dot product of the
//!   f32 query (not rounded to f16, unlike the per-row kernel) with the f16 key, one FMA per
//!   element in order, then times the scale; masked and missing positions score `-inf`;
//! - per tile, the running maximum `M` takes the tile's maximum; if it grew, the f32 value
//!   accumulator and the normaliser `S` are scaled by `exp(M_old - M)`; the tile's weights are
//!   `exp(s - M)` (llama.cpp's vector `expf`) and their sum, reduced in groups of sixteen as
//!   `_mm512_reduce_add_ps` does and accumulated in f64, is added to `S`;
//! - the accumulator gets `fma(w, v, acc)` over the tile's positions in order;
//! - the output is `acc * (1 / S)`.
//!
//! Queries are processed in blocks of [`TILE`] rows of one head, so each key tile is laid out
//! once (transposed, for dot products vectorised across positions) for the whole block.

use rayon::prelude::*;

use super::attention::AttentionShape;
use super::expf;
use super::simd;

/// Query rows and key positions per tile (llama.cpp's `GGML_FA_TILE_Q` / `GGML_FA_TILE_KV`).
pub(crate) const TILE: usize = 64;

/// Sum of sixteen values in the order of GCC's `_mm512_reduce_add_ps`.
#[inline(always)]
fn reduce16(x: &[f32; 16]) -> f32 {
    let mut h = [0f32; 8];
    for (l, hl) in h.iter_mut().enumerate() {
        *hl = x[l + 8] + x[l];
    }
    let t = [h[4] + h[0], h[5] + h[1], h[6] + h[2], h[7] + h[3]];
    (t[0] + t[2]) + (t[1] + t[3])
}

/// Where one block of query rows of one head reads its inputs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Block {
    /// Size of one head.
    pub hd: usize,
    /// Keys visible to the block's first row (its position + 1); row `r` sees `first + r`.
    pub first_keys: usize,
    /// Positions stored in the cache.
    pub n_cached: usize,
    /// Floats per cache row.
    pub stride: usize,
    /// Offset of the head's kv head inside a cache row.
    pub offset: usize,
    /// Floats from one query row of this head to the next.
    pub q_stride: usize,
    /// Score scale.
    pub scale: f32,
}

/// Running softmax state of one query row.
struct RowState {
    m: f32,
    s: f32,
}

/// One head's block of query rows (`q`: row `r` at `r * q_stride`; `out`: `hd` values per
/// row, contiguous, at most [`TILE`] rows) with the tiled arithmetic of the module docs.
#[inline(always)]
pub(crate) fn attend_block(q: &[f32], keys: &[f32], values: &[f32], b: Block, out: &mut [f32]) {
    let hd = b.hd.max(1);
    let n_rows = out.len() / hd;
    let n_keys = |r: usize| (b.first_keys + r).min(b.n_cached);
    let last = n_keys(n_rows.saturating_sub(1));
    let mut rows: Vec<RowState> = (0..n_rows)
        .map(|_| RowState {
            m: f32::NEG_INFINITY,
            s: 0.0,
        })
        .collect();
    out.fill(0.0);
    let mut kt = vec![0f32; hd * TILE];
    let mut vt = vec![0f32; TILE * hd];
    let mut sc = [0f32; TILE];
    let mut w = [0f32; TILE];
    let mut ic = 0;
    while ic < last {
        // Lay out the tile: keys transposed ([dim][position]), values as rows; zero padding.
        let kv_tile = TILE.min(last - ic);
        for tk in 0..TILE {
            let row = (ic + tk) * b.stride + b.offset;
            let (k, v) = match (keys.get(row..row + hd), values.get(row..row + hd)) {
                (Some(k), Some(v)) if tk < kv_tile => (k, v),
                _ => (&[][..], &[][..]),
            };
            for dk in 0..hd {
                kt[dk * TILE + tk] = k.get(dk).copied().unwrap_or(0.0);
            }
            for (d, o) in vt[tk * hd..(tk + 1) * hd].iter_mut().enumerate() {
                *o = v.get(d).copied().unwrap_or(0.0);
            }
        }
        for (r, (st, acc)) in rows.iter_mut().zip(out.chunks_exact_mut(hd)).enumerate() {
            let valid = n_keys(r).saturating_sub(ic).min(TILE);
            let Some(qr) = q.get(r * b.q_stride..r * b.q_stride + hd) else {
                continue;
            };
            if valid == 0 {
                continue; // the whole tile is masked for this row
            }
            sc.fill(0.0);
            for (dk, qv) in qr.iter().enumerate() {
                for (s, k) in sc.iter_mut().zip(&kt[dk * TILE..(dk + 1) * TILE]) {
                    *s = qv.mul_add(*k, *s);
                }
            }
            let mut tile_max = f32::NEG_INFINITY;
            for (tk, s) in sc.iter_mut().enumerate() {
                *s = if tk < valid {
                    *s * b.scale
                } else {
                    f32::NEG_INFINITY
                };
                tile_max = if tile_max > *s { tile_max } else { *s };
            }
            let m_new = st.m.max(tile_max);
            if m_new > st.m {
                let ms = (st.m - m_new).exp();
                for a in acc.iter_mut() {
                    *a *= ms;
                }
                st.s *= ms;
            }
            st.m = m_new;
            let mut sum = 0f64;
            for (wc, sc16) in w.chunks_exact_mut(16).zip(sc.chunks_exact(16)) {
                for (wi, si) in wc.iter_mut().zip(sc16) {
                    *wi = expf::exp(si - m_new);
                }
                if let Ok(a) = <&[f32; 16]>::try_from(&*wc) {
                    sum += f64::from(reduce16(a));
                }
            }
            st.s = (f64::from(st.s) + sum) as f32;
            for (p, v) in w.iter().zip(vt.chunks_exact(hd)) {
                for (a, vv) in acc.iter_mut().zip(v) {
                    *a = p.mul_add(*vv, *a);
                }
            }
        }
        ic += TILE;
    }
    for (st, acc) in rows.iter().zip(out.chunks_exact_mut(hd)) {
        let inv = if st.s == 0.0 { 0.0 } else { 1.0 / st.s };
        for a in acc.iter_mut() {
            *a *= inv;
        }
    }
}

/// [`super::attention::attention`] for a batch of at least [`TILE`] tokens: blocks of
/// [`TILE`] query rows of one head run in parallel, then their outputs are put in place.
pub(crate) fn attention_tiled(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    start_pos: usize,
    s: AttentionShape,
    out: &mut [f32],
) {
    let hd = s.head_dim.max(1);
    let group = (s.n_heads / s.n_kv_heads.max(1)).max(1);
    let kv_dim = s.n_kv_heads * hd;
    let q_stride = s.n_heads * hd;
    let n_tokens = q.len() / q_stride.max(1);
    let n_blocks = n_tokens.div_ceil(TILE);
    let results: Vec<Vec<f32>> = (0..s.n_heads * n_blocks)
        .into_par_iter()
        .map(|task| {
            let (h, blk) = (task / n_blocks, task % n_blocks);
            let t0 = blk * TILE;
            let rows = TILE.min(n_tokens - t0);
            let b = Block {
                hd,
                first_keys: start_pos + t0 + 1,
                n_cached: keys.len() / kv_dim.max(1),
                stride: kv_dim,
                offset: (h / group) * hd,
                q_stride,
                scale: 1.0 / (hd as f32).sqrt(),
            };
            let mut o = vec![0f32; rows * hd];
            simd::attend_block(
                q.get(t0 * q_stride + h * hd..).unwrap_or(&[]),
                keys,
                values,
                b,
                &mut o,
            );
            o
        })
        .collect();
    for (task, o) in results.iter().enumerate() {
        let (h, blk) = (task / n_blocks, task % n_blocks);
        for (r, row) in o.chunks_exact(hd).enumerate() {
            let at = (blk * TILE + r) * q_stride + h * hd;
            if let Some(dst) = out.get_mut(at..at + hd) {
                dst.copy_from_slice(row);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Causal softmax-weighted sums computed in f64 from the textbook formula agree with the
    /// tiled kernel over several key tiles, query blocks and a GQA group, with and without
    /// earlier positions in the cache.
    #[test]
    fn tiled_attention_is_causal_softmax_attention() {
        let shape = AttentionShape {
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
        };
        let (hd, kv_dim, q_dim) = (8, 16, 32);
        // Values on a coarse grid (exact in f16, like the cache's).
        let val = |i: usize, m: usize| ((i * m + 3) % 17) as f32 * 0.125 - 1.0;
        for (start, n_tokens) in [(0usize, 70usize), (5, 64), (100, 130)] {
            let n_keys = start + n_tokens;
            let keys: Vec<f32> = (0..n_keys * kv_dim).map(|i| val(i, 7)).collect();
            let values: Vec<f32> = (0..n_keys * kv_dim).map(|i| val(i, 5)).collect();
            let q: Vec<f32> = (0..n_tokens * q_dim).map(|i| val(i, 11) * 0.5).collect();
            let mut out = vec![f32::NAN; n_tokens * q_dim];
            attention_tiled(&q, &keys, &values, start, shape, &mut out);
            for t in 0..n_tokens {
                for h in 0..4 {
                    let qh = &q[t * q_dim + h * hd..][..hd];
                    let off = (h / 2) * hd;
                    let n = start + t + 1;
                    let s: Vec<f64> = (0..n)
                        .map(|p| {
                            let k = &keys[p * kv_dim + off..][..hd];
                            qh.iter()
                                .zip(k)
                                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                                .sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = s.iter().map(|x| (x - mx).exp()).sum();
                    for d in 0..hd {
                        let want: f64 = (0..n)
                            .map(|p| {
                                (s[p] - mx).exp() / z * f64::from(values[p * kv_dim + off + d])
                            })
                            .sum();
                        let got = f64::from(out[t * q_dim + h * hd + d]);
                        assert!(
                            (got - want).abs() <= 1e-5,
                            "start {start}, token {t}, head {h}, dim {d}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
