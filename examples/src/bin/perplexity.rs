//! Perplexity of a text under a Llama GGUF, as llama.cpp's `llama-perplexity` computes it
//! (non-overlapping chunks of `--ctx` tokens, the second half of each chunk scored).
//!
//! ```text
//! cargo run --release --bin perplexity -- --file llama-model/tests/fixtures/text/genesis-kjv-1-4.txt
//! cargo run --release --bin perplexity -- --file TEXT --skip-map MODEL.gguf.skipmap.json
//! ```
//! With `--skip-map` it prints the perplexity with and without skipping.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use llama_model::cpu::Model;
use llama_model::perplexity::{perplexity, PerplexityOptions, PerplexityReport};
use llama_model::skip::{LayerPlan, SkipMap};
use llama_model::tokenizer::Tokenizer;

#[derive(Parser, Debug)]
#[command(about = "Perplexity of a text (llama.cpp's definition) on the CPU reference backend", after_help = vramless_engine::default_model::HELP)]
struct Args {
    /// GGUF model file (default: SmolLM2-135M-Instruct Q4_1 from the cache, fetched on first use; see below).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The text file.
    #[arg(long)]
    file: PathBuf,
    /// Tokens per chunk.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Most chunks to score (default: all).
    #[arg(long)]
    chunks: Option<usize>,
    /// A skip map (from calibrate-skip): also report the perplexity with its layers skipped.
    #[arg(long)]
    skip_map: Option<PathBuf>,
}

fn measure(
    model: &Model,
    tok: &Tokenizer,
    text: &str,
    plan: &LayerPlan,
    opts: PerplexityOptions,
) -> Result<PerplexityReport, String> {
    let t0 = Instant::now();
    let r = perplexity(model, tok, text, plan, opts, &mut |i, p| {
        eprint!("[{}]{p:.4},", i + 1);
    })
    .map_err(|e| e.to_string())?;
    eprintln!();
    eprintln!(
        "{} tokens in the text, {} chunks of {} tokens, {} tokens scored, {:.1} s",
        r.text_tokens,
        r.per_chunk.len(),
        opts.ctx,
        r.count,
        t0.elapsed().as_secs_f64()
    );
    Ok(r)
}

fn run(args: Args) -> Result<(), String> {
    let path = vramless_engine::model_path("perplexity", args.model)?;
    let model = Model::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let tok = Tokenizer::from_gguf(model.gguf().metadata()).map_err(|e| e.to_string())?;
    let text =
        std::fs::read_to_string(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let opts = PerplexityOptions {
        ctx: args.ctx,
        max_chunks: args.chunks,
    };
    let n = model.config().n_layers;
    let base = measure(&model, &tok, &text, &LayerPlan::full(n), opts)?;
    println!("PPL = {:.4} +/- {:.5}", base.ppl, base.ppl_stderr);
    if let Some(map_path) = &args.skip_map {
        let map = SkipMap::load_for(map_path, &path, n).map_err(|e| e.to_string())?;
        let skipped = measure(&model, &tok, &text, &LayerPlan::from_skip_map(&map), opts)?;
        println!(
            "PPL = {:.4} +/- {:.5} skipping {} layers {:?} ({:+.2}%)",
            skipped.ppl,
            skipped.ppl_stderr,
            map.skipped.len(),
            map.skipped,
            (skipped.ppl / base.ppl - 1.0) * 100.0
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("perplexity: error: {e}");
            ExitCode::FAILURE
        }
    }
}
