//! Options of the CUDA backend: what the example programs used to read from `VRAMLESS_*`
//! environment variables is a struct here. The library never reads the environment; a program
//! that wants the variables' behaviour builds the options with [`CudaOptions::from_vars`].

use std::path::PathBuf;

use super::error::{CudaError, Result};

/// How the matrix-vector kernel splits a row's dot products over warps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatvecKsplit {
    /// Chosen per launch from the weight's shape (the default).
    #[default]
    Auto,
    /// Always this many warps per unit (1, 2 or 4).
    Fixed(usize),
}

/// Options of a [`super::CudaBackend`] (and of the [`super::CudaModel`]s opened on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaOptions {
    /// Keep cudarc's automatic per-buffer event tracking (default off: every launch goes to
    /// the backend's one compute stream, so stream order alone sequences its buffers, and each
    /// tracked launch would record and wait on an event per buffer argument). On, CUDA graphs
    /// are not used (event records do not belong in a captured step). For comparison only.
    pub event_tracking: bool,
    /// Replay the decode step of [`super::CudaModel`] from a captured CUDA graph (default on).
    pub cuda_graph: bool,
    /// Rows per unit of the matrix-vector kernel: 2 or 4 (default 4).
    pub matvec_rows: usize,
    /// Warps per unit of the matrix-vector kernel (default chosen per launch).
    pub matvec_ksplit: MatvecKsplit,
    /// Quantize the activation of each matrix-vector product to 8 bits per block of 32 (bit for
    /// bit as the CPU backend and llama.cpp's q8_1: scales, ties to even, sum terms) and use
    /// integer dot products for Q4_0, Q4_1, Q5_0, Q8_0, Q4_K and Q6_K weights. Default off: on
    /// the H200 it decodes a Llama-3.1-8B Q4_K_M 1.27x faster, but the GPU's inputs to the
    /// quantizer differ from llama.cpp's in the last bits, which flips 8-bit roundings, and on
    /// the SmolLM2 fixtures that moves the logits further from llama.cpp's (`capital` cosine
    /// 0.9922 against 0.9986 with the f32 kernels; the CPU's own quantizer with its inputs
    /// perturbed by 1e-7 lands anywhere in 0.9944-0.9995; docs/PERF.md, 2026-12-04). The project
    /// takes no speed that costs accuracy against the reference by default.
    pub matvec_q8: bool,
    /// Folder of the compiled-kernel cache (cubins keyed by source, GPU architecture and NVRTC
    /// version); `None`: no disk cache, every start compiles with NVRTC.
    pub kernel_cache: Option<PathBuf>,
    /// NVRTC library to load first (e.g. pip's `nvidia/cu13/lib/libnvrtc.so.13`); `None`: the
    /// dynamic loader's search path.
    pub nvrtc_lib: Option<PathBuf>,
}

impl Default for CudaOptions {
    fn default() -> Self {
        Self {
            event_tracking: false,
            cuda_graph: true,
            matvec_rows: 4,
            matvec_ksplit: MatvecKsplit::Auto,
            matvec_q8: false,
            kernel_cache: None,
            nvrtc_lib: None,
        }
    }
}

impl CudaOptions {
    /// The variables [`CudaOptions::from_vars`] reads, with what each sets.
    pub const VARIABLES: [(&'static str, &'static str); 7] = [
        ("VRAMLESS_CUDA_GRAPH", "0: no CUDA-graph replay of the decode step"),
        (
            "VRAMLESS_CUDA_EVENT_TRACKING",
            "1: keep cudarc's per-buffer event tracking (and no CUDA graph)",
        ),
        (
            "VRAMLESS_MATVEC_ROWS",
            "2 or 4: rows per unit of the matrix-vector kernel",
        ),
        (
            "VRAMLESS_MATVEC_KSPLIT",
            "1, 2 or 4: warps per unit of the matrix-vector kernel",
        ),
        (
            "VRAMLESS_MATVEC_Q8",
            "1: 8-bit activations with integer dot products for Q4_0/Q4_1/Q5_0/Q8_0/Q4_K/Q6_K \
             products (faster decode, logits slightly further from llama.cpp's); 0: f32 kernels \
             only (the default)",
        ),
        (
            "VRAMLESS_KERNEL_CACHE",
            "folder of the compiled-kernel cache (default $XDG_CACHE_HOME/vramless/kernels, else ~/.cache/vramless/kernels)",
        ),
        (
            "VRAMLESS_NVRTC_LIB",
            "path of libnvrtc.so to load first",
        ),
    ];

