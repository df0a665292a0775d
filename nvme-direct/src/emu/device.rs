//! The emulated controller's state machine (registers, queues, commands, faults).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::{EmuConfig, Fault};
use crate::command::{Cqe, Sqe};
use crate::error::{Error, NvmeStatus, Result};
use crate::regs::{self, PAGE_SIZE};

const PAGE: u64 = PAGE_SIZE as u64;

/// Counters of processed work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmuStats {
    /// Admin commands processed.
    pub admin_commands: u64,
    /// I/O commands processed.
    pub io_commands: u64,
    /// Largest number of I/O commands submitted but not yet completed, seen at a doorbell.
    pub max_outstanding: u64,
    /// Controller enables (CC.EN 0 -> 1).
    pub enables: u64,
    /// Largest PRP list chain length (list pages) walked by one command.
    pub max_prp_list_pages: u64,
    /// Completion queue wraps (phase flips).
    pub phase_flips: u64,
    /// Abort commands received.
    pub aborts: u64,
    /// Commands ended by an Abort, as (submission queue id, command id).
    pub aborted: Vec<(u16, u16)>,
    /// Commands submitted with a command id that the controller still held for an earlier
    /// command of the same queue (a driver bug: the id was released too early).
    pub cid_conflicts: u64,
    /// Device accesses to addresses that are not mapped (an IOMMU fault on real hardware;
    /// e.g. DMA into a buffer the driver already released).
    pub unmapped_dma: u64,
}

/// What a held (not yet completed) I/O command is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeldKind {
    /// Until an Abort ends it.
    Stall,
    /// Until an Abort; the aborted completion is then posted this much later.
    AbortLate(Duration),
    /// Forever; an Abort naming it is swallowed.
    IgnoreAbort,
    /// Until `due`, then it executes normally.
    Delayed,
    /// Aborted; its completion is posted at `due`.
    AbortedPending,
}

/// An I/O command fetched by the controller but not completed.
struct Held {
    sqid: u16,
    cqid: u16,
    head: u16,
    sqe: Sqe,
    kind: HeldKind,
    due: Option<Instant>,
}

struct Sq {
    base: u64,
    size: u16,
    head: u16,
    tail: u16,
    cqid: u16,
}

struct Cq {
    base: u64,
    size: u16,
    tail: u16,
    head: u16,
    phase: bool,
}

pub(super) struct State {
    cfg: EmuConfig,
    cc: u32,
    csts: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    ready_countdown: u32,
    all_ones: bool,
    mem: BTreeMap<u64, Vec<u8>>,
    next_iova: u64,
    sqs: HashMap<u16, Sq>,
    cqs: HashMap<u16, Cq>,
    overflow: VecDeque<(u16, Cqe)>,
    late: Vec<(u32, u16, Cqe)>,
    held: Vec<Held>,
    /// (SQ id, command id) of every I/O command fetched and not yet completed.
    device_cids: HashSet<(u16, u16)>,
    faults: Vec<(u64, Fault)>,
    io_seen: u64,
    outstanding: u64,
    image: Vec<u8>,
    stats: EmuStats,
}

type Status = (u8, u8);
const OK: Status = (0, 0);
/// Generic status "Command Abort Requested".
pub(super) const ABORT_REQUESTED: Status = (0, 0x07);

/// (SQ id, command id) named by an Abort command's CDW10.
pub(super) fn abort_target(sqe: &Sqe) -> (u16, u16) {
    (sqe.cdw(10) as u16, (sqe.cdw(10) >> 16) as u16)
}

impl State {
    pub fn new(cfg: EmuConfig, mut image: Vec<u8>) -> Self {
        let bs = cfg.block_size.max(512) as usize;
        image.truncate(image.len() / bs * bs);
        Self {
            next_iova: cfg.iova_base,
            cfg,
            cc: 0,
            csts: 0,
            aqa: 0,
            asq: 0,
            acq: 0,
            ready_countdown: 0,
            all_ones: false,
            mem: BTreeMap::new(),
            sqs: HashMap::new(),
            cqs: HashMap::new(),
            overflow: VecDeque::new(),
            late: Vec::new(),
            held: Vec::new(),
            device_cids: HashSet::new(),
            faults: Vec::new(),
            io_seen: 0,
            outstanding: 0,
            image,
            stats: EmuStats::default(),
        }
    }

    pub fn image(&self) -> &[u8] {
        &self.image
    }
    pub fn stats(&self) -> EmuStats {
        self.stats.clone()
    }
    pub fn inject(&mut self, skip: u64, fault: Fault) {
        self.faults.push((self.io_seen + skip, fault));
    }

    // ---- memory (IOVA space) ----

