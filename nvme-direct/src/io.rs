//! Block reads and writes: splitting, PRPs, deep queues, timeouts and error recovery.

use std::time::Instant;

use crate::command::{NamespaceIdentity, Sqe, NVM_READ, NVM_WRITE};
use crate::controller::Controller;
use crate::dma::{check_range, DmaBuffer, DmaMemory, RegisterIo};
use crate::error::{Error, Result};
use crate::queue::Inflight;

/// Largest block count one Read/Write carries (NLB is a 16-bit zero-based field).
pub const MAX_BLOCKS_PER_COMMAND: u64 = 65536;

/// Where a transfer goes: a block range of a namespace and a byte offset in a DMA buffer.
#[derive(Debug, Clone, Copy)]
pub struct BlockRange {
    /// First logical block.
    pub lba: u64,
    /// Number of blocks.
    pub blocks: u64,
}

impl<R: RegisterIo, M: DmaMemory> Controller<R, M> {
    /// Reads `range` of namespace `ns` into `buf` at byte `offset` (a multiple of 4), using I/O
    /// queue `queue` (0-based index) with up to `queue_depth` commands in flight.
    ///
    /// `buf` is borrowed mutably until every command is complete (or the controller has been
    /// reset, which stops all DMA), so the device can never write it after this returns.
    pub fn read<B: DmaBuffer>(
        &mut self,
        queue: usize,
        ns: &NamespaceIdentity,
        range: BlockRange,
        buf: &mut B,
        offset: usize,
        queue_depth: usize,
    ) -> Result<()> {
        self.transfer(NVM_READ, queue, ns, range, buf, offset, queue_depth)
    }

    /// Writes `range` of namespace `ns` from `buf` at byte `offset`; see [`Controller::read`].
    pub fn write<B: DmaBuffer>(
        &mut self,
        queue: usize,
        ns: &NamespaceIdentity,
        range: BlockRange,
        buf: &mut B,
        offset: usize,
        queue_depth: usize,
    ) -> Result<()> {
        self.transfer(NVM_WRITE, queue, ns, range, buf, offset, queue_depth)
    }

    /// Blocks per command after MDTS, the configured bound and the 65536-block NLB limit.
    pub fn blocks_per_command(&self, ns: &NamespaceIdentity) -> u64 {
        let by_bytes = (self.max_transfer / ns.block_size as usize).max(1) as u64;
        by_bytes.min(MAX_BLOCKS_PER_COMMAND)
    }

    #[allow(clippy::too_many_arguments)]
    fn transfer<B: DmaBuffer>(
        &mut self,
        opcode: u8,
        queue: usize,
        ns: &NamespaceIdentity,
        range: BlockRange,
        buf: &mut B,
        offset: usize,
        queue_depth: usize,
    ) -> Result<()> {
        if queue >= self.io.len() {
            return Err(Error::InvalidArgument(format!(
                "I/O queue {queue} does not exist ({} created)",
                self.io.len()
            )));
        }
        if ns.metadata_size != 0 {
            return Err(Error::Unsupported(format!(
                "namespace {} carries {} metadata bytes per block; only plain formats are supported",
                ns.nsid, ns.metadata_size
            )));
        }
        let end = range.lba.checked_add(range.blocks);
        if range.blocks == 0 || end.map_or(true, |e| e > ns.size_blocks) {
            return Err(Error::InvalidArgument(format!(
                "blocks {}..+{} outside namespace {} of {} blocks (or empty)",
                range.lba, range.blocks, ns.nsid, ns.size_blocks
            )));
        }
        let bs = u64::from(ns.block_size);
        let bytes = range
            .blocks
            .checked_mul(bs)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or_else(|| Error::InvalidArgument("transfer size overflows".into()))?;
        check_range(buf.len(), offset, bytes)?;
        if offset % 4 != 0 {
            return Err(Error::BufferRange(format!(
                "buffer offset {offset} is not a multiple of 4 (NVMe PRP rule)"
            )));
        }
        let per_cmd = self.blocks_per_command(ns);
        let timeout = self.config.command_timeout;
        let q_index = queue;
        let depth = queue_depth.clamp(1, self.io[q_index].capacity());
        let mut next_block = 0u64;
        let mut first_error: Option<Error> = None;
        let mut idle = 0u32;
        loop {
            // Submit while there is work, room, and no error so far.
            while first_error.is_none()
                && next_block < range.blocks
                && self.io[q_index].outstanding() < depth
            {
                let Some(cid) = self.io[q_index].alloc_cid() else {
                    break;
                };
                let n = per_cmd.min(range.blocks - next_block);
                let byte_off = offset + (next_block * bs) as usize;
                let addr = buf.iova() + byte_off as u64;
                let q = &self.io[q_index];
                let prps = match q.prp_list_region(cid) {
                    Some((list, list_off, pages)) => {
                        crate::prp::build(addr, (n * bs) as usize, list, list_off, pages)
                    }
                    None => crate::prp::build(addr, (n * bs) as usize, buf, 0, 0),
                };
                let (prp1, prp2) = match prps {
                    Ok(p) => p,
                    Err(e) => {
                        self.io[q_index].release_cid(cid);
                        first_error = Some(e);
                        break;
                    }
                };
                let mut sqe = Sqe::rw(opcode, ns.nsid, range.lba + next_block, n as u32);
                sqe.set_prps(prp1, prp2);
                let info = Inflight {
                    opcode,
                    deadline: Instant::now() + timeout,
                };
                let q = &mut self.io[q_index];
                q.submit(&self.regs, sqe, cid, info)?;
                next_block += n;
            }
            if self.io[q_index].outstanding() == 0 {
                break;
            }
            let qid = self.io[q_index].qid;
            match self.io[q_index].poll(&self.regs) {
                Ok(Some(c)) => {
                    idle = 0;
                    if !c.status.is_success() && first_error.is_none() {
                        first_error = Some(Error::Status {
                            opcode: c.opcode,
                            qid,
                            status: c.status,
                        });
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    // Wrong command id or unreadable ring: the queue state is not trustworthy.
                    self.reset()?;
                    return Err(e);
                }
            }
            idle += 1;
            if idle % 1024 == 0 {
                if let Err(e) = self.check_status() {
                    // Disable stops DMA before the borrow of `buf` ends; ignore a failing reset.
                    let _ = self.reset();
                    return Err(e);
                }
            }
            if let Some((cid, info)) = self.io[q_index].expired(Instant::now()) {
                self.abort_and_reset(qid, cid)?;
                return Err(Error::Timeout {
                    opcode: info.opcode,
                    qid,
                    cid,
                    timeout,
                });
            }
            if idle > 4096 {
                std::thread::yield_now();
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
