//! Opening a model for the engine: the GGUF, its config and layout, the skipped layers, the
//! budgets and the tier plan (shared by the CPU and CUDA backends).

use std::path::{Path, PathBuf};

use gguf::GgufFile;
use llama_model::config::LlamaConfig;
use llama_model::paged::{KvPool, KvPoolOptions};
use llama_model::skip::SkipMap;

use super::budget::{kv_bytes, show, workspace_bytes};
use super::error::{EngineError, Result};
use super::layout::ModelLayout;
use super::options::{DataPath, EngineOptions, Skip};
use super::plan::{plan, Plan, PlanInput};

/// A model opened and planned.
#[derive(Debug)]
pub struct Setup {
    /// The model file.
    pub path: PathBuf,
    /// The GGUF (memory-mapped).
    pub file: GgufFile,
    /// The model's config.
    pub config: LlamaConfig,
    /// The config the state runs with: only the running layers (skipped ones get no KV cache).
    pub run_config: LlamaConfig,
    /// Where every weight lies.
    pub layout: ModelLayout,
    /// Running layers in order.
    pub running: Vec<usize>,
    /// For each layer, its index among the running layers (`None`: skipped).
    pub compact: Vec<Option<usize>>,
    /// The self-speculative draft's running layers (below `--draft-layers`; empty: no draft).
    pub draft: Vec<usize>,
    /// The config of the draft's state (its running layers only).
    pub draft_config: LlamaConfig,
    /// The plan.
    pub plan: Plan,
    /// Positions per sequence (the model's context length when the options ask for 0).
    pub ctx: usize,
    /// Sequences the KV pool holds (1 for the single-sequence engine).
    pub max_seqs: usize,
    /// Opened for the multi-sequence engine (the single sequence's state is not allocated).
    pub batch: bool,
    /// The budgets used (device, pinned RAM).
    pub budgets: (u64, u64),
    /// Device bytes the plan took before the KV pool and the layers (globals, workspaces,
    /// the step's scratch, the draft's state).
    pub device_fixed: u64,
    /// The bandwidths the plan assumed (device, pinned RAM, storage; bytes/s).
    pub bandwidth: [f64; 3],
}

/// The device-specific facts the plan needs.
#[derive(Debug, Clone, Copy)]
pub struct DeviceFacts {
    /// Free device memory (for the automatic budget), if known.
    pub free_device: Option<u64>,
    /// Bytes per KV value (2: f16, 4: f32).
    pub kv_value_bytes: u64,
    /// Device memory, pinned-RAM-to-device and storage-to-device bandwidths (bytes/s).
    pub bandwidth: [f64; 3],
}

/// Rows one batch step holds at most (the batch engine's default step token budget).
pub const STEP_ROWS: u64 = llama_model::PREFILL_CHUNK as u64;

/// Activations of a batch step of [`STEP_ROWS`] rows (hidden, normed, attention and FFN
/// intermediates, f32) and the logits of `max_seqs` rows: what the multi-sequence state needs
/// beyond the single sequence's workspaces.
pub fn step_scratch_bytes(config: &LlamaConfig, max_seqs: usize) -> u64 {
    let row = (6 * config.dim as u64 + 3 * config.ffn_dim as u64) * 4;
    STEP_ROWS * row + max_seqs as u64 * config.vocab_size as u64 * 4
}

