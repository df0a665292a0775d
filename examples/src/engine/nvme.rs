//! The NVMe-direct data path: `nvme-direct` reads the model's blocks (located by extents
//! recorded while the filesystem was mounted, or at a raw LBA) and the pipeline copies them on.
//!
//! [`ExtentReader`] implements the pipeline's [`NvmeReader`] over any controller of the driver
//! (the VFIO one on hardware, the in-process emulator in tests): file offsets are translated to
//! LBAs through the extents, read into one driver DMA buffer (bounce), then copied into the
//! pipeline's staging. Never run on real NVMe hardware here.

use std::path::Path;

use nvme_direct::extent::{
    check_extents, file_extents, locate, partition_start, to_lba_extents, LbaExtent,
};
use nvme_direct::{BlockRange, Controller, DmaBuffer, DmaMemory, NamespaceIdentity, RegisterIo};
use slep_pipeline::{NvmeError, NvmeReader};

use super::error::{EngineError, Result};

/// Bytes read per NVMe transfer (the bounce buffer's size).
const BOUNCE: usize = 8 << 20;

/// Where the model lies on the namespace.
#[derive(Debug, Clone)]
pub enum Extents {
    /// The file's extents (byte offset in the file -> LBA).
    List(Vec<LbaExtent>),
    /// The file written raw starting at this LBA.
    Raw(u64),
}

/// Reads the `.extents` list written by `nvme-read --save-extents` ("# file_len N" then
/// "logical lba blocks" lines).
pub fn parse_extents(text: &str) -> std::result::Result<Vec<LbaExtent>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() || f[0] == "#" {
            continue;
        }
        let num = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("line {}: `{s}` is not a number", n + 1))
        };
        match f.as_slice() {
            [l, a, b] => out.push(LbaExtent {
                logical: num(l)?,
                lba: num(a)?,
                blocks: num(b)?,
            }),
            _ => return Err(format!("line {}: expected `logical lba blocks`", n + 1)),
        }
    }
    if out.is_empty() {
        return Err("no extents".into());
    }
    Ok(out)
}

/// The extents of `model`: from `model.extents` beside it when present, else FIEMAP on the
/// mounted file (which only helps if the device is bound to vfio-pci later).
pub fn extents_for(model: &Path, block_size: u32) -> std::result::Result<Vec<LbaExtent>, String> {
    let mut saved = model.as_os_str().to_owned();
    saved.push(".extents");
    let saved = std::path::PathBuf::from(saved);
    if saved.exists() {
        let text =
            std::fs::read_to_string(&saved).map_err(|e| format!("{}: {e}", saved.display()))?;
        return parse_extents(&text);
    }
    let ext = file_extents(model).map_err(|e| e.to_string())?;
    let part = partition_start(model).map_err(|e| e.to_string())?;
    to_lba_extents(&ext, part, block_size).map_err(|e| e.to_string())
}

/// An [`NvmeReader`] over a controller of the `nvme-direct` driver and a file's extents.
pub struct ExtentReader<R: RegisterIo, M: DmaMemory> {
    ctrl: Controller<R, M>,
    ns: NamespaceIdentity,
    extents: Extents,
    file_len: u64,
    bounce: M::Buffer,
    queue_depth: usize,
}

impl<R: RegisterIo, M: DmaMemory> std::fmt::Debug for ExtentReader<R, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtentReader")
            .field("block_size", &self.ns.block_size)
            .field("file_len", &self.file_len)
            .finish_non_exhaustive()
    }
}

impl<R: RegisterIo, M: DmaMemory> ExtentReader<R, M> {
    /// Reads the file of `file_len` bytes lying at `extents` on namespace `nsid` of `ctrl`.
    pub fn new(
        mut ctrl: Controller<R, M>,
        nsid: u32,
        extents: Extents,
        file_len: u64,
    ) -> Result<Self> {
        let err = |e: nvme_direct::Error| EngineError::Nvme {
            bdf: "controller".into(),
            reason: e.to_string(),
        };
        let ns = ctrl.namespace(nsid).map_err(err)?;
        // The list comes from a user's file and the block size from the device: check both
        // before any LBA is computed from them.
        match &extents {
            Extents::List(list) => {
                check_extents(list, ns.block_size, ns.size_blocks).map_err(err)?
            }
            Extents::Raw(lba) => {
                let raw = [LbaExtent {
                    logical: 0,
                    lba: *lba,
                    blocks: file_len.div_ceil(u64::from(ns.block_size.max(1))).max(1),
                }];
                check_extents(&raw, ns.block_size, ns.size_blocks).map_err(err)?
            }
        }
        let bounce = ctrl.memory().alloc(BOUNCE).map_err(err)?;
        Ok(Self {
            ctrl,
            ns,
            extents,
            file_len,
            bounce,
            queue_depth: 32,
        })
    }

