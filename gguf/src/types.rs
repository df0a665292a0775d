//! The ggml tensor element types: ids as stored in GGUF files, block geometry and byte sizes.

use std::fmt;

/// A ggml tensor element type, as identified by its numeric id in a GGUF tensor info.
///
/// Quantized types store elements in fixed-size blocks; [`GgmlType::block_size`] elements
/// take [`GgmlType::type_size`] bytes. Ids that ggml removed (4, 5, 31-33, 36-38) or never
/// defined are rejected by [`GgmlType::from_id`].
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum GgmlType {
    /// 32-bit IEEE float.
    F32 = 0,
    /// 16-bit IEEE float.
    F16 = 1,
    /// 4-bit, 32 per block, f16 scale.
    Q4_0 = 2,
    /// 4-bit, 32 per block, f16 scale and minimum.
    Q4_1 = 3,
    /// 5-bit, 32 per block, f16 scale.
    Q5_0 = 6,
    /// 5-bit, 32 per block, f16 scale and minimum.
    Q5_1 = 7,
    /// 8-bit, 32 per block, f16 scale.
    Q8_0 = 8,
    /// 8-bit, 32 per block, f16 scale and sum (activation format).
    Q8_1 = 9,
    /// 2-bit k-quant, 256 per super-block.
    Q2_K = 10,
    /// 3-bit k-quant, 256 per super-block.
    Q3_K = 11,
    /// 4-bit k-quant, 256 per super-block.
    Q4_K = 12,
    /// 5-bit k-quant, 256 per super-block.
    Q5_K = 13,
    /// 6-bit k-quant, 256 per super-block.
    Q6_K = 14,
    /// 8-bit k-quant (activation format), 256 per super-block.
    Q8_K = 15,
    /// Importance-matrix 2-bit (2.06 bpw).
    IQ2_XXS = 16,
    /// Importance-matrix 2-bit (2.31 bpw).
    IQ2_XS = 17,
    /// Importance-matrix 3-bit (3.06 bpw).
    IQ3_XXS = 18,
    /// Importance-matrix 1-bit (1.56 bpw).
    IQ1_S = 19,
    /// Non-linear 4-bit, 32 per block.
    IQ4_NL = 20,
    /// Importance-matrix 3-bit (3.44 bpw).
    IQ3_S = 21,
    /// Importance-matrix 2-bit (2.5 bpw).
    IQ2_S = 22,
    /// Non-linear 4-bit, 256 per super-block.
    IQ4_XS = 23,
    /// 8-bit signed integer.
    I8 = 24,
    /// 16-bit signed integer.
    I16 = 25,
    /// 32-bit signed integer.
    I32 = 26,
    /// 64-bit signed integer.
    I64 = 27,
    /// 64-bit IEEE float.
    F64 = 28,
    /// Importance-matrix 1-bit (1.75 bpw).
    IQ1_M = 29,
    /// bfloat16.
    BF16 = 30,
    /// Ternary, 1.69 bpw.
    TQ1_0 = 34,
    /// Ternary, 2.06 bpw.
    TQ2_0 = 35,
    /// Microscaling FP4 (e2m1 values, e8m0 shared scale), 32 per block.
    MXFP4 = 39,
}

/// Every type [`GgmlType::from_id`] accepts, in id order.
pub const ALL_TYPES: [GgmlType; 32] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
    GgmlType::IQ2_XXS,
    GgmlType::IQ2_XS,
    GgmlType::IQ3_XXS,
    GgmlType::IQ1_S,
    GgmlType::IQ4_NL,
    GgmlType::IQ3_S,
    GgmlType::IQ2_S,
    GgmlType::IQ4_XS,
    GgmlType::I8,
    GgmlType::I16,
    GgmlType::I32,
    GgmlType::I64,
    GgmlType::F64,
    GgmlType::IQ1_M,
    GgmlType::BF16,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
    GgmlType::MXFP4,
];

/// Elements per k-quant super-block.
pub const QK_K: usize = 256;

