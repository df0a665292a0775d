//! Interactive chat with a Llama GGUF on the CPU, or on an NVIDIA GPU with `--device cuda`
//! (built with `--features cuda`; the whole model resident in VRAM), rendered with the model's
//! own chat template.
//!
//! ```text
//! cargo run --release --bin chat -- --model model.gguf
//! cargo run --release --features cuda --bin chat -- --device cuda --model model.gguf
//! # a model larger than the budget streams (the streaming engine; --stats after each reply)
//! cargo run --release --features cuda --bin chat -- --device cuda --model 70b.gguf --vram-budget 24GiB
//! ```
//! Type a message and press Enter; Ctrl-D exits. Earlier turns stay in the KV cache: each turn
//! feeds only the text the template adds after what the model has already seen (on CUDA the
//! history lives in the GPU's KV cache).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use llama_model::chat::{ChatTemplate, Conversation, PromptDelta};
use llama_model::cpu::ModelOptions;
use llama_model::sampler::{Sampler, SamplerConfig};
use llama_model::tokenizer::{StreamDecoder, Tokenizer};
use llama_model::TextGenerator;
use vramless_engine::cpu_load::{open_cpu_model, Load};
use vramless_engine::engine::cli::{parse_device, EngineArgs};
use vramless_engine::engine::Engine as StreamEngine;

