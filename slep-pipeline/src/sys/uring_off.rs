//! Stand-in for the io_uring reader in builds without feature `io-uring`: setting up a ring
//! always fails with a reason, so every source falls back to `pread` workers and says why.

use std::io;
use std::os::fd::RawFd;

/// One read (unused without io_uring; same shape as the real one).
pub(crate) struct ReadJob<'a> {
    pub(crate) offset: u64,
    pub(crate) buf: &'a mut [u8],
    pub(crate) done: usize,
    pub(crate) eof: bool,
}

/// An io_uring instance: never constructed without the feature.
#[derive(Debug)]
pub(crate) struct Ring {
    _never: std::convert::Infallible,
}

impl Ring {
    /// Always fails: this build has no io_uring support.
    pub(crate) fn new(_depth: u32) -> io::Result<Self> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "built without the `io-uring` feature of vramless-slep-pipeline",
        ))
    }

    /// Unreachable: no `Ring` exists.
    pub(crate) fn read_all(&mut self, _fd: RawFd, _jobs: &mut [ReadJob<'_>]) -> io::Result<()> {
        match self._never {}
    }
}
