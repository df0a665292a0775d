//! GPU correctness of the fused decode kernels (feature `cuda`) against CPU references:
//! matrix-vector products with the residual add in the epilogue, Q/K/V into one output, gate
//! and up with SwiGLU; rotary embedding fused with the f16 KV store; attention with a fixed
//! number of context splits (online softmax over several tiles); repetition penalty and top-k
//! selection against the CPU sampler.
//!
//! Weights are random valid ggml blocks dequantized by `gguf::dequantize`, products in f64.
//! Outputs are NaN-poisoned (or random, for the accumulating product) before each launch.
//! Without a GPU the tests skip loudly (fail with `VRAMLESS_REQUIRE_GPU=1`).
#![cfg(feature = "cuda")]
#![allow(clippy::needless_range_loop)]

mod cuda_common;
use cuda_common::{backend, nan_buf, random_blocks};

use gguf::GgmlType;
use half::f16;
use llama_model::cuda::{finish_sample, gpu_sampling_plan, AttnShape, DeviceWeight};
use llama_model::sampler::{Sampler, SamplerConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A random weight on the host (bytes and dequantized values).
struct HostWeight {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    bytes: Vec<u8>,
    w: Vec<f32>,
}

fn host_weight(rng: &mut StdRng, ty: GgmlType, rows: usize, cols: usize) -> HostWeight {
    let bytes = random_blocks(rng, ty, rows * cols);
    let mut w = vec![0f32; rows * cols];
    gguf::dequantize(ty, &bytes, &mut w).expect("dequantize");
    HostWeight {
        ty,
        rows,
        cols,
        bytes,
        w,
    }
}

/// (row . x, sum |w * x|) in f64.
fn dot_ref(h: &HostWeight, r: usize, x: &[f32]) -> (f64, f64) {
    let row = &h.w[r * h.cols..(r + 1) * h.cols];
    row.iter().zip(x).fold((0.0, 0.0), |(d, m), (w, x)| {
        let p = f64::from(*w) * f64::from(*x);
        (d + p, m + p.abs())
    })
}

fn random_vec(rng: &mut StdRng, n: usize, a: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-a..a)).collect()
}

