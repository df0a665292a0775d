//! Automatic choice of the data path per item, with a human-readable reason.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::stage::SourceKind;

/// Where an item lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// In device memory.
    Resident,
    /// In page-locked host RAM.
    PinnedRam,
    /// In a file.
    File(PathBuf),
}

/// What this machine allows; each field is `Ok` or the reason it is unavailable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineCaps {
    /// A userspace NVMe driver owns the device holding the files (set by the composition).
    pub nvme_direct: Result<(), String>,
    /// The filesystem accepts O_DIRECT reads.
    pub o_direct: Result<(), String>,
    /// io_uring can be set up in this process.
    pub io_uring: Result<(), String>,
}

impl MachineCaps {
    /// Probes O_DIRECT on `file` (opens it and reads one aligned block) and io_uring setup.
    /// NVMe-direct is reported unavailable: only the composition knows whether a driver is bound.
    pub fn probe(file: &Path) -> Self {
        let o_direct = match crate::source::file::FileSource::open(
            file,
            crate::source::file::ReadMode::Direct,
            crate::source::file::IoEngine::Pread,
        ) {
            Ok(s) if s.is_direct() => Ok(()),
            Ok(s) => Err(s.reason().to_string()),
            Err(e) => Err(e.to_string()),
        };
        let io_uring = crate::sys::uring::Ring::new(4)
            .map(|_| ())
            .map_err(|e| format!("io_uring setup failed: {e}"));
        Self {
            nvme_direct: Err("no userspace NVMe driver was supplied".into()),
            o_direct,
            io_uring,
        }
    }
}

impl MachineCaps {
    /// Memory the kernel estimates is available for new allocations without swapping
    /// (`MemAvailable` of `/proc/meminfo`), in bytes; `None` where it cannot be read (not Linux,
    /// or a kernel older than 3.14).
    pub fn available_memory() -> Option<u64> {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        Self::parse_available_memory(&text)
    }

    /// The `MemAvailable:` line of a `/proc/meminfo` text, in bytes (the file gives kB).
    pub fn parse_available_memory(meminfo: &str) -> Option<u64> {
        let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let mut fields = line.split_whitespace().skip(1);
        let kb: u64 = fields.next()?.parse().ok()?;
        match fields.next() {
            None | Some("kB") => kb.checked_mul(1024),
            Some(_) => None,
        }
    }
}

/// The chosen data path and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The data path.
    pub kind: SourceKind,
    /// Why it was chosen, for humans.
    pub reason: String,
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.reason)
    }
}

/// Picks the data path for an item at `location` on a machine with `caps`: resident > pinned RAM >
/// NVMe direct > O_DIRECT CPU worker > mmap CPU worker. (The mmap baseline is never chosen: it is
/// only a comparison point.)
pub fn choose_source(location: &Location, caps: &MachineCaps) -> Choice {
    match location {
        Location::Resident => Choice {
            kind: SourceKind::Resident,
            reason: "resident in device memory: nothing moves".into(),
        },
        Location::PinnedRam => Choice {
            kind: SourceKind::PinnedRam,
            reason: "held in page-locked RAM: one asynchronous copy".into(),
        },
        Location::File(path) => {
            let file = path.display();
            match (&caps.nvme_direct, &caps.o_direct) {
                (Ok(()), _) => Choice {
                    kind: SourceKind::NvmeDirect,
                    reason: format!(
                        "{file} is on a device driven by the userspace NVMe driver: reads land \
                         in registered staging, then one copy"
                    ),
                },
                (Err(nvme), Ok(())) => {
                    let engine = match &caps.io_uring {
                        Ok(()) => "io_uring".to_string(),
                        Err(why) => format!("pread worker threads ({why})"),
                    };
                    Choice {
                        kind: SourceKind::CpuWorkerDirect,
                        reason: format!(
                            "{file}: NVMe direct unavailable ({nvme}); the filesystem accepts \
                             O_DIRECT, read with {engine} into pinned staging"
                        ),
                    }
                }
                (Err(nvme), Err(odirect)) => Choice {
                    kind: SourceKind::CpuWorkerMmap,
                    reason: format!(
                        "{file}: NVMe direct unavailable ({nvme}); O_DIRECT unavailable \
                         ({odirect}); mmap + worker-thread memcpy into pinned staging"
                    ),
                },
            }
        }
    }
}
