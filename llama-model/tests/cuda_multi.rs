//! The CUDA multi-sequence step (`cuda::GpuMultiState` + `forward_layer_multi`: paged KV in
//! VRAM, one attention launch over every sequence's blocks) against two outside references, on
//! every model of `VRAMLESS_SYNTH_MODELS` (paths separated by `:`, e.g. synthetic SmolLM2 and
//! Llama-3.1-8B Q4_K_M from `synth-model`) and on `VRAMLESS_MODEL` when set (the real SmolLM2):
//! - the CPU multi-sequence step (`cpu::MultiState`, f32 kernel) fed the same tokens with the
//!   same schedule (sequences joining at different steps, chunked prefill next to decode, a
//!   rolled-back speculation, early finishes): logits cosine >= 0.99999 for every row, and the
//!   same greedy token wherever the CPU's top-2 margin is not a near-tie (random weights give
//!   near-ties; such steps are counted and printed);
//! - each sequence alone through the single-sequence `CudaModel` (batched prefill, then token
//!   by token): the same greedy tokens, up to a near-tie;
//! - the GPU argmax equals the host argmax of the downloaded logits; no blocks are left.
//!
//! Without a GPU or without models the test skips loudly (fails with `VRAMLESS_REQUIRE_GPU=1`).
#![cfg(feature = "cuda")]

use std::sync::Arc;

mod cuda_common;
use cuda_common::{loud, top2};

use llama_model::cpu::{self, Kernel, Model, ModelOptions, MultiState};
use llama_model::cuda::{self as gpu, CudaBackend, CudaModel, GpuMultiState};
use llama_model::paged::{KvError, KvPoolOptions, KvSeq, StepPart};

const CTX: usize = 256;
/// The bound on the per-row logits cosine, GPU multi vs CPU multi.
const MIN_COSINE: f64 = 0.99999;
/// CPU top-2 margin below which a greedy step is a near-tie (not compared).
const NEAR_TIE: f32 = 0.01;

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

/// One sequence of the schedule.
struct Spec {
    prompt: Vec<u32>,
    join: usize,
    new_tokens: usize,
    chunk: usize,
    /// Before this many generated tokens, two junk tokens ride along and are rolled back.
    rollback_at: Option<usize>,
}

/// A multi-sequence backend under test.
trait Multi {
    fn add(&mut self) -> KvSeq;
    fn remove(&mut self, s: KvSeq);
    fn truncate(&mut self, s: KvSeq, n: usize);
    fn len(&self, s: KvSeq) -> usize;
    fn used_blocks(&self) -> usize;
    /// One step: logits of the parts that want them (and, on the GPU, the GPU argmax).
    fn step(&mut self, parts: &[StepPart]) -> Vec<(KvSeq, Vec<f32>, Option<u32>)>;
}

struct Cpu<'a> {
    model: &'a Model,
    st: MultiState,
}

impl Multi for Cpu<'_> {
    fn add(&mut self) -> KvSeq {
        self.st.add_seq().unwrap()
    }
    fn remove(&mut self, s: KvSeq) {
        self.st.remove_seq(s)
    }
    fn truncate(&mut self, s: KvSeq, n: usize) {
        self.st.truncate(s, n)
    }
    fn len(&self, s: KvSeq) -> usize {
        self.st.seq_len(s).unwrap()
    }
    fn used_blocks(&self) -> usize {
        self.st.pool().used_blocks()
    }
    fn step(&mut self, parts: &[StepPart]) -> Vec<(KvSeq, Vec<f32>, Option<u32>)> {
        let m = self.model;
        self.st.begin_step(&m.token_embd().unwrap(), parts).unwrap();
        for l in 0..m.config().n_layers {
            cpu::forward_layer_multi(l, &m.layer_weights(l).unwrap(), &mut self.st).unwrap();
        }
        self.st.end_step().unwrap();
        let (norm, head) = m.head_weights().unwrap();
        let out = self.st.logits(&norm, &head).unwrap();
        out.into_iter().map(|(s, l)| (s, l, None)).collect()
    }
}

struct Gpu<'a> {
    model: &'a CudaModel,
    st: GpuMultiState,
}

