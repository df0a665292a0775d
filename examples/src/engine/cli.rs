//! The engine's command-line flags, shared by `generate`, `chat` and `bench-stream-model`.

use std::path::PathBuf;

use llama_model::cpu::Kernel;

use super::budget::parse_size;
use super::error::{EngineError, Result};
use super::options::{DataPath, Device, EngineOptions, Hybrid, Skip};

/// Streaming-engine flags (flatten into a binary's clap arguments).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EngineArgs {
    /// Device memory for the model (e.g. 24GiB). Default: free device memory minus 1 GiB. A model
    /// that does not fit streams its other layers every token.
    #[arg(long)]
    pub vram_budget: Option<String>,
    /// Page-locked host RAM for layers that stream (e.g. 16GiB; 0: none). Default: available
    /// RAM minus 4 GiB.
    #[arg(long)]
    pub ram_budget: Option<String>,
    /// Data path for layers read from storage: auto, direct (O_DIRECT CPU workers), mmap
    /// (mmap CPU workers), nvme (needs --nvme-pci), mmap-baseline (naive comparison).
    #[arg(long)]
    pub path: Option<String>,
    /// NVMe controller bound to vfio-pci holding the model (PCI address, e.g. 0000:01:00.0).
    #[arg(long)]
    pub nvme_pci: Option<String>,
    /// With --nvme-pci: the model lies raw on namespace 1 from this LBA (default: its extents,
    /// from MODEL.extents or FIEMAP).
    #[arg(long)]
    pub nvme_lba: Option<u64>,
    /// Skip map (JSON from calibrate-skip) for this model.
    #[arg(long)]
    pub skip_map: Option<PathBuf>,
    /// Streaming slots in device memory (>= 2).
    #[arg(long, default_value_t = 3)]
    pub slots: usize,
    /// Storage read bandwidth the plan assumes (e.g. 2GB/s).
    #[arg(long, default_value = "2GB/s")]
    pub storage_bw: String,
    /// Read-ahead buffers for layers read from storage (0: off).
    #[arg(long, default_value_t = 3)]
    pub prefetch: usize,
    /// Sequences the multi-sequence engine holds at once (its KV pool, budgeted with the
    /// weights, holds this many sequences of the context length).
    #[arg(long, default_value_t = 8)]
    pub max_seqs: usize,
    /// Take sequences beyond --max-seqs (and KV beyond the planned pool) by demoting resident
    /// layers to pinned RAM or storage while they run, promoting them back after (needs a plan that
    /// streams).
    #[arg(long)]
    pub kv_growth: bool,
    /// Print live statistics (tok/s, bytes per token per tier, GB/s per stage, stalls, the
    /// plan's prediction).
    #[arg(long)]
    pub stats: bool,
    /// Write a Chrome / Perfetto trace (JSON trace events; open it in <https://ui.perfetto.dev> or
    /// chrome://tracing) of every pass to FILE at the end: per layer the storage read, the bus
    /// copy, the wait for data, the host's compute or kernel launches and, on CUDA, the GPU's
    /// kernels timed by events, one row each.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Hybrid streamed layers (CUDA; one sequence's decode, and the batch engine's steps of up
    /// to 16 rows, each batch size with its own share under `auto`): CPU threads compute the last rows
    /// of every matrix of each layer held in pinned RAM, in place, while the first rows cross
    /// the bus. `auto`: the share that makes the CPU and the bus finish together, from the CPU
    /// speed measured at start on the model's own layer (0 where the CPU is too slow); `off`;
    /// or the CPU's fraction of each matrix's rows (e.g. 0.4).
    #[arg(long, default_value = "off", value_name = "auto|off|FRACTION")]
    pub hybrid: String,
    /// CPU kernel of the hybrid share: q8 (activations quantized to 8 bits, integer dots: the
    /// fast one, as llama.cpp's CPU backend), f32 (weights decoded to f32: slower, no input
    /// rounding) or match (per matrix what the GPU does with the same matrix's rows: 8-bit
    /// only where it quantizes its input too, so a split product rounds as the whole one).
    #[arg(long, default_value = "q8", value_name = "q8|f32|match")]
    pub hybrid_kernel: String,
}

