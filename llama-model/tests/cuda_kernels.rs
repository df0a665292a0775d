//! GPU correctness of every CUDA kernel against CPU references (feature `cuda`).
//!
//! Weights: random valid ggml blocks (random quant bytes, random finite f16 scales), compared
//! with `gguf::dequantize` (itself checked against llama.cpp/gguf-py fixtures) and an f64 dot
//! product. Other kernels: textbook formulas in f64. Every output buffer is NaN-filled before
//! the launch, so an element the kernel fails to write fails the comparison; NaN never passes.
//!
//! Without a GPU (or CUDA driver / NVRTC) the tests skip loudly, unless
//! `VRAMLESS_REQUIRE_GPU=1`, where they fail.
#![cfg(feature = "cuda")]

use gguf::GgmlType;
use half::f16;
use llama_model::cuda::{DeviceWeight, SUPPORTED_TYPES};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod cuda_common;
use cuda_common::{backend, nan_buf, random_blocks};

struct MatvecCase {
    rows: usize,
    cols: usize,
    /// Byte offset of the tensor inside the device buffer (odd offsets test unaligned reads).
    offset: usize,
}

#[test]
fn matvec_every_type_every_shape() {
    let Some(b) = backend() else { return };
    let s = b.stream();
    let mut rng = StdRng::seed_from_u64(0x5eed_cafe);
    let cases = [
        MatvecCase {
            rows: 64,
            cols: 256,
            offset: 0,
        },
        MatvecCase {
            rows: 37,
            cols: 4096,
            offset: 3,
        },
        MatvecCase {
            rows: 130,
            cols: 512,
            offset: 0,
        },
        MatvecCase {
            rows: 24,
            cols: 8192,
            offset: 1,
        },
        MatvecCase {
            rows: 9,
            cols: 28672,
            offset: 0,
        },
        MatvecCase {
            rows: 512,
            cols: 4096,
            offset: 0,
        },
    ];
    let mut report = Vec::new();
    for ty in SUPPORTED_TYPES {
        let mut worst_row = 0f64;
        let mut worst_l2 = 0f64;
        for case in &cases {
            let n = case.rows * case.cols;
            let bytes = random_blocks(&mut rng, ty, n);
            let mut w = vec![0f32; n];
            gguf::dequantize(ty, &bytes, &mut w).expect("dequantize");
            assert!(
                w.iter().all(|v| v.is_finite()),
                "{ty}: generator made non-finite weights"
            );
            let x: Vec<f32> = (0..case.cols)
                .map(|_| rng.gen_range(-1.0f32..1.0))
                .collect();

            let mut padded = vec![0xA5u8; case.offset];
            padded.extend_from_slice(&bytes);
            let dbytes = s.clone_htod(&padded).expect("upload w");
            let wv = DeviceWeight::new(dbytes.slice(case.offset..), ty, case.cols, case.rows)
                .expect("weight view");
            let dx = s.clone_htod(&x).expect("upload x");
            // Five extra poisoned elements: the kernel must not write past its rows.
            let mut dy = nan_buf(s, case.rows + 5);
            b.matvec(&wv, &dx, &mut dy).expect("matvec");
            let y = s.clone_dtoh(&dy).expect("download y");

            let (mut num, mut den) = (0f64, 0f64);
            for r in 0..case.rows {
                let row = &w[r * case.cols..(r + 1) * case.cols];
                let (mut dot, mut mag) = (0f64, 0f64);
                for (wi, xi) in row.iter().zip(&x) {
                    dot += f64::from(*wi) * f64::from(*xi);
                    mag += (f64::from(*wi) * f64::from(*xi)).abs();
                }
                let got = f64::from(y[r]);
                assert!(
                    got.is_finite(),
                    "{ty} {}x{} row {r}: got {got}",
                    case.rows,
                    case.cols
                );
                let err = (got - dot).abs();
                let rel = err / mag.max(f64::MIN_POSITIVE);
                assert!(
                    rel < 1e-4,
                    "{ty} {}x{} row {r}: gpu {got} cpu {dot} (error {err}, {rel:e} of sum|w*x| {mag})",
                    case.rows,
                    case.cols
                );
                worst_row = worst_row.max(rel);
                num += err * err;
                den += dot * dot;
            }
            assert!(
                y[case.rows..].iter().all(|v| v.is_nan()),
                "{ty}: wrote past the last row"
            );
            let l2 = (num / den).sqrt();
            assert!(
                l2 < 1e-4,
                "{ty} {}x{}: relative L2 error {l2:e}",
                case.rows,
                case.cols
            );
            worst_l2 = worst_l2.max(l2);
        }
        report.push(format!(
            "{ty}: max row error {worst_row:.2e} of sum|w*x|, max rel L2 {worst_l2:.2e}"
        ));
    }
    for line in report {
        eprintln!("matvec {line}");
    }
}

