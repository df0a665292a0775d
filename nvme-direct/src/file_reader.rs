//! Reading a file off a namespace by file offset: the file's extents translate each offset to a
//! block address, and the controller reads the blocks straight into the caller's memory when
//! it can be mapped for the device (page-aligned whole pages), else into the reader's DMA buffer
//! and the bytes are copied out.

use crate::dma::{DmaBuffer, DmaMemory, HostRegion, RegisterIo};
use crate::error::{Error, Result};
use crate::extent::{check_extents, locate, LbaExtent};
use crate::io::BlockRange;
use crate::{Controller, NamespaceIdentity};

/// Bytes read per NVMe transfer (the size of the reader's DMA buffer).
pub const FILE_READ_CHUNK: usize = 8 << 20;

/// Where a file lies on the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileLocation {
    /// The file's extents (byte offset in the file -> LBA), e.g. from an
    /// [`ExtentList`](crate::ExtentList).
    Extents(Vec<LbaExtent>),
    /// The file written raw and contiguously starting at this LBA.
    Raw(u64),
}

/// Reads a file of known length at a [`FileLocation`] on one namespace of a [`Controller`], by
/// file offset. Bytes past the last extent but inside the file read as zeros (a sparse tail).
pub struct ExtentReader<R: RegisterIo, M: DmaMemory> {
    ctrl: Controller<R, M>,
    ns: NamespaceIdentity,
    location: FileLocation,
    file_len: u64,
    bounce: M::Buffer,
    queue_depth: usize,
}

impl<R: RegisterIo, M: DmaMemory> std::fmt::Debug for ExtentReader<R, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtentReader")
            .field("block_size", &self.ns.block_size)
            .field("file_len", &self.file_len)
            .field("queue_depth", &self.queue_depth)
            .finish_non_exhaustive()
    }
}

impl<R: RegisterIo, M: DmaMemory> ExtentReader<R, M> {
    /// Reads the file of `file_len` bytes lying at `location` on namespace `nsid` of `ctrl`
    /// (I/O queue 0, 32 commands in flight).
    pub fn new(
        mut ctrl: Controller<R, M>,
        nsid: u32,
        location: FileLocation,
        file_len: u64,
    ) -> Result<Self> {
        let ns = ctrl.namespace(nsid)?;
        if ns.block_size == 0 || !ns.block_size.is_power_of_two() {
            return Err(Error::Unsupported(format!(
                "namespace {nsid} reports a block size of {} bytes",
                ns.block_size
            )));
        }
        // The location comes from a user's file and the block size from the device: check
        // both before any LBA is computed from them.
        check_location(&location, file_len, ns.block_size, ns.size_blocks)?;
        let bounce = ctrl.memory().alloc(FILE_READ_CHUNK)?;
        Ok(Self {
            ctrl,
            ns,
            location,
            file_len,
            bounce,
            queue_depth: 32,
        })
    }

    /// Sets how many commands may be in flight per transfer (at least 1).
    pub fn with_queue_depth(mut self, depth: usize) -> Self {
        self.queue_depth = depth.max(1);
        self
    }

    /// The namespace's logical block size in bytes (a power of two).
    pub fn block_size(&self) -> u64 {
        u64::from(self.ns.block_size)
    }

    /// The file's length in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The namespace read.
    pub fn namespace(&self) -> &NamespaceIdentity {
        &self.ns
    }

    /// Where the file lies.
    pub fn location(&self) -> &FileLocation {
        &self.location
    }

    /// Replaces where the file lies (e.g. once the namespace's block size is known).
    pub fn set_location(&mut self, location: FileLocation) -> Result<()> {
        check_location(
            &location,
            self.file_len,
            self.ns.block_size,
            self.ns.size_blocks,
        )?;
        self.location = location;
        Ok(())
    }

    /// The controller, for statistics or shutdown.
    pub fn controller(&mut self) -> &mut Controller<R, M> {
        &mut self.ctrl
    }

