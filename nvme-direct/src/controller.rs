//! Controller bring-up, admin commands, reset and shutdown (safe code over the traits).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::command::*;
use crate::dma::{DmaBuffer, DmaMemory, RegisterIo};
use crate::error::{Error, Result};
use crate::queue::QueuePair;
use crate::regs::*;

/// Driver configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Admin queue entries (2..=4096, clamped to CAP.MQES).
    pub admin_queue_size: u16,
    /// Entries per I/O queue (clamped to CAP.MQES).
    pub io_queue_size: u16,
    /// Number of I/O queue pairs to create (clamped to what the controller grants).
    pub io_queues: u16,
    /// Per-command timeout. On expiry the driver sends an NVMe Abort for the command; if the
    /// Abort does not end it within `abort_timeout`, the controller is reset.
    pub command_timeout: Duration,
    /// How long the Abort command may take, and then how long the aborted command's own
    /// completion may take to arrive, before the controller is reset.
    pub abort_timeout: Duration,
    /// Upper bound on one command's transfer (further limited by MDTS), bytes.
    pub max_transfer: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            admin_queue_size: 32,
            io_queue_size: 256,
            io_queues: 1,
            command_timeout: Duration::from_secs(5),
            abort_timeout: Duration::from_secs(2),
            max_transfer: 2 << 20,
        }
    }
}

/// Counts of error recovery since the controller was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// NVMe Abort commands sent for timed-out I/O commands.
    pub aborts_sent: u64,
    /// Controller resets after bring-up (timeouts the Abort did not end, fatal errors).
    pub resets: u64,
}

/// The shared counters behind [`Recovery`].
#[derive(Debug, Default)]
pub(crate) struct RecoveryCounters {
    pub aborts_sent: std::sync::atomic::AtomicU64,
    pub resets: std::sync::atomic::AtomicU64,
}

/// An initialised NVMe controller with its admin queue and I/O queue pairs.
pub struct Controller<R: RegisterIo, M: DmaMemory> {
    pub(crate) regs: R,
    pub(crate) mem: M,
    pub(crate) cap: Capabilities,
    version: Version,
    pub(crate) config: Config,
    /// The admin queue; a mutex because I/O queue handles on other threads send Aborts.
    pub(crate) admin: Mutex<QueuePair<M::Buffer>>,
    pub(crate) io: Vec<QueuePair<M::Buffer>>,
    identity: ControllerIdentity,
    pub(crate) max_transfer: usize,
    scratch: M::Buffer,
    shut_down: bool,
    pub(crate) needs_reset: std::sync::atomic::AtomicBool,
    pub(crate) recovery: RecoveryCounters,
}

impl<R: RegisterIo, M: DmaMemory> Controller<R, M> {
    /// Resets and enables the controller, identifies it and creates the I/O queues.
    pub fn new(regs: R, mem: M, config: Config) -> Result<Self> {
        let cap_raw = regs.read64(CAP);
        if cap_raw == u64::MAX {
            return Err(Error::DeviceGone { offset: CAP });
        }
        let cap = Capabilities::decode(cap_raw);
        if !cap.nvm_command_set {
            return Err(Error::Unsupported(
                "CAP.CSS lacks the NVM command set".into(),
            ));
        }
        if cap.mps_min > PAGE_SIZE {
            return Err(Error::Unsupported(format!(
                "minimum page size {} > 4096",
                cap.mps_min
            )));
        }
        let version = Version::decode(regs.read32(VS));
        let mqes = cap.max_queue_entries.min(4096) as u16;
        let admin_size = config.admin_queue_size.clamp(2, mqes);
        let admin = QueuePair::new(&mem, 0, admin_size, cap.doorbell_stride, 0)?;
        let scratch = mem.alloc(PAGE_SIZE)?;
        let mut c = Self {
            regs,
            mem,
            cap,
            version,
            config,
            admin: Mutex::new(admin),
            io: Vec::new(),
            identity: ControllerIdentity::parse(&[0; 4096]),
            max_transfer: PAGE_SIZE,
            scratch,
            shut_down: false,
            needs_reset: std::sync::atomic::AtomicBool::new(false),
            recovery: RecoveryCounters::default(),
        };
        c.disable()?;
        c.enable()?;
        let mut data = [0u8; 4096];
        c.identify(1, 0, &mut data)?;
        c.identity = ControllerIdentity::parse(&data);
        let mdts_bytes = if c.identity.mdts == 0 || c.identity.mdts > 20 {
            usize::MAX
        } else {
            cap.mps_min << c.identity.mdts
        };
        c.max_transfer =
            c.config.max_transfer.min(mdts_bytes).max(PAGE_SIZE) / PAGE_SIZE * PAGE_SIZE;
        c.create_io_queues()?;
        Ok(c)
    }

