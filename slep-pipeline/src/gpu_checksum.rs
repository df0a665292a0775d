//! The streaming checksum ([`crate::checksum`]) computed on the GPU: a consumer adds each slot's
//! checksum into a device `u64` on its compute stream, and reads the total back once at the end.

use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaSlice, CudaStream};
use cudarc::nvrtc::Ptx;

use crate::checksum::{KERNEL_NAME, KERNEL_SOURCE};
use crate::cuda::CudaSlot;
use crate::error::{PipelineError, Result};

fn cuda_err(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> PipelineError {
    move |e| PipelineError::Cuda {
        op,
        message: e.to_string(),
    }
}

/// Loads the NVRTC library at `path` (and the `libnvrtc-builtins` beside it) and keeps it
/// loaded, so cudarc's lookup by soname finds it: for an NVRTC outside the loader's search path
/// (e.g. the `nvidia-cuda-nvrtc` pip wheel). Programs call it once at start; the crate reads no
/// environment variable.
pub fn use_nvrtc_library(path: &std::path::Path) -> Result<()> {
    let name = path.to_string_lossy().into_owned();
    pin_with_builtins(&name).map_err(|why| {
        PipelineError::NvrtcUnavailable(format!("cannot load libnvrtc at {name} ({why})"))
    })
}

/// Pins `name` and, when it is a path, the builtins library in its folder.
fn pin_with_builtins(name: &str) -> std::result::Result<(), String> {
    crate::sys::nvrtc::pin_library(name)?;
    if let Some(dir) = std::path::Path::new(name).parent() {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            if file.starts_with("libnvrtc-builtins.so") {
                let _ = crate::sys::nvrtc::pin_library(&e.path().to_string_lossy());
            }
        }
    }
    Ok(())
}

/// Checks that NVRTC can be loaded (under cudarc's library names, or one given to
/// [`use_nvrtc_library`]), without touching cudarc (whose loader panics when the library is
/// absent).
pub fn nvrtc_available() -> Result<()> {
    let mut errors = Vec::new();
    for name in cudarc::get_lib_name_candidates("nvrtc") {
        match pin_with_builtins(&name) {
            Ok(()) => return Ok(()),
            Err(why) => errors.push(why),
        }
    }
    Err(PipelineError::NvrtcUnavailable(format!(
        "cannot load libnvrtc ({}); name its path with use_nvrtc_library",
        errors.join("; ")
    )))
}

/// Compiles the checksum kernel to a cubin for `arch` (e.g. `sm_90`) with NVRTC.
pub fn compile_checksum_kernel(arch: &str) -> Result<Vec<u8>> {
    compile_kernel(KERNEL_NAME, KERNEL_SOURCE, arch)
}

/// Compiles `source` (exporting `name`) for `arch`; exposed to the crate for the compile tests.
pub(crate) fn compile_kernel(name: &'static str, source: &str, arch: &str) -> Result<Vec<u8>> {
    nvrtc_available()?;
    std::panic::catch_unwind(|| crate::sys::nvrtc::compile_cubin(name, source, arch))
        .map_err(|_| PipelineError::NvrtcUnavailable("cudarc's NVRTC loader panicked".into()))?
        .map_err(|(message, log)| PipelineError::KernelCompile {
            kernel: name,
            arch: arch.to_owned(),
            message,
            log,
        })
}

/// A device-side checksum accumulator on a compute stream.
#[derive(Debug)]
pub struct GpuChecksum {
    stream: Arc<CudaStream>,
    function: CudaFunction,
    acc: CudaSlice<u64>,
}

impl GpuChecksum {
    /// Compiles the kernel for `stream`'s GPU and allocates a zeroed accumulator.
    pub fn new(stream: Arc<CudaStream>) -> Result<Self> {
        let ctx = stream.context();
        let (major, minor) = ctx
            .compute_capability()
            .map_err(cuda_err("compute capability"))?;
        let cubin = compile_checksum_kernel(&format!("sm_{major}{minor}"))?;
        let module = ctx
            .load_module(Ptx::from_binary(cubin))
            .map_err(cuda_err("module load"))?;
        let function = module
            .load_function(KERNEL_NAME)
            .map_err(cuda_err("function lookup"))?;
        let acc = stream
            .alloc_zeros::<u64>(1)
            .map_err(cuda_err("device allocation"))?;
        Ok(Self {
            stream,
            function,
            acc,
        })
    }

    /// The compute stream the kernels run on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Enqueues, on the compute stream, the addition of the checksum of `slot`'s first `len`
    /// bytes as the item at schedule position `index`. The caller makes the stream wait for the
    /// slot's copy first (e.g. `stream.wait(ready.event()...)`).
    pub fn add(&mut self, slot: &CudaSlot, len: usize, index: u64) -> Result<()> {
        let data = slot.slice();
        if len > data.len() {
            return Err(PipelineError::RangeOutOfBounds {
                what: "device slot".into(),
                offset: 0,
                end: len as u64,
                size: data.len() as u64,
            });
        }
        crate::sys::nvrtc::launch_checksum(
            &self.stream,
            &self.function,
            data,
            len,
            index,
            &mut self.acc,
        )
        .map_err(cuda_err("checksum kernel launch"))
    }

    /// Waits for the stream and reads the accumulated checksum back (one device-to-host copy).
    pub fn total(&self) -> Result<u64> {
        let v = self
            .stream
            .clone_dtoh(&self.acc)
            .map_err(cuda_err("device-to-host copy"))?;
        v.first().copied().ok_or(PipelineError::Cuda {
            op: "device-to-host copy",
            message: "empty accumulator".into(),
        })
    }
}
