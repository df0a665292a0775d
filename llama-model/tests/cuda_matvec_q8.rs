//! GPU correctness of the 8-bit-activation matrix-vector path (feature `cuda`,
//! [`CudaOptions::matvec_q8`]): the activation is quantized per block of 32 on the GPU, then
//! integer dot products run against Q4_0, Q4_1, Q5_0, Q8_0, Q4_K and Q6_K weights.
//!
//! - The GPU quantization (quants, f16 scales, q8_1 sum terms) equals, bit for bit, the CPU
//!   backend's (`reference_quantize_q8`: `cpu::q8::quantize_q8`, itself bit-identical to
//!   llama.cpp's x86 `quantize_row_q8_1`: `d = f16(amax / 127)`, `id = 127 / amax`,
//!   `q = round(x * id)` with ties to even, `s = f16((amax / 127) * sum q)`), on random data and
//!   on crafted ties, all-zero, tiny and huge blocks.
//! - Every product (plain, accumulating, Q/K/V concatenated with mixed types, gate/up with
//!   SwiGLU) against an f64 reference over the *quantized* activation:
//!   `y_r = sum_b d_b * sum_j w_rj q_j` with `w` from `gguf::dequantize` (for Q4_1 with the
//!   block's sum term `s_b` in place of `d_b * sum_j q_j` in the minimum's part, as llama.cpp's
//!   q4_1 x q8_1 product); per-row error below
//!   1e-4 of `sum |w d q|`, relative L2 below 1e-4, at several shapes (odd row counts, one row,
//!   long rows) and unit shapes (2 or 4 rows, 1 to 4 warps a unit). The quantized product is
//!   also within 2e-2 of the unquantized f64 product (L2 over rows, relative to sum |w x|).
//! - RMSNorm fused with the quantization (`rmsnorm_matvec*`): the norm output against an f64
//!   RMSNorm, the products against the quantized reference; with the path off, the fused calls
//!   equal the separate ones bit for bit.
//! - Outputs are NaN-poisoned with extra elements past the last row.
//!
//! Without a GPU the tests skip loudly (fail with `VRAMLESS_REQUIRE_GPU=1`).
#![cfg(feature = "cuda")]

mod cuda_common;
use cuda_common::{nan_buf, random_blocks};

use gguf::GgmlType;
use half::f16;
use llama_model::cuda::{
    reference_quantize_q8, CudaBackend, CudaOptions, DeviceWeight, MatvecKsplit,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const Q8_TYPES: [GgmlType; 6] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];

/// A backend with the 8-bit path on (or off), `rows` rows and `ks` warps a unit.
fn backend_with(q8: bool, rows: usize, ks: MatvecKsplit) -> Option<CudaBackend> {
    let mut o: CudaOptions = cuda_common::options();
    o.matvec_q8 = q8;
    o.matvec_rows = rows;
    o.matvec_ksplit = ks;
    match CudaBackend::with_options(0, &o) {
        Ok(b) => Some(b),
        Err(e) => {
            test_support::skip_gpu(format!("q8 matvec tests: the CUDA backend failed: {e}"));
            None
        }
    }
}

/// The quantized activation the references compute with (the CPU backend's quantizer, which
/// the GPU's equals bit for bit: `gpu_quantization_equals_the_cpu_backends`): `d_b q_j` per
/// element in f64, and per block `s_b - d_b sum_j q_j`, what Q4_1's minimum multiplies on top of
/// the dequantized activation (llama.cpp's q4_1 x q8_1 takes `m * s_b`, `s_b` rounded to f16).
struct RefX {
    deq: Vec<f64>,
    s_err: Vec<f64>,
}

