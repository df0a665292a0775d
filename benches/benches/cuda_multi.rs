//! Speed report of the CUDA multi-sequence step (feature `cuda`; report only, no
//! assertions): aggregate decode tok/s of B sequences per step (B = 1..64, each sequence
//! holding `VRAMLESS_BENCH_CTX` positions, default 512), against the single-sequence
//! `CudaModel` decode (CUDA graph) measured in the same run; weights resident.
//!
//! `VRAMLESS_BENCH_MODEL` names the GGUF (e.g. a synthetic Llama-3.1-8B Q4_K_M written by
//! `synth-model`); `VRAMLESS_BENCH_JSON`, when set, receives the figures as one JSON object.

use std::time::Instant;

use llama_model::cuda::{forward_layer_multi, CudaModel, CudaOptions, GpuMultiState};
use llama_model::paged::{KvPool, KvPoolOptions, StepPart};
use vramless_benches::cuda_report::backend_or_exit;

fn step(m: &CudaModel, st: &mut GpuMultiState, parts: &[StepPart]) -> Vec<u32> {
    st.begin_step(&m.token_embd_weight().unwrap(), parts)
        .unwrap();
    for l in 0..m.config().n_layers {
        forward_layer_multi(l, &m.layer_weights(l).unwrap(), st).unwrap();
    }
    st.end_step().unwrap();
    let (norm, head) = m.head_weights().unwrap();
    st.argmax(&norm, &head)
        .unwrap()
        .into_iter()
        .map(|(_, t)| t)
        .collect()
}

fn main() {
    let Ok(path) = std::env::var("VRAMLESS_BENCH_MODEL") else {
        eprintln!("!!! nothing measured: set VRAMLESS_BENCH_MODEL to a GGUF (e.g. written by synth-model)");
        std::process::exit(2);
    };
    let ctx: usize = std::env::var("VRAMLESS_BENCH_CTX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let opts = CudaOptions::from_vars(|k| std::env::var(k).ok()).expect("CUDA options");
    let b = backend_or_exit(&opts);
    let mut model = CudaModel::open_on(b.clone(), &path, ctx + 64).expect("open");
    let c = model.config().clone();
    let vocab = c.vocab_size as u32;
    let mut json = serde_json::Map::new();
    json.insert("model".into(), path.clone().into());
    json.insert("arch".into(), b.arch().into());
    json.insert("ctx".into(), ctx.into());

    // Single-sequence decode (CudaModel, CUDA graph) at the same context.
    let prompt: Vec<u32> = (0..ctx as u32).map(|i| (i * 7919 + 13) % vocab).collect();
    let mut t = model.prefill_argmax(&prompt).expect("prefill");
    for _ in 0..4 {
        t = model.decode_argmax(t).expect("warm-up");
    }
    let n1 = 32;
    let t0 = Instant::now();
    for _ in 0..n1 {
        t = model.decode_argmax(t).expect("decode");
    }
    let single = n1 as f64 / t0.elapsed().as_secs_f64();
    eprintln!("single-sequence CudaModel decode at ctx {ctx}: {single:.1} tok/s");
    json.insert("single_tok_s".into(), single.into());
    drop(model);
    let model = CudaModel::open_on(b.clone(), &path, ctx + 64).expect("open");

    let mut rows = Vec::new();
    for bsz in [1usize, 2, 4, 8, 16, 32, 64] {
        let opts = KvPoolOptions::for_sequences(bsz, ctx + 64);
        let mut st = GpuMultiState::new(b.clone(), &c, opts).expect("state");
        // Both product paths timed up to the few-row matvec's most rows (the state's default
        // takes the GEMM earlier).
        st.set_matvec_rows(llama_model::cuda::MATVEC_MAX_ROWS);
        let seqs: Vec<_> = (0..bsz).map(|_| st.add_seq().unwrap()).collect();
        // Prefill every sequence to `ctx` positions, 4 sequences a step.
        let mut last = vec![0u32; bsz];
        for group in (0..bsz).collect::<Vec<_>>().chunks(4) {
            let parts: Vec<StepPart> = group
                .iter()
                .map(|&i| StepPart {
                    seq: seqs[i],
                    tokens: prompt.iter().map(|t| (t + i as u32) % vocab).collect(),
                    want_logits: true,
                })
                .collect();
            for (&i, t) in group.iter().zip(step(&model, &mut st, &parts)) {
                last[i] = t;
            }
        }
        let decode = |st: &mut GpuMultiState, last: &mut Vec<u32>| {
            let parts: Vec<StepPart> = seqs
                .iter()
                .zip(last.iter())
                .map(|(&s, &t)| StepPart {
                    seq: s,
                    tokens: vec![t],
                    want_logits: true,
                })
                .collect();
            *last = step(&model, st, &parts);
        };
        let steps = 16;
        let time = |st: &mut GpuMultiState, last: &mut Vec<u32>| {
            for _ in 0..2 {
                decode(st, last);
            }
            let t0 = Instant::now();
            for _ in 0..steps {
                decode(st, last);
            }
            t0.elapsed().as_secs_f64()
        };
        // Small batches: the tensor-core GEMM path too, for comparison (same run).
        let gemm_ms = if bsz <= st.matvec_rows() {
            let mv = st.matvec_rows();
            st.set_matvec_rows(0);
            let g = time(&mut st, &mut last) * 1e3 / steps as f64;
            st.set_matvec_rows(mv);
            eprintln!("B = {bsz:2}: GEMM-only step {g:.2} ms");
            Some(g)
        } else {
            None
        };
        let dt = time(&mut st, &mut last);
        let agg = (steps * bsz) as f64 / dt;
        let ratio = agg / (bsz as f64 * single);
        let kv = KvPool::bytes_per_block(&c) * st.pool().total_blocks() as u64;
        eprintln!(
            "B = {bsz:2}: step {:.2} ms, aggregate {agg:.1} tok/s, per sequence {:.1} tok/s, \
             {ratio:.3} x B x single, {:.2} x single; KV pool {:.1} MiB",
            dt * 1e3 / steps as f64,
            agg / bsz as f64,
            agg / single,
            kv as f64 / (1u64 << 20) as f64
        );
        rows.push(serde_json::json!({
            "batch": bsz, "step_ms": dt * 1e3 / steps as f64, "aggregate_tok_s": agg,
            "per_seq_tok_s": agg / bsz as f64, "ratio_to_b_x_single": ratio,
            "speedup_over_single": agg / single, "kv_pool_bytes": kv,
            "gemm_only_step_ms": gemm_ms, "matvec_rows": st.matvec_rows(),
        }));
    }
    json.insert("batches".into(), rows.into());
    if let Ok(p) = std::env::var("VRAMLESS_BENCH_JSON") {
        std::fs::write(p, serde_json::Value::Object(json).to_string()).expect("write json");
    }
}
