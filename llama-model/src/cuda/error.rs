//! Errors of the CUDA backend.

use gguf::GgmlType;

/// What went wrong in the CUDA backend.
#[derive(Debug, thiserror::Error)]
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