fn ref_x(x: &[f32]) -> RefX {
    let q = reference_quantize_q8(x);
    let deq =
        q.qs.iter()
            .enumerate()
            .map(|(j, v)| f64::from(q.d[j / 32]) * f64::from(*v))
            .collect();
    let s_err =
        q.qs.chunks_exact(32)
            .zip(q.d.iter().zip(&q.s))
            .map(|(c, (d, s))| {
                let sum: i32 = c.iter().map(|v| i32::from(*v)).sum();
                f64::from(*s) - f64::from(*d) * f64::from(sum)
            })
            .collect();
    RefX { deq, s_err }
}

/// The minimum of every block of a Q4_1 matrix (`None` for the other types).
fn mins(ty: GgmlType, bytes: &[u8]) -> Option<Vec<f32>> {
    (ty == GgmlType::Q4_1).then(|| {
        bytes
            .chunks_exact(20)
            .map(|b| f16::from_le_bytes([b[2], b[3]]).to_f32())
            .collect()
    })
}

/// Row `r` of `w` (dequantized, `cols` a row; `mins`: its Q4_1 block minimums) times the
/// quantized activation, in f64: (dot, sum of |terms|).
fn ref_dot(w: &[f32], mins: Option<&[f32]>, r: usize, cols: usize, x: &RefX) -> (f64, f64) {
    let (mut dot, mut mag) = (0f64, 0f64);
    for (wi, xi) in w[r * cols..(r + 1) * cols].iter().zip(&x.deq) {
        let p = f64::from(*wi) * xi;
        dot += p;
        mag += p.abs();
    }
    if let Some(m) = mins {
        let nb = cols / 32;
        for (mb, e) in m[r * nb..(r + 1) * nb].iter().zip(&x.s_err) {
            dot += f64::from(*mb) * e;
        }
    }
    (dot, mag)
}

/// The GPU's quantization (quants, scales and q8_1 sum terms) equals the CPU backend's
/// (`reference_quantize_q8`, bit-identical to llama.cpp's x86 `quantize_row_q8_1`) bit for bit,
/// on random data and on crafted ties, all-zero, one-value, tiny and huge blocks.
#[test]
fn gpu_quantization_equals_the_cpu_backends() {
    let Some(b) = backend_with(true, 4, MatvecKsplit::Auto) else {
        return;
    };
    let s = b.stream();
    let mut rng = StdRng::seed_from_u64(0x9_8b17);
    let mut x: Vec<f32> = (0..65536).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
    // Block 0: amax 127 (d = id = 1), exact ties at +-0.5, 1.5, 2.5: to even.
    for (i, v) in [0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 127.0]
        .iter()
        .enumerate()
    {
        x[i] = *v;
    }
    for v in &mut x[8..32] {
        *v = (*v * 10.0).round() + 0.5;
    }
    // Block 1: all zero (d = 0, quants 0). Block 2: one non-zero value. Block 3: tiny values.
    // Block 4: amax 1 (d = 1/127 is no f16), -0.3 -> -38, s = f16(89 / 127). Block 5: huge.
    x[32..64].fill(0.0);
    x[64..96].fill(0.0);
    x[70] = -1e-3;
    for v in &mut x[96..128] {
        *v *= 1e-6;
    }
    x[128..160].fill(0.0);
    x[128] = 1.0;
    x[129] = -0.3;
    for v in &mut x[160..192] {
        *v *= 3e4;
    }
    // Blocks of varying spread (the sum term's rounding depends on the sum of the quants).
    for (k, c) in x[192..8192].chunks_exact_mut(32).enumerate() {
        let scale = 10f32.powf(k as f32 / 40.0 - 3.0);
        let bias = if k % 3 == 0 { 0.7 } else { 0.0 };
        for v in c.iter_mut() {
            *v = (*v + bias) * scale;
        }
    }
    let dx = s.clone_htod(&x).expect("x");
    let g = b.quantize_q8(&dx, x.len()).expect("quantize");
    let h = reference_quantize_q8(&x);
    for (i, (gd, hd)) in g.d.iter().zip(&h.d).enumerate() {
        assert_eq!(gd.to_bits(), hd.to_bits(), "block {i}: scale {gd} vs {hd}");
    }
    for (i, (gs, hs)) in g.s.iter().zip(&h.s).enumerate() {
        assert_eq!(
            gs.to_bits(),
            hs.to_bits(),
            "block {i}: sum term {gs} vs {hs}"
        );
    }
    for (i, (gq, hq)) in g.qs.iter().zip(&h.qs).enumerate() {
        assert_eq!(gq, hq, "element {i} ({}): quant {gq} vs {hq}", x[i]);
    }
    assert_eq!((g.qs.len(), g.d.len(), g.s.len()), (65536, 2048, 2048));
    assert_eq!(&h.qs[..6], &[0, 2, 2, 0, -2, -2]);
    assert_eq!(h.qs[129], -38);
    assert_eq!(h.s[4], f16::from_f32(89.0 / 127.0).to_f32());
    // The sum term is not d * sum q: that is the difference llama.cpp's Q4_1 product sees.
    let differ =
        h.qs.chunks_exact(32)
            .zip(h.d.iter().zip(&h.s))
            .filter(|(c, (d, s))| {
                let sum: i32 = c.iter().map(|v| i32::from(*v)).sum();
                **d * sum as f32 != **s
            })
            .count();
    eprintln!(
        "quantization: {differ} of {} blocks have s != d * sum q",
        h.d.len()
    );
    assert!(differ > 100);
}