#[test]
fn embedding_rows_every_type() {
    let Some(b) = backend() else { return };
    let s = b.stream();
    let mut rng = StdRng::seed_from_u64(7);
    for ty in SUPPORTED_TYPES {
        for cols in [256usize, 4096] {
            let rows = 50;
            let bytes = random_blocks(&mut rng, ty, rows * cols);
            let mut w = vec![0f32; rows * cols];
            gguf::dequantize(ty, &bytes, &mut w).expect("dequantize");
            let dbytes = s.clone_htod(&bytes).expect("upload");
            let wv = DeviceWeight::new(dbytes.slice(..), ty, cols, rows).expect("view");
            // The last id is out of range: that row must come back NaN.
            let tokens: Vec<u32> = vec![0, 49, 7, 7, 23, 50];
            let dt = s.clone_htod(&tokens).expect("tokens");
            let mut out = nan_buf(s, tokens.len() * cols);
            b.embed(&wv, &dt, &mut out).expect("embed");
            let got = s.clone_dtoh(&out).expect("download");
            for (i, &t) in tokens.iter().enumerate() {
                let g = &got[i * cols..(i + 1) * cols];
                if t as usize >= rows {
                    assert!(
                        g.iter().all(|v| v.is_nan()),
                        "{ty}: out-of-range id not NaN"
                    );
                    continue;
                }
                let r = &w[t as usize * cols..(t as usize + 1) * cols];
                let scale = r
                    .iter()
                    .fold(0f32, |m, v| m.max(v.abs()))
                    .max(f32::MIN_POSITIVE);
                for (c, (a, e)) in g.iter().zip(r).enumerate() {
                    let err = (a - e).abs() / scale;
                    assert!(
                        a.is_finite() && err < 1e-6,
                        "{ty} cols {cols} token {t} col {c}: gpu {a} cpu {e}"
                    );
                }
            }
        }
    }
}

#[test]
fn rmsnorm_rows() {
    let Some(b) = backend() else { return };
    let s = b.stream();
    let mut rng = StdRng::seed_from_u64(11);
    for (rows, n) in [(1usize, 576usize), (3, 4096), (2, 8192)] {
        let x: Vec<f32> = (0..rows * n).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
        let w: Vec<f32> = (0..n).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
        let eps = 1e-5f32;
        let (dx, dw) = (s.clone_htod(&x).expect("x"), s.clone_htod(&w).expect("w"));
        let mut out = nan_buf(s, rows * n);
        b.rmsnorm(&dx, &dw, &mut out, n, eps).expect("rmsnorm");
        let got = s.clone_dtoh(&out).expect("download");
        for r in 0..rows {
            let xr = &x[r * n..(r + 1) * n];
            let ms = xr.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / n as f64;
            let inv = 1.0 / (ms + f64::from(eps)).sqrt();
            for i in 0..n {
                let e = f64::from(xr[i]) * inv * f64::from(w[i]);
                let a = f64::from(got[r * n + i]);
                assert!(
                    (a - e).abs() <= 1e-5 * e.abs().max(1.0),
                    "row {r} elem {i}: gpu {a} ref {e}"
                );
            }
        }
    }
}

#[test]
fn rope_adjacent_pairs_with_factors() {
    let Some(b) = backend() else { return };
    let s = b.stream();
    let mut rng = StdRng::seed_from_u64(13);
    let (n_heads, head_dim) = (8usize, 128usize);
    for (rope_dim, pos, with_factors) in [
        (128usize, 0usize, false),
        (128, 1234, true),
        (64, 131071, true),
    ] {
        let x: Vec<f32> = (0..n_heads * head_dim)
            .map(|_| rng.gen_range(-1.0f32..1.0))
            .collect();
        let factors: Vec<f32> = (0..rope_dim / 2)
            .map(|_| rng.gen_range(1.0f32..8.0))
            .collect();
        let base = 500000f32;
        let mut dx = s.clone_htod(&x).expect("x");
        let df = s.clone_htod(&factors).expect("factors");
        b.rope(
            &mut dx,
            n_heads,
            head_dim,
            rope_dim,
            pos,
            base,
            with_factors.then_some(&df),
        )
        .expect("rope");
        let got = s.clone_dtoh(&dx).expect("download");
        for h in 0..n_heads {
            for i in 0..head_dim {
                let k = h * head_dim + i;
                let e = if i < rope_dim {
                    let p = i / 2;
                    let mut f = f64::from(base).powf(-2.0 * p as f64 / rope_dim as f64);
                    if with_factors {
                        f /= f64::from(factors[p]);
                    }
                    let th = pos as f64 * f;
                    let (a, bb) = (
                        f64::from(x[h * head_dim + 2 * p]),
                        f64::from(x[h * head_dim + 2 * p + 1]),
                    );
                    if i % 2 == 0 {
                        a * th.cos() - bb * th.sin()
                    } else {
                        a * th.sin() + bb * th.cos()
                    }
                } else {
                    f64::from(x[k])
                };
                let a = f64::from(got[k]);
                assert!(
                    (a - e).abs() < 1e-5,
                    "pos {pos} head {h} elem {i}: gpu {a} ref {e}"
                );
            }
        }
    }
}

