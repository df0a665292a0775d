//! The resident GPU decode path against the CPU reference backend (plain f32 kernel) on
//! synthetic Llama-shaped GGUFs (feature `cuda`): the Q4_K_M mixes `synth-model` writes
//! (Q4_K, Q6_K, ... at real shapes), so the fast matrix-vector paths of those types run end to
//! end. For each model in `VRAMLESS_SYNTH_MODELS` (paths separated by `:`):
//! - a prompt fed one token at a time through the decode step: logits cosine >= 0.999 against
//!   the CPU backend after the prompt;
//! - greedy continuation (argmax on the GPU) equals the CPU's up to the first CPU top-2 margin
//!   below 0.01 (random weights give near-ties);
//! - the CUDA graph replay gives the same tokens as direct launches;
//! - GPU top-k + host finish draws what the CPU sampler draws on the GPU's own logits.
//!
//! Without a GPU or without models the test skips loudly (fails with `VRAMLESS_REQUIRE_GPU=1`).
#![cfg(feature = "cuda")]

use std::sync::Arc;

mod cuda_common;
use cuda_common::{loud, top2};

use llama_model::cpu::{Kernel, Model, ModelOptions};
use llama_model::cuda::{finish_sample, gpu_sampling_plan, CudaBackend, CudaModel};
use llama_model::sampler::{Sampler, SamplerConfig};

const CTX: usize = 64;
const STEPS: usize = 8;

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

#[test]
fn gpu_decode_matches_cpu_on_synthetic_models() {
    let Ok(list) = std::env::var("VRAMLESS_SYNTH_MODELS") else {
        // The synthetic models are made on the GPU machine (GPU-only, like the test itself).
        test_support::skip_gpu("synthetic-model GPU test: set VRAMLESS_SYNTH_MODELS");
        return;
    };
    let backend = match CudaBackend::new(0) {
        Ok(b) => Arc::new(b),
        Err(e) => {
            test_support::skip_gpu(format!("synthetic-model GPU test: CUDA failed: {e}"));
            return;
        }
    };
    for path in list.split(':').filter(|p| !p.is_empty()) {
        let mut gpu = CudaModel::open_on(backend.clone(), path, CTX).expect("gpu open");
        let mut cpu = Model::open_with(
            path,
            ModelOptions {
                max_context: CTX,
                kernel: Kernel::F32,
            },
        )
        .expect("cpu open");
        let vocab = gpu.config().vocab_size as u32;
        let prompt: Vec<u32> = [1u32, 17, 333, 4242, 999, 12]
            .iter()
            .map(|t| t % vocab)
            .collect();
        // Prompt through the decode step, one token at a time.
        let mut g = Vec::new();
        for &t in &prompt {
            g = gpu.decode(t).expect("gpu decode");
        }
        let c = cpu.prefill(&prompt).expect("cpu prefill");
        let cos = cosine(&g, &c);
        loud(format!("{path}: GPU vs CPU f32 logits cosine {cos:.7}"));
        assert!(cos >= 0.999, "{path}: cosine {cos}");

        // Greedy: CPU argmax on its logits vs GPU argmax on the GPU.
        let (mut cpu_tok, mut margins) = (Vec::new(), Vec::new());
        let mut logits = c;
        for i in 0..STEPS {
            let (t, m) = top2(&logits);
            cpu_tok.push(t);
            margins.push(m);
            if i + 1 < STEPS {
                logits = cpu.decode(t).expect("cpu decode");
            }
        }
        let mut runs = Vec::new();
        for graph in [true, false] {
            gpu.set_cuda_graph(graph);
            gpu.truncate(prompt.len() - 1);
            let mut toks = vec![gpu.decode_argmax(prompt[prompt.len() - 1]).expect("argmax")];
            while toks.len() < STEPS {
                let last = *toks.last().unwrap();
                toks.push(gpu.decode_argmax(last).expect("argmax"));
            }
            runs.push(toks);
        }
        gpu.set_cuda_graph(true);
        loud(format!(
            "{path}: CPU greedy {cpu_tok:?} (margins {margins:?}); GPU graph {:?}, direct {:?}",
            runs[0], runs[1]
        ));
        assert_eq!(runs[0], runs[1], "{path}: graph and direct launches differ");
        for (i, ((c, m), g)) in cpu_tok.iter().zip(&margins).zip(&runs[0]).enumerate() {
            if *m < 0.01 {
                break;
            }
            assert_eq!(g, c, "{path}: greedy step {i}: GPU {g}, CPU {c}");
        }

        // Sampling from GPU candidates vs the CPU sampler on the GPU's logits.
        let config = SamplerConfig {
            temperature: 0.7,
            top_k: 50,
            top_p: 0.9,
            min_p: 0.0,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            seed: 5,
        };
        let (host_cfg, k) = gpu_sampling_plan(&config);
        let (mut cs, mut gs) = (Sampler::new(config.clone()), Sampler::new(host_cfg));
        let mut history = prompt.clone();
        gpu.truncate(prompt.len() - 1);
        let mut token = history.pop().expect("prompt");
        for step in 0..6 {
            history.push(token);
            let n = gpu.n_past();
            let l = gpu.decode(token).expect("decode");
            gpu.truncate(n);
            let recent = &history[history.len().saturating_sub(64)..];
            let cand = gpu
                .decode_top_k(token, k, config.repeat_penalty, recent)
                .expect("top-k");
            let want = cs.sample(&l, &history).expect("cpu sample");
            let got = finish_sample(&mut gs, &cand, l.len()).expect("gpu sample");
            assert_eq!(got, want, "{path}: sampled step {step}");
            token = got;
        }
    }
}