impl Multi for Gpu<'_> {
    fn add(&mut self) -> KvSeq {
        self.st.add_seq().unwrap()
    }
    fn remove(&mut self, s: KvSeq) {
        self.st.remove_seq(s)
    }
    fn truncate(&mut self, s: KvSeq, n: usize) {
        self.st.truncate(s, n)
    }
    fn len(&self, s: KvSeq) -> usize {
        self.st.seq_len(s).unwrap()
    }
    fn used_blocks(&self) -> usize {
        self.st.pool().used_blocks()
    }
    fn step(&mut self, parts: &[StepPart]) -> Vec<(KvSeq, Vec<f32>, Option<u32>)> {
        let m = self.model;
        self.st
            .begin_step(&m.token_embd_weight().unwrap(), parts)
            .unwrap();
        for l in 0..m.config().n_layers {
            gpu::forward_layer_multi(l, &m.layer_weights(l).unwrap(), &mut self.st).unwrap();
        }
        self.st.end_step().unwrap();
        let (norm, head) = m.head_weights().unwrap();
        let logits = self.st.logits(&norm, &head).unwrap();
        let ids = self.st.argmax(&norm, &head).unwrap();
        logits
            .into_iter()
            .zip(ids)
            .map(|((s, l), (s2, t))| {
                assert_eq!(s, s2);
                (s, l, Some(t))
            })
            .collect()
    }
}

/// Per sequence: the logits of every step that gave some, and the tokens fed after them.
struct Trace {
    logits: Vec<Vec<f32>>,
    gpu_argmax: Vec<Option<u32>>,
    tokens: Vec<u32>,
}

/// Runs the schedule; the generated tokens are the backend's own greedy ones, or `forced`'s
/// (teacher forcing, so a reference run sees the same inputs).
fn run(m: &mut dyn Multi, specs: &[Spec], forced: Option<&[Trace]>) -> Vec<Trace> {
    let mut tr: Vec<Trace> = specs
        .iter()
        .map(|_| Trace {
            logits: Vec::new(),
            gpu_argmax: Vec::new(),
            tokens: Vec::new(),
        })
        .collect();
    let mut handle: Vec<Option<KvSeq>> = specs.iter().map(|_| None).collect();
    let mut fed = vec![0usize; specs.len()];
    let mut done = vec![false; specs.len()];
    let mut rolled = vec![false; specs.len()];
    let mut step = 0;
    while done.iter().any(|d| !d) {
        let (mut parts, mut who) = (Vec::new(), Vec::new());
        for (i, s) in specs.iter().enumerate() {
            if done[i] || s.join > step {
                continue;
            }
            let seq = *handle[i].get_or_insert_with(|| m.add());
            let tokens = if fed[i] < s.prompt.len() {
                s.prompt[fed[i]..(fed[i] + s.chunk).min(s.prompt.len())].to_vec()
            } else {
                let g = tr[i].tokens.len();
                let t = tr[i].tokens[g - 1];
                if s.rollback_at == Some(g) && !rolled[i] {
                    rolled[i] = true;
                    vec![t, 5, 6]
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
        let mut out = m.step(&parts).into_iter();
        for (i, n) in who {
            let seq = handle[i].unwrap();
            if fed[i] < specs[i].prompt.len() {
                fed[i] += n;
                if fed[i] < specs[i].prompt.len() {
                    continue;
                }
            } else if n == 3 {
                assert_eq!(out.next().unwrap().0, seq);
                let len = m.len(seq);
                m.truncate(seq, len - 3);
                continue;
            }
            let (got, l, g) = out.next().unwrap();
            assert_eq!(got, seq);
            let k = tr[i].tokens.len();
            let t = match forced {
                Some(f) => f[i].tokens[k],
                None => g.unwrap_or_else(|| top2(&l).0),
            };
            tr[i].logits.push(l);
            tr[i].gpu_argmax.push(g);
            tr[i].tokens.push(t);
            if tr[i].tokens.len() == specs[i].new_tokens {
                done[i] = true;
                m.remove(seq);
            }
        }
    }
    assert_eq!(m.used_blocks(), 0, "blocks left after every sequence left");
    tr
}

fn specs(vocab: u32) -> Vec<Spec> {
    let toks = |n: usize, seed: u32| -> Vec<u32> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(7919).wrapping_add(seed * 104_729 + 13)) % vocab)
            .collect()
    };
    vec![
        Spec {
            prompt: toks(70, 1),
            join: 0,
            new_tokens: 5,
            chunk: 32,
            rollback_at: None,
        },
        Spec {
            prompt: toks(5, 2),
            join: 0,
            new_tokens: 7,
            chunk: 512,
            rollback_at: Some(3),
        },
        Spec {
            prompt: toks(9, 3),
            join: 2,
            new_tokens: 2,
            chunk: 4,
            rollback_at: None,
        },
        Spec {
            prompt: toks(40, 4),
            join: 3,
            new_tokens: 4,
            chunk: 512,
            rollback_at: None,
        },
        Spec {
            prompt: toks(1, 5),
            join: 4,
            new_tokens: 6,
            chunk: 512,
            rollback_at: Some(1),
        },
    ]
}

