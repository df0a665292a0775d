//! KV growth of the multi-sequence engine on the CPU backend with the real default model: with a
//! budget where some layers are resident and a KV pool planned for one sequence, more sequences
//! join: resident layers move off the device to make room for their KV (the engine's homes and
//! growth statistics show it), every sequence's greedy tokens still equal running it alone
//! through the single-sequence `Engine`, and once they finish the layers come back. KV beyond
//! the whole device room is a typed error that changes nothing, and the engine keeps serving.
//! Sequences that join while another one is mid-run grow the pool under its live KV. With
//! feature `cuda` and a GPU the same runs go through the CUDA backend (VRAM KV pool, device
//! buffers of resident layers freed and uploaded again), against the single-sequence CUDA
//! engine.

use std::collections::BTreeMap;

use llama_model::sampler::SamplerConfig;
use llama_model::tokenizer::Tokenizer;
use vramless_engine::engine::{
    BatchEngine, DataPath, Device, Engine, EngineError, EngineOptions, Home, SeqEvent, SeqId,
    SeqRequest,
};

#[macro_use]
#[allow(dead_code)]
mod common;

const CTX: usize = 96;
const NEW: usize = 5;

fn opts(ram: u64, path: DataPath, growth: bool) -> EngineOptions {
    opts_on(Device::Cpu, 130 << 20, ram, path, growth)
}

fn opts_on(device: Device, vram: u64, ram: u64, path: DataPath, growth: bool) -> EngineOptions {
    EngineOptions {
        device,
        vram_budget: Some(vram),
        ram_budget: Some(ram),
        path,
        ctx: CTX,
        max_seqs: 1,
        kv_growth: growth,
        verbose: false,
        ..EngineOptions::default()
    }
}

fn req(prompt: &[u32], n: usize) -> SeqRequest {
    SeqRequest {
        prompt: prompt.to_vec(),
        sampler: SamplerConfig::default(),
        max_new_tokens: n,
        stop_tokens: vec![],
    }
}

fn resident(h: &[Home]) -> usize {
    h.iter().filter(|&&h| h == Home::Device).count()
}

fn prompts(model: &std::path::Path) -> Vec<Vec<u32>> {
    let m = llama_model::cpu::Model::open(model).unwrap();
    let tok = Tokenizer::from_gguf(m.gguf().metadata()).unwrap();
    [
        "The capital of France is",
        "1, 2, 3,",
        "The quick brown fox",
        "Once upon a time, in a small village by the sea, there lived",
    ]
    .iter()
    .map(|p| tok.encode_prompt(p).unwrap())
    .collect()
}

