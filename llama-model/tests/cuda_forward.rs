//! The resident GPU decode path end to end on the real SmolLM2-135M-Instruct Q4_1 GGUF
//! (feature `cuda`), against the CPU reference backend (plain f32 kernel, [`Kernel::F32`]) on
//! the same tokens, and against llama.cpp's fixtures (`tests/fixtures/smollm2/`):
//! - logits after each fixture prompt: cosine >= 0.999 against the CPU backend;
//! - 16 greedy steps (argmax on the GPU, only the token id downloaded) equal the CPU's;
//! - greedy steps equal llama.cpp's up to its first near-tie.
//! - the decode path with 8-bit activations (`q8_decode_path_against_llama_cpp_and_the_cpu`):
//!   logits cosine >= 0.99 against llama.cpp and the CPU 8-bit kernel on every prompt (printed
//!   next to the f32 path's), greedy tokens equal to the CPU 8-bit kernel up to the first
//!   near-tie.
//!
//! Fixtures are read from `VRAMLESS_SMOLLM2_FIXTURES` when set (a binary run on another machine).
//! Without a GPU (or CUDA driver / NVRTC) or without the model the tests skip loudly, unless
//! `VRAMLESS_REQUIRE_GPU=1`, where a missing GPU or model fails them.
#![cfg(feature = "cuda")]

use std::sync::Arc;

mod cuda_common;
mod smollm2_fixture;
use cuda_common::top2;
use smollm2_fixture::{compare, fixture};

use llama_model::cpu::{Kernel, Model, ModelOptions};
use llama_model::cuda::{CudaBackend, CudaError, CudaModel};

const PROMPTS: [&str; 3] = ["capital", "story", "chat"];
const MIN_COSINE: f64 = 0.999;
const GREEDY_STEPS: usize = 16;
/// llama.cpp's greedy steps are compared up to the first whose reference top-2 margin is below
/// this. Both our backends compute the products in f32 while llama.cpp rounds activations to
/// 8 bits; the CPU f32 kernel's own test (`forward_smollm2.rs`) measured llama.cpp-vs-f32 logit
/// differences up to ~0.75 here and uses 0.5, so the same threshold applies to the GPU. How many
/// steps also match down to the 0.1 is printed.
const MIN_MARGIN: f32 = 0.5;
const CTX: usize = 512;

fn loud(msg: String) {
    test_support::loud(msg);
}

/// The GPU model and the CPU reference model, or None (with a loud message) to skip.
fn open_both() -> Option<(CudaModel, Model)> {
    let backend = match CudaBackend::with_options(0, &cuda_common::options()) {
        Ok(b) => Arc::new(b),
        Err(e) => {
            test_support::skip_gpu(format!("GPU forward tests: CUDA failed: {e}"));
            return None;
        }
    };
    // With a GPU, a missing model is a missing resource (a failure under CI or
    // VRAMLESS_REQUIRE_GPU=1).
    let path = match test_support::default_model() {
        Ok(p) => p,
        Err(why) if test_support::gpu_required() => panic!("VRAMLESS_REQUIRE_GPU=1: {why}"),
        Err(why) => {
            test_support::skip(why);
            return None;
        }
    };
    let gpu = CudaModel::open_on(backend, path, CTX).expect("open the model on the GPU");
    let cpu = Model::open_with(
        path,
        ModelOptions {
            max_context: CTX,
            kernel: Kernel::F32,
        },
    )
    .expect("open the model on the CPU");
    Some((gpu, cpu))
}

