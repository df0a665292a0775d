//! CPU-worker file source: O_DIRECT reads (io_uring, else `pread` by worker threads) of the
//! block-aligned superset of each range into staging, exact bytes delivered; buffered reads when
//! the filesystem refuses O_DIRECT.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::align::{AlignedSpan, DEFAULT_BLOCK};
use crate::buffer::HostBuffer;
use crate::error::{PipelineError, Result};
use crate::schedule::Item;
use crate::stage::{Fetched, Source, SourceKind};
use crate::sys::uring::{ReadJob, Ring};

/// How the file should be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// O_DIRECT (bypasses the page cache); falls back to buffered when the filesystem refuses it.
    Direct,
    /// Ordinary buffered reads through the page cache.
    Buffered,
}

/// Which system interface performs the reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoEngine {
    /// io_uring when it can be set up here, else `pread` worker threads.
    Auto,
    /// io_uring only (opening fails when it cannot be set up).
    IoUring,
    /// `pread` by worker threads.
    Pread,
}

enum Engine {
    Uring(Box<Ring>),
    Pread,
}

/// Reads items from a file into staging buffers.
pub struct FileSource {
    path: PathBuf,
    file: File,
    file_len: u64,
    direct: bool,
    engine: Engine,
    threads: usize,
    chunk: usize,
    block: u64,
    reason: String,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("path", &self.path)
            .field("direct", &self.direct)
            .field("engine", &self.engine_name())
            .field("reason", &self.reason)
            .finish()
    }
}

const RING_DEPTH: u32 = 32;

fn open_plain(path: &Path) -> Result<File> {
    File::open(path).map_err(|source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Opens `path` with O_DIRECT and reads its first block; `Err(why)` when the filesystem refuses.
fn open_direct(path: &Path, file_len: u64, block: u64) -> std::result::Result<File, String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| format!("opening with O_DIRECT failed ({e})"))?;
    if file_len > 0 {
        let mut probe = HostBuffer::new(block as usize).map_err(|e| e.to_string())?;
        file.read_at(probe.as_mut_slice(), 0)
            .map_err(|e| format!("an aligned O_DIRECT read failed ({e})"))?;
    }
    Ok(file)
}

impl FileSource {
    /// Opens `path`. With [`ReadMode::Direct`], falls back to buffered reads when the filesystem
    /// refuses O_DIRECT (tmpfs, some overlay filesystems); [`FileSource::reason`] says so.
    pub fn open(path: &Path, mode: ReadMode, engine: IoEngine) -> Result<Self> {
        Self::open_with(path, mode, engine, open_direct)
    }