    /// The LBA of file byte `pos` and how many bytes of the file follow it contiguously there.
    fn locate(&self, pos: u64) -> Option<(u64, u64)> {
        let bs = u64::from(self.ns.block_size.max(1));
        match &self.extents {
            Extents::Raw(lba) => Some((
                lba.checked_add(pos / bs)?,
                self.file_len.saturating_sub(pos),
            )),
            Extents::List(list) => locate(list, pos, self.ns.block_size),
        }
    }
}

impl<R: RegisterIo + Send, M: DmaMemory + Send> NvmeReader for ExtentReader<R, M>
where
    M::Buffer: Send,
{
    fn block_size(&self) -> u64 {
        u64::from(self.ns.block_size)
    }

    fn capacity(&self) -> u64 {
        self.file_len
            .div_ceil(self.block_size().max(1))
            .saturating_mul(self.block_size())
    }

    fn read_blocks(&mut self, offset: u64, dst: &mut [u8]) -> std::result::Result<(), NvmeError> {
        let bs = self.block_size().max(1);
        let mut done = 0usize;
        while done < dst.len() {
            let pos = offset
                .checked_add(done as u64)
                .ok_or("read offset overflows u64")?;
            let want = (dst.len() - done).min(BOUNCE);
            let Some((lba, run)) = self.locate(pos) else {
                // Past the last extent: the file's tail padding; zeros.
                dst[done..done + want].fill(0);
                done += want;
                continue;
            };
            let n = (want as u64).min(run.max(bs)).div_ceil(bs) * bs;
            let n = (n as usize)
                .min(want.div_ceil(bs as usize) * bs as usize)
                .min(BOUNCE);
            self.ctrl.read(
                0,
                &self.ns,
                BlockRange {
                    lba,
                    blocks: n as u64 / bs,
                },
                &mut self.bounce,
                0,
                self.queue_depth,
            )?;
            let take = n.min(dst.len() - done);
            self.bounce.read_bytes(0, &mut dst[done..done + take])?;
            done += take;
        }
        Ok(())
    }
}

/// Opens the controller at `bdf` (bound to vfio-pci) and a reader of `model` through it.
pub fn open_vfio(
    bdf: &str,
    model: &Path,
    raw_lba: Option<u64>,
) -> Result<ExtentReader<nvme_direct::vfio::Bar0, nvme_direct::vfio::VfioDma>> {
    let err = |reason: String| EngineError::Nvme {
        bdf: bdf.to_string(),
        reason,
    };
    let file_len = std::fs::metadata(model)
        .map_err(|e| err(format!("cannot stat {}: {e}", model.display())))?
        .len();
    let (bar, dma) = nvme_direct::vfio::VfioDevice::open(bdf)
        .map_err(|e| err(e.to_string()))?
        .into_parts();
    let ctrl = Controller::new(bar, dma, nvme_direct::Config::default())
        .map_err(|e| err(e.to_string()))?;
    let mut reader =
        ExtentReader::new(ctrl, 1, Extents::Raw(0), file_len).map_err(|e| err(e.to_string()))?;
    reader.extents = match raw_lba {
        Some(lba) => Extents::Raw(lba),
        None => Extents::List(extents_for(model, reader.ns.block_size).map_err(err)?),
    };
    Ok(reader)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_file_parses_like_nvme_read_writes_it() {
        let e = parse_extents("# file_len 10000\n0 2048 16\n8192 9000 4\n").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].lba, 9000);
        assert!(parse_extents("# nothing\n").is_err());
        assert!(parse_extents("1 2\n").is_err());
    }
}