#[test]
fn gpu_logits_and_greedy_tokens_match_cpu_and_llama_cpp() {
    let Some((mut gpu, mut cpu)) = open_both() else {
        return;
    };
    for name in PROMPTS {
        let f = fixture(name);
        // Logits after the prompt, GPU vs CPU (f32 kernel) vs llama.cpp.
        cpu.reset();
        gpu.reset();
        let cpu_logits = cpu.prefill(&f.prompt_tokens).expect("cpu prefill");
        let gpu_logits = gpu.prefill(&f.prompt_tokens).expect("gpu prefill");
        let (cos, maxd) = compare(&gpu_logits, &cpu_logits);
        let (cos_ref, maxd_ref) = compare(&gpu_logits, &f.logits);
        loud(format!(
            "{name}: {} prompt tokens; GPU vs CPU f32: cosine {cos:.7}, max abs diff {maxd:.4}; \
             GPU vs llama.cpp: cosine {cos_ref:.6}, max abs diff {maxd_ref:.4}",
            f.prompt_tokens.len()
        ));
        assert!(
            cos >= MIN_COSINE,
            "{name}: GPU vs CPU cosine {cos} < {MIN_COSINE}"
        );

        // CPU greedy continuation (host argmax over the CPU's logits).
        let mut cpu_tokens = Vec::new();
        let mut margins = Vec::new();
        let mut logits = cpu_logits;
        for i in 0..GREEDY_STEPS {
            let (t, m) = top2(&logits);
            cpu_tokens.push(t);
            margins.push(m);
            if i + 1 < GREEDY_STEPS {
                logits = cpu.decode(t).expect("cpu decode");
            }
        }
        // GPU greedy continuation: argmax on the GPU, only token ids come back.
        gpu.reset();
        let mut gpu_tokens = vec![gpu.prefill_argmax(&f.prompt_tokens).expect("gpu prefill")];
        while gpu_tokens.len() < GREEDY_STEPS {
            let last = *gpu_tokens.last().unwrap();
            gpu_tokens.push(gpu.decode_argmax(last).expect("gpu decode"));
        }
        loud(format!("{name}: CPU greedy {cpu_tokens:?}"));
        loud(format!("{name}: GPU greedy {gpu_tokens:?}"));
        loud(format!(
            "{name}: CPU top-2 margins {:?}",
            margins
                .iter()
                .map(|m| (m * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>()
        ));
        assert_eq!(
            gpu_tokens, cpu_tokens,
            "{name}: GPU greedy tokens differ from the CPU's"
        );

        // Against llama.cpp, up to its first near-tie.
        let mut checked = 0;
        for (i, (want, margin)) in f.steps.iter().enumerate() {
            let Some(&got) = gpu_tokens.get(i) else { break };
            if *margin < MIN_MARGIN {
                break;
            }
            assert_eq!(got, *want, "{name}: step {i}: GPU {got}, llama.cpp {want}");
            checked += 1;
        }
        let to_01 = f
            .steps
            .iter()
            .zip(&gpu_tokens)
            .take_while(|((want, margin), got)| *margin >= 0.1 && *got == want)
            .count();
        loud(format!(
            "{name}: {checked} greedy steps equal llama.cpp's up to its first margin < {MIN_MARGIN}; \
             {to_01} equal before the first margin < 0.1 or difference (informational)"
        ));
        assert!(checked > 0, "{name}: no llama.cpp step checked");
    }
}

#[test]
fn gpu_rollback_and_bad_input() {
    let Some((mut gpu, _cpu)) = open_both() else {
        return;
    };
    let f = fixture("capital");
    // Reference: the prompt in a fresh sequence.
    let want = gpu.prefill(&f.prompt_tokens).unwrap();
    // An unrelated sequence, rolled back to 2 positions, then the rest of the prompt.
    gpu.reset();
    gpu.prefill(&fixture("story").prompt_tokens).unwrap();
    gpu.truncate(0);
    gpu.prefill(&f.prompt_tokens[..2]).unwrap();
    gpu.prefill(&fixture("chat").prompt_tokens[..3]).unwrap();
    gpu.truncate(2);
    assert_eq!(gpu.n_past(), 2);
    let got = gpu.prefill(&f.prompt_tokens[2..]).unwrap();
    let (cos, maxd) = compare(&got, &want);
    loud(format!(
        "capital after rollback vs fresh: cosine {cos:.7}, max abs diff {maxd:.5}"
    ));
    assert!(cos >= 0.99999, "rollback changed the logits: cosine {cos}");

    let n = gpu.n_past();
    let vocab = gpu.config().vocab_size as u32;
    assert!(matches!(
        gpu.prefill(&[1, vocab]),
        Err(CudaError::TokenOutOfRange { .. })
    ));
    assert_eq!(
        gpu.n_past(),
        n,
        "a failed prefill leaves the cache as it was"
    );
    assert!(gpu.prefill(&[]).is_err());
    let room = gpu.max_context() - n;
    assert!(matches!(
        gpu.prefill(&vec![1u32; room + 1]),
        Err(CudaError::ContextFull { .. })
    ));
    assert_eq!(gpu.n_past(), n);
}

#[test]
fn cuda_graph_replay_equals_direct_launches() {
    let Some((mut gpu, _cpu)) = open_both() else {
        return;
    };
    let f = fixture("story");
    let mut runs = Vec::new();
    for graph in [false, true, false] {
        gpu.set_cuda_graph(graph);
        gpu.reset();
        // The prompt goes through the decode step one token at a time: that is the path the
        // graph replays (prompts of several tokens take the batched GEMM path, whose split-K
        // sums are not ordered the same way from run to run).
        let mut logits = Vec::new();
        for &t in &f.prompt_tokens {
            logits = gpu.decode(t).expect("decode a prompt token");
        }
        let mut tokens = vec![gpu.decode_argmax(f.steps[0].0).expect("decode")];
        while tokens.len() < 24 {
            let last = *tokens.last().unwrap();
            tokens.push(gpu.decode_argmax(last).expect("decode"));
        }
        loud(format!("graph {graph}: {tokens:?}"));
        runs.push((logits, tokens));
    }
    assert_eq!(
        runs[0].1, runs[1].1,
        "greedy tokens with and without the CUDA graph differ"
    );
    assert_eq!(
        runs[0].0, runs[1].0,
        "prompt logits with and without the CUDA graph differ (same kernels, same order)"
    );
    assert_eq!(runs[0], runs[2], "direct launches are not repeatable");
}

#[test]
fn gpu_top_k_sampling_equals_the_cpu_sampler_on_gpu_logits() {
    use llama_model::cuda::{finish_sample, gpu_sampling_plan};
    use llama_model::sampler::{Sampler, SamplerConfig};
    let Some((mut gpu, _cpu)) = open_both() else {
        return;
    };
    let f = fixture("chat");
    let config = SamplerConfig {
        temperature: 0.9,
        top_k: 40,
        top_p: 0.9,
        min_p: 0.05,
        repeat_penalty: 1.2,
        repeat_last_n: 64,
        seed: 99,
        ..SamplerConfig::default()
    };
    let (host_cfg, k) = gpu_sampling_plan(&config);
    let mut cpu_sampler = Sampler::new(config.clone());
    let mut gpu_sampler = Sampler::new(host_cfg);
    let mut history = f.prompt_tokens.clone();
    let last = history.pop().expect("prompt");
    gpu.reset();
    gpu.prefill(&history).expect("prefill");
    let mut token = last;
    for step in 0..12 {
        history.push(token);
        let recent = &history[history.len().saturating_sub(config.repeat_last_n)..];
        // The same position twice: full logits for the CPU sampler, then GPU candidates.
        let n = gpu.n_past();
        let logits = gpu.decode(token).expect("decode");
        gpu.truncate(n);
        let cand = gpu
            .decode_top_k(token, k, config.repeat_penalty, recent)
            .expect("top-k");
        let want = cpu_sampler.sample(&logits, &history).expect("cpu sample");
        let got = finish_sample(&mut gpu_sampler, &cand, logits.len()).expect("gpu sample");
        assert_eq!(got, want, "step {step}: GPU-candidate sample differs");
        token = got;
    }
}

/// The resident model on a backend with the 8-bit-activation matrix-vector path on or off.
fn open_gpu(q8: bool) -> Option<CudaModel> {
    let mut o = cuda_common::options();
    o.matvec_q8 = q8;
    let backend = match CudaBackend::with_options(0, &o) {
        Ok(b) => Arc::new(b),
        Err(e) => {
            test_support::skip_gpu(format!("GPU forward tests: CUDA failed: {e}"));
            return None;
        }
    };
    let path = match test_support::default_model() {
        Ok(p) => p,
        Err(why) if test_support::gpu_required() => panic!("VRAMLESS_REQUIRE_GPU=1: {why}"),
        Err(why) => {
            test_support::skip(why);
            return None;
        }
    };
    Some(CudaModel::open_on(backend, path, CTX).expect("open the model on the GPU"))
}

/// Bound on the logits cosine of the 8-bit decode path against llama.cpp's fixtures and against
/// the CPU's llama.cpp-exact 8-bit kernel, on every prompt. The GPU quantizes every activation
/// as the CPU backend does, which is llama.cpp bit for bit (quants, f16 scales and q8_1 sum
/// terms: `cuda_matvec_q8.rs`), and its block products are llama.cpp's; but its inputs to the
/// quantizer differ from llama.cpp's in the last bits (other f32 summation orders in the norms,
/// attention and products), and on these prompts the 8-bit roundings are chaotic in those bits:
/// the CPU's own quantizer, fed its inputs times `1 + 1e-7 r` (r uniform in [-1, 1], 12 seeds),
/// lands at cosine 0.9944 to 0.9995 against llama.cpp on `capital` (docs/PERF.md,
/// 2026-12-04). The GPU's `capital` measured 0.9922 (f32 path 0.9986).
const MIN_COSINE_Q8: f64 = 0.99;

/// The decode path (every product a matrix-vector product) with 8-bit activations
/// ([`llama_model::cuda::CudaOptions::matvec_q8`], llama.cpp's quantization) against the same
/// path in f32, against llama.cpp's fixtures and against the CPU backend: each prompt fed one
/// token at a time, logits after its last token: cosine >= [`MIN_COSINE_Q8`] against llama.cpp
/// and against the CPU's llama.cpp-exact 8-bit kernel ([`Kernel::Q8`]); greedy tokens equal to
/// the CPU 8-bit kernel's up to its first near-tie (a margin below [`MIN_MARGIN`] or below twice
/// the largest logit difference after the prompt). Every prompt's cosines (both GPU paths,
/// and whether q8 is closer to llama.cpp than f32: issue 18's condition for quantizing by
/// default) are printed before the checks fail.
#[test]
fn q8_decode_path_against_llama_cpp_and_the_cpu() {
    let (Some(mut q8), Some(mut f32m)) = (open_gpu(true), open_gpu(false)) else {
        return;
    };
    let path = test_support::default_model().expect("model");
    let open_cpu = |kernel| {
        Model::open_with(
            path,
            ModelOptions {
                max_context: CTX,
                kernel,
            },
        )
        .expect("open the model on the CPU")
    };
    let (mut cpu_f32, mut cpu_q8) = (open_cpu(Kernel::F32), open_cpu(Kernel::Q8));
    let mut failures = Vec::new();
    for name in PROMPTS {
        let f = fixture(name);
        let feed = |m: &mut CudaModel| {
            m.reset();
            let mut l = Vec::new();
            for &t in &f.prompt_tokens {
                l = m.decode(t).expect("decode a prompt token");
            }
            l
        };
        let (lq, lf) = (feed(&mut q8), feed(&mut f32m));
        cpu_f32.reset();
        let lc = cpu_f32.prefill(&f.prompt_tokens).expect("cpu prefill");
        cpu_q8.reset();
        let mut lcq = cpu_q8.prefill(&f.prompt_tokens).expect("cpu prefill");
        let (cq, _) = compare(&lq, &f.logits);
        let (cf, _) = compare(&lf, &f.logits);
        let (ccq, _) = compare(&lcq, &f.logits);
        let (ccf, _) = compare(&lc, &f.logits);
        let (vs_cpu, maxd) = compare(&lq, &lc);
        let (vs_cpu_q8, maxd_q8) = compare(&lq, &lcq);
        loud(format!(
            "{name}: decode path vs llama.cpp: q8 {cq:.7}, f32 {cf:.7} (CPU q8 kernel {ccq:.7}, \
             CPU f32 kernel {ccf:.7}); q8 vs CPU f32 {vs_cpu:.7} (max abs diff {maxd:.4}), \
             q8 vs CPU q8 {vs_cpu_q8:.7}; q8 {} llama.cpp than f32",
            if cq >= cf {
                "closer to"
            } else {
                "further from"
            }
        ));
        if cq < MIN_COSINE_Q8 || vs_cpu_q8 < MIN_COSINE_Q8 {
            failures.push(format!(
                "{name}: q8 decode cosine vs llama.cpp {cq}, vs CPU q8 {vs_cpu_q8} (< {MIN_COSINE_Q8})"
            ));
        }
        // Greedy: GPU q8 (argmax on the GPU) vs the CPU q8 kernel, up to its first near-tie:
        // a margin below MIN_MARGIN or below twice the logits' largest difference after the
        // prompt (where a token may flip).
        let near = MIN_MARGIN.max(2.0 * maxd_q8);
        let mut tok = top2(&lq).0;
        let mut equal = 0;
        for i in 0..GREEDY_STEPS {
            let (want, margin) = top2(&lcq);
            if margin < near {
                break;
            }
            if tok != want {
                failures.push(format!(
                    "{name}: greedy step {i}: GPU q8 {tok}, CPU q8 {want}"
                ));
                break;
            }
            equal += 1;
            if i + 1 < GREEDY_STEPS {
                lcq = cpu_q8.decode(want).expect("cpu decode");
                tok = q8.decode_argmax(want).expect("gpu decode");
            }
        }
        loud(format!(
            "{name}: {equal} greedy steps GPU q8 == CPU q8 (up to a margin < {near:.3})"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("; "));
}
