//! The fast path for the 256-element k-quant formats (Q4_K, Q5_K, Q6_K): activations quantized
//! once per product to q8_K blocks (256 values, an f32 scale and 16 partial sums of 16), then an
//! integer dot product per super-block and an f32 accumulation per row, the technique of
//! llama.cpp's `ggml_vec_dot_q*_K_q8_K`.
//!
//! Super-block layouts (ggml, little-endian, 256 weights):
//! - Q4_K (144 bytes): `d: f16, dmin: f16, scales[12], qs[128]`. Eight sub-blocks of 32 with a
//!   6-bit scale `sc` and 6-bit minimum `m` each (packed in `scales`, see [`scales_mins_k4`]);
//!   weight `= d * sc * q - dmin * m`, `q` a nibble. Chunk `c` (64 weights) is `qs[32c..32c+32]`:
//!   low nibbles are sub-block `2c`, high nibbles sub-block `2c + 1`.
//! - Q5_K (176 bytes): `d, dmin, scales[12], qh[32], qs[128]`; as Q4_K with a fifth bit: weight
//!   `l` of sub-block `s` takes bit `s` of `qh[l]` as bit 4.
//! - Q6_K (210 bytes): `ql[128], qh[64], scales[16]: i8, d: f16`. Two halves of 128; in half
//!   `h`, `ql[64h..64h+64]`, `qh[32h..32h+32]`: element `l` (0..32) takes the low nibble of
//!   `ql[l]` and bits 0-1 of `qh[l]`, element `32 + l` the low nibble of `ql[32 + l]` and bits
//!   2-3, element `64 + l` the high nibble of `ql[l]` and bits 4-5, element `96 + l` the high
//!   nibble of `ql[32 + l]` and bits 6-7; `q` (6 bits) minus 32 times `d * scales[16-group]`.
//!
//! The arithmetic, shared bit for bit by this portable code and the AVX2 kernels in
//! [`crate::sys`]: per super-block an exact i32 sum `sumi` of scale-weighted integer products
//! (and for Q4_K/Q5_K an exact i32 `summ = sum_j m_j * (bsums[2j] + bsums[2j+1])`), then
//! `acc = acc + (d_w * d_x) * sumi as f32` and `acc = acc - (dmin_w * d_x) * summ as f32` in
//! f32, super-block after super-block. Integer sums are order-independent, so any SIMD width
//! gives the same result.

use gguf::GgmlType;

use super::blocks::f16_at;

/// Elements per super-block.
pub(crate) const QK_K: usize = 256;

/// 256 activations quantized to i8: `x_j ~= d * qs[j]`, with `bsums[g] = sum(qs[16g..16g+16])`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockQ8K {
    /// Scale (negative when the largest-magnitude value is positive, as in llama.cpp).
    pub d: f32,
    /// Quantized values.
    pub qs: [i8; QK_K],
    /// Sums of each run of 16 quantized values.
    pub bsums: [i16; 16],
}

impl Default for BlockQ8K {
    fn default() -> Self {
        BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; 16],
        }
    }
}

/// True for the weight types [`dot_q8k`] handles.
pub(crate) fn has_q8k_kernel(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K)
}

/// Quantizes `x` (a multiple of 256 long) into `out` (cleared first), with the arithmetic of
/// llama.cpp's `quantize_row_q8_K` (its x86 builds use the reference C code):
/// - `max` is the first value of largest magnitude (signed); a block of zeros stays zero;
/// - `iscale = -127 / max`, `q_j = min(127, round(iscale * x_j))` with ties to even (the
///   `1.5 * 2^23` trick of its `nearest_int`), `d = 1 / iscale`;
/// - `bsums[g]` the exact sum of the 16 integers of group `g`.
pub(crate) fn quantize_q8k(x: &[f32], out: &mut Vec<BlockQ8K>) {
    out.clear();
    for c in x.chunks_exact(QK_K) {
        let mut b = BlockQ8K::default();
        let (mut amax, mut max) = (0f32, 0f32);
        for v in c {
            if v.abs() > amax {
                amax = v.abs();
                max = *v;
            }
        }
        if amax != 0.0 {
            let iscale = -127.0 / max;
            for (q, v) in b.qs.iter_mut().zip(c) {
                // |iscale * v| <= 127 (+ rounding), so the value fits an i8 after the `min`.
                let r = ((iscale * v + 12_582_912.0) - 12_582_912.0) as i32;
                *q = r.min(127) as i8;
            }
            for (s, g) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                *s = g.iter().map(|&q| i16::from(q)).sum();
            }
            b.d = 1.0 / iscale;
        }
        out.push(b);
    }
}

