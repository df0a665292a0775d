//! The original 32-element ggml block formats: `Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`.
//!
//! In the 4- and 5-bit formats byte `j` of `qs` carries element `j` in its low nibble and
//! element `j + 16` in its high nibble; the 5-bit formats add bit 4 of element `i` as bit `i`
//! of the little-endian `u32` `qh`.

use super::blocks::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QK};

const HALF: usize = QK / 2;

/// `x = d * (q - 8)`.
#[inline(always)]
pub(super) fn q4_0(b: &BlockQ4_0, y: &mut [f32; QK]) {
    let d = b.d();
    let (lo, hi) = y.split_at_mut(HALF);
    for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(b.qs.iter()) {
        *l = (i32::from(q & 0x0F) - 8) as f32 * d;
        *h = (i32::from(q >> 4) - 8) as f32 * d;
    }
}

/// `x = d * q + m`.
#[inline(always)]
pub(super) fn q4_1(b: &BlockQ4_1, y: &mut [f32; QK]) {
    let (d, m) = (b.d(), b.m());
    let (lo, hi) = y.split_at_mut(HALF);
    for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(b.qs.iter()) {
        *l = f32::from(q & 0x0F) * d + m;
        *h = f32::from(q >> 4) * d + m;
    }
}

/// `SPREAD_BIT4[b]` holds, in byte `i`, `0x10` where bit `i` of `b` is set and 0 elsewhere:
/// eight fifth bits moved into place with one table load.
const SPREAD_BIT4: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut i = 0;
        while i < 8 {
            if (b >> i) & 1 == 1 {
                t[b] |= 0x10 << (8 * i);
            }
            i += 1;
        }
        b += 1;
    }
    t
};

/// The 5-bit unsigned quants of a `Q5_0` / `Q5_1` block, in element order.
#[inline(always)]
fn five_bit(qs: &[u8; HALF], qh: [u8; 4]) -> [u8; QK] {
    // Bit 4 of element i is bit i of the little-endian u32 `qh`, i.e. bit i % 8 of byte i / 8.
    let mut high = [0u8; QK];
    for (dst, &b) in high.chunks_exact_mut(8).zip(qh.iter()) {
        dst.copy_from_slice(&SPREAD_BIT4[usize::from(b)].to_le_bytes());
    }
    let mut q = [0u8; QK];
    let (lo, hi) = q.split_at_mut(HALF);
    let (high_lo, high_hi) = high.split_at(HALF);
    let lanes = lo.iter_mut().zip(hi.iter_mut()).zip(qs.iter());
    for (((l, h), &b), (&bl, &bh)) in lanes.zip(high_lo.iter().zip(high_hi.iter())) {
        *l = (b & 0x0F) | bl;
        *h = (b >> 4) | bh;
    }
    q
}

/// `x = d * (q - 16)`.
#[inline(always)]
pub(super) fn q5_0(b: &BlockQ5_0, y: &mut [f32; QK]) {
    let d = b.d();
    let q = five_bit(&b.qs, b.qh);
    for (o, &q) in y.iter_mut().zip(q.iter()) {
        *o = (i32::from(q) - 16) as f32 * d;
    }
}

/// `x = d * q + m`.
#[inline(always)]
pub(super) fn q5_1(b: &BlockQ5_1, y: &mut [f32; QK]) {
    let (d, m) = (b.d(), b.m());
    let q = five_bit(&b.qs, b.qh);
    for (o, &q) in y.iter_mut().zip(q.iter()) {
        *o = f32::from(q) * d + m;
    }
}

/// `x = d * q` with signed `q`.
#[inline(always)]
pub(super) fn q8_0(b: &BlockQ8_0, y: &mut [f32; QK]) {
    let d = b.d();
    for (o, &q) in y.iter_mut().zip(b.qs.iter()) {
        *o = f32::from(q as i8) * d;
    }
}
