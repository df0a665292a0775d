#![doc = include_str!("../README.md")]

mod admin;
pub mod command;
pub mod controller;
pub mod dma;
pub mod error;
pub mod extent;
pub mod io;
pub mod iova;
pub mod prp;
mod queue;
pub mod regs;
mod sys;

#[cfg(feature = "emulator")]
pub mod emu;

/// VFIO device access (type1 IOMMU container), BAR0 MMIO and locked DMA memory.
pub mod vfio {
    pub use crate::sys::vfio::{Bar0, VfioBuffer, VfioDevice, VfioDma};
}

pub use command::{ControllerIdentity, NamespaceIdentity};
pub use controller::{Config, Controller};
pub use dma::{DmaBuffer, DmaMemory, RegisterIo};
pub use error::{Error, NvmeStatus, Result};
pub use io::{BlockRange, IoQueue};
