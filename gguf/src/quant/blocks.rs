//! Byte layouts of the ggml block formats as plain `#[repr(C)]` structs.
//!
//! Every field is a byte array, so each struct has alignment 1 and no padding: a `&[u8]` of whole
//! blocks can always be viewed as `&[BlockX]` with [`bytemuck::try_cast_slice`], whatever the
//! alignment of the tensor data in the file or mapping. Multi-byte scalars (the `f16` scales, the
//! `u32` high-bit masks) are stored little-endian, as in GGUF files, and decoded by accessor
//! methods. Each struct's size is checked at compile time against [`GgmlType::type_size`].
//!
//! Sizes: `QK` = 32 elements per legacy block, [`QK_K`] = 256 elements per k-quant super-block.

use bytemuck::{Pod, Zeroable};
use half::f16;

use crate::types::{GgmlType, QK_K};

/// Elements per legacy block (`Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`).
pub const QK: usize = 32;

/// Decodes a little-endian IEEE half stored as two bytes.
#[inline(always)]
pub fn f16_le(b: [u8; 2]) -> f32 {
    f16::from_le_bytes(b).to_f32()
}

/// `Q4_0`: 32 elements, `x = d * (q - 8)` with 4-bit `q`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// Scale `d` (f16, little-endian).
    pub d: [u8; 2],
    /// Byte `j` holds element `j` in its low nibble and element `j + 16` in its high nibble.
    pub qs: [u8; QK / 2],
}

/// `Q4_1`: 32 elements, `x = d * q + m` with 4-bit `q`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_1 {
    /// Scale `d` (f16, little-endian).
    pub d: [u8; 2],
    /// Offset `m` (f16, little-endian).
    pub m: [u8; 2],
    /// Nibbles as in [`BlockQ4_0::qs`].
    pub qs: [u8; QK / 2],
}

/// `Q5_0`: 32 elements, `x = d * (q - 16)` with 5-bit `q`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_0 {
    /// Scale `d` (f16, little-endian).
    pub d: [u8; 2],
    /// Fifth bits: bit `i` of this little-endian `u32` is bit 4 of element `i`.
    pub qh: [u8; 4],
    /// Low four bits, nibbles as in [`BlockQ4_0::qs`].
    pub qs: [u8; QK / 2],
}

/// `Q5_1`: 32 elements, `x = d * q + m` with 5-bit `q`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_1 {
    /// Scale `d` (f16, little-endian).
    pub d: [u8; 2],
    /// Offset `m` (f16, little-endian).
    pub m: [u8; 2],
    /// Fifth bits, as in [`BlockQ5_0::qh`].
    pub qh: [u8; 4],
    /// Low four bits, nibbles as in [`BlockQ4_0::qs`].
    pub qs: [u8; QK / 2],
}

/// `Q8_0`: 32 elements, `x = d * q` with signed 8-bit `q`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale `d` (f16, little-endian).
    pub d: [u8; 2],
    /// Quants as two's-complement `i8`.
    pub qs: [u8; QK],
}

/// `Q2_K`: 256 elements in 16 groups of 16; `x = d * sc * q - dmin * mn` with 2-bit `q` and
/// 4-bit group scale `sc` / minimum `mn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ2_K {
    /// Per group: scale in the low nibble, minimum in the high nibble.
    pub scales: [u8; QK_K / 16],
    /// 2-bit quants, four per byte (see the dequantizer for the order).
    pub qs: [u8; QK_K / 4],
    /// Super-block scale of the group scales (f16, little-endian).
    pub d: [u8; 2],
    /// Super-block scale of the group minimums (f16, little-endian).
    pub dmin: [u8; 2],
}

/// `Q3_K`: 256 elements in 16 groups of 16; `x = d * (sc - 32) * (q - 4 * !h)` with 2-bit `q`,
/// high bit `h` and 6-bit group scale `sc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ3_K {
    /// High bits: bit `k` of byte `l` belongs to element `32 * k + l`.
    pub hmask: [u8; QK_K / 8],
    /// Low 2 bits, four per byte.
    pub qs: [u8; QK_K / 4],
    /// Sixteen 6-bit group scales packed into 12 bytes.
    pub scales: [u8; 12],
    /// Super-block scale (f16, little-endian).
    pub d: [u8; 2],
}

/// `Q4_K`: 256 elements in 8 groups of 32; `x = d * sc * q - dmin * mn` with 4-bit `q` and
/// 6-bit group scale `sc` / minimum `mn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_K {
    /// Super-block scale of the group scales (f16, little-endian).
    pub d: [u8; 2],
    /// Super-block scale of the group minimums (f16, little-endian).
    pub dmin: [u8; 2],
    /// Eight 6-bit scales and eight 6-bit minimums packed into 12 bytes.
    pub scales: [u8; 12],
    /// 4-bit quants: 32 bytes per pair of groups, low nibbles first group, high nibbles second.
    pub qs: [u8; QK_K / 2],
}