/// Adds sequences (cycling through the prompts) until two layers have left the device, plus one
/// more; runs them all to the end; checks each against its single run.
fn grow_run_and_check(
    name: &str,
    b: &mut BatchEngine,
    single: &mut Engine,
    p: &[Vec<u32>],
    demoted_to: Home,
) {
    let planned = b.homes();
    assert_eq!(planned, b.plan().homes, "{name}");
    let k = resident(&planned);
    assert!(
        k >= 2 && b.plan().streaming,
        "{name}: some layers resident, some streamed"
    );
    let (_, planned_blocks, _) = b.kv_usage();
    let mut ids: Vec<(SeqId, usize)> = Vec::new();
    // Until two layers have moved, then one more sequence.
    let mut extra = 1;
    while extra > 0 {
        let i = ids.len();
        assert!(
            i < 60,
            "{name}: 60 sequences and fewer than two layers moved"
        );
        let id = b.add(req(&p[i % p.len()], NEW)).unwrap();
        ids.push((id, i % p.len()));
        if b.growth_stats().unwrap().demoted >= 2 {
            extra -= 1;
        }
    }
    let grown = b.homes();
    assert!(resident(&grown) <= k - 2, "{name}: layers were demoted");
    assert!(
        ids.len() > b.max_seqs(),
        "{name}: more sequences than planned"
    );
    let (_, total, _) = b.kv_usage();
    assert!(total > planned_blocks, "{name}: the pool grew");
    assert!(total >= b.kv_reserved(), "{name}");
    for (i, (was, now)) in planned.iter().zip(&grown).enumerate() {
        if was != now {
            assert_eq!(
                *was,
                Home::Device,
                "{name}: only resident layers move (layer {i})"
            );
            assert_eq!(*now, demoted_to, "{name}: layer {i} streams from there now");
        }
    }
    let mut got: BTreeMap<SeqId, Vec<u32>> = BTreeMap::new();
    let mut steps = 0;
    while b.active() > 0 {
        for e in b.step().unwrap() {
            if let SeqEvent::Token { id, token } = e {
                got.entry(id).or_default().push(token);
            }
        }
        steps += 1;
        assert!(steps < 200, "{name}: the batch does not end");
    }
    // Every sequence equals its single run.
    let mut want: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    for &(id, pi) in &ids {
        let w = want.entry(pi).or_insert_with(|| {
            single.reset();
            single.greedy(&p[pi], NEW).unwrap()
        });
        assert_eq!(&got[&id], w, "{name}: {id} differs from its single run");
    }
    // All finished: the pool shrank back and the layers came home.
    assert_eq!(b.kv_reserved(), 0);
    assert_eq!(
        b.kv_usage().1,
        planned_blocks,
        "{name}: the pool is its planned size"
    );
    assert_eq!(b.homes(), planned, "{name}: the layers went back home");
    let s = b.growth_stats().unwrap();
    assert!(
        s.demoted > 0 && s.promoted > 0 && s.grown > 0 && s.trimmed > 0,
        "{name}: {s:?}"
    );
}

/// Runs `seq` alone to the end (greedy, `n` tokens) through the single-sequence engine.
fn single_run(single: &mut Engine, seq: &[u32], n: usize) -> Vec<u32> {
    single.reset();
    single.greedy(seq, n).unwrap()
}

/// One long sequence runs a few steps; then sequences join until a layer has left the device,
/// so the pool grows under the first one's live KV; every sequence equals its single run.
fn join_mid_run_and_check(name: &str, b: &mut BatchEngine, single: &mut Engine, p: &[Vec<u32>]) {
    const FIRST: usize = 12;
    let first = b.add(req(&p[3], FIRST)).unwrap();
    let mut got: BTreeMap<SeqId, Vec<u32>> = BTreeMap::new();
    let take = |b: &mut BatchEngine, got: &mut BTreeMap<SeqId, Vec<u32>>| {
        for e in b.step().unwrap() {
            if let SeqEvent::Token { id, token } = e {
                got.entry(id).or_default().push(token);
            }
        }
    };
    for _ in 0..4 {
        take(b, &mut got);
    }
    assert!(
        !got.is_empty() && b.active() == 1,
        "{name}: the first sequence is decoding"
    );
    let (_, before, _) = b.kv_usage();
    let demoted = b.growth_stats().unwrap().demoted;
    let mut ids = vec![(first, 3, FIRST)];
    while b.growth_stats().unwrap().demoted == demoted {
        assert!(ids.len() < 60, "{name}: 60 sequences and no layer moved");
        let pi = ids.len() % 3;
        ids.push((b.add(req(&p[pi], NEW)).unwrap(), pi, NEW));
    }
    assert!(b.kv_usage().1 > before, "{name}: the pool grew mid-run");
    let mut steps = 0;
    while b.active() > 0 {
        take(b, &mut got);
        steps += 1;
        assert!(steps < 200, "{name}: the batch does not end");
    }
    for &(id, pi, n) in &ids {
        assert_eq!(
            got[&id],
            single_run(single, &p[pi], n),
            "{name}: {id} differs from its single run"
        );
    }
    assert_eq!(
        b.homes(),
        b.plan().homes,
        "{name}: the layers went back home"
    );
}

