//! Calibrates layer skipping: measures per layer the cosine similarity between the hidden
//! state before and after the layer over a text, writes a skip map next to the model, and
//! optionally reports the perplexity delta for growing numbers of skipped layers.
//!
//! ```text
//! cargo run --release --bin calibrate-skip -- --skip 4 --report-ppl
//! cargo run --release --bin calibrate-skip -- --model M.gguf --file TEXT --threshold 0.98
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use llama_model::cpu::Model;
use llama_model::perplexity::{perplexity, tokenize_text, PerplexityOptions};
use llama_model::skip::{calibrate, model_fingerprint, LayerPlan, SkipMap};
use llama_model::tokenizer::Tokenizer;

/// The text the project ships for calibration and perplexity (Genesis 1-4, KJV; public
/// domain), built into the program so it works outside the source tree.
const SHIPPED_TEXT: &str =
    include_str!("../../../llama-model/tests/fixtures/text/genesis-kjv-1-4.txt");

#[derive(Parser, Debug)]
#[command(about = "Measure how much each layer changes the hidden state and write a skip map", after_help = vramless_engine::default_model::HELP)]
struct Args {
    /// GGUF model file (default: SmolLM2-135M-Instruct Q4_1 from the cache, fetched on first use; see below).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Calibration text file (default: the shipped text, Genesis 1-4 KJV, built into the program).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Tokens of the text to measure (one sequence).
    #[arg(long, default_value_t = 512)]
    tokens: usize,
    /// Skip every eligible layer whose 5th-percentile cosine is at least this.
    #[arg(long, conflicts_with = "skip")]
    threshold: Option<f64>,
    /// Skip this many layers (those of highest 5th-percentile cosine).
    #[arg(long)]
    skip: Option<usize>,
    /// Where to write the map (default: next to the model, `<model>.skipmap.json`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also print the perplexity on the shipped text for 0, 1, 2, 4, ... skipped layers.
    #[arg(long)]
    report_ppl: bool,
    /// Most skipped layers in the perplexity report.
    #[arg(long, default_value_t = 16)]
    report_max: usize,
    /// Chunks of 512 tokens scored per perplexity figure.
    #[arg(long, default_value_t = 2)]
    report_chunks: usize,
}

fn run(args: Args) -> Result<(), String> {
    let path = vramless_engine::model_path("calibrate-skip", args.model)?;
    let model = Model::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let tok = Tokenizer::from_gguf(model.gguf().metadata()).map_err(|e| e.to_string())?;
    let (text, source) = match &args.file {
        Some(file) => (
            std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?,
            file.display().to_string(),
        ),
        None => (SHIPPED_TEXT.to_string(), "the shipped text".to_string()),
    };
    let mut tokens = tokenize_text(&tok, &text).map_err(|e| e.to_string())?;
    tokens.truncate(args.tokens.max(1));
    eprintln!("calibrating on {} tokens of {source}", tokens.len());
    let cal = calibrate(&model, &tokens).map_err(|e| e.to_string())?;
    println!("layer  mean_cos   p5_cos    min_cos");
    for s in &cal.layers {
        println!("{:5}  {:.5}  {:.5}  {:.5}", s.layer, s.mean, s.p5, s.min);
    }
    println!("skip order (most skippable first): {:?}", cal.ranking());
    let fp = model_fingerprint(&path).map_err(|e| e.to_string())?;
    let map = match (args.threshold, args.skip) {
        (Some(t), _) => Some(cal.map_for_threshold(&fp, t)),
        (None, Some(n)) => Some(cal.map_for_count(&fp, n)),
        (None, None) => None,
    };
    if let Some(map) = map {
        let map = map.map_err(|e| e.to_string())?;
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| SkipMap::default_path(&path));
        map.save(&out).map_err(|e| e.to_string())?;
        println!(
            "skip map ({}): layers {:?} -> {}",
            map.rule,
            map.skipped,
            out.display()
        );
    }
    if args.report_ppl {
        let text = SHIPPED_TEXT;
        let opts = PerplexityOptions {
            ctx: 512,
            max_chunks: Some(args.report_chunks),
        };
        let ranking = cal.ranking();
        let mut counts = vec![0usize];
        let mut c = 1;
        while c <= args.report_max.min(ranking.len()) {
            counts.push(c);
            c *= 2;
        }
        let n = model.config().n_layers;
        let mut base = None;
        println!("skipped  PPL       delta    layers");
        for count in counts {
            let plan = LayerPlan::full(n).without(&ranking[..count]);
            let r = perplexity(&model, &tok, text, &plan, opts, &mut |_, _| {})
                .map_err(|e| e.to_string())?;
            let b = *base.get_or_insert(r.ppl);
            let mut skipped = ranking[..count].to_vec();
            skipped.sort_unstable();
            println!(
                "{count:7}  {:8.4}  {:+6.2}%  {skipped:?}",
                r.ppl,
                (r.ppl / b - 1.0) * 100.0
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("calibrate-skip: error: {e}");
            ExitCode::FAILURE
        }
    }
}
