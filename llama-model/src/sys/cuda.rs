//! Every `unsafe` of the CUDA backend: library probing, raw NVRTC calls (cubin output, version)
//! and kernel launches.

use std::ffi::{c_char, c_int, CStr, CString};

use cudarc::driver::{CudaFunction, CudaStream, LaunchArgs, LaunchConfig};
use cudarc::nvrtc::{result, sys};

use crate::cuda::error::{CudaError, Result};

/// Tries to load the first loadable of `names`; returns an explanation when none loads.
pub(crate) fn probe_library(names: &[String]) -> std::result::Result<(), String> {
    let mut errors = Vec::new();
    for name in names {
        // SAFETY: loading the CUDA driver / NVRTC library runs their initialisers, which are made
        // to be loaded by any process; the handle is dropped (library unloaded) right away.
        match unsafe { libloading::Library::new(name) } {
            Ok(_lib) => return Ok(()),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    Err(errors.join("; "))
}

/// NVRTC's version (major, minor). The library must have been probed first.
pub(crate) fn nvrtc_version() -> Result<(i32, i32)> {
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: both pointers are valid for writes of one c_int each.
    let status = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    status
        .result()
        .map_err(|e| CudaError::Unavailable(format!("nvrtcVersion: {e:?}")))?;
    Ok((major, minor))
}

/// Owns an NVRTC program and destroys it on drop.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the handle came from create_program and is destroyed exactly once, here.
        let _ = unsafe { result::destroy_program(self.0) };
    }
}

/// Compiles CUDA C++ `source` to a cubin for `arch` (e.g. `sm_90`) with NVRTC. The library must
/// have been probed first.
pub(crate) fn compile_cubin(module: &str, source: &str, arch: &str) -> Result<Vec<u8>> {
    let fail = |message: String, log: String| CudaError::Compile {
        module: module.to_owned(),
        arch: arch.to_owned(),
        message,
        log,
    };
    let src =
        CString::new(source).map_err(|_| fail("source holds a NUL byte".into(), String::new()))?;
    let name =
        CString::new(format!("{module}.cu")).map_err(|_| fail("bad name".into(), String::new()))?;
    let prog = Program(
        result::create_program(&src, Some(&name))
            .map_err(|e| fail(format!("{e:?}"), String::new()))?,
    );
    let options = [
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_owned(),
    ];
    // SAFETY: prog.0 is a live program created above; `src` and `name` outlive it.
    let compiled = unsafe { result::compile_program(prog.0, &options) };
    if let Err(e) = compiled {
        // SAFETY: prog.0 is live; the log is a NUL-terminated buffer NVRTC filled.
        let log = unsafe { result::get_program_log(prog.0) }
            .map(|raw| {
                // SAFETY: get_program_log returns a NUL-terminated buffer.
                unsafe { CStr::from_ptr(raw.as_ptr()) }
                    .to_string_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        return Err(fail(format!("{e:?}"), log));
    }
    let mut size = 0usize;
    // SAFETY: prog.0 is live and compiled; `size` is valid for one write.
    unsafe { sys::nvrtcGetCUBINSize(prog.0, &mut size) }
        .result()
        .map_err(|e| fail(format!("nvrtcGetCUBINSize: {e:?}"), String::new()))?;
    let mut cubin = vec![0u8; size];
    // SAFETY: `cubin` has exactly the `size` bytes NVRTC reported for this program.
    unsafe { sys::nvrtcGetCUBIN(prog.0, cubin.as_mut_ptr().cast::<c_char>()) }
        .result()
        .map_err(|e| fail(format!("nvrtcGetCUBIN: {e:?}"), String::new()))?;
    Ok(cubin)
}

/// A kernel launch whose every argument was pushed by the safe wrappers in `ops`, which check
/// buffer sizes against the shapes the kernel reads and writes before building it.
pub(crate) struct Launch<'a>(pub(crate) LaunchArgs<'a>);

impl<'a> Launch<'a> {
    /// Starts a launch of `f` on `stream`.
    pub(crate) fn new(stream: &'a CudaStream, f: &'a CudaFunction) -> Self {
        Launch(stream.launch_builder(f))
    }

    /// Enqueues the kernel.
    pub(crate) fn run(mut self, op: &'static str, cfg: LaunchConfig) -> Result<()> {
        // SAFETY: the caller (ops) pushed exactly the kernel's parameters, in order and with the
        // kernel's C types, and checked that every buffer holds what the kernel indexes for
        // the given shape; the buffers are borrowed for the launch's lifetime and cudarc's
        // stream tracking orders the kernel after their writes.
        unsafe { self.0.launch(cfg) }
            .map(|_| ())
            .map_err(crate::cuda::error::driver(op))
    }
}

/// Loads library `path` and keeps it loaded for the rest of the process (so that later lookups
/// of the same soname resolve to it). Failures are ignored: the probe reported them already.
pub(crate) fn pin_library(path: &str) {
    // SAFETY: as in probe_library; the handle is deliberately leaked so the library stays mapped.
    if let Ok(lib) = unsafe { libloading::Library::new(path) } {
        std::mem::forget(lib);
    }
}

/// Turns off cudarc's automatic per-buffer event tracking for buffers created afterwards in
/// `ctx` (each launch would otherwise record and wait on one event per buffer argument: a large
/// share of a small decode step).
pub(crate) fn disable_event_tracking(ctx: &cudarc::driver::CudaContext) {
    // SAFETY: cudarc requires that, without tracking, no buffer is used on one stream while
    // another stream still allocates, writes or frees it. The backend enqueues every
    // allocation, copy, launch and free of its buffers on its single compute stream, so stream
    // order alone sequences them; buffers filled on another stream (a streaming pipeline's
    // copy stream) must be ordered by the caller with an event, as the backend documents.
    unsafe { ctx.disable_event_tracking() }
}

/// Page-locked, CPU-cached host memory of `f32` values, mapped into the device's address space:
/// the activations a row-split layer exchanges with CPU threads. Kernels read and write it in
/// place (no copy engine, so the exchanges never queue behind the bulk layer copies of the copy
/// stream); every host access first waits for the kernels enqueued with it
/// ([`PinnedF32::record`]), so the host never reads a value still being written nor overwrites
/// one being read.
pub(crate) struct PinnedF32 {
    ptr: *mut f32,
    /// The buffer's address on the device.
    dev: u64,
    len: usize,
    /// Recorded after the last kernel enqueued with this buffer.
    event: cudarc::driver::CudaEvent,
}

// SAFETY: the buffer is owned memory (no aliasing handle exists outside this value), and the
// CUDA event may be used from any thread.
unsafe impl Send for PinnedF32 {}

impl std::fmt::Debug for PinnedF32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedF32").field("len", &self.len).finish()
    }
}