#[test]
fn swiglu_and_residual_add() {
    let Some(b) = backend() else { return };
    let s = b.stream();
    let mut rng = StdRng::seed_from_u64(17);
    let n = 28672 + 3;
    let g: Vec<f32> = (0..n).map(|_| rng.gen_range(-20.0f32..20.0)).collect();
    let u: Vec<f32> = (0..n).map(|_| rng.gen_range(-4.0f32..4.0)).collect();
    let (dg, du) = (s.clone_htod(&g).expect("g"), s.clone_htod(&u).expect("u"));
    let mut out = nan_buf(s, n);
    b.swiglu(&dg, &du, &mut out).expect("swiglu");
    let got = s.clone_dtoh(&out).expect("download");
    for i in 0..n {
        let (gi, ui) = (f64::from(g[i]), f64::from(u[i]));
        let e = gi / (1.0 + (-gi).exp()) * ui;
        let a = f64::from(got[i]);
        assert!(
            (a - e).abs() <= 1e-5 * e.abs().max(1.0),
            "swiglu {i}: gpu {a} ref {e}"
        );
    }
    let mut dx = s.clone_htod(&g).expect("x");
    b.add_inplace(&mut dx, &du).expect("add");
    let got = s.clone_dtoh(&dx).expect("download");
    for i in 0..n {
        assert_eq!(got[i], g[i] + u[i], "add {i}");
    }
}