fn models() -> Option<Vec<String>> {
    let require = std::env::var("VRAMLESS_REQUIRE_GPU").as_deref() == Ok("1");
    let mut list: Vec<String> = std::env::var("VRAMLESS_SYNTH_MODELS")
        .unwrap_or_default()
        .split(':')
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    if let Ok(p) = std::env::var("VRAMLESS_MODEL") {
        list.push(p);
    }
    if list.is_empty() {
        assert!(
            !require,
            "VRAMLESS_REQUIRE_GPU=1 but neither VRAMLESS_SYNTH_MODELS nor VRAMLESS_MODEL is set"
        );
        loud("!!! SKIPPED cuda_multi: set VRAMLESS_SYNTH_MODELS and/or VRAMLESS_MODEL".into());
        return None;
    }
    Some(list)
}

fn backend() -> Option<Arc<CudaBackend>> {
    match CudaBackend::with_options(0, &cuda_common::options()) {
        Ok(b) => Some(Arc::new(b)),
        Err(e) if std::env::var("VRAMLESS_REQUIRE_GPU").as_deref() == Ok("1") => {
            panic!("VRAMLESS_REQUIRE_GPU=1 but CUDA failed: {e}")
        }
        Err(e) => {
            loud(format!("!!! SKIPPED cuda_multi: {e}"));
            None
        }
    }
}

/// GPU trace vs CPU trace of the same inputs: every row's cosine, the GPU argmax against the
/// host argmax and the CPU's token. Returns (worst cosine, greedy steps compared, near-ties).
fn compare(path: &str, label: &str, gt: &[Trace], ct: &[Trace]) -> (f64, usize, usize) {
    let (mut worst, mut ties, mut compared) = (1f64, 0, 0);
    for (i, (a, b)) in gt.iter().zip(ct).enumerate() {
        assert_eq!(a.logits.len(), b.logits.len());
        for (k, (lg, lc)) in a.logits.iter().zip(&b.logits).enumerate() {
            let cos = cosine(lg, lc);
            worst = worst.min(cos);
            assert!(
                cos >= MIN_COSINE,
                "{path} ({label}): seq {i} step {k}: cosine {cos}"
            );
            let (host, _) = top2(lg);
            let ga = a.gpu_argmax[k].unwrap();
            assert!(
                ga == host || lg[ga as usize] == lg[host as usize],
                "{path} ({label}): seq {i} step {k}: GPU argmax {ga}, host argmax {host}"
            );
            let (ct_tok, margin) = top2(lc);
            if margin < NEAR_TIE {
                ties += 1;
                continue;
            }
            compared += 1;
            assert_eq!(
                ga, ct_tok,
                "{path} ({label}): seq {i} step {k}: GPU vs CPU token"
            );
        }
    }
    (worst, compared, ties)
}

