//! io_uring reads. Submitting a read hands the kernel a raw pointer into a caller buffer, so the
//! only rule that matters is: never return while a read is in flight.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};

/// One read: fill `buf` from file offset `offset`; `done` counts bytes read, `eof` is set when the
/// file ended first.
pub(crate) struct ReadJob<'a> {
    pub(crate) offset: u64,
    pub(crate) buf: &'a mut [u8],
    pub(crate) done: usize,
    pub(crate) eof: bool,
}

/// An io_uring instance used for reads.
pub(crate) struct Ring {
    ring: IoUring,
    depth: u32,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").field("depth", &self.depth).finish()
    }
}

fn retryable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
    )
}

impl Ring {
    /// Sets up a ring with `depth` entries (fails in containers whose seccomp policy forbids it).
    pub(crate) fn new(depth: u32) -> io::Result<Self> {
        let depth = depth.clamp(1, 4096);
        Ok(Self {
            ring: IoUring::new(depth)?,
            depth,
        })
    }

    /// Runs all `jobs` against `fd` with up to `depth` reads in flight, re-submitting short reads.
    /// Returns the first error after every in-flight read has completed.
    pub(crate) fn read_all(&mut self, fd: RawFd, jobs: &mut [ReadJob<'_>]) -> io::Result<()> {
        let mut pending: VecDeque<usize> = (0..jobs.len()).collect();
        let mut inflight = 0usize;
        let mut first_err: Option<io::Error> = None;
        loop {
            if first_err.is_none() {
                while inflight < self.depth as usize {
                    let Some(idx) = pending.pop_front() else {
                        break;
                    };
                    let job = &mut jobs[idx];
                    let rest = &mut job.buf[job.done..];
                    if rest.is_empty() {
                        continue;
                    }
                    let len = rest.len().min(u32::MAX as usize & !4095) as u32;
                    let entry = opcode::Read::new(types::Fd(fd), rest.as_mut_ptr(), len)
                        .offset(job.offset + job.done as u64)
                        .build()
                        .user_data(idx as u64);
                    // SAFETY: the entry points into `jobs[idx].buf`, which outlives this call, and
                    // this function does not return until every submitted read has completed (the
                    // loop below reaps until `inflight == 0`), so the kernel never writes into
                    // memory that was freed or handed back to the caller.
                    if unsafe { self.ring.submission().push(&entry) }.is_err() {
                        pending.push_front(idx);
                        break;
                    }
                    inflight += 1;
                }
            }
            if inflight == 0 {
                break;
            }
            let mut failures = 0u32;
            loop {
                match self.ring.submit_and_wait(1) {
                    Ok(_) => break,
                    Err(e) if retryable(&e) => continue,
                    Err(e) => {
                        // Reads may still be in flight into caller memory: never return with them.
                        failures += 1;
                        if failures > 1000 {
                            eprintln!(
                                "slep-pipeline: io_uring_enter keeps failing ({e}) with reads in \
                                 flight; aborting to avoid memory corruption"
                            );
                            std::process::abort();
                        }
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
            }
            for cqe in self.ring.completion() {
                inflight -= 1;
                let idx = cqe.user_data() as usize;
                let res = cqe.result();
                let Some(job) = jobs.get_mut(idx) else {
                    continue;
                };
                if res < 0 {
                    first_err.get_or_insert(io::Error::from_raw_os_error(-res));
                } else if res == 0 {
                    job.eof = true;
                } else {
                    job.done += res as usize;
                    if job.done < job.buf.len() {
                        pending.push_back(idx);
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
