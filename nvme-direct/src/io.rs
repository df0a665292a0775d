//! Block reads and writes: splitting, PRPs, deep queues, timeouts and error recovery, either
//! through the [`Controller`] or through per-thread [`IoQueue`] handles.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::admin::AbortReply;
use crate::command::{NamespaceIdentity, Sqe, NVM_READ, NVM_WRITE};
use crate::controller::{Controller, RecoveryCounters};
use crate::dma::{check_range, DmaBuffer, DmaMemory, RegisterIo};
use crate::error::{Error, Result};
use crate::queue::{Inflight, QueuePair};
use crate::regs::{CC, CC_EN, CSTS, CSTS_CFS, CSTS_RDY};

/// Generic status code "Command Abort Requested" (completion of an aborted command).
const SC_ABORT_REQUESTED: u8 = 0x07;

/// Largest block count one Read/Write carries (NLB is a 16-bit zero-based field).
pub const MAX_BLOCKS_PER_COMMAND: u64 = 65536;

/// A range of logical blocks.
#[derive(Debug, Clone, Copy)]
pub struct BlockRange {
    /// First logical block.
    pub lba: u64,
    /// Number of blocks.
    pub blocks: u64,
}

/// How a transfer ended when it did not succeed.
enum Failure {
    /// Nothing is in flight any more: a plain error.
    Done(Error),
    /// Commands may still be in flight: the controller must be disabled before returning.
    NeedsReset(Error),
}

/// Sends an Abort for a command id of the queue being run (see [`crate::admin::abort`]).
type AbortFn<'f> = dyn FnMut(u16) -> Result<AbortReply> + 'f;

/// Parameters of one transfer shared by the controller and the queue handles.
struct Plan<'a> {
    opcode: u8,
    ns: &'a NamespaceIdentity,
    range: BlockRange,
    offset: usize,
    depth: usize,
    per_cmd: u64,
    timeout: Duration,
    abort_timeout: Duration,
}

fn blocks_per_command(max_transfer: usize, ns: &NamespaceIdentity) -> u64 {
    let by_bytes = (max_transfer / (ns.block_size as usize).max(1)).max(1) as u64;
    by_bytes.min(MAX_BLOCKS_PER_COMMAND)
}

fn validate(
    ns: &NamespaceIdentity,
    range: BlockRange,
    buf_len: usize,
    offset: usize,
) -> Result<()> {
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
    let bytes = range
        .blocks
        .checked_mul(u64::from(ns.block_size))
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| Error::InvalidArgument("transfer size overflows".into()))?;
    check_range(buf_len, offset, bytes)?;
    if offset % 4 != 0 {
        return Err(Error::BufferRange(format!(
            "buffer offset {offset} is not a multiple of 4 (NVMe PRP rule)"
        )));
    }
    Ok(())
}

