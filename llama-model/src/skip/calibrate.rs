//! Calibration: how much each layer changes the hidden state, measured over real text.

use crate::cpu::{ForwardError, Model};

use super::runner::{LayerPlan, Logits, Runner};
use super::{SkipError, SkipMap};

/// Cosine similarity of two vectors, accumulated in f64; 1.0 when either is all zeros
/// (a zero vector carries no direction to change).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        return 1.0;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

/// The `p`-th percentile (0..=100) of `values` by linear interpolation between closest
/// ranks (numpy's default); NaN for an empty slice.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (v.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    v[lo] + (v[hi] - v[lo]) * frac
}

/// Per-layer statistics of cos(hidden before the layer, hidden after it) over every token.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerStat {
    /// Layer index.
    pub layer: usize,
    /// Mean cosine similarity.
    pub mean: f64,
    /// 5th percentile (a low tail: the tokens the layer changes most).
    pub p5: f64,
    /// Smallest value.
    pub min: f64,
}

/// The result of [`calibrate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// One entry per layer, in order.
    pub layers: Vec<LayerStat>,
    /// Tokens measured.
    pub tokens: usize,
}

impl Calibration {
    /// Candidates for skipping (never the first or last layer), most skippable first:
    /// ordered by p5 cosine, then by mean, descending.
    pub fn ranking(&self) -> Vec<usize> {
        let n = self.layers.len();
        let mut idx: Vec<usize> = (1..n.saturating_sub(1)).collect();
        idx.sort_by(|&a, &b| {
            let (la, lb) = (&self.layers[a], &self.layers[b]);
            lb.p5.total_cmp(&la.p5).then(lb.mean.total_cmp(&la.mean))
        });
        idx
    }

    /// A map skipping every eligible layer whose p5 cosine is at least `threshold`.
    pub fn map_for_threshold(
        &self,
        fingerprint: &str,
        threshold: f64,
    ) -> Result<SkipMap, SkipError> {
        let skipped = self
            .ranking()
            .into_iter()
            .filter(|&i| self.layers[i].p5 >= threshold)
            .collect();
        SkipMap::new(
            fingerprint.to_string(),
            self.layers.len(),
            skipped,
            format!("p5 cosine >= {threshold}"),
        )
    }

    /// A map skipping the `count` most skippable layers; fails if fewer are eligible.
    pub fn map_for_count(&self, fingerprint: &str, count: usize) -> Result<SkipMap, SkipError> {
        let ranking = self.ranking();
        if count > ranking.len() {
            return Err(SkipError::Invalid(format!(
                "cannot skip {count} layers: only {} of {} are eligible (never the first or last)",
                ranking.len(),
                self.layers.len()
            )));
        }
        SkipMap::new(
            fingerprint.to_string(),
            self.layers.len(),
            ranking[..count].to_vec(),
            format!("skip the {count} layers of highest p5 cosine"),
        )
    }
}

/// Runs `tokens` through every layer of `model` (as one sequence) and measures, per layer and
/// token, the cosine similarity between the hidden state before and after the layer.
pub fn calibrate(model: &Model, tokens: &[u32]) -> Result<Calibration, ForwardError> {
    let n_layers = model.config().n_layers;
    let dim = model.config().dim;
    let mut runner = Runner::new(model, LayerPlan::full(n_layers), tokens.len())?;
    let mut cos: Vec<Vec<f64>> = vec![Vec::with_capacity(tokens.len()); n_layers];
    runner.feed_observed(tokens, Logits::Last, &mut |layer, before, after| {
        if let Some(c) = cos.get_mut(layer) {
            for (b, a) in before.chunks_exact(dim).zip(after.chunks_exact(dim)) {
                c.push(cosine(b, a));
            }
        }
    })?;
    let layers = cos
        .iter()
        .enumerate()
        .map(|(layer, c)| LayerStat {
            layer,
            mean: c.iter().sum::<f64>() / c.len().max(1) as f64,
            p5: percentile(c, 5.0),
            min: c.iter().copied().fold(f64::INFINITY, f64::min),
        })
        .collect();
    Ok(Calibration {
        layers,
        tokens: tokens.len(),
    })
}