    /// Decoded CAP register.
    pub fn capabilities(&self) -> &Capabilities {
        &self.cap
    }
    /// NVMe version.
    pub fn version(&self) -> Version {
        self.version
    }
    /// Identify Controller data.
    pub fn identity(&self) -> &ControllerIdentity {
        &self.identity
    }
    /// Largest transfer one command carries (bytes), after MDTS and the config bound.
    pub fn max_transfer_bytes(&self) -> usize {
        self.max_transfer
    }
    /// Number of I/O queue pairs created.
    pub fn io_queue_count(&self) -> usize {
        self.io.len()
    }
    /// Entries of each I/O queue (commands in flight at most: one less).
    pub fn io_queue_size(&self) -> u16 {
        self.io.first().map_or(0, |q| q.size)
    }
    /// Changes the per-command and abort timeouts of later transfers (see [`Config`]).
    pub fn set_timeouts(&mut self, command: Duration, abort: Duration) {
        self.config.command_timeout = command;
        self.config.abort_timeout = abort;
    }

    /// How often I/O timeouts were answered with an Abort, and how often the controller was
    /// reset, since it was created.
    pub fn recovery(&self) -> Recovery {
        use std::sync::atomic::Ordering::Relaxed;
        Recovery {
            aborts_sent: self.recovery.aborts_sent.load(Relaxed),
            resets: self.recovery.resets.load(Relaxed),
        }
    }

    /// The DMA allocator (to allocate data buffers for reads and writes).
    pub fn memory(&self) -> &M {
        &self.mem
    }

    fn csts(&self) -> Result<u32> {
        let v = self.regs.read32(CSTS);
        if v == u32::MAX {
            return Err(Error::DeviceGone { offset: CSTS });
        }
        Ok(v)
    }

    /// Checks CSTS for fatal conditions (all ones, CFS).
    pub fn check_status(&self) -> Result<()> {
        if self.csts()? & CSTS_CFS != 0 {
            return Err(Error::ControllerFatal);
        }
        Ok(())
    }

    fn wait_csts(
        &self,
        what: &'static str,
        done: impl Fn(u32) -> bool,
        fatal_cfs: bool,
    ) -> Result<()> {
        let deadline = Instant::now() + self.cap.timeout;
        let mut spins = 0u32;
        loop {
            let v = self.csts()?;
            if fatal_cfs && v & CSTS_CFS != 0 {
                return Err(Error::ControllerFatal);
            }
            if done(v) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::ReadyTimeout {
                    what,
                    timeout: self.cap.timeout,
                });
            }
            spins += 1;
            if spins > 64 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    fn disable(&mut self) -> Result<()> {
        let cc = self.regs.read32(CC);
        if cc == u32::MAX {
            return Err(Error::DeviceGone { offset: CC });
        }
        self.regs.write32(CC, cc & !CC_EN);
        self.wait_csts("become not ready (CC.EN=0)", |v| v & CSTS_RDY == 0, false)
    }

