//! The batched (tensor-core) path of the CUDA backend (feature `cuda`):
//! - the GEMM `Y = X . W^T` for every weight type against an f64 CPU reference on random ggml
//!   blocks (dequantized by `gguf::dequantize`, itself checked against llama.cpp fixtures),
//!   for 70B/8B shapes (4096, 8192, 14336, 28672) and odd token counts (1, 7, 33, 512);
//! - batched prefill end to end against the token-by-token GPU path and the CPU backend on the
//!   SmolLM2 fixture prompts (logits cosine, argmax, greedy continuation, chunked feeding, and
//!   the all-position argmax used to verify drafted tokens).
//!
//! Models: the real SmolLM2 GGUF (`VRAMLESS_MODEL`, else `scripts/fetch-model.sh`) and any
//! further GGUFs listed in `VRAMLESS_BATCH_MODELS` (':'-separated, e.g. synthetic models written
//! by `synth-model` on the GPU machine). Without a GPU the tests skip loudly, unless
//! `VRAMLESS_REQUIRE_GPU=1`, where they fail.
#![cfg(feature = "cuda")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use cudarc::driver::CudaSlice;
use gguf::GgmlType;
use half::f16;
use llama_model::cpu::{Kernel, Model, ModelOptions};
use llama_model::cuda::{BatchKernels, CudaBackend, CudaModel, DeviceWeight, SUPPORTED_TYPES};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

mod cuda_common;
mod smollm2_fixture;
use cuda_common::{loud, random_blocks, top2};
use smollm2_fixture::{compare, fixture};

fn require_gpu() -> bool {
    std::env::var("VRAMLESS_REQUIRE_GPU").as_deref() == Ok("1")
}

fn backend() -> Option<Arc<CudaBackend>> {
    static B: OnceLock<Option<Arc<CudaBackend>>> = OnceLock::new();
    B.get_or_init(|| match CudaBackend::new(0) {
        Ok(b) => {
            eprintln!("CUDA backend on {}", b.arch());
            Some(Arc::new(b))
        }
        Err(e) => {
            test_support::skip_gpu(format!("GPU batch tests: CUDA failed: {e}"));
            None
        }
    })
    .clone()
}

struct GemmCase {
    rows: usize,
    cols: usize,
    n: usize,
    /// Byte offset of the weight in its device buffer (odd: unaligned block reads).
    offset: usize,
    /// Types to run (empty: all ten).
    types: &'static [GgmlType],
    /// Tokens whose whole output row is checked against the reference (empty: all).
    sample: bool,
}

const ALL: &[GgmlType] = &[];
const BIG: &[GgmlType] = &[GgmlType::Q4_K, GgmlType::Q6_K];

/// Worst-case bound of |gpu - exact| for one output: X and W are rounded to f16 (relative
/// 2^-11 each, so 2^-10 on each product, with 10% slack for the f32 dequantization order), the
/// f32 accumulation over `cols` terms adds at most cols * 2^-24 of sum|w*x|, and values in
/// f16's subnormal range carry an absolute error up to 2^-25 (times the other factor).
fn bound(cols: usize, mag: f64, max_x: f64, max_w: f64) -> f64 {
    let rel = 1.1 * 2f64.powi(-10) + cols as f64 * 2f64.powi(-24);
    rel * mag + cols as f64 * 2f64.powi(-25) * (max_x + max_w)
}

