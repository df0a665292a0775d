//! The single-precision exponential of llama.cpp's x86 SiLU (`ggml_v_expf`, an adaptation of
//! Arm's optimized-routines `expf`), evaluated one lane at a time, in the variant its AVX-512
//! build runs (the reference fixtures come from a native build on an AVX-512 machine; the AVX2
//! variant differs in the last bit for about one input in eight). Matching it keeps the FFN
//! activations bit-identical to llama.cpp's, which matters because those activations are
//! rounded to 8 bits next (a one-ulp difference can move a rounding decision).
//!
//! Method: `x = n ln2 + b` with `n` rounded to an integer by the `1.5 * 2^23` shift trick,
//! `ln2` split in two parts for an accurate `b`, then `e^b ~= 1 + b (c0 + b c1) + b^2 ...`
//! (a degree-5 polynomial in Estrin form, each step one fused multiply-add) and the result
//! `e^b * 2^n` scaled exactly (`vscalefps`). The maximum error is about 1.5 ulp.

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

/// `e^x` with llama.cpp's AVX-512 arithmetic (fused multiply-adds where it has them).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let z = x.mul_add(f(LOG2E), f(SHIFT));
    let n = z - f(SHIFT);
    // b = x - n * ln2_hi - n * ln2_lo, each step fused.
    let b = (-n).mul_add(f(LN2_LO), (-n).mul_add(f(LN2_HI), x));
    let u = b * b;
    let j = f(C[4])
        .mul_add(b, f(C[3]))
        .mul_add(u, f(C[2]).mul_add(b, f(C[1])))
        .mul_add(u, f(C[0]).mul_add(b, 1.0));
    if n.abs() > 192.0 {
        // Far outside the f32 range: saturate.
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    scale_pow2(j, n as i32)
}

/// `j * 2^n` with one rounding (like `vscalefps`), for `|n| <= 192` and `j` near 1: two exact
/// power-of-two factors, so only the last product can round (to a subnormal) or overflow.
#[inline(always)]
fn scale_pow2(j: f32, n: i32) -> f32 {
    let pow2 = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    if (-126..=127).contains(&n) {
        j * pow2(n)
    } else if n > 0 {
        (j * pow2(64)) * pow2(n - 64)
    } else {
        (j * pow2(n + 64)) * pow2(-64)
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
