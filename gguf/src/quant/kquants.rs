//! The k-quant super-block formats (256 elements): `Q2_K`, `Q3_K`, `Q4_K`, `Q5_K`, `Q6_K`, `Q8_K`.
//!
//! Element order inside a super-block, as defined by ggml:
//! - `Q2_K` / `Q3_K`: two halves of 128 elements, each using 32 bytes of `qs`. Within a half,
//!   bit pair `k` (shift `2k`) of byte `l` is element `32k + l`; groups of 16 elements take
//!   consecutive scales. `Q3_K`'s high bit of element `32k' + l` (k' = 4 * half + k) is bit
//!   `k'` of `hmask[l]`, and a clear high bit subtracts 4.
//! - `Q4_K` / `Q5_K`: four 64-element chunks of 32 bytes of `qs`; low nibbles are the chunk's
//!   first 32 elements (group `2c`), high nibbles the next 32 (group `2c + 1`). `Q5_K`'s fifth
//!   bit of element `l` of group `g` is bit `g` of `qh[l]`.
//! - `Q6_K`: two halves of 128 elements, each with 64 bytes of `ql` and 32 of `qh`. For
//!   `l < 32`, elements `l`, `l + 32`, `l + 64`, `l + 96` take the low nibble of `ql[l]`, the
//!   low nibble of `ql[l + 32]`, the high nibble of `ql[l]` and the high nibble of
//!   `ql[l + 32]`, with bit pairs 0, 1, 2, 3 of `qh[l]` on top; 6-bit quants are offset by -32.

use super::blocks::{BlockQ2_K, BlockQ3_K, BlockQ4_K, BlockQ5_K, BlockQ6_K, BlockQ8_K};
use crate::types::QK_K;

/// Spreads the 2-bit fields of 64 bytes into 256 values in element order: bit pair `k` of
/// byte `32 * half + l` becomes element `128 * half + 32 * k + l`.
#[inline(always)]
fn unpack_2bit(qs: &[u8; QK_K / 4]) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for (src, dst) in qs.chunks_exact(32).zip(q.chunks_exact_mut(128)) {
        for (k, dst) in dst.chunks_exact_mut(32).enumerate() {
            let shift = 2 * k;
            for (d, &s) in dst.iter_mut().zip(src.iter()) {
                *d = (s >> shift) & 3;
            }
        }
    }
    q
}

/// `x = d * (sc & 15) * q - dmin * (sc >> 4)` per 16-element group.
#[inline(always)]
pub(super) fn q2_k(b: &BlockQ2_K, y: &mut [f32; QK_K]) {
    let (d, dmin) = (b.d(), b.dmin());
    let q = unpack_2bit(&b.qs);
    // Widen first: with the widening inside the per-group loop LLVM vectorised across groups
    // with byte-wise loads (measured about 20% slower).
    let mut qf = [0f32; QK_K];
    for (o, &q) in qf.iter_mut().zip(q.iter()) {
        *o = f32::from(q);
    }
    let groups = y.chunks_exact_mut(16).zip(qf.chunks_exact(16));
    for ((y, q), &sc) in groups.zip(b.scales.iter()) {
        let dl = d * f32::from(sc & 0x0F);
        let ml = dmin * f32::from(sc >> 4);
        for (o, &q) in y.iter_mut().zip(q.iter()) {
            *o = dl * q - ml;
        }
    }
}

/// `x = d * (sc - 32) * (q - 4 * !h)` per 16-element group.
#[inline(always)]
pub(super) fn q3_k(b: &BlockQ3_K, y: &mut [f32; QK_K]) {
    let d = b.d();
    let low = unpack_2bit(&b.qs);
    // Signed 3-bit values: the high bit of element 32 * k + l is bit k of hmask[l].
    let mut q = [0i8; QK_K];
    for (k, (dst, low)) in q.chunks_exact_mut(32).zip(low.chunks_exact(32)).enumerate() {
        for ((o, &lo), &h) in dst.iter_mut().zip(low.iter()).zip(b.hmask.iter()) {
            let missing = 4 * (1 - ((h >> k) & 1));
            *o = lo as i8 - missing as i8;
        }
    }
    for (g, (y, q)) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
        let dl = d * f32::from(b.scale(g) as i8 - 32);
        for (o, &q) in y.iter_mut().zip(q.iter()) {
            *o = dl * f32::from(q);
        }
    }
}

