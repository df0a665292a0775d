#![doc = include_str!("../README.md")]
// `unsafe` only in `sys` (ioctls, MMIO, DMA memory), each block with its SAFETY comment.
#![deny(unsafe_code)]

mod admin;
mod command;
mod controller;
mod dma;
mod error;
pub mod extent;
mod extent_list;
mod file_reader;
mod io;
mod iova;
mod options;
mod prp;
mod queue;
mod regs;
#[allow(unsafe_code)]
mod sys;

#[cfg(feature = "emulator")]
pub mod emu;

/// VFIO device access (iommufd + device cdev, or the type1 container), BAR0 MMIO and locked
/// DMA memory (2 MiB huge pages when available).
pub mod vfio {
    pub use crate::options::VfioOptions;
    pub use crate::sys::dma::{VfioBuffer, VfioDma};
    pub use crate::sys::hostmem::HugePages;
    pub use crate::sys::vfio::{Bar0, IommuMode, VfioDevice};
}

pub use command::{ControllerIdentity, NamespaceIdentity};
pub use controller::{Config, Controller, Recovery};
pub use dma::{DmaBuffer, DmaMemory, HostRegion, RegisterIo};
pub use error::{Error, NvmeStatus, Result};
pub use extent_list::ExtentList;
pub use file_reader::{ExtentReader, FileLocation, FILE_READ_CHUNK};
pub use io::{BlockRange, IoQueue, MAX_BLOCKS_PER_COMMAND};
pub use regs::{Capabilities, Version};
