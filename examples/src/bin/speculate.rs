//! Self-speculative decoding on the CPU reference backend: the first `--draft-layers` layers
//! draft `--k` tokens, one full-model pass verifies them.
//!
//! ```text
//! cargo run --release --bin speculate -- --prompt "The capital of France is" --draft-layers 8 --k 4
//! cargo run --release --bin speculate -- --prompt "Once upon a time" --adaptive --compare
//! ```
//! The text goes to stdout; statistics (acceptance rate, tokens per verify pass) to stderr.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use llama_model::cpu::Model;
use llama_model::skip::SkipMap;
use llama_model::speculative::{AdaptiveConfig, SelfSpeculative, SpecConfig};
use llama_model::tokenizer::{StreamDecoder, Tokenizer};

#[derive(Parser, Debug)]
#[command(about = "Self-speculative decoding (draft = the first layers of the model)")]
struct Args {
    /// GGUF model file (default: the SmolLM2-135M model from scripts/fetch-model.sh).
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
    /// A skip map whose layers below --draft-layers the draft also skips.
    #[arg(long)]
    skip_map: Option<PathBuf>,
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
}

fn run(args: Args) -> Result<(), String> {
    let path = vramless_engine::model_path("speculate", args.model)?;
    let mut model = Model::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let tok = Tokenizer::from_gguf(model.gguf().metadata()).map_err(|e| e.to_string())?;
    let prompt = tok.encode_prompt(&args.prompt).map_err(|e| e.to_string())?;
    let n = model.config().n_layers;
    let draft_skip = match &args.skip_map {
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
            let t = llama_model::speculative::argmax(&logits) as u32;
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

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("speculate: error: {e}");
            ExitCode::FAILURE
        }
    }
}
