//! What the user chooses: device, budgets, data path, skip map, context.

use std::path::PathBuf;

/// Compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The CPU reference backend (the "device" is host memory; streamed layers go through
    /// host slots with the pipeline's CPU transfer).
    Cpu,
    /// An NVIDIA GPU (feature `cuda`).
    Cuda,
}

/// How layers that live neither on the device nor in pinned RAM reach the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPath {
    /// Chosen per machine: NVMe direct when `--nvme-pci` is given, else O_DIRECT reads by CPU
    /// workers (io_uring or pread) where the filesystem allows it, else mmap + workers.
    Auto,
    /// CPU workers reading with O_DIRECT (io_uring, else pread).
    Direct,
    /// CPU workers copying out of an mmap of the file.
    Mmap,
    /// The userspace NVMe driver (`--nvme-pci`).
    Nvme,
    /// Comparison baseline: every non-resident layer copied straight from the pageable mmap;
    /// no pinned-RAM tier.
    MmapBaseline,
}

impl DataPath {
    /// Parses `auto`, `direct`, `mmap`, `nvme` or `mmap-baseline`.
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => Self::Auto,
            "direct" | "cpu-worker" | "o-direct" => Self::Direct,
            "mmap" | "mmap-worker" => Self::Mmap,
            "nvme" | "nvme-direct" => Self::Nvme,
            "mmap-baseline" | "baseline" => Self::MmapBaseline,
            other => {
                return Err(format!(
                    "unknown data path `{other}`: use auto, direct, mmap, nvme or mmap-baseline"
                ))
            }
        })
    }
}

/// Which layers to skip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Skip {
    /// None.
    #[default]
    None,
    /// A skip map file (llama-model's JSON, checked against the model's fingerprint).
    Map(PathBuf),
    /// These layer indices.
    Layers(Vec<usize>),
}

/// How streamed layers share their weight rows with CPU threads (CUDA: one sequence's decode,
/// and the batch engine's steps of a few rows, see [`crate::engine::hybrid_batch`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Hybrid {
    /// Every streamed layer crosses the bus whole.
    #[default]
    Off,
    /// The CPU takes the share of each pinned-RAM layer's rows that makes it finish with the
    /// bus (its matrix-vector speed measured at start on the model's own layers).
    Auto,
    /// The CPU takes this fraction of the rows of every matrix of each pinned-RAM layer.
    Fraction(f64),
}

impl Hybrid {
    /// Parses `off`, `auto` or a fraction in `[0, 0.95]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "off" | "none" => Ok(Self::Off),
            "auto" => Ok(Self::Auto),
            other => match other.parse::<f64>() {
                Ok(f) if (0.0..=0.95).contains(&f) => Ok(if f == 0.0 {
                    Self::Off
                } else {
                    Self::Fraction(f)
                }),
                _ => Err(format!(
                    "`{other}` is not a hybrid mode: use off, auto or the CPU's fraction of each streamed layer's rows (0 to 0.95)"
                )),
            },
        }
    }
}

/// Everything [`super::Engine::open`] takes besides the model path.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Compute device.
    pub device: Device,
    /// Device-memory budget in bytes (`None`: free memory minus headroom).
    pub vram_budget: Option<u64>,
    /// Pinned-RAM budget for layers in bytes (`None`: available RAM minus headroom).
    pub ram_budget: Option<u64>,
    /// Data path for layers read from storage.
    pub path: DataPath,
    /// PCI address of an NVMe controller bound to vfio-pci.
    pub nvme_pci: Option<String>,
    /// The model written raw on the namespace at this LBA (instead of extents).
    pub nvme_lba: Option<u64>,
    /// Layers to skip.
    pub skip: Skip,
    /// KV cache positions per sequence (0: the model's context length).
    pub ctx: usize,
    /// Sequences the multi-sequence engine holds at once (its KV pool is sized for this many
    /// sequences of `ctx` positions and budgeted with the weights). The single-sequence engine
    /// ignores it.
    pub max_seqs: usize,
    /// The multi-sequence engine takes sequences and KV beyond the planned pool (`max_seqs`
    /// sequences of `ctx` positions): it demotes resident layers to pinned RAM or storage to
    /// grow the pool, and promotes them back when the sequences finish (CPU and CUDA backends;
    /// a plan that streams). Off: beyond the pool, `add` refuses.
    pub kv_growth: bool,
    /// Streaming slots (>= 2).
    pub slots: usize,
    /// CPU worker threads for file reads.
    pub io_threads: usize,
    /// Storage read bandwidth assumed by the plan (bytes/s).
    pub storage_bw: f64,
    /// Page-locked buffers of the storage read-ahead thread (0: none, the pipeline reads
    /// storage layers itself, in schedule order).
    pub prefetch: usize,
    /// Layers of the self-speculative draft (the first `draft_layers`; the plan pins them to
    /// the device and the engine keeps a KV cache for them). 0: no draft.
    pub draft_layers: usize,
    /// Print the plan and progress bars on stderr.
    pub verbose: bool,
    /// Record a timeline of every pass (storage reads, bus copies, waits, compute; on CUDA each
    /// layer's kernels timed by events): see [`super::Engine::trace`]. Off by default.
    pub trace: bool,
    /// CPU threads compute part of the rows of every layer streamed from pinned RAM while the
    /// rest crosses the bus (CUDA; the one-sequence engine's decode tokens; prompts and the
    /// multi-sequence engine stream whole layers). Off by default.
    pub hybrid: Hybrid,
    /// The CPU kernel of the hybrid share: [`llama_model::cpu::Kernel::Q8`] (default: 8-bit
    /// activations and integer dots, the fast one, with the precision of llama.cpp's CPU
    /// backend), `F32`, or `None`: per matrix the kind of the GPU's product of the same matrix
    /// (8-bit only where the GPU quantizes its input too), so both halves of a split product
    /// see the same input.
    pub hybrid_kernel: Option<llama_model::cpu::Kernel>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            vram_budget: None,
            ram_budget: None,
            path: DataPath::Auto,
            nvme_pci: None,
            nvme_lba: None,
            skip: Skip::None,
            ctx: 4096,
            max_seqs: 8,
            kv_growth: false,
            slots: 3,
            io_threads: 4,
            storage_bw: 2.0e9,
            prefetch: 3,
            draft_layers: 0,
            verbose: true,
            trace: false,
            hybrid: Hybrid::Off,
            hybrid_kernel: Some(llama_model::cpu::Kernel::Q8),
        }
    }
}
