//! Speed report of the batched (tensor-core) path (feature `cuda`; report only, no
//! assertions): prefill tok/s at 512 tokens, the cost of one batched pass over
//! `K + 1 = 2..9` positions relative to a one-token pass (self-speculative verification), and
//! the GEMM's throughput on the 8B FFN shapes.
//!
//! `VRAMLESS_BENCH_MODEL` names the GGUF (e.g. a synthetic Llama-3.1-8B Q4_K_M written by
//! `synth-model`); `VRAMLESS_BENCH_JSON`, when set, receives the figures as one JSON object.

use std::time::Instant;

use cudarc::driver::CudaSlice;
use gguf::GgmlType;
use half::f16;
use llama_model::cuda::{
    forward_layer, forward_layer_batch, BatchKernels, CudaModel, CudaOptions, DeviceWeight,
    GpuBatch, GpuState,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vramless_benches::cuda_report::{backend_or_exit, median, ms};

fn main() {
    let Ok(path) = std::env::var("VRAMLESS_BENCH_MODEL") else {
        eprintln!("!!! nothing measured: set VRAMLESS_BENCH_MODEL to a GGUF (e.g. written by synth-model)");
        std::process::exit(2);
    };
    let opts = CudaOptions::from_vars(|k| std::env::var(k).ok()).expect("options");
    let b = backend_or_exit(&opts);
    let s = b.stream().clone();
    let mut model = CudaModel::open_on(b.clone(), &path, 2048).expect("open");
    let c = model.config().clone();
    let vocab = c.vocab_size as u32;
    let prompt: Vec<u32> = (0..1024u32).map(|i| (i * 7919 + 13) % vocab).collect();
    let mut json = serde_json::Map::new();
    json.insert("model".into(), path.clone().into());
    json.insert("arch".into(), b.arch().into());

    // --- Prefill of 512 tokens through CudaModel::prefill_argmax (batched since the switch).
    model.prefill_argmax(&prompt[..16]).expect("warm-up");
    let mut runs = Vec::new();
    for _ in 0..4 {
        model.reset();
        let t = Instant::now();
        model.prefill_argmax(&prompt[..512]).expect("prefill");
        runs.push(ms(t.elapsed()));
    }
    let pre = median(runs.clone());
    eprintln!(
        "prefill 512 tokens: median {pre:.2} ms = {:.0} tok/s (runs {runs:.2?})",
        512.0 / pre * 1e3
    );
    json.insert("prefill512_ms".into(), pre.into());
    json.insert("prefill512_tok_s".into(), (512.0 / pre * 1e3).into());

    for len in [64usize, 128, 1024] {
        let mut runs = Vec::new();
        for _ in 0..3 {
            model.reset();
            let t = Instant::now();
            model.prefill_argmax(&prompt[..len]).expect("prefill");
            runs.push(ms(t.elapsed()));
        }
        let m = median(runs);
        eprintln!(
            "prefill {len} tokens: median {m:.2} ms = {:.0} tok/s",
            len as f64 / m * 1e3
        );
        json.insert(format!("prefill{len}_tok_s"), (len as f64 / m * 1e3).into());
    }
    model.reset();
    model.prefill_argmax(&prompt[..512]).expect("prefill");

    // Reference: the model's own decode step (CUDA graph when enabled) at context 512.
    let mut dec = Vec::new();
    for i in 0..30 {
        let t = Instant::now();
        model.decode_argmax(prompt[512 + i]).expect("decode");
        let d = ms(t.elapsed());
        model.truncate(512);
        if i >= 5 {
            dec.push(d);
        }
    }
    let dec = median(dec);
    eprintln!("CudaModel::decode_argmax at context 512: {dec:.3} ms");
    json.insert("model_decode_ms".into(), dec.into());

    // --- One-token pass vs batched passes of n = 1..9 positions, same driver loop (no graph):
    // embedding, every layer, final norm + LM head + argmax (all positions for the batch).
    let mut state = GpuState::new(b.clone(), &c, 2048).expect("state");
    let mut batch = GpuBatch::new(&state).expect("batch");
    let te = model.token_embd_weight().expect("embd");
    let (on, head) = model.head_weights().expect("head");
    let layers: Vec<_> = (0..c.n_layers)
        .map(|i| model.layer_weights(i).expect("layer"))
        .collect();
    let feed = |state: &mut GpuState, batch: &mut GpuBatch, toks: &[u32]| {
        batch.begin(state, &te, toks).expect("begin");
        for (i, w) in layers.iter().enumerate() {
            forward_layer_batch(i, w, state, batch).expect("layer");
        }
        batch.end(state).expect("end");
    };
    feed(&mut state, &mut batch, &prompt[..512]);
    let one = {
        let mut v = Vec::new();
        for i in 0..25 {
            let t = Instant::now();
            state.begin_token(&te, prompt[600 + i]).expect("begin");
            for (l, w) in layers.iter().enumerate() {
                forward_layer(l, w, &mut state).expect("layer");
            }
            state.end_token().expect("end");
            state.head_argmax(&on, &head).expect("head");
            let d = ms(t.elapsed());
            state.truncate(512);
            if i >= 5 {
                v.push(d);
            }
        }
        median(v)
    };
    eprintln!("one-token pass (forward_layer, no graph) at context 512: {one:.3} ms");
    json.insert("one_token_ms".into(), one.into());
    let mut table = Vec::new();
    eprintln!("| positions | batched pass ms | x one-token pass | x model decode |");
    for n in 1..=9usize {
        let mut v = Vec::new();
        for i in 0..25 {
            let t = Instant::now();
            feed(&mut state, &mut batch, &prompt[600 + i..600 + i + n]);
            batch.head_argmax_all(&state, &on, &head).expect("head");
            let d = ms(t.elapsed());
            state.truncate(512);
            if i >= 5 {
                v.push(d);
            }
        }
        let m = median(v);
        eprintln!("| {n} | {m:.3} | {:.2} | {:.2} |", m / one, m / dec);
        table.push(serde_json::json!({"positions": n, "ms": m, "vs_one_token": m / one, "vs_model_decode": m / dec}));
    }
    json.insert("batched_pass".into(), table.into());

    // --- GEMM throughput on the 8B FFN shapes (Q4_K weights, 512 tokens).
    let k = BatchKernels::get(&b).expect("kernels");
    let mut rng = StdRng::seed_from_u64(7);
    for (rows, cols, ty) in [
        (14336usize, 4096usize, GgmlType::Q4_K),
        (4096, 14336, GgmlType::Q4_K),
        (4096, 14336, GgmlType::Q6_K),
        (4096, 4096, GgmlType::Q4_K),
    ] {
        let n_blocks = rows * cols / 256;
        let mut bytes = vec![0u8; n_blocks * ty.type_size()];
        rng.fill(bytes.as_mut_slice());
        let d_off = if ty == GgmlType::Q6_K { 208 } else { 0 };
        for blk in bytes.chunks_exact_mut(ty.type_size()) {
            blk[d_off..d_off + 2].copy_from_slice(&f16::from_f32(0.01).to_le_bytes());
            if ty == GgmlType::Q4_K {
                blk[2..4].copy_from_slice(&f16::from_f32(0.01).to_le_bytes());
            }
        }
        let dw = s.clone_htod(&bytes).unwrap();
        let w = DeviceWeight::new(dw.slice(..), ty, cols, rows).unwrap();
        for n in [512usize, 128, 9] {
            let x: Vec<u16> = (0..n * cols)
                .map(|_| f16::from_f32(rng.gen_range(-1.0f32..1.0)).to_bits())
                .collect();
            let dx = s.clone_htod(&x).unwrap();
            let mut dy: CudaSlice<f32> = s.alloc_zeros(n * rows).unwrap();
            for tile in [None, Some(0), Some(1), Some(2), Some(3)] {
                k.gemm_with_tile(&b, &w, &dx, n, &mut dy, false, tile)
                    .unwrap();
                s.synchronize().unwrap();
                let reps = 10;
                let t = Instant::now();
                for _ in 0..reps {
                    k.gemm_with_tile(&b, &w, &dx, n, &mut dy, false, tile)
                        .unwrap();
                }
                s.synchronize().unwrap();
                let per = t.elapsed().as_secs_f64() / reps as f64;
                let tflops = 2.0 * (rows * cols * n) as f64 / per / 1e12;
                let gbs = bytes.len() as f64 / per / 1e9;
                let name = tile.map_or("auto", |t| BatchKernels::GEMM_TILES[t]);
                eprintln!(
                    "gemm {ty} {rows}x{cols} n={n} tile {name}: {:.1} us, {tflops:.1} TFLOP/s, weights at {gbs:.0} GB/s",
                    per * 1e6
                );
                json.insert(
                    format!("gemm_{ty}_{rows}x{cols}_n{n}_{name}_us"),
                    (per * 1e6).into(),
                );
            }
        }
    }
    if let Ok(p) = std::env::var("VRAMLESS_BENCH_JSON") {
        std::fs::write(p, serde_json::Value::Object(json).to_string()).expect("write json");
    }
}
