//! The CPU multi-sequence step (`cpu::MultiState` + `forward_layer_multi`, paged KV) on the real
//! SmolLM2-135M-Instruct Q4_1 against the single-sequence path: sequences of different prompt
//! lengths join at different steps, prefill in chunks next to the others' decode tokens, roll
//! back (speculation), finish early and leave. For every sequence and every step its logits
//! must equal, bit for bit, those of the same sequence run alone through `cpu::State` +
//! `forward_layer` fed the same chunks; and its greedy tokens must equal `cpu::Model`'s
//! (whole-prompt prefill, then token by token).

mod default_model;
use default_model::model_path;

use llama_model::config::LlamaConfig;
use llama_model::cpu::{
    embed, forward_layer, forward_layer_multi, logits, Kernel, Model, ModelOptions, MultiState,
    State,
};
use llama_model::paged::{KvError, KvPool, KvPoolOptions, KvSeq, StepPart, KV_BLOCK};
use llama_model::Tokenizer;

use llama_model::cpu::ForwardError;

fn open() -> Option<Model> {
    let Some(path) = model_path() else {
        let msg =
            "\n*** SKIPPED multi_seq: the SmolLM2 model is unavailable (set VRAMLESS_MODEL or \
                   let scripts/fetch-model.sh download it) ***\n";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true: {msg}");
        }
        eprintln!("{msg}");
        return None;
    };
    let opts = ModelOptions {
        max_context: 512,
        kernel: Kernel::Q8,
    };
    Some(Model::open_with(&path, opts).expect("open the model"))
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// One sequence of a scenario.
#[derive(Clone)]
struct Spec {
    prompt: Vec<u32>,
    /// Step at which it joins.
    join: usize,
    /// Greedy tokens to generate.
    new_tokens: usize,
    /// Prefill chunk size.
    chunk: usize,
    /// Before this many generated tokens, feed two junk tokens after the last one and roll them
    /// back (a rejected speculation), then feed the token again.
    rollback_at: Option<usize>,
}

/// What the multi run saw for one sequence: the logits of every step that gave some, and its
/// greedy tokens.
#[derive(Default, Clone)]
struct Trace {
    logits: Vec<Vec<u32>>,
    tokens: Vec<u32>,
}

/// The sequence alone through State + forward_layer with the same chunks (and the same
/// rollback): the logits of the same steps.
fn alone_chunked(model: &Model, s: &Spec, tokens: &[u32]) -> Vec<Vec<u32>> {
    let c = model.config();
    let mut st = State::new(c, 512, Kernel::Q8);
    let embd = model.token_embd().unwrap();
    let (norm, head) = model.head_weights().unwrap();
    let feed = |st: &mut State, toks: &[u32]| -> Vec<f32> {
        st.begin_batch(embed(&embd, toks).unwrap()).unwrap();
        for i in 0..c.n_layers {
            forward_layer(i, &model.layer_weights(i).unwrap(), st).unwrap();
        }
        st.end_batch();
        logits(st.hidden(), &norm, &head, c.rms_eps, Kernel::Q8).unwrap()
    };
    let mut out = Vec::new();
    let chunks: Vec<&[u32]> = s.prompt.chunks(s.chunk).collect();
    for (i, ch) in chunks.iter().enumerate() {
        let l = feed(&mut st, ch);
        if i + 1 == chunks.len() {
            out.push(bits(&l));
        }
    }
    for (g, &t) in tokens
        .iter()
        .enumerate()
        .take(tokens.len().saturating_sub(1))
    {
        if s.rollback_at == Some(g + 1) {
            let before = st.n_past();
            feed(&mut st, &[t, 1, 2]);
            st.truncate(before);
        }
        out.push(bits(&feed(&mut st, &[t])));
    }
    out
}

