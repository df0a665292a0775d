//! Running one admin command to completion, and the NVMe Abort command, as free functions over
//! the admin queue so that both the [`Controller`](crate::Controller) and the per-thread
//! [`IoQueue`](crate::IoQueue) handles (which share the admin queue behind a mutex) can use them.

use std::time::{Duration, Instant};

use crate::command::{Sqe, ADMIN_ABORT};
use crate::dma::{DmaBuffer, RegisterIo};
use crate::error::{Error, Result};
use crate::queue::{Completion, Inflight, QueuePair};
use crate::regs::{CSTS, CSTS_CFS};

/// Submits `sqe` on the admin queue `q` and polls until its completion (any status) arrives,
/// at most `timeout`. CSTS is checked now and then: all ones and CFS are errors.
pub(crate) fn exec<R: RegisterIo, B: DmaBuffer>(
    regs: &R,
    q: &mut QueuePair<B>,
    sqe: Sqe,
    timeout: Duration,
) -> Result<Completion> {
    let opcode = sqe.opcode();
    let cid = q
        .alloc_cid()
        .ok_or_else(|| Error::InvalidArgument("admin queue full".into()))?;
    let deadline = Instant::now() + timeout;
    q.submit(regs, sqe, cid, Inflight::new(opcode, deadline))?;
    let mut idle = 0u32;
    loop {
        if let Some(c) = q.poll(regs)? {
            if c.cid == cid {
                return Ok(c);
            }
            // A completion of an earlier admin command that had timed out: consumed, ignored.
            continue;
        }
        idle += 1;
        if idle % 256 == 0 {
            let csts = regs.read32(CSTS);
            if csts == u32::MAX {
                return Err(Error::DeviceGone { offset: CSTS });
            }
            if csts & CSTS_CFS != 0 {
                return Err(Error::ControllerFatal);
            }
            std::thread::yield_now();
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                opcode,
                qid: 0,
                cid,
                timeout,
            });
        }
    }
}

/// What the controller answered to an Abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AbortReply {
    /// CQE DW0 bit 0 clear: the command was aborted (its own completion, with status
    /// "Command Abort Requested", follows or has already been posted).
    Aborted,
    /// DW0 bit 0 set, or the Abort failed with a status (e.g. Abort Command Limit Exceeded):
    /// the command was not aborted and may still complete normally.
    NotAborted,
}

/// Sends NVMe Abort (admin opcode 0x08, CDW10 = SQID | CID << 16) for command `cid` of
/// submission queue `sqid` and waits for the Abort's own completion, at most `timeout`.
/// `Err` only when the Abort itself did not complete (timeout) or the device failed.
pub(crate) fn abort<R: RegisterIo, B: DmaBuffer>(
    regs: &R,
    admin: &mut QueuePair<B>,
    sqid: u16,
    cid: u16,
    timeout: Duration,
) -> Result<AbortReply> {
    let sqe = Sqe::new(ADMIN_ABORT, 0).with_cdw(10, u32::from(sqid) | (u32::from(cid) << 16));
    let c = exec(regs, admin, sqe, timeout)?;
    Ok(if c.status.is_success() && c.result & 1 == 0 {
        AbortReply::Aborted
    } else {
        AbortReply::NotAborted
    })
}
