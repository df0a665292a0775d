//! In-process emulated NVMe controller for tests (feature `emulator`).
//!
//! [`Emulator`] implements [`RegisterIo`] and [`DmaMemory`]: the real driver logic runs against
//! it unchanged. DMA buffers live in a separate IOVA space starting at a high, non-identity
//! base; submission queues are processed synchronously when their tail doorbell is written.
//! Faults can be injected: dropped, stalled, delayed and late completions, error statuses,
//! wrong command ids, controller fatal status and all-ones register reads. The NVMe Abort
//! command is implemented (stalled and late commands can be aborted), and the emulator counts
//! what a correct driver must never cause: a command id reused while the controller still
//! holds a command with that id, and DMA to an address that is not mapped (an IOMMU fault on
//! real hardware, e.g. after the driver released the buffer).

use std::time::Duration;

mod device;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::dma::{check_range, DmaBuffer, DmaMemory, RegisterIo};
use crate::error::{Error, Result};
use crate::regs::PAGE_SIZE;

pub use device::EmuStats;
use device::State;

/// Emulated controller parameters.
#[derive(Debug, Clone)]
pub struct EmuConfig {
    /// Logical block size (512 or 4096).
    pub block_size: u32,
    /// MDTS as reported by Identify (power of two of 4 KiB; 0 = unlimited).
    pub mdts: u8,
    /// CAP.MQES (maximum queue entries minus one).
    pub mqes: u16,
    /// CAP.DSTRD (doorbell stride 4 << DSTRD).
    pub dstrd: u8,
    /// Number of I/O queues the controller grants at most.
    pub max_io_queues: u16,
    /// First IOVA handed out (deliberately far from any host address).
    pub iova_base: u64,
    /// CSTS reads before RDY follows CC.EN (exercises the CAP.TO wait).
    pub ready_delay_reads: u32,
    /// CAP.TO in 500 ms units.
    pub timeout_units: u8,
    /// Process submissions only when the driver next reads memory (polls), not at the
    /// doorbell: lets the driver fill the queue, like a real device working in parallel.
    pub deferred: bool,
}

impl Default for EmuConfig {
    fn default() -> Self {
        Self {
            block_size: 512,
            mdts: 5,
            mqes: 1023,
            dstrd: 0,
            max_io_queues: 8,
            iova_base: 0x7f_0000_0000,
            ready_delay_reads: 3,
            timeout_units: 2,
            deferred: false,
        }
    }
}

/// A fault applied to an upcoming I/O command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The command executes but its completion is never posted; the controller still holds
    /// its command id, and an Abort answers "not aborted" (only a reset ends it).
    DropCompletion,
    /// The command stays in the controller, moving no data, until an Abort names it; the
    /// Abort then ends it with status "Command Abort Requested".
    Stall,
    /// Like [`Fault::Stall`], but the Abort is acknowledged at once ("aborted") while the
    /// aborted command's own completion is only posted `after` later.
    StallAbortLate {
        /// Delay between the Abort's completion and the aborted command's completion.
        after: Duration,
    },
    /// Like [`Fault::Stall`], and an Abort naming it never completes either.
    StallIgnoringAbort,
    /// The command executes (moves its data and completes) only once `after` has passed,
    /// checked at driver memory reads; an Abort meanwhile answers "not aborted".
    Delayed {
        /// Time from submission to execution.
        after: Duration,
    },
    /// The completion is posted only after this many driver memory reads; an Abort meanwhile
    /// posts it at once with status "Command Abort Requested".
    LateCompletion {
        /// Driver memory reads before posting.
        ticks: u32,
    },
    /// The command completes with this status (and moves no data).
    Status {
        /// Status code type.
        sct: u8,
        /// Status code.
        sc: u8,
        /// Do not retry.
        dnr: bool,
        /// More.
        more: bool,
    },
    /// The completion carries a command id that was never submitted.
    WrongCommandId,
    /// The controller sets CSTS.CFS instead of completing.
    Fatal,
    /// From this command on every register read returns all ones (device removed).
    AllOnes,
}

/// Handle to an emulated controller; clones share the same device.
#[derive(Clone)]
pub struct Emulator {
    state: Arc<Mutex<State>>,
}

impl Emulator {
    /// A controller with one namespace holding `image` (its length is rounded down to blocks).
    pub fn new(config: EmuConfig, image: Vec<u8>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::new(config, image))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Injects `fault` into the I/O command that comes after `skip` further I/O commands.
    pub fn inject(&self, skip: u64, fault: Fault) {
        self.lock().inject(skip, fault);
    }

    /// A copy of the namespace contents.
    pub fn image(&self) -> Vec<u8> {
        self.lock().image().to_vec()
    }

    /// Counters of what the controller processed.
    pub fn stats(&self) -> EmuStats {
        self.lock().stats()
    }
}

impl RegisterIo for Emulator {
    fn read32(&self, offset: usize) -> u32 {
        self.lock().read_reg(offset)
    }
    fn write32(&self, offset: usize, value: u32) {
        self.lock().write_reg(offset, value);
    }
}

/// A DMA buffer in the emulator's IOVA space (unmapped on drop).
pub struct EmuBuffer {
    state: Arc<Mutex<State>>,
    iova: u64,
    len: usize,
}

impl EmuBuffer {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl DmaBuffer for EmuBuffer {
    fn len(&self) -> usize {
        self.len
    }
    fn iova(&self) -> u64 {
        self.iova
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        check_range(self.len, offset, out.len())?;
        let mut s = self.lock();
        s.tick();
        s.host_read(self.iova + offset as u64, out)
    }
    fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<()> {
        check_range(self.len, offset, data.len())?;
        self.lock().host_write(self.iova + offset as u64, data)
    }
}

impl Drop for EmuBuffer {
    fn drop(&mut self) {
        self.lock().unmap(self.iova);
    }
}

impl DmaMemory for Emulator {
    type Buffer = EmuBuffer;
    fn alloc(&self, len: usize) -> Result<EmuBuffer> {
        let len = len
            .max(1)
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or_else(|| Error::Dma(format!("buffer of {len} bytes too large")))?;
        let iova = self.lock().map(len)?;
        Ok(EmuBuffer {
            state: self.state.clone(),
            iova,
            len,
        })
    }
}
