//! The Llama 3.1 70B case: 80 layers of ~530 MB on a 24 GiB card (2 GiB reserved for the KV
//! cache and workspace, two streaming slots of one layer each), 44 GiB of pinned RAM, NVMe
//! storage. Expected counts and times are derived here from the numbers alone (floor division
//! and the cost formula), not from the planner.

use tier_cache::{CostModel, Item, Placement, Planner, Reason, Tier, TierId};

const GIB: u64 = 1 << 30;
const LAYERS: u32 = 80;
const LAYER: u64 = 530_000_000;
const VRAM_BW: f64 = 1.008e12; // RTX 4090 device memory
const RAM_BW: f64 = 25.0e9; // pinned host-to-device, PCIe 4.0 x16
const NVME_BW: f64 = 7.0e9;

fn vram_available() -> u64 {
    24 * GIB - 2 * GIB - 2 * LAYER
}

fn tiers(ram: u64) -> Vec<Tier> {
    vec![
        Tier::new("VRAM", vram_available(), VRAM_BW),
        Tier::new("RAM", ram, RAM_BW),
        Tier::unlimited("storage", NVME_BW),
    ]
}

fn layers(skipped: &[u32]) -> Vec<Item<u32>> {
    (0..LAYERS)
        .map(|i| Item::new(i, LAYER, if skipped.contains(&i) { 0.0 } else { 1.0 }))
        .collect()
}

fn counts(plan: &Placement<u32>) -> [usize; 3] {
    [0, 1, 2].map(|t| plan.items_in(TierId(t)).len())
}

#[test]
fn plan_70b_all_layers() {
    let plan = Planner::new(tiers(44 * GIB))
        .unwrap()
        .plan(&layers(&[]))
        .unwrap();
    // 22 GiB - 1.06 GB = 22_562_320_128 bytes -> 42 layers of 530 MB.
    let in_vram = (vram_available() / LAYER) as usize;
    assert_eq!(in_vram, 42);
    let in_ram = ((44 * GIB / LAYER) as usize).min(LAYERS as usize - in_vram);
    let on_storage = LAYERS as usize - in_vram - in_ram;
    assert_eq!(counts(&plan), [in_vram, in_ram, on_storage]);
    assert_eq!(on_storage, 0);

    let expected = in_vram as f64 * LAYER as f64 / VRAM_BW + in_ram as f64 * LAYER as f64 / RAM_BW;
    let serial = plan.predict(CostModel::Serial);
    assert!((serial.seconds_per_step - expected).abs() < 1e-9 * expected);
    assert!((serial.steps_per_second() - 1.0 / expected).abs() < 1e-6);
    let overlapped = plan.predict(CostModel::Overlapped);
    let max_link =
        (in_vram as f64 * LAYER as f64 / VRAM_BW).max(in_ram as f64 * LAYER as f64 / RAM_BW);
    assert!((overlapped.seconds_per_step - max_link).abs() < 1e-9 * max_link);

    for why in plan.explain() {
        let line = why.to_string();
        match why.tier.0 {
            0 => assert!(line.contains("saves") && line.contains("vs RAM"), "{line}"),
            1 => assert!(line.contains("VRAM full"), "{line}"),
            _ => panic!("no layer should be on storage: {line}"),
        }
    }
    println!("{}", plan.summary());
}

#[test]
fn plan_70b_with_20_skipped_layers() {
    // 20 layers evenly spaced, first and last kept.
    let skipped: Vec<u32> = (0..20).map(|k| 2 + k * 4).collect();
    assert!(skipped.iter().all(|&l| l > 0 && l < LAYERS - 1));
    let plan = Planner::new(tiers(44 * GIB))
        .unwrap()
        .plan(&layers(&skipped))
        .unwrap();
    let active = LAYERS as usize - skipped.len();
    let in_vram = (vram_available() / LAYER) as usize;
    let in_ram = active - in_vram;
    assert_eq!(counts(&plan), [in_vram, in_ram, skipped.len()]);
    for &s in &skipped {
        assert_eq!(
            plan.tier_of(&s),
            Some(TierId(2)),
            "skipped layer {s} takes no fast room"
        );
    }
    let why = plan.explain();
    assert!(why
        .iter()
        .filter(|w| skipped.contains(&w.key))
        .all(|w| w.reason == Reason::Unused));
    let expected = in_vram as f64 * LAYER as f64 / VRAM_BW + in_ram as f64 * LAYER as f64 / RAM_BW;
    assert!((plan.seconds_per_step() - expected).abs() < 1e-9 * expected);
    println!("{}", plan.summary());
}

#[test]
fn plan_70b_small_ram_spills_to_storage() {
    let ram = 16 * GIB;
    let plan = Planner::new(tiers(ram))
        .unwrap()
        .plan(&layers(&[]))
        .unwrap();
    let in_vram = (vram_available() / LAYER) as usize;
    let in_ram = (ram / LAYER) as usize; // 32
    let on_storage = LAYERS as usize - in_vram - in_ram;
    assert_eq!(counts(&plan), [in_vram, in_ram, on_storage]);
    let l = LAYER as f64;
    let expected =
        in_vram as f64 * l / VRAM_BW + in_ram as f64 * l / RAM_BW + on_storage as f64 * l / NVME_BW;
    assert!((plan.seconds_per_step() - expected).abs() < 1e-9 * expected);
    for why in plan.explain().iter().filter(|w| w.tier == TierId(2)) {
        let line = why.to_string();
        assert!(
            line.contains("VRAM full") && line.contains("RAM full"),
            "{line}"
        );
    }
}
