//! Attention for one (query token, head) pair with llama.cpp's CPU arithmetic, and the SwiGLU
//! activation with its x86 SiLU. Both are plain safe code; [`super::simd`] runs AVX2/FMA copies.
//!
//! llama.cpp (CPU, default settings) keeps the KV cache in f16 and, with flash attention
//! (`auto` resolves to on for the CPU backend), computes per query row:
//! - `q16 = f16(q)`; each score `s = dot(q16, k16) * scale` with the f32 sums of
//!   `ggml_vec_dot_f16` (see [`dot_f16_order`]);
//! - an online softmax whose value accumulator is itself f16: on a new maximum the
//!   accumulator is rescaled by `exp(M_old - M)` (rounded to f16), then
//!   `acc = f16(fma(v, w, acc))` with `w = exp(s - M)` (or 1 on a new maximum), and the
//!   normaliser `S = fma(S, ms, w)` (GCC contracts llama.cpp's `S*ms + vs`);
//! - the output `f32(acc) * (1 / S)`.
//!
//! This is llama.cpp's per-row kernel, which it runs for batches of fewer than 64 query tokens
//! (larger ones: `tiled.rs`) and for single-token steps while its (256-padded) cache view is
//! shorter than 512 positions. Longer decodes there split the cache over threads, so from
//! about 257 positions on the results agree closely, not bit for bit.

use super::expf;

/// `x` rounded to the nearest f16 (ties to even), returned as f32.
#[inline(always)]
pub(crate) fn round_f16(x: f32) -> f32 {
    let (r, ok) = round_f16_finite(x);
    if ok {
        r
    } else {
        half::f16::from_f32(x).to_f32()
    }
}

/// Branch-free f16 rounding, valid (second value true) for every finite `|x| < 65520`, so
/// loops over it vectorise; the caller redoes the rare others with `half`.
#[inline(always)]
fn round_f16_finite(x: f32) -> (f32, bool) {
    let bits = x.to_bits();
    let abs = bits & 0x7fff_ffff;
    // f16 normal range [2^-14, 65520): keep 10 of the 23 mantissa bits, rounding the 13
    // dropped ones to nearest even (a carry into the exponent is the correct result).
    let normal = f32::from_bits(bits.wrapping_add(0x0fff + ((bits >> 13) & 1)) & !0x1fff);
    // Below 2^-14 the f16 grid is multiples of 2^-24: round `x * 2^24` (< 2^10) to an integer
    // with ties to even by adding and subtracting 1.5 * 2^23, keeping the sign of a zero.
    let magic = 12_582_912.0f32;
    let tiny = ((x * 16_777_216.0 + magic) - magic) * (1.0 / 16_777_216.0);
    let tiny = f32::from_bits(tiny.to_bits() | (bits & 0x8000_0000));
    (
        if abs < 0x3880_0000 { tiny } else { normal },
        abs < 0x477f_f000,
    )
}

/// Rounds every element of `acc` to f16 in place, with loops that vectorise (see
/// [`round_f16_finite`]).
#[inline(always)]
fn round_all_f16(acc: &mut [f32]) {
    let max_abs_bits = acc
        .iter()
        .fold(0u32, |m, a| m.max(a.to_bits() & 0x7fff_ffff));
    if max_abs_bits < 0x477f_f000 {
        for a in acc.iter_mut() {
            *a = round_f16_finite(*a).0;
        }
    } else {
        for a in acc.iter_mut() {
            *a = round_f16(*a);
        }
    }
}

/// Dot product in the order of llama.cpp's `ggml_vec_dot_f16` as the reference build compiles
/// it (x86 with AVX-512, `GGML_NATIVE` on the machine the fixtures come from): four
/// accumulators of sixteen lanes over 64-element steps (element `64s + 16r + l` goes to
/// accumulator `r`, lane `l`, by FMA), reduced lane-wise as `(a0 + a2) + (a1 + a3)`, then
/// across the sixteen lanes as GCC's `_mm512_reduce_add_ps` does (`l + (l + 8)`, then
/// `l + (l + 4)`, then `(t0 + t2) + (t1 + t3)`); a tail of `n % 64` elements is added in f64.
#[inline(always)]
pub(crate) fn dot_f16_order(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let np = n - n % 64;
    let mut acc = [[0f32; 16]; 4];
    for (ca, cb) in a[..np].chunks_exact(64).zip(b[..np].chunks_exact(64)) {
        for (r, ar) in acc.iter_mut().enumerate() {
            for (l, al) in ar.iter_mut().enumerate() {
                *al = ca[16 * r + l].mul_add(cb[16 * r + l], *al);
            }
        }
    }
    let mut x = [0f32; 16];
    for (l, xl) in x.iter_mut().enumerate() {
        *xl = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let mut h = [0f32; 8];
    for (l, hl) in h.iter_mut().enumerate() {
        *hl = x[l + 8] + x[l];
    }
    let t = [h[4] + h[0], h[5] + h[1], h[6] + h[2], h[7] + h[3]];
    let mut sum = f64::from((t[0] + t[2]) + (t[1] + t[3]));
    for (p, q) in a[np..n].iter().zip(&b[np..n]) {
        sum += f64::from(p * q);
    }
    sum as f32
}

/// Where one head's keys and values sit in the cache rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadView {
    /// Positions to attend to (`0..n_keys`).
    pub n_keys: usize,
    /// Floats per cache row (`n_kv_heads * head_dim`).
    pub stride: usize,
    /// Offset of this kv head inside a row.
    pub offset: usize,
    /// Score scale, `1 / sqrt(head_dim)`.
    pub scale: f32,
}

