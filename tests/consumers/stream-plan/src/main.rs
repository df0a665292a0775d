//! Plans where the 12 "layers" of a file live with `vramless-tier-cache` (a small device tier,
//! some pinned RAM, the file itself), then streams them every "token" through a
//! `vramless-slep-pipeline` pipeline: resident layers read in place, pinned ones copied from
//! RAM, the rest read from the file. Every layer's bytes are checked against the file read with
//! std I/O. Exit 0 when all agree.

use std::process::ExitCode;

use slep_pipeline::{
    ByteRange, CpuTransfer, FileSource, IoEngine, Item, PinnedRamSource, Pipeline, ReadMode,
    ResidentSource, RoutedSource, Schedule,
};
use tier_cache::{Planner, Tier, TierId};

const LAYERS: u64 = 12;
const LAYER: u64 = 256 * 1024 + 77; // odd size: unaligned offsets for O_DIRECT

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let path =
        std::env::temp_dir().join(format!("consumer-stream-plan-{}.bin", std::process::id()));
    let bytes: Vec<u8> = (0..LAYERS * LAYER)
        .map(|i| (i % 251) as u8 ^ (i >> 11) as u8)
        .collect();
    std::fs::write(&path, &bytes)?;
    let file = std::fs::read(&path)?;

    let planner = Planner::new(vec![
        Tier::new("device", 3 * LAYER, 1.0e12),
        Tier::new("pinned RAM", 4 * LAYER, 25.0e9),
        Tier::unlimited("file", 3.0e9),
    ])?;
    let items: Vec<tier_cache::Item<u64>> = (0..LAYERS)
        .map(|i| tier_cache::Item::new(i, LAYER, 1.0))
        .collect();
    let plan = planner.plan(&items)?;
    let tiers: Vec<Vec<u64>> = (0..3)
        .map(|t| plan.items_in(TierId(t)).into_iter().copied().collect())
        .collect();
    println!(
        "plan: device {:?}, pinned RAM {:?}, file {:?}",
        tiers[0], tiers[1], tiers[2]
    );
    if tiers[0].len() != 3 || tiers[1].len() != 4 || tiers[2].len() != 5 {
        return Err(format!(
            "unexpected plan sizes {:?}",
            tiers.iter().map(Vec::len).collect::<Vec<_>>()
        )
        .into());
    }

    let item = |k: u64| Item::single(k, ByteRange::new(k * LAYER, LAYER));
    let transfer = CpuTransfer::default();
    let mut routed = RoutedSource::new();
    let resident = routed.add(Box::new(ResidentSource));
    let mut pinned = PinnedRamSource::new();
    for &k in &tiers[1] {
        pinned.load_from_file(&transfer, &path, &item(k))?;
    }
    let pinned = routed.add(Box::new(pinned));
    let from_file = routed.add(Box::new(FileSource::open(
        &path,
        ReadMode::Direct,
        IoEngine::Auto,
    )?));
    for (tier, index) in [(0usize, resident), (1, pinned), (2, from_file)] {
        for &k in &tiers[tier] {
            routed.route(k, index);
        }
    }

    let schedule = Schedule::new((0..LAYERS).map(item).collect());
    let mut pipeline = Pipeline::new(transfer, 2, LAYER as usize)?;
    let mut checked = 0u64;
    for _token in 0..3 {
        pipeline.run(&schedule, &mut routed, |ready| {
            ready.wait()?;
            let k = ready.item.key;
            let want = &file[(k * LAYER) as usize..((k + 1) * LAYER) as usize];
            match ready.buffer() {
                // A resident layer: the consumer reads its own copy (here, the file's bytes).
                None => assert!(
                    tiers[0].contains(&k),
                    "layer {k} has no slot but is not resident"
                ),
                Some(slot) => assert!(
                    slot.as_slice()[..ready.len] == *want,
                    "layer {k} differs from the file"
                ),
            }
            checked += 1;
            Ok(None)
        })?;
    }
    std::fs::remove_file(&path).ok();
    if checked != 3 * LAYERS {
        return Err(format!("consumed {checked} layers, expected {}", 3 * LAYERS).into());
    }
    println!("streamed {LAYERS} layers x 3 tokens: every streamed layer equals the file");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("consumer-stream-plan: error: {e}");
            ExitCode::FAILURE
        }
    }
}
