//! Errors of the CUDA backend.

use gguf::GgmlType;

/// What went wrong in the CUDA backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CudaError {
    /// The CUDA driver or NVRTC library cannot be loaded, or there is no such GPU.
    #[error("CUDA is not available: {0} (install the NVIDIA driver; for NVRTC put libnvrtc.so.13 on LD_LIBRARY_PATH, e.g. from `pip install nvidia-cuda-nvrtc`)")]
    Unavailable(String),
    /// NVRTC rejected a kernel source.
    #[error("NVRTC failed to compile kernel module `{module}` for {arch}: {message}\n{log}")]
    Compile {
        /// Kernel module name (file stem).
        module: String,
        /// Target architecture, e.g. `sm_90`.
        arch: String,
        /// NVRTC's status.
        message: String,
        /// NVRTC's compile log.
        log: String,
    },
    /// A CUDA driver call failed.
    #[error("CUDA driver call `{op}` failed: {message}")]
    Driver {
        /// What was being done.
        op: &'static str,
        /// The driver's message.
        message: String,
    },
    /// The weight type has no CUDA kernel.
    #[error("no CUDA kernel for weight type {0}; supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K")]
    UnsupportedType(GgmlType),
    /// Shapes or buffer sizes do not fit together.
    #[error("bad shape for {op}: {detail}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// What does not fit.
        detail: String,
    },
    /// The GGUF file cannot be read or lacks what the model needs.
    #[error("model file: {0}")]
    Gguf(#[from] gguf::GgufError),
    /// The GGUF metadata does not describe a usable Llama model.
    #[error("model config: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// A tensor the forward pass needs is missing from the file.
    #[error("tensor `{0}` is missing from the GGUF file")]
    MissingTensor(String),
    /// A token id is outside the vocabulary.
    #[error("token {token} is outside the vocabulary ({vocab_size} tokens)")]
    TokenOutOfRange {
        /// The bad token.
        token: u32,
        /// Vocabulary size.
        vocab_size: usize,
    },
    /// The KV cache has no room for more positions.
    #[error("context full: {needed} positions needed, the KV cache holds {limit} (raise the context size)")]
    ContextFull {
        /// Positions the call would need.
        needed: usize,
        /// Positions the cache holds.
        limit: usize,
    },
    /// Backend options out of range (or a variable meant to set one that does not parse).
    #[error("CUDA options: {0}")]
    Options(String),
    /// Calls made in an order the state does not allow (e.g. a layer before its predecessors).
    #[error("forward pass: {0}")]
    Sequence(String),
    /// The paged KV pool refused a multi-sequence step (exhausted, unknown sequence, ...).
    #[error(transparent)]
    Kv(#[from] crate::paged::KvError),
    /// The CPU threads' share of a layer split between the GPU and the CPU failed.
    #[error("CPU share of a split layer: {0}")]
    Host(#[from] crate::cpu::ForwardError),
}

/// Result alias of the CUDA backend.
pub type Result<T> = std::result::Result<T, CudaError>;

/// Maps a cudarc driver error into [`CudaError::Driver`].
pub(crate) fn driver(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> CudaError {
    move |e| CudaError::Driver {
        op,
        message: e.to_string(),
    }
}
