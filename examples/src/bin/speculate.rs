//! Self-speculative decoding on the CPU reference backend: the first `--draft-layers` layers
//! draft `--k` tokens, one full-model pass verifies them.
//!
//! ```text
//! cargo run --release --bin speculate -- --prompt "The capital of France is" --draft-layers 8 --k 4
//! cargo run --release --bin speculate -- --prompt "Once upon a time" --adaptive --compare
//! ```
//! The text goes to stdout; statistics (acceptance rate, tokens per verify pass) to stderr.
//!
//! With `--device cpu|cuda` (or any streaming flag such as `--vram-budget`) it runs in the
//! streaming engine instead: the plan pins the draft layers to the device, the verify pass
//! streams the other layers once per round (batched on CUDA). `--compare` then also decodes
//! plainly with the same engine and exits non-zero when greedy tokens differ; `--json F`
//! writes both token lists and the statistics.
//!
//! ```text
//! cargo run --release --features cuda --bin speculate -- --device cuda --vram-budget 24GiB \
//!     --model 70b.gguf --prompt "Hi" --draft-layers 10 --k 4 --compare --json out.json
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use llama_model::cpu::Model;
use llama_model::skip::SkipMap;
use llama_model::speculative::{AdaptiveConfig, SelfSpeculative, SpecConfig};
use llama_model::tokenizer::{StreamDecoder, Tokenizer};
use vramless_engine::engine::cli::{parse_device, EngineArgs};
use vramless_engine::engine::{Engine, SpecOptions};

#[derive(Parser, Debug)]
#[command(about = "Self-speculative decoding (draft = the first layers of the model)", after_help = vramless_engine::default_model::HELP)]
struct Args {
    /// GGUF model file (default: SmolLM2-135M-Instruct Q4_1 from the cache, fetched on first use; see below).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Prompt text (special tokens parsed; BOS added when the vocabulary asks for it).
    #[arg(long)]
    prompt: String,
    /// Layers of the draft model.
    #[arg(long, default_value_t = 8)]
    draft_layers: usize,
    /// Draft tokens per round (the starting value with --adaptive).
    #[arg(long, default_value_t = 4)]
    k: usize,
    /// Adapt K to the running acceptance rate.
    #[arg(long)]
    adaptive: bool,
    /// Largest K with --adaptive.
    #[arg(long, default_value_t = 8)]
    k_max: usize,
    /// Cost of one draft token relative to one verify pass, for --adaptive (default: running
    /// draft layers / all layers, right when compute bound; near 0 when the verify pass streams).
    #[arg(long)]
    draft_cost: Option<f64>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Sampling temperature (0: greedy, identical to plain greedy decoding).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also decode plainly (greedy) and report whether the tokens match and both timings.
    #[arg(long)]
    compare: bool,
    /// Run in the streaming engine on this device (cpu or cuda). --skip-map then applies to
    /// the whole model (draft and verify); without the engine, to the draft only.
    #[arg(long)]
    device: Option<String>,
    /// KV cache positions (engine only).
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Write tokens and statistics as JSON here (engine only).
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
}

fn run(args: Args) -> Result<(), String> {
    if args.device.is_some() || args.engine.any() {
        return run_engine(args);
    }
    let path = vramless_engine::model_path("speculate", args.model)?;
    let mut model = Model::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let tok = Tokenizer::from_gguf(model.gguf().metadata()).map_err(|e| e.to_string())?;
    let prompt = tok.encode_prompt(&args.prompt).map_err(|e| e.to_string())?;
    let n = model.config().n_layers;
    let draft_skip = match &args.engine.skip_map {
        Some(p) => SkipMap::load_for(p, &path, n)
            .map_err(|e| e.to_string())?
            .skipped
            .into_iter()
            .filter(|&i| i < args.draft_layers)
            .collect(),
        None => Vec::new(),
    };
    let config = SpecConfig {
        draft_layers: args.draft_layers,
        draft_skip: draft_skip.clone(),
        k: args.k,
        adaptive: args.adaptive.then(|| AdaptiveConfig {
            k_max: args.k_max,
            draft_cost: args.draft_cost.unwrap_or(
                (args.draft_layers - draft_skip.len().min(args.draft_layers)) as f64 / n as f64,
            ),
            ..AdaptiveConfig::default()
        }),
        temperature: args.temperature,
        seed: args.seed,
        max_context: prompt.len() + args.max_tokens + args.k_max.max(args.k) + 1,
    };
    let mut spec = SelfSpeculative::new(&model, config).map_err(|e| e.to_string())?;
    let mut dec = StreamDecoder::new(&tok);
    let mut stdout = std::io::stdout();
    let t0 = Instant::now();
    let out = spec
        .generate(&prompt, args.max_tokens, &|t| tok.is_eog(t), &mut |t| {
            let _ = write!(stdout, "{}", dec.push(t));
            let _ = stdout.flush();
        })
        .map_err(|e| e.to_string())?;
    let _ = writeln!(stdout, "{}", dec.finish());
    let spec_s = t0.elapsed().as_secs_f64();
    let s = spec.stats();
    eprintln!(
        "draft layers {} (skipping {:?}), K {}{}: {} tokens in {:.2} s ({:.2} tok/s)",
        args.draft_layers,
        draft_skip,
        args.k,
        if args.adaptive { " adaptive" } else { "" },
        out.len(),
        spec_s,
        out.len() as f64 / spec_s
    );
    eprintln!(
        "acceptance {:.1}% ({} of {} drafts), {:.2} tokens per verify pass ({} passes), {} draft steps",
        s.acceptance_rate() * 100.0,
        s.accepted,
        s.drafted,
        s.tokens_per_verify(),
        s.verify_passes,
        s.draft_steps
    );
    if args.compare {
        drop(spec);
        let t1 = Instant::now();
        let mut plain = Vec::new();
        let mut logits = model.prefill(&prompt).map_err(|e| e.to_string())?;
        while plain.len() < args.max_tokens {
            let t = llama_model::sampler::argmax(&logits);
            plain.push(t);
            if tok.is_eog(t) || plain.len() >= args.max_tokens {
                break;
            }
            logits = model.decode(t).map_err(|e| e.to_string())?;
        }
        let plain_s = t1.elapsed().as_secs_f64();
        eprintln!(
            "plain greedy: {} tokens in {:.2} s ({:.2} tok/s); speculative output {} plain greedy",
            plain.len(),
            plain_s,
            plain.len() as f64 / plain_s,
            if plain == out {
                "IDENTICAL to"
            } else {
                "DIFFERS from"
            }
        );
    }
    Ok(())
}

