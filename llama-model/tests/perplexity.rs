//! Perplexity: the NLL arithmetic, the chunking rules, and agreement with llama.cpp's
//! `llama-perplexity` on the shipped text (figure recorded in fixtures/text/llamacpp-ppl.json).

mod skipspec_common;

use llama_model::perplexity::{nll, perplexity, tokenize_text, PerplexityError, PerplexityOptions};
use llama_model::skip::LayerPlan;
use llama_model::Tokenizer;

#[test]
fn nll_is_minus_log_softmax() {
    // softmax([0, ln 2, ln 3]) = [1/6, 2/6, 3/6].
    let l = [0.0f32, 2f32.ln(), 3f32.ln()];
    assert!((nll(&l, 0) - 6f64.ln()).abs() < 1e-6);
    assert!((nll(&l, 1) - 3f64.ln()).abs() < 1e-6);
    assert!((nll(&l, 2) - 2f64.ln()).abs() < 1e-6);
    // Shift invariance with large logits (no overflow).
    let big = [1000.0f32, 1000.0 + 2f32.ln(), 1000.0 + 3f32.ln()];
    assert!((nll(&big, 2) - 2f64.ln()).abs() < 1e-3);
}

#[test]
fn real_model_matches_llama_cpp() {
    let Some((model, _)) = skipspec_common::open_model() else {
        return;
    };
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/text/llamacpp-ppl.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    let ctx = v["ctx"].as_u64().unwrap() as usize;
    let chunks = v["chunks"].as_u64().unwrap() as usize;
    let reference = v["ppl"].as_f64().unwrap();
    let tok = Tokenizer::from_gguf(model.gguf().metadata()).unwrap();
    let text = skipspec_common::shipped_text();
    let tokens = tokenize_text(&tok, &text).unwrap();
    if let Some(n) = v["text_tokens"].as_u64() {
        assert_eq!(
            tokens.len() as u64,
            n,
            "token count of the text differs from llama.cpp's"
        );
    }
    let opts = PerplexityOptions {
        ctx,
        max_chunks: Some(chunks),
    };
    let n = model.config().n_layers;
    let r = perplexity(
        &model,
        &tok,
        &text,
        &LayerPlan::full(n),
        opts,
        &mut |_, _| {},
    )
    .unwrap();
    eprintln!(
        "PPL ours {:.4} +/- {:.4}, llama.cpp {reference:.4}",
        r.ppl, r.ppl_stderr
    );
    assert_eq!(r.count, chunks * (ctx - ctx / 2 - 1));
    assert!(
        (r.ppl / reference - 1.0).abs() < 0.01,
        "PPL {} differs from llama.cpp's {reference} by more than 1%",
        r.ppl
    );
    // Too short a text is a typed error, as llama.cpp refuses it.
    let short = PerplexityOptions {
        ctx: tokens.len(),
        max_chunks: None,
    };
    assert!(matches!(
        perplexity(
            &model,
            &tok,
            &text,
            &LayerPlan::full(n),
            short,
            &mut |_, _| {}
        ),
        Err(PerplexityError::TooFewTokens { .. })
    ));
}
