//! `bench-stream-model`: decode speed of a streamed model against the bus limit measured in the
//! same run.
//!
//! ```text
//! cargo run --release --features cuda --bin bench-stream-model -- --model 70b.gguf \
//!     --vram-budget 24GiB [--ram-budget 16GiB] [--path mmap-baseline] [--skip-count 20]
//! ```
//! Measures pinned host-to-device bandwidth (on the CPU device: host memcpy bandwidth), feeds a
//! short prompt, times `--tokens` greedy decode steps, and prints tok/s, the PCIe limit
//! (H2D GB/s / streamed bytes per token), the ratio, and one JSON line on stdout. With
//! `--hybrid`, also the combined limit (bus and CPU rows at their own measured speeds) and the
//! RAM limit (every core's measured read rate over the bytes the CPU rows and the bus copies
//! read from host RAM per token: both read the same memory).
//!
//! `--batch 1,8,32` times many sequences decoding together through one BatchEngine: aggregate
//! and per-sequence tok/s, the ratio to B x the batch-1 figure of the same run, bytes streamed
//! per step and the KV pool; `--churn-steps 1000` adds the memory check (sequences joining and
//! leaving, host RSS and free device memory before/after).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use llama_model::skip::{model_fingerprint, SkipMap};
use llama_model::tokenizer::Tokenizer;
use vramless_engine::batch_run::{bench_batches, churn, parse_batches};
use vramless_engine::engine::cli::{parse_device, EngineArgs};
use vramless_engine::engine::{BatchEngine, Device, Engine, Home, Skip};

#[derive(Parser, Debug)]
#[command(
    about = "Decode speed of a streamed model vs the host-to-device limit measured in the same run", after_help = vramless_engine::default_model::HELP)]