impl EngineArgs {
    /// True when any streaming flag was given (so the engine, not the plain resident path, runs).
    pub fn any(&self) -> bool {
        self.vram_budget.is_some()
            || self.ram_budget.is_some()
            || self.path.is_some()
            || self.nvme_pci.is_some()
            || self.skip_map.is_some()
            || self.stats
            || self.trace.is_some()
            || !matches!(self.hybrid.as_str(), "" | "off")
    }

    /// Writes `trace` (the engine's, see [`super::Engine::trace`]) to `--trace FILE` when it was
    /// given, with a summary of each stage's busy time on stderr.
    pub fn write_trace(&self, trace: Option<&std::sync::Arc<slep_pipeline::Trace>>) -> Result<()> {
        let (Some(path), Some(trace)) = (&self.trace, trace) else {
            return Ok(());
        };
        super::trace::write(trace, path)
    }

    /// The engine options for `device` with a KV cache of `ctx` positions.
    pub fn options(&self, device: Device, ctx: usize) -> Result<EngineOptions> {
        let path = match &self.path {
            Some(p) => DataPath::parse(p).map_err(EngineError::Usage)?,
            None => DataPath::Auto,
        };
        if path == DataPath::Nvme && self.nvme_pci.is_none() {
            return Err(EngineError::Usage(
                "--path nvme needs --nvme-pci BDF".into(),
            ));
        }
        if self.slots < 2 {
            return Err(EngineError::Usage(format!(
                "--slots {}: streaming needs at least 2 slots",
                self.slots
            )));
        }
        let storage_bw = tier_cache::units::parse_bandwidth(&self.storage_bw).map_err(|e| {
            EngineError::BadSize {
                flag: "--storage-bw",
                text: self.storage_bw.clone(),
                reason: e.to_string(),
            }
        })?;
        // An empty string is what `EngineArgs::default()` holds: the defaults.
        let hybrid = Hybrid::parse(if self.hybrid.is_empty() {
            "off"
        } else {
            &self.hybrid
        })
        .map_err(|e| EngineError::Usage(format!("--hybrid {e}")))?;
        if hybrid != Hybrid::Off && device == Device::Cpu {
            return Err(EngineError::Usage(
                "--hybrid splits streamed layers between the bus and the CPU: it needs --device cuda"
                    .into(),
            ));
        }
        let hybrid_kernel = match self.hybrid_kernel.as_str() {
            "match" => None,
            "q8" | "" => Some(Kernel::Q8),
            "f32" => Some(Kernel::F32),
            other => {
                return Err(EngineError::Usage(format!(
                    "--hybrid-kernel `{other}`: use q8, f32 or match"
                )))
            }
        };
        Ok(EngineOptions {
            device,
            vram_budget: self
                .vram_budget
                .as_deref()
                .map(|s| parse_size("--vram-budget", s))
                .transpose()?,
            ram_budget: self
                .ram_budget
                .as_deref()
                .map(|s| parse_size("--ram-budget", s))
                .transpose()?,
            path,
            nvme_pci: self.nvme_pci.clone(),
            nvme_lba: self.nvme_lba,
            skip: match &self.skip_map {
                Some(p) => Skip::Map(p.clone()),
                None => Skip::None,
            },
            ctx,
            slots: self.slots,
            storage_bw,
            prefetch: self.prefetch,
            max_seqs: self.max_seqs.max(1),
            kv_growth: self.kv_growth,
            trace: self.trace.is_some(),
            hybrid,
            hybrid_kernel,
            ..EngineOptions::default()
        })
    }
}

/// Parses `cpu` / `cuda`.
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => Ok(Device::Cuda),
        other => Err(EngineError::Usage(format!(
            "unknown device `{other}`: use cpu or cuda"
        ))),
    }
}