struct Case {
    rows: usize,
    cols: usize,
    offset: usize,
}

/// Checks `y` (rows + 5 elements) against the quantized reference of `w . x` (plus `base`);
/// `mins`: the Q4_1 block minimums of `w` ([`mins`]).
#[allow(clippy::too_many_arguments)]
fn check_rows(
    what: &str,
    w: &[f32],
    mins: Option<&[f32]>,
    rows: usize,
    cols: usize,
    x: &[f32],
    base: Option<&[f32]>,
    y: &[f32],
    worst: &mut f64,
) {
    let xq = ref_x(x);
    let (mut num, mut den, mut num_exact, mut mag_sum) = (0f64, 0f64, 0f64, 0f64);
    for r in 0..rows {
        let (dot, mag) = ref_dot(w, mins, r, cols, &xq);
        let exact: f64 = w[r * cols..(r + 1) * cols]
            .iter()
            .zip(x)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let b0 = base.map_or(0.0, |b| f64::from(b[r]));
        let got = f64::from(y[r]) - b0;
        assert!(got.is_finite(), "{what} row {r}: got {got}");
        let err = (got - dot).abs();
        let rel = err / mag.max(f64::MIN_POSITIVE);
        assert!(
            rel < 1e-4,
            "{what} row {r}: gpu {got} ref {dot} (error {err}, {rel:e} of sum|w*x| {mag})"
        );
        *worst = worst.max(rel);
        num += err * err;
        den += dot * dot;
        num_exact += (got - exact).powi(2);
        mag_sum += mag * mag;
    }
    assert!(
        y[rows..].iter().all(|v| v.is_nan()),
        "{what}: wrote past the last row"
    );
    let l2 = (num / den).sqrt();
    assert!(l2 < 1e-4, "{what}: relative L2 error {l2:e}");
    // Against the unquantized product: the 8-bit rounding moves each term by at most half a
    // step of its block (amax / 254), so a row by at most ~1/127 of sum |w x|; 2e-2 of the
    // summed magnitudes leaves room.
    let exact_err = num_exact.sqrt();
    assert!(
        exact_err <= 2e-2 * mag_sum.sqrt(),
        "{what}: error {exact_err:e} against the unquantized product (sum |w x|^2 {mag_sum:e})"
    );
}