#[test]
fn gpu_multi_sequence_matches_cpu_multi_and_single_sequence_runs() {
    let Some(list) = models() else { return };
    let Some(backend) = backend() else { return };
    for path in &list {
        let gm = CudaModel::open_on(backend.clone(), path, CTX).expect("gpu open");
        let c = gm.config().clone();
        let specs = specs(c.vocab_size as u32);
        let opts = KvPoolOptions::for_sequences(specs.len(), CTX);
        let mut g = Gpu {
            model: &gm,
            st: GpuMultiState::new(backend.clone(), &c, opts).expect("gpu multi state"),
        };
        // Every step of up to MATVEC_MAX_ROWS rows on the few-row matvec (the default takes
        // the GEMM from DEFAULT_MATVEC_ROWS + 1 rows on).
        g.st.set_matvec_rows(gpu::MATVEC_MAX_ROWS);
        let gt = run(&mut g, &specs, None);
        drop(g);
        let cm = Model::open_with(
            path,
            ModelOptions {
                max_context: CTX,
                kernel: Kernel::F32,
            },
        )
        .expect("cpu open");
        let mut cc = Cpu {
            model: &cm,
            st: MultiState::new(&c, opts, Kernel::F32).unwrap(),
        };
        let ct = run(&mut cc, &specs, Some(&gt));
        let (worst, compared, ties) = compare(path, "few-row matvec", &gt, &ct);
        // The same schedule with every product on the tensor-core GEMM, teacher-forced.
        let mut g = Gpu {
            model: &gm,
            st: GpuMultiState::new(backend.clone(), &c, opts).expect("gpu multi state"),
        };
        g.st.set_matvec_rows(0);
        let gt_gemm = run(&mut g, &specs, Some(&gt));
        drop(g);
        let (worst_gemm, ..) = compare(path, "GEMM only", &gt_gemm, &ct);
        // Each sequence alone through the single-sequence CudaModel: greedy tokens up to the
        // first near-tie of the CPU reference.
        let mut single = CudaModel::open_on(backend.clone(), path, CTX).expect("gpu open");
        let mut alone_equal = 0;
        for (i, s) in specs.iter().enumerate() {
            single.reset();
            let mut t = single.prefill_argmax(&s.prompt).expect("prefill");
            for k in 0..s.new_tokens {
                if top2(&ct[i].logits[k]).1 < NEAR_TIE {
                    break;
                }
                assert_eq!(
                    t, gt[i].tokens[k],
                    "{path}: seq {i} token {k} alone vs batched"
                );
                alone_equal += 1;
                if k + 1 < s.new_tokens {
                    t = single.decode_argmax(t).expect("decode");
                }
            }
        }
        loud(format!(
            "{path}: GPU multi vs CPU multi: worst row cosine {worst:.7} (GEMM only: \
             {worst_gemm:.7}), {compared} greedy steps equal, {ties} near-ties skipped; \
             {alone_equal} tokens equal to single-sequence runs"
        ));
    }
}

#[test]
fn gpu_pool_exhaustion_is_a_typed_error() {
    let Some(list) = models() else { return };
    let Some(backend) = backend() else { return };
    let gm = CudaModel::open_on(backend.clone(), &list[0], CTX).expect("gpu open");
    let c = gm.config().clone();
    let opts = KvPoolOptions {
        n_blocks: 2,
        max_seqs: 2,
        max_context: CTX,
    };
    let mut st = GpuMultiState::new(backend.clone(), &c, opts).unwrap();
    let a = st.add_seq().unwrap();
    let b = st.add_seq().unwrap();
    let embd = gm.token_embd_weight().unwrap();
    let part = |seq, n: usize| StepPart {
        seq,
        tokens: vec![1; n],
        want_logits: true,
    };
    let e = st
        .begin_step(&embd, &[part(a, 17), part(b, 1)])
        .unwrap_err();
    assert!(
        matches!(
            e,
            gpu::CudaError::Kv(KvError::Exhausted {
                needed: 3,
                free: 2,
                total: 2
            })
        ),
        "{e}"
    );
    assert_eq!(st.pool().used_blocks(), 0);
    let e = st
        .begin_step(&embd, &[part(a, 1), part(b, CTX + 1)])
        .unwrap_err();
    assert!(
        matches!(e, gpu::CudaError::Kv(KvError::ContextFull { .. })),
        "{e}"
    );
    assert_eq!(st.pool().used_blocks(), 0);
    // A one-block step still runs after the refusals.
    st.begin_step(&embd, &[part(a, 3)]).unwrap();
    for l in 0..c.n_layers {
        gpu::forward_layer_multi(l, &gm.layer_weights(l).unwrap(), &mut st).unwrap();
    }
    st.end_step().unwrap();
    assert_eq!((st.seq_len(a), st.pool().used_blocks()), (Some(3), 1));
}