    pub fn map(&mut self, len: usize) -> Result<u64> {
        let iova = self.next_iova;
        // Leave an unmapped guard page between buffers so overruns are caught.
        self.next_iova = iova
            .checked_add(len as u64 + PAGE)
            .ok_or_else(|| Error::Dma("emulated IOVA space exhausted".into()))?;
        self.mem.insert(iova, vec![0; len]);
        Ok(iova)
    }
    pub fn unmap(&mut self, iova: u64) {
        self.mem.remove(&iova);
    }
    fn region(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        let (base, v) = self.mem.range_mut(..=addr).next_back()?;
        let start = usize::try_from(addr - base).ok()?;
        v.get_mut(start..start.checked_add(len)?)
    }
    pub fn host_read(&mut self, addr: u64, out: &mut [u8]) -> Result<()> {
        let r = self
            .region(addr, out.len())
            .ok_or_else(|| Error::BufferRange("unmapped".into()))?;
        out.copy_from_slice(r);
        Ok(())
    }
    pub fn host_write(&mut self, addr: u64, data: &[u8]) -> Result<()> {
        let r = self
            .region(addr, data.len())
            .ok_or_else(|| Error::BufferRange("unmapped".into()))?;
        r.copy_from_slice(data);
        Ok(())
    }

    /// A driver memory read: late completions come closer.
    pub fn tick(&mut self) {
        if self.cfg.deferred {
            let mut ids: Vec<u16> = self
                .sqs
                .iter()
                .filter(|(_, q)| q.head != q.tail)
                .map(|(i, _)| *i)
                .collect();
            ids.sort_unstable();
            for qid in ids {
                self.process_sq(qid);
            }
        }
        if !self.held.is_empty() {
            self.run_due_held();
        }
        if self.late.is_empty() {
            return;
        }
        let mut due = Vec::new();
        self.late.retain_mut(|(t, q, c)| {
            *t = t.saturating_sub(1);
            if *t == 0 {
                due.push((*q, *c));
                false
            } else {
                true
            }
        });
        for (q, c) in due {
            self.post(q, c);
        }
    }

    // ---- registers ----

    pub fn read_reg(&mut self, off: usize) -> u32 {
        if self.all_ones {
            return u32::MAX;
        }
        let cap: u64 = u64::from(self.cfg.mqes)
            | (1 << 16)
            | (u64::from(self.cfg.timeout_units) << 24)
            | (u64::from(self.cfg.dstrd & 0xf) << 32)
            | (1 << 37);
        match off {
            regs::CAP => cap as u32,
            0x04 => (cap >> 32) as u32,
            regs::VS => 0x0001_0400,
            regs::CC => self.cc,
            regs::CSTS => {
                if self.ready_countdown > 0 {
                    self.ready_countdown -= 1;
                    if self.ready_countdown == 0 && self.cc & regs::CC_EN != 0 {
                        self.csts |= regs::CSTS_RDY;
                    }
                }
                self.csts
            }
            regs::AQA => self.aqa,
            regs::ASQ => self.asq as u32,
            0x2c => (self.asq >> 32) as u32,
            regs::ACQ => self.acq as u32,
            0x34 => (self.acq >> 32) as u32,
            _ => 0,
        }
    }

    pub fn write_reg(&mut self, off: usize, v: u32) {
        match off {
            regs::CC => self.write_cc(v),
            regs::AQA => self.aqa = v,
            regs::ASQ => self.asq = (self.asq & !0xffff_ffff) | u64::from(v),
            0x2c => self.asq = (self.asq & 0xffff_ffff) | (u64::from(v) << 32),
            regs::ACQ => self.acq = (self.acq & !0xffff_ffff) | u64::from(v),
            0x34 => self.acq = (self.acq & 0xffff_ffff) | (u64::from(v) << 32),
            o if o >= regs::DOORBELL_BASE => {
                let stride = 4usize << (self.cfg.dstrd & 0xf);
                let idx = (o - regs::DOORBELL_BASE) / stride;
                let Ok(qid) = u16::try_from(idx / 2) else {
                    return;
                };
                if self.csts & regs::CSTS_RDY == 0 || self.csts & regs::CSTS_CFS != 0 {
                    return;
                }
                if idx % 2 == 0 {
                    self.sq_doorbell(qid, v as u16);
                } else {
                    self.cq_doorbell(qid, v as u16);
                }
            }
            _ => {}
        }
    }