/// The eight 6-bit scales and eight 6-bit minimums of a Q4_K/Q5_K super-block from its 12
/// packed bytes, as two little-endian byte octets `(scales, mins)`.
///
/// Sub-blocks 0-3 keep scale and minimum in the low 6 bits of bytes 0-3 and 4-7; sub-blocks
/// 4-7 take their low 4 bits from the nibbles of bytes 8-11 (scale low, minimum high) and their
/// top 2 bits from the top 2 bits of bytes 0-3 (scale) and 4-7 (minimum).
#[inline(always)]
pub(crate) fn scales_mins_k4(p: &[u8; 12]) -> (u64, u64) {
    let w = |i: usize| u32::from_le_bytes([p[4 * i], p[4 * i + 1], p[4 * i + 2], p[4 * i + 3]]);
    let (w0, w1, w2) = (w(0), w(1), w(2));
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let sc_lo = w0 & LOW6;
    let sc_hi = (w2 & LOW4) | (((w0 >> 6) & LOW2) << 4);
    let m_lo = w1 & LOW6;
    let m_hi = ((w2 >> 4) & LOW4) | (((w1 >> 6) & LOW2) << 4);
    (
        u64::from(sc_lo) | u64::from(sc_hi) << 32,
        u64::from(m_lo) | u64::from(m_hi) << 32,
    )
}

/// `summ = sum_j m_j * (bsums[2j] + bsums[2j + 1])` for the mins octet of [`scales_mins_k4`].
#[inline(always)]
pub(crate) fn mins_dot(mins: u64, bsums: &[i16; 16]) -> i32 {
    (0..8)
        .map(|j| {
            let m = ((mins >> (8 * j)) & 0xff) as i32;
            m * (i32::from(bsums[2 * j]) + i32::from(bsums[2 * j + 1]))
        })
        .sum()
}

/// The f32 scale at byte `i` of a block (an f16), exactly.
#[inline(always)]
pub(crate) fn f16_scale(b: &[u8], i: usize) -> f32 {
    f16_at(b, i)
}

/// The f32 step shared by every kernel for a Q4_K/Q5_K super-block with scales `d`, `dmin`
/// (the block's f16 values, exactly).
#[inline(always)]
pub(crate) fn accumulate_k4(acc: f32, d: f32, dmin: f32, xd: f32, sumi: i32, summ: i32) -> f32 {
    let acc = acc + (d * xd) * sumi as f32;
    acc - (dmin * xd) * summ as f32
}

/// The f32 step shared by every kernel for a Q6_K super-block with scale `d`.
#[inline(always)]
pub(crate) fn accumulate_q6k(acc: f32, d: f32, xd: f32, sumi: i32) -> f32 {
    acc + (d * xd) * sumi as f32
}

/// Bytes per super-block of a k-quant type handled here.
pub(crate) fn block_bytes(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q4_K => 144,
        GgmlType::Q5_K => 176,
        _ => 210,
    }
}