#[test]
fn a_sequence_mid_run_keeps_its_kv_while_the_pool_grows() {
    let model = model_or_skip!();
    let p = prompts(&model);
    let mut single = Engine::open(&model, &opts(0, DataPath::Auto, false)).unwrap();
    let mut b = BatchEngine::open(&model, &opts(1 << 30, DataPath::Auto, true)).unwrap();
    join_mid_run_and_check("cpu", &mut b, &mut single, &p);
}

/// The smallest device budget (from 140 MiB up) at which the CUDA plan keeps at least three
/// layers resident and streams the rest.
#[cfg(feature = "cuda")]
fn cuda_batch_engine(model: &std::path::Path, ram: u64, path: DataPath) -> BatchEngine {
    for mib in (140u64..=480).step_by(10) {
        let o = opts_on(Device::Cuda, mib << 20, ram, path, true);
        if let Ok(b) = BatchEngine::open(model, &o) {
            let k = resident(&b.plan().homes);
            if k >= 3 && b.plan().streaming {
                eprintln!("cuda growth: {mib} MiB device budget, {k} layers resident");
                return b;
            }
        }
    }
    panic!("no device budget from 140 to 480 MiB keeps 3 layers resident and streams the rest");
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_more_sequences_than_planned_demote_layers_and_tokens_stay_equal() {
    let model = model_or_skip!();
    if let Err(e) = slep_pipeline::cuda_available() {
        test_support::skip_gpu(e);
        return;
    }
    let p = prompts(&model);
    let resident_opts = EngineOptions {
        vram_budget: None,
        ..opts_on(Device::Cuda, 0, 0, DataPath::Auto, false)
    };
    let mut single = Engine::open(&model, &resident_opts).unwrap();
    for (name, ram, path, to) in [
        (
            "cuda, demoted to pinned RAM",
            1 << 30,
            DataPath::Auto,
            Home::Pinned,
        ),
        ("cuda, demoted to storage", 0, DataPath::Mmap, Home::Storage),
    ] {
        let mut b = cuda_batch_engine(&model, ram, path);
        b.set_prefill_chunk(32);
        grow_run_and_check(name, &mut b, &mut single, &p, to);
        join_mid_run_and_check(name, &mut b, &mut single, &p);
    }
}

#[test]
fn more_sequences_than_planned_demote_layers_and_tokens_stay_equal() {
    let model = model_or_skip!();
    let p = prompts(&model);
    let mut single = Engine::open(&model, &opts(0, DataPath::Auto, false)).unwrap();
    for (name, o, to) in [
        (
            "demoted to pinned RAM",
            opts(1 << 30, DataPath::Auto, true),
            Home::Pinned,
        ),
        (
            "demoted to storage",
            opts(0, DataPath::Mmap, true),
            Home::Storage,
        ),
    ] {
        let mut b = BatchEngine::open(&model, &o).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(b.kv_growth());
        b.set_prefill_chunk(32);
        grow_run_and_check(name, &mut b, &mut single, &p, to);
        // The engine serves again after growing and shrinking.
        let id = b.add(req(&p[0], 3)).unwrap();
        let mut toks = Vec::new();
        while b.active() > 0 {
            for e in b.step().unwrap() {
                if let SeqEvent::Token { id: i, token } = e {
                    assert_eq!(i, id);
                    toks.push(token);
                }
            }
        }
        single.reset();
        assert_eq!(toks, single.greedy(&p[0], 3).unwrap(), "{name}");
    }
}

#[test]
fn kv_beyond_the_device_room_is_a_typed_error_and_changes_nothing() {
    let model = model_or_skip!();
    let p = prompts(&model);
    let o = EngineOptions {
        ctx: 256,
        ..opts(1 << 30, DataPath::Auto, true)
    };
    let mut b = BatchEngine::open(&model, &o).unwrap();
    let k = resident(&b.homes());
    // Long runs reserve much KV (nothing is stepped: no compute); add until the room is gone.
    let mut held = Vec::new();
    let err = loop {
        assert!(held.len() < 500, "the device room never ran out");
        match b.add(req(&p[0], 200)) {
            Ok(id) => held.push(id),
            Err(e) => break e,
        }
    };
    let EngineError::Usage(m) = &err else {
        panic!("expected a typed usage error, got {err:?}");
    };
    assert!(m.contains("more than the"), "{m}");
    assert!(held.len() > 1, "several long sequences fitted first");
    assert!(
        resident(&b.homes()) < k,
        "layers left the device for the KV"
    );
    let (homes, usage, reserved) = (b.homes(), b.kv_usage(), b.kv_reserved());
    assert!(b.add(req(&p[0], 200)).is_err());
    assert_eq!(
        (b.homes(), b.kv_usage(), b.kv_reserved()),
        (homes, usage, reserved)
    );
    assert_eq!(b.active(), held.len());
    // One long sequence ends: a short one fits beside the others and runs; its tokens equal
    // its single run.
    b.cancel(held[0]);
    assert!(b.kv_reserved() < reserved);
    b.add(req(&p[1], 3)).unwrap();
    for &id in &held[1..] {
        b.cancel(id);
    }
    let mut toks = Vec::new();
    while b.active() > 0 {
        for e in b.step().unwrap() {
            if let SeqEvent::Token { token, .. } = e {
                toks.push(token);
            }
        }
    }
    let mut single = Engine::open(&model, &opts(0, DataPath::Auto, false)).unwrap();
    assert_eq!(toks, single.greedy(&p[1], 3).unwrap());
    assert_eq!(b.kv_reserved(), 0);
    assert_eq!(resident(&b.homes()), k, "the layers came back");
}

#[test]
fn without_growth_the_pool_refuses_and_a_resident_plan_cannot_grow() {
    let model = model_or_skip!();
    let p = prompts(&model);
    let mut b = BatchEngine::open(&model, &opts(1 << 30, DataPath::Auto, false)).unwrap();
    assert!(!b.kv_growth() && b.growth_stats().is_none());
    b.add(req(&p[0], 2)).unwrap();
    assert!(matches!(
        b.add(req(&p[0], 2)),
        Err(EngineError::Sequence(_))
    ));
    let resident_plan = EngineOptions {
        vram_budget: None,
        ..opts(0, DataPath::Auto, true)
    };
    match BatchEngine::open(&model, &resident_plan) {
        Err(EngineError::Usage(m)) => assert!(m.contains("no streaming slots"), "{m}"),
        other => panic!("expected a usage error, got {other:?}"),
    }
}

#[test]
fn a_prompt_file_runs_beyond_the_planned_pool_with_kv_growth() {
    let model = model_or_skip!();
    let p = prompts(&model);
    let all: Vec<Vec<u32>> = (0..12).map(|i| p[i % p.len()].clone()).collect();
    let sampler = SamplerConfig::default();
    let mut b = BatchEngine::open(&model, &opts(1 << 30, DataPath::Auto, true)).unwrap();
    let got = vramless_engine::batch_run::run_prompts(&mut b, &all, &sampler, NEW, &[], |_, _| {})
        .unwrap();
    assert!(b.growth_stats().unwrap().grown > 0, "the pool grew");
    let mut single = Engine::open(&model, &opts(0, DataPath::Auto, false)).unwrap();
    for (i, c) in got.iter().enumerate() {
        single.reset();
        assert_eq!(c.tokens, single.greedy(&all[i], NEW).unwrap(), "prompt {i}");
    }
    assert_eq!(
        b.kv_usage().1,
        CTX / 16,
        "the pool is back to its planned size"
    );
    assert_eq!(b.homes(), b.plan().homes, "every layer back home");
}