/// `Q5_K`: as [`BlockQ4_K`] with a fifth bit per element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_K {
    /// Super-block scale of the group scales (f16, little-endian).
    pub d: [u8; 2],
    /// Super-block scale of the group minimums (f16, little-endian).
    pub dmin: [u8; 2],
    /// Eight 6-bit scales and eight 6-bit minimums packed as in [`BlockQ4_K::scales`].
    pub scales: [u8; 12],
    /// Fifth bits: bit `g` of byte `l` belongs to element `l` of group `g`.
    pub qh: [u8; QK_K / 8],
    /// Low four bits, laid out as [`BlockQ4_K::qs`].
    pub qs: [u8; QK_K / 2],
}

/// `Q6_K`: 256 elements in 16 groups of 16; `x = d * sc * (q - 32)` with 6-bit `q` and signed
/// 8-bit group scale `sc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ6_K {
    /// Low four bits of the quants.
    pub ql: [u8; QK_K / 2],
    /// High two bits of the quants, four per byte.
    pub qh: [u8; QK_K / 4],
    /// Group scales as two's-complement `i8`.
    pub scales: [u8; QK_K / 16],
    /// Super-block scale (f16, little-endian).
    pub d: [u8; 2],
}

/// `Q8_K`: 256 elements, `x = d * q` with signed 8-bit `q` and an `f32` scale (the activation
/// format of k-quant dot products; rarely stored in files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_K {
    /// Scale `d` (f32, little-endian).
    pub d: [u8; 4],
    /// Quants as two's-complement `i8`.
    pub qs: [u8; QK_K],
    /// Sums of each group of 16 quants (`i16`, little-endian); not needed to dequantize.
    pub bsums: [u8; QK_K / 8],
}

// Compile-time layout checks. `GgmlType::type_size` is not a `const fn`, so the sizes are
// written out here (same arithmetic as ggml's block definitions) and the unit test
// `block_sizes_match_type_table` checks them against the type table at test time.
macro_rules! size_checked {
    ($($block:ident => $size:expr),* $(,)?) => {
        $(
            const _: () = assert!(core::mem::size_of::<$block>() == $size);
            const _: () = assert!(core::mem::align_of::<$block>() == 1);
        )*
    };
}

size_checked!(
    BlockQ4_0 => 2 + QK / 2,
    BlockQ4_1 => 2 + 2 + QK / 2,
    BlockQ5_0 => 2 + 4 + QK / 2,
    BlockQ5_1 => 2 + 2 + 4 + QK / 2,
    BlockQ8_0 => 2 + QK,
    BlockQ2_K => QK_K / 16 + QK_K / 4 + 2 + 2,
    BlockQ3_K => QK_K / 8 + QK_K / 4 + 12 + 2,
    BlockQ4_K => 2 + 2 + 12 + QK_K / 2,
    BlockQ5_K => 2 + 2 + 12 + QK_K / 8 + QK_K / 2,
    BlockQ6_K => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
    BlockQ8_K => 4 + QK_K + QK_K / 8,
);

/// The block struct size for `ty`, where one exists (used by tests and by callers that want
/// to check a type against its struct at run time).
pub fn block_struct_size(ty: GgmlType) -> Option<usize> {
    use core::mem::size_of;
    Some(match ty {
        GgmlType::Q4_0 => size_of::<BlockQ4_0>(),
        GgmlType::Q4_1 => size_of::<BlockQ4_1>(),
        GgmlType::Q5_0 => size_of::<BlockQ5_0>(),
        GgmlType::Q5_1 => size_of::<BlockQ5_1>(),
        GgmlType::Q8_0 => size_of::<BlockQ8_0>(),
        GgmlType::Q2_K => size_of::<BlockQ2_K>(),
        GgmlType::Q3_K => size_of::<BlockQ3_K>(),
        GgmlType::Q4_K => size_of::<BlockQ4_K>(),
        GgmlType::Q5_K => size_of::<BlockQ5_K>(),
        GgmlType::Q6_K => size_of::<BlockQ6_K>(),
        GgmlType::Q8_K => size_of::<BlockQ8_K>(),
        _ => return None,
    })
}

impl BlockQ4_0 {
    /// The scale `d` as `f32`.
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }
}

impl BlockQ4_1 {
    /// The scale `d` as `f32`.
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }
    /// The offset `m` as `f32`.
    #[inline(always)]
    pub fn m(&self) -> f32 {
        f16_le(self.m)
    }
}

impl BlockQ5_0 {
    /// The scale `d` as `f32`.
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }
    /// The fifth-bit mask as a `u32`.
    #[inline(always)]
    pub fn qh(&self) -> u32 {
        u32::from_le_bytes(self.qh)
    }
}

impl BlockQ5_1 {
    /// The scale `d` as `f32`.
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }
    /// The offset `m` as `f32`.
    #[inline(always)]
    pub fn m(&self) -> f32 {
        f16_le(self.m)
    }
    /// The fifth-bit mask as a `u32`.
    #[inline(always)]
    pub fn qh(&self) -> u32 {
        u32::from_le_bytes(self.qh)
    }
}

impl BlockQ8_0 {
    /// The scale `d` as `f32`.
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }
}

