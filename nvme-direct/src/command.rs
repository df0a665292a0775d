//! Submission / completion queue entry encodings and Identify data decoding.
#![cfg_attr(not(feature = "emulator"), allow(dead_code))] // the emulator decodes what the driver encodes

use crate::error::NvmeStatus;

/// Admin opcode: Delete I/O Submission Queue.
pub const ADMIN_DELETE_SQ: u8 = 0x00;
/// Admin opcode: Create I/O Submission Queue.
pub const ADMIN_CREATE_SQ: u8 = 0x01;
/// Admin opcode: Delete I/O Completion Queue.
pub const ADMIN_DELETE_CQ: u8 = 0x04;
/// Admin opcode: Create I/O Completion Queue.
pub const ADMIN_CREATE_CQ: u8 = 0x05;
/// Admin opcode: Identify.
pub const ADMIN_IDENTIFY: u8 = 0x06;
/// Admin opcode: Abort.
pub const ADMIN_ABORT: u8 = 0x08;
/// Admin opcode: Set Features.
pub const ADMIN_SET_FEATURES: u8 = 0x09;
/// Feature id: Number of Queues.
pub const FEATURE_NUMBER_OF_QUEUES: u32 = 0x07;
/// NVM opcode: Flush.
pub const NVM_FLUSH: u8 = 0x00;
/// NVM opcode: Write.
pub const NVM_WRITE: u8 = 0x01;
/// NVM opcode: Read.
pub const NVM_READ: u8 = 0x02;

/// A 64-byte submission queue entry as sixteen dwords.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sqe(pub [u32; 16]);

impl Sqe {
    /// A command with `opcode` and namespace `nsid` (command id filled at submission).
    pub fn new(opcode: u8, nsid: u32) -> Self {
        let mut d = [0u32; 16];
        d[0] = u32::from(opcode);
        d[1] = nsid;
        Self(d)
    }
    /// Opcode (CDW0 bits 0..7).
    pub fn opcode(&self) -> u8 {
        self.0[0] as u8
    }
    /// Command id (CDW0 bits 16..31).
    pub fn cid(&self) -> u16 {
        (self.0[0] >> 16) as u16
    }
    /// Sets the command id.
    pub fn set_cid(&mut self, cid: u16) {
        self.0[0] = (self.0[0] & 0xffff) | (u32::from(cid) << 16);
    }
    /// Namespace id.
    pub fn nsid(&self) -> u32 {
        self.0[1]
    }
    /// PRP entry 1.
    pub fn prp1(&self) -> u64 {
        u64::from(self.0[6]) | (u64::from(self.0[7]) << 32)
    }
    /// PRP entry 2.
    pub fn prp2(&self) -> u64 {
        u64::from(self.0[8]) | (u64::from(self.0[9]) << 32)
    }
    /// Sets both PRP entries.
    pub fn set_prps(&mut self, prp1: u64, prp2: u64) {
        self.0[6] = prp1 as u32;
        self.0[7] = (prp1 >> 32) as u32;
        self.0[8] = prp2 as u32;
        self.0[9] = (prp2 >> 32) as u32;
    }
    /// Command dword `n` (10..=15).
    pub fn cdw(&self, n: usize) -> u32 {
        self.0.get(n).copied().unwrap_or(0)
    }
    /// Sets command dword `n` (ignored outside 0..16).
    pub fn with_cdw(mut self, n: usize, v: u32) -> Self {
        if let Some(d) = self.0.get_mut(n) {
            *d = v;
        }
        self
    }
    /// Read or Write of `nlb` blocks (1..=65536) at `slba`.
    pub fn rw(opcode: u8, nsid: u32, slba: u64, nlb: u32) -> Self {
        Self::new(opcode, nsid)
            .with_cdw(10, slba as u32)
            .with_cdw(11, (slba >> 32) as u32)
            .with_cdw(12, nlb.saturating_sub(1) & 0xffff)
    }
    /// Little-endian bytes.
    pub fn to_bytes(self) -> [u8; 64] {
        let mut b = [0u8; 64];
        for (chunk, d) in b.chunks_exact_mut(4).zip(self.0.iter()) {
            chunk.copy_from_slice(&d.to_le_bytes());
        }
        b
    }
    /// From little-endian bytes.
    pub fn from_bytes(b: &[u8; 64]) -> Self {
        let mut d = [0u32; 16];
        for (v, chunk) in d.iter_mut().zip(b.chunks_exact(4)) {
            *v = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Self(d)
    }
}

/// A 16-byte completion queue entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cqe {
    /// Command specific result (DW0).
    pub result: u32,
    /// SQ head pointer reported by the controller.
    pub sq_head: u16,
    /// SQ id the command came from.
    pub sq_id: u16,
    /// Command id.
    pub cid: u16,
    /// Phase tag.
    pub phase: bool,
    /// Raw 15-bit status field.
    pub status: u16,
}