    fn write_cc(&mut self, v: u32) {
        let was = self.cc & regs::CC_EN != 0;
        let now = v & regs::CC_EN != 0;
        self.cc = v;
        if was && !now {
            self.sqs.clear();
            self.cqs.clear();
            self.overflow.clear();
            self.late.clear();
            self.held.clear();
            self.device_cids.clear();
            self.outstanding = 0;
            self.csts = 0;
        } else if !was && now {
            self.stats.enables += 1;
            let asqs = (self.aqa & 0xfff) as u16 + 1;
            let acqs = ((self.aqa >> 16) & 0xfff) as u16 + 1;
            self.sqs.insert(
                0,
                Sq {
                    base: self.asq,
                    size: asqs,
                    head: 0,
                    tail: 0,
                    cqid: 0,
                },
            );
            self.cqs.insert(
                0,
                Cq {
                    base: self.acq,
                    size: acqs,
                    tail: 0,
                    head: 0,
                    phase: true,
                },
            );
            self.ready_countdown = self.cfg.ready_delay_reads;
            if self.ready_countdown == 0 {
                self.csts |= regs::CSTS_RDY;
            }
        }
        if v & regs::CC_SHN_MASK != 0 {
            self.csts = (self.csts & !regs::CSTS_SHST_MASK) | regs::CSTS_SHST_COMPLETE;
        }
    }

    fn cq_doorbell(&mut self, qid: u16, head: u16) {
        if let Some(cq) = self.cqs.get_mut(&qid) {
            cq.head = head % cq.size;
        }
        let pending: Vec<_> = self.overflow.drain(..).collect();
        for (q, c) in pending {
            self.post(q, c);
        }
    }

    fn sq_doorbell(&mut self, qid: u16, tail: u16) {
        let Some(sq) = self.sqs.get_mut(&qid) else {
            return;
        };
        sq.tail = tail % sq.size;
        if qid != 0 {
            let pending = (sq.tail + sq.size - sq.head) % sq.size;
            self.stats.max_outstanding = self
                .stats
                .max_outstanding
                .max(self.outstanding + u64::from(pending));
        }
        if !self.cfg.deferred {
            self.process_sq(qid);
        }
    }

    fn process_sq(&mut self, qid: u16) {
        loop {
            let Some(sq) = self.sqs.get_mut(&qid) else {
                return;
            };
            if sq.head == sq.tail {
                return;
            }
            let addr = sq.base + u64::from(sq.head) * 64;
            sq.head = (sq.head + 1) % sq.size;
            let (head, cqid) = (sq.head, sq.cqid);
            let mut raw = [0u8; 64];
            if self.host_read(addr, &mut raw).is_err() {
                self.csts |= regs::CSTS_CFS;
                return;
            }
            let sqe = Sqe::from_bytes(&raw);
            let (status, result) = if qid == 0 {
                self.stats.admin_commands += 1;
                if self.abort_is_swallowed(&sqe) {
                    self.stats.aborts += 1;
                    continue;
                }
                self.admin(&sqe)
            } else {
                self.stats.io_commands += 1;
                self.outstanding += 1;
                if !self.device_cids.insert((qid, sqe.cid())) {
                    self.stats.cid_conflicts += 1;
                }
                let fault = self.take_fault();
                let hold = match fault {
                    Some(Fault::Stall) => Some((HeldKind::Stall, None)),
                    Some(Fault::StallAbortLate { after }) => {
                        Some((HeldKind::AbortLate(after), None))
                    }
                    Some(Fault::StallIgnoringAbort) => Some((HeldKind::IgnoreAbort, None)),
                    Some(Fault::Delayed { after }) => {
                        Some((HeldKind::Delayed, Some(Instant::now() + after)))
                    }
                    _ => None,
                };
                if let Some((kind, due)) = hold {
                    self.held.push(Held {
                        sqid: qid,
                        cqid,
                        head,
                        sqe,
                        kind,
                        due,
                    });
                    continue;
                }
                match fault {
                    Some(Fault::Status { sct, sc, dnr, more }) => {
                        let st = NvmeStatus {
                            sct,
                            sc,
                            dnr,
                            more,
                            crd: 0,
                        };
                        self.complete_raw(cqid, qid, head, sqe.cid(), st.to_field(), 0, None);
                        continue;
                    }
                    Some(Fault::Fatal) => {
                        self.csts |= regs::CSTS_CFS;
                        return;
                    }
                    Some(Fault::AllOnes) => {
                        self.all_ones = true;
                        return;
                    }
                    _ => {}
                }
                let r = self.io(&sqe);
                match fault {
                    Some(Fault::DropCompletion) => continue,
                    Some(Fault::LateCompletion { ticks }) => {
                        let st = NvmeStatus {
                            sct: r.0 .0,
                            sc: r.0 .1,
                            dnr: false,
                            more: false,
                            crd: 0,
                        };
                        self.complete_raw(
                            cqid,
                            qid,
                            head,
                            sqe.cid(),
                            st.to_field(),
                            r.1,
                            Some(ticks.max(1)),
                        );
                        continue;
                    }
                    Some(Fault::WrongCommandId) => {
                        self.complete_raw(cqid, qid, head, sqe.cid() ^ 0x8000, 0, 0, None);
                        continue;
                    }
                    _ => r,
                }
            };
            let st = NvmeStatus {
                sct: status.0,
                sc: status.1,
                dnr: status != OK,
                more: false,
                crd: 0,
            };
            self.complete_raw(cqid, qid, head, sqe.cid(), st.to_field(), result, None);
        }
    }