#[test]
fn argmax_picks_first_maximum_and_ignores_nan() {
    let Some(b) = backend() else { return };
    let s = b.stream();
    let mut rng = StdRng::seed_from_u64(19);
    let n = 128256;
    let mut x: Vec<f32> = (0..n).map(|_| rng.gen_range(-10.0f32..10.0)).collect();
    x[100] = f32::NAN;
    x[n - 1] = f32::NAN;
    x[77777] = 50.0;
    x[99999] = 50.0; // tie: the lower index wins
    let dx = s.clone_htod(&x).expect("x");
    let mut out = s.clone_htod(&[u32::MAX]).expect("out");
    b.argmax(&dx, &mut out).expect("argmax");
    assert_eq!(s.clone_dtoh(&out).expect("download"), vec![77777]);
    // Brute force on a fresh random vector.
    let y: Vec<f32> = (0..50257).map(|_| rng.gen_range(-10.0f32..10.0)).collect();
    let expect = y
        .iter()
        .enumerate()
        .fold((0usize, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0 as u32;
    let dy = s.clone_htod(&y).expect("y");
    b.argmax(&dy, &mut out).expect("argmax");
    assert_eq!(s.clone_dtoh(&out).expect("download"), vec![expect]);
}

#[test]
fn bad_shapes_are_errors_not_launches() {
    let Some(b) = backend() else { return };
    let s = b.stream();
    let buf = s.clone_htod(&vec![0u8; 18 * 4]).expect("buf");
    // 4 Q4_0 blocks cannot hold 2 rows of 64 plus one more row.
    assert!(DeviceWeight::new(buf.slice(..), GgmlType::Q4_0, 64, 3).is_err());
    assert!(DeviceWeight::new(buf.slice(..), GgmlType::Q4_0, 48, 1).is_err());
    assert!(DeviceWeight::new(buf.slice(..), GgmlType::Q2_K, 256, 0).is_err());
    let w = DeviceWeight::new(buf.slice(..), GgmlType::Q4_0, 64, 2).expect("fits");
    let x = s.clone_htod(&[0f32; 32]).expect("x");
    let mut y = nan_buf(s, 2);
    assert!(
        b.matvec(&w, &x, &mut y).is_err(),
        "x shorter than a row must be refused"
    );
}

/// f16 bits of `v` (round to nearest even, as the kernel's `cvt.rn.f16.f32`).
fn h(v: f32) -> u16 {
    f16::from_f32(v).to_bits()
}

#[test]
fn kv_store_rounds_to_f16_at_its_position() {
    let Some(b) = backend() else { return };
    let s = b.stream();
    let mut rng = StdRng::seed_from_u64(29);
    let shape = llama_model::cuda::AttnShape {
        n_heads: 8,
        n_kv_heads: 2,
        head_dim: 64,
        max_ctx: 16,
    };
    let n = shape.n_kv_heads * shape.head_dim;
    let k: Vec<f32> = (0..n).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
    let poison = 0x7E00u16; // f16 NaN
    let mut kc = s.clone_htod(&vec![poison; shape.cache_len()]).expect("kc");
    let mut vc = s.clone_htod(&vec![poison; shape.cache_len()]).expect("vc");
    let (dk, dv) = (s.clone_htod(&k).expect("k"), s.clone_htod(&v).expect("v"));
    let pos = 5;
    b.kv_store(&dk, &dv, &mut kc, &mut vc, shape, pos)
        .expect("kv_store");
    let (gk, gv) = (
        s.clone_dtoh(&kc).expect("kc"),
        s.clone_dtoh(&vc).expect("vc"),
    );
    for hh in 0..shape.n_kv_heads {
        for p in 0..shape.max_ctx {
            for d in 0..shape.head_dim {
                let at = (hh * shape.max_ctx + p) * shape.head_dim + d;
                let i = hh * shape.head_dim + d;
                let (ek, ev) = if p == pos {
                    (h(k[i]), h(v[i]))
                } else {
                    (poison, poison)
                };
                assert_eq!((gk[at], gv[at]), (ek, ev), "head {hh} pos {p} dim {d}");
            }
        }
    }
    assert!(
        b.kv_store(&dk, &dv, &mut kc, &mut vc, shape, 16).is_err(),
        "pos past the cache"
    );
}

#[test]
fn attention_decode_matches_softmax_reference() {
    let Some(b) = backend() else { return };
    let s = b.stream();
    let mut rng = StdRng::seed_from_u64(31);
    for (n_heads, n_kv_heads, head_dim, max_ctx, n_ctxs) in [
        (
            8usize,
            2usize,
            64usize,
            1100usize,
            vec![1usize, 7, 256, 257, 1100],
        ),
        (32, 8, 128, 4200, vec![4100]),
        (9, 3, 64, 300, vec![300]),
    ] {
        let shape = llama_model::cuda::AttnShape {
            n_heads,
            n_kv_heads,
            head_dim,
            max_ctx,
        };
        let kf: Vec<f32> = (0..shape.cache_len())
            .map(|_| rng.gen_range(-2.0f32..2.0))
            .collect();
        let vf: Vec<f32> = (0..shape.cache_len())
            .map(|_| rng.gen_range(-2.0f32..2.0))
            .collect();
        let kh: Vec<u16> = kf.iter().map(|&x| h(x)).collect();
        let vh: Vec<u16> = vf.iter().map(|&x| h(x)).collect();
        let (kc, vc) = (
            s.clone_htod(&kh).expect("kc"),
            s.clone_htod(&vh).expect("vc"),
        );
        let q: Vec<f32> = (0..n_heads * head_dim)
            .map(|_| rng.gen_range(-2.0f32..2.0))
            .collect();
        let dq = s.clone_htod(&q).expect("q");
        for n_ctx in n_ctxs {
            let mut scratch = nan_buf(s, shape.scratch_len(n_ctx));
            let mut out = nan_buf(s, n_heads * head_dim);
            b.attention_decode(&dq, &kc, &vc, &mut scratch, &mut out, shape, n_ctx)
                .expect("attention");
            let got = s.clone_dtoh(&out).expect("download");
            let f = |bits: u16| f64::from(f16::from_bits(bits).to_f32());
            let group = n_heads / n_kv_heads;
            for hq in 0..n_heads {
                let kvh = hq / group;
                let row = |p: usize| (kvh * max_ctx + p) * head_dim;
                let scores: Vec<f64> = (0..n_ctx)
                    .map(|p| {
                        (0..head_dim)
                            .map(|d| f64::from(q[hq * head_dim + d]) * f(kh[row(p) + d]))
                            .sum::<f64>()
                            / (head_dim as f64).sqrt()
                    })
                    .collect();
                let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|sc| (sc - mx).exp()).collect();
                let total: f64 = w.iter().sum();
                for d in 0..head_dim {
                    let e = (0..n_ctx).map(|p| w[p] * f(vh[row(p) + d])).sum::<f64>() / total;
                    let a = f64::from(got[hq * head_dim + d]);
                    assert!(
                        (a - e).abs() <= 1e-4 * e.abs().max(1.0),
                        "heads {n_heads}/{n_kv_heads} dim {head_dim} n_ctx {n_ctx} head {hq} d {d}: gpu {a} ref {e}"
                    );
                }
            }
        }
    }
}
