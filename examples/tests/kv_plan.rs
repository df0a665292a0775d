//! The plan budgets the batch engine's KV pool with the weights: the pool takes device room
//! (so layers that fit without it stream), the report names the displaced layers and the KV
//! placement decision by bytes moved per step, and a budget too small for the requested
//! sequences and context is a typed error naming the numbers. Figures are computed by hand
//! from the inputs.

use vramless_engine::engine::plan::{plan, PlanInput};
use vramless_engine::engine::{BatchEngine, DataPath, EngineError, EngineOptions, Home};

#[macro_use]
#[allow(dead_code)]
mod common;

/// 10 layers of 100 bytes, 50 fixed, 2 slots of 100, `kv` bytes of pool per layer.
fn input(budget: u64, kv: u64) -> PlanInput {
    PlanInput {
        layer_bytes: vec![100; 10],
        skipped: vec![],
        device_budget: budget,
        device_fixed: 50,
        ram_budget: 10_000,
        slots: 2,
        ctx: 64,
        max_seqs: 4,
        kv_per_layer: kv,
        kv_value_bytes: 2,
        kv_dim: 1,
        bandwidth: [1000.0, 100.0, 10.0],
        pin_first: 0,
    }
}

#[test]
fn the_pool_takes_device_room_and_the_report_names_what_it_displaced() {
    // Without KV: 650 - 50 - 200 = 400 -> 4 resident layers. With 10 x 10 = 100 of KV: 300
    // -> 3 resident; one layer displaced.
    let none = plan(&input(650, 0)).unwrap();
    assert_eq!(none.layers(Home::Device).len(), 4);
    assert!(none.displaced.is_empty());
    let p = plan(&input(650, 10)).unwrap();
    assert_eq!(p.kv_pool_bytes, 100);
    assert_eq!(p.layers(Home::Device).len(), 3);
    assert!(!p.displaced.is_empty(), "{}", p.report);
    for &d in &p.displaced {
        assert!(none.homes[d] == Home::Device && p.homes[d] != Home::Device);
    }
    assert!(
        p.report.contains(
            "the KV pool took the room of 1 layers (100 B): 3 layers on the device instead of 4"
        ),
        "{}",
        p.report
    );
    assert!(p
        .report
        .contains("KV pool 4 sequences x 64 positions = 100 B (25 B per sequence)"));
    assert_eq!(p.streamed_per_step, 700);
    // Travelling KV: items of 110; 650 - 50 - 2 x 110 = 380 -> 3 resident; 7 streamed x 110 +
    // write-back of 2 x 1 x 2 x 4 = 16 each = 7 x 126 = 882 bytes per step, more than 700.
    assert_eq!(p.kv_travel_per_step, Some(882));
    assert!(
        p.report.contains("the KV pool stays on the device"),
        "{}",
        p.report
    );
    // A pool that fits beside every layer displaces nothing.
    let all = plan(&input(2000, 10)).unwrap();
    assert!(!all.streaming && all.displaced.is_empty());
    assert!(all.report.contains("displaced no layer"), "{}", all.report);
}

#[test]
fn a_budget_too_small_for_the_pool_is_a_typed_error_naming_the_numbers() {
    // 50 fixed + 10 x 100 of KV + 2 slots of 100 = 1250 > 1000.
    let e = plan(&input(1000, 100)).unwrap_err();
    match &e {
        EngineError::BudgetTooSmall {
            seqs,
            ctx,
            kv,
            need,
            ..
        } => assert_eq!((*seqs, *ctx, *kv, *need), (4, 64, 1000, 1250)),
        other => panic!("expected BudgetTooSmall, got {other:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("4 sequences x 64 positions") && text.contains("at least 1.2 KiB"),
        "{text}"
    );
    assert!(
        !text.contains("--"),
        "messages name settings, not flags: {text}"
    );
}

#[test]
fn the_batch_engine_plans_its_pool_on_the_real_model() {
    let model = model_or_skip!();
    let opts = |seqs: usize, vram: u64| EngineOptions {
        vram_budget: Some(vram),
        ram_budget: Some(1 << 30),
        path: DataPath::Auto,
        ctx: 256,
        max_seqs: seqs,
        verbose: false,
        ..EngineOptions::default()
    };
    // SmolLM2: 30 layers x 2 (K, V) x 192 x 2 bytes = 23040 bytes per position; 256
    // positions x 16 sequences = 90 MiB of pool.
    let b = BatchEngine::open(&model, &opts(16, 4 << 30)).unwrap();
    assert_eq!(b.plan().kv_pool_bytes, 16 * 256 * 23040);
    let (_, total, per_block) = b.kv_usage();
    assert_eq!((total, per_block), (16 * 256 / 16, 16 * 23040));
    // A budget that holds every layer beside one sequence's pool: 16 sequences' pool
    // displaces layers.
    let one = BatchEngine::open(&model, &opts(1, 230 << 20)).unwrap();
    let many = BatchEngine::open(&model, &opts(16, 230 << 20)).unwrap();
    assert!(
        many.plan().layers(Home::Device).len() < one.plan().layers(Home::Device).len(),
        "{}",
        many.plan().report
    );
    assert!(!many.plan().displaced.is_empty());
    // Too small for 64 sequences of 256: a typed error.
    let e = BatchEngine::open(&model, &opts(64, 230 << 20)).unwrap_err();
    assert!(
        matches!(
            e,
            EngineError::BudgetTooSmall {
                seqs: 64,
                ctx: 256,
                ..
            }
        ),
        "{e}"
    );
}