    /// The LBA of file byte `pos` and how many bytes of the file follow it contiguously there;
    /// `None` when no extent holds `pos`.
    fn locate(&self, pos: u64) -> Option<(u64, u64)> {
        let bs = self.block_size();
        match &self.location {
            FileLocation::Raw(lba) => Some((
                lba.checked_add(pos / bs)?,
                self.file_len.saturating_sub(pos),
            )),
            FileLocation::Extents(list) => locate(list, pos, self.ns.block_size),
        }
    }

    /// Reads `dst.len()` bytes of the file starting at file offset `offset`. `offset` must be
    /// a multiple of the block size; the read may run past the end of the file by less than
    /// one block (those bytes are whatever the device holds there, or zeros).
    ///
    /// The longest part of `dst` that starts page-aligned and spans whole pages (and whole
    /// blocks) is mapped for the device for this call and read into by DMA directly
    /// ([`DmaMemory::with_host_region`]); only the rest (an unaligned start, a partial last
    /// page, or memory that cannot be mapped) goes through the reader's DMA buffer and a copy.
    pub fn read_at(&mut self, offset: u64, dst: &mut [u8]) -> Result<()> {
        self.check_read(offset, dst.len())?;
        let unit = (self.block_size() as usize).max(4096);
        let direct = if (dst.as_ptr() as usize) % 4096 == 0 {
            dst.len() / unit * unit
        } else {
            0
        };
        let (head, tail) = dst.split_at_mut(direct);
        let mut head_done = head.is_empty();
        if !head_done {
            let mem = self.ctrl.memory().clone();
            head_done = mem
                .with_host_region(head, |region| self.read_into(offset, region, direct))?
                .is_some();
        }
        if head_done {
            self.read_bounced(offset + direct as u64, tail)
        } else {
            self.read_bounced(offset, dst)
        }
    }

    /// Checks a read of `len` bytes at file offset `offset` (block-aligned, within the file's
    /// last block).
    fn check_read(&self, offset: u64, len: usize) -> Result<()> {
        let bs = self.block_size();
        if offset % bs != 0 {
            return Err(Error::InvalidArgument(format!(
                "file offset {offset} is not a multiple of the {bs}-byte block"
            )));
        }
        let limit = self.file_len.div_ceil(bs).saturating_mul(bs);
        let end = offset.checked_add(len as u64);
        if !matches!(end, Some(e) if e <= limit) {
            return Err(Error::PastEnd {
                offset: offset.saturating_add(len as u64),
                file_len: self.file_len,
            });
        }
        Ok(())
    }

    /// Walks a read of `len` bytes at file offset `offset` in pieces of at most `max_piece`
    /// bytes: `piece(reader, done, n, blocks)` for `n` bytes at `done` in the destination,
    /// either a hole (`None`: zeros) or whole blocks of one extent (whose last block may run past
    /// `len`, by less than a block, when the destination ends mid-block). `max_piece` is a
    /// multiple of the block size.
    fn walk(
        &mut self,
        offset: u64,
        len: usize,
        max_piece: usize,
        mut piece: impl FnMut(&mut Self, usize, usize, Option<BlockRange>) -> Result<()>,
    ) -> Result<()> {
        let bs = self.block_size();
        let mut done = 0usize;
        while done < len {
            let pos = offset
                .checked_add(done as u64)
                .ok_or_else(|| Error::InvalidArgument("read offset overflows u64".into()))?;
            let want = (len - done).min(max_piece);
            match self.locate(pos) {
                None => {
                    // No extent here: a hole (or the tail padding); reads as zeros.
                    let next = self.next_extent_after(pos).unwrap_or(u64::MAX);
                    let n = (want as u64).min(next - pos) as usize;
                    piece(self, done, n, None)?;
                    done += n;
                }
                Some((lba, run)) => {
                    // Whole blocks, within this extent, within the piece.
                    let blocks = (want as u64).min(run.max(bs)).div_ceil(bs);
                    let n = usize::try_from(blocks * bs).map_or(len - done, |b| b.min(len - done));
                    piece(self, done, n, Some(BlockRange { lba, blocks }))?;
                    done += n;
                }
            }
        }
        Ok(())
    }