/// Opens the GGUF and its layout.
pub fn open_model(path: &Path) -> Result<(GgufFile, LlamaConfig, ModelLayout)> {
    let file = GgufFile::open(path).map_err(|source| EngineError::ModelFile {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| EngineError::Model {
        path: path.to_path_buf(),
        reason,
    };
    let config = LlamaConfig::from_gguf(&file).map_err(|e| bad(e.to_string()))?;
    let layout = ModelLayout::of(&file, &config).map_err(bad)?;
    Ok((file, config, layout))
}

fn skipped_layers(path: &Path, skip: &Skip, n: usize) -> Result<Vec<usize>> {
    let mut s = match skip {
        Skip::None => Vec::new(),
        Skip::Layers(l) => l.clone(),
        Skip::Map(map) => {
            SkipMap::load_for(map, path, n)
                .map_err(|e| EngineError::SkipMap {
                    path: map.clone(),
                    reason: e.to_string(),
                })?
                .skipped
        }
    };
    s.sort_unstable();
    s.dedup();
    if let Some(&bad) = s.iter().find(|&&i| i == 0 || i + 1 >= n) {
        return Err(EngineError::Usage(format!(
            "layer {bad} cannot be skipped: the model has {n} layers and the first and last always run"
        )));
    }
    Ok(s)
}

/// Opens and plans `path` for a device described by `facts`.
/// `batch`: for the multi-sequence engine (`opts.max_seqs` sequences in the KV pool; else one).
pub fn setup(path: &Path, opts: &EngineOptions, facts: DeviceFacts, batch: bool) -> Result<Setup> {
    let (file, config, layout) = open_model(path)?;
    let n = config.n_layers;
    let skipped = skipped_layers(path, &opts.skip, n)?;
    let running: Vec<usize> = (0..n).filter(|i| !skipped.contains(i)).collect();
    let mut compact = vec![None; n];
    for (k, &i) in running.iter().enumerate() {
        compact[i] = Some(k);
    }
    let mut run_config = config.clone();
    run_config.n_layers = running.len();
    let ctx = if opts.ctx == 0 {
        config.context_length
    } else {
        opts.ctx.min(config.context_length)
    };
    if opts.draft_layers > n {
        return Err(EngineError::Usage(format!(
            "{} draft layers asked for: the model has {n} layers",
            opts.draft_layers
        )));
    }
    let draft_running = running.iter().filter(|&&i| i < opts.draft_layers).count();
    // The draft's own state: its KV cache and activations (the fixed 64 MiB of workspace
    // headroom is counted once, for the main state).
    let draft_fixed = if draft_running > 0 {
        kv_bytes(draft_running, config.kv_dim(), ctx, facts.kv_value_bytes)
            + workspace_bytes(
                config.vocab_size,
                config.dim,
                config.ffn_dim,
                ctx,
                config.n_heads,
            )
            .saturating_sub(64 << 20)
    } else {
        0
    };
    let max_seqs = if batch { opts.max_seqs.max(1) } else { 1 };
    // The KV pool: every sequence's keys and values of every running layer.
    // The batch engine's pool is llama-model's paged one (f16 blocks of KV_BLOCK positions).
    let kv_per_layer = if batch {
        let blocks = KvPoolOptions::for_sequences(max_seqs, ctx).n_blocks as u64;
        let one_layer = LlamaConfig {
            n_layers: 1,
            ..run_config.clone()
        };
        blocks * KvPool::bytes_per_block(&one_layer)
    } else {
        kv_bytes(1, config.kv_dim(), ctx, facts.kv_value_bytes)
    };
    let fixed = draft_fixed
        + layout.global_bytes()
        + if batch {
            step_scratch_bytes(&config, max_seqs)
        } else {
            0
        }
        + workspace_bytes(
            config.vocab_size,
            config.dim,
            config.ffn_dim,
            ctx,
            config.n_heads,
        );
    let device_budget = match opts.vram_budget {
        Some(b) => b,
        None => facts
            .free_device
            .map(|f| f.saturating_sub(super::budget::VRAM_HEADROOM))
            .ok_or_else(|| {
                EngineError::Usage(
                    "cannot tell how much device memory is free: give a device budget".into(),
                )
            })?,
    };
    let ram_budget = if opts.path == DataPath::MmapBaseline {
        0
    } else {
        match opts.ram_budget {
            Some(b) => b,
            None => super::budget::mem_available()
                .map_or(0, |a| a.saturating_sub(super::budget::RAM_HEADROOM)),
        }
    };
    let input = PlanInput {
        layer_bytes: layout.layers.iter().map(|l| l.bytes).collect(),
        skipped,
        device_budget,
        device_fixed: fixed,
        ram_budget,
        slots: opts.slots,
        ctx,
        max_seqs,
        kv_per_layer,
        kv_value_bytes: facts.kv_value_bytes,
        kv_dim: config.kv_dim(),
        bandwidth: facts.bandwidth,
        pin_first: opts.draft_layers,
    };
    let plan = plan(&input)?;
    if opts.verbose {
        eprint!("{}", plan.report);
        if opts.vram_budget.is_none() {
            eprintln!(
                "plan: automatic device budget {} (free memory minus headroom)",
                show(device_budget)
            );
        }
    }
    let draft: Vec<usize> = running
        .iter()
        .copied()
        .filter(|&i| i < opts.draft_layers)
        .collect();
    let draft_config = LlamaConfig {
        n_layers: draft.len(),
        ..run_config.clone()
    };
    Ok(Setup {
        path: path.to_path_buf(),
        file,
        config,
        run_config,
        layout,
        running,
        compact,
        draft,
        draft_config,
        plan,
        ctx,
        max_seqs,
        batch,
        budgets: (device_budget, ram_budget),
        device_fixed: fixed,
        bandwidth: facts.bandwidth,
    })
}
