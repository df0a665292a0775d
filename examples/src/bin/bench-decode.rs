//! Measures, in one run, how close decoding gets to the memory-bandwidth limit: the device's
//! memory bandwidth, prefill speed over a synthetic prompt and greedy decode speed.
//!
//! ```text
//! cargo run --release --bin bench-decode -- --device cpu --prompt-len 64 --gen 32
//! cargo run --release --features cuda --bin bench-decode -- --device cuda --model model.gguf
//! ```
//! Human-readable figures go to stderr; stdout gets one JSON line with the same numbers.
//!
//! Definitions:
//! - Weight bytes per token: the bytes one decode step must read, namely the nine tensors of
//!   every layer (`cpu::LAYER_TENSOR_NAMES`), `output_norm.weight` and the LM head matrix
//!   (`output.weight`, or `token_embd.weight` when the output is tied, counted once). The
//!   single embedding row looked up per token, and `rope_freqs`, are not counted. This is the
//!   definition of `CudaModel::weight_bytes_per_token`.
//! - Bandwidth: CUDA: 1 GiB device-to-device copies; CPU: 256 MiB host memcpy. Both count
//!   each copy's read and write (`2 * bytes / time`).
//! - Achieved GB/s: weight bytes per token x decode tok/s; fraction: that over the bandwidth.
//! - Prompt: `--prompt-len` synthetic ids, the tokenizer's non-special ids taken in order from
//!   an eighth of the way into the vocabulary (deterministic; wraps around).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use gguf::GgufFile;
use llama_model::cpu::{ModelOptions, LAYER_TENSOR_NAMES};
use llama_model::sampler::argmax;
use llama_model::tokenizer::Tokenizer;
use vramless_engine::cpu_load::{open_cpu_model, Load};

