//! The data paths: one pipeline source per tier, routed per layer, and the loading of the
//! pinned-RAM tier (with a progress bar). Prints which path serves which layers and why.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use indicatif::{ProgressBar, ProgressStyle};
use nvme_direct::vfio::{Bar0, VfioDma};
use nvme_direct::ExtentReader;
use slep_pipeline::{
    choose_source, Fetched, FileSource, HostBuffer, IoEngine, Item, Location, MachineCaps,
    MmapBaselineSource, MmapSource, NvmeSource, PinnedRamSource, PipelineError, PrefetchSource,
    ReadMode, ReadTotals, ResidentSource, RoutedSource, Schedule, Source, SourceKind, Transfer,
};

use super::error::{from_pipeline, EngineError, Result};
use super::options::{DataPath, EngineOptions};
use super::plan::{ranges, Home};
use super::setup::Setup;

/// A progress bar over `total` bytes (hidden when not verbose).
pub fn bytes_bar(verbose: bool, total: u64, what: &str) -> ProgressBar {
    if !verbose {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// Opens the controller at `bdf` (bound to vfio-pci) and a reader of the model through it.
fn open_vfio(
    bdf: &str,
    model: &std::path::Path,
    raw_lba: Option<u64>,
) -> Result<ExtentReader<Bar0, VfioDma>> {
    ExtentReader::open_vfio(bdf, model, raw_lba).map_err(|e| EngineError::Nvme {
        bdf: bdf.to_string(),
        reason: e.to_string(),
    })
}

/// The pinned-RAM tier, shared by the routed source (which reads it) and the engine (which
/// moves layers in and out of it between passes).
#[derive(Clone, Default)]
pub struct SharedPinned(Arc<Mutex<PinnedRamSource>>);

impl SharedPinned {
    /// The tier (a poisoned lock is taken over: the map of buffers stays consistent).
    pub fn lock(&self) -> MutexGuard<'_, PinnedRamSource> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Source for SharedPinned {
    fn kind_for(&self, item: &Item) -> SourceKind {
        self.lock().kind_for(item)
    }

    fn staging_bytes(&self, item: &Item) -> std::result::Result<u64, PipelineError> {
        self.lock().staging_bytes(item)
    }

    fn prepare_staging(
        &mut self,
        staging: &mut HostBuffer,
    ) -> std::result::Result<(), PipelineError> {
        self.lock().prepare_staging(staging)
    }

    fn fetch(
        &mut self,
        item: &Item,
        staging: &mut HostBuffer,
    ) -> std::result::Result<Fetched, PipelineError> {
        self.lock().fetch(item, staging)
    }
}

/// The routed source of every running layer, the per-token schedule, and the report.
pub struct Sources {
    /// Dispatches each layer to its path.
    pub routed: RoutedSource,
    /// The pinned-RAM tier (empty when no layer lives there).
    pub pinned: SharedPinned,
    /// Index in `routed` of the resident source.
    resident_index: usize,
    /// Index in `routed` of the pinned tier, once a layer lives there.
    pinned_index: Option<usize>,
    /// Index in `routed` of the storage source for layers demoted at run time (an mmap reader
    /// of the model, opened at the first demotion to storage).
    spill_index: Option<usize>,
    /// Running layers in order (resident ones included: the consumer runs them in place).
    pub schedule: Schedule,
    /// Which path serves which layers and why.
    pub report: String,
    /// Read totals of the storage read-ahead thread, when there is one.
    pub prefetch: Option<ReadTotals>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("report", &self.report)
            .finish()
    }
}

/// Builds the sources for `setup`'s plan: loads the pinned tier through `transfer` (page-locked
/// where the transfer pins), opens the storage path (`storage` overrides it, e.g. an NVMe reader
/// built by the caller).
pub fn build<T: Transfer>(
    setup: &Setup,
    opts: &EngineOptions,
    transfer: &T,
    storage: Option<Box<dyn Source>>,
) -> Result<Sources> {
    let plan = &setup.plan;
    let path = &setup.path;
    let mut routed = RoutedSource::new();
    let mut report = String::new();
    let mut prefetch = None;
    let resident = routed.add(Box::new(ResidentSource));
    let shared = SharedPinned::default();
    let mut pinned_index = None;
    for i in plan.layers(Home::Device) {
        routed.route(i as u64, resident);
    }
    let dev = plan.layers(Home::Device);
    if plan.streaming {
        let _ = writeln!(
            report,
            "path: layers {} resident on the device: nothing moves",
            ranges(&dev)
        );
    }

    // Pinned RAM: one page-locked buffer per layer, filled from the file now.
    let pinned_layers = plan.layers(Home::Pinned);
    if !pinned_layers.is_empty() {
        let total: u64 = pinned_layers
            .iter()
            .map(|&i| setup.layout.layers[i].bytes)
            .sum();
        let bar = bytes_bar(opts.verbose, total, "pinning RAM tier");
        for &i in &pinned_layers {
            let item = setup.layout.layers[i].item();
            shared
                .lock()
                .load_from_file(transfer, path, &item)
                .map_err(|e| match from_pipeline(e) {
                    EngineError::Stream { source, .. } => EngineError::OutOfMemory {
                        what: format!("pinned RAM for layer {i}"),
                        bytes: super::budget::show(setup.layout.layers[i].bytes),
                        reason: source.to_string(),
                    },
                    other => other,
                })?;
            bar.inc(setup.layout.layers[i].bytes);
        }
        bar.finish_and_clear();
        let choice = choose_source(&Location::PinnedRam, &MachineCaps::probe(path));
        let _ = writeln!(
            report,
            "path: layers {} -> {choice}",
            ranges(&pinned_layers)
        );
        let k = routed.add(Box::new(shared.clone()));
        pinned_index = Some(k);
        for i in pinned_layers {
            routed.route(i as u64, k);
        }
    }

    // Storage: the chosen path.
    let storage_layers = plan.layers(Home::Storage);
    if !storage_layers.is_empty() {
        let (src, why): (Box<dyn Source>, String) = match (storage, opts.path) {
            (Some(s), _) => {
                let kind = s.kind_for(&setup.layout.layers[storage_layers[0]].item());
                (s, format!("{kind}: source supplied by the caller"))
            }
            (None, DataPath::MmapBaseline) => (
                Box::new(MmapBaselineSource::open(path).map_err(from_pipeline)?),
                "mmap-baseline: the pageable mmap pointer handed straight to the copy (comparison point, no pinned tier)".into(),
            ),
            (None, DataPath::Mmap) => (
                Box::new(MmapSource::open(path, opts.io_threads).map_err(from_pipeline)?),
                format!("cpu-worker (mmap): {} threads copy out of an mmap into pinned staging (data path mmap)", opts.io_threads),
            ),
            (None, DataPath::Nvme) => {
                let bdf = opts.nvme_pci.clone().ok_or_else(|| {
                    EngineError::Usage(
                        "the NVMe data path needs the PCI address of the controller holding the model (EngineOptions::nvme_pci)"
                            .into(),
                    )
                })?;
                let reader = open_vfio(&bdf, path, opts.nvme_lba)?;
                (
                    Box::new(NvmeSource::new(reader)),
                    format!("nvme-direct: {bdf} read by the userspace driver into staging, then one copy"),
                )
            }
            (None, DataPath::Auto) if opts.nvme_pci.is_some() => {
                let bdf = opts.nvme_pci.clone().unwrap_or_default();
                let reader = open_vfio(&bdf, path, opts.nvme_lba)?;
                (
                    Box::new(NvmeSource::new(reader)),
                    format!("nvme-direct: {bdf} read by the userspace driver into staging, then one copy"),
                )
            }
            (None, DataPath::Auto | DataPath::Direct) => {
                let caps = MachineCaps::probe(path);
                let choice = choose_source(&Location::File(path.clone()), &caps);
                let f = FileSource::open(path, ReadMode::Direct, IoEngine::Auto)
                    .map_err(from_pipeline)?
                    .with_threads(opts.io_threads);
                let why = format!("{choice} [{}: {}]", f.engine_name(), f.reason());
                (Box::new(f), why)
            }
        };
        let (src, why) = if opts.prefetch > 0 && opts.path != DataPath::MmapBaseline {
            let items: Vec<_> = storage_layers
                .iter()
                .map(|&i| setup.layout.layers[i].item())
                .collect();
            let mut need = 0u64;
            for it in &items {
                need = need.max(src.staging_bytes(it).map_err(from_pipeline)?);
            }
            let need = usize::try_from(need).unwrap_or(usize::MAX);
            let mut bufs = Vec::with_capacity(opts.prefetch);
            for _ in 0..opts.prefetch {
                bufs.push(
                    transfer
                        .alloc_staging(need)
                        .map_err(|e| EngineError::OutOfMemory {
                            what: "storage read-ahead buffer".into(),
                            bytes: super::budget::show(need as u64),
                            reason: e.to_string(),
                        })?,
                );
            }
            let n = bufs.len();
            let pf = PrefetchSource::new(src, items, bufs);
            prefetch = Some(pf.totals());
            let pf: Box<dyn Source> = Box::new(pf);
            (
                pf,
                format!("{why}; read ahead across tokens by a thread into {n} page-locked buffers"),
            )
        } else {
            (src, why)
        };
        let _ = writeln!(report, "path: layers {} -> {why}", ranges(&storage_layers));
        let k = routed.add(src);
        for i in storage_layers {
            routed.route(i as u64, k);
        }
    }
    let skipped = plan.layers(Home::Skipped);
    if !skipped.is_empty() {
        let _ = writeln!(
            report,
            "path: layers {} skipped: never read",
            ranges(&skipped)
        );
    }
    let schedule = Schedule::new(
        setup
            .running
            .iter()
            .map(|&i| setup.layout.layers[i].item())
            .collect(),
    );
    if opts.verbose && plan.streaming {
        eprint!("{report}");
    }
    Ok(Sources {
        routed,
        pinned: shared,
        resident_index: resident,
        pinned_index,
        spill_index: None,
        schedule,
        report,
        prefetch,
    })
}

impl Sources {
    /// Re-routes running layer `layer` to `to` between passes (the schedule, which names every
    /// running layer, stays): to the device, it is read in place and its pinned copy (if any)
    /// is freed; to pinned RAM, it is read from the file into a buffer pinned by `transfer`
    /// (when that fails, it goes to storage instead); to storage, it is read through an mmap
    /// reader of the model with `io_threads` workers. Returns the home it got.
    pub fn reroute<T: Transfer>(
        &mut self,
        setup: &Setup,
        layer: usize,
        to: Home,
        transfer: &T,
        io_threads: usize,
    ) -> Result<Home> {
        let l = setup
            .layout
            .layers
            .get(layer)
            .ok_or_else(|| EngineError::Usage(format!("layer {layer} is not in the model")))?;
        let key = layer as u64;
        let home = match to {
            Home::Skipped => return Ok(Home::Skipped),
            Home::Device => {
                self.routed.route(key, self.resident_index);
                Home::Device
            }
            Home::Pinned => {
                let loaded = {
                    let mut p = self.pinned.lock();
                    p.contains(key) || p.load_from_file(transfer, &setup.path, &l.item()).is_ok()
                };
                if loaded {
                    let k = match self.pinned_index {
                        Some(k) => k,
                        None => *self
                            .pinned_index
                            .insert(self.routed.add(Box::new(self.pinned.clone()))),
                    };
                    self.routed.route(key, k);
                    return Ok(Home::Pinned);
                }
                return self.reroute(setup, layer, Home::Storage, transfer, io_threads);
            }
            Home::Storage => {
                let k = match self.spill_index {
                    Some(k) => k,
                    None => {
                        let m = MmapSource::open(&setup.path, io_threads.max(1))
                            .map_err(from_pipeline)?;
                        *self.spill_index.insert(self.routed.add(Box::new(m)))
                    }
                };
                self.routed.route(key, k);
                Home::Storage
            }
        };
        self.pinned.lock().remove(key);
        Ok(home)
    }
}