/// Exact integer sums of one Q4_K (`QH = false`) or Q5_K (`QH = true`) super-block.
#[inline(always)]
fn sums_k4<const QH: bool>(b: &[u8], x: &BlockQ8K) -> (i32, i32) {
    let mut p = [0u8; 12];
    p.copy_from_slice(&b[4..16]);
    let (sc, mins) = scales_mins_k4(&p);
    let (qh, qs) = if QH {
        (&b[16..48], &b[48..176])
    } else {
        (&b[0..0], &b[16..144])
    };
    let mut sumi = 0i32;
    for c in 0..4 {
        for half in 0..2 {
            let s = 2 * c + half;
            let mut dot = 0i32;
            for l in 0..32 {
                let byte = qs[32 * c + l];
                let mut q = i32::from(if half == 0 { byte & 15 } else { byte >> 4 });
                if QH {
                    q |= i32::from((qh[l] >> s) & 1) << 4;
                }
                dot += q * i32::from(x.qs[32 * s + l]);
            }
            sumi += ((sc >> (8 * s)) & 0xff) as i32 * dot;
        }
    }
    (sumi, mins_dot(mins, &x.bsums))
}

/// Exact integer sum of one Q6_K super-block: `sum_g sc_g * sum_{j in g} (q_j - 32) x_j`.
#[inline(always)]
fn sum_q6k(b: &[u8], x: &BlockQ8K) -> i32 {
    let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
    let mut sumi = 0i32;
    for h in 0..2 {
        let mut group = [0i32; 8];
        for l in 0..32 {
            let (lo, hi, bits) = (ql[64 * h + l], ql[64 * h + 32 + l], qh[32 * h + l]);
            let q = [
                (lo & 15) | ((bits & 3) << 4),
                (hi & 15) | (((bits >> 2) & 3) << 4),
                (lo >> 4) | (((bits >> 4) & 3) << 4),
                (hi >> 4) | (((bits >> 6) & 3) << 4),
            ];
            for (k, qk) in q.iter().enumerate() {
                let e = 128 * h + 32 * k + l;
                group[2 * k + l / 16] += (i32::from(*qk) - 32) * i32::from(x.qs[e]);
            }
        }
        for (g, s) in group.iter().enumerate() {
            sumi += i32::from(sc[8 * h + g] as i8) * s;
        }
    }
    sumi
}

/// Dot product of one weight row (whole super-blocks of `ty`, one per element of `x`) with
/// q8_K activations. The caller guarantees `has_q8k_kernel(ty)`.
#[inline(always)]
pub(crate) fn dot_q8k(ty: GgmlType, row: &[u8], x: &[BlockQ8K]) -> f32 {
    let mut acc = 0f32;
    let blocks = row.chunks_exact(block_bytes(ty)).zip(x);
    match ty {
        GgmlType::Q4_K => {
            for (b, xb) in blocks {
                let (sumi, summ) = sums_k4::<false>(b, xb);
                acc = accumulate_k4(acc, f16_scale(b, 0), f16_scale(b, 2), xb.d, sumi, summ);
            }
        }
        GgmlType::Q5_K => {
            for (b, xb) in blocks {
                let (sumi, summ) = sums_k4::<true>(b, xb);
                acc = accumulate_k4(acc, f16_scale(b, 0), f16_scale(b, 2), xb.d, sumi, summ);
            }
        }
        GgmlType::Q6_K => {
            for (b, xb) in blocks {
                acc = accumulate_q6k(acc, f16_scale(b, 208), xb.d, sum_q6k(b, xb));
            }
        }
        _ => {}
    }
    acc
}

/// Rows of a k-quant format against q8_K activations (`xq`: `n_tokens` runs of
/// `blocks_per_row` super-blocks). Output layout `out[row * n_tokens + token]`.
pub(crate) fn rows_q8k(
    ty: GgmlType,
    rows: &[u8],
    row_bytes: usize,
    xq: &[BlockQ8K],
    blocks_per_row: usize,
    out: &mut [f32],
) {
    let n_tokens = xq.len() / blocks_per_row.max(1);
    for (r, o) in rows
        .chunks_exact(row_bytes)
        .zip(out.chunks_exact_mut(n_tokens))
    {
        for (t, ot) in o.iter_mut().enumerate() {
            *ot = dot_q8k(ty, r, &xq[t * blocks_per_row..(t + 1) * blocks_per_row]);
        }
    }
}

#[cfg(test)]
#[path = "q8k_tests.rs"]
mod tests;