#[derive(Parser, Debug)]
#[command(
    about = "Decode/prefill speed against the measured memory bandwidth",
    long_about = "Measures, in one run: the device memory bandwidth (CUDA: large device-to-device \
copy; CPU: large memcpy), prefill tok/s over a synthetic prompt of --prompt-len tokens, and greedy \
decode tok/s over --gen tokens. Prints the weight bytes one decode step reads (every layer tensor, \
the output norm and the LM head matrix, tied or not, counted once), the GB/s decode achieves and \
the fraction of the measured bandwidth, then one JSON line on stdout with the same numbers.\n\n\
Note: on CUDA, prompts of several tokens run through the batched tensor-core GEMM path (one \
pass over all prompt tokens per layer), so prefill tok/s is far above decode's.",
    after_help = concat!("Examples:\n  bench-decode --device cpu --prompt-len 64 --gen 32\n  \
bench-decode --device cuda --model Llama-3.1-8B-Q4_K_M.gguf   (build with --features cuda)\n\n",
        vramless_engine::default_model_help!())
)]
struct Args {
    /// GGUF model file (default: SmolLM2-135M-Instruct Q4_1 from the cache, fetched on first use; see below).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Prompt tokens fed before decoding (synthetic, deterministic ids).
    #[arg(long, default_value_t = 512)]
    prompt_len: usize,
    /// Tokens decoded greedily after the prompt.
    #[arg(long, default_value_t = 128)]
    gen: usize,
    /// Compute device: cpu, or cuda (needs a build with `--features cuda` and an NVIDIA GPU).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Multi-sequence mode: batch sizes (`1,8,32`, or `1..64` for the powers of two) decoding
    /// together through the engine's BatchEngine (all layers resident when they fit); each
    /// prompt is --prompt-len tokens and --gen steps are timed per batch size, against B x the
    /// batch-1 figure of the same run.
    #[arg(long)]
    batch: Option<String>,
    /// With --batch: also run this many steps with sequences joining and leaving and print
    /// host RSS and free device memory before/after (0: off).
    #[arg(long, default_value_t = 0)]
    churn_steps: usize,
    /// CPU: where the weights are read from: `ram` (the file copied into memory backed by huge
    /// pages where the kernel gives them: fewer TLB misses, as llama.cpp's CPU backend copies
    /// its weights into its own buffers), `map` (the file's memory map, in place) or `auto`
    /// (`ram` when the file fits in the available memory with a quarter to spare).
    #[arg(long, default_value = "auto", value_name = "auto|ram|map")]
    load: String,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-decode: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Figures of one run.
struct Figures {
    device: String,
    bandwidth: f64,
    prefill_s: f64,
    decode_s: f64,
    weight_bytes: usize,
}

fn run(args: Args) -> Result<(), String> {
    match args.device.as_str() {
        "cpu" => {}
        "cuda" => {
            if !cfg!(feature = "cuda") {
                return Err(
                    "this bench-decode was built without CUDA support: rebuild with \
                     `cargo build --release -p vramless-examples --features cuda --bin bench-decode`, \
                     or use --device cpu"
                        .into(),
                );
            }
        }
        d => return Err(format!("unknown device `{d}`: use cpu or cuda")),
    }
    if args.prompt_len == 0 || args.gen == 0 {
        return Err("--prompt-len and --gen must be at least 1".into());
    }
    let ctx = args
        .prompt_len
        .checked_add(args.gen)
        .and_then(|n| n.checked_add(8))
        .ok_or("--prompt-len + --gen is too large")?;
    let path = vramless_engine::model_path("bench-decode", args.model.clone())?;
    if let Some(list) = &args.batch {
        // Room for the staggered prefill: sequences whose prompt is done decode while the
        // others' prompts are fed within the step's token budget.
        let ctx = ctx
            .checked_add(args.prompt_len.max(64))
            .ok_or("--prompt-len + --gen is too large")?;
        return batch_mode(&args, &path, list, ctx);
    }
    #[cfg(feature = "cuda")]
    if args.device == "cuda" {
        let f = bench_cuda(&path, &args, ctx)?;
        return report(&args, &path, &f);
    }
    let f = bench_cpu(&path, &args, ctx)?;
    report(&args, &path, &f)
}

/// `--batch`: the multi-sequence engine at each batch size.
fn batch_mode(args: &Args, path: &Path, list: &str, ctx: usize) -> Result<(), String> {
    use vramless_engine::batch_run::{bench_batches, churn, parse_batches};
    use vramless_engine::engine::{cli::parse_device, BatchEngine, EngineOptions};
    let sizes = parse_batches(list)?;
    let device = parse_device(&args.device).map_err(|e| e.to_string())?;
    let opts = EngineOptions {
        device,
        ctx,
        max_seqs: sizes.iter().copied().max().unwrap_or(1),
        ..EngineOptions::default()
    };
    let mut engine = BatchEngine::open(path, &opts).map_err(|e| e.to_string())?;
    let c = engine.config();
    let weight_bytes = weight_bytes_per_token(engine.gguf(), c.n_layers, c.tied_output)?;
    let tok = Tokenizer::from_gguf(engine.gguf().metadata()).map_err(|e| e.to_string())?;
    let prompt = synthetic_prompt(&tok, args.prompt_len)?;
    let pool = engine.kv_pool();
    let per_seq = ctx.div_ceil(pool.block_positions.max(1)) as u64 * pool.bytes_per_block;
    let pool_bytes = pool.total as u64 * pool.bytes_per_block;
    eprintln!(
        "bench-decode: KV pool {:.1} MB ({} blocks), {:.2} MB per sequence of {ctx} positions; {:.1} MB of weights read per step",
        pool_bytes as f64 / 1e6,
        pool.total,
        per_seq as f64 / 1e6,
        weight_bytes as f64 / 1e6
    );
    let figs =
        bench_batches(&mut engine, &prompt, &sizes, args.gen, 0).map_err(|e| e.to_string())?;
    eprintln!(
        "{:>5} {:>12} {:>12} {:>10} {:>14}",
        "B", "agg tok/s", "tok/s/seq", "agg/(B*1)", "weights GB/s"
    );
    for f in &figs {
        eprintln!(
            "{:>5} {:>12.2} {:>12.2} {:>10.3} {:>14.1}",
            f.batch,
            f.aggregate_tok_s,
            f.per_seq_tok_s,
            f.ratio_to_b_x_single,
            weight_bytes as f64 * f.per_seq_tok_s / 1e9
        );
    }
    let mem = if args.churn_steps > 0 {
        let free = move || -> Option<u64> {
            #[cfg(feature = "cuda")]
            if device == vramless_engine::engine::Device::Cuda {
                return vramless_engine::engine::gpu::free_device_memory();
            }
            None
        };
        let m = churn(&mut engine, &prompt, args.churn_steps, opts.max_seqs, free)
            .map_err(|e| e.to_string())?;
        eprintln!(
            "bench-decode: memory check, {} steps, {} sequences joined and left: host RSS {:.1} -> {:.1} MB; device free {:?} -> {:?} bytes",
            m.steps,
            m.sequences,
            m.rss_before as f64 / 1e6,
            m.rss_after as f64 / 1e6,
            m.device_free_before,
            m.device_free_after
        );
        serde_json::to_value(&m).unwrap_or_default()
    } else {
        serde_json::Value::Null
    };
    let v = serde_json::json!({
        "model": path.display().to_string(),
        "device": args.device,
        "mode": "batch",
        "prompt_len": args.prompt_len,
        "gen": args.gen,
        "ctx": ctx,
        "weight_bytes_per_step": weight_bytes,
        "kv_pool_bytes": pool_bytes,
        "kv_bytes_per_seq": per_seq,
        "resident": !engine.plan().streaming,
        "batches": figs,
        "memory": mem,
    });
    println!("{v}");
    Ok(())
}

/// `n` deterministic non-special token ids (see the module docs).
fn synthetic_prompt(tok: &Tokenizer, n: usize) -> Result<Vec<u32>, String> {
    let vocab = tok.vocab_size();
    let start = vocab / 8;
    let ids: Vec<u32> = (0..vocab)
        .map(|i| (start + i) % vocab)
        .filter_map(|i| u32::try_from(i).ok())
        .filter(|&id| !tok.is_special(id))
        .take(n)
        .collect();
    if ids.is_empty() {
        return Err("the vocabulary has no non-special tokens".into());
    }
    Ok(ids.iter().copied().cycle().take(n).collect())
}

/// Weight bytes one decode step reads (see the module docs), from the GGUF's tensor table.
fn weight_bytes_per_token(file: &GgufFile, n_layers: usize, tied: bool) -> Result<usize, String> {
    let size = |name: &str| -> Result<usize, String> {
        let t = file
            .tensor(name)
            .ok_or_else(|| format!("the model has no tensor {name}"))?;
        let r = t.byte_range();
        usize::try_from(r.end.saturating_sub(r.start))
            .map_err(|_| format!("tensor {name} is too large"))
    };
    let mut total = size("output_norm.weight")?;
    total += size(if tied {
        "token_embd.weight"
    } else {
        "output.weight"
    })?;
    for i in 0..n_layers {
        for n in LAYER_TENSOR_NAMES {
            total += size(&format!("blk.{i}.{n}"))?;
        }
    }
    Ok(total)
}

/// Host memory bandwidth: 256 MiB memcpy, 5 timed copies after a warm-up, read + write counted.
fn host_bandwidth() -> f64 {
    const BYTES: usize = 256 << 20;
    const REPS: usize = 5;
    let src = vec![1u8; BYTES];
    let mut dst = vec![0u8; BYTES];
    dst.copy_from_slice(&src);
    let t = Instant::now();
    for _ in 0..REPS {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    }
    let secs = t.elapsed().as_secs_f64().max(1e-9);
    2.0 * (BYTES * REPS) as f64 / secs
}

fn bench_cpu(path: &Path, args: &Args, ctx: usize) -> Result<Figures, String> {
    let opts = ModelOptions {
        max_context: ctx,
        ..ModelOptions::default()
    };
    let (mut model, load) = open_cpu_model(path, opts, Load::parse(&args.load)?)?;
    eprintln!(
        "bench-decode: weights {}",
        if load == Load::Map {
            "read in place from the file's memory map"
        } else {
            "copied into memory (huge pages where the kernel gives them)"
        }
    );
    let (n_layers, tied) = (model.config().n_layers, model.config().tied_output);
    let weight_bytes = weight_bytes_per_token(model.gguf(), n_layers, tied)?;
    let tok = Tokenizer::from_gguf(model.gguf().metadata()).map_err(|e| e.to_string())?;
    let prompt = synthetic_prompt(&tok, args.prompt_len)?;
    eprintln!("bench-decode: measuring host memcpy bandwidth (256 MiB copies)");
    let bandwidth = host_bandwidth();
    // Warm-up (page in the weights), then the timed pass.
    let warm = prompt.len().min(8);
    model.prefill(&prompt[..warm]).map_err(|e| e.to_string())?;
    model.reset();
    let t = Instant::now();
    let mut next = argmax(&model.prefill(&prompt).map_err(|e| e.to_string())?);
    let prefill_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..args.gen {
        next = argmax(&model.decode(next).map_err(|e| e.to_string())?);
    }
    let decode_s = t.elapsed().as_secs_f64();
    Ok(Figures {
        device: format!(
            "cpu (batched prefill, weights: {})",
            if load == Load::Map { "map" } else { "ram" }
        ),
        bandwidth,
        prefill_s,
        decode_s,
        weight_bytes,
    })
}

#[cfg(feature = "cuda")]
fn bench_cuda(path: &Path, args: &Args, ctx: usize) -> Result<Figures, String> {
    let options = vramless_engine::cuda_options()?;
    let mut model = llama_model::cuda::CudaModel::open_with(path, ctx, &options)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let tok = Tokenizer::from_gguf(model.gguf().metadata()).map_err(|e| e.to_string())?;
    let prompt = synthetic_prompt(&tok, args.prompt_len)?;
    let arch = model.backend().arch().to_string();
    eprintln!("bench-decode: measuring device bandwidth (1 GiB device-to-device copies)");
    let bandwidth = model
        .backend()
        .measure_d2d_bandwidth(1 << 30, 10)
        .map_err(|e| e.to_string())?;
    // Warm-up (kernel loading, graph capture), then the timed pass.
    let warm = prompt.len().min(8);
    let w = model
        .prefill_argmax(&prompt[..warm])
        .map_err(|e| e.to_string())?;
    model.decode_argmax(w).map_err(|e| e.to_string())?;
    model.reset();
    let t = Instant::now();
    let mut next = model.prefill_argmax(&prompt).map_err(|e| e.to_string())?;
    let prefill_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..args.gen {
        next = model.decode_argmax(next).map_err(|e| e.to_string())?;
    }
    let decode_s = t.elapsed().as_secs_f64();
    Ok(Figures {
        device: format!(
            "cuda {arch}, CUDA graph {} (prefill: batched tensor-core path)",
            if model.cuda_graph_enabled() {
                "on"
            } else {
                "off (VRAMLESS_CUDA_GRAPH=0)"
            }
        ),
        bandwidth,
        prefill_s,
        decode_s,
        weight_bytes: model.weight_bytes_per_token(),
    })
}

fn report(args: &Args, path: &Path, f: &Figures) -> Result<(), String> {
    let prefill_tok_s = args.prompt_len as f64 / f.prefill_s.max(1e-12);
    let decode_tok_s = args.gen as f64 / f.decode_s.max(1e-12);
    let achieved = f.weight_bytes as f64 * decode_tok_s;
    let fraction = achieved / f.bandwidth;
    eprintln!("bench-decode: {} on {}", path.display(), f.device);
    eprintln!("  memory bandwidth        {:.1} GB/s", f.bandwidth / 1e9);
    eprintln!(
        "  prefill {:>5} tokens   {prefill_tok_s:.1} tok/s",
        args.prompt_len
    );
    eprintln!("  decode  {:>5} tokens   {decode_tok_s:.1} tok/s", args.gen);
    eprintln!(
        "  weight bytes per token  {} ({:.1} MB)",
        f.weight_bytes,
        f.weight_bytes as f64 / 1e6
    );
    eprintln!(
        "  decode reads           {:.1} GB/s = {:.1}% of the measured bandwidth",
        achieved / 1e9,
        100.0 * fraction
    );
    let v = serde_json::json!({
        "device": args.device,
        "detail": f.device,
        "prompt_len": args.prompt_len,
        "gen": args.gen,
        "prefill_batched": args.device != "cuda" || args.prompt_len >= 4,
        "bandwidth_gb_s": f.bandwidth / 1e9,
        "prefill_tok_s": prefill_tok_s,
        "decode_tok_s": decode_tok_s,
        "weight_bytes_per_token": f.weight_bytes,
        "decode_gb_s": achieved / 1e9,
        "bandwidth_fraction": fraction,
    });
    println!("{v}");
    Ok(())
}