#[test]
fn matvec_accumulate_concat_and_swiglu() {
    let Some(b) = backend() else { return };
    let s = b.stream();
    let mut rng = StdRng::seed_from_u64(0xf05ed);
    // Residual add in the epilogue: odd row counts (a warp's second row absent), aligned and
    // unaligned weights (fast and generic paths).
    for (ty, rows, cols, offset) in [
        (GgmlType::Q4_K, 33usize, 4096usize, 0usize),
        (GgmlType::Q6_K, 31, 14336, 0),
        (GgmlType::Q8_0, 17, 8192, 0),
        (GgmlType::F16, 9, 2048, 0),
        (GgmlType::Q4_0, 21, 1024, 0),
        (GgmlType::Q4_K, 5, 512, 2),
    ] {
        let h = host_weight(&mut rng, ty, rows, cols);
        let x = random_vec(&mut rng, cols, 1.0);
        let y0 = random_vec(&mut rng, rows, 5.0);
        let mut padded = vec![0x5Au8; offset];
        padded.extend_from_slice(&h.bytes);
        let dw = s.clone_htod(&padded).expect("w");
        let wv = DeviceWeight::new(dw.slice(offset..), ty, cols, rows).expect("view");
        let dx = s.clone_htod(&x).expect("x");
        let mut dy = s.clone_htod(&y0).expect("y");
        b.matvec_accumulate(&wv, &dx, &mut dy).expect("accumulate");
        let got = s.clone_dtoh(&dy).expect("y");
        for r in 0..rows {
            let (dot, mag) = dot_ref(&h, r, &x);
            let want = f64::from(y0[r]) + dot;
            let err = (f64::from(got[r]) - want).abs();
            assert!(
                err <= 1e-4 * mag + 1e-6 * want.abs(),
                "accumulate {ty} {rows}x{cols} row {r}: gpu {} want {want}",
                got[r]
            );
        }
    }

    // Q, K, V of different types into one concatenated output.
    let cols = 4096;
    let ws = [
        host_weight(&mut rng, GgmlType::Q4_K, 64, cols),
        host_weight(&mut rng, GgmlType::Q4_K, 16, cols),
        host_weight(&mut rng, GgmlType::Q6_K, 16, cols),
    ];
    let x = random_vec(&mut rng, cols, 1.0);
    let dx = s.clone_htod(&x).expect("x");
    let bufs: Vec<_> = ws
        .iter()
        .map(|h| s.clone_htod(&h.bytes).expect("w"))
        .collect();
    let views: Vec<DeviceWeight<'_>> = ws
        .iter()
        .zip(&bufs)
        .map(|(h, d)| DeviceWeight::new(d.slice(..), h.ty, h.cols, h.rows).expect("view"))
        .collect();
    let total = 64 + 16 + 16;
    let mut dy = nan_buf(s, total + 3);
    b.matvec_concat(&[&views[0], &views[1], &views[2]], &dx, &mut dy)
        .expect("concat");
    let got = s.clone_dtoh(&dy).expect("y");
    let mut at = 0;
    for h in &ws {
        for r in 0..h.rows {
            let (dot, mag) = dot_ref(h, r, &x);
            let g = f64::from(got[at + r]);
            assert!(
                g.is_finite() && (g - dot).abs() <= 1e-4 * mag,
                "concat {} row {r}: gpu {g} want {dot}",
                h.ty
            );
        }
        at += h.rows;
    }
    assert!(
        got[total..].iter().all(|v| v.is_nan()),
        "concat wrote past its rows"
    );

    // Gate and up with SwiGLU: fast types, a generic type, an unaligned pair.
    for (ty, rows, cols, offset) in [
        (GgmlType::Q4_K, 37usize, 4096usize, 0usize),
        (GgmlType::Q6_K, 20, 1024, 0),
        (GgmlType::Q4_1, 19, 2048, 0),
        (GgmlType::Q8_0, 8, 512, 1),
    ] {
        let g = host_weight(&mut rng, ty, rows, cols);
        let u = host_weight(&mut rng, ty, rows, cols);
        let x = random_vec(&mut rng, cols, 1.0);
        let up = |h: &HostWeight| {
            let mut p = vec![0u8; offset];
            p.extend_from_slice(&h.bytes);
            s.clone_htod(&p).expect("w")
        };
        let (dg, du) = (up(&g), up(&u));
        let gv = DeviceWeight::new(dg.slice(offset..), ty, cols, rows).expect("gate");
        let uv = DeviceWeight::new(du.slice(offset..), ty, cols, rows).expect("up");
        let dx = s.clone_htod(&x).expect("x");
        let mut out = nan_buf(s, rows + 2);
        b.matvec_swiglu(&gv, &uv, &dx, &mut out).expect("swiglu");
        let got = s.clone_dtoh(&out).expect("out");
        for r in 0..rows {
            let (gd, gm) = dot_ref(&g, r, &x);
            let (ud, um) = dot_ref(&u, r, &x);
            let want = gd / (1.0 + (-gd).exp()) * ud;
            let bound = 1e-4 * (1.1 * gm * ud.abs() + (gd.abs() + 1.0) * um) + 1e-6;
            let a = f64::from(got[r]);
            assert!(
                a.is_finite() && (a - want).abs() <= bound,
                "swiglu {ty} row {r}: gpu {a} want {want} (bound {bound})"
            );
        }
        assert!(got[rows..].iter().all(|v| v.is_nan()), "swiglu wrote past");
    }
}

/// f16 bits of `v` (round to nearest even, as the kernel's `cvt.rn.f16.f32`).
fn h16(v: f32) -> u16 {
    f16::from_f32(v).to_bits()
}