/// Submits and reaps the commands of one transfer on one queue pair.
///
/// A command past its deadline is aborted with `abort` (NVMe Abort on the admin queue); its
/// command id stays reserved, and the transfer keeps reaping, until the command's own
/// completion arrives: "Command Abort Requested" gives [`Error::Aborted`] (queue usable, no
/// reset), a normal completion counts as success. Only when the Abort itself times out, or the
/// command does not complete within `abort_timeout` after it, is a reset needed.
fn run<R: RegisterIo, B: DmaBuffer, D: DmaBuffer>(
    regs: &R,
    q: &mut QueuePair<B>,
    p: &Plan<'_>,
    buf: &D,
    abort: &mut AbortFn<'_>,
) -> std::result::Result<(), Failure> {
    let bs = u64::from(p.ns.block_size);
    let depth = p.depth.clamp(1, q.capacity());
    let mut next_block = 0u64;
    let mut first_error: Option<Error> = None;
    let mut idle = 0u32;
    let qid = q.qid;
    loop {
        while first_error.is_none() && next_block < p.range.blocks && q.outstanding() < depth {
            let Some(cid) = q.alloc_cid() else { break };
            let n = p.per_cmd.min(p.range.blocks - next_block);
            let addr = buf.iova() + (p.offset as u64 + next_block * bs);
            let len = (n * bs) as usize;
            let prps = match q.prp_list_region(cid) {
                Some((list, off, pages)) => crate::prp::build(addr, len, list, off, pages),
                None => crate::prp::build(addr, len, buf, 0, 0),
            };
            let (prp1, prp2) = match prps {
                Ok(v) => v,
                Err(e) => {
                    q.release_cid(cid);
                    first_error = Some(e);
                    break;
                }
            };
            let mut sqe = Sqe::rw(p.opcode, p.ns.nsid, p.range.lba + next_block, n as u32);
            sqe.set_prps(prp1, prp2);
            let info = Inflight::new(p.opcode, Instant::now() + p.timeout);
            q.submit(regs, sqe, cid, info)
                .map_err(Failure::NeedsReset)?;
            next_block += n;
        }
        if q.outstanding() == 0 {
            break;
        }
        match q.poll(regs) {
            Ok(Some(c)) => {
                idle = 0;
                if !c.status.is_success() && first_error.is_none() {
                    first_error = Some(
                        if c.abort_sent && c.status.sct == 0 && c.status.sc == SC_ABORT_REQUESTED {
                            Error::Aborted {
                                opcode: c.opcode,
                                qid,
                                cid: c.cid,
                                timeout: p.timeout,
                            }
                        } else {
                            Error::Status {
                                opcode: c.opcode,
                                qid,
                                status: c.status,
                            }
                        },
                    );
                }
                continue;
            }
            Ok(None) => {}
            // Wrong command id or unreadable ring: the queue state is not trustworthy.
            Err(e) => return Err(Failure::NeedsReset(e)),
        }
        idle += 1;
        if idle % 1024 == 0 {
            let csts = regs.read32(CSTS);
            if csts == u32::MAX {
                return Err(Failure::NeedsReset(Error::DeviceGone { offset: CSTS }));
            }
            if csts & CSTS_CFS != 0 {
                return Err(Failure::NeedsReset(Error::ControllerFatal));
            }
        }
        if idle > 4096 {
            std::thread::yield_now();
        }
        // Scanning every slot is O(queue size): do it only now and then while idle.
        if idle % 64 != 0 {
            continue;
        }
        if let Some((cid, info)) = q.expired(Instant::now()) {
            let timed_out = Error::Timeout {
                opcode: info.opcode,
                qid,
                cid,
                timeout: p.timeout,
            };
            if info.abort_sent {
                // Aborted (or not) but still no completion after the grace period.
                return Err(Failure::NeedsReset(timed_out));
            }
            match abort(cid) {
                // Either way the command's own completion is awaited (its id stays reserved):
                // an aborted command still posts one, a command the controller could not
                // abort may yet complete normally.
                Ok(AbortReply::Aborted | AbortReply::NotAborted) => {
                    q.mark_abort_sent(cid, Instant::now() + p.abort_timeout);
                }
                // The Abort itself did not complete: only a reset can end the command.
                Err(_) => return Err(Failure::NeedsReset(timed_out)),
            }
        }
    }
    first_error.map_or(Ok(()), |e| Err(Failure::Done(e)))
}

impl<R: RegisterIo, M: DmaMemory> Controller<R, M> {
    /// Reads `range` of namespace `ns` into `buf` at byte `offset` (a multiple of 4), using I/O
    /// queue `queue` (0-based index) with up to `queue_depth` commands in flight.
    ///
    /// `buf` is borrowed mutably until every command is complete (or the controller has been
    /// disabled, which stops all DMA), so the device can never write it after this returns.
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
        blocks_per_command(self.max_transfer, ns)
    }

    /// One handle per I/O queue pair, each usable from its own thread (e.g. with
    /// `std::thread::scope`). A handle that hits a timeout or a fatal error disables the
    /// controller (stopping all DMA) before returning; the controller then resets itself on
    /// its next use.
    pub fn io_queues(&mut self) -> Vec<IoQueue<'_, R, M::Buffer>> {
        let (max_transfer, timeout, abort_timeout, ready_timeout) = (
            self.max_transfer,
            self.config.command_timeout,
            self.config.abort_timeout,
            self.cap.timeout,
        );
        let regs = &self.regs;
        let flag = &self.needs_reset;
        let admin = &self.admin;
        let recovery = &self.recovery;
        self.io
            .iter_mut()
            .map(|q| IoQueue {
                regs,
                q,
                admin,
                max_transfer,
                timeout,
                abort_timeout,
                ready_timeout,
                needs_reset: flag,
                recovery,
            })
            .collect()
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
        self.reset_if_needed()?;
        if queue >= self.io.len() {
            return Err(Error::InvalidArgument(format!(
                "I/O queue {queue} does not exist ({} created)",
                self.io.len()
            )));
        }
        validate(ns, range, buf.len(), offset)?;
        let plan = Plan {
            opcode,
            ns,
            range,
            offset,
            depth: queue_depth,
            per_cmd: self.blocks_per_command(ns),
            timeout: self.config.command_timeout,
            abort_timeout: self.config.abort_timeout,
        };
        let regs = &self.regs;
        let admin = self.admin.get_mut().unwrap_or_else(|p| p.into_inner());
        let q = &mut self.io[queue];
        let qid = q.qid;
        let aborts = &self.recovery.aborts_sent;
        let mut abort = |cid: u16| {
            aborts.fetch_add(1, Ordering::Relaxed);
            crate::admin::abort(regs, admin, qid, cid, plan.abort_timeout)
        };
        let outcome = run(regs, q, &plan, buf, &mut abort);
        match outcome {
            Ok(()) => Ok(()),
            Err(Failure::Done(e)) => Err(e),
            Err(Failure::NeedsReset(e)) => {
                // The reset disables the controller first, which stops DMA into `buf`;
                // a failing reset is reported on the next call.
                if self.reset().is_err() {
                    self.needs_reset.store(true, Ordering::SeqCst);
                }
                Err(e)
            }
        }
    }
}