/// Self-speculative decoding in the streaming engine.
fn run_engine(args: Args) -> Result<(), String> {
    let device =
        parse_device(args.device.as_deref().unwrap_or("cpu")).map_err(|e| e.to_string())?;
    let path = vramless_engine::model_path("speculate", args.model.clone())?;
    let mut opts = args
        .engine
        .options(device, args.ctx)
        .map_err(|e| e.to_string())?;
    opts.draft_layers = args.draft_layers;
    let mut engine = Engine::open(&path, &opts).map_err(|e| e.to_string())?;
    let tok = Tokenizer::from_gguf(engine.gguf().metadata()).map_err(|e| e.to_string())?;
    let prompt = tok.encode_prompt(&args.prompt).map_err(|e| e.to_string())?;
    let n = engine.config().n_layers;
    let so = SpecOptions {
        k: args.k,
        adaptive: args.adaptive.then(|| AdaptiveConfig {
            k_max: args.k_max,
            draft_cost: args
                .draft_cost
                .unwrap_or(engine.draft_layers() as f64 / n as f64),
            ..AdaptiveConfig::default()
        }),
        temperature: args.temperature,
        seed: args.seed,
    };
    let t0 = Instant::now();
    let run = engine
        .speculate(&prompt, args.max_tokens, &so)
        .map_err(|e| e.to_string())?;
    let spec_s = t0.elapsed().as_secs_f64();
    let mut dec = StreamDecoder::new(&tok);
    let mut text = String::new();
    for &t in &run.tokens {
        if tok.is_eog(t) {
            break;
        }
        text.push_str(&dec.push(t));
    }
    text.push_str(&dec.finish());
    println!("{text}");
    eprintln!(
        "engine speculate: draft layers {} (running {}), K {}{}: {} tokens in {spec_s:.3} s ({:.3} tok/s)",
        args.draft_layers,
        engine.draft_layers(),
        args.k,
        if args.adaptive { " adaptive" } else { "" },
        run.tokens.len(),
        run.tokens.len() as f64 / spec_s
    );
    eprintln!("{}", run.summary());
    if args.engine.stats {
        eprint!("{}", engine.stats().report());
    }
    args.engine
        .write_trace(engine.trace())
        .map_err(|e| e.to_string())?;
    let mut plain = None;
    let mut plain_s = 0.0;
    if args.compare {
        engine.reset();
        let t1 = Instant::now();
        plain = Some(
            engine
                .greedy(&prompt, args.max_tokens)
                .map_err(|e| e.to_string())?,
        );
        plain_s = t1.elapsed().as_secs_f64();
    }
    let first_diff = plain
        .as_ref()
        .and_then(|p| (0..p.len().max(run.tokens.len())).find(|&i| p.get(i) != run.tokens.get(i)));
    if let Some(p) = &plain {
        eprintln!(
            "plain greedy: {} tokens in {plain_s:.3} s ({:.3} tok/s); speculative tokens {}",
            p.len(),
            p.len() as f64 / plain_s,
            match first_diff {
                None => "IDENTICAL to plain greedy".to_string(),
                Some(i) => format!("DIFFER from plain greedy from index {i}"),
            }
        );
    }
    if let Some(j) = &args.json {
        let s = &run.stats;
        let v = serde_json::json!({
            "device": args.device,
            "draft_layers": engine.draft_layers(),
            "k": args.k,
            "adaptive": args.adaptive,
            "temperature": args.temperature,
            "tokens": run.tokens,
            "plain": plain,
            "identical": plain.as_ref().map(|_| first_diff.is_none()),
            "first_difference": first_diff,
            "spec_s": spec_s,
            "plain_s": plain_s,
            "verify_passes": s.verify_passes,
            "drafted": s.drafted,
            "accepted": s.accepted,
            "generated": s.generated,
            "acceptance": s.acceptance_rate(),
            "tokens_per_pass": run.tokens_per_pass(),
            "ks": run.ks,
            "draft_s": run.draft_time.as_secs_f64(),
            "verify_s": run.verify_time.as_secs_f64(),
        });
        std::fs::write(j, format!("{v}\n")).map_err(|e| format!("{}: {e}", j.display()))?;
    }
    let greedy = args.temperature.is_nan() || args.temperature <= 0.0;
    match first_diff {
        Some(i) if greedy => Err(format!(
            "greedy speculative tokens differ from plain greedy decoding from index {i}"
        )),
        _ => Ok(()),
    }
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("speculate: error: {e}");
            ExitCode::FAILURE
        }
    }
}
