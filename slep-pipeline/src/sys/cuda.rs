//! Raw CUDA driver calls that cudarc's safe API does not cover: host-memory registration and an
//! asynchronous host-to-device copy from arbitrary (registered or pageable) host memory.

use cudarc::driver::{result, sys, DriverError};

/// Registers `len` bytes at `ptr` as page-locked with the current context (`cuMemHostRegister`).
///
/// # Safety
/// `ptr .. ptr + len` must be valid host memory that stays allocated until
/// [`host_unregister`] is called on `ptr`.
pub(crate) unsafe fn host_register(ptr: *mut u8, len: usize) -> Result<(), DriverError> {
    // SAFETY: forwarded to the caller's contract above.
    unsafe { sys::cuMemHostRegister_v2(ptr.cast(), len, sys::CU_MEMHOSTREGISTER_PORTABLE).result() }
}

/// Undoes [`host_register`].
///
/// # Safety
/// `ptr` must have been registered with [`host_register`] and not unregistered since.
pub(crate) unsafe fn host_unregister(ptr: *mut u8) -> Result<(), DriverError> {
    // SAFETY: forwarded to the caller's contract above.
    unsafe { sys::cuMemHostUnregister(ptr.cast()).result() }
}

/// Enqueues copies of each segment's host bytes into `dst` at the segment's offset, on `stream`.
///
/// Crate-internal contract (the copies are asynchronous): every segment's source bytes must stay
/// valid and unmodified until an event recorded on `stream` after this call has completed. The
/// pipeline keeps staging buffers and host regions until it has waited on that event.
pub(crate) fn enqueue_copies(
    stream: &std::sync::Arc<cudarc::driver::CudaStream>,
    dst: &mut cudarc::driver::CudaSlice<u8>,
    segments: &[crate::stage::CopySegment<'_>],
) -> Result<(), crate::error::PipelineError> {
    use cudarc::driver::DevicePtrMut;
    crate::stage::check_segments(segments, dst.len())?;
    let (base, _record) = dst.device_ptr_mut(stream);
    for s in segments {
        // SAFETY: the destination range lies inside `dst` (checked above), which the caller holds
        // mutably; the source contract is documented above and kept by the pipeline.
        unsafe { result::memcpy_htod_async(base + s.dst_offset as u64, s.src, stream.cu_stream()) }
            .map_err(|e| crate::error::PipelineError::Cuda {
                op: "cuMemcpyHtoDAsync",
                message: e.to_string(),
            })?;
    }
    Ok(())
}

/// A registration of host memory, undone on drop. Holds the address as an integer: the memory
/// belongs to whoever handed it over.
pub(crate) struct Registered {
    ptr: usize,
    ctx: std::sync::Arc<cudarc::driver::CudaContext>,
}

impl Registered {
    /// Registers `bytes` (which the caller keeps allocated for as long as the returned value
    /// lives; see the types that own a `Registered`).
    pub(crate) fn new(
        ctx: &std::sync::Arc<cudarc::driver::CudaContext>,
        bytes: &[u8],
    ) -> Result<Self, DriverError> {
        ctx.bind_to_thread()?;
        let ptr = bytes.as_ptr() as *mut u8;
        // SAFETY: `bytes` is valid host memory; every owner of a `Registered` keeps that memory
        // alive longer than the `Registered` (HostBuffer drops its pin before its memory;
        // HostRegistration holds an Arc of the memory), and the driver never writes through it.
        unsafe { host_register(ptr, bytes.len())? };
        Ok(Self {
            ptr: ptr as usize,
            ctx: ctx.clone(),
        })
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: registered in `new`, unregistered exactly once here.
        let _ = unsafe { host_unregister(self.ptr as *mut u8) };
    }
}

/// Turns off cudarc's automatic per-buffer event tracking for buffers (slots) created afterwards
/// in `ctx`.
pub(crate) fn disable_event_tracking(ctx: &cudarc::driver::CudaContext) {
    // SAFETY: cudarc requires that, without tracking, no buffer is used on one stream while
    // another stream still allocates, writes or frees it. The slots are the only buffers the
    // transfer allocates: a consumer reads a slot only after waiting on its copy's event (the
    // documented contract of `Ready::event`), the next copy into it waits on the consumer's
    // release event, and the pipeline settles the device before it frees or reuses a slot whose
    // reader left no event (a failed consumer, the pipeline dropped).
    unsafe { ctx.disable_event_tracking() }
}
