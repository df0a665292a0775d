//! Causal grouped-query attention over a per-layer KV cache.

use rayon::prelude::*;

use super::flash::{round_f16, HeadView};
use super::simd;
use super::tiled::{attention_tiled, TILE};

/// Keys and values of every position seen so far, per layer (rows of `kv_dim`, rotary
/// already applied to the keys), rounded to f16 on the way in like llama.cpp's default f16
/// cache (held as f32 for the readers). Grows as positions are added, up to `max_len`.
#[derive(Debug, Clone)]
pub struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    kv_dim: usize,
    max_len: usize,
}

impl KvCache {
    /// An empty cache for `n_layers` layers of `kv_dim`-wide keys and values.
    pub fn new(n_layers: usize, kv_dim: usize, max_len: usize) -> KvCache {
        KvCache {
            keys: vec![Vec::new(); n_layers],
            values: vec![Vec::new(); n_layers],
            kv_dim,
            max_len,
        }
    }

    /// Most positions the cache accepts.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Positions stored for `layer` (0 for an unknown layer).
    pub fn len(&self, layer: usize) -> usize {
        self.keys
            .get(layer)
            .map_or(0, |k| k.len() / self.kv_dim.max(1))
    }

    /// True when no layer holds any position.
    pub fn is_empty(&self) -> bool {
        self.keys.iter().all(Vec::is_empty)
    }

    /// Drops every position from `n` on, in every layer.
    pub fn truncate(&mut self, n: usize) {
        for v in self.keys.iter_mut().chain(self.values.iter_mut()) {
            v.truncate(n * self.kv_dim);
        }
    }

    /// Keys and values of `layer` (`len(layer)` rows of `kv_dim`).
    pub fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        match (self.keys.get(layer), self.values.get(layer)) {
            (Some(k), Some(v)) => (k, v),
            _ => (&[], &[]),
        }
    }

    /// Keeps the first `n_past` positions of `layer` and appends `k`, `v` (whole rows).
    /// Returns false (changing nothing) for an unknown layer or a layer holding fewer than
    /// `n_past` positions.
    pub(crate) fn store(&mut self, layer: usize, n_past: usize, k: &[f32], v: &[f32]) -> bool {
        let kv_dim = self.kv_dim;
        match (self.keys.get_mut(layer), self.values.get_mut(layer)) {
            (Some(kc), Some(vc)) if kc.len() >= n_past * kv_dim => {
                kc.truncate(n_past * kv_dim);
                vc.truncate(n_past * kv_dim);
                kc.extend(k.iter().map(|x| round_f16(*x)));
                vc.extend(v.iter().map(|x| round_f16(*x)));
                true
            }
            _ => false,
        }
    }
}

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads; query head `h` reads kv head `h / (n_heads / n_kv_heads)`.
    pub n_kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
}

/// For each query token `t` (at absolute position `start_pos + t`) and head, softmax-weighted
/// sum of the values at positions `0..=start_pos + t` (causal), weights
/// `softmax(q . k / sqrt(head_dim))`. `q` and `out` are `[token][n_heads * head_dim]`, `keys` and
/// `values` `[position][n_kv_heads * head_dim]` and hold every position up to the last token.
///
/// The arithmetic is llama.cpp's CPU flash attention over an f16 cache: for batches of fewer
/// than 64 tokens its per-row kernel (query rounded to f16, f16 value accumulator; see
/// `flash.rs`), for larger ones its tiled kernel (f32 query and accumulator; see `tiled.rs`).
pub fn attention(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    start_pos: usize,
    s: AttentionShape,
    out: &mut [f32],
) {
    let hd = s.head_dim.max(1);
    if q.len() / (s.n_heads * hd).max(1) >= TILE {
        return attention_tiled(q, keys, values, start_pos, s, out);
    }
    let group = (s.n_heads / s.n_kv_heads.max(1)).max(1);
    let kv_dim = s.n_kv_heads * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    out.par_chunks_mut(hd)
        .zip(q.par_chunks(hd))
        .enumerate()
        .for_each(|(i, (o, qh))| {
            let (t, h) = (i / s.n_heads, i % s.n_heads);
            let view = HeadView {
                n_keys: (start_pos + t + 1).min(keys.len() / kv_dim.max(1)),
                stride: kv_dim,
                offset: (h / group) * hd,
                scale,
            };
            simd::attend_head(qh, keys, values, view, o);
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_key_returns_its_value_and_causality_holds() {
        // 2 query heads sharing 1 kv head of size 2; 2 tokens at positions 0 and 1.
        let shape = AttentionShape {
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 2,
        };
        let q = [1.0, 0.0, 0.0, 1.0, /* token 1 */ 1.0, 0.0, 0.0, 0.0];
        let keys = [1.0, 0.0, /* pos 1 */ 0.0, 0.0];
        let values = [2.0, 3.0, /* pos 1 */ 4.0, 5.0];
        let mut out = [0f32; 8];
        attention(&q, &keys, &values, 0, shape, &mut out);
        // Token 0 sees only position 0: both heads return value 0.
        assert_eq!(&out[..4], &[2.0, 3.0, 2.0, 3.0]);
        // Token 1, head 0: scores [1/sqrt2, 0] -> weights e^(s)/sum.
        let s0 = (1.0f32 / 2f32.sqrt()).exp();
        let w0 = s0 / (s0 + 1.0);
        // The value accumulator is f16 (like llama.cpp's): 2^-9 steps near 2..4.
        assert!((out[4] - (w0 * 2.0 + (1.0 - w0) * 4.0)).abs() < 4e-3);
        // Token 1, head 1: q = 0 -> uniform weights.
        assert!((out[6] - 3.0).abs() < 4e-3 && (out[7] - 4.0).abs() < 4e-3);
    }

    #[test]
    fn cache_truncate_and_store() {
        let mut c = KvCache::new(2, 2, 8);
        assert!(c.store(0, 0, &[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0, 7.0, 8.0]));
        assert_eq!(c.len(0), 2);
        assert!(
            !c.store(1, 1, &[0.0, 0.0], &[0.0, 0.0]),
            "layer 1 has no position 0"
        );
        assert!(c.store(0, 1, &[9.0, 9.0], &[9.0, 9.0]));
        assert_eq!(c.layer(0).0, &[1.0, 2.0, 9.0, 9.0]);
        c.truncate(0);
        assert!(c.is_empty());
    }
}
