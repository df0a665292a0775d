//! Perplexity as llama.cpp's `llama-perplexity` defines it.
//!
//! The whole text is tokenized once (BOS first when the vocabulary adds BOS; special tokens
//! are NOT parsed in the text), cut into non-overlapping chunks of `ctx` tokens, and each
//! chunk runs as a fresh sequence whose first token is replaced by BOS (when the vocabulary
//! adds BOS). Only the second half of a chunk is scored: the logits at position `t` predict
//! token `t + 1` for `t` in `ctx/2 .. ctx-1`. Perplexity is `exp(mean NLL)`; its uncertainty
//! is `ppl * stddev(NLL) / sqrt(count - 1)`, as llama.cpp prints after `+/-`.

use crate::cpu::{ForwardError, Model};
use crate::skip::{LayerPlan, Logits, Runner};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Why perplexity could not be computed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PerplexityError {
    /// The text is too short for even one chunk (llama.cpp asks for two chunks' worth).
    #[error(
        "the text has {have} tokens; perplexity with a context of {ctx} needs at least {need}"
    )]
    TooFewTokens {
        /// Tokens in the text.
        have: usize,
        /// Tokens needed.
        need: usize,
        /// The chunk size.
        ctx: usize,
    },
    /// The chunk size is unusable.
    #[error("context {0} is too small: use at least 4 tokens")]
    BadContext(usize),
    /// Tokenizing failed.
    #[error("tokenizing the text: {0}")]
    Tokenizer(#[from] TokenizerError),
    /// The forward pass failed.
    #[error("forward pass: {0}")]
    Forward(#[from] ForwardError),
}

/// Settings of [`perplexity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerplexityOptions {
    /// Tokens per chunk (llama.cpp `-c`).
    pub ctx: usize,
    /// Most chunks to score (llama.cpp `--chunks`; `None`: all).
    pub max_chunks: Option<usize>,
}

impl Default for PerplexityOptions {
    fn default() -> Self {
        PerplexityOptions {
            ctx: 512,
            max_chunks: None,
        }
    }
}

/// The result of [`perplexity`].
#[derive(Debug, Clone, PartialEq)]
pub struct PerplexityReport {
    /// `exp(mean NLL)`.
    pub ppl: f64,
    /// Uncertainty of `ppl` (one standard error).
    pub ppl_stderr: f64,
    /// Mean negative log-likelihood (nats per token).
    pub mean_nll: f64,
    /// Tokens scored.
    pub count: usize,
    /// Running perplexity after each chunk (what llama.cpp prints as `[i]x`).
    pub per_chunk: Vec<f64>,
    /// Tokens in the whole text (with BOS).
    pub text_tokens: usize,
}

/// `-log softmax(logits)[target]`, in f64.
pub fn nll(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let t = logits.get(target).copied().unwrap_or(f32::NEG_INFINITY);
    sum.ln() - f64::from(t - max)
}

/// The tokens llama.cpp's perplexity tool scores: BOS (if the vocabulary adds it) then the
/// text with special tokens not parsed.
pub fn tokenize_text(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, TokenizerError> {
    let mut out = Vec::new();
    if tokenizer.add_bos() {
        out.extend(tokenizer.bos_id());
    }
    out.extend(tokenizer.encode(text, false)?);
    Ok(out)
}

/// Perplexity of `text` under `model` run through `plan` (use [`LayerPlan::full`] for the
/// plain model or [`LayerPlan::from_skip_map`] to skip layers). `progress` is called with
/// the running perplexity after every chunk.
pub fn perplexity(
    model: &Model,
    tokenizer: &Tokenizer,
    text: &str,
    plan: &LayerPlan,
    opts: PerplexityOptions,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<PerplexityReport, PerplexityError> {
    let tokens = tokenize_text(tokenizer, text)?;
    let bos = tokenizer.add_bos().then(|| tokenizer.bos_id()).flatten();
    perplexity_of_tokens(model, &tokens, bos, plan, opts, progress)
}

/// [`perplexity`] over already tokenized text; `bos` replaces the first token of each chunk.
pub fn perplexity_of_tokens(
    model: &Model,
    tokens: &[u32],
    bos: Option<u32>,
    plan: &LayerPlan,
    opts: PerplexityOptions,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<PerplexityReport, PerplexityError> {
    let ctx = opts.ctx;
    if ctx < 4 {
        return Err(PerplexityError::BadContext(ctx));
    }
    if tokens.len() < 2 * ctx {
        return Err(PerplexityError::TooFewTokens {
            have: tokens.len(),
            need: 2 * ctx,
            ctx,
        });
    }
    let mut n_chunks = tokens.len() / ctx;
    if let Some(m) = opts.max_chunks {
        n_chunks = n_chunks.min(m);
    }
    let vocab = model.config().vocab_size;
    let first = ctx / 2;
    let (mut sum, mut sum2, mut count) = (0f64, 0f64, 0usize);
    let mut per_chunk = Vec::with_capacity(n_chunks);
    let mut runner = Runner::new(model, plan.clone(), ctx)?;
    for (i, chunk) in tokens.chunks_exact(ctx).take(n_chunks).enumerate() {
        let mut input = chunk.to_vec();
        if let Some(b) = bos {
            input[0] = b;
        }
        runner.truncate(0);
        let logits = runner.feed(&input, Logits::From(first))?;
        for (row, &target) in logits.chunks_exact(vocab).zip(&chunk[first + 1..]) {
            let v = nll(row, target as usize);
            sum += v;
            sum2 += v * v;
            count += 1;
        }
        let running = (sum / count as f64).exp();
        per_chunk.push(running);
        progress(i, running);
    }
    let mean = sum / count as f64;
    let var = sum2 / count as f64 - mean * mean;
    let ppl = mean.exp();
    let ppl_stderr = if var > 0.0 && count > 1 {
        (var / (count - 1) as f64).sqrt() * ppl
    } else {
        0.0
    };
    Ok(PerplexityReport {
        ppl,
        ppl_stderr,
        mean_nll: mean,
        count,
        per_chunk,
        text_tokens: tokens.len(),
    })
}