#[test]
fn rope_kv_rotates_and_stores_the_token() {
    let Some(b) = backend() else { return };
    let s = b.stream();
    let mut rng = StdRng::seed_from_u64(41);
    let shape = AttnShape {
        n_heads: 8,
        n_kv_heads: 2,
        head_dim: 64,
        max_ctx: 40,
    };
    let (nq, nkv) = (shape.n_heads * 64, shape.n_kv_heads * 64);
    for (rope_dim, pos, with_factors) in [(64usize, 0usize, false), (64, 37, true), (32, 9, true)] {
        let qkv = random_vec(&mut rng, nq + 2 * nkv, 2.0);
        let factors: Vec<f32> = (0..rope_dim / 2)
            .map(|_| rng.gen_range(1.0f32..8.0))
            .collect();
        let base = 500000f32;
        let poison = 0x7E00u16;
        let mut kc = s.clone_htod(&vec![poison; shape.cache_len()]).expect("kc");
        let mut vc = s.clone_htod(&vec![poison; shape.cache_len()]).expect("vc");
        let mut d = s.clone_htod(&qkv).expect("qkv");
        let df = s.clone_htod(&factors).expect("f");
        b.rope_kv(
            &mut d,
            &mut kc,
            &mut vc,
            shape,
            rope_dim,
            pos,
            base,
            with_factors.then_some(&df),
        )
        .expect("rope_kv");
        let got = s.clone_dtoh(&d).expect("qkv");
        let (gk, gv) = (s.clone_dtoh(&kc).expect("k"), s.clone_dtoh(&vc).expect("v"));
        // Reference rotation of the q and k heads (f64).
        let mut want = qkv.iter().map(|v| f64::from(*v)).collect::<Vec<_>>();
        for h in 0..shape.n_heads + shape.n_kv_heads {
            for p in 0..rope_dim / 2 {
                let mut f = f64::from(base).powf(-2.0 * p as f64 / rope_dim as f64);
                if with_factors {
                    f /= f64::from(factors[p]);
                }
                let th = pos as f64 * f;
                let i = h * 64 + 2 * p;
                let (a, c) = (want[i], want[i + 1]);
                want[i] = a * th.cos() - c * th.sin();
                want[i + 1] = a * th.sin() + c * th.cos();
            }
        }
        for i in 0..nq + nkv {
            assert!(
                (f64::from(got[i]) - want[i]).abs() < 1e-5,
                "rope_dim {rope_dim} pos {pos} elem {i}: gpu {} want {}",
                got[i],
                want[i]
            );
        }
        assert_eq!(
            &got[nq + nkv..],
            &qkv[nq + nkv..],
            "values must be untouched"
        );
        for kvh in 0..shape.n_kv_heads {
            for p in 0..shape.max_ctx {
                for dd in 0..64 {
                    let at = (kvh * shape.max_ctx + p) * 64 + dd;
                    let (ek, ev) = if p == pos {
                        (
                            h16(got[nq + kvh * 64 + dd]),
                            h16(qkv[nq + nkv + kvh * 64 + dd]),
                        )
                    } else {
                        (poison, poison)
                    };
                    assert_eq!((gk[at], gv[at]), (ek, ev), "head {kvh} pos {p} dim {dd}");
                }
            }
        }
    }
}

