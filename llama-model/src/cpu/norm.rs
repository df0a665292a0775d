//! RMSNorm: `y = x / sqrt(mean(x^2) + eps) * w`.

/// Normalizes each row of `x` (rows of `w.len()` values) into `out`, scaled by `w`.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len().max(1);
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        // llama.cpp's arithmetic: f32 squares summed in f64, the mean and the scale in f32.
        let sum_sq: f64 = xr.iter().map(|v| f64::from(v * v)).sum();
        let mean = (sum_sq / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((o, xv), wv) in or.iter_mut().zip(xr).zip(w) {
            *o = xv * scale * wv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_rms_row_is_unchanged_and_weights_scale() {
        // [3, 4] has mean square 12.5; with eps 0 it normalizes to [3, 4] / sqrt(12.5).
        let mut out = [0f32; 4];
        rmsnorm(&[3.0, 4.0, 1.0, -1.0], &[1.0, 2.0], 0.0, &mut out);
        let r = 12.5f32.sqrt();
        assert!((out[0] - 3.0 / r).abs() < 1e-6);
        assert!((out[1] - 8.0 / r).abs() < 1e-6);
        assert!((out[2] - 1.0).abs() < 1e-6);
        assert!((out[3] + 2.0).abs() < 1e-6);
    }
}
