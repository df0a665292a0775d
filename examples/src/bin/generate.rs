//! Generate text from a Llama GGUF on the CPU, or on an NVIDIA GPU with `--device cuda` (built
//! with `--features cuda`; the whole model resident in VRAM).
//!
//! ```text
//! cargo run --release --bin generate -- --prompt "The capital of France is" --max-tokens 32
//! cargo run --release --features cuda --bin generate -- --device cuda --prompt "Hi" --bench
//! # a model larger than the budget streams its other layers every token (the streaming engine)
//! cargo run --release --features cuda --bin generate -- --device cuda --model 70b.gguf \
//!     --vram-budget 24GiB --ram-budget 16GiB --stats --prompt "Hi"
//! ```
//! Text streams to stdout; progress and figures go to stderr. With no `--model` the default
//! model (SmolLM2-135M-Instruct Q4_1) is used, fetched by `scripts/fetch-model.sh` if missing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use llama_model::cpu::{Model, ModelOptions};
use llama_model::sampler::{argmax, Sampler, SamplerConfig};
use llama_model::tokenizer::{StreamDecoder, Tokenizer};
use llama_model::TextGenerator;
use vramless_engine::cpu_load::{open_cpu_model, Load};
use vramless_engine::engine::cli::{parse_device, EngineArgs};
use vramless_engine::engine::Engine as StreamEngine;
use vramless_engine::engine::{BatchEngine, FinishReason};