    /// Options from variables looked up by `var` (a program passes `|k| std::env::var(k).ok()`):
    /// the `VRAMLESS_*` names of [`CudaOptions::VARIABLES`], plus `XDG_CACHE_HOME` and `HOME`
    /// for the default kernel cache. Unset or empty variables keep the defaults; a value
    /// that means nothing is an error naming the variable.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |k: &str| var(k).filter(|v| !v.is_empty());
        let bad =
            |k: &str, v: &str, want: &str| CudaError::Options(format!("{k}={v} is not {want}"));
        let mut o = Self::default();
        if let Some(v) = get("VRAMLESS_CUDA_EVENT_TRACKING") {
            o.event_tracking = match v.as_str() {
                "1" => true,
                "0" => false,
                _ => return Err(bad("VRAMLESS_CUDA_EVENT_TRACKING", &v, "0 or 1")),
            };
        }
        if let Some(v) = get("VRAMLESS_CUDA_GRAPH") {
            o.cuda_graph = match v.as_str() {
                "1" => true,
                "0" => false,
                _ => return Err(bad("VRAMLESS_CUDA_GRAPH", &v, "0 or 1")),
            };
        }
        if let Some(v) = get("VRAMLESS_MATVEC_ROWS") {
            o.matvec_rows = match v.as_str() {
                "2" => 2,
                "4" => 4,
                _ => return Err(bad("VRAMLESS_MATVEC_ROWS", &v, "2 or 4")),
            };
        }
        if let Some(v) = get("VRAMLESS_MATVEC_KSPLIT") {
            o.matvec_ksplit = match v.as_str() {
                "1" => MatvecKsplit::Fixed(1),
                "2" => MatvecKsplit::Fixed(2),
                "4" => MatvecKsplit::Fixed(4),
                _ => return Err(bad("VRAMLESS_MATVEC_KSPLIT", &v, "1, 2 or 4")),
            };
        }
        if let Some(v) = get("VRAMLESS_MATVEC_Q8") {
            o.matvec_q8 = match v.as_str() {
                "1" => true,
                "0" => false,
                _ => return Err(bad("VRAMLESS_MATVEC_Q8", &v, "0 or 1")),
            };
        }
        o.kernel_cache = get("VRAMLESS_KERNEL_CACHE")
            .map(PathBuf::from)
            .or_else(|| get("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("vramless/kernels")))
            .or_else(|| get("HOME").map(|h| PathBuf::from(h).join(".cache/vramless/kernels")));
        o.nvrtc_lib = get("VRAMLESS_NVRTC_LIB").map(PathBuf::from);
        o.check()?;
        Ok(o)
    }

    /// Checks values a struct literal may have set out of range.
    pub fn check(&self) -> Result<()> {
        if !matches!(self.matvec_rows, 2 | 4) {
            return Err(CudaError::Options(format!(
                "matvec_rows = {} (2 or 4)",
                self.matvec_rows
            )));
        }
        if let MatvecKsplit::Fixed(k) = self.matvec_ksplit {
            if !matches!(k, 1 | 2 | 4) {
                return Err(CudaError::Options(format!(
                    "matvec_ksplit = {k} (1, 2 or 4)"
                )));
            }
        }
        Ok(())
    }

    /// Whether [`super::CudaModel`] replays decode steps from a CUDA graph: asked for, and
    /// event tracking off.
    pub fn graphs(&self) -> bool {
        self.cuda_graph && !self.event_tracking
    }
}
