//! Host staging buffers: page-aligned (so O_DIRECT and DMA engines accept them), optionally pinned
//! by a transfer, or wrapping memory that another driver allocated.

use std::any::Any;

use crate::error::{PipelineError, Result};
use crate::stage::HostMemory;
use crate::sys::AlignedAlloc;

/// Alignment of buffers allocated here (one page; also a multiple of O_DIRECT's block size).
pub const PAGE: usize = 4096;

/// Host memory owned by someone else (e.g. the DMA buffers of a userspace NVMe driver) that can
/// serve as a staging buffer.
pub trait StagingMemory: Send + Sync {
    /// The memory, read-only.
    fn as_slice(&self) -> &[u8];
    /// The memory, writable.
    fn as_mut_slice(&mut self) -> &mut [u8];
}

enum Inner {
    Owned(AlignedAlloc),
    External(Box<dyn StagingMemory>),
}

/// A host buffer used as staging between a source and a transfer.
pub struct HostBuffer {
    // Declared first so it drops first: a registration (page lock) must end before the memory goes.
    pin: Option<Box<dyn Any + Send + Sync>>,
    inner: Inner,
}

impl std::fmt::Debug for HostBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostBuffer")
            .field("len", &self.len())
            .field("pinned", &self.is_pinned())
            .finish()
    }
}

impl HostBuffer {
    /// Allocates `len` zeroed bytes aligned to [`PAGE`].
    pub fn new(len: usize) -> Result<Self> {
        let alloc = AlignedAlloc::new(len, PAGE).ok_or(PipelineError::Alloc {
            bytes: len,
            what: "staging buffer",
        })?;
        Ok(Self {
            pin: None,
            inner: Inner::Owned(alloc),
        })
    }

    /// Wraps memory allocated elsewhere (for example another driver's DMA buffer).
    pub fn from_external(memory: Box<dyn StagingMemory>) -> Self {
        Self {
            pin: None,
            inner: Inner::External(memory),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// True when the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.inner {
            Inner::Owned(a) => a.as_slice(),
            Inner::External(m) => m.as_slice(),
        }
    }

    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.inner {
            Inner::Owned(a) => a.as_mut_slice(),
            Inner::External(m) => m.as_mut_slice(),
        }
    }

    /// Attaches a pin (page-lock registration) handle; it is dropped before the memory is freed.
    pub fn set_pin(&mut self, handle: Box<dyn Any + Send + Sync>) {
        self.pin = Some(handle);
    }

    /// True when a transfer registered (page-locked) this buffer.
    pub fn is_pinned(&self) -> bool {
        self.pin.is_some()
    }
}

impl HostMemory for HostBuffer {
    fn bytes(&self) -> &[u8] {
        self.as_slice()
    }

    fn is_page_locked(&self) -> bool {
        self.is_pinned()
    }
}