/// `x = d * sc * q - dmin * mn` per 32-element group.
#[inline(always)]
pub(super) fn q4_k(b: &BlockQ4_K, y: &mut [f32; QK_K]) {
    let (d, dmin) = (b.d(), b.dmin());
    for (c, (q, y)) in
        b.qs.chunks_exact(32)
            .zip(y.chunks_exact_mut(64))
            .enumerate()
    {
        let (sc1, mn1) = b.scale_min(2 * c);
        let (sc2, mn2) = b.scale_min(2 * c + 1);
        let (d1, m1) = (d * f32::from(sc1), dmin * f32::from(mn1));
        let (d2, m2) = (d * f32::from(sc2), dmin * f32::from(mn2));
        let (lo, hi) = y.split_at_mut(32);
        for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(q.iter()) {
            *l = d1 * f32::from(q & 0x0F) - m1;
            *h = d2 * f32::from(q >> 4) - m2;
        }
    }
}

/// `x = d * sc * q - dmin * mn` per 32-element group, with 5-bit `q`.
#[inline(always)]
pub(super) fn q5_k(b: &BlockQ5_K, y: &mut [f32; QK_K]) {
    let (d, dmin) = (b.d(), b.dmin());
    for (c, (q, y)) in
        b.qs.chunks_exact(32)
            .zip(y.chunks_exact_mut(64))
            .enumerate()
    {
        let (sc1, mn1) = b.scale_min(2 * c);
        let (sc2, mn2) = b.scale_min(2 * c + 1);
        let (d1, m1) = (d * f32::from(sc1), dmin * f32::from(mn1));
        let (d2, m2) = (d * f32::from(sc2), dmin * f32::from(mn2));
        let (b1, b2) = (2 * c, 2 * c + 1);
        let (lo, hi) = y.split_at_mut(32);
        for (((l, h), &q), &qh) in lo
            .iter_mut()
            .zip(hi.iter_mut())
            .zip(q.iter())
            .zip(b.qh.iter())
        {
            let q1 = (q & 0x0F) | (((qh >> b1) & 1) << 4);
            let q2 = (q >> 4) | (((qh >> b2) & 1) << 4);
            *l = d1 * f32::from(q1) - m1;
            *h = d2 * f32::from(q2) - m2;
        }
    }
}

/// `x = d * sc * (q - 32)` per 16-element group.
#[inline(always)]
pub(super) fn q6_k(b: &BlockQ6_K, y: &mut [f32; QK_K]) {
    let d = b.d();
    let halves = b.ql.chunks_exact(64).zip(b.qh.chunks_exact(32));
    for (half, ((ql, qh), y)) in halves.zip(y.chunks_exact_mut(128)).enumerate() {
        let (y01, y23) = y.split_at_mut(64);
        let (y0, y1) = y01.split_at_mut(32);
        let (y2, y3) = y23.split_at_mut(32);
        let (ql_a, ql_b) = ql.split_at(32);
        for part in 0..2 {
            let r = part * 16..part * 16 + 16;
            let g = half * 8 + part;
            let s = [
                d * f32::from(b.scale(g)),
                d * f32::from(b.scale(g + 2)),
                d * f32::from(b.scale(g + 4)),
                d * f32::from(b.scale(g + 6)),
            ];
            let lanes = y0[r.clone()]
                .iter_mut()
                .zip(y1[r.clone()].iter_mut())
                .zip(y2[r.clone()].iter_mut())
                .zip(y3[r.clone()].iter_mut())
                .zip(ql_a[r.clone()].iter().zip(ql_b[r.clone()].iter()))
                .zip(qh[r].iter());
            for (((((o0, o1), o2), o3), (&a, &bq)), &h) in lanes {
                let q0 = (a & 0x0F) | ((h & 3) << 4);
                let q1 = (bq & 0x0F) | (((h >> 2) & 3) << 4);
                let q2 = (a >> 4) | (((h >> 4) & 3) << 4);
                let q3 = (bq >> 4) | (((h >> 6) & 3) << 4);
                *o0 = s[0] * (i32::from(q0) - 32) as f32;
                *o1 = s[1] * (i32::from(q1) - 32) as f32;
                *o2 = s[2] * (i32::from(q2) - 32) as f32;
                *o3 = s[3] * (i32::from(q3) - 32) as f32;
            }
        }
    }
}

/// `x = d * q` with signed `q` and an `f32` scale.
#[inline(always)]
pub(super) fn q8_k(b: &BlockQ8_K, y: &mut [f32; QK_K]) {
    let d = b.d();
    for (o, &q) in y.iter_mut().zip(b.qs.iter()) {
        *o = f32::from(q as i8) * d;
    }
}