impl BlockQ2_K {
    /// The super-block scale `d` as `f32`.
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }
    /// The super-block minimum scale `dmin` as `f32`.
    #[inline(always)]
    pub fn dmin(&self) -> f32 {
        f16_le(self.dmin)
    }
}

impl BlockQ3_K {
    /// The super-block scale `d` as `f32`.
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }

    /// The 6-bit scale of group `g` (0..16), unpacked but not yet offset by -32.
    ///
    /// Bytes 0..8 hold the low nibbles (groups 0..8 in the low halves, 8..16 in the high
    /// halves); byte `8 + g % 4` holds the two high bits at bit position `2 * (g / 4)`.
    #[inline(always)]
    pub fn scale(&self, g: usize) -> u8 {
        let g = g & 15;
        let low = if g < 8 {
            self.scales[g] & 0x0F
        } else {
            self.scales[g - 8] >> 4
        };
        let high = (self.scales[8 + (g & 3)] >> (2 * (g >> 2))) & 3;
        low | (high << 4)
    }
}

/// Unpacks the 6-bit (scale, minimum) pair of group `g` (0..8) from the 12-byte k-quant
/// scale field shared by `Q4_K` and `Q5_K`.
///
/// Groups 0..4 keep both in the low 6 bits of bytes `g` and `g + 4`. Groups 4..8 take their
/// low 4 bits from the nibbles of byte `g + 4` and their top 2 bits from the otherwise unused
/// top bits of bytes `g - 4` (scale) and `g` (minimum).
#[inline(always)]
pub fn kquant_scale_min(scales: &[u8; 12], g: usize) -> (u8, u8) {
    let g = g & 7;
    if g < 4 {
        (scales[g] & 63, scales[g + 4] & 63)
    } else {
        let sc = (scales[g + 4] & 0x0F) | ((scales[g - 4] >> 6) << 4);
        let mn = (scales[g + 4] >> 4) | ((scales[g] >> 6) << 4);
        (sc, mn)
    }
}

impl BlockQ4_K {
    /// The super-block scale `d` as `f32`.
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }
    /// The super-block minimum scale `dmin` as `f32`.
    #[inline(always)]
    pub fn dmin(&self) -> f32 {
        f16_le(self.dmin)
    }
    /// The 6-bit (scale, minimum) of group `g` (0..8).
    #[inline(always)]
    pub fn scale_min(&self, g: usize) -> (u8, u8) {
        kquant_scale_min(&self.scales, g)
    }
}

impl BlockQ5_K {
    /// The super-block scale `d` as `f32`.
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }
    /// The super-block minimum scale `dmin` as `f32`.
    #[inline(always)]
    pub fn dmin(&self) -> f32 {
        f16_le(self.dmin)
    }
    /// The 6-bit (scale, minimum) of group `g` (0..8).
    #[inline(always)]
    pub fn scale_min(&self, g: usize) -> (u8, u8) {
        kquant_scale_min(&self.scales, g)
    }
}

impl BlockQ6_K {
    /// The super-block scale `d` as `f32`.
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }
    /// The signed scale of group `g` (0..16).
    #[inline(always)]
    pub fn scale(&self, g: usize) -> i8 {
        self.scales[g & 15] as i8
    }
}

impl BlockQ8_K {
    /// The scale `d` as `f32`.
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f32::from_le_bytes(self.d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_match_type_table() {
        let mut n = 0;
        for ty in crate::types::ALL_TYPES {
            if let Some(size) = block_struct_size(ty) {
                assert_eq!(size, ty.type_size(), "{ty}");
                n += 1;
            }
        }
        assert_eq!(n, 11);
    }

    #[test]
    fn q3_k_scale_unpacking_follows_the_bit_layout() {
        // Group 5: low nibble in the low half of byte 5, high bits in byte 8 + 1 at bits 2..4.
        // Group 14: low nibble in the high half of byte 6, high bits in byte 8 + 2 at bits 6..8.
        let mut b = BlockQ3_K::zeroed();
        b.scales[5] = 0x0B;
        b.scales[9] = 0b0000_1000; // high bits of group 5 = 0b10
        b.scales[6] = 0x70;
        b.scales[10] = 0b1100_0000; // high bits of group 14 = 0b11
        assert_eq!(b.scale(5), 0x0B | (0b10 << 4));
        assert_eq!(b.scale(14), 0x07 | (0b11 << 4));
        assert_eq!(b.scale(0), 0);
        assert_eq!(b.scale(13), 0);
    }

    #[test]
    fn kquant_scale_min_unpacking_follows_the_bit_layout() {
        let mut s = [0u8; 12];
        s[1] = 0b11_101010; // group 1 scale 42, top bits feed group 5's scale
        s[5] = 0b10_010101; // group 1 min 21, top bits feed group 5's min
        s[9] = 0x3C; // group 5: scale low nibble 0xC, min low nibble 0x3
        assert_eq!(kquant_scale_min(&s, 1), (42, 21));
        assert_eq!(
            kquant_scale_min(&s, 5),
            (0xC | (0b11 << 4), 0x3 | (0b10 << 4))
        );
        assert_eq!(kquant_scale_min(&s, 0), (0, 0));
    }
}
