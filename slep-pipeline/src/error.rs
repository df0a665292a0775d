//! Typed errors of the pipeline.

use std::path::PathBuf;

/// Everything that can go wrong while building or running a pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// Fewer than two slots were requested.
    #[error("a pipeline needs at least 2 slots to overlap transfer and compute, got {0}")]
    TooFewSlots(usize),
    /// An item is larger than a device slot.
    #[error(
        "item {index} (key {key}) is {bytes} bytes but each slot holds {slot_bytes} bytes; \
         create the pipeline with slots at least as large as the largest item"
    )]
    ItemTooLarge {
        /// Position of the item in the schedule.
        index: usize,
        /// The item's key.
        key: u64,
        /// The item's size in bytes.
        bytes: u64,
        /// The slot size in bytes.
        slot_bytes: u64,
    },
    /// A byte range's end does not fit in `u64` or in this machine's address space.
    #[error("byte range at offset {offset} with length {len} overflows the address space")]
    RangeOverflow {
        /// Range start.
        offset: u64,
        /// Range length.
        len: u64,
    },
    /// A byte range ends past the end of its file or memory region.
    #[error(
        "byte range {offset}..{end} of {what} ends past its end ({size} bytes); \
         check the schedule against the file"
    )]
    RangeOutOfBounds {
        /// What was read (a path or a memory region name).
        what: String,
        /// Range start.
        offset: u64,
        /// Range end (exclusive).
        end: u64,
        /// Size of the file or region.
        size: u64,
    },
    /// An operating-system I/O call failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A read returned fewer bytes than the file should hold (the file shrank while streaming?).
    #[error("short read from {path} at offset {offset}: wanted {wanted} bytes, the file ended after {got}")]
    ShortRead {
        /// The file involved.
        path: PathBuf,
        /// File offset of the read.
        offset: u64,
        /// Bytes wanted.
        wanted: u64,
        /// Bytes obtained.
        got: u64,
    },
    /// A source was asked for an item it does not hold.
    #[error("source `{source_name}` does not hold item {key}: {reason}")]
    NotInSource {
        /// Which source.
        source_name: &'static str,
        /// The item's key.
        key: u64,
        /// Why.
        reason: String,
    },
    /// A staging buffer is too small for what a source must read into it.
    #[error(
        "staging buffer of {have} bytes is too small: item {key} needs {need} bytes of staging"
    )]
    StagingTooSmall {
        /// The item's key.
        key: u64,
        /// Bytes needed (including O_DIRECT alignment slack).
        need: u64,
        /// Bytes available.
        have: u64,
    },
    /// A source broke its contract (delivered the wrong number of bytes); a bug in that source.
    #[error("source contract violated for item {key}: {message}")]
    SourceContract {
        /// The item's key.
        key: u64,
        /// What went wrong.
        message: String,
    },
    /// Host memory could not be allocated.
    #[error("could not allocate {bytes} bytes of host memory ({what})")]
    Alloc {
        /// Size requested.
        bytes: usize,
        /// What the memory was for.
        what: &'static str,
    },
    /// The NVMe-direct adapter failed.
    #[error("NVMe-direct read of item {key} failed: {source}")]
    Nvme {
        /// The item's key.
        key: u64,
        /// The adapter's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The consumer's compute callback returned an error.
    #[error("consumer failed on item {index} (key {key}): {source}")]
    Consumer {
        /// Position in the schedule.
        index: usize,
        /// The item's key.
        key: u64,
        /// The consumer's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A pipeline worker thread panicked.
    #[error("the pipeline's {0} thread panicked; this is a bug, please report it")]
    WorkerPanicked(&'static str),
    /// The CUDA driver library is not installed or not usable on this machine.
    #[error("CUDA not available: {0}; install the NVIDIA driver or use the CPU transfer")]
    CudaUnavailable(String),
    /// A CUDA driver call failed.
    #[error("CUDA {op} failed: {message}")]
    Cuda {
        /// The operation that failed.
        op: &'static str,
        /// The driver's message.
        message: String,
    },
    /// NVRTC (the CUDA runtime compiler, `libnvrtc.so.13`) cannot be loaded.
    #[error("NVRTC not available: {0}; `python3 -m pip install nvidia-cuda-nvrtc` and hand its libnvrtc.so.13 to use_nvrtc_library (or put its folder on LD_LIBRARY_PATH)")]
    NvrtcUnavailable(String),
    /// NVRTC rejected a kernel source.
    #[error("NVRTC could not compile the {kernel} kernel for {arch}: {message}\n{log}")]
    KernelCompile {
        /// The kernel's name.
        kernel: &'static str,
        /// The target architecture (e.g. `sm_90`).
        arch: String,
        /// NVRTC's error.
        message: String,
        /// NVRTC's compile log.
        log: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