#[test]
fn gemm_every_type_matches_f64_reference() {
    let Some(b) = backend() else { return };
    let k = BatchKernels::get(&b).expect("batch kernels");
    let s = b.stream().clone();
    let mut rng = StdRng::seed_from_u64(0xba7c_4e11);
    let case = |rows, cols, n, offset, types, sample| GemmCase {
        rows,
        cols,
        n,
        offset,
        types,
        sample,
    };
    let cases = [
        case(64, 256, 1, 0, ALL, false),
        case(37, 4096, 7, 3, ALL, false),
        case(130, 512, 33, 0, ALL, false),
        case(200, 1024, 100, 1, ALL, false),
        case(24, 8192, 512, 0, ALL, false),
        case(9, 28672, 7, 2, ALL, false),
        case(4096, 4096, 512, 0, BIG, true),
        case(14336, 4096, 33, 0, BIG, true),
        case(4096, 14336, 512, 0, BIG, true),
        case(28672, 8192, 7, 0, &[GgmlType::Q4_K], true),
        case(8192, 28672, 1, 0, &[GgmlType::Q6_K], true),
    ];
    let mut report = Vec::new();
    for c in &cases {
        let types: Vec<GgmlType> = if c.types.is_empty() {
            SUPPORTED_TYPES.to_vec()
        } else {
            c.types.to_vec()
        };
        let x: Vec<f32> = (0..c.n * c.cols)
            .map(|_| rng.gen_range(-1.0f32..1.0))
            .collect();
        let x16: Vec<u16> = x.iter().map(|v| f16::from_f32(*v).to_bits()).collect();
        let dx = s.clone_htod(&x16).expect("upload x");
        let max_x = x.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
        for ty in types {
            let bytes = random_blocks(&mut rng, ty, c.rows * c.cols);
            let mut w = vec![0f32; c.rows * c.cols];
            gguf::dequantize(ty, &bytes, &mut w).expect("dequantize");
            assert!(w.iter().all(|v| v.is_finite()), "{ty}: non-finite weights");
            let max_w = w.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
            let mut padded = vec![0x5Au8; c.offset];
            padded.extend_from_slice(&bytes);
            let dbytes = s.clone_htod(&padded).expect("upload w");
            let wv = DeviceWeight::new(dbytes.slice(c.offset..), ty, c.cols, c.rows)
                .expect("weight view");
            // Poisoned output, 7 extra elements: nothing may be written past n rows.
            let out_len = c.n * c.rows + 7;
            let mut dy: CudaSlice<f32> = s.clone_htod(&vec![f32::NAN; out_len]).unwrap();
            k.gemm(&b, &wv, &dx, c.n, &mut dy, false).expect("gemm");
            let y = s.clone_dtoh(&dy).expect("download");
            assert!(
                y[c.n * c.rows..].iter().all(|v| v.is_nan()),
                "{ty} {}x{} n={}: wrote past the output",
                c.rows,
                c.cols,
                c.n
            );
            let toks: Vec<usize> = if c.sample {
                vec![0, c.n / 2, c.n - 1]
            } else {
                (0..c.n).collect()
            };
            let bad = y[..c.n * c.rows].iter().filter(|v| !v.is_finite()).count();
            assert_eq!(
                bad, 0,
                "{ty} {}x{} n={}: non-finite outputs",
                c.rows, c.cols, c.n
            );
            let worst = toks
                .par_iter()
                .map(|&t| {
                    let xr = &x[t * c.cols..(t + 1) * c.cols];
                    let mut worst = 0f64;
                    for r in 0..c.rows {
                        let wr = &w[r * c.cols..(r + 1) * c.cols];
                        let (mut dot, mut mag) = (0f64, 0f64);
                        for (a, b) in wr.iter().zip(xr) {
                            let p = f64::from(*a) * f64::from(*b);
                            dot += p;
                            mag += p.abs();
                        }
                        let got = f64::from(y[t * c.rows + r]);
                        let err = (got - dot).abs();
                        let lim = bound(c.cols, mag, max_x, max_w);
                        assert!(
                            err <= lim,
                            "{ty} {}x{} n={} token {t} row {r}: gpu {got} f64 {dot} error {err:e} > bound {lim:e}",
                            c.rows,
                            c.cols,
                            c.n
                        );
                        worst = worst.max(err / lim);
                    }
                    worst
                })
                .reduce(|| 0f64, f64::max);
            report.push(format!(
                "{ty} {}x{} n={} offset {}: worst error {:.3} of the bound",
                c.rows, c.cols, c.n, c.offset, worst
            ));

            // Accumulation (the residual add): y = 0.5 + W x, against the f64 reference (with
            // split K the partial sums arrive in any order, so not bit-equal to `y`).
            if c.rows * c.cols <= 4096 * 1024 && c.n <= 100 {
                let mut da: CudaSlice<f32> = s.clone_htod(&vec![0.5f32; c.n * c.rows]).unwrap();
                k.gemm(&b, &wv, &dx, c.n, &mut da, true).expect("gemm acc");
                let ya = s.clone_dtoh(&da).unwrap();
                for t in 0..c.n {
                    let xr = &x[t * c.cols..(t + 1) * c.cols];
                    for r in 0..c.rows {
                        let wr = &w[r * c.cols..(r + 1) * c.cols];
                        let (mut dot, mut mag) = (0.5f64, 0.5f64);
                        for (a, b) in wr.iter().zip(xr) {
                            let p = f64::from(*a) * f64::from(*b);
                            dot += p;
                            mag += p.abs();
                        }
                        let got = f64::from(ya[t * c.rows + r]);
                        let lim = bound(c.cols + 1, mag, max_x, max_w);
                        assert!(
                            (got - dot).abs() <= lim,
                            "{ty}: accumulate token {t} row {r}: gpu {got} f64 {dot}"
                        );
                    }
                }
            }
        }
    }
    for line in report {
        eprintln!("gemm {line}");
    }
    // Shapes the kernels cannot take are errors, not launches.
    let bytes = random_blocks(&mut rng, GgmlType::F32, 8 * 48);
    let d = s.clone_htod(&bytes).unwrap();
    let wv = DeviceWeight::new(d.slice(..), GgmlType::F32, 48, 8).unwrap();
    let dx = s.clone_htod(&vec![0u16; 48 * 2]).unwrap();
    let mut dy = s.clone_htod(&vec![0f32; 16]).unwrap();
    assert!(
        k.gemm(&b, &wv, &dx, 2, &mut dy, false).is_err(),
        "48 columns"
    );
}

