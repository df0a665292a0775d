//! CUDA transfer (feature `cuda`): pinned staging (host buffers registered with
//! `cuMemHostRegister`), a dedicated copy stream, and events for completion and release.

use std::sync::Arc;
use std::time::Duration;

use cudarc::driver::{sys, CudaContext, CudaEvent, CudaSlice, CudaStream};

use crate::buffer::HostBuffer;
use crate::error::{PipelineError, Result};
use crate::stage::{check_segments, CopySegment, HostMemory, Transfer};
use crate::sys::cuda::{disable_event_tracking, enqueue_copies, Registered};

fn cuda_err(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> PipelineError {
    move |e| PipelineError::Cuda {
        op,
        message: e.to_string(),
    }
}

/// Checks that the CUDA driver library can be loaded, without touching cudarc (whose dynamic
/// loader panics when the library is absent).
pub fn cuda_available() -> Result<()> {
    crate::sys::probe_library(&["libcuda.so.1", "libcuda.so", "nvcuda.dll"])
        .map_err(|why| PipelineError::CudaUnavailable(format!("cannot load libcuda ({why})")))
}

/// A device slot: device memory owned by the copy stream.
#[derive(Debug)]
pub struct CudaSlot {
    buf: CudaSlice<u8>,
}

impl CudaSlot {
    /// The device memory (the item occupies its first `Ready::len` bytes). Make the compute
    /// stream wait on the item's event ([`crate::Ready::event`]) before reading it: cudarc's
    /// automatic event tracking does it too, but only in a context that keeps tracking on
    /// ([`CudaTransfer::new`]; not [`CudaTransfer::on_context`] with a compute context that
    /// turned it off).
    pub fn slice(&self) -> &CudaSlice<u8> {
        &self.buf
    }
}

/// A GPU-side signal: the completion of a copy (with its start, for timing), or a consumer's
/// "done with the slot" recorded on its compute stream.
#[derive(Debug)]
pub struct CudaSignal {
    start: Option<CudaEvent>,
    end: CudaEvent,
}

impl CudaSignal {
    /// Records a signal at the current end of `stream` (e.g. after the kernels that read a slot).
    pub fn record(stream: &Arc<CudaStream>) -> Result<Self> {
        let end = stream
            .context()
            .new_event(None)
            .map_err(cuda_err("event create"))?;
        end.record(stream).map_err(cuda_err("event record"))?;
        Ok(Self { start: None, end })
    }

    /// The event that completes with the signalled work.
    pub fn event(&self) -> &CudaEvent {
        &self.end
    }
}

/// Host memory registered with CUDA (page-locked) for as long as this value lives; keeps the
/// memory alive too. Use it to make another driver's DMA buffers copyable at full speed.
pub struct HostRegistration {
    // Declared first: unregister before the memory can go.
    _registered: Registered,
    memory: Arc<dyn HostMemory>,
}

impl std::fmt::Debug for HostRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostRegistration")
            .field("bytes", &self.memory.bytes().len())
            .finish()
    }
}

impl HostRegistration {
    /// The registered memory.
    pub fn memory(&self) -> &Arc<dyn HostMemory> {
        &self.memory
    }
}

/// Options of [`CudaTransfer::with_options`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaTransferOptions {
    /// The GPU (CUDA device ordinal).
    pub ordinal: usize,
    /// Keep cudarc's automatic per-buffer event tracking for the slots (default on): kernels
    /// launched through cudarc then also wait for a slot's copy on their own. Off, each launch
    /// that reads a slot records no event (less host work a launch); the pipeline's ordering
    /// of slot reuse and frees does not depend on it, but consumers must wait on each item's
    /// event ([`crate::Ready::event`]) before reading its slot.
    pub event_tracking: bool,
}

impl Default for CudaTransferOptions {
    fn default() -> Self {
        Self {
            ordinal: 0,
            event_tracking: true,
        }
    }
}

/// Transfer into GPU memory on a dedicated copy stream.
#[derive(Debug)]
pub struct CudaTransfer {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
}

impl CudaTransfer {
    /// Opens GPU `ordinal` (its primary context) and creates the copy stream. Returns
    /// [`PipelineError::CudaUnavailable`] when there is no CUDA driver or no such GPU.
    pub fn new(ordinal: usize) -> Result<Self> {
        Self::with_options(&CudaTransferOptions {
            ordinal,
            ..CudaTransferOptions::default()
        })
    }

    /// As [`CudaTransfer::new`], with `options`.
    pub fn with_options(options: &CudaTransferOptions) -> Result<Self> {
        cuda_available()?;
        let ordinal = options.ordinal;
        let ctx = std::panic::catch_unwind(|| CudaContext::new(ordinal))
            .map_err(|_| PipelineError::CudaUnavailable("the CUDA driver failed to load".into()))?
            .map_err(|e| PipelineError::CudaUnavailable(format!("GPU {ordinal}: {e}")))?;
        if !options.event_tracking {
            disable_event_tracking(&ctx);
        }
        let stream = ctx.new_stream().map_err(cuda_err("stream create"))?;
        Ok(Self { ctx, stream })
    }