fn random_x(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

#[test]
fn q8_matvec_every_type_every_shape() {
    let cases = [
        Case {
            rows: 64,
            cols: 256,
            offset: 0,
        },
        Case {
            rows: 37,
            cols: 4096,
            offset: 0,
        },
        Case {
            rows: 1,
            cols: 512,
            offset: 16,
        },
        Case {
            rows: 130,
            cols: 1024,
            offset: 2,
        },
        Case {
            rows: 9,
            cols: 28672,
            offset: 0,
        },
        Case {
            rows: 513,
            cols: 4096,
            offset: 0,
        },
        Case {
            rows: 3,
            cols: 14336,
            offset: 0,
        },
    ];
    for (unit_rows, ks) in [
        (4, MatvecKsplit::Auto),
        (2, MatvecKsplit::Auto),
        (4, MatvecKsplit::Fixed(1)),
        (2, MatvecKsplit::Fixed(4)),
    ] {
        let Some(b) = backend_with(true, unit_rows, ks) else {
            return;
        };
        let s = b.stream();
        let mut rng = StdRng::seed_from_u64(0x5eed_0008);
        for ty in Q8_TYPES {
            let mut worst = 0f64;
            for c in &cases {
                let n = c.rows * c.cols;
                let bytes = random_blocks(&mut rng, ty, n);
                let mut w = vec![0f32; n];
                gguf::dequantize(ty, &bytes, &mut w).expect("dequantize");
                let x = random_x(&mut rng, c.cols);
                let mut padded = vec![0xA5u8; c.offset];
                padded.extend_from_slice(&bytes);
                let dbytes = s.clone_htod(&padded).expect("upload w");
                let wv =
                    DeviceWeight::new(dbytes.slice(c.offset..), ty, c.cols, c.rows).expect("view");
                // Q4_K takes 16-byte loads: a 2-byte offset goes to the f32 kernel.
                let want_q8 = !(ty == GgmlType::Q4_K && c.offset % 16 != 0);
                assert_eq!(b.matvec_uses_q8(&wv), want_q8, "{ty} offset {}", c.offset);
                if !want_q8 {
                    continue;
                }
                let dx = s.clone_htod(&x).expect("x");
                let mut dy = nan_buf(s, c.rows + 5);
                b.matvec(&wv, &dx, &mut dy).expect("matvec");
                let y = s.clone_dtoh(&dy).expect("y");
                let what = format!("{ty} {}x{} (unit {unit_rows} rows, {ks:?})", c.rows, c.cols);
                let m = mins(ty, &bytes);
                check_rows(
                    &what,
                    &w,
                    m.as_deref(),
                    c.rows,
                    c.cols,
                    &x,
                    None,
                    &y,
                    &mut worst,
                );
            }
            eprintln!("q8 matvec {ty} unit {unit_rows} {ks:?}: max row error {worst:.2e}");
        }
    }
}

#[test]
fn q8_accumulate_concat_and_swiglu() {
    for unit_rows in [4, 2] {
        let Some(b) = backend_with(true, unit_rows, MatvecKsplit::Auto) else {
            return;
        };
        let s = b.stream();
        let mut rng = StdRng::seed_from_u64(0xacc_0008);
        let mut worst = 0f64;
        // Accumulate: y += W x.
        for (ty, rows, cols) in [
            (GgmlType::Q4_K, 33usize, 4096usize),
            (GgmlType::Q6_K, 31, 14336),
            (GgmlType::Q8_0, 17, 8192),
            (GgmlType::Q4_1, 21, 576),
        ] {
            let bytes = random_blocks(&mut rng, ty, rows * cols);
            let mut w = vec![0f32; rows * cols];
            gguf::dequantize(ty, &bytes, &mut w).expect("dequantize");
            let x = random_x(&mut rng, cols);
            let y0: Vec<f32> = (0..rows).map(|_| rng.gen_range(-5.0f32..5.0)).collect();
            let dw = s.clone_htod(&bytes).expect("w");
            let wv = DeviceWeight::new(dw.slice(..), ty, cols, rows).expect("view");
            assert!(b.matvec_uses_q8(&wv));
            let dx = s.clone_htod(&x).expect("x");
            let mut init = y0.clone();
            init.extend([f32::NAN; 5]);
            let mut dy = s.clone_htod(&init).expect("y");
            b.matvec_accumulate(&wv, &dx, &mut dy).expect("accumulate");
            let y = s.clone_dtoh(&dy).expect("y");
            let what = format!("accumulate {ty} {rows}x{cols} unit {unit_rows}");
            let m = mins(ty, &bytes);
            check_rows(
                &what,
                &w,
                m.as_deref(),
                rows,
                cols,
                &x,
                Some(&y0),
                &y,
                &mut worst,
            );
        }
        // Q, K, V of mixed types (Q4_K_M: V in Q6_K) into one output.
        let cols = 4096;
        let parts = [
            (GgmlType::Q4_K, 130usize),
            (GgmlType::Q4_K, 33),
            (GgmlType::Q6_K, 33),
        ];
        let mut hw = Vec::new();
        let mut dws = Vec::new();
        for (ty, rows) in parts {
            let bytes = random_blocks(&mut rng, ty, rows * cols);
            let mut w = vec![0f32; rows * cols];
            gguf::dequantize(ty, &bytes, &mut w).expect("dequantize");
            hw.push(w);
            dws.push(s.clone_htod(&bytes).expect("w"));
        }
        let views: Vec<DeviceWeight<'_>> = dws
            .iter()
            .zip(parts)
            .map(|(d, (ty, rows))| DeviceWeight::new(d.slice(..), ty, cols, rows).expect("view"))
            .collect();
        let x = random_x(&mut rng, cols);
        let dx = s.clone_htod(&x).expect("x");
        let total: usize = parts.iter().map(|p| p.1).sum();
        let mut dy = nan_buf(s, total + 5);
        b.matvec_concat(&[&views[0], &views[1], &views[2]], &dx, &mut dy)
            .expect("concat");
        let y = s.clone_dtoh(&dy).expect("y");
        let mut at = 0;
        for (i, (ty, rows)) in parts.iter().enumerate() {
            let mut part: Vec<f32> = y[at..at + rows].to_vec();
            part.extend(if i + 1 < parts.len() {
                vec![f32::NAN; 5]
            } else {
                y[at + rows..].to_vec()
            });
            let what = format!("concat part {i} {ty} {rows}x{cols} unit {unit_rows}");
            check_rows(
                &what, &hw[i], None, *rows, cols, &x, None, &part, &mut worst,
            );
            at += rows;
        }
        // Gate and up with SwiGLU: out = silu(g . x) * (u . x), against the quantized
        // references of both products.
        for (ty, rows, cols) in [
            (GgmlType::Q4_K, 77usize, 4096usize),
            (GgmlType::Q4_1, 37, 576),
        ] {
            let gb = random_blocks(&mut rng, ty, rows * cols);
            let ub = random_blocks(&mut rng, ty, rows * cols);
            let (mut gw, mut uw) = (vec![0f32; rows * cols], vec![0f32; rows * cols]);
            gguf::dequantize(ty, &gb, &mut gw).expect("dequantize");
            gguf::dequantize(ty, &ub, &mut uw).expect("dequantize");
            let (dg, du) = (s.clone_htod(&gb).expect("g"), s.clone_htod(&ub).expect("u"));
            let gv = DeviceWeight::new(dg.slice(..), ty, cols, rows).expect("view");
            let uv = DeviceWeight::new(du.slice(..), ty, cols, rows).expect("view");
            let x = random_x(&mut rng, cols);
            let dx = s.clone_htod(&x).expect("x");
            let mut dout = nan_buf(s, rows + 5);
            b.matvec_swiglu(&gv, &uv, &dx, &mut dout).expect("swiglu");
            let out = s.clone_dtoh(&dout).expect("out");
            let xq = ref_x(&x);
            let (gm_, um_) = (mins(ty, &gb), mins(ty, &ub));
            for (r, o) in out[..rows].iter().enumerate() {
                let (g, gm) = ref_dot(&gw, gm_.as_deref(), r, cols, &xq);
                let (u, um) = ref_dot(&uw, um_.as_deref(), r, cols, &xq);
                let silu = g / (1.0 + (-g).exp());
                let want = silu * u;
                // First-order error bound from the two products' tolerances.
                let tol = 1e-4 * (gm * u.abs() + um * silu.abs() + gm * um) + 1e-6;
                let got = f64::from(*o);
                assert!(
                    (got - want).abs() <= tol,
                    "swiglu {ty} row {r} unit {unit_rows}: gpu {got} ref {want} (tol {tol:e})"
                );
            }
            assert!(
                out[rows..].iter().all(|v| v.is_nan()),
                "swiglu wrote past the end"
            );
        }
        eprintln!("q8 fused products, unit {unit_rows}: max row error {worst:.2e}");
    }
}

#[test]
fn q8_off_or_unsupported_types_take_the_f32_kernel() {
    let Some(off) = backend_with(false, 4, MatvecKsplit::Auto) else {
        return;
    };
    let Some(on) = backend_with(true, 4, MatvecKsplit::Auto) else {
        return;
    };
    let s = on.stream();
    let mut rng = StdRng::seed_from_u64(3);
    for ty in [
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::F16,
        GgmlType::Q8_0,
    ] {
        let bytes = random_blocks(&mut rng, ty, 8 * 512);
        let d = s.clone_htod(&bytes).expect("w");
        let wv = DeviceWeight::new(d.slice(..), ty, 512, 8).expect("view");
        assert!(!off.matvec_uses_q8(&wv), "{ty}: q8 off");
        let has = matches!(ty, GgmlType::Q4_K | GgmlType::Q8_0);
        assert_eq!(on.matvec_uses_q8(&wv), has, "{ty}: q8 on");
    }
}

/// RMSNorm fused with the quantization (`rmsnorm_matvec*`): the norm output against an f64
/// RMSNorm, the products against the quantized reference of that output; with the 8-bit path
/// off, equal bit for bit to the separate norm and product.
#[test]
fn q8_rmsnorm_fused_products() {
    let (Some(on), Some(off)) = (
        backend_with(true, 4, MatvecKsplit::Auto),
        backend_with(false, 4, MatvecKsplit::Auto),
    ) else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(0x4e0_0008);
    let eps = 1e-5f32;
    for (ty, rows, cols) in [
        (GgmlType::Q4_K, 45usize, 4096usize),
        (GgmlType::Q4_1, 19, 576),
        (GgmlType::Q6_K, 7, 2048),
    ] {
        let x: Vec<f32> = (0..cols).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
        let nw: Vec<f32> = (0..cols).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
        let ms = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / cols as f64;
        let inv = 1.0 / (ms + f64::from(eps)).sqrt();
        let wb: Vec<Vec<u8>> = (0..2)
            .map(|_| random_blocks(&mut rng, ty, rows * cols))
            .collect();
        let wf: Vec<Vec<f32>> = wb
            .iter()
            .map(|b| {
                let mut w = vec![0f32; rows * cols];
                gguf::dequantize(ty, b, &mut w).expect("dequantize");
                w
            })
            .collect();
        let mut results = Vec::new();
        for b in [&on, &off] {
            let s = b.stream();
            let dx = s.clone_htod(&x).expect("x");
            let nb: Vec<u8> = nw.iter().flat_map(|v| v.to_le_bytes()).collect();
            let dn = s.clone_htod(&nb).expect("norm");
            let norm = DeviceWeight::new(dn.slice(..), GgmlType::F32, cols, 1).expect("norm");
            let dw: Vec<_> = wb.iter().map(|v| s.clone_htod(v).expect("w")).collect();
            let views: Vec<DeviceWeight<'_>> = dw
                .iter()
                .map(|d| DeviceWeight::new(d.slice(..), ty, cols, rows).expect("view"))
                .collect();
            let mut xn = nan_buf(s, cols);
            let mut y1 = nan_buf(s, rows + 5);
            b.rmsnorm_matvec(&dx, &norm, &mut xn, eps, &views[0], &mut y1)
                .expect("norm + matvec");
            let xn1 = s.clone_dtoh(&xn).expect("xn");
            let mut y2 = nan_buf(s, 2 * rows + 5);
            b.rmsnorm_matvec_concat(&dx, &norm, &mut xn, eps, &[&views[0], &views[1]], &mut y2)
                .expect("norm + concat");
            let mut y3 = nan_buf(s, rows + 5);
            b.rmsnorm_matvec_swiglu(&dx, &norm, &mut xn, eps, &views[0], &views[1], &mut y3)
                .expect("norm + swiglu");
            // The same through the separate launches.
            let mut xs = nan_buf(s, cols);
            b.rmsnorm_weight(&dx, &norm, &mut xs, eps).expect("norm");
            let mut z1 = nan_buf(s, rows + 5);
            b.matvec(&views[0], &xs, &mut z1).expect("matvec");
            let mut z3 = nan_buf(s, rows + 5);
            b.matvec_swiglu(&views[0], &views[1], &xs, &mut z3)
                .expect("swiglu");
            let get = |d: &cudarc::driver::CudaSlice<f32>| s.clone_dtoh(d).expect("download");
            results.push((
                xn1,
                get(&y1),
                get(&y2),
                get(&y3),
                get(&xs),
                get(&z1),
                get(&z3),
            ));
        }
        for (i, (xn, y1, y2, y3, xs, z1, z3)) in results.iter().enumerate() {
            let what = format!("{ty} {rows}x{cols} q8 {}", i == 0);
            for (c, v) in xn.iter().enumerate() {
                let e = f64::from(x[c]) * inv * f64::from(nw[c]);
                assert!(
                    (f64::from(*v) - e).abs() <= 1e-5 * e.abs().max(1.0),
                    "{what}: norm output {c}: {v} vs {e}"
                );
            }
            if i == 1 {
                // f32 kernels: the fused call is the two calls.
                assert_eq!(xn, xs, "{what}: norm output");
                assert_eq!(
                    y1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    z1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{what}: rmsnorm_matvec"
                );
                assert_eq!(
                    y3.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    z3.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{what}: rmsnorm_matvec_swiglu"
                );
                continue;
            }
            let mut worst = 0f64;
            let (m0, m1) = (mins(ty, &wb[0]), mins(ty, &wb[1]));
            let (m0, m1) = (m0.as_deref(), m1.as_deref());
            check_rows(&what, &wf[0], m0, rows, cols, xn, None, y1, &mut worst);
            let mut part = y2[..rows].to_vec();
            part.extend([f32::NAN; 5]);
            check_rows(&what, &wf[0], m0, rows, cols, xn, None, &part, &mut worst);
            check_rows(
                &what,
                &wf[1],
                m1,
                rows,
                cols,
                xn,
                None,
                &y2[rows..],
                &mut worst,
            );
            let xq = ref_x(xn);
            for (r, o) in y3[..rows].iter().enumerate() {
                let (g, gm) = ref_dot(&wf[0], m0, r, cols, &xq);
                let (u, um) = ref_dot(&wf[1], m1, r, cols, &xq);
                let silu = g / (1.0 + (-g).exp());
                let tol = 1e-4 * (gm * u.abs() + um * silu.abs() + gm * um) + 1e-6;
                let got = f64::from(*o);
                assert!(
                    (got - silu * u).abs() <= tol,
                    "{what}: swiglu row {r}: {got} vs {}",
                    silu * u
                );
            }
            assert!(y3[rows..].iter().all(|v| v.is_nan()), "{what}: swiglu tail");
        }
    }
}