#[derive(Parser, Debug)]
#[command(about = "Generate text from a Llama GGUF (CPU reference backend or CUDA)", after_help = vramless_engine::default_model::HELP)]
struct Args {
    /// GGUF model file (default: SmolLM2-135M-Instruct Q4_1 from the cache, fetched on first use; see below).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Prompt text (special tokens such as <|im_start|> are parsed). With `--bench` and no
    /// prompt, a short built-in prompt is used.
    #[arg(
        long,
        conflicts_with_all = ["prompt_file", "batch_file"],
        required_unless_present_any = ["prompt_file", "bench", "batch_file"]
    )]
    prompt: Option<String>,
    /// Read the prompt from this file.
    #[arg(long, conflicts_with = "batch_file")]
    prompt_file: Option<PathBuf>,
    /// Many prompts, one a line (empty lines skipped), generated together as one batch through
    /// the multi-sequence engine (at most --max-seqs at once, the rest join as others finish);
    /// each result is printed after its prompt's number once all are done.
    #[arg(long)]
    batch_file: Option<PathBuf>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Top-k (0: off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Top-p (1: off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Min-p (0: off).
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// Repetition penalty (1: off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Compute device: cpu, or cuda (needs a build with `--features cuda` and an NVIDIA GPU).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// KV cache size in positions (0: the model's context length).
    #[arg(long, default_value_t = 4096)]
    ctx: usize,
    /// CPU, whole model resident: where the weights are read from: `auto` (a copy in memory,
    /// on huge pages where the kernel gives them, when the file fits in the available memory
    /// with a quarter to spare; else the map), `ram` or `map` (the file's memory map, in place).
    #[arg(long, default_value = "auto", value_name = "auto|ram|map")]
    load: String,
    /// Write {"prompt_tokens":[..],"tokens":[..],"text":".."} here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the f32 little-endian logits after the last prompt token here.
    #[arg(long)]
    dump_logits: Option<PathBuf>,
    /// Print prefill and decode speed (also a standard 128-token prefill + 64-token decode).
    #[arg(long)]
    bench: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

/// True when the streaming engine should run: a streaming flag was given, or (on CUDA) the
/// model file is larger than the free device memory.
fn use_engine(args: &Args, path: &Path) -> bool {
    if args.engine.any() {
        return true;
    }
    #[cfg(feature = "cuda")]
    if args.device == "cuda" {
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        let free = vramless_engine::engine::gpu::free_device_memory().unwrap_or(u64::MAX);
        return size.saturating_add(vramless_engine::engine::budget::VRAM_HEADROOM) > free;
    }
    let _ = path;
    false
}

#[cfg(feature = "cuda")]
fn open_cuda(path: &Path, ctx: usize) -> Result<llama_model::cuda::CudaModel, String> {
    let options = vramless_engine::cuda_options()?;
    llama_model::cuda::CudaModel::open_with(path, ctx, &options)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("generate: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The prompt `--bench` uses when none is given.
const BENCH_PROMPT: &str = "The capital of France is";

fn run(args: Args) -> Result<(), String> {
    match args.device.as_str() {
        "cpu" => {}
        "cuda" => {
            if !cfg!(feature = "cuda") {
                return Err(
                    "this generate was built without CUDA support: rebuild with \
                     `cargo build --release -p vramless-examples --features cuda --bin generate`, \
                     or use --device cpu"
                        .into(),
                );
            }
        }
        d => return Err(format!("unknown device `{d}`: use cpu or cuda")),
    }
    let path = vramless_engine::model_path("generate", args.model.clone())?;
    if let Some(file) = &args.batch_file {
        return batch(&args, &path, file);
    }
    let prompt = match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read prompt file {}: {e}", f.display()))?,
        (None, None) if args.bench => BENCH_PROMPT.to_string(),
        (None, None) => return Err("give --prompt or --prompt-file".into()),
    };
    let t0 = Instant::now();
    if use_engine(&args, &path) {
        let device = parse_device(&args.device).map_err(|e| e.to_string())?;
        let opts = args
            .engine
            .options(device, args.ctx)
            .map_err(|e| e.to_string())?;
        let mut engine = StreamEngine::open(&path, &opts).map_err(|e| e.to_string())?;
        let loaded = t0.elapsed().as_secs_f64();
        let mode = if engine.plan().streaming {
            "streaming engine"
        } else {
            "engine, all layers resident"
        };
        generate(&mut engine, &args, &prompt, &path, loaded, mode)?;
        if args.engine.stats {
            eprint!("{}", engine.stats().report());
        }
        args.engine
            .write_trace(engine.trace())
            .map_err(|e| e.to_string())?;
        return Ok(());
    }
    #[cfg(feature = "cuda")]
    if args.device == "cuda" {
        let mut model = open_cuda(&path, args.ctx)?;
        let b = model.backend();
        eprintln!(
            "generate: CUDA {} — whole model resident in VRAM ({:.1} MB of weights per token); \
             prompts run token by token (no batched prefill yet)",
            b.arch(),
            model.weight_bytes_per_token() as f64 / 1e6
        );
        let loaded = t0.elapsed().as_secs_f64();
        let prompt_tokens = generate(&mut model, &args, &prompt, &path, loaded, "GPU")?;
        if args.bench {
            bench_cuda(&mut model, &prompt_tokens)?;
        }
        return Ok(());
    }
    let opts = ModelOptions {
        max_context: args.ctx,
        ..ModelOptions::default()
    };
    let (mut model, _) = open_cpu_model(&path, opts, Load::parse(&args.load)?)?;
    let loaded = t0.elapsed().as_secs_f64();
    let threads = format!("{} threads", rayon_threads());
    let prompt_tokens = generate(&mut model, &args, &prompt, &path, loaded, &threads)?;
    if args.bench {
        bench(&mut model, &prompt_tokens)?;
    }
    Ok(())
}

/// `--batch-file`: every line a prompt, all through one BatchEngine; prints each result.
fn batch(args: &Args, path: &Path, file: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read batch file {}: {e}", file.display()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return Err(format!("{} holds no prompts (one a line)", file.display()));
    }
    let device = parse_device(&args.device).map_err(|e| e.to_string())?;
    let opts = args
        .engine
        .options(device, args.ctx)
        .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let mut engine = BatchEngine::open(path, &opts).map_err(|e| e.to_string())?;
    let tok = Tokenizer::from_gguf(engine.gguf().metadata()).map_err(|e| e.to_string())?;
    let prompts = lines
        .iter()
        .map(|l| tok.encode_prompt(l).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(format!("prompt {} encodes to no tokens", i + 1));
    }
    eprintln!(
        "generate: {} prompts through the multi-sequence engine ({} at once, {} positions each; loaded in {:.2} s)",
        prompts.len(),
        engine.max_seqs(),
        engine.max_context(),
        t0.elapsed().as_secs_f64()
    );
    let sampler = SamplerConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        seed: args.seed,
        ..SamplerConfig::default()
    };
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let room = engine.max_context().saturating_sub(longest);
    if room == 0 {
        return Err(format!(
            "a prompt of {longest} tokens leaves no room in the context of {} positions: raise --ctx",
            engine.max_context()
        ));
    }
    let max_new = args.max_tokens.min(room).max(1);
    let t = Instant::now();
    let done = vramless_engine::batch_run::run_prompts(
        &mut engine,
        &prompts,
        &sampler,
        max_new,
        &tok.eog_ids(),
        |_, _| {},
    )
    .map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    let total: usize = done.iter().map(|c| c.tokens.len()).sum();
    let mut stdout = std::io::stdout();
    for (i, (line, c)) in lines.iter().zip(&done).enumerate() {
        let _ = writeln!(
            stdout,
            "=== {} ({} tokens, {:?}) {line}\n{}",
            i + 1,
            c.tokens.len(),
            c.finish.unwrap_or(FinishReason::Length),
            tok.decode(&c.tokens)
        );
    }
    eprintln!(
        "generate: {total} tokens for {} prompts in {secs:.2} s = {:.2} tok/s aggregate ({} steps)",
        prompts.len(),
        total as f64 / secs.max(1e-12),
        engine.stats().passes
    );
    if let Some(g) = engine.growth_stats() {
        eprintln!(
            "generate: KV growth: {} layer moves off the device, {} back; the pool grew {} times and shrank {} times",
            g.demoted, g.promoted, g.grown, g.trimmed
        );
    }
    if args.engine.stats {
        eprint!("{}", engine.stats().report());
    }
    args.engine
        .write_trace(engine.trace())
        .map_err(|e| e.to_string())?;
    if let Some(j) = &args.json {
        let v: Vec<serde_json::Value> = prompts
            .iter()
            .zip(&done)
            .map(|(p, c)| {
                serde_json::json!({"prompt_tokens": p, "tokens": c.tokens, "text": tok.decode(&c.tokens)})
            })
            .collect();
        std::fs::write(j, serde_json::Value::Array(v).to_string())
            .map_err(|e| format!("cannot write {}: {e}", j.display()))?;
    }
    Ok(())
}

/// Tokenizes, prefills, then samples up to `--max-tokens` tokens, streaming the text to stdout.
/// Returns the prompt tokens.
fn generate(
    model: &mut dyn TextGenerator,
    args: &Args,
    prompt: &str,
    path: &Path,
    loaded_s: f64,
    where_: &str,
) -> Result<Vec<u32>, String> {
    let tok = Tokenizer::from_gguf(model.gguf().metadata()).map_err(|e| e.to_string())?;
    let c = model.config();
    eprintln!(
        "generate: {} — {} layers, width {}, {} heads / {} kv heads, vocab {} (loaded in {:.2} s, {})",
        path.display(),
        c.n_layers,
        c.dim,
        c.n_heads,
        c.n_kv_heads,
        c.vocab_size,
        loaded_s,
        where_,
    );
    let prompt_tokens = tok.encode_prompt(prompt).map_err(|e| e.to_string())?;
    if prompt_tokens.is_empty() {
        return Err("the prompt encodes to no tokens".into());
    }
    eprintln!("generate: {} prompt tokens", prompt_tokens.len());

    let sampler_config = SamplerConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        seed: args.seed,
        ..SamplerConfig::default()
    };
    let mut sampler = Sampler::new(sampler_config.clone());
    // Sampled decoding on the GPU: the repetition penalty and the top-k selection run there and
    // only the k candidates cross the bus; the host sampler (penalty off) finishes the draw.
    // Exact only when top-k is on and within the GPU selection's limit, else the logits come down.
    let mut device_top_k = gpu_top_k_plan(&args.device, &sampler_config);

    // On the GPU, plain greedy decoding takes the argmax there: only token ids cross the bus.
    let gpu_greedy = args.device == "cuda"
        && (args.temperature.is_nan() || args.temperature <= 0.0)
        && args.repeat_penalty == 1.0
        && args.dump_logits.is_none();
    let t_prefill = Instant::now();
    let mut logits = Vec::new();
    let mut next_greedy = 0u32;
    if gpu_greedy {
        next_greedy = model
            .prefill_argmax(&prompt_tokens)
            .map_err(|e| e.to_string())?;
    } else {
        logits = model.prefill(&prompt_tokens).map_err(|e| e.to_string())?;
    }
    let prefill_s = t_prefill.elapsed().as_secs_f64();
    if let Some(p) = &args.dump_logits {
        let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(p, bytes).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }

    let mut history = prompt_tokens.clone();
    let mut generated = Vec::new();
    let mut stream = StreamDecoder::new(&tok);
    let mut stdout = std::io::stdout();
    let t_decode = Instant::now();
    let mut decoded = 0usize;
    let vocab_size = model.config().vocab_size;
    let mut candidates: Option<Vec<(u32, f32)>> = None;
    while generated.len() < args.max_tokens {
        let next = if gpu_greedy {
            next_greedy
        } else if let (Some(cands), Some((host, _))) = (candidates.take(), device_top_k.as_mut()) {
            finish_on_host(host, &cands, vocab_size)?
        } else {
            sampler
                .sample(&logits, &history)
                .map_err(|e| e.to_string())?
        };
        if tok.is_eog(next) {
            break;
        }
        generated.push(next);
        history.push(next);
        let piece = stream.push(next);
        let _ = stdout.write_all(piece.as_bytes());
        let _ = stdout.flush();
        if generated.len() == args.max_tokens {
            break;
        }
        if model.n_past() >= model.max_context() {
            eprintln!("\ngenerate: context full ({} positions)", model.n_past());
            break;
        }
        if gpu_greedy {
            next_greedy = model.decode_argmax(next).map_err(|e| e.to_string())?;
        } else if let Some((_, k)) = device_top_k.as_ref() {
            let recent = &history[history.len().saturating_sub(sampler_config.repeat_last_n)..];
            candidates = model
                .decode_top_k(next, *k, sampler_config.repeat_penalty, recent)
                .map_err(|e| e.to_string())?;
            if candidates.is_none() {
                // This backend selects no candidates on the device: download the logits.
                device_top_k = None;
                logits = model.decode(next).map_err(|e| e.to_string())?;
            }
        } else {
            logits = model.decode(next).map_err(|e| e.to_string())?;
        }
        decoded += 1;
    }
    let decode_s = t_decode.elapsed().as_secs_f64();
    let _ = stdout.write_all(stream.finish().as_bytes());
    let _ = writeln!(stdout);

    eprintln!(
        "generate: prefill {} tokens in {:.3} s ({:.1} tok/s); {} tokens generated, decode {:.1} tok/s",
        prompt_tokens.len(),
        prefill_s,
        prompt_tokens.len() as f64 / prefill_s,
        generated.len(),
        if decode_s > 0.0 { decoded as f64 / decode_s } else { 0.0 }
    );

    if let Some(p) = &args.json {
        let v = serde_json::json!({
            "prompt_tokens": prompt_tokens,
            "tokens": generated,
            "text": tok.decode(&generated),
        });
        std::fs::write(p, v.to_string())
            .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    Ok(prompt_tokens)
}

/// GPU figures: 128 prompt tokens (fed token by token: there is no batched prefill yet), then
/// 64 greedy decode steps with the argmax on the GPU, median of 3 runs; plus the device memory
/// bandwidth (1 GiB device-to-device copies) and the fraction of it decode reaches.
#[cfg(feature = "cuda")]
fn bench_cuda(model: &mut llama_model::cuda::CudaModel, prompt: &[u32]) -> Result<(), String> {
    let pp: Vec<u32> = prompt.iter().copied().cycle().take(128).collect();
    let mut pp_times = Vec::new();
    let mut tg_times = Vec::new();
    for _ in 0..3 {
        model.reset();
        let t = Instant::now();
        let mut next = model.prefill_argmax(&pp).map_err(|e| e.to_string())?;
        pp_times.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        for _ in 0..64 {
            next = model.decode_argmax(next).map_err(|e| e.to_string())?;
        }
        tg_times.push(t.elapsed().as_secs_f64());
    }
    pp_times.sort_by(f64::total_cmp);
    tg_times.sort_by(f64::total_cmp);
    let bw = model
        .backend()
        .measure_d2d_bandwidth(1 << 30, 10)
        .map_err(|e| e.to_string())?;
    let (pp_s, tg_s) = (128.0 / pp_times[1], 64.0 / tg_times[1]);
    let bytes = model.weight_bytes_per_token() as f64;
    eprintln!(
        "bench (CUDA {}): prefill 128 tokens (token by token): {pp_s:.1} tok/s; decode 64 tokens: {tg_s:.1} tok/s (median of 3)",
        model.backend().arch()
    );
    eprintln!(
        "bench: {:.1} MB of weights per token -> {:.1} GB/s at decode; device D2D bandwidth {:.1} GB/s; {:.1}% of it",
        bytes / 1e6,
        bytes * tg_s / 1e9,
        bw / 1e9,
        100.0 * bytes * tg_s / bw
    );
    println!(
        "{{\"prefill_tok_s\":{pp_s:.2},\"decode_tok_s\":{tg_s:.2},\"weight_bytes_per_token\":{bytes},\"d2d_gb_s\":{:.2}}}",
        bw / 1e9
    );
    Ok(())
}

/// Worker threads of the forward pass: RAYON_NUM_THREADS if set, else the core count.
fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Standard figures like llama-bench's pp128 / tg64: 128 prompt tokens (the prompt repeated)
/// as one prefill, then 64 single-token decode steps, each timed over the median of 3 runs.
fn bench(model: &mut Model, prompt: &[u32]) -> Result<(), String> {
    let pp: Vec<u32> = prompt.iter().copied().cycle().take(128).collect();
    let mut pp_times = Vec::new();
    let mut tg_times = Vec::new();
    let (mut pp_cpu, mut tg_cpu) = (0.0, 0.0);
    for _ in 0..3 {
        model.reset();
        let (t, c) = (Instant::now(), cpu_seconds());
        let logits = model.prefill(&pp).map_err(|e| e.to_string())?;
        pp_times.push(t.elapsed().as_secs_f64());
        let c1 = cpu_seconds();
        pp_cpu += c1 - c;
        let mut next = argmax(&logits);
        let t = Instant::now();
        for _ in 0..64 {
            next = argmax(&model.decode(next).map_err(|e| e.to_string())?);
        }
        tg_times.push(t.elapsed().as_secs_f64());
        tg_cpu += cpu_seconds() - c1;
    }
    pp_times.sort_by(f64::total_cmp);
    tg_times.sort_by(f64::total_cmp);
    eprintln!(
        "bench: prefill 128 tokens: {:.1} tok/s; decode 64 tokens: {:.1} tok/s (median of 3, {} threads)",
        128.0 / pp_times[1],
        64.0 / tg_times[1],
        rayon_threads()
    );
    let threads = rayon_threads() as f64;
    if pp_cpu > 0.0 && tg_cpu > 0.0 {
        // On a shared machine wall time includes waiting for other processes; CPU time spent
        // by this process over the thread count is what an idle machine would take (an upper
        // bound on the idle wall time: it includes the worker threads' spinning).
        eprintln!(
            "bench: from CPU time / {threads} threads (idle-machine estimate): prefill {:.1} tok/s, decode {:.1} tok/s",
            3.0 * 128.0 / (pp_cpu / threads),
            3.0 * 64.0 / (tg_cpu / threads)
        );
    }
    println!(
        "{{\"prefill_tok_s\":{:.2},\"decode_tok_s\":{:.2}}}",
        128.0 / pp_times[1],
        64.0 / tg_times[1]
    );
    Ok(())
}

/// User + system CPU seconds of this process (Linux /proc; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The host sampler and k for sampling from GPU-selected candidates, when that is exact: device
/// cuda, sampling (temperature > 0) with top-k on and within the GPU selection's limit.
#[cfg(feature = "cuda")]
fn gpu_top_k_plan(device: &str, config: &SamplerConfig) -> Option<(Sampler, usize)> {
    let sampling = config.temperature.is_finite() && config.temperature > 0.0;
    if device != "cuda"
        || !sampling
        || config.top_k == 0
        || config.top_k > llama_model::cuda::MAX_TOP_K
    {
        return None;
    }
    let (host, k) = llama_model::cuda::gpu_sampling_plan(config);
    Some((Sampler::new(host), k))
}

/// Without feature cuda there is no device candidate selection.
#[cfg(not(feature = "cuda"))]
fn gpu_top_k_plan(_device: &str, _config: &SamplerConfig) -> Option<(Sampler, usize)> {
    None
}

/// Draws the next token from device-selected candidates with the host sampler.
#[cfg(feature = "cuda")]
fn finish_on_host(host: &mut Sampler, cands: &[(u32, f32)], vocab: usize) -> Result<u32, String> {
    llama_model::cuda::finish_sample(host, cands, vocab).map_err(|e| e.to_string())
}

/// Without feature cuda no candidates are ever selected on a device.
#[cfg(not(feature = "cuda"))]
fn finish_on_host(
    _host: &mut Sampler,
    _cands: &[(u32, f32)],
    _vocab: usize,
) -> Result<u32, String> {
    Err("device candidate sampling needs a build with --features cuda".into())
}
