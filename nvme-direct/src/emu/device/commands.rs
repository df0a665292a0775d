//! Admin and NVM command execution of the emulated controller, with an independent PRP walker
//! written from the specification's PRP rules.

use super::{abort_target, Cq, Sq, State, Status, ABORT_REQUESTED, OK, PAGE};
use crate::command::*;

const INVALID_FIELD: Status = (0, 0x02);
const TRANSFER_ERROR: Status = (0, 0x04);
const INVALID_NS: Status = (0, 0x0b);
const INVALID_PRP_OFFSET: Status = (0, 0x13);
const LBA_OUT_OF_RANGE: Status = (0, 0x80);
const INVALID_OPCODE: Status = (0, 0x01);

impl State {
    /// Splits a transfer into (address, length) segments following PRP1/PRP2/list rules.
    fn walk_prps(&mut self, sqe: &Sqe, len: usize) -> Result<Vec<(u64, usize)>, Status> {
        let prp1 = sqe.prp1();
        if prp1 % 4 != 0 {
            return Err(INVALID_PRP_OFFSET);
        }
        let first = len.min((PAGE - prp1 % PAGE) as usize);
        let mut segs = vec![(prp1, first)];
        let mut rem = len - first;
        if rem == 0 {
            return Ok(segs);
        }
        let prp2 = sqe.prp2();
        if rem <= PAGE as usize {
            if prp2 % PAGE != 0 {
                return Err(INVALID_PRP_OFFSET);
            }
            segs.push((prp2, rem));
            return Ok(segs);
        }
        // PRP2 is a list pointer; the last entry of a list page chains to the next page
        // when more entries are needed than that page still holds.
        if prp2 % 8 != 0 {
            return Err(INVALID_PRP_OFFSET);
        }
        let mut ptr = prp2;
        let mut list_pages = 1u64;
        while rem > 0 {
            let mut e = [0u8; 8];
            if self.host_read(ptr, &mut e).is_err() {
                self.stats.unmapped_dma += 1;
                return Err(TRANSFER_ERROR);
            }
            let entry = u64::from_le_bytes(e);
            let last_slot = (ptr + 8) % PAGE == 0;
            if last_slot && rem > PAGE as usize {
                if entry % 8 != 0 {
                    return Err(INVALID_PRP_OFFSET);
                }
                ptr = entry;
                list_pages += 1;
                continue;
            }
            if entry % PAGE != 0 {
                return Err(INVALID_PRP_OFFSET);
            }
            let n = rem.min(PAGE as usize);
            segs.push((entry, n));
            rem -= n;
            ptr += 8;
        }
        self.stats.max_prp_list_pages = self.stats.max_prp_list_pages.max(list_pages);
        Ok(segs)
    }

    fn dma_out(&mut self, sqe: &Sqe, data: &[u8]) -> Status {
        let segs = match self.walk_prps(sqe, data.len()) {
            Ok(s) => s,
            Err(st) => return st,
        };
        let mut off = 0;
        for (addr, n) in segs {
            if self.host_write(addr, &data[off..off + n]).is_err() {
                self.stats.unmapped_dma += 1;
                return TRANSFER_ERROR;
            }
            off += n;
        }
        OK
    }

    fn dma_in(&mut self, sqe: &Sqe, len: usize) -> Result<Vec<u8>, Status> {
        let segs = self.walk_prps(sqe, len)?;
        let mut out = vec![0u8; len];
        let mut off = 0;
        for (addr, n) in segs {
            if self.host_read(addr, &mut out[off..off + n]).is_err() {
                self.stats.unmapped_dma += 1;
                return Err(TRANSFER_ERROR);
            }
            off += n;
        }
        Ok(out)
    }

