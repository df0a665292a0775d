//! The single-precision exponential llama.cpp's x86 SiLU uses (its AVX2 `ggml_v_expf`, an
//! adaptation of Arm's optimized-routines `expf`), evaluated one lane at a time. Matching it
//! keeps the FFN activations bit-identical to llama.cpp's, which matters because those
//! activations are rounded to 8 bits next (a one-ulp difference can move a rounding decision).
//!
//! Method: `x = n ln2 + b` with `n` rounded to an integer by the `1.5 * 2^23` shift trick,
//! `ln2` split in two parts for an accurate `b`, then `e^b - 1 ~= b (c0 + b c1) + b^2 ...`
//! (a degree-5 polynomial in Horner/Estrin form) and `2^n` built in the exponent bits.
//! The maximum error is about 1.5 ulp.

/// Bits of the constants (hexadecimal float literals do not exist in Rust).
const SHIFT: u32 = 0x4b40_0000; // 1.5 * 2^23
const LOG2E: u32 = 0x3fb8_aa3b; // 1/ln 2
const LN2_LO: u32 = 0x35bf_be8e; // low part of ln 2
const LN2_HI: u32 = 0x3f31_7200; // high part of ln 2
const C: [u32; 5] = [
    0x3f7f_fff6,
    0x3eff_fedb,
    0x3e2a_af33,
    0x3d2b_9f17,
    0x3c07_2010,
];

#[inline(always)]
fn f(bits: u32) -> f32 {
    f32::from_bits(bits)
}

/// `e^x` with llama.cpp's AVX2 arithmetic (fused multiply-adds where it has them).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let z = x.mul_add(f(LOG2E), f(SHIFT));
    let n = z - f(SHIFT);
    // b = x - n * ln2_hi - n * ln2_lo, each step fused.
    let b = (-n).mul_add(f(LN2_LO), (-n).mul_add(f(LN2_HI), x));
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let j = f(C[4])
        .mul_add(b, f(C[3]))
        .mul_add(u, f(C[2]).mul_add(b, f(C[1])))
        .mul_add(u, f(C[0]) * b);
    if n.abs() <= 126.0 {
        return j.mul_add(k, k);
    }
    // Results near or past the f32 range: scale in two steps (or saturate to 0 / inf).
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within 2 ulp of the correctly rounded exponential (computed in f64) over the range the
    /// SiLU meets, and the documented saturation outside it.
    #[test]
    fn close_to_f64_exp_and_saturates() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = f64::from(x).exp();
            let got = f64::from(exp(x));
            let ulp = f64::from(f32::EPSILON) * want;
            assert!(
                (got - want).abs() <= 2.0 * ulp,
                "exp({x}) = {got}, want {want}"
            );
            x += 0.0137;
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(200.0), f32::INFINITY);
    }
}