    fn take_fault(&mut self) -> Option<Fault> {
        let n = self.io_seen;
        self.io_seen += 1;
        let i = self.faults.iter().position(|(at, _)| *at == n)?;
        Some(self.faults.remove(i).1)
    }

    #[allow(clippy::too_many_arguments)]
    fn complete_raw(
        &mut self,
        cqid: u16,
        sqid: u16,
        head: u16,
        cid: u16,
        status: u16,
        result: u32,
        late: Option<u32>,
    ) {
        let cqe = Cqe {
            result,
            sq_head: head,
            sq_id: sqid,
            cid,
            phase: false,
            status,
        };
        match late {
            Some(t) => self.late.push((t, cqid, cqe)),
            None => self.post(cqid, cqe),
        }
    }

    fn post(&mut self, cqid: u16, mut cqe: Cqe) {
        let Some(cq) = self.cqs.get_mut(&cqid) else {
            return;
        };
        if (cq.tail + 1) % cq.size == cq.head {
            self.overflow.push_back((cqid, cqe));
            return;
        }
        cqe.phase = cq.phase;
        let addr = cq.base + u64::from(cq.tail) * 16;
        cq.tail += 1;
        if cq.tail == cq.size {
            cq.tail = 0;
            cq.phase = !cq.phase;
            self.stats.phase_flips += 1;
        }
        if cqe.sq_id != 0 {
            self.outstanding = self.outstanding.saturating_sub(1);
            self.device_cids.remove(&(cqe.sq_id, cqe.cid));
        }
        if self.host_write(addr, &cqe.to_bytes()).is_err() {
            self.stats.unmapped_dma += 1;
            self.csts |= regs::CSTS_CFS;
        }
    }

    /// True for an Abort naming a command that ignores Aborts: it gets no completion.
    fn abort_is_swallowed(&self, sqe: &Sqe) -> bool {
        let (sqid, cid) = abort_target(sqe);
        sqe.opcode() == crate::command::ADMIN_ABORT
            && self
                .held
                .iter()
                .any(|h| h.sqid == sqid && h.sqe.cid() == cid && h.kind == HeldKind::IgnoreAbort)
    }

    /// Executes delayed commands and posts aborted completions whose time has come.
    fn run_due_held(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.held.len() {
            if !self.held[i].due.is_some_and(|d| d <= now) {
                i += 1;
                continue;
            }
            let h = self.held.remove(i);
            let (status, result) = if h.kind == HeldKind::Delayed {
                self.io(&h.sqe)
            } else {
                (ABORT_REQUESTED, 0)
            };
            let st = NvmeStatus {
                sct: status.0,
                sc: status.1,
                dnr: false,
                more: false,
                crd: 0,
            };
            self.complete_raw(
                h.cqid,
                h.sqid,
                h.head,
                h.sqe.cid(),
                st.to_field(),
                result,
                None,
            );
        }
    }

    /// Abort of a held command: `Some((status, dw0))` when the command is held here.
    pub(super) fn abort_held(&mut self, sqid: u16, cid: u16) -> Option<(Status, u32)> {
        let i = self
            .held
            .iter()
            .position(|h| h.sqid == sqid && h.sqe.cid() == cid)?;
        match self.held[i].kind {
            HeldKind::Stall => {
                let h = self.held.remove(i);
                let st = NvmeStatus {
                    sct: ABORT_REQUESTED.0,
                    sc: ABORT_REQUESTED.1,
                    dnr: false,
                    more: false,
                    crd: 0,
                };
                self.complete_raw(h.cqid, h.sqid, h.head, cid, st.to_field(), 0, None);
                self.stats.aborted.push((sqid, cid));
                Some((OK, 0))
            }
            HeldKind::AbortLate(after) => {
                let h = &mut self.held[i];
                h.kind = HeldKind::AbortedPending;
                h.due = Some(Instant::now() + after);
                self.stats.aborted.push((sqid, cid));
                Some((OK, 0))
            }
            // Executing (or already aborted, or ignoring aborts): not aborted.
            HeldKind::Delayed | HeldKind::AbortedPending | HeldKind::IgnoreAbort => Some((OK, 1)),
        }
    }
}

mod commands;
