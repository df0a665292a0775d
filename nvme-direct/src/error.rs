//! Typed errors of the driver.

use std::time::Duration;

/// An NVMe completion status (CQE DW3 bits 17..31), decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NvmeStatus {
    /// Status Code Type (0 generic, 1 command specific, 2 media/data integrity, 3 path, 7 vendor).
    pub sct: u8,
    /// Status Code within the type.
    pub sc: u8,
    /// Do Not Retry: the same command will fail again.
    pub dnr: bool,
    /// More: additional information is in the Error Information log page.
    pub more: bool,
    /// Command Retry Delay index (0 = none).
    pub crd: u8,
}

impl NvmeStatus {
    /// Decodes the 15-bit status field (CQE DW3 >> 17).
    pub fn from_field(field: u16) -> Self {
        Self {
            sc: (field & 0xff) as u8,
            sct: ((field >> 8) & 0x7) as u8,
            crd: ((field >> 11) & 0x3) as u8,
            more: field & (1 << 13) != 0,
            dnr: field & (1 << 14) != 0,
        }
    }

    /// Encodes back into the 15-bit field (used by the emulator).
    pub fn to_field(self) -> u16 {
        u16::from(self.sc)
            | (u16::from(self.sct & 7) << 8)
            | (u16::from(self.crd & 3) << 11)
            | (u16::from(self.more) << 13)
            | (u16::from(self.dnr) << 14)
    }

    /// True when the status means success (SCT 0, SC 0).
    pub fn is_success(self) -> bool {
        self.sct == 0 && self.sc == 0
    }

    /// A short English description of well-known codes.
    pub fn describe(self) -> &'static str {
        match (self.sct, self.sc) {
            (0, 0x00) => "successful completion",
            (0, 0x01) => "invalid command opcode",
            (0, 0x02) => "invalid field in command",
            (0, 0x03) => "command id conflict",
            (0, 0x04) => "data transfer error",
            (0, 0x06) => "internal error",
            (0, 0x07) => "command abort requested",
            (0, 0x0b) => "invalid namespace or format",
            (0, 0x13) => "invalid PRP offset",
            (0, 0x80) => "LBA out of range",
            (0, 0x81) => "capacity exceeded",
            (0, 0x82) => "namespace not ready",
            (1, 0x01) => "invalid completion queue",
            (1, 0x02) => "invalid queue identifier",
            (1, 0x03) => "invalid queue size",
            (2, 0x81) => "unrecovered read error",
            (2, 0x80) => "write fault",
            _ => "see the NVMe base specification status code tables",
        }
    }
}

impl std::fmt::Display for NvmeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SCT {:#x} SC {:#04x} ({}){}{}",
            self.sct,
            self.sc,
            self.describe(),
            if self.dnr { ", do not retry" } else { "" },
            if self.more {
                ", more info in error log"
            } else {
                ""
            }
        )
    }
}

/// Everything that can go wrong in the driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The controller completed a command with an error status.
    #[error("NVMe command (opcode {opcode:#04x}, queue {qid}) failed: {status}")]
    Status {
        /// Opcode of the failed command.
        opcode: u8,
        /// Submission queue id.
        qid: u16,
        /// Decoded status.
        status: NvmeStatus,
    },
    /// A command did not complete within its timeout. For an I/O command (queue >= 1) an NVMe
    /// Abort did not end it in time (or the Abort itself timed out) and the controller was
    /// reset (queues recreated, every command in flight ended), so the caller may retry. For an
    /// admin command (queue 0) nothing was reset.
    #[error("NVMe command (opcode {opcode:#04x}, queue {qid}, cid {cid}) timed out after {timeout:?} (I/O queue: Abort did not end it, controller reset)")]
    Timeout {
        /// Opcode of the command.
        opcode: u8,
        /// Submission queue id.
        qid: u16,
        /// Command id.
        cid: u16,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// A command did not complete within the per-command timeout and was ended by an NVMe
    /// Abort (it completed with "Command Abort Requested"). No reset was needed: the queue
    /// and the other commands in flight were unaffected; the caller may retry the transfer.
    #[error("NVMe command (opcode {opcode:#04x}, queue {qid}, cid {cid}) timed out after {timeout:?} and was aborted (NVMe Abort); the queue is still usable, retry the transfer")]
    Aborted {
        /// Opcode of the command.
        opcode: u8,
        /// Submission queue id.
        qid: u16,
        /// Command id.
        cid: u16,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The controller did not reach the requested state within CAP.TO.
    #[error("controller did not {what} within {timeout:?} (CAP.TO); check the device and its driver binding")]
    ReadyTimeout {
        /// What was waited for.
        what: &'static str,
        /// The bound used.
        timeout: Duration,
    },
    /// CSTS.CFS is set: the controller hit a fatal error and needs a reset.
    #[error("controller fatal status (CSTS.CFS) set; the controller needs a reset")]
    ControllerFatal,
    /// A register read returned all ones: the device fell off the bus or its BAR is unmapped.
    #[error(
        "register {offset:#x} read as all ones: device removed, powered off or BAR not mapped"
    )]
    DeviceGone {
        /// The register offset read.
        offset: usize,
    },
    /// A completion arrived for a command id that is not in flight.
    #[error("completion on queue {qid} carries command id {cid} which is not in flight (controller confused); controller reset")]
    UnexpectedCompletion {
        /// Queue id.
        qid: u16,
        /// The offending command id.
        cid: u16,
    },
    /// Invalid argument from the caller.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A buffer is too small or an offset is out of range / misaligned.
    #[error("buffer range invalid: {0}")]
    BufferRange(String),
    /// The controller lacks something the driver needs.
    #[error("unsupported controller: {0}")]
    Unsupported(String),
    /// DMA memory allocation or mapping failed.
    #[error("DMA memory: {0}")]
    Dma(String),
    /// A VFIO / system call failed.
    #[error("{op} failed: {source} ({hint})")]
    Sys {
        /// The operation.
        op: String,
        /// The OS error.
        source: std::io::Error,
        /// What to check.
        hint: &'static str,
    },
    /// The filesystem cannot report extents.
    #[error("filesystem does not support FIEMAP for {path}: {source}; copy the file to ext4/xfs")]
    FiemapUnsupported {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An extent list (a `.extents` file, FIEMAP's answer) or the block size it is used with
    /// is inconsistent: reading through it would compute wrong LBAs.
    #[error(
        "invalid extent list: {}{reason}; make the extent list again from the mounted file (FIEMAP)",
        index.map_or(String::new(), |i| format!("extent {i}: "))
    )]
    BadExtent {
        /// Which extent of the list (0-based); `None` for a problem of the whole list.
        index: Option<usize>,
        /// What is wrong with it.
        reason: String,
    },
    /// A file extent cannot be read raw (inline, encoded, delayed allocation...).
    #[error("extent at file offset {logical} cannot be read raw (flags {flags:#x}); run sync or copy the file without compression/reflinks")]
    ExtentNotRaw {
        /// File offset of the extent.
        logical: u64,
        /// FIEMAP extent flags.
        flags: u32,
    },
    /// A `.extents` file is malformed.
    #[error("extents file, line {line}: {reason}")]
    ExtentsFile {
        /// The 1-based line number (0: the file as a whole).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A file offset lies past the end of the file being read.
    #[error("file offset {offset} is past the end of the {file_len}-byte file")]
    PastEnd {
        /// The offset asked for.
        offset: u64,
        /// The file's length.
        file_len: u64,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
