//! Self-speculative decoding in the streaming engine, CPU backend, real default model
//! (SmolLM2-135M) forced to stream through pinned RAM and O_DIRECT reads: greedy speculative
//! tokens must equal the greedy tokens of llama-model's resident `cpu::Model` (itself checked
//! against llama.cpp) and of the engine's own plain decoding, for several draft depths D and
//! draft lengths K; the caches must be consistent after the last rollback (the next plain
//! decode continues the reference), the counters must add up, the plan must pin the draft
//! layers to the device, and a budget that cannot hold them must give a typed error.

use llama_model::speculative::AdaptiveConfig;
use vramless_engine::engine::{DataPath, Engine, EngineError, EngineOptions, Home, SpecOptions};

#[macro_use]
mod common;
use common::{prompt, reference};

const STEPS: usize = 16;

/// A device budget that holds the draft and a few more layers; the rest streams.
fn opts(path: DataPath, ram: u64, draft: usize) -> EngineOptions {
    EngineOptions {
        vram_budget: Some(140 << 20),
        ram_budget: Some(ram),
        path,
        ctx: 256,
        draft_layers: draft,
        verbose: false,
        ..EngineOptions::default()
    }
}

fn check_counters(name: &str, e: &Engine, run: &vramless_engine::engine::SpecRun, p: usize) {
    let s = &run.stats;
    assert!(s.accepted <= s.drafted, "{name}: {s:?}");
    assert_eq!(s.generated, run.tokens.len() - 1, "{name}: {s:?}");
    assert_eq!(s.verify_passes, run.ks.len(), "{name}");
    assert_eq!(s.drafted, run.ks.iter().sum::<usize>(), "{name}");
    assert_eq!(s.draft_steps, s.drafted, "{name}");
    assert!(s.generated >= s.verify_passes, "{name}: {s:?}");
    // The full model's cache holds the prompt and every token but the last (not yet fed).
    assert_eq!(e.n_past(), p + run.tokens.len() - 1, "{name}: n_past");
    assert!(e.draft_n_past() <= e.n_past(), "{name}: draft cache ahead");
    // One streamed pass for the prompt (shorter than a batch) plus one per verify.
    assert_eq!(e.stats().passes as usize, 1 + s.verify_passes, "{name}");
}

#[test]
fn speculative_greedy_equals_plain_greedy_streamed() {
    let model = model_or_skip!();
    let p = prompt(&model);
    let want = reference(&model, &p, STEPS + 1);
    let cases = [
        (
            "pinned, D=2, K=1",
            DataPath::Auto,
            1u64 << 30,
            2usize,
            1usize,
            false,
        ),
        ("pinned, D=4, K=4", DataPath::Auto, 1 << 30, 4, 4, false),
        ("O_DIRECT, D=8, K=3", DataPath::Direct, 0, 8, 3, false),
        (
            "O_DIRECT, D=6, adaptive K<=6",
            DataPath::Direct,
            0,
            6,
            6,
            true,
        ),
    ];
    for (name, path, ram, d, k, adaptive) in cases {
        let mut e =
            Engine::open(&model, &opts(path, ram, d)).unwrap_or_else(|err| panic!("{name}: {err}"));
        let plan = e.plan().clone();
        assert!(plan.streaming, "{name}: the model must stream");
        assert!(!plan.layers(Home::Pinned).is_empty() || !plan.layers(Home::Storage).is_empty());
        for l in 0..d {
            assert_eq!(plan.homes[l], Home::Device, "{name}: draft layer {l}");
        }
        assert_eq!(e.draft_layers(), d, "{name}");
        // The engine's own plain greedy decoding on the same plan.
        let plain = e.greedy(&p, STEPS).unwrap();
        assert_eq!(
            plain,
            want[..STEPS],
            "{name}: plain engine greedy vs cpu::Model"
        );
        e.clear_stats();
        let so = SpecOptions {
            k,
            adaptive: adaptive.then_some(AdaptiveConfig {
                k_min: 1,
                k_max: k,
                ..AdaptiveConfig::default()
            }),
            ..SpecOptions::default()
        };
        let run = e
            .speculate(&p, STEPS, &so)
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        eprintln!("{name}: {} (ks {:?})", run.summary(), run.ks);
        assert_eq!(run.tokens, plain, "{name}: speculative vs plain greedy");
        check_counters(name, &e, &run, p.len());
        // After the last rollback the caches continue the sequence exactly.
        let next = e.decode_argmax(*run.tokens.last().unwrap()).unwrap();
        assert_eq!(next, want[STEPS], "{name}: next token after speculation");
    }
}

#[test]
fn near_zero_temperature_sampling_equals_greedy() {
    // At temperature 1e-4 every distribution is one-hot at its argmax (SmolLM2's logit gaps
    // are far wider than 1e-4 * ln(2^24)), so the sampling acceptance rule must reproduce
    // greedy decoding: it accepts a draft exactly when it is the target's argmax.
    let model = model_or_skip!();
    let p = prompt(&model);
    let want = reference(&model, &p, 12);
    let mut e = Engine::open(&model, &opts(DataPath::Auto, 1 << 30, 4)).unwrap();
    let so = SpecOptions {
        k: 3,
        temperature: 1e-4,
        seed: 7,
        ..SpecOptions::default()
    };
    let run = e.speculate(&p, 12, &so).unwrap();
    eprintln!("sampling: {}", run.summary());
    assert_eq!(run.tokens, want);
    check_counters("sampling", &e, &run, p.len());
}

#[test]
fn draft_that_cannot_be_resident_is_a_typed_error() {
    let model = model_or_skip!();
    match Engine::open(&model, &opts(DataPath::Auto, 1 << 30, 29)) {
        Err(EngineError::DraftNotResident { layers, .. }) => assert_eq!(layers, 29),
        Err(other) => panic!("wrong error: {other}"),
        Ok(e) => panic!(
            "a 29-layer draft fit a 140 MiB budget: {} device layers",
            e.plan().layers(Home::Device).len()
        ),
    }
    // Without draft layers speculation is refused, not run.
    let mut e = Engine::open(&model, &opts(DataPath::Auto, 1 << 30, 0)).unwrap();
    assert!(matches!(
        e.speculate(&[1, 2], 4, &SpecOptions::default()),
        Err(EngineError::Usage(_))
    ));
}

#[test]
fn whole_model_draft_accepts_every_draft() {
    // A draft made of every layer is the model itself: every greedy draft must be accepted,
    // each round yields K+1 tokens, and the output is still the reference.
    let model = model_or_skip!();
    let p = prompt(&model);
    let want = reference(&model, &p, 13);
    let o = EngineOptions {
        ctx: 256,
        draft_layers: 30,
        verbose: false,
        ..EngineOptions::default()
    };
    let mut e = Engine::open(&model, &o).unwrap();
    let run = e
        .speculate(
            &p,
            13,
            &SpecOptions {
                k: 3,
                ..SpecOptions::default()
            },
        )
        .unwrap();
    eprintln!("whole-model draft: {}", run.summary());
    assert_eq!(run.tokens, want);
    assert_eq!(run.stats.accepted, run.stats.drafted, "{:?}", run.stats);
    assert_eq!(run.ks, vec![3, 3, 3]); // 1 + 3 rounds of 4 = 13 tokens
    check_counters("whole-model draft", &e, &run, p.len());
}