struct Args {
    /// GGUF model (default: SmolLM2-135M-Instruct Q4_1 from the cache, fetched on first use; see below).
    #[arg(long)]
    model: Option<PathBuf>,
    /// cpu or cuda.
    #[arg(long, default_value = if cfg!(feature = "cuda") { "cuda" } else { "cpu" })]
    device: String,
    /// Prompt text (fed first, not timed).
    #[arg(long, default_value = "The capital of France is")]
    prompt: String,
    /// Greedy decode steps to time.
    #[arg(long, default_value_t = 8)]
    tokens: usize,
    /// Greedy decode steps before the timed ones (e.g. while `--hybrid auto` searches its
    /// share; their statistics are dropped); with --batch, at each batch size.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// KV cache positions.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Skip this many layers, evenly spaced (never the first or last), through a skip map
    /// written to --skip-map-out (default: MODEL.skipmap.json).
    #[arg(long, default_value_t = 0)]
    skip_count: usize,
    /// Where --skip-count writes its skip map.
    #[arg(long)]
    skip_map_out: Option<PathBuf>,
    /// A label for the JSON line.
    #[arg(long, default_value = "")]
    label: String,
    /// Self-speculation cost mode: also time one full verify pass over K+1 positions for
    /// K = 1..=this (0: off), against the single-token pass.
    #[arg(long, default_value_t = 0)]
    verify_k_max: usize,
    /// Layers of the self-speculative draft (pinned to the device by the plan); with
    /// --verify-k-max, draft steps are timed too.
    #[arg(long, default_value_t = 0)]
    draft_layers: usize,
    /// Repetitions of every timed verify pass and draft step (the mean is reported).
    #[arg(long, default_value_t = 3)]
    verify_reps: usize,
    /// Acceptance rates at which to predict speculative tok/s (comma-separated).
    #[arg(long, default_value = "0.3,0.5,0.7,0.9")]
    accept: String,
    /// Multi-sequence mode: batch sizes to time (`1,8,32`, or `1..64` for the powers of two),
    /// each against B x the batch-1 figure of the same run, through one BatchEngine opened for
    /// the largest (or --max-seqs) sequences of --ctx positions.
    #[arg(long)]
    batch: Option<String>,
    /// With --batch: also run this many steps with sequences joining and leaving and print
    /// host RSS and free device memory before/after (0: off).
    #[arg(long, default_value_t = 0)]
    churn_steps: usize,
    #[command(flatten)]
    engine: EngineArgs,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-stream-model: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `count` layers evenly spaced over `1..=n-2`.
fn evenly_spaced(n: usize, count: usize) -> Result<Vec<usize>, String> {
    let interior = n.saturating_sub(2);
    if count > interior {
        return Err(format!(
            "--skip-count {count}: only {interior} layers can be skipped"
        ));
    }
    Ok((0..count)
        .map(|k| 1 + (2 * k + 1) * interior / (2 * count))
        .collect())
}

/// Host memcpy bandwidth, GB/s (the CPU device's "bus").
fn memcpy_gbps() -> f64 {
    let n = 256 << 20;
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    let mut best = f64::MAX;
    for _ in 0..4 {
        let t = Instant::now();
        dst.copy_from_slice(&src);
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    n as f64 / best / 1e9
}

fn run(a: Args) -> Result<(), String> {
    let device = parse_device(&a.device).map_err(|e| e.to_string())?;
    let model = vramless_engine::model_path("bench-stream-model", a.model.clone())?;
    let mut opts = a.engine.options(device, a.ctx).map_err(|e| e.to_string())?;
    opts.draft_layers = a.draft_layers;
    if a.skip_count > 0 {
        let (_, config, _) =
            vramless_engine::engine::setup::open_model(&model).map_err(|e| e.to_string())?;
        let skipped = evenly_spaced(config.n_layers, a.skip_count)?;
        let fp = model_fingerprint(&model).map_err(|e| e.to_string())?;
        let map = SkipMap::new(
            fp,
            config.n_layers,
            skipped,
            format!("evenly spaced, {}", a.skip_count),
        )
        .map_err(|e| e.to_string())?;
        let out = a
            .skip_map_out
            .clone()
            .unwrap_or_else(|| SkipMap::default_path(&model));
        map.save(&out).map_err(|e| e.to_string())?;
        eprintln!(
            "bench-stream-model: skip map of {} layers written to {}",
            a.skip_count,
            out.display()
        );
        opts.skip = Skip::Map(out);
    }
    if let Some(list) = &a.batch {
        return batch_mode(&a, &model, opts, list, device);
    }
    let t0 = Instant::now();
    let mut engine = Engine::open(&model, &opts).map_err(|e| e.to_string())?;
    let load_s = t0.elapsed().as_secs_f64();
    let tok = Tokenizer::from_gguf(engine.gguf().metadata()).map_err(|e| e.to_string())?;
    let prompt = tok.encode_prompt(&a.prompt).map_err(|e| e.to_string())?;
    let tp = Instant::now();
    let mut next = engine.prefill_argmax(&prompt).map_err(|e| e.to_string())?;
    let prefill_s = tp.elapsed().as_secs_f64();
    eprintln!(
        "bench-stream-model: prefill {} tokens in {prefill_s:.3} s = {:.1} tok/s ({} passes over the layers)",
        prompt.len(),
        prompt.len() as f64 / prefill_s,
        engine.stats().passes
    );
    let mut tokens = vec![next];
    for _ in 0..a.warmup {
        next = engine.decode_argmax(next).map_err(|e| e.to_string())?;
        tokens.push(next);
    }
    engine.clear_stats();
    let t = Instant::now();
    for _ in 0..a.tokens {
        next = engine.decode_argmax(next).map_err(|e| e.to_string())?;
        tokens.push(next);
    }
    let secs = t.elapsed().as_secs_f64();
    let tok_s = a.tokens as f64 / secs;
    let (h2d, link) = match device {
        Device::Cuda => (engine.h2d_gbps().unwrap_or(0.0), "pinned H2D"),
        Device::Cpu => (memcpy_gbps(), "host memcpy"),
    };
    let streamed = engine.stats().streamed_per_pass();
    let limit = if streamed > 0 {
        h2d * 1e9 / streamed as f64
    } else {
        f64::INFINITY
    };
    let st0 = engine.stats().clone();
    a.engine
        .write_trace(engine.trace())
        .map_err(|e| e.to_string())?;
    let ratio = if limit.is_finite() {
        tok_s / limit
    } else {
        0.0
    };
    let verify = if a.verify_k_max > 0 {
        let pass_s = secs / a.tokens.max(1) as f64;
        verify_cost(&mut engine, &a, &tokens, pass_s)?
    } else {
        serde_json::Value::Null
    };
    let st = &st0;
    // Hybrid: the CPU's rows of the split layers are weights that did not cross the bus. The
    // combined limit moves every streamed byte at the bus's and the CPU's speeds together, the
    // CPU's as measured at start on the model's own layer (alone, not under the bus's load).
    let passes = st.passes.max(1) as f64;
    let cpu_per_token = st.cpu_bytes as f64 / passes;
    let bus_per_token = if cpu_per_token > 0.0 {
        st.copy_bytes as f64 / passes
    } else {
        streamed as f64
    };
    let cpu_gbps = engine.hybrid().map_or(0.0, |h| h.cpu_bw / 1e9);
    let combined = if streamed > 0 && cpu_per_token > 0.0 {
        (h2d + cpu_gbps) * 1e9 / streamed as f64
    } else {
        limit
    };
    // Both the bus's copies from pinned RAM and the CPU's rows are reads of the same RAM: at
    // most the rate every core reading together measured now (the copy engine's reads share
    // that memory's bandwidth), a bound the two sides' own rates do not show.
    let ram_gbps = if cpu_per_token > 0.0 {
        llama_model::cpu::measure_read_bandwidth(1 << 30) / 1e9
    } else {
        0.0
    };
    // Every bus copy reads host RAM (data from storage lands in a page-locked buffer first).
    let from_ram = cpu_per_token + bus_per_token;
    let ram_limit = if ram_gbps > 0.0 && from_ram > 0.0 {
        ram_gbps * 1e9 / from_ram
    } else {
        f64::INFINITY
    };
    if cpu_per_token > 0.0 {
        eprintln!(
            "bench-stream-model: hybrid: RAM read {ram_gbps:.1} GB/s (every core reading, measured now) over {:.2} GB read from RAM per token (CPU rows + bus copies) -> RAM limit {ram_limit:.3} tok/s; ratio {:.3}",
            from_ram / 1e9,
            tok_s / ram_limit
        );
        eprintln!(
            "bench-stream-model: hybrid: CPU share {:.0}%: {:.2} GB per token computed by CPU threads ({cpu_gbps:.1} GB/s measured alone at start, {:.1} GB/s of their busy time here) + {:.2} GB over the bus ({h2d:.1} GB/s) -> combined limit {combined:.3} tok/s; ratio {:.3}",
            engine.hybrid().map_or(0.0, |h| h.fraction * 100.0),
            cpu_per_token / 1e9,
            if st.cpu_busy.is_zero() { 0.0 } else { st.cpu_bytes as f64 / st.cpu_busy.as_secs_f64() / 1e9 },
            bus_per_token / 1e9,
            tok_s / combined
        );
    }
    let plan = engine.plan();
    let count = |h| plan.layers(h).len();
    eprint!("{}", st.report());
    eprintln!(
        "bench-stream-model: {} decode tokens in {secs:.3} s = {tok_s:.3} tok/s; {:.2} GB streamed per token; {link} {h2d:.2} GB/s -> PCIe limit {limit:.3} tok/s; ratio {ratio:.3}; predicted {:.3} tok/s",
        a.tokens,
        streamed as f64 / 1e9,
        1.0 / plan.predicted_s.max(1e-12)
    );
    let v = serde_json::json!({
        "label": a.label,
        "model": model.display().to_string(),
        "device": a.device,
        "path": a.engine.path.clone().unwrap_or_else(|| "auto".into()),
        "vram_budget": engine.budgets().0,
        "ram_budget": engine.budgets().1,
        "layers_device": count(Home::Device),
        "layers_pinned": count(Home::Pinned),
        "layers_storage": count(Home::Storage),
        "layers_skipped": count(Home::Skipped),
        "load_s": load_s,
        "prefill_tokens": prompt.len(),
        "prefill_s": prefill_s,
        "decode_tokens": a.tokens,
        "tok_s": tok_s,
        "streamed_bytes_per_token": streamed,
        "h2d_gb_s": h2d,
        "pcie_limit_tok_s": limit,
        "ratio": ratio,
        "predicted_tok_s": 1.0 / plan.predicted_s.max(1e-12),
        "stall_s": st.stall.as_secs_f64(),
        "copy_gb_s": if st.copy_busy.is_zero() { 0.0 } else { st.copy_bytes as f64 / st.copy_busy.as_secs_f64() / 1e9 },
        "read_gb_s": if st.read_busy.is_zero() { 0.0 } else { st.read_bytes as f64 / st.read_busy.as_secs_f64() / 1e9 },
        "hybrid_cpu_bytes_per_token": cpu_per_token,
        "hybrid_bus_bytes_per_token": bus_per_token,
        "hybrid_fraction": engine.hybrid().map_or(0.0, |h| h.fraction),
        "hybrid_cpu_gb_s": cpu_gbps,
        "hybrid_cpu_busy_gb_s": if st.cpu_busy.is_zero() { 0.0 } else { st.cpu_bytes as f64 / st.cpu_busy.as_secs_f64() / 1e9 },
        "hybrid_cpu_wait_s": st.cpu_wait.as_secs_f64(),
        "hybrid_layers": engine.hybrid().map_or(0, |h| h.layers.len()),
        "hybrid_predicted_tok_s": engine.hybrid().map(|h| 1.0 / h.predicted_s.max(1e-12)),
        "combined_limit_tok_s": combined,
        "combined_ratio": if combined.is_finite() { tok_s / combined } else { 0.0 },
        "ram_read_gb_s": ram_gbps,
        "ram_limit_tok_s": if ram_limit.is_finite() { Some(ram_limit) } else { None },
        "ram_ratio": if ram_limit.is_finite() { tok_s / ram_limit } else { 0.0 },
        "tokens": tokens,
        "verify_cost": verify,
    });
    println!("{v}");
    Ok(())
}

/// `--batch`: aggregate and per-sequence tok/s at each batch size, the ratio to B x batch 1,
/// bytes streamed per step, the KV pool, and (with --churn-steps) the memory check.
fn batch_mode(
    a: &Args,
    model: &std::path::Path,
    mut opts: vramless_engine::engine::EngineOptions,
    list: &str,
    device: Device,
) -> Result<(), String> {
    let sizes = parse_batches(list)?;
    let largest = sizes.iter().copied().max().unwrap_or(1);
    if opts.max_seqs < largest {
        opts.max_seqs = largest;
    }
    let t0 = Instant::now();
    let mut engine = BatchEngine::open(model, &opts).map_err(|e| e.to_string())?;
    let load_s = t0.elapsed().as_secs_f64();
    let tok = Tokenizer::from_gguf(engine.gguf().metadata()).map_err(|e| e.to_string())?;
    let prompt = tok.encode_prompt(&a.prompt).map_err(|e| e.to_string())?;
    let pool = engine.kv_pool();
    let per_seq_blocks = opts.ctx.div_ceil(pool.block_positions.max(1));
    eprintln!(
        "bench-stream-model: KV pool {} blocks of {} positions x {} = {:.1} MB; {:.1} MB per sequence of {} positions; {} sequences at most",
        pool.total,
        pool.block_positions,
        pool.bytes_per_block,
        (pool.total as u64 * pool.bytes_per_block) as f64 / 1e6,
        (per_seq_blocks as u64 * pool.bytes_per_block) as f64 / 1e6,
        opts.ctx,
        engine.max_seqs()
    );
    let figs = bench_batches(&mut engine, &prompt, &sizes, a.tokens, a.warmup)
        .map_err(|e| e.to_string())?;
    let h2d = match device {
        Device::Cuda => engine.h2d_gbps().unwrap_or(0.0),
        Device::Cpu => memcpy_gbps(),
    };
    eprintln!(
        "{:>5} {:>12} {:>12} {:>10} {:>14} {:>10} {:>12} {:>9}",
        "B",
        "agg tok/s",
        "tok/s/seq",
        "agg/(B*1)",
        "streamed/step",
        "KV blocks",
        "CPU/step",
        "CPU GB/s"
    );
    for f in &figs {
        eprintln!(
            "{:>5} {:>12.3} {:>12.3} {:>10.3} {:>11.2} GB {:>10} {:>9.2} GB {:>9.1}",
            f.batch,
            f.aggregate_tok_s,
            f.per_seq_tok_s,
            f.ratio_to_b_x_single,
            f.streamed_bytes_per_step as f64 / 1e9,
            f.kv_blocks_used,
            f.cpu_bytes_per_step as f64 / 1e9,
            f.cpu_busy_gb_s
        );
    }
    let streamed = engine.stats().streamed_per_pass();
    let limit = if streamed > 0 {
        h2d * 1e9 / streamed as f64
    } else {
        f64::INFINITY
    };
    eprintln!(
        "bench-stream-model: bus limit {limit:.3} steps/s ({h2d:.2} GB/s over {:.2} GB streamed per step)",
        streamed as f64 / 1e9
    );
    a.engine
        .write_trace(engine.trace())
        .map_err(|e| e.to_string())?;
    let mem = if a.churn_steps > 0 {
        let m = churn(
            &mut engine,
            &prompt,
            a.churn_steps,
            largest,
            device_free(device),
        )
        .map_err(|e| e.to_string())?;
        eprintln!(
            "bench-stream-model: memory check, {} steps, {} sequences joined and left: host RSS {:.1} -> {:.1} MB ({:+.1} MB){}",
            m.steps,
            m.sequences,
            m.rss_before as f64 / 1e6,
            m.rss_after as f64 / 1e6,
            (m.rss_after as f64 - m.rss_before as f64) / 1e6,
            match (m.device_free_before, m.device_free_after) {
                (Some(b), Some(e)) => format!(
                    "; device free {:.1} -> {:.1} MB ({:+.1} MB)",
                    b as f64 / 1e6,
                    e as f64 / 1e6,
                    (e as f64 - b as f64) / 1e6
                ),
                _ => String::new(),
            }
        );
        serde_json::to_value(&m).unwrap_or_default()
    } else {
        serde_json::Value::Null
    };
    let plan = engine.plan();
    let v = serde_json::json!({
        "label": a.label,
        "model": model.display().to_string(),
        "device": a.device,
        "mode": "batch",
        "ctx": opts.ctx,
        "max_seqs": engine.max_seqs(),
        "load_s": load_s,
        "vram_budget": opts.vram_budget,
        "layers_device": plan.layers(Home::Device).len(),
        "layers_pinned": plan.layers(Home::Pinned).len(),
        "layers_storage": plan.layers(Home::Storage).len(),
        "kv_displaced_layers": plan.displaced,
        "kv_pool_bytes": pool.total as u64 * pool.bytes_per_block,
        "kv_bytes_per_seq": per_seq_blocks as u64 * pool.bytes_per_block,
        "streamed_bytes_per_step": streamed,
        "h2d_gb_s": h2d,
        "bus_limit_steps_s": limit,
        "batches": figs,
        "memory": mem,
    });
    println!("{v}");
    Ok(())
}

/// Free device memory, read the way the memory check needs it.
fn device_free(device: Device) -> impl Fn() -> Option<u64> {
    move || match device {
        Device::Cpu => None,
        #[cfg(feature = "cuda")]
        Device::Cuda => vramless_engine::engine::gpu::free_device_memory(),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => None,
    }
}

/// Mean seconds of `reps` calls of `f`.
fn mean_s(reps: usize, mut f: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    let t = Instant::now();
    for _ in 0..reps {
        f()?;
    }
    Ok(t.elapsed().as_secs_f64() / reps as f64)
}

/// Self-speculation cost: one full verify pass over K+1 positions (K = 1..=verify_k_max)
/// against the single-token pass `pass_s` measured before, the draft step (with
/// --draft-layers), and the predicted tok/s at each acceptance rate `a`: expected tokens per
/// round `(1 - a^(K+1)) / (1 - a)` over the round's time (one verify pass plus K draft steps).
/// Prints a table on stderr; returns it as JSON.
fn verify_cost(
    engine: &mut Engine,
    a: &Args,
    tokens: &[u32],
    pass_s: f64,
) -> Result<serde_json::Value, String> {
    let reps = a.verify_reps.max(1);
    let rates: Vec<f64> = a
        .accept
        .split(',')
        .map(|s| s.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--accept {}: {e}", a.accept))?;
    if let Some(bad) = rates.iter().find(|r| !(0.0..1.0).contains(*r)) {
        return Err(format!("--accept: {bad} is not in [0, 1)"));
    }
    let base = engine.n_past();
    let filler = tokens.last().copied().unwrap_or(0);
    // Draft step: one token through the draft's resident layers and the LM head.
    let draft_s = if engine.draft_layers() > 0 {
        let d0 = engine.draft_n_past();
        engine.draft_argmax(&[filler]).map_err(|e| e.to_string())?; // warm-up
        let s = mean_s(reps, || {
            engine
                .draft_argmax(&[filler])
                .map(|_| ())
                .map_err(|e| e.to_string())
        })?;
        engine.draft_truncate(d0);
        Some(s)
    } else {
        None
    };
    let mut rows = Vec::new();
    eprintln!(
        "bench-stream-model: verify cost (single-token pass {:.4} s{}; mean of {reps})",
        pass_s,
        draft_s.map_or(String::new(), |d| format!(
            ", draft step of {} layers {:.4} s",
            engine.draft_layers(),
            d
        ))
    );
    let mut head = format!("{:>3} {:>10} {:>7}", "K", "verify s", "ratio");
    for r in &rates {
        head.push_str(&format!(" {:>12}", format!("tok/s@a={r}")));
    }
    eprintln!("{head}");
    for k in 1..=a.verify_k_max {
        let batch = vec![filler; k + 1];
        engine.verify_argmax(&batch).map_err(|e| e.to_string())?; // warm-up (scratch growth)
        engine.truncate(base);
        let v = mean_s(reps, || {
            let r = engine.verify_argmax(&batch).map(|_| ());
            engine.truncate(base);
            r.map_err(|e| e.to_string())
        })?;
        let round = v + k as f64 * draft_s.unwrap_or(0.0);
        let mut line = format!("{k:>3} {v:>10.4} {:>7.3}", v / pass_s);
        let mut pred = Vec::new();
        for &r in &rates {
            let expected = (1.0 - r.powi(k as i32 + 1)) / (1.0 - r);
            let tps = expected / round;
            line.push_str(&format!(" {tps:>12.3}"));
            pred.push(serde_json::json!({"accept": r, "expected_tokens": expected, "tok_s": tps}));
        }
        eprintln!("{line}");
        rows.push(serde_json::json!({
            "k": k,
            "verify_s": v,
            "ratio_to_single": v / pass_s,
            "round_s": round,
            "predicted": pred,
        }));
    }
    eprintln!(
        "bench-stream-model: plain streaming {:.3} tok/s; tok/s@a = expected tokens per round / (verify + K draft steps)",
        1.0 / pass_s
    );
    Ok(serde_json::json!({
        "single_pass_s": pass_s,
        "draft_layers": engine.draft_layers(),
        "draft_step_s": draft_s,
        "reps": reps,
        "rows": rows,
    }))
}