/// Runs the scenario through one MultiState; returns each sequence's trace and the most blocks
/// in use at once.
fn run_multi(model: &Model, specs: &[Spec], n_blocks: usize) -> (Vec<Trace>, usize) {
    let c: &LlamaConfig = model.config();
    let opts = KvPoolOptions {
        n_blocks,
        max_seqs: specs.len(),
        max_context: 512,
    };
    let mut ms = MultiState::new(c, opts, Kernel::Q8).unwrap();
    let embd = model.token_embd().unwrap();
    let (norm, head) = model.head_weights().unwrap();
    let mut traces = vec![Trace::default(); specs.len()];
    let mut handle: Vec<Option<KvSeq>> = vec![None; specs.len()];
    let mut fed = vec![0usize; specs.len()];
    let mut done = vec![false; specs.len()];
    let mut rolled = vec![false; specs.len()];
    let mut peak = 0;
    let mut step = 0;
    while done.iter().any(|d| !d) {
        let mut parts = Vec::new();
        let mut who = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            if done[i] || s.join > step {
                continue;
            }
            let seq = match handle[i] {
                Some(h) => h,
                None => {
                    let h = ms.add_seq().unwrap();
                    handle[i] = Some(h);
                    h
                }
            };
            let tokens = if fed[i] < s.prompt.len() {
                let end = (fed[i] + s.chunk).min(s.prompt.len());
                s.prompt[fed[i]..end].to_vec()
            } else {
                let g = traces[i].tokens.len();
                let t = traces[i].tokens[g - 1];
                if s.rollback_at == Some(g) && !rolled[i] {
                    rolled[i] = true;
                    vec![t, 1, 2]
                } else {
                    vec![t]
                }
            };
            let want_logits = fed[i] >= s.prompt.len() || fed[i] + tokens.len() == s.prompt.len();
            who.push((i, tokens.len()));
            parts.push(StepPart {
                seq,
                tokens,
                want_logits,
            });
        }
        step += 1;
        if parts.is_empty() {
            continue;
        }
        ms.begin_step(&embd, &parts).unwrap();
        for l in 0..c.n_layers {
            forward_layer_multi(l, &model.layer_weights(l).unwrap(), &mut ms).unwrap();
        }
        ms.end_step().unwrap();
        peak = peak.max(ms.pool().used_blocks());
        let out = ms.logits(&norm, &head).unwrap();
        let mut out = out.into_iter();
        for (i, n) in who {
            let s = &specs[i];
            let seq = handle[i].unwrap();
            let in_prompt = fed[i] < s.prompt.len();
            if in_prompt {
                fed[i] += n;
                if fed[i] < s.prompt.len() {
                    continue;
                }
            } else if n == 3 {
                // The rejected speculation: drop its three positions, feed the token again.
                let (got, _) = out.next().unwrap();
                assert_eq!(got, seq);
                let len = ms.seq_len(seq).unwrap();
                ms.truncate(seq, len - 3);
                continue;
            }
            let (got, l) = out.next().unwrap();
            assert_eq!(got, seq);
            traces[i].logits.push(bits(&l));
            traces[i].tokens.push(argmax(&l));
            if traces[i].tokens.len() == s.new_tokens {
                done[i] = true;
                ms.remove_seq(seq);
            }
        }
        assert!(out.next().is_none(), "logits of parts that did not ask");
    }
    assert_eq!(
        ms.pool().used_blocks(),
        0,
        "blocks left after every sequence left"
    );
    (traces, peak)
}

fn prompts(model: &Model) -> Vec<Vec<u32>> {
    let tok = Tokenizer::from_gguf(model.gguf().metadata()).unwrap();
    let texts = [
        "The capital of France is",
        "Once upon a time, in a small village at the edge of a great forest, there lived an old \
         woman who kept bees. Every morning she walked to the hives, sang to them softly and \
         listened to their hum. One day the bees were silent, and she knew that something had \
         changed in the forest. She put on her coat, took her stick and went out along the path          between the tall pines, past the stream where the children played in summer, past the          broken gate of the miller's house, until she reached the clearing",
        "List three colours:",
        "Water boils at a temperature of",
        "Hi",
    ];
    texts
        .iter()
        .map(|t| tok.encode_prompt(t).unwrap())
        .collect()
}