impl Cqe {
    /// Decoded status.
    pub fn status(&self) -> NvmeStatus {
        NvmeStatus::from_field(self.status)
    }
    /// Encodes to 16 little-endian bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.result.to_le_bytes());
        let dw2 = u32::from(self.sq_head) | (u32::from(self.sq_id) << 16);
        b[8..12].copy_from_slice(&dw2.to_le_bytes());
        let dw3 = u32::from(self.cid)
            | (u32::from(self.phase) << 16)
            | (u32::from(self.status & 0x7fff) << 17);
        b[12..16].copy_from_slice(&dw3.to_le_bytes());
        b
    }
    /// Decodes 16 little-endian bytes.
    pub fn from_bytes(b: &[u8; 16]) -> Self {
        let dw = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let (dw0, dw2, dw3) = (dw(0), dw(8), dw(12));
        Self {
            result: dw0,
            sq_head: dw2 as u16,
            sq_id: (dw2 >> 16) as u16,
            cid: dw3 as u16,
            phase: dw3 & (1 << 16) != 0,
            status: (dw3 >> 17) as u16,
        }
    }
}

/// What the driver uses from Identify Controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerIdentity {
    /// PCI vendor id.
    pub vendor_id: u16,
    /// Serial number.
    pub serial: String,
    /// Model number.
    pub model: String,
    /// Firmware revision.
    pub firmware: String,
    /// Maximum data transfer size as a power of two of the minimum page size (0 = no limit).
    pub mdts: u8,
    /// Number of namespaces.
    pub namespace_count: u32,
}

fn ascii_field(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches([' ', '\0'])
        .trim()
        .to_string()
}

impl ControllerIdentity {
    /// Parses the 4096-byte Identify Controller data structure.
    pub fn parse(d: &[u8; 4096]) -> Self {
        Self {
            vendor_id: u16::from_le_bytes([d[0], d[1]]),
            serial: ascii_field(&d[4..24]),
            model: ascii_field(&d[24..64]),
            firmware: ascii_field(&d[64..72]),
            mdts: d[77],
            namespace_count: u32::from_le_bytes([d[516], d[517], d[518], d[519]]),
        }
    }
}

/// What the driver uses from Identify Namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceIdentity {
    /// Namespace id.
    pub nsid: u32,
    /// Size in logical blocks.
    pub size_blocks: u64,
    /// Capacity in logical blocks.
    pub capacity_blocks: u64,
    /// Index of the formatted LBA format.
    pub lba_format_index: u8,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Metadata bytes per block (must be 0 for this driver's reads).
    pub metadata_size: u16,
}

impl NamespaceIdentity {
    /// Parses the 4096-byte Identify Namespace data structure. `None` when the namespace is
    /// inactive (all zero) or the LBA format is unusable.
    pub fn parse(nsid: u32, d: &[u8; 4096]) -> Option<Self> {
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&d[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let size_blocks = u64_at(0);
        let nlbaf = d[25];
        // FLBAS bits 0..3 select the format (bits 5..6 extend it beyond 16; not supported).
        let idx = d[26] & 0xf;
        if size_blocks == 0 || idx > nlbaf {
            return None;
        }
        let off = 128 + 4 * usize::from(idx);
        let lbaf = u32::from_le_bytes([d[off], d[off + 1], d[off + 2], d[off + 3]]);
        let lbads = (lbaf >> 16) & 0xff;
        if !(9..=16).contains(&lbads) {
            return None;
        }
        Some(Self {
            nsid,
            size_blocks,
            capacity_blocks: u64_at(8),
            lba_format_index: idx,
            block_size: 1 << lbads,
            metadata_size: lbaf as u16,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cqe_dw3_layout_matches_spec() {
        // DW3: CID 0..15, P bit 16, SF bits 17..31 (SC 17..24, SCT 25..27, M 30, DNR 31).
        let mut b = [0u8; 16];
        let dw3: u32 = 0x1234 | (1 << 16) | (0x81 << 17) | (2 << 25) | (1 << 30) | (1 << 31);
        b[12..16].copy_from_slice(&dw3.to_le_bytes());
        let c = Cqe::from_bytes(&b);
        assert_eq!(c.cid, 0x1234);
        assert!(c.phase);
        let s = c.status();
        assert_eq!((s.sct, s.sc, s.more, s.dnr), (2, 0x81, true, true));
        assert_eq!(c.to_bytes(), b);
    }

    #[test]
    fn rw_encodes_zero_based_count() {
        let s = Sqe::rw(NVM_READ, 1, 0x1_0000_0002, 65536);
        assert_eq!(s.cdw(10), 2);
        assert_eq!(s.cdw(11), 1);
        assert_eq!(s.cdw(12), 0xffff);
        assert_eq!(Sqe::from_bytes(&s.to_bytes()), s);
    }
}