    /// A transfer in an existing context (e.g. the compute backend's), with its own copy
    /// stream. Slots are allocated in `ctx`, so they follow its event-tracking setting; the
    /// pipeline orders every reuse and free of a slot after its last reader itself (the
    /// consumer's release event, or [`Transfer::settle`] where there is none), so a context with
    /// tracking off is safe as long as consumers wait on each item's event before reading it.
    pub fn on_context(ctx: Arc<CudaContext>) -> Result<Self> {
        let stream = ctx.new_stream().map_err(cuda_err("stream create"))?;
        Ok(Self { ctx, stream })
    }

    /// The CUDA context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The dedicated copy stream.
    pub fn copy_stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Registers externally allocated host memory (e.g. a userspace NVMe driver's DMA buffer)
    /// with CUDA so copies from it run at pinned speed.
    pub fn register_host(&self, memory: Arc<dyn HostMemory>) -> Result<HostRegistration> {
        let registered =
            Registered::new(&self.ctx, memory.bytes()).map_err(cuda_err("cuMemHostRegister"))?;
        Ok(HostRegistration {
            _registered: registered,
            memory,
        })
    }

    /// Records "done with the slot" on the consumer's `compute_stream`; return it from the
    /// consumer so the next copy into the slot waits for the compute on the GPU.
    pub fn release_signal(&self, compute_stream: &Arc<CudaStream>) -> Result<CudaSignal> {
        CudaSignal::record(compute_stream)
    }

    /// Copies the first `len` bytes of a slot back to the host (for tests and checksums).
    pub fn read_back(&self, slot: &CudaSlot, len: usize) -> Result<Vec<u8>> {
        let view = slot
            .buf
            .try_slice(..len)
            .ok_or(PipelineError::RangeOutOfBounds {
                what: "device slot".into(),
                offset: 0,
                end: len as u64,
                size: slot.buf.len() as u64,
            })?;
        self.stream
            .clone_dtoh(&view)
            .map_err(cuda_err("device-to-host copy"))
    }

    /// Measures pinned host-to-device bandwidth: copies `bytes` from a pinned buffer `reps` times
    /// on the copy stream, timed with events. Returns GB/s (10^9 bytes per second).
    pub fn measure_pinned_h2d(&self, bytes: usize, reps: usize) -> Result<f64> {
        let src = self.alloc_staging(bytes)?;
        let mut slot = self.alloc_slot(bytes)?;
        let seg = [CopySegment {
            src: src.as_slice(),
            dst_offset: 0,
        }];
        // Warm-up.
        let ev = self.copy(&seg, &mut slot, None)?;
        self.wait(&ev)?;
        let mut total = Duration::ZERO;
        for _ in 0..reps.max(1) {
            let ev = self.copy(&seg, &mut slot, None)?;
            self.wait(&ev)?;
            total += self.elapsed(&ev).unwrap_or_default();
        }
        let secs = total.as_secs_f64();
        Ok(if secs > 0.0 {
            (bytes as f64 * reps.max(1) as f64) / secs / 1e9
        } else {
            0.0
        })
    }
}

impl Transfer for CudaTransfer {
    type Slot = CudaSlot;
    type Event = CudaSignal;

    fn alloc_slot(&self, bytes: usize) -> Result<CudaSlot> {
        self.ctx
            .bind_to_thread()
            .map_err(cuda_err("bind context"))?;
        let buf = self
            .stream
            .alloc_zeros::<u8>(bytes.max(1))
            .map_err(cuda_err("device allocation"))?;
        Ok(CudaSlot { buf })
    }

    fn pin(&self, buffer: &mut HostBuffer) -> Result<()> {
        if buffer.is_pinned() || buffer.is_empty() {
            return Ok(());
        }
        let reg =
            Registered::new(&self.ctx, buffer.as_slice()).map_err(cuda_err("cuMemHostRegister"))?;
        buffer.set_pin(Box::new(reg));
        Ok(())
    }

    fn copy(
        &self,
        segments: &[CopySegment<'_>],
        slot: &mut CudaSlot,
        after: Option<&CudaSignal>,
    ) -> Result<CudaSignal> {
        check_segments(segments, slot.buf.len())?;
        self.ctx
            .bind_to_thread()
            .map_err(cuda_err("bind context"))?;
        if let Some(after) = after {
            self.stream
                .wait(&after.end)
                .map_err(cuda_err("stream wait on release"))?;
        }
        let start = self
            .ctx
            .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(cuda_err("event create"))?;
        let end = self
            .ctx
            .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(cuda_err("event create"))?;
        start
            .record(&self.stream)
            .map_err(cuda_err("event record"))?;
        enqueue_copies(&self.stream, &mut slot.buf, segments)?;
        end.record(&self.stream).map_err(cuda_err("event record"))?;
        Ok(CudaSignal {
            start: Some(start),
            end,
        })
    }

    fn wait(&self, event: &CudaSignal) -> Result<()> {
        event
            .end
            .synchronize()
            .map_err(cuda_err("event synchronize"))
    }

    fn elapsed(&self, event: &CudaSignal) -> Option<Duration> {
        let start = event.start.as_ref()?;
        let ms = start.elapsed_ms(&event.end).ok()?;
        Some(Duration::from_secs_f64(f64::from(ms.max(0.0)) / 1e3))
    }

    /// Waits for every stream of the context (`cuCtxSynchronize`: the GPU's primary context, so
    /// also a consumer's compute stream created from another handle to it).
    fn settle(&self) -> Result<()> {
        self.ctx
            .synchronize()
            .map_err(cuda_err("context synchronize"))
    }
}
