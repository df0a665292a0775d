//! Raw NVRTC calls (cubin output, which cudarc's safe API does not offer), the library probe and
//! the checksum kernel's launch.

use std::ffi::{c_char, CStr, CString};

use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{result, sys};

/// Loads `path` and keeps it loaded for the life of the process, so later lookups by soname
/// (cudarc's loader, NVRTC's builtins) resolve to it.
pub(crate) fn pin_library(path: &str) -> Result<(), String> {
    // SAFETY: loading NVRTC runs its initialisers, which are made to be loaded by any process;
    // the handle is deliberately leaked so the library stays mapped.
    match unsafe { libloading::Library::new(path) } {
        Ok(lib) => {
            std::mem::forget(lib);
            Ok(())
        }
        Err(e) => Err(format!("{path}: {e}")),
    }
}

/// Owns an NVRTC program and destroys it on drop.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the handle came from create_program and is destroyed exactly once, here.
        let _ = unsafe { result::destroy_program(self.0) };
    }
}

/// Compiles CUDA C `source` to a cubin for `arch` (e.g. `sm_90`). NVRTC must have been probed.
/// Errors are `(message, compile log)`.
pub(crate) fn compile_cubin(
    name: &str,
    source: &str,
    arch: &str,
) -> Result<Vec<u8>, (String, String)> {
    let src =
        CString::new(source).map_err(|_| ("source holds a NUL byte".into(), String::new()))?;
    let cname = CString::new(format!("{name}.cu"))
        .map_err(|_| ("name holds a NUL byte".to_owned(), String::new()))?;
    let prog = Program(
        result::create_program(&src, Some(&cname))
            .map_err(|e| (format!("{e:?}"), String::new()))?,
    );
    let options = [format!("--gpu-architecture={arch}")];
    // SAFETY: prog.0 is a live program created above; `src` and `cname` outlive it.
    if let Err(e) = unsafe { result::compile_program(prog.0, &options) } {
        // SAFETY: prog.0 is live; NVRTC fills a NUL-terminated log buffer.
        let log = unsafe { result::get_program_log(prog.0) }
            .map(|raw| {
                // SAFETY: get_program_log returns a NUL-terminated buffer.
                unsafe { CStr::from_ptr(raw.as_ptr()) }
                    .to_string_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        return Err((format!("{e:?}"), log));
    }
    let mut size = 0usize;
    // SAFETY: prog.0 is live and compiled; `size` is valid for one write.
    unsafe { sys::nvrtcGetCUBINSize(prog.0, &mut size) }
        .result()
        .map_err(|e| (format!("nvrtcGetCUBINSize: {e:?}"), String::new()))?;
    let mut cubin = vec![0u8; size];
    // SAFETY: `cubin` holds exactly the `size` bytes NVRTC reported for this program.
    unsafe { sys::nvrtcGetCUBIN(prog.0, cubin.as_mut_ptr().cast::<c_char>()) }
        .result()
        .map_err(|e| (format!("nvrtcGetCUBIN: {e:?}"), String::new()))?;
    Ok(cubin)
}

/// Launches the checksum kernel over the first `len` bytes of `data`, adding into `out[0]`.
pub(crate) fn launch_checksum(
    stream: &CudaStream,
    f: &CudaFunction,
    data: &CudaSlice<u8>,
    len: usize,
    item: u64,
    out: &mut CudaSlice<u64>,
) -> Result<(), cudarc::driver::DriverError> {
    // The caller checked len <= data.len() and out.len() >= 1; the kernel reads data[..len]
    // and atomically adds to out[0].
    assert!(
        len <= data.len() && !out.is_empty(),
        "checked by the caller"
    );
    let len64 = len as u64;
    let words = len.div_ceil(4) as u64;
    let blocks = words.div_ceil(256).clamp(1, 4096) as u32;
    let cfg = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut b = stream.launch_builder(f);
    b.arg(data).arg(&len64).arg(&item).arg(out);
    // SAFETY: the arguments match the kernel's parameters in order and C type
    // (const unsigned char*, unsigned long long, unsigned long long, unsigned long long*); the
    // kernel reads only data[..len] (len <= data.len(), asserted above) and writes only out[0];
    // cudarc's stream tracking orders the launch after the buffers' writes.
    unsafe { b.launch(cfg) }.map(|_| ())
}