/// One I/O queue pair, borrowed from the [`Controller`] for use on one thread.
pub struct IoQueue<'a, R, B> {
    regs: &'a R,
    q: &'a mut QueuePair<B>,
    admin: &'a Mutex<QueuePair<B>>,
    max_transfer: usize,
    timeout: Duration,
    abort_timeout: Duration,
    ready_timeout: Duration,
    needs_reset: &'a AtomicBool,
    recovery: &'a RecoveryCounters,
}

impl<R: RegisterIo, B: DmaBuffer> IoQueue<'_, R, B> {
    /// The NVMe queue id (1-based).
    pub fn qid(&self) -> u16 {
        self.q.qid
    }

    /// Reads like [`Controller::read`] on this queue.
    pub fn read<D: DmaBuffer>(
        &mut self,
        ns: &NamespaceIdentity,
        range: BlockRange,
        buf: &mut D,
        offset: usize,
        queue_depth: usize,
    ) -> Result<()> {
        self.transfer(NVM_READ, ns, range, buf, offset, queue_depth)
    }

    /// Writes like [`Controller::write`] on this queue.
    pub fn write<D: DmaBuffer>(
        &mut self,
        ns: &NamespaceIdentity,
        range: BlockRange,
        buf: &mut D,
        offset: usize,
        queue_depth: usize,
    ) -> Result<()> {
        self.transfer(NVM_WRITE, ns, range, buf, offset, queue_depth)
    }

    fn transfer<D: DmaBuffer>(
        &mut self,
        opcode: u8,
        ns: &NamespaceIdentity,
        range: BlockRange,
        buf: &mut D,
        offset: usize,
        queue_depth: usize,
    ) -> Result<()> {
        if self.needs_reset.load(Ordering::SeqCst) {
            return Err(Error::InvalidArgument(
                "the controller was disabled after an error on another queue; drop the handles and reset".into(),
            ));
        }
        validate(ns, range, buf.len(), offset)?;
        let plan = Plan {
            opcode,
            ns,
            range,
            offset,
            depth: queue_depth,
            per_cmd: blocks_per_command(self.max_transfer, ns),
            timeout: self.timeout,
            abort_timeout: self.abort_timeout,
        };
        let (regs, admin, qid) = (self.regs, self.admin, self.q.qid);
        let aborts = &self.recovery.aborts_sent;
        // The admin queue is shared with the other handles: one Abort at a time.
        let mut abort = |cid: u16| {
            aborts.fetch_add(1, Ordering::Relaxed);
            let mut a = admin.lock().unwrap_or_else(|p| p.into_inner());
            crate::admin::abort(regs, &mut a, qid, cid, plan.abort_timeout)
        };
        match run(regs, self.q, &plan, buf, &mut abort) {
            Ok(()) => Ok(()),
            Err(Failure::Done(e)) => Err(e),
            Err(Failure::NeedsReset(e)) => {
                // Other queues are in use: no reset here. Disabling stops all DMA (including
                // into `buf`); the controller resets itself on its next use.
                self.needs_reset.store(true, Ordering::SeqCst);
                let cc = self.regs.read32(CC);
                if cc != u32::MAX {
                    self.regs.write32(CC, cc & !CC_EN);
                    let deadline = Instant::now() + self.ready_timeout;
                    while self.regs.read32(CSTS) & CSTS_RDY != 0 && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                Err(e)
            }
        }
    }
}