/// One query head against the f16-valued cache (see the module docs). `q` and `out` are one
/// head (`head_dim` values); `keys`/`values` hold at least `n_keys` rows of `stride`.
#[inline(always)]
pub(crate) fn attend_head(q: &[f32], keys: &[f32], values: &[f32], h: HeadView, out: &mut [f32]) {
    let hd = q.len();
    let q16: Vec<f32> = q.iter().map(|v| round_f16(*v)).collect();
    let mut acc = vec![0f32; hd];
    let mut m = f32::NEG_INFINITY;
    let mut s_sum = 0f32;
    for p in 0..h.n_keys {
        let row = p * h.stride + h.offset;
        let (Some(k), Some(v)) = (keys.get(row..row + hd), values.get(row..row + hd)) else {
            break;
        };
        let s = dot_f16_order(&q16, k) * h.scale;
        let (mut ms, mut vs) = (1f32, 1f32);
        if s > m {
            ms = (m - s).exp();
            m = s;
            for a in acc.iter_mut() {
                *a *= ms;
            }
            round_all_f16(&mut acc);
        } else {
            vs = (s - m).exp();
        }
        for (a, vv) in acc.iter_mut().zip(v) {
            *a = vv.mul_add(vs, *a);
        }
        round_all_f16(&mut acc);
        // `S = S*ms + vs`, contracted to one FMA by GCC in llama.cpp's build.
        s_sum = s_sum.mul_add(ms, vs);
    }
    let inv = 1.0 / s_sum;
    for (o, a) in out.iter_mut().zip(&acc) {
        *o = a * inv;
    }
}

/// `gate[i] = silu(gate[i]) * up[i]`, as llama.cpp's x86 `ggml_vec_swiglu_f32` in its AVX-512
/// build: runs of sixteen use its vector exponential ([`expf::exp`]), a remainder the C
/// library's `expf`.
#[inline(always)]
pub(crate) fn swiglu(gate: &mut [f32], up: &[f32]) {
    let n16 = gate.len() - gate.len() % 16;
    for (g, u) in gate[..n16].iter_mut().zip(up) {
        *g = *g / (1.0 + expf::exp(0.0 - *g)) * u;
    }
    for (g, u) in gate[n16..].iter_mut().zip(up.get(n16..).unwrap_or(&[])) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast rounding agrees with the `half` crate's conversion for every f32 bit pattern
    /// sampled (stride through all 2^32, plus the range edges).
    #[test]
    fn round_f16_matches_half() {
        let check = |bits: u32| {
            let x = f32::from_bits(bits);
            let want = half::f16::from_f32(x).to_f32();
            let got = round_f16(x);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{x:e}: {got:e} vs {want:e}"
            );
        };
        let mut b = 0u32;
        while let Some(n) = b.checked_add(4099) {
            check(b);
            b = n;
        }
        for e in [
            0x3880_0000u32,
            0x477f_e000,
            0x477f_f000,
            0x3800_0000,
            0x3380_0000,
            2048,
        ] {
            for d in 0..4096 {
                check(e.wrapping_sub(2048) + d);
                check((e.wrapping_sub(2048) + d) | 0x8000_0000);
            }
        }
    }

    /// The f16-order dot equals the exact (f64) dot up to f32 rounding, tail included.
    #[test]
    fn dot_f16_order_is_a_dot_product() {
        for n in [5usize, 32, 64, 70] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.25).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.5).collect();
            let want: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            assert_eq!(f64::from(dot_f16_order(&a, &b)), want, "n = {n}");
        }
    }

    /// With f16-exact inputs the online softmax equals the textbook softmax-weighted sum up to
    /// the f16 rounding of the accumulator.
    #[test]
    fn attend_head_is_softmax_weighted_values() {
        let hd = 4;
        let q = [0.5f32, -0.25, 1.0, 0.125];
        let keys: Vec<f32> = (0..3 * hd).map(|i| ((i % 5) as f32 - 2.0) * 0.5).collect();
        let values: Vec<f32> = (0..3 * hd).map(|i| (i as f32) * 0.25 - 1.0).collect();
        let h = HeadView {
            n_keys: 3,
            stride: hd,
            offset: 0,
            scale: 0.5,
        };
        let mut out = [0f32; 4];
        attend_head(&q, &keys, &values, h, &mut out);
        let s: Vec<f64> = (0..3)
            .map(|p| {
                (0..hd)
                    .map(|d| f64::from(q[d]) * f64::from(keys[p * hd + d]))
                    .sum::<f64>()
                    * 0.5
            })
            .collect();
        let mx = s.iter().cloned().fold(f64::MIN, f64::max);
        let w: Vec<f64> = s.iter().map(|v| (v - mx).exp()).collect();
        let tot: f64 = w.iter().sum();
        for d in 0..hd {
            let want: f64 = (0..3)
                .map(|p| w[p] / tot * f64::from(values[p * hd + d]))
                .sum();
            assert!(
                (f64::from(out[d]) - want).abs() < 2e-3,
                "{d}: {} vs {want}",
                out[d]
            );
        }
    }

    #[test]
    fn swiglu_is_silu_times_up() {
        let mut g: Vec<f32> = (0..13).map(|i| i as f32 * 0.7 - 4.0).collect();
        let up: Vec<f32> = (0..13).map(|i| 1.0 - i as f32 * 0.1).collect();
        let want: Vec<f64> = g
            .iter()
            .zip(&up)
            .map(|(x, u)| f64::from(*x) / (1.0 + (-f64::from(*x)).exp()) * f64::from(*u))
            .collect();
        swiglu(&mut g, &up);
        for (a, b) in g.iter().zip(&want) {
            assert!(
                (f64::from(*a) - b).abs() <= 1e-6 * (1.0 + b.abs()),
                "{a} vs {b}"
            );
        }
    }
}