    fn open_with(
        path: &Path,
        mode: ReadMode,
        engine: IoEngine,
        open_direct: fn(&Path, u64, u64) -> std::result::Result<File, String>,
    ) -> Result<Self> {
        let plain = open_plain(path)?;
        let file_len = plain
            .metadata()
            .map_err(|source| PipelineError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let block = DEFAULT_BLOCK;
        let mut reasons = Vec::new();
        let (file, direct) = match mode {
            ReadMode::Buffered => {
                reasons.push("buffered reads requested".to_string());
                (plain, false)
            }
            ReadMode::Direct => match open_direct(path, file_len, block) {
                Ok(f) => {
                    reasons.push(format!("O_DIRECT accepted ({block}-byte aligned reads)"));
                    (f, true)
                }
                Err(why) => {
                    reasons.push(format!(
                        "the filesystem refused O_DIRECT: {why}; using buffered reads"
                    ));
                    (plain, false)
                }
            },
        };
        let engine = match engine {
            IoEngine::Pread => {
                reasons.push("pread requested".into());
                Engine::Pread
            }
            IoEngine::IoUring => {
                let ring = Ring::new(RING_DEPTH).map_err(|source| PipelineError::Io {
                    path: PathBuf::from("io_uring"),
                    source,
                })?;
                reasons.push(format!("io_uring, queue depth {RING_DEPTH}"));
                Engine::Uring(Box::new(ring))
            }
            IoEngine::Auto => match Ring::new(RING_DEPTH) {
                Ok(ring) => {
                    reasons.push(format!("io_uring, queue depth {RING_DEPTH}"));
                    Engine::Uring(Box::new(ring))
                }
                Err(e) => {
                    reasons.push(format!("io_uring unavailable ({e}); using pread workers"));
                    Engine::Pread
                }
            },
        };
        Ok(Self {
            path: path.to_path_buf(),
            file,
            file_len,
            direct,
            engine,
            threads: 2,
            chunk: 4 << 20,
            block,
            reason: reasons.join("; "),
        })
    }

    /// Uses `threads` pread worker threads (at least 1; default 2).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Splits reads into requests of about `bytes` (rounded up to the block size; default 4 MiB).
    pub fn with_chunk(mut self, bytes: usize) -> Self {
        let block = self.block as usize;
        self.chunk = bytes.max(1).div_ceil(block) * block;
        self
    }

    /// Why this source reads the way it does (O_DIRECT or not, io_uring or pread).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// True when reads bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// "io_uring" or "pread".
    pub fn engine_name(&self) -> &'static str {
        match self.engine {
            Engine::Uring(_) => "io_uring",
            Engine::Pread => "pread",
        }
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    fn io_err(&self, source: io::Error) -> PipelineError {
        PipelineError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Plans the reads of `item` into `staging`: the jobs (file offset, staging offset, length)
    /// and the spans of wanted bytes.
    fn plan(&self, item: &Item, staging_len: usize) -> Result<(Vec<Job>, Spans)> {
        let mut jobs = Vec::new();
        let mut spans: Spans = Vec::new();
        let mut pos = 0usize;
        for r in &item.ranges {
            r.check_within(self.file_len, &self.path.display())?;
            let (read_offset, read_len, head) = if self.direct {
                let s = AlignedSpan::for_range(*r, self.block)?;
                (s.read_offset, s.read_len as usize, s.head as usize)
            } else {
                (r.offset, r.len as usize, 0)
            };
            let end = pos
                .checked_add(read_len)
                .filter(|&e| e <= staging_len)
                .ok_or(PipelineError::StagingTooSmall {
                    key: item.key,
                    need: pos as u64 + read_len as u64,
                    have: staging_len as u64,
                })?;
            let mut done = 0usize;
            while done < read_len {
                let n = self.chunk.min(read_len - done);
                jobs.push((read_offset + done as u64, pos + done, n));
                done += n;
            }
            let len = r.len as usize;
            match spans.last_mut() {
                Some(last) if last.0 + last.1 == pos + head => last.1 += len,
                _ => spans.push((pos + head, len)),
            }
            pos = end;
        }
        Ok((jobs, spans))
    }

    fn execute(&mut self, jobs: &[Job], staging: &mut [u8]) -> Result<()> {
        let mut read_jobs = split_jobs(jobs, staging);
        let result = match &mut self.engine {
            Engine::Uring(ring) => ring.read_all(self.file.as_raw_fd(), &mut read_jobs),
            Engine::Pread => pread_all(&self.file, &mut read_jobs, self.threads),
        };
        result.map_err(|e| self.io_err(e))?;
        for j in &read_jobs {
            let in_file = self
                .file_len
                .saturating_sub(j.offset)
                .min(j.buf.len() as u64);
            if (j.done as u64) < in_file {
                return Err(PipelineError::ShortRead {
                    path: self.path.clone(),
                    offset: j.offset,
                    wanted: in_file,
                    got: j.done as u64,
                });
            }
        }
        Ok(())
    }
}

/// Spans of wanted bytes in staging: (offset, length).
type Spans = Vec<(usize, usize)>;
/// A planned read: (file offset, staging offset, length).
type Job = (u64, usize, usize);

/// Turns planned jobs into disjoint mutable views of the staging buffer (jobs are in increasing,
/// non-overlapping staging order by construction).
fn split_jobs<'a>(jobs: &[Job], mut rest: &'a mut [u8]) -> Vec<ReadJob<'a>> {
    let mut out = Vec::with_capacity(jobs.len());
    let mut base = 0usize;
    for &(offset, at, len) in jobs {
        let tail = std::mem::take(&mut rest);
        let (_, tail) = tail.split_at_mut(at - base);
        let (buf, tail) = tail.split_at_mut(len);
        rest = tail;
        base = at + len;
        out.push(ReadJob {
            offset,
            buf,
            done: 0,
            eof: false,
        });
    }
    out
}