#[derive(Parser, Debug)]
#[command(about = "Chat with a Llama GGUF (CPU reference backend or CUDA)", after_help = vramless_engine::default_model::HELP)]
struct Args {
    /// GGUF model file (default: SmolLM2-135M-Instruct Q4_1 from the cache, fetched on first use; see below).
    #[arg(long)]
    model: Option<PathBuf>,
    /// System message (default: the template's own, if it has one).
    #[arg(long)]
    system: Option<String>,
    /// Most tokens per reply.
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Top-k (0: off).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Top-p (1: off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Min-p (0: off).
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Repetition penalty (1: off).
    #[arg(long, default_value_t = 1.1)]
    repeat_penalty: f32,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// KV cache size in positions (0: the model's context length).
    #[arg(long, default_value_t = 4096)]
    ctx: usize,
    /// CPU, whole model resident: where the weights are read from: `auto` (a copy in memory,
    /// on huge pages where the kernel gives them, when the file fits in the available memory
    /// with a quarter to spare; else the map), `ram` or `map` (the file's memory map, in place).
    #[arg(long, default_value = "auto", value_name = "auto|ram|map")]
    load: String,
    /// Compute device: cpu, or cuda (needs a build with `--features cuda` and an NVIDIA GPU).
    #[arg(long, default_value = "cpu")]
    device: String,
    #[command(flatten)]
    engine: EngineArgs,
}

/// The error `--device cuda` gives in a build without feature `cuda`.
const NO_CUDA: &str = "this chat was built without CUDA support: rebuild with \
    `cargo build --release -p vramless-examples --features cuda --bin chat`, or use --device cpu";

/// Opens the model on the device `--device` names.
fn open(args: &Args, path: &Path) -> Result<Box<dyn TextGenerator>, String> {
    let too_big = {
        #[cfg(feature = "cuda")]
        {
            let size = std::fs::metadata(path).map_or(0, |m| m.len());
            args.device == "cuda"
                && vramless_engine::engine::gpu::free_device_memory().is_some_and(|free| {
                    size.saturating_add(vramless_engine::engine::budget::VRAM_HEADROOM) > free
                })
        }
        #[cfg(not(feature = "cuda"))]
        false
    };
    if args.engine.any() || too_big {
        let device = parse_device(&args.device).map_err(|e| e.to_string())?;
        let opts = args
            .engine
            .options(device, args.ctx)
            .map_err(|e| e.to_string())?;
        return Ok(Box::new(
            StreamEngine::open(path, &opts).map_err(|e| e.to_string())?,
        ));
    }
    match args.device.as_str() {
        "cpu" => {
            let opts = ModelOptions {
                max_context: args.ctx,
                ..ModelOptions::default()
            };
            let (m, _) = open_cpu_model(path, opts, Load::parse(&args.load)?)?;
            Ok(Box::new(m))
        }
        #[cfg(feature = "cuda")]
        "cuda" => {
            let options = vramless_engine::cuda_options()?;
            let m = llama_model::cuda::CudaModel::open_with(path, args.ctx, &options)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!(
                "chat: CUDA {}, whole model resident in VRAM; prompts run token by token",
                m.backend().arch()
            );
            Ok(Box::new(m))
        }
        #[cfg(not(feature = "cuda"))]
        "cuda" => Err(NO_CUDA.into()),
        d => Err(format!("unknown device `{d}`: use cpu or cuda")),
    }
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    if args.engine.trace.is_some() {
        return Err("--trace records the passes of one run: use it with generate, speculate or bench-stream-model, not chat".into());
    }
    if !matches!(args.device.as_str(), "cpu" | "cuda") {
        return Err(format!("unknown device `{}`: use cpu or cuda", args.device));
    }
    if args.device == "cuda" && !cfg!(feature = "cuda") {
        return Err(NO_CUDA.into());
    }
    let path = vramless_engine::model_path("chat", args.model.clone())?;
    let mut model = open(&args, &path)?;
    let tok = Tokenizer::from_gguf(model.gguf().metadata()).map_err(|e| e.to_string())?;
    let template = ChatTemplate::from_tokenizer_or_builtin(&tok).map_err(|e| e.to_string())?;
    let mut conv = match &args.system {
        Some(s) => Conversation::with_system(template, s),
        None => Conversation::new(template),
    };
    let mut sampler = Sampler::new(SamplerConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        seed: args.seed,
        ..SamplerConfig::default()
    });
    eprintln!(
        "chat: {} loaded ({} layers). Type a message, Enter to send, Ctrl-D to quit.",
        path.display(),
        model.config().n_layers
    );
    let mut history: Vec<u32> = Vec::new();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("> ");
        let Some(line) = lines.next() else {
            eprintln!();
            return Ok(());
        };
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let delta = conv.add_user(&line).map_err(|e| e.to_string())?;
        if let PromptDelta::Restart(_) = delta {
            model.reset();
            history.clear();
        }
        let mut new_tokens = Vec::new();
        if model.n_past() == 0 && tok.add_bos() {
            if let Some(bos) = tok.bos_id() {
                new_tokens.push(bos);
            }
        }
        new_tokens.extend(tok.encode(delta.text(), true).map_err(|e| e.to_string())?);
        if model.n_past() + new_tokens.len() + 1 >= model.max_context() {
            return Err(format!(
                "context full ({} positions cached, limit {}): restart the chat or pass a larger --ctx",
                model.n_past(),
                model.max_context()
            ));
        }
        let t = Instant::now();
        let mut logits = model.prefill(&new_tokens).map_err(|e| e.to_string())?;
        history.extend(&new_tokens);
        let mut reply_tokens = Vec::new();
        let mut stream = StreamDecoder::new(&tok);
        while reply_tokens.len() < args.max_tokens && model.n_past() < model.max_context() {
            let next = sampler
                .sample(&logits, &history)
                .map_err(|e| e.to_string())?;
            if tok.is_eog(next) {
                break;
            }
            reply_tokens.push(next);
            history.push(next);
            let _ = stdout.write_all(stream.push(next).as_bytes());
            let _ = stdout.flush();
            logits = model.decode(next).map_err(|e| e.to_string())?;
        }
        let _ = stdout.write_all(stream.finish().as_bytes());
        let _ = writeln!(stdout);
        let _ = stdout.flush();
        let reply = tok.decode(&reply_tokens);
        // Every generated token went through the model; the end-of-turn token did not, so the
        // template's end-of-turn text is part of the next turn's delta.
        conv.add_assistant(&reply, &reply);
        eprintln!(
            "chat: [{} new prompt tokens, {} reply tokens, {:.1} s, {} positions cached]",
            new_tokens.len(),
            reply_tokens.len(),
            t.elapsed().as_secs_f64(),
            model.n_past()
        );
        if args.engine.stats {
            if let Some(r) = model.stats_report() {
                eprint!("{r}");
            }
        }
    }
}