#[test]
fn attention_with_fixed_splits_matches_softmax_reference() {
    let Some(b) = backend() else { return };
    let s = b.stream();
    let mut rng = StdRng::seed_from_u64(43);
    let shape = AttnShape {
        n_heads: 8,
        n_kv_heads: 2,
        head_dim: 128,
        max_ctx: 2100,
    };
    let kf = random_vec(&mut rng, shape.cache_len(), 2.0);
    let vf = random_vec(&mut rng, shape.cache_len(), 2.0);
    let kh: Vec<u16> = kf.iter().map(|&x| h16(x)).collect();
    let vh: Vec<u16> = vf.iter().map(|&x| h16(x)).collect();
    let (kc, vc) = (s.clone_htod(&kh).expect("k"), s.clone_htod(&vh).expect("v"));
    let q = random_vec(&mut rng, shape.n_heads * 128, 2.0);
    let dq = s.clone_htod(&q).expect("q");
    let f = |bits: u16| f64::from(f16::from_bits(bits).to_f32());
    // (n_ctx, splits): one split of 9 tiles, several splits of several tiles, many empty splits.
    for (n_ctx, splits) in [(2100usize, 1usize), (2100, 3), (1000, 7), (7, 64), (1, 16)] {
        let mut scratch = nan_buf(s, shape.n_heads * splits * (128 + 2));
        let mut out = nan_buf(s, shape.n_heads * 128);
        b.attention_decode_splits(&dq, &kc, &vc, &mut scratch, &mut out, shape, n_ctx, splits)
            .expect("attention");
        let got = s.clone_dtoh(&out).expect("out");
        for hq in 0..shape.n_heads {
            let kvh = hq / 4;
            let row = |p: usize| (kvh * shape.max_ctx + p) * 128;
            let sc: Vec<f64> = (0..n_ctx)
                .map(|p| {
                    (0..128)
                        .map(|d| f64::from(q[hq * 128 + d]) * f(kh[row(p) + d]))
                        .sum::<f64>()
                        / (128f64).sqrt()
                })
                .collect();
            let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = sc.iter().map(|v| (v - mx).exp()).collect();
            let tot: f64 = w.iter().sum();
            for d in 0..128 {
                let e = (0..n_ctx).map(|p| w[p] * f(vh[row(p) + d])).sum::<f64>() / tot;
                let a = f64::from(got[hq * 128 + d]);
                assert!(
                    (a - e).abs() <= 1e-4 * e.abs().max(1.0),
                    "n_ctx {n_ctx} splits {splits} head {hq} d {d}: gpu {a} ref {e}"
                );
            }
        }
    }
}

#[test]
fn top_k_and_penalty_match_the_cpu_sampler() {
    let Some(b) = backend() else { return };
    let s = b.stream();
    let mut rng = StdRng::seed_from_u64(47);
    for (vocab, k) in [(128256usize, 40usize), (49152, 256), (1000, 5), (300, 256)] {
        let mut logits = random_vec(&mut rng, vocab, 12.0);
        // Ties (the lower id must rank first), NaN (never a candidate).
        logits[vocab / 2] = 30.0;
        logits[vocab / 3] = 30.0;
        logits[7] = f32::NAN;
        let history: Vec<u32> = (0..80).map(|_| rng.gen_range(0..vocab as u32)).collect();
        let config = SamplerConfig {
            temperature: 0.8,
            top_k: k,
            top_p: 0.95,
            min_p: 0.02,
            repeat_penalty: 1.3,
            repeat_last_n: 64,
            seed: 1234,
            ..SamplerConfig::default()
        };
        let recent = &history[history.len() - config.repeat_last_n..];
        let mut d = s.clone_htod(&logits).expect("logits");
        b.repetition_penalty(&mut d, recent, config.repeat_penalty)
            .expect("penalty");
        let cand = b.top_k(&d, k).expect("top_k");
        // CPU reference: the penalty by llama.cpp's rule, then a full sort.
        let mut pen = logits.clone();
        let mut seen = vec![false; vocab];
        for &t in recent {
            seen[t as usize] = true;
        }
        for (l, s) in pen.iter_mut().zip(&seen) {
            if *s {
                *l = if *l > 0.0 {
                    *l / config.repeat_penalty
                } else {
                    *l * config.repeat_penalty
                };
            }
        }
        let mut order: Vec<(u32, f32)> = pen
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.is_nan())
            .map(|(i, l)| (i as u32, *l))
            .collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        order.truncate(k.min(vocab));
        assert_eq!(cand, order, "vocab {vocab} k {k}: GPU top-k differs");
        // The host finish on the candidates draws what the CPU sampler draws on all logits.
        let (host_cfg, gpu_k) = gpu_sampling_plan(&config);
        assert_eq!(gpu_k, k);
        for seed in 0..20u64 {
            let mut c = config.clone();
            c.seed = seed;
            let mut hc = host_cfg.clone();
            hc.seed = seed;
            let want = Sampler::new(c).sample(&logits, &history).expect("cpu");
            let got = finish_sample(&mut Sampler::new(hc), &cand, vocab).expect("gpu");
            assert_eq!(got, want, "vocab {vocab} k {k} seed {seed}");
        }
    }
}
