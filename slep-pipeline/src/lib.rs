//! N-buffered layer streaming pipeline: storage read -> DMA -> compute, overlapped.
//!
//! A [`Pipeline`] walks a [`Schedule`] of items (each one or several byte ranges) through N device
//! slots. While the caller computes on item `i`, the pipeline is already transferring items
//! `i+1 .. i+N-1` into the other slots and reading the next items into host staging buffers, so a
//! streamed model runs at the speed of its slowest link instead of the sum of all links.
//!
//! The stages are traits:
//! - [`Source`] fills a host staging buffer from an item's byte ranges (or points at host memory
//!   that already holds them, or says the item is resident on the device);
//! - [`Transfer`] copies host bytes into a device slot and returns a completion event;
//! - the consumer (a closure given to [`Pipeline::run`]) sees "slot k holds item i, ready after
//!   event e" and releases the slot by returning (optionally with its own "done" event).
//!
//! Sources provided here: [`ResidentSource`], [`PinnedRamSource`], [`NvmeSource`] (over the
//! [`NvmeReader`] adapter trait that a userspace NVMe driver implements), [`FileSource`] (O_DIRECT
//! read through io_uring or `pread`, buffered fallback), [`MmapSource`] (mmap + worker-thread memcpy)
//! and the comparison baseline [`MmapBaselineSource`] (pageable mmap pointer handed to the copy).
//! [`PrefetchSource`] wraps a storage source with a read-ahead thread for schedules that repeat.
//! [`choose_source`] picks one per item from where it lives and what the machine allows, with a
//! human-readable reason; [`RoutedSource`] dispatches per item.
//!
//! Transfers: [`CpuTransfer`] (host buffers as device slots, a thread as copy engine, for tests and
//! CPU builds) and, with feature `cuda`, `CudaTransfer` (pinned staging, a dedicated copy stream,
//! events, `cuMemHostRegister` of external memory).
//!
//! [`sim`] is a discrete-event simulation of the same scheduling policy on a virtual clock.
#![deny(unsafe_code)]

mod align;
mod auto;
mod buffer;
pub mod checksum;
mod cpu_device;
#[cfg(feature = "cuda")]
mod cuda;
mod error;
#[cfg(feature = "cuda")]
mod gpu_checksum;
mod pipeline;
mod schedule;
pub mod sim;
mod source;
mod stage;
mod stats;
#[allow(unsafe_code)]
mod sys;
mod trace;

pub use align::{AlignedSpan, DEFAULT_BLOCK};
pub use auto::{choose_source, Choice, Location, MachineCaps};
pub use buffer::{HostBuffer, StagingMemory, PAGE};
pub use cpu_device::{CpuEvent, CpuSlot, CpuTransfer};
#[cfg(feature = "cuda")]
pub use cuda::{
    cuda_available, CudaSignal, CudaSlot, CudaTransfer, CudaTransferOptions, HostRegistration,
};
pub use error::PipelineError;
#[cfg(feature = "cuda")]
pub use gpu_checksum::{compile_checksum_kernel, nvrtc_available, use_nvrtc_library, GpuChecksum};
pub use pipeline::{Pipeline, Ready, DEFAULT_SLOTS};
pub use schedule::{ByteRange, Item, Schedule};
pub use source::file::{FileSource, IoEngine, ReadMode};
pub use source::mmap::{MmapBaselineSource, MmapSource};
pub use source::nvme::{NvmeError, NvmeReader, NvmeSource};
pub use source::pinned::PinnedRamSource;
pub use source::prefetch::{PrefetchSource, ReadTotals};
pub use source::resident::ResidentSource;
pub use source::routed::RoutedSource;
pub use stage::{CopySegment, Fetched, HostMemory, HostRegion, Source, SourceKind, Transfer};
pub use stats::{PipelineStats, StageStats};
pub use trace::{Span, Stage, Trace};

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