    /// The admin queue (exclusive access through `&mut self`; a poisoned lock holds plain
    /// ring state, which a reset re-initialises anyway).
    fn admin_queue(&mut self) -> &mut QueuePair<M::Buffer> {
        self.admin.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    fn enable(&mut self) -> Result<()> {
        let admin = self.admin_queue();
        admin.reset_state()?;
        let (size, sq, cq) = (admin.size, admin.sq_iova(), admin.cq_iova());
        let n = u32::from(size) - 1;
        self.regs.write32(AQA, n | (n << 16));
        self.regs.write64(ASQ, sq);
        self.regs.write64(ACQ, cq);
        // Mask all interrupts: completions are polled.
        self.regs.write32(INTMS, u32::MAX);
        self.regs.write32(CC, cc_enable_value());
        self.wait_csts("become ready (CC.EN=1)", |v| v & CSTS_RDY != 0, true)
    }

    fn create_io_queues(&mut self) -> Result<()> {
        let want = self.config.io_queues.clamp(1, 64);
        let granted = self.admin_cmd(
            Sqe::new(ADMIN_SET_FEATURES, 0)
                .with_cdw(10, FEATURE_NUMBER_OF_QUEUES)
                .with_cdw(11, u32::from(want - 1) | (u32::from(want - 1) << 16)),
            None,
        )?;
        let nsq = (granted & 0xffff) + 1;
        let ncq = (granted >> 16) + 1;
        let count = u32::from(want).min(nsq).min(ncq) as u16;
        let mqes = self.cap.max_queue_entries.min(4096) as u16;
        let size = self.config.io_queue_size.clamp(2, mqes);
        let list_pages = crate::prp::list_pages_needed(4, self.max_transfer);
        let rebuild = self.io.len() == usize::from(count);
        if !rebuild {
            self.io.clear();
        }
        for i in 0..count {
            let qid = i + 1;
            if !rebuild {
                let q = QueuePair::new(&self.mem, qid, size, self.cap.doorbell_stride, list_pages)?;
                self.io.push(q);
            }
            let q = &mut self.io[usize::from(i)];
            q.reset_state()?;
            let (cq, sq, qsize) = (q.cq_iova(), q.sq_iova(), u32::from(q.size));
            let mut create_cq = Sqe::new(ADMIN_CREATE_CQ, 0)
                .with_cdw(10, u32::from(qid) | ((qsize - 1) << 16))
                .with_cdw(11, 1);
            create_cq.set_prps(cq, 0);
            self.admin_cmd(create_cq, None)?;
            let mut create_sq = Sqe::new(ADMIN_CREATE_SQ, 0)
                .with_cdw(10, u32::from(qid) | ((qsize - 1) << 16))
                .with_cdw(11, 1 | (u32::from(qid) << 16));
            create_sq.set_prps(sq, 0);
            self.admin_cmd(create_sq, None)?;
        }
        Ok(())
    }

    /// Runs one admin command to completion (bounded by the command timeout).
    /// With `data`, PRP1 points at the 4 KiB scratch page, copied out afterwards.
    pub(crate) fn admin_cmd(&mut self, mut sqe: Sqe, data: Option<&mut [u8; 4096]>) -> Result<u32> {
        if data.is_some() {
            self.scratch.zero(0, PAGE_SIZE)?;
            sqe.set_prps(self.scratch.iova(), 0);
        }
        let opcode = sqe.opcode();
        let timeout = self.config.command_timeout;
        let admin = self.admin.get_mut().unwrap_or_else(|p| p.into_inner());
        let c = crate::admin::exec(&self.regs, admin, sqe, timeout)?;
        if !c.status.is_success() {
            return Err(Error::Status {
                opcode,
                qid: 0,
                status: c.status,
            });
        }
        if let Some(d) = data {
            self.scratch.read_bytes(0, d)?;
        }
        Ok(c.result)
    }

    /// Identify with CNS `cns` for namespace `nsid` into `out`.
    pub fn identify(&mut self, cns: u32, nsid: u32, out: &mut [u8; 4096]) -> Result<()> {
        self.admin_cmd(Sqe::new(ADMIN_IDENTIFY, nsid).with_cdw(10, cns), Some(out))?;
        Ok(())
    }

    /// Resets the controller when a queue handle disabled it after an error.
    pub(crate) fn reset_if_needed(&mut self) -> Result<()> {
        if self.needs_reset.load(std::sync::atomic::Ordering::SeqCst) {
            self.reset()?;
        }
        Ok(())
    }

    /// Identify Namespace `nsid`: size and LBA format.
    pub fn namespace(&mut self, nsid: u32) -> Result<NamespaceIdentity> {
        self.reset_if_needed()?;
        if nsid == 0 || nsid > self.identity.namespace_count.max(1) {
            return Err(Error::InvalidArgument(format!(
                "namespace {nsid} does not exist (controller has {})",
                self.identity.namespace_count
            )));
        }
        let mut d = [0u8; 4096];
        self.identify(0, nsid, &mut d)?;
        NamespaceIdentity::parse(nsid, &d).ok_or_else(|| {
            Error::Unsupported(format!(
                "namespace {nsid} is inactive or has an unusable LBA format"
            ))
        })
    }

    /// Controller reset: disable (stops all DMA), re-enable, recreate the I/O queues.
    /// Every command in flight is forgotten.
    pub fn reset(&mut self) -> Result<()> {
        self.recovery
            .resets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.needs_reset
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.disable()?;
        for q in &mut self.io {
            q.reset_state()?;
        }
        self.enable()?;
        self.create_io_queues()?;
        self.needs_reset
            .store(false, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Normal shutdown (CC.SHN), waiting for CSTS.SHST = complete. Idempotent.
    pub fn shutdown(&mut self) -> Result<()> {
        if self.shut_down {
            return Ok(());
        }
        self.shut_down = true;
        let cc = self.regs.read32(CC);
        if cc == u32::MAX {
            return Err(Error::DeviceGone { offset: CC });
        }
        self.regs.write32(CC, (cc & !CC_SHN_MASK) | CC_SHN_NORMAL);
        self.wait_csts(
            "complete shutdown (CSTS.SHST)",
            |v| v & CSTS_SHST_MASK == CSTS_SHST_COMPLETE,
            false,
        )
    }
}

impl<R: RegisterIo, M: DmaMemory> Drop for Controller<R, M> {
    fn drop(&mut self) {
        // Best effort: a controller left enabled may keep DMA-ing into memory about to be freed.
        let _ = self.shutdown();
        let _ = self.disable();
    }
}
