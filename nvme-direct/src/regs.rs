//! Controller register map (NVMe base specification, section "Controller Registers").

use std::time::Duration;

/// Controller Capabilities (64-bit).
pub const CAP: usize = 0x00;
/// Version.
pub const VS: usize = 0x08;
/// Interrupt Mask Set.
pub const INTMS: usize = 0x0c;
/// Controller Configuration.
pub const CC: usize = 0x14;
/// Controller Status.
pub const CSTS: usize = 0x1c;
/// Admin Queue Attributes.
pub const AQA: usize = 0x24;
/// Admin Submission Queue base address (64-bit).
pub const ASQ: usize = 0x28;
/// Admin Completion Queue base address (64-bit).
pub const ACQ: usize = 0x30;
/// First doorbell register.
pub const DOORBELL_BASE: usize = 0x1000;

/// CC.EN.
pub const CC_EN: u32 = 1;
/// CC.SHN = normal shutdown.
pub const CC_SHN_NORMAL: u32 = 1 << 14;
/// CC.SHN field mask.
pub const CC_SHN_MASK: u32 = 3 << 14;
/// CSTS.RDY.
pub const CSTS_RDY: u32 = 1;
/// CSTS.CFS.
pub const CSTS_CFS: u32 = 1 << 1;
/// CSTS.SHST mask.
pub const CSTS_SHST_MASK: u32 = 3 << 2;
/// CSTS.SHST = shutdown complete.
pub const CSTS_SHST_COMPLETE: u32 = 2 << 2;

/// The host memory page size the driver configures (CC.MPS = 0).
pub const PAGE_SIZE: usize = 4096;

/// Decoded CAP register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Maximum queue entries supported (1-based, i.e. MQES + 1).
    pub max_queue_entries: u32,
    /// Contiguous queues required.
    pub contiguous_queues_required: bool,
    /// Worst-case time to become ready / not ready.
    pub timeout: Duration,
    /// Doorbell stride in bytes (4 << DSTRD).
    pub doorbell_stride: usize,
    /// NVM command set supported (CSS bit 0).
    pub nvm_command_set: bool,
    /// Minimum memory page size in bytes.
    pub mps_min: usize,
    /// Maximum memory page size in bytes.
    pub mps_max: usize,
    /// NVM subsystem reset supported.
    pub nssr_supported: bool,
}

impl Capabilities {
    /// Decodes a raw CAP value.
    pub fn decode(raw: u64) -> Self {
        Self {
            max_queue_entries: (raw & 0xffff) as u32 + 1,
            contiguous_queues_required: raw & (1 << 16) != 0,
            // TO is in 500 ms units; 0 is not legal, treat it as 500 ms.
            timeout: Duration::from_millis(500 * ((raw >> 24) & 0xff).max(1)),
            doorbell_stride: 4usize << ((raw >> 32) & 0xf),
            nssr_supported: raw & (1 << 36) != 0,
            nvm_command_set: raw & (1 << 37) != 0,
            mps_min: 4096usize << ((raw >> 48) & 0xf),
            mps_max: 4096usize << ((raw >> 52) & 0xf),
        }
    }
}

/// Decoded version register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// Major.
    pub major: u16,
    /// Minor.
    pub minor: u8,
    /// Tertiary.
    pub tertiary: u8,
}

impl Version {
    /// Decodes a raw VS value.
    pub fn decode(raw: u32) -> Self {
        Self {
            major: (raw >> 16) as u16,
            minor: (raw >> 8) as u8,
            tertiary: raw as u8,
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.tertiary)
    }
}

/// Offset of the submission-queue tail doorbell of queue `qid`.
pub fn sq_tail_doorbell(qid: u16, stride: usize) -> usize {
    DOORBELL_BASE + (2 * usize::from(qid)) * stride
}

/// Offset of the completion-queue head doorbell of queue `qid`.
pub fn cq_head_doorbell(qid: u16, stride: usize) -> usize {
    DOORBELL_BASE + (2 * usize::from(qid) + 1) * stride
}

/// CC value for an enabled controller: NVM command set, 4 KiB pages, round robin,
/// 64-byte SQ entries, 16-byte CQ entries.
pub fn cc_enable_value() -> u32 {
    CC_EN | (6 << 16) | (4 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_decode_matches_spec_bit_layout() {
        // MQES=2047, CQR=1, TO=0x20 (16 s), DSTRD=2, CSS bit 37, MPSMIN=0, MPSMAX=4.
        let raw: u64 = 2047 | (1 << 16) | (0x20 << 24) | (2 << 32) | (1 << 37) | (4 << 52);
        let c = Capabilities::decode(raw);
        assert_eq!(c.max_queue_entries, 2048);
        assert!(c.contiguous_queues_required);
        assert_eq!(c.timeout, Duration::from_secs(16));
        assert_eq!(c.doorbell_stride, 16);
        assert!(c.nvm_command_set);
        assert_eq!(c.mps_min, 4096);
        assert_eq!(c.mps_max, 65536);
    }

    #[test]
    fn doorbells_follow_stride_formula() {
        // Spec: SQyTDBL = 1000h + (2y * (4 << DSTRD)), CQyHDBL = 1000h + ((2y + 1) * (4 << DSTRD)).
        assert_eq!(sq_tail_doorbell(0, 4), 0x1000);
        assert_eq!(cq_head_doorbell(0, 4), 0x1004);
        assert_eq!(sq_tail_doorbell(3, 4), 0x1018);
        assert_eq!(cq_head_doorbell(3, 16), 0x1000 + 7 * 16);
    }

    #[test]
    fn version_display() {
        assert_eq!(Version::decode(0x0001_0400).to_string(), "1.4.0");
    }
}