#[test]
fn multi_sequence_logits_are_bit_identical_to_each_sequence_alone() {
    let Some(model) = open() else { return };
    let p = prompts(&model);
    assert!(p[1].len() >= 64, "one prompt exercises the tiled attention");
    let specs = vec![
        // Long prompt in chunks of 24 (per-row attention) while others decode.
        Spec {
            prompt: p[1].clone(),
            join: 0,
            new_tokens: 5,
            chunk: 24,
            rollback_at: None,
        },
        Spec {
            prompt: p[0].clone(),
            join: 0,
            new_tokens: 7,
            chunk: 512,
            rollback_at: Some(3),
        },
        // Joins late, finishes early.
        Spec {
            prompt: p[2].clone(),
            join: 2,
            new_tokens: 2,
            chunk: 3,
            rollback_at: None,
        },
        // Whole long prompt as one chunk of >= 64 tokens: the tiled attention.
        Spec {
            prompt: p[1].clone(),
            join: 3,
            new_tokens: 3,
            chunk: 512,
            rollback_at: None,
        },
        Spec {
            prompt: p[4].clone(),
            join: 4,
            new_tokens: 6,
            chunk: 512,
            rollback_at: Some(1),
        },
    ];
    let (traces, peak) = run_multi(&model, &specs, 64);
    assert!(peak > 8, "the pool was used ({peak} blocks)");
    for (i, (s, t)) in specs.iter().zip(&traces).enumerate() {
        assert_eq!(t.tokens.len(), s.new_tokens);
        let want = alone_chunked(&model, s, &t.tokens);
        assert_eq!(want.len(), t.logits.len());
        for (k, (a, b)) in t.logits.iter().zip(&want).enumerate() {
            assert!(
                a == b,
                "sequence {i}, step {k}: logits differ from the single path"
            );
        }
        // Greedy tokens of the sequence alone through Model (whole-prompt prefill).
        let mut m = open().unwrap();
        let mut l = m.prefill(&s.prompt).unwrap();
        let mut greedy = Vec::new();
        for _ in 0..s.new_tokens {
            let t = argmax(&l);
            greedy.push(t);
            l = m.decode(t).unwrap();
        }
        assert_eq!(
            t.tokens, greedy,
            "sequence {i}: greedy tokens differ from Model's"
        );
        // Chunks of 512 are Model's own chunking: its logits are the same bits too.
        if s.chunk >= 512 && s.rollback_at.is_none() {
            let mut m = open().unwrap();
            let first = m.prefill(&s.prompt).unwrap();
            assert!(
                bits(&first) == t.logits[0],
                "sequence {i}: prefill logits differ from Model's"
            );
        }
    }
}

#[test]
fn exhausted_pool_is_a_typed_error_and_changes_nothing() {
    let Some(model) = open() else { return };
    let c = model.config();
    let opts = KvPoolOptions {
        n_blocks: 3,
        max_seqs: 2,
        max_context: 512,
    };
    let mut ms = MultiState::new(c, opts, Kernel::Q8).unwrap();
    let embd = model.token_embd().unwrap();
    let a = ms.add_seq().unwrap();
    let b = ms.add_seq().unwrap();
    assert!(matches!(
        ms.add_seq(),
        Err(ForwardError::Kv(KvError::TooManySeqs { max: 2 }))
    ));
    let part = |seq, n: usize| StepPart {
        seq,
        tokens: vec![1; n],
        want_logits: true,
    };
    ms.begin_step(&embd, &[part(a, 2 * KV_BLOCK), part(b, 1)])
        .unwrap();
    ms.cancel_step();
    assert_eq!(ms.pool().used_blocks(), 0);
    let e = ms
        .begin_step(&embd, &[part(a, 2 * KV_BLOCK + 1), part(b, KV_BLOCK)])
        .unwrap_err();
    assert!(
        matches!(
            e,
            ForwardError::Kv(KvError::Exhausted {
                needed: 4,
                free: 3,
                total: 3
            })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("exhausted"), "{e}");
    assert_eq!((ms.seq_len(a), ms.pool().used_blocks()), (Some(0), 0));
    // A bad token fails before any block is taken.
    let bad = StepPart {
        seq: a,
        tokens: vec![u32::MAX],
        want_logits: true,
    };
    assert!(matches!(
        ms.begin_step(&embd, &[bad]),
        Err(ForwardError::TokenOutOfRange { .. })
    ));
    assert_eq!(ms.pool().used_blocks(), 0);
    // Layers out of order and an unfinished step are refused.
    ms.begin_step(&embd, &[part(a, 1)]).unwrap();
    assert!(forward_layer_multi(1, &model.layer_weights(1).unwrap(), &mut ms).is_err());
    assert!(ms.end_step().is_err());
    assert!(KvPool::bytes_per_block(c) == 2 * 30 * 16 * 192 * 2);
}