    fn identify_data(&self, sqe: &Sqe) -> Result<[u8; 4096], Status> {
        let mut d = [0u8; 4096];
        match sqe.cdw(10) & 0xff {
            1 => {
                d[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
                let put = |d: &mut [u8; 4096], at: usize, width: usize, s: &str| {
                    let f = &mut d[at..at + width];
                    f.fill(b' ');
                    f[..s.len()].copy_from_slice(s.as_bytes());
                };
                put(&mut d, 4, 20, "EMU0001");
                put(&mut d, 24, 40, "vramless emulated NVMe");
                put(&mut d, 64, 8, "1.0");
                d[77] = self.cfg.mdts;
                d[516..520].copy_from_slice(&1u32.to_le_bytes());
            }
            0 => {
                if sqe.nsid() != 1 {
                    return Err(INVALID_NS);
                }
                let blocks = (self.image.len() / self.block_size()) as u64;
                d[0..8].copy_from_slice(&blocks.to_le_bytes());
                d[8..16].copy_from_slice(&blocks.to_le_bytes());
                d[16..24].copy_from_slice(&blocks.to_le_bytes());
                d[25] = 0; // one LBA format
                d[26] = 0; // formatted with format 0
                let lbads = self.block_size().trailing_zeros();
                d[128..132].copy_from_slice(&(lbads << 16).to_le_bytes());
            }
            _ => return Err(INVALID_FIELD),
        }
        Ok(d)
    }

    fn block_size(&self) -> usize {
        self.cfg.block_size.max(512) as usize
    }

    pub(super) fn admin(&mut self, sqe: &Sqe) -> (Status, u32) {
        let mqes = u32::from(self.cfg.mqes);
        match sqe.opcode() {
            ADMIN_IDENTIFY => match self.identify_data(sqe) {
                Ok(d) => (self.dma_out(sqe, &d), 0),
                Err(st) => (st, 0),
            },
            ADMIN_SET_FEATURES if sqe.cdw(10) & 0xff == FEATURE_NUMBER_OF_QUEUES => {
                let max = u32::from(self.cfg.max_io_queues.max(1)) - 1;
                let nsq = (sqe.cdw(11) & 0xffff).min(max);
                let ncq = (sqe.cdw(11) >> 16).min(max);
                (OK, nsq | (ncq << 16))
            }
            ADMIN_CREATE_CQ => {
                let qid = sqe.cdw(10) as u16;
                let size = (sqe.cdw(10) >> 16) + 1;
                if qid == 0 || qid > self.cfg.max_io_queues || self.cqs.contains_key(&qid) {
                    return ((1, 0x01), 0);
                }
                if size < 2 || size > mqes + 1 {
                    return ((1, 0x02), 0);
                }
                if sqe.cdw(11) & 1 == 0 || sqe.prp1() % PAGE != 0 {
                    return (INVALID_FIELD, 0);
                }
                let cq = Cq {
                    base: sqe.prp1(),
                    size: size as u16,
                    tail: 0,
                    head: 0,
                    phase: true,
                };
                self.cqs.insert(qid, cq);
                (OK, 0)
            }
            ADMIN_CREATE_SQ => {
                let qid = sqe.cdw(10) as u16;
                let size = (sqe.cdw(10) >> 16) + 1;
                let cqid = (sqe.cdw(11) >> 16) as u16;
                if !self.cqs.contains_key(&cqid) || cqid == 0 {
                    return ((1, 0x00), 0);
                }
                if qid == 0 || qid > self.cfg.max_io_queues || self.sqs.contains_key(&qid) {
                    return ((1, 0x01), 0);
                }
                if size < 2 || size > mqes + 1 {
                    return ((1, 0x02), 0);
                }
                let sq = Sq {
                    base: sqe.prp1(),
                    size: size as u16,
                    head: 0,
                    tail: 0,
                    cqid,
                };
                self.sqs.insert(qid, sq);
                (OK, 0)
            }
            ADMIN_DELETE_SQ => {
                let removed = self.sqs.remove(&(sqe.cdw(10) as u16)).is_some();
                (if removed { OK } else { (1, 0x01) }, 0)
            }
            ADMIN_DELETE_CQ => {
                let removed = self.cqs.remove(&(sqe.cdw(10) as u16)).is_some();
                (if removed { OK } else { (1, 0x01) }, 0)
            }
            ADMIN_ABORT => {
                self.stats.aborts += 1;
                let (sqid, cid) = abort_target(sqe);
                if let Some(reply) = self.abort_held(sqid, cid) {
                    return reply;
                }
                // A late completion still pending is posted at once as aborted; anything
                // else (completed, dropped, unknown) is "not aborted" (DW0 bit 0 set).
                if let Some(i) = self
                    .late
                    .iter()
                    .position(|(_, _, c)| c.sq_id == sqid && c.cid == cid)
                {
                    let (_, q, mut c) = self.late.remove(i);
                    c.status = crate::error::NvmeStatus {
                        sct: ABORT_REQUESTED.0,
                        sc: ABORT_REQUESTED.1,
                        dnr: false,
                        more: false,
                        crd: 0,
                    }
                    .to_field();
                    self.post(q, c);
                    self.stats.aborted.push((sqid, cid));
                    (OK, 0)
                } else {
                    (OK, 1)
                }
            }
            _ => (INVALID_OPCODE, 0),
        }
    }

    pub(super) fn io(&mut self, sqe: &Sqe) -> (Status, u32) {
        let op = sqe.opcode();
        if op == NVM_FLUSH {
            return (OK, 0);
        }
        if op != NVM_READ && op != NVM_WRITE {
            return (INVALID_OPCODE, 0);
        }
        if sqe.nsid() != 1 {
            return (INVALID_NS, 0);
        }
        let bs = self.block_size();
        let slba = u64::from(sqe.cdw(10)) | (u64::from(sqe.cdw(11)) << 32);
        let nlb = (sqe.cdw(12) & 0xffff) as usize + 1;
        let blocks = (self.image.len() / bs) as u64;
        if slba.checked_add(nlb as u64).map_or(true, |e| e > blocks) {
            return (LBA_OUT_OF_RANGE, 0);
        }
        let len = nlb * bs;
        if self.cfg.mdts != 0 && len > PAGE_BYTES << self.cfg.mdts {
            return (INVALID_FIELD, 0);
        }
        let start = slba as usize * bs;
        if op == NVM_READ {
            let data = self.image[start..start + len].to_vec();
            (self.dma_out(sqe, &data), 0)
        } else {
            match self.dma_in(sqe, len) {
                Ok(d) => {
                    self.image[start..start + len].copy_from_slice(&d);
                    (OK, 0)
                }
                Err(st) => (st, 0),
            }
        }
    }
}

const PAGE_BYTES: usize = 4096;
