//! The multi-sequence engine on the CPU backend with the real default model (SmolLM2-135M): for
//! every sequence of a batch (prompts of different lengths, joining and leaving at different
//! steps, one finishing early on a stop token, one cancelled), the greedy tokens equal running
//! that sequence alone through the single-sequence `Engine` (itself checked against llama-model's
//! resident model, which is checked against llama.cpp), and the logits it sampled from are
//! bit-identical to the single path's fed the same prompt chunks, on the resident plan and on
//! plans forced to stream through every data path the CPU engine has.

use std::collections::BTreeMap;
use std::path::Path;

use llama_model::sampler::SamplerConfig;
use llama_model::tokenizer::Tokenizer;
use vramless_engine::engine::{
    BatchEngine, DataPath, Engine, EngineError, EngineOptions, FinishReason, Home, SeqEvent, SeqId,
    SeqRequest,
};

#[macro_use]
mod common;

const CTX: usize = 96;
const CHUNK: usize = 8;

fn opts(vram: Option<u64>, ram: u64, path: DataPath) -> EngineOptions {
    EngineOptions {
        vram_budget: vram,
        ram_budget: Some(ram),
        path,
        ctx: CTX,
        max_seqs: 4,
        verbose: false,
        ..EngineOptions::default()
    }
}

fn prompts(model: &Path) -> Vec<Vec<u32>> {
    let m = llama_model::cpu::Model::open(model).unwrap();
    let tok = Tokenizer::from_gguf(m.gguf().metadata()).unwrap();
    let mut out = vec![common::prompt(model)];
    out.extend(
        [
            "Once upon a time, in a small village by the sea, there lived an old fisherman who",
            "1, 2, 3,",
            "The quick brown fox",
        ]
        .iter()
        .map(|p| tok.encode_prompt(p).unwrap()),
    );
    out
}

/// The sequence alone through the single-sequence engine, its prompt fed in the batch engine's
/// chunks: `n` greedy tokens and the logits each was chosen from.
fn alone(e: &mut Engine, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    e.reset();
    let mut logits = Vec::new();
    for c in prompt.chunks(CHUNK) {
        logits = e.prefill(c).unwrap();
    }
    let mut toks = Vec::new();
    let mut all = Vec::new();
    loop {
        let t = vramless_engine::engine::argmax(&logits);
        toks.push(t);
        all.push(logits);
        if toks.len() == n {
            return (toks, all);
        }
        logits = e.decode(t).unwrap();
    }
}

fn req(prompt: &[u32], n: usize, stop: Vec<u32>) -> SeqRequest {
    SeqRequest {
        prompt: prompt.to_vec(),
        sampler: SamplerConfig::default(),
        max_new_tokens: n,
        stop_tokens: stop,
    }
}