    /// Reads `len` bytes (whole blocks) of the file at `offset` straight into `region` (mapped
    /// caller memory), holes zero-filled in place.
    fn read_into(&mut self, offset: u64, region: &mut HostRegion, len: usize) -> Result<()> {
        self.walk(offset, len, usize::MAX, |r, done, n, blocks| match blocks {
            None => region.zero(done, n),
            Some(range) => r.ctrl.read(0, &r.ns, range, region, done, r.queue_depth),
        })
    }

    /// [`ExtentReader::read_at`] through the reader's DMA buffer: each piece read there, then
    /// copied out to `dst`.
    fn read_bounced(&mut self, offset: u64, dst: &mut [u8]) -> Result<()> {
        self.walk(offset, dst.len(), FILE_READ_CHUNK, |r, done, n, blocks| {
            let out = &mut dst[done..done + n];
            match blocks {
                None => {
                    out.fill(0);
                    Ok(())
                }
                Some(range) => {
                    r.ctrl
                        .read(0, &r.ns, range, &mut r.bounce, 0, r.queue_depth)?;
                    r.bounce.read_bytes(0, out)
                }
            }
        })
    }

    /// The file offset where the next extent after `pos` begins.
    fn next_extent_after(&self, pos: u64) -> Option<u64> {
        match &self.location {
            FileLocation::Raw(_) => None,
            FileLocation::Extents(list) => {
                list.iter().map(|e| e.logical).filter(|&l| l > pos).min()
            }
        }
    }
}

impl ExtentReader<crate::vfio::Bar0, crate::vfio::VfioDma> {
    /// Opens the controller at PCI address `bdf` (bound to vfio-pci) and a reader of `file`
    /// (namespace 1): the file lies raw from `raw_lba` when given, else where its
    /// [`ExtentList::for_file`](crate::ExtentList::for_file) says (the `.extents` file beside
    /// it, or FIEMAP). `file` itself must be readable for its length. Default
    /// [`VfioOptions`](crate::vfio::VfioOptions); see [`ExtentReader::open_vfio_with`].
    pub fn open_vfio(bdf: &str, file: &std::path::Path, raw_lba: Option<u64>) -> Result<Self> {
        Self::open_vfio_with(bdf, file, raw_lba, crate::vfio::VfioOptions::default())
    }

    /// [`ExtentReader::open_vfio`] with explicit VFIO options (IOMMU interface, page policy of
    /// the DMA buffers).
    pub fn open_vfio_with(
        bdf: &str,
        file: &std::path::Path,
        raw_lba: Option<u64>,
        options: crate::vfio::VfioOptions,
    ) -> Result<Self> {
        let file_len = std::fs::metadata(file)
            .map_err(|source| Error::Sys {
                op: format!("stat {}", file.display()),
                source,
                hint: "check the path of the file to read",
            })?
            .len();
        let (bar, dma) = crate::vfio::VfioDevice::open_with(bdf, options)?.into_parts();
        let ctrl = Controller::new(bar, dma, crate::Config::default())?;
        let mut reader = Self::new(ctrl, 1, FileLocation::Raw(0), file_len)?;
        let location = match raw_lba {
            Some(lba) => FileLocation::Raw(lba),
            None => FileLocation::Extents(
                crate::ExtentList::for_file(file, reader.ns.block_size)?.extents,
            ),
        };
        reader.set_location(location)?;
        Ok(reader)
    }
}

/// Checks a [`FileLocation`] against the namespace (see [`check_extents`]); a raw location is
/// checked as the one extent covering the whole file.
fn check_location(
    location: &FileLocation,
    file_len: u64,
    block_size: u32,
    ns_blocks: u64,
) -> Result<()> {
    match location {
        FileLocation::Extents(list) => check_extents(list, block_size, ns_blocks),
        FileLocation::Raw(lba) => {
            let raw = [LbaExtent {
                logical: 0,
                lba: *lba,
                blocks: file_len.div_ceil(u64::from(block_size.max(1))).max(1),
            }];
            check_extents(&raw, block_size, ns_blocks)
        }
    }
}