// ---------------------------------------------------------------------------------------------
// End to end.

const CTX: usize = 1024;
/// Cosine required between batched and token-by-token logits (and the CPU's).
const MIN_COSINE: f64 = 0.9999;
/// Top-2 gaps below this are near-ties: the argmax may differ between f16 and f32 activations.
const TIE: f32 = 0.02;
const GREEDY: usize = 8;

fn smollm2_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("VRAMLESS_MODEL") {
        return Some(PathBuf::from(p));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-model.sh");
    let out = Command::new("bash").arg(&script).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    p.exists().then_some(p)
}

fn models() -> Vec<PathBuf> {
    let mut v = Vec::new();
    match smollm2_path() {
        Some(p) if p.exists() => v.push(p),
        _ => {
            test_support::skip("the real SmolLM2 GGUF is unavailable: its batch tests did not run")
        }
    }
    if let Ok(list) = std::env::var("VRAMLESS_BATCH_MODELS") {
        v.extend(list.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
    }
    v
}

/// The fixture prompts (ids folded into the model's vocabulary) and a long prompt over two
/// batches (more than `PREFILL_CHUNK` tokens).
fn prompts(vocab: u32) -> Vec<(String, Vec<u32>)> {
    let mut v: Vec<(String, Vec<u32>)> = ["capital", "story", "chat"]
        .iter()
        .map(|n| {
            let toks = fixture(n).prompt_tokens.iter().map(|t| t % vocab).collect();
            (n.to_string(), toks)
        })
        .collect();
    let mut long = Vec::new();
    while long.len() < 600 {
        for (_, p) in &v {
            long.extend_from_slice(p);
        }
    }
    long.truncate(600);
    v.push(("long600".into(), long));
    v
}

#[test]
fn batched_prefill_matches_token_by_token_and_cpu() {
    let Some(b) = backend() else { return };
    let list = models();
    if list.is_empty() && require_gpu() {
        panic!("VRAMLESS_REQUIRE_GPU=1 but no model to test (set VRAMLESS_MODEL)");
    }
    for path in list {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        loud(format!("== model {} ({size} bytes)", path.display()));
        let mut gpu = CudaModel::open_on(b.clone(), &path, CTX).expect("open on the GPU");
        // The CPU f32 reference for models that it runs quickly.
        let mut cpu = (size < 1 << 30).then(|| {
            Model::open_with(
                &path,
                ModelOptions {
                    max_context: CTX,
                    kernel: Kernel::F32,
                },
            )
            .expect("open on the CPU")
        });
        let vocab = gpu.config().vocab_size as u32;
        for (name, prompt) in prompts(vocab) {
            // Token by token (the decode path), recording the argmax after every position.
            gpu.reset();
            let mut per_pos = Vec::with_capacity(prompt.len());
            let mut tbt = Vec::new();
            for &t in &prompt {
                tbt = gpu.decode(t).expect("decode");
                per_pos.push(top2(&tbt));
            }
            let mut tbt_greedy = Vec::new();
            let mut logits = tbt.clone();
            for _ in 0..GREEDY {
                let (t, m) = top2(&logits);
                tbt_greedy.push((t, m));
                logits = gpu.decode(t).expect("decode");
            }

            // Batched.
            gpu.reset();
            let batched = gpu.prefill_batched(&prompt).expect("batched prefill");
            let (cos, maxd) = compare(&batched, &tbt);
            let (ta, tm) = top2(&tbt);
            let (ba, _) = top2(&batched);
            loud(format!(
                "{name}: {} tokens: batched vs token-by-token cosine {cos:.7}, max abs diff \
                 {maxd:.4}, argmax {ba} vs {ta} (gap {tm:.3})",
                prompt.len()
            ));
            assert!(cos >= MIN_COSINE, "{name}: cosine {cos} < {MIN_COSINE}");
            assert!(
                ba == ta || tm < TIE,
                "{name}: argmax {ba} vs {ta}, gap {tm}"
            );
            let mut greedy = vec![gpu.decode_argmax(ba).expect("decode")];
            while greedy.len() < GREEDY - 1 {
                let last = *greedy.last().unwrap();
                greedy.push(gpu.decode_argmax(last).expect("decode"));
            }
            let mut same = 1; // the first greedy token is the argmax checked above
            for (i, g) in greedy.iter().enumerate() {
                let (want, gap) = tbt_greedy[i + 1];
                if *g != want {
                    assert!(
                        tbt_greedy[..=i + 1].iter().any(|(_, m)| *m < TIE) || gap < TIE,
                        "{name}: greedy step {} after batched prefill {g}, token by token {want}",
                        i + 1
                    );
                    break;
                }
                same += 1;
            }
            loud(format!(
                "{name}: {same}/{GREEDY} greedy tokens equal after batched vs token-by-token prefill"
            ));

            // Against the CPU backend (f32 kernel).
            if let Some(cpu) = cpu.as_mut() {
                cpu.reset();
                let c = cpu.prefill(&prompt).expect("cpu prefill");
                let (cos, maxd) = compare(&batched, &c);
                let (ca, cm) = top2(&c);
                loud(format!(
                    "{name}: batched vs CPU f32 cosine {cos:.7}, max abs diff {maxd:.4}, argmax \
                     {ba} vs {ca} (gap {cm:.3})"
                ));
                assert!(cos >= MIN_COSINE, "{name}: vs CPU cosine {cos}");
                assert!(ba == ca || cm < TIE, "{name}: argmax vs CPU {ba} vs {ca}");
            }

            // Fed in two batches: the second attends to the first's cache entries.
            if prompt.len() >= 4 {
                let cut = prompt.len() / 2 + 1;
                gpu.reset();
                gpu.prefill_batched(&prompt[..cut]).expect("first part");
                let two = gpu.prefill_batched(&prompt[cut..]).expect("second part");
                let (cos, _) = compare(&two, &batched);
                loud(format!(
                    "{name}: split at {cut} vs one batch: cosine {cos:.8}"
                ));
                // Two batches pick other GEMM tiles and split-K factors than one batch, so
                // the f32 sums run in another order: the same tolerance as batched vs token
                // by token applies (measured 0.999998 on the real SmolLM2 Q4_1).
                assert!(
                    cos >= MIN_COSINE,
                    "{name}: split feeding changed the logits: {cos}"
                );
            }

            // Verification of drafted tokens: the argmax after each of the last k positions.
            let k = prompt.len().min(9);
            let start = prompt.len() - k;
            gpu.reset();
            if start > 0 {
                gpu.prefill_batched(&prompt[..start]).expect("prefix");
            }
            let ids = gpu.verify_argmax(&prompt[start..]).expect("verify");
            assert_eq!(gpu.n_past(), prompt.len());
            for (i, id) in ids.iter().enumerate() {
                let (want, gap) = per_pos[start + i];
                assert!(
                    *id == want || gap < TIE,
                    "{name}: verify position {}: {id} vs token-by-token {want} (gap {gap})",
                    start + i
                );
            }
            loud(format!(
                "{name}: verify of {k} positions: {} of {k} argmax equal the token-by-token ones",
                ids.iter()
                    .enumerate()
                    .filter(|(i, id)| **id == per_pos[start + i].0)
                    .count()
            ));
        }

        // Bad input leaves the cache as it was.
        gpu.reset();
        gpu.prefill_batched(&[1, 2, 3]).unwrap();
        assert!(gpu.prefill_batched(&[1, vocab]).is_err());
        assert_eq!(gpu.n_past(), 3);
        let room = gpu.max_context() - 3;
        assert!(gpu.prefill_batched(&vec![1u32; room + 1]).is_err());
        assert_eq!(gpu.n_past(), 3);
    }
}