/// What the batch produced per sequence.
#[derive(Default, Debug)]
struct Seen {
    tokens: Vec<u32>,
    logits: Vec<Vec<f32>>,
    finished: Option<(FinishReason, usize, usize)>,
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Runs the scenario on `b`: A (8 tokens) and B (3 tokens) join at step 0, C at step 2 with a
/// stop token that is its 3rd greedy token, D at step 4, cancelled at step 7; returns what each
/// produced and the ids.
fn scenario(
    b: &mut BatchEngine,
    p: &[Vec<u32>],
    stop_c: u32,
) -> (BTreeMap<SeqId, Seen>, [SeqId; 4]) {
    b.set_prefill_chunk(CHUNK);
    b.set_keep_logits(true);
    let mut seen: BTreeMap<SeqId, Seen> = BTreeMap::new();
    let a = b.add(req(&p[1], 8, vec![])).unwrap();
    let bb = b.add(req(&p[0], 3, vec![])).unwrap();
    let mut ids = [a, bb, a, a];
    for step in 0..40 {
        if step == 2 {
            ids[2] = b.add(req(&p[2], 8, vec![stop_c])).unwrap();
        }
        if step == 4 {
            ids[3] = b.add(req(&p[3], 20, vec![])).unwrap();
        }
        if step == 7 {
            b.cancel(ids[3]);
            assert_eq!(
                b.seq_positions(ids[3]),
                None,
                "a cancelled sequence is gone"
            );
        }
        let ev = b.step().unwrap();
        for (id, l) in b.step_logits() {
            seen.entry(*id).or_default().logits.push(l.clone());
        }
        for e in ev {
            match e {
                SeqEvent::Token { id, token } => seen.entry(id).or_default().tokens.push(token),
                SeqEvent::Finished {
                    id,
                    reason,
                    prompt_tokens,
                    completion_tokens,
                } => {
                    let s = seen.entry(id).or_default();
                    assert!(s.finished.is_none(), "{id} finished twice");
                    s.finished = Some((reason, prompt_tokens, completion_tokens));
                }
            }
        }
        if step > 4 && b.active() == 0 {
            break;
        }
    }
    assert_eq!(b.active(), 0, "every sequence ended");
    assert_eq!(b.kv_usage().0, 0, "every sequence's KV was freed");
    (seen, ids)
}

fn check(name: &str, b: &mut BatchEngine, single: &mut Engine, p: &[Vec<u32>]) {
    let (c_ref, _) = alone(single, &p[2], 3);
    let stop_c = c_ref[2];
    let (seen, [a, bb, c, d]) = scenario(b, p, stop_c);
    for (id, prompt, n) in [(a, &p[1], 8), (bb, &p[0], 3)] {
        let (toks, logits) = alone(single, prompt, n);
        let s = &seen[&id];
        assert_eq!(
            s.tokens, toks,
            "{name}: {id} tokens differ from its single run"
        );
        assert_eq!(
            s.finished,
            Some((FinishReason::Length, prompt.len(), n)),
            "{name}: {id}"
        );
        assert_eq!(s.logits.len(), n, "{name}: {id}");
        for (k, (got, want)) in s.logits.iter().zip(&logits).enumerate() {
            assert!(
                bits(got) == bits(want),
                "{name}: {id} logits of token {k} are not bit-identical to the single path"
            );
        }
    }
    // C stops on its 3rd greedy token: two tokens reported, the stop token not.
    let s = &seen[&c];
    assert_eq!(s.tokens, c_ref[..2], "{name}: C");
    assert_eq!(
        s.finished,
        Some((FinishReason::Stop, p[2].len(), 2)),
        "{name}: C"
    );
    // D: cancelled after it had started; what it produced is its single run's prefix.
    let s = &seen[&d];
    assert!(
        matches!(s.finished, Some((FinishReason::Cancelled, _, _))),
        "{name}: D {:?}",
        s.finished
    );
    let (d_ref, _) = alone(single, &p[3], 20);
    assert_eq!(s.tokens, d_ref[..s.tokens.len()], "{name}: D");
    assert!(s.tokens.len() < 20, "{name}: D was cancelled early");
}

#[test]
fn batched_sequences_equal_their_single_runs_on_every_cpu_path() {
    let model = model_or_skip!();
    let p = prompts(&model);
    let mut single = Engine::open(&model, &opts(None, 0, DataPath::Auto)).unwrap();
    // The single engine itself against llama-model's resident model (checked against llama.cpp).
    let want = common::reference(&model, &p[0], 4);
    assert_eq!(single.greedy(&p[0], 4).unwrap(), want);
    let streamed = Some(130 << 20);
    let cases = [
        ("resident", opts(None, 0, DataPath::Auto)),
        ("pinned RAM", opts(streamed, 1 << 30, DataPath::Auto)),
        ("O_DIRECT cpu worker", opts(streamed, 0, DataPath::Direct)),
        ("mmap cpu worker", opts(streamed, 0, DataPath::Mmap)),
        (
            "mmap baseline",
            opts(streamed, 1 << 30, DataPath::MmapBaseline),
        ),
        (
            "pinned + storage mix",
            opts(streamed, 20 << 20, DataPath::Direct),
        ),
    ];
    for (name, o) in cases {
        let mut b = BatchEngine::open(&model, &o).unwrap_or_else(|e| panic!("{name}: {e}"));
        if name != "resident" {
            assert!(b.plan().streaming, "{name}: the plan must stream");
            assert!(!b.plan().layers(Home::Device).is_empty() || name.contains("baseline"));
        }
        check(name, &mut b, &mut single, &p);
        assert!(b.stats().passes > 0);
    }
}

#[test]
fn add_refuses_what_cannot_run_with_typed_errors() {
    let model = model_or_skip!();
    let o = EngineOptions {
        max_seqs: 2,
        ..opts(None, 0, DataPath::Auto)
    };
    let mut b = BatchEngine::open(&model, &o).unwrap();
    assert_eq!((b.max_seqs(), b.max_context()), (2, CTX));
    let err = |r: Result<SeqId, EngineError>| match r {
        Err(EngineError::Sequence(m)) => m,
        other => panic!("expected a Sequence error, got {other:?}"),
    };
    assert!(err(b.add(req(&[], 4, vec![]))).contains("no tokens"));
    assert!(err(b.add(req(&[1; 90], 7, vec![]))).contains("exceed the context of 96"));
    assert!(err(b.add(req(&[1], 0, vec![]))).contains("at least one token"));
    assert!(err(b.add(req(&[u32::MAX], 1, vec![]))).contains("outside the vocabulary"));
    b.add(req(&[1, 2], 4, vec![])).unwrap();
    b.add(req(&[1, 2], 4, vec![])).unwrap();
    assert!(err(b.add(req(&[1, 2], 4, vec![]))).contains("all 2 sequences are in use"));
    assert_eq!(b.active(), 2);
    assert_eq!(b.kv_usage().0, 0, "blocks are taken when the prompt is fed");
    b.step().unwrap();
    let (used, total, per_block) = b.kv_usage();
    assert!(
        used == 2 && total == 2 * CTX / 16 && per_block > 0,
        "{used} {total}"
    );
    // Nothing held: step returns at once.
    let mut idle = BatchEngine::open(&model, &o).unwrap();
    assert_eq!(idle.step().unwrap(), vec![]);
}
