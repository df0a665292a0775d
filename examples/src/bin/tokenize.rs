//! `tokenize`: turn text into token ids with a GGUF model's own tokenizer, exactly as llama.cpp
//! would.
//!
//! ```text
//! tokenize --model M.gguf --text "Hello world"              # ids and pieces, one per line
//! tokenize --model M.gguf --text "<|im_start|>hi" --parse-special --bos
//! tokenize --model M.gguf --vocab-test ggml-vocab-llama-bpe.gguf.inp > out.txt
//! ```
//!
//! `--vocab-test` reads a llama.cpp tokenizer test input file (texts separated by lines
//! `__ggml_vocab_test__`) and prints one line per text in llama.cpp's `.out` format
//! (` id id id`), with no BOS and special tokens not parsed, so the output can be compared with
//! llama.cpp's expected file by `diff`.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{ArgGroup, Parser};
use llama_model::tokenizer::Tokenizer;

/// Tokenize text with the tokenizer stored in a GGUF file (byte-level BPE: Llama 3, SmolLM2, GPT-2
/// style vocabularies).
#[derive(Parser)]
#[command(
    version,
    about,
    group(ArgGroup::new("input").required(true).args(["text", "file", "vocab_test"])),
    after_help = "Examples:\n  \
        tokenize --model model.gguf --text 'Hello world'\n  \
        tokenize --model model.gguf --text '<|im_start|>user' --parse-special\n  \
        tokenize --model ggml-vocab-llama-bpe.gguf --vocab-test ggml-vocab-llama-bpe.gguf.inp \
        | diff - ggml-vocab-llama-bpe.gguf.out"
)]
struct Args {
    /// GGUF file whose tokenizer to use (a full model or a vocabulary-only file).
    #[arg(long, value_name = "GGUF")]
    model: PathBuf,
    /// Text to tokenize; prints one line per token: id, the vocabulary string and the bytes it
    /// stands for.
    #[arg(long, value_name = "T")]
    text: Option<String>,
    /// Like --text, with the text read from a file.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// llama.cpp vocab-test input file (texts separated by lines `__ggml_vocab_test__`);
    /// prints ` id id id` per text, no BOS, special tokens not parsed (llama.cpp's `.out`
    /// format).
    #[arg(long, value_name = "INP", conflicts_with_all = ["parse_special", "bos"])]
    vocab_test: Option<PathBuf>,
    /// With --text/--file: turn special tokens written in the text (e.g. `<|eot_id|>`) into their ids
    /// instead of tokenizing them as plain characters.
    #[arg(long)]
    parse_special: bool,
    /// With --text/--file: start with the BOS token (if the vocabulary has one).
    #[arg(long)]
    bos: bool,
    /// Print vocabulary facts, load and encode times to stderr.
    #[arg(long)]
    stats: bool,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("tokenize: error: {msg}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let args = Args::parse();
    let started = Instant::now();
    let file = match gguf::GgufFile::open(&args.model) {
        Ok(f) => f,
        Err(e) => return fail(format_args!("{}: {e}", args.model.display())),
    };
    let opened = started.elapsed();
    let tok = match Tokenizer::from_gguf(file.metadata()) {
        Ok(t) => t,
        Err(e) => return fail(format_args!("{}: {e}", args.model.display())),
    };
    if args.stats {
        eprintln!(
            "tokenize: {} tokens, {} merges, pre-tokenizer {:?}, BOS {:?} (add: {}), EOS {:?}; \
             GGUF read in {:.1} ms, tokenizer built in {:.1} ms",
            tok.vocab_size(),
            tok.merge_count(),
            tok.pre_tokenizer(),
            tok.bos_id(),
            tok.add_bos(),
            tok.eos_id(),
            opened.as_secs_f64() * 1e3,
            (started.elapsed() - opened).as_secs_f64() * 1e3
        );
    }
    let result = if let Some(inp) = &args.vocab_test {
        vocab_test(&tok, inp)
    } else if let Some(path) = &args.file {
        match std::fs::read_to_string(path) {
            Ok(text) => show_tokens(&tok, &text, args.parse_special, args.bos, args.stats),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    } else {
        let text = args.text.as_deref().unwrap_or_default();
        show_tokens(&tok, text, args.parse_special, args.bos, args.stats)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn vocab_test(tok: &Tokenizer, inp: &PathBuf) -> Result<(), String> {
    let text = std::fs::read_to_string(inp).map_err(|e| format!("{}: {e}", inp.display()))?;
    let mut inputs: Vec<&str> = text.split("\n__ggml_vocab_test__\n").collect();
    // The file ends with a separator: the empty remainder is not an input.
    if inputs.last().is_some_and(|s| s.is_empty()) {
        inputs.pop();
    }
    let mut out = BufWriter::new(io::stdout().lock());
    for input in inputs {
        let ids = tok.encode(input, false).map_err(|e| e.to_string())?;
        let line: String = ids.iter().map(|id| format!(" {id}")).collect();
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}

fn show_tokens(
    tok: &Tokenizer,
    text: &str,
    parse_special: bool,
    bos: bool,
    stats: bool,
) -> Result<(), String> {
    let mut ids = Vec::new();
    if bos {
        ids.extend(tok.bos_id());
    }
    let started = Instant::now();
    ids.extend(tok.encode(text, parse_special).map_err(|e| e.to_string())?);
    if stats {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "tokenize: encoded {} bytes into {} tokens in {:.1} ms ({:.1} MB/s)",
            text.len(),
            ids.len(),
            secs * 1e3,
            text.len() as f64 / secs.max(1e-9) / 1e6
        );
    }
    let mut out = BufWriter::new(io::stdout().lock());
    for &id in &ids {
        let vocab = tok.token_text(id).unwrap_or("?");
        let bytes = String::from_utf8_lossy(&tok.token_bytes(id)).into_owned();
        writeln!(out, "{id:>7}  {vocab:<24?}  {bytes:?}").map_err(|e| e.to_string())?;
    }
    writeln!(out, "{} tokens", ids.len()).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())
}