fn pread_one(file: &File, job: &mut ReadJob<'_>) -> io::Result<()> {
    while job.done < job.buf.len() {
        match file.read_at(&mut job.buf[job.done..], job.offset + job.done as u64) {
            Ok(0) => {
                job.eof = true;
                break;
            }
            Ok(n) => job.done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn pread_all(file: &File, jobs: &mut [ReadJob<'_>], threads: usize) -> io::Result<()> {
    if threads <= 1 || jobs.len() <= 1 {
        return jobs.iter_mut().try_for_each(|j| pread_one(file, j));
    }
    let per = jobs.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks_mut(per)
            .map(|part| s.spawn(move || part.iter_mut().try_for_each(|j| pread_one(file, j))))
            .collect();
        let mut result = Ok(());
        for h in handles {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("pread worker panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

impl Source for FileSource {
    fn kind_for(&self, _item: &Item) -> SourceKind {
        if self.direct {
            SourceKind::CpuWorkerDirect
        } else {
            SourceKind::CpuWorkerBuffered
        }
    }

    fn staging_bytes(&self, item: &Item) -> Result<u64> {
        if self.direct {
            AlignedSpan::staging_for(&item.ranges, self.block)
        } else {
            item.total_len()
        }
    }

    fn fetch(&mut self, item: &Item, staging: &mut HostBuffer) -> Result<Fetched> {
        let (jobs, spans) = self.plan(item, staging.len())?;
        match self.execute(&jobs, staging.as_mut_slice()) {
            Ok(()) => Ok(Fetched::Staged(spans)),
            Err(PipelineError::Io { source, .. })
                if source.raw_os_error() == Some(libc::EINVAL) =>
            {
                // io_uring may reject the read opcode (old kernels) and some filesystems reject
                // O_DIRECT only on certain reads: downgrade one step and retry once.
                if matches!(self.engine, Engine::Uring(_)) {
                    self.engine = Engine::Pread;
                    self.reason
                        .push_str("; io_uring read returned EINVAL, switched to pread");
                } else if self.direct {
                    self.file = open_plain(&self.path)?;
                    self.direct = false;
                    self.reason
                        .push_str("; O_DIRECT read returned EINVAL, switched to buffered reads");
                }
                let (jobs, spans) = self.plan(item, staging.len())?;
                self.execute(&jobs, staging.as_mut_slice())?;
                Ok(Fetched::Staged(spans))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ByteRange;

    fn refuse(_: &Path, _: u64, _: u64) -> std::result::Result<File, String> {
        Err("opening with O_DIRECT failed (Invalid argument (os error 22), simulated)".into())
    }

    #[test]
    fn refused_o_direct_falls_back_to_buffered_and_says_why() {
        let dir = std::env::temp_dir().join(format!("slep-odirect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.bin");
        let bytes: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let mut src =
            FileSource::open_with(&path, ReadMode::Direct, IoEngine::Pread, refuse).unwrap();
        assert!(!src.is_direct());
        assert!(
            src.reason().contains("refused O_DIRECT"),
            "{}",
            src.reason()
        );
        assert!(src.reason().contains("os error 22"), "{}", src.reason());
        assert_eq!(
            src.kind_for(&Item::new(0, vec![])),
            SourceKind::CpuWorkerBuffered
        );
        let item = Item::new(1, vec![ByteRange::new(4097, 3), ByteRange::new(1, 9000)]);
        let mut staging = HostBuffer::new(16384).unwrap();
        let Fetched::Staged(spans) = src.fetch(&item, &mut staging).unwrap() else {
            panic!("file source must stage");
        };
        let mut got = Vec::new();
        for (off, len) in spans {
            got.extend_from_slice(&staging.as_slice()[off..off + len]);
        }
        let mut want = bytes[4097..4100].to_vec();
        want.extend_from_slice(&bytes[1..9001]);
        assert_eq!(got, want);
        std::fs::remove_dir_all(dir).ok();
    }
}
