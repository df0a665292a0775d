//! One submission/completion queue pair with command-id tracking and phase tags.

use std::time::Instant;

use crate::command::{Cqe, Sqe};
use crate::dma::{DmaBuffer, DmaMemory, RegisterIo};
use crate::error::{Error, NvmeStatus, Result};
use crate::regs::{cq_head_doorbell, sq_tail_doorbell, PAGE_SIZE};

/// A command the controller has not completed yet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inflight {
    pub opcode: u8,
    pub deadline: Instant,
    /// An NVMe Abort naming this command has completed; `deadline` is then the end of the
    /// grace period for the command's own completion.
    pub abort_sent: bool,
}

impl Inflight {
    /// A freshly submitted command that must complete by `deadline`.
    pub fn new(opcode: u8, deadline: Instant) -> Self {
        Self {
            opcode,
            deadline,
            abort_sent: false,
        }
    }
}

/// A consumed completion.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completion {
    pub cid: u16,
    pub opcode: u8,
    pub result: u32,
    pub status: NvmeStatus,
    /// The driver had sent an Abort for this command before it completed.
    pub abort_sent: bool,
}

pub(crate) struct QueuePair<B> {
    pub qid: u16,
    pub size: u16,
    sq: B,
    cq: B,
    sq_tail: u16,
    cq_head: u16,
    phase: bool,
    sq_db: usize,
    cq_db: usize,
    inflight: Vec<Option<Inflight>>,
    free: Vec<u16>,
    prp_lists: Option<B>,
    list_pages_per_slot: usize,
}

impl<B: DmaBuffer> QueuePair<B> {
    /// Allocates ring memory (and per-command PRP list pages) for a queue of `size` entries.
    pub fn new<M: DmaMemory<Buffer = B>>(
        mem: &M,
        qid: u16,
        size: u16,
        stride: usize,
        list_pages_per_slot: usize,
    ) -> Result<Self> {
        if size < 2 {
            return Err(Error::InvalidArgument(format!("queue size {size} < 2")));
        }
        let sq = mem.alloc(usize::from(size) * 64)?;
        let cq = mem.alloc(usize::from(size) * 16)?;
        let prp_lists = if list_pages_per_slot > 0 {
            Some(mem.alloc(usize::from(size) * list_pages_per_slot * PAGE_SIZE)?)
        } else {
            None
        };
        let mut q = Self {
            qid,
            size,
            sq,
            cq,
            sq_tail: 0,
            cq_head: 0,
            phase: true,
            sq_db: sq_tail_doorbell(qid, stride),
            cq_db: cq_head_doorbell(qid, stride),
            inflight: Vec::new(),
            free: Vec::new(),
            prp_lists,
            list_pages_per_slot,
        };
        q.reset_state()?;
        Ok(q)
    }

    /// Forgets everything in flight and clears the rings (after a controller reset).
    pub fn reset_state(&mut self) -> Result<()> {
        self.cq.zero(0, self.cq.len())?;
        self.sq_tail = 0;
        self.cq_head = 0;
        self.phase = true;
        let slots = usize::from(self.size) - 1;
        self.inflight = vec![None; slots];
        self.free = (0..slots as u16).rev().collect();
        Ok(())
    }

    pub fn sq_iova(&self) -> u64 {
        self.sq.iova()
    }
    pub fn cq_iova(&self) -> u64 {
        self.cq.iova()
    }
    pub fn outstanding(&self) -> usize {
        self.inflight.len() - self.free.len()
    }
    /// Maximum commands in flight (one ring slot always stays empty).
    pub fn capacity(&self) -> usize {
        self.inflight.len()
    }

    /// Reserves a command id; `None` when the queue is full.
    pub fn alloc_cid(&mut self) -> Option<u16> {
        self.free.pop()
    }

    /// Returns an unused reserved id.
    pub fn release_cid(&mut self, cid: u16) {
        if self
            .inflight
            .get(usize::from(cid))
            .is_some_and(|s| s.is_none())
        {
            self.free.push(cid);
        }
    }

    /// The PRP list buffer and page range reserved for `cid`.
    pub fn prp_list_region(&self, cid: u16) -> Option<(&B, usize, usize)> {
        self.prp_lists.as_ref().map(|b| {
            (
                b,
                usize::from(cid) * self.list_pages_per_slot * PAGE_SIZE,
                self.list_pages_per_slot,
            )
        })
    }

    /// Writes `sqe` with command id `cid` at the tail and rings the doorbell.
    pub fn submit<R: RegisterIo>(
        &mut self,
        regs: &R,
        mut sqe: Sqe,
        cid: u16,
        info: Inflight,
    ) -> Result<()> {
        let slot = self
            .inflight
            .get_mut(usize::from(cid))
            .ok_or_else(|| Error::InvalidArgument(format!("command id {cid} out of range")))?;
        *slot = Some(info);
        sqe.set_cid(cid);
        self.sq
            .write_bytes(usize::from(self.sq_tail) * 64, &sqe.to_bytes())?;
        self.sq_tail = (self.sq_tail + 1) % self.size;
        regs.write32(self.sq_db, u32::from(self.sq_tail));
        Ok(())
    }

    /// Consumes one completion if the entry at the head carries the current phase.
    pub fn poll<R: RegisterIo>(&mut self, regs: &R) -> Result<Option<Completion>> {
        let off = usize::from(self.cq_head) * 16;
        let dw3 = self.cq.read_u32(off + 12)?;
        if (dw3 & (1 << 16) != 0) != self.phase {
            return Ok(None);
        }
        let mut raw = [0u8; 16];
        self.cq.read_bytes(off, &mut raw)?;
        let cqe = Cqe::from_bytes(&raw);
        self.cq_head += 1;
        if self.cq_head == self.size {
            self.cq_head = 0;
            self.phase = !self.phase;
        }
        regs.write32(self.cq_db, u32::from(self.cq_head));
        let taken = self
            .inflight
            .get_mut(usize::from(cqe.cid))
            .and_then(|s| s.take());
        match taken {
            Some(info) => {
                self.free.push(cqe.cid);
                Ok(Some(Completion {
                    cid: cqe.cid,
                    opcode: info.opcode,
                    result: cqe.result,
                    status: cqe.status(),
                    abort_sent: info.abort_sent,
                }))
            }
            None => Err(Error::UnexpectedCompletion {
                qid: self.qid,
                cid: cqe.cid,
            }),
        }
    }

    /// Records that an Abort for `cid` completed; its own completion is awaited until `grace`.
    /// The command id stays reserved until that completion is consumed (or the queue reset).
    pub fn mark_abort_sent(&mut self, cid: u16, grace: Instant) {
        if let Some(Some(f)) = self.inflight.get_mut(usize::from(cid)) {
            f.abort_sent = true;
            f.deadline = grace;
        }
    }

    /// The first in-flight command whose deadline has passed.
    pub fn expired(&self, now: Instant) -> Option<(u16, Inflight)> {
        self.inflight
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.filter(|f| f.deadline <= now).map(|f| (i as u16, f)))
    }
}
