//! The text-generation trait over the CPU model on the real SmolLM2-135M-Instruct Q4_1, driven
//! only through `&mut dyn TextGenerator`: greedy tokens equal llama.cpp's (the fixture's greedy
//! steps, up to the first near-tie), and rolling back replays them.

mod smollm2_fixture;
use smollm2_fixture::fixture;

use llama_model::cpu::{Model, ModelOptions};
use llama_model::sampler::{Sampler, SamplerConfig};
use llama_model::TextGenerator;

/// Steps are compared while llama.cpp's top-2 margin is at least this.
const MIN_MARGIN: f32 = 0.1;

fn open() -> Option<Model> {
    let path = test_support::model_or_skip()?;
    let opts = ModelOptions {
        max_context: 256,
        ..ModelOptions::default()
    };
    Some(Model::open_with(&path, opts).expect("open the model"))
}

/// llama.cpp's greedy tokens of the fixture, cut at the first step whose margin is small.
fn reference(name: &str) -> (Vec<u32>, Vec<u32>) {
    let f = fixture(name);
    let mut steps = Vec::new();
    for (i, &(tok, _)) in f.steps.iter().enumerate() {
        let top = &f.tops[i];
        if top.len() >= 2 && top[0].1 - top[1].1 < MIN_MARGIN {
            break;
        }
        steps.push(tok);
    }
    (f.prompt_tokens, steps)
}

#[test]
fn greedy_through_the_trait_matches_llama_cpp_and_rolls_back() {
    let Some(mut model) = open() else { return };
    let g: &mut dyn TextGenerator = &mut model;
    assert!(g.config().n_layers > 0);
    assert!(g.gguf().metadata().get("tokenizer.ggml.model").is_some());
    let (prompt, want) = reference("capital");
    assert!(want.len() >= 3, "the fixture gives at least 3 clear steps");
    let mut got = vec![g.prefill_argmax(&prompt).unwrap()];
    while got.len() < want.len() {
        got.push(g.decode_argmax(*got.last().unwrap()).unwrap());
    }
    assert_eq!(got, want, "greedy tokens differ from llama.cpp's");
    assert_eq!(g.n_past(), prompt.len() + want.len() - 1);
    assert_eq!(g.max_context(), 256);

    // Roll back to the prompt: the same tokens follow again.
    g.truncate(prompt.len());
    assert_eq!(g.n_past(), prompt.len());
    let mut again = vec![want[0]];
    while again.len() < want.len() {
        again.push(g.decode_argmax(*again.last().unwrap()).unwrap());
    }
    assert_eq!(again, want, "after truncate the continuation changed");

    // Greedy sampling through decode_sample is the argmax; the CPU has no device top-k.
    g.truncate(prompt.len());
    let mut greedy = Sampler::new(SamplerConfig {
        temperature: 0.0,
        ..SamplerConfig::default()
    });
    assert_eq!(
        g.decode_sample(want[0], &mut greedy, &prompt).unwrap(),
        want[1]
    );
    assert!(g.decode_top_k(want[1], 8, 1.0, &[]).unwrap().is_none());
    assert_eq!(g.n_past(), prompt.len() + 1, "a None top-k fed nothing");
    assert!(g.stats_report().is_none());

    g.reset();
    assert_eq!(g.n_past(), 0);
    assert!(g.prefill(&[]).is_err(), "an empty prefill is an error");
}