/// `cuMemHostAlloc` flag: map the allocation into the device's address space.
const HOST_ALLOC_DEVICEMAP: std::ffi::c_uint = 0x02;

impl PinnedF32 {
    /// `len` zeroed values of mapped page-locked memory (cached: the CPU reads it at full speed).
    pub(crate) fn new(
        ctx: &std::sync::Arc<cudarc::driver::CudaContext>,
        len: usize,
    ) -> Result<Self> {
        use crate::cuda::error::driver;
        ctx.bind_to_thread().map_err(driver("bind context"))?;
        let event = ctx.new_event(None).map_err(driver("event"))?;
        let bytes = len.max(1) * std::mem::size_of::<f32>();
        // SAFETY: cuMemHostAlloc returns `bytes` of page-locked, cached, device-mapped memory
        // (or an error); it is freed exactly once, in Drop (or below on error).
        let ptr = unsafe { cudarc::driver::result::malloc_host(bytes, HOST_ALLOC_DEVICEMAP) }
            .map_err(driver("page-locked host buffer"))? as *mut f32;
        let mut dev: cudarc::driver::sys::CUdeviceptr = 0;
        // SAFETY: `ptr` was returned by cuMemHostAlloc with the device-map flag in the current
        // context; the call writes its device address to `dev`.
        let r = unsafe {
            cudarc::driver::sys::cuMemHostGetDevicePointer_v2(&mut dev, ptr.cast(), 0).result()
        };
        if let Err(e) = r {
            // SAFETY: `ptr` came from malloc_host and nothing else holds it.
            let _ = unsafe { cudarc::driver::result::free_host(ptr.cast()) };
            return Err(driver("device address of a host buffer")(e));
        }
        // SAFETY: the allocation holds at least `len` f32 and is suitably aligned (page-aligned).
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        Ok(Self {
            ptr,
            dev,
            len,
            event,
        })
    }

    /// The values, after every kernel enqueued with the buffer has finished.
    pub(crate) fn host(&mut self) -> Result<&mut [f32]> {
        self.event
            .synchronize()
            .map_err(crate::cuda::error::driver("wait for the device"))?;
        // SAFETY: `ptr` holds `len` initialised f32; no kernel that touches them is in flight
        // (the event above completed and `record` follows every enqueue), and `&mut self` keeps
        // any other host access out while the slice lives.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) })
    }

    /// The device address of values `range` (checked against the buffer), for kernels; call
    /// [`PinnedF32::record`] after enqueueing them.
    pub(crate) fn addr(&self, range: std::ops::Range<usize>) -> Result<u64> {
        let len = self.len;
        if range.start > range.end || range.end > len {
            return Err(CudaError::Shape {
                op: "host buffer",
                detail: format!("values {range:?} of a host buffer of {len}"),
            });
        }
        Ok(self.dev + (range.start * std::mem::size_of::<f32>()) as u64)
    }

    /// Records, on `stream`, the point after the kernels just enqueued with the buffer: the next
    /// host access waits for it.
    pub(crate) fn record(&mut self, stream: &CudaStream) -> Result<()> {
        stream
            .context()
            .bind_to_thread()
            .map_err(crate::cuda::error::driver("bind context"))?;
        self.event
            .record(stream)
            .map_err(crate::cuda::error::driver("record host buffer use"))
    }
}

impl Drop for PinnedF32 {
    fn drop(&mut self) {
        // A kernel still using it must finish before its memory goes back.
        if self.event.synchronize().is_err() {
            return; // leak rather than free memory the device may still touch
        }
        // SAFETY: `ptr` came from malloc_host and is freed exactly once, here.
        let _ = unsafe { cudarc::driver::result::free_host(self.ptr as *mut std::ffi::c_void) };
    }
}
