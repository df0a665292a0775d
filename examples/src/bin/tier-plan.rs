//! `tier-plan`: where the layers of a streamed model live, and the predicted time per token.
//!
//! Defaults reproduce Llama 3.1 70B (80 layers of ~530 MB at Q4_K_M) on a 24 GiB card with
//! 2 GiB reserved for the KV cache and workspace, 44 GiB of pinned RAM and NVMe storage:
//!
//! ```text
//! cargo run --release --bin tier-plan
//! cargo run --release --bin tier-plan -- --skip 20      # 20 layers skipped (weight 0)
//! cargo run --release --bin tier-plan -- --ram 16GiB --explain all
//! ```
//!
//! Bandwidth defaults: 1008 GB/s device memory (RTX 4090), 25 GB/s pinned host-to-device
//! (PCIe 4.0 x16), 7 GB/s NVMe. Replace them with measured numbers for a real prediction.

use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tier_cache::units::{
    format_bandwidth, format_bytes, format_seconds, parse_bandwidth, parse_bytes,
};
use tier_cache::{CostModel, Item, Placement, Planner, Reason, Tier, TierId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ExplainMode {
    /// Per tier: the first and last lines, plus the skipped layers.
    Summary,
    /// Every layer.
    All,
    /// None.
    None,
}

/// Plan which layers of a model live in VRAM, pinned RAM and storage, and predict tok/s.
#[derive(Parser, Debug)]
#[command(name = "tier-plan", version)]
struct Args {
    /// Number of transformer layers.
    #[arg(long, default_value_t = 80)]
    layers: u32,
    /// Bytes per layer (e.g. 530MB, 505MiB).
    #[arg(long, default_value = "530MB", value_parser = parse_bytes)]
    layer_size: u64,
    /// GPU memory.
    #[arg(long, default_value = "24GiB", value_parser = parse_bytes)]
    vram: u64,
    /// GPU memory kept for the KV cache, activations and workspace.
    #[arg(long, default_value = "2GiB", value_parser = parse_bytes)]
    reserve: u64,
    /// Streaming slots (one layer each) kept in VRAM when some layer streams.
    #[arg(long, default_value_t = 2)]
    slots: u64,
    /// Pinned host RAM for layers.
    #[arg(long, default_value = "44GiB", value_parser = parse_bytes)]
    ram: u64,
    /// Storage capacity ("unlimited" or a size).
    #[arg(long, default_value = "unlimited", value_parser = parse_bytes)]
    storage: u64,
    /// Device memory bandwidth (compute reading resident layers).
    #[arg(long, default_value = "1008GB/s", value_parser = parse_bandwidth)]
    vram_bw: f64,
    /// Pinned RAM to GPU bandwidth.
    #[arg(long, default_value = "25GB/s", value_parser = parse_bandwidth)]
    ram_bw: f64,
    /// Storage read bandwidth.
    #[arg(long, default_value = "7GB/s", value_parser = parse_bandwidth)]
    storage_bw: f64,
    /// Per-layer latency of a RAM to GPU copy, microseconds.
    #[arg(long, default_value_t = 10.0)]
    ram_latency_us: f64,
    /// Per-layer latency of a storage read, microseconds.
    #[arg(long, default_value_t = 100.0)]
    storage_latency_us: f64,
    /// Skip this many layers (weight 0), evenly spaced, never the first or last.
    #[arg(long, default_value_t = 0)]
    skip: u32,
    /// Skip exactly these layers (comma-separated indices); overrides --skip.
    #[arg(long, value_delimiter = ',')]
    skip_layers: Vec<u32>,
    /// How much of explain() to print.
    #[arg(long, value_enum, default_value_t = ExplainMode::Summary)]
    explain: ExplainMode,
}

/// `count` layers evenly spaced over the interior `1..=layers-2`.
fn evenly_spaced(layers: u32, count: u32) -> Result<Vec<u32>, String> {
    let interior = layers.saturating_sub(2);
    if count > interior {
        return Err(format!(
            "--skip {count}: only {interior} layers can be skipped (the first and last are kept)"
        ));
    }
    let (n, c) = (u64::from(interior), u64::from(count));
    Ok((0..c)
        .map(|k| 1 + ((2 * k + 1) * n / (2 * c)) as u32)
        .collect())
}

/// "0-41, 43, 45-47" from sorted indices.
fn ranges(keys: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < keys.len() {
        let start = keys[i];
        let mut end = start;
        while i + 1 < keys.len() && keys[i + 1] == end + 1 {
            i += 1;
            end = keys[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    if out.is_empty() {
        "-".to_string()
    } else {
        out.join(", ")
    }
}

fn tiers(args: &Args, slots: u64) -> Result<Vec<Tier>, String> {
    let slot_bytes = slots
        .checked_mul(args.layer_size)
        .ok_or("--slots x --layer-size overflows")?;
    let vram = args
        .vram
        .checked_sub(args.reserve)
        .and_then(|v| v.checked_sub(slot_bytes))
        .ok_or_else(|| {
            format!(
                "--vram {} is smaller than --reserve {} plus {} streaming slots of {}",
                format_bytes(args.vram),
                format_bytes(args.reserve),
                slots,
                format_bytes(args.layer_size)
            )
        })?;
    let us = |x: f64| Duration::from_secs_f64((x.max(0.0)) * 1e-6);
    Ok(vec![
        Tier::new("VRAM", vram, args.vram_bw),
        Tier::new("RAM", args.ram, args.ram_bw).with_latency(us(args.ram_latency_us)),
        Tier::new("storage", args.storage, args.storage_bw)
            .with_latency(us(args.storage_latency_us)),
    ])
}

fn print_explanations(plan: &Placement<u32>, mode: ExplainMode) {
    if mode == ExplainMode::None {
        return;
    }
    let why = plan.explain();
    println!("\nwhy (explain):");
    if mode == ExplainMode::All {
        for w in &why {
            println!("  layer {w}");
        }
        return;
    }
    for (t, tier) in plan.tiers().iter().enumerate() {
        let placed: Vec<_> = why
            .iter()
            .filter(|w| w.tier == TierId(t) && w.reason != Reason::Unused)
            .collect();
        if placed.is_empty() {
            continue;
        }
        println!("  {} ({} layers):", tier.name, placed.len());
        let show: Vec<_> = if placed.len() <= 3 {
            placed.clone()
        } else {
            vec![placed[0], placed[1], placed[placed.len() - 1]]
        };
        for (k, w) in show.iter().enumerate() {
            if placed.len() > 3 && k == 2 {
                println!("    ... {} more like these ...", placed.len() - 3);
            }
            println!("    layer {w}");
        }
    }
    let unused: Vec<u32> = why
        .iter()
        .filter(|w| w.reason == Reason::Unused)
        .map(|w| w.key)
        .collect();
    if !unused.is_empty() {
        println!(
            "  skipped ({} layers, weight 0, not read per token, left on {}): {}",
            unused.len(),
            plan.tiers()
                .last()
                .map(|t| t.name.as_str())
                .unwrap_or("storage"),
            ranges(&unused)
        );
    }
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tier-plan: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    if args.layers == 0 || args.layer_size == 0 {
        return Err("--layers and --layer-size must be above 0".into());
    }
    let mut skipped = if args.skip_layers.is_empty() {
        evenly_spaced(args.layers, args.skip)?
    } else {
        args.skip_layers.clone()
    };
    skipped.sort_unstable();
    skipped.dedup();
    if let Some(bad) = skipped.iter().find(|&&l| l >= args.layers) {
        return Err(format!(
            "--skip-layers: layer {bad} does not exist (0..{})",
            args.layers
        )
        .into());
    }
    let items: Vec<Item<u32>> = (0..args.layers)
        .map(|i| {
            let weight = if skipped.binary_search(&i).is_ok() {
                0.0
            } else {
                1.0
            };
            Item::new(i, args.layer_size, weight)
        })
        .collect();

    // Plan with no streaming slots first; if any layer that is read streams, keep the slots.
    let mut slots = 0;
    let mut plan = Planner::new(tiers(&args, 0)?)?.plan(&items)?;
    let streams = plan
        .assignments()
        .any(|(it, t)| it.weight > 0.0 && t != TierId(0));
    if streams && args.slots > 0 {
        slots = args.slots;
        plan = Planner::new(tiers(&args, slots)?)?.plan(&items)?;
    }

    println!(
        "model: {} layers x {} = {}; {} skipped (weight 0)",
        args.layers,
        format_bytes(args.layer_size),
        format_bytes(args.layer_size.saturating_mul(u64::from(args.layers))),
        skipped.len()
    );
    println!(
        "VRAM {} - reserve {} - {} streaming slot(s) of {} = {} for resident layers",
        format_bytes(args.vram),
        format_bytes(args.reserve),
        slots,
        format_bytes(args.layer_size),
        format_bytes(plan.tiers()[0].capacity)
    );
    for t in plan.tiers() {
        println!(
            "  tier {:<8} capacity {:>10}  bandwidth {:>11}  latency {}",
            t.name,
            format_bytes(t.capacity),
            format_bandwidth(t.bandwidth),
            format_seconds(t.latency)
        );
    }
    println!("\nplan ({:?}):", plan.method());
    println!("{}", plan.summary());
    for (t, tier) in plan.tiers().iter().enumerate() {
        let mut keys: Vec<u32> = plan
            .assignments()
            .filter(|(it, home)| *home == TierId(t) && it.weight > 0.0)
            .map(|(it, _)| it.key)
            .collect();
        keys.sort_unstable();
        println!(
            "  layers read from {:<8} {:>3}: {}",
            tier.name,
            keys.len(),
            ranges(&keys)
        );
    }
    print_explanations(&plan, args.explain);

    let serial = plan.predict(CostModel::Serial);
    let overlapped = plan.predict(CostModel::Overlapped);
    println!(
        "\npredicted time per token: {} serial ({:.2} tok/s); {} with tiers overlapped ({:.2} tok/s)",
        format_seconds(serial.seconds_per_step),
        serial.steps_per_second(),
        format_seconds(overlapped.seconds_per_step),
        overlapped.steps_per_second()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evenly_spaced_keeps_ends_and_is_distinct() {
        let s = evenly_spaced(80, 20).unwrap();
        assert_eq!(s.len(), 20);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert!(s[0] >= 1 && s[19] <= 78);
        assert_eq!(evenly_spaced(80, 78).unwrap(), (1..=78).collect::<Vec<_>>());
        assert!(evenly_spaced(80, 79).is_err());
    }

    #[test]
    fn ranges_compress_runs() {
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), "0-2, 5, 7-8");
        assert_eq!(ranges(&[]), "-");
    }
}