impl GgmlType {
    /// The type with ggml id `id`, or `None` for removed or unknown ids.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        ALL_TYPES.iter().copied().find(|t| t.id() == id)
    }

    /// The numeric id stored in GGUF tensor infos.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The name ggml and llama.cpp print for this type (e.g. `"Q4_K"`, `"f16"` style is not used).
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2_K => "Q2_K",
            Q3_K => "Q3_K",
            Q4_K => "Q4_K",
            Q5_K => "Q5_K",
            Q6_K => "Q6_K",
            Q8_K => "Q8_K",
            IQ2_XXS => "IQ2_XXS",
            IQ2_XS => "IQ2_XS",
            IQ3_XXS => "IQ3_XXS",
            IQ1_S => "IQ1_S",
            IQ4_NL => "IQ4_NL",
            IQ3_S => "IQ3_S",
            IQ2_S => "IQ2_S",
            IQ4_XS => "IQ4_XS",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            IQ1_M => "IQ1_M",
            BF16 => "BF16",
            TQ1_0 => "TQ1_0",
            TQ2_0 => "TQ2_0",
            MXFP4 => "MXFP4",
        }
    }

    /// Parses a name as printed by [`GgmlType::name`] (case-insensitive).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        ALL_TYPES
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Number of elements in one block (1 for plain scalar types).
    pub fn block_size(self) -> usize {
        use GgmlType::*;
        match self {
            F32 | F16 | BF16 | F64 | I8 | I16 | I32 | I64 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 | IQ4_NL | MXFP4 => 32,
            _ => QK_K,
        }
    }

    /// Bytes taken by one block.
    pub fn type_size(self) -> usize {
        use GgmlType::*;
        match self {
            F32 => 4,
            F16 => 2,
            BF16 => 2,
            F64 => 8,
            I8 => 1,
            I16 => 2,
            I32 => 4,
            I64 => 8,
            Q4_0 => 2 + 16,
            Q4_1 => 2 + 2 + 16,
            Q5_0 => 2 + 4 + 16,
            Q5_1 => 2 + 2 + 4 + 16,
            Q8_0 => 2 + 32,
            Q8_1 => 2 + 2 + 32,
            Q2_K => 16 + 64 + 2 + 2,
            Q3_K => 32 + 64 + 12 + 2,
            Q4_K => 2 + 2 + 12 + 128,
            Q5_K => 2 + 2 + 12 + 32 + 128,
            Q6_K => 128 + 64 + 16 + 2,
            Q8_K => 4 + 256 + 32,
            IQ2_XXS => 2 + 64,
            IQ2_XS => 2 + 64 + 8,
            IQ3_XXS => 2 + 96,
            IQ1_S => 2 + 32 + 16,
            IQ4_NL => 2 + 16,
            IQ3_S => 2 + 64 + 8 + 32 + 4,
            IQ2_S => 2 + 64 + 16,
            IQ4_XS => 2 + 2 + 4 + 128,
            IQ1_M => 32 + 16 + 8,
            TQ1_0 => 48 + 4 + 2,
            TQ2_0 => 64 + 2,
            MXFP4 => 1 + 16,
        }
    }

    /// True for block-quantized types (block size > 1).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes taken by `n_elements` elements, or `None` when `n_elements` is not a whole number
    /// of blocks or the size overflows `u64`.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if n_elements % bs != 0 {
            return None;
        }
        (n_elements / bs).checked_mul(self.type_size() as u64)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_gaps_are_rejected() {
        for t in ALL_TYPES {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(t.name()), Some(t));
        }
        for removed in [4, 5, 31, 32, 33, 36, 37, 38, 40, 1000, u32::MAX] {
            assert_eq!(GgmlType::from_id(removed), None, "id {removed}");
        }
    }

    #[test]
    fn bits_per_weight_match_ggml_documentation() {
        // Bits per weight that llama.cpp reports for these formats.
        let bpw = |t: GgmlType| t.type_size() as f64 * 8.0 / t.block_size() as f64;
        assert_eq!(bpw(GgmlType::Q4_0), 4.5);
        assert_eq!(bpw(GgmlType::Q4_K), 4.5);
        assert_eq!(bpw(GgmlType::Q5_K), 5.5);
        assert_eq!(bpw(GgmlType::Q6_K), 6.5625);
        assert_eq!(bpw(GgmlType::Q2_K), 2.625);
        assert_eq!(bpw(GgmlType::Q3_K), 3.4375);
        assert_eq!(bpw(GgmlType::Q8_0), 8.5);
        assert_eq!(bpw(GgmlType::IQ4_XS), 4.25);
        assert_eq!(bpw(GgmlType::IQ2_XXS), 2.0625);
    }

    #[test]
    fn bytes_for_checks_block_multiples_and_overflow() {
        assert_eq!(GgmlType::Q4_K.bytes_for(512), Some(288));
        assert_eq!(GgmlType::Q4_K.bytes_for(100), None);
        assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
    }
}
