//! The one interface the engine's compute backends implement ([`Backend`]: the CPU reference in
//! `cpu`, CUDA in `gpu`), and the logic they share ([`Core`]): the opened model and plan, the
//! pipeline pass over the running layers (resident ones in place, streamed ones from the
//! pipeline's slots), the statistics. Prefill chunking, all-or-nothing rollback and the batch
//! scheduler are written once above this trait ([`super::Engine`], [`super::batch`]).

use std::sync::Arc;
use std::time::Instant;

use slep_pipeline::{Pipeline, PipelineStats, Ready, Schedule, Source, Stage, Trace, Transfer};

use super::error::{from_pipeline, EngineError, Result};
use super::layout::LayerLayout;
use super::options::EngineOptions;
use super::plan::Home;
use super::rebalance::LayerMove;
use super::setup::Setup;
use super::sources::{build, Sources};
use super::stats::EngineStats;

/// What a pass computes after the last layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// Nothing (a prompt chunk that is not the last).
    None,
    /// The logits after the last token.
    Logits,
    /// The logits after every token (`tokens.len()` rows of the vocabulary).
    AllLogits,
    /// The greedy next token after the last token.
    Argmax,
    /// The greedy next token after every token.
    AllArgmax,
}

impl Head {
    /// True when the head wants every token's row.
    pub fn all_rows(self) -> bool {
        matches!(self, Head::AllLogits | Head::AllArgmax)
    }
}

/// What a pass returned (per [`Head`]).
#[derive(Debug, Clone, PartialEq)]
pub enum HeadOut {
    /// Nothing was asked for.
    None,
    /// Logits (one or more rows of the vocabulary).
    Logits(Vec<f32>),
    /// Greedy tokens (one per row asked for).
    Tokens(Vec<u32>),
}

impl HeadOut {
    /// The logits (empty when none were computed).
    pub fn into_logits(self) -> Vec<f32> {
        match self {
            HeadOut::Logits(l) => l,
            _ => Vec::new(),
        }
    }

    /// The greedy tokens: argmax of each `vocab`-wide row of logits, or the tokens themselves.
    pub fn into_tokens(self, vocab: usize) -> Vec<u32> {
        match self {
            HeadOut::None => Vec::new(),
            HeadOut::Tokens(t) => t,
            HeadOut::Logits(l) => l.chunks_exact(vocab.max(1)).map(super::argmax).collect(),
        }
    }
}

/// One sequence's part of a batched pass: `tokens` at positions `seq_len(seq)..` of sequence
/// slot `seq` (one decode token, or a prompt chunk), and whether the logits after its last
/// token are wanted.
#[derive(Debug, Clone, Copy)]
pub struct SeqRows<'a> {
    /// The sequence's slot (from [`Backend::seq_alloc`]).
    pub seq: usize,
    /// The new tokens.
    pub tokens: &'a [u32],
    /// Compute the logits after the last of them.
    pub logits: bool,
}

/// KV pool accounting of the batch path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvUsage {
    /// Blocks held by sequences.
    pub used: usize,
    /// Blocks in the pool.
    pub total: usize,
    /// Bytes per block (all layers).
    pub bytes_per_block: u64,
    /// Positions per block.
    pub block_positions: usize,
}

/// A compute backend of the engine. Object-safe and `Send`, so an engine can live on its own
/// thread. Calls that fail leave the caches where the caller can roll them back with
/// [`Backend::truncate`] / [`Backend::seq_truncate`].
pub trait Backend: Send {
    /// The opened model and its plan.
    fn setup(&self) -> &Setup;
    /// Statistics so far.
    fn stats(&self) -> &EngineStats;
    /// Statistics, to clear them.
    fn stats_mut(&mut self) -> &mut EngineStats;
    /// Pinned host-to-device bandwidth measured at start (GB/s; devices with a bus only).
    fn h2d_gbps(&self) -> Option<f64> {
        None
    }
    /// Most tokens one pass takes.
    fn max_pass_tokens(&self) -> usize;

    /// Positions in the single sequence's KV cache.
    fn n_past(&self) -> usize;
    /// Positions the single sequence's KV cache holds.
    fn max_context(&self) -> usize;
    /// Rolls the single sequence back to its first `n` positions.
    fn truncate(&mut self, n: usize);
    /// Forgets the single sequence (and the draft's).
    fn reset(&mut self);
    /// One pass of the full model over `tokens` (at most [`Backend::max_pass_tokens`]) of the
    /// single sequence; the positions stay committed.
    fn pass(&mut self, tokens: &[u32], head: Head) -> Result<HeadOut>;

    /// Positions in the draft's KV cache (0 without a draft).
    fn draft_n_past(&self) -> usize;
    /// Rolls the draft's cache back to its first `n` positions.
    fn draft_truncate(&mut self, n: usize);
    /// Feeds `tokens` through the draft layers into the draft's cache; `head` is
    /// [`Head::Logits`] or [`Head::Argmax`].
    fn draft_pass(&mut self, tokens: &[u32], head: Head) -> Result<HeadOut>;

    /// Reserves the KV of a new sequence for the batch path; its slot. Fails with a typed error
    /// when the pool is exhausted.
    fn seq_alloc(&mut self) -> Result<usize>;
    /// Frees a sequence's KV (unknown slots: no-op).
    fn seq_free(&mut self, seq: usize);
    /// Positions a batch sequence holds.
    fn seq_len(&self, seq: usize) -> usize;
    /// Rolls a batch sequence back to its first `n` positions.
    fn seq_truncate(&mut self, seq: usize, n: usize);
    /// One pass over the running layers for every entry of `rows` (each layer read once for all
    /// of them); the logits after the last token of each entry that asked for them.
    fn batch_pass(&mut self, rows: &[SeqRows<'_>]) -> Result<Vec<Option<Vec<f32>>>>;
    /// The batch KV pool's accounting.
    fn kv_usage(&self) -> KvUsage;

    /// The timeline of every pass, when opened with [`EngineOptions::trace`].
    fn trace(&self) -> Option<&Arc<Trace>> {
        None
    }
    /// The hybrid split of streamed layers between the bus and CPU threads, when there is one.
    fn hybrid(&self) -> Option<&super::hybrid::HybridPlan> {
        None
    }
    /// Every layer's home now (the plan's until layers move).
    fn homes(&self) -> Vec<Home> {
        self.setup().plan.homes.clone()
    }
    /// Whether this backend can grow its KV pool and move layers between steps
    /// ([`Backend::kv_grow`], [`Backend::kv_trim`], [`Backend::move_layers`]).
    fn can_grow_kv(&self) -> bool {
        false
    }
    /// Grows the batch KV pool by `blocks` blocks and `seqs` sequence slots between steps
    /// (block ids in use stay valid).
    fn kv_grow(&mut self, blocks: usize, seqs: usize) -> Result<()> {
        let _ = (blocks, seqs);
        Err(no_growth())
    }
    /// Shrinks the batch KV pool towards `keep` blocks, dropping only free blocks at its tail;
    /// the blocks it has now.
    fn kv_trim(&mut self, keep: usize) -> usize {
        let _ = keep;
        self.kv_usage().total
    }
    /// Moves layers between the device and the streamed tiers between steps (each move's `to`
    /// becomes the layer's home; a layer bound for pinned RAM that cannot be pinned streams
    /// from storage instead).
    fn move_layers(&mut self, moves: &[LayerMove]) -> Result<()> {
        if moves.is_empty() {
            return Ok(());
        }
        Err(no_growth())
    }
}

/// The error of a backend that cannot grow its KV pool.
pub fn no_growth() -> EngineError {
    EngineError::Usage(
        "this engine cannot grow its KV pool by moving layers off the device (it needs the multi-sequence engine with a plan that streams): open it without KV growth, or with more sequences".into(),
    )
}

/// What both backends share: the opened model, the pipeline and its sources, the statistics.
pub struct Core<T: Transfer> {
    /// The opened and planned model.
    pub setup: Setup,
    /// The streaming pipeline (`None` when every running layer is resident).
    pub pipeline: Option<Pipeline<T>>,
    /// The data paths.
    pub sources: Sources,
    /// Statistics so far.
    pub stats: EngineStats,
    /// Every layer's home now (the plan's until [`Core::move_layers`]).
    pub homes: Vec<Home>,
    /// Worker threads of a storage reader opened for demoted layers.
    io_threads: usize,
    /// The timeline of every pass ([`EngineOptions::trace`]).
    pub trace: Option<Arc<Trace>>,
}

impl<T: Transfer> std::fmt::Debug for Core<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("path", &self.setup.path)
            .field("streaming", &self.pipeline.is_some())
            .finish_non_exhaustive()
    }
}

/// Bytes one pass reads from each tier (device, pinned RAM, storage) with the layers at `homes`.
fn bytes_per_pass(setup: &Setup, homes: &[Home]) -> [u64; 3] {
    let from = |home: Home| -> u64 {
        homes
            .iter()
            .zip(&setup.layout.layers)
            .filter(|(h, _)| **h == home)
            .map(|(_, l)| l.bytes)
            .sum()
    };
    [from(Home::Device), from(Home::Pinned), from(Home::Storage)]
}

/// How a layer reaches the compute in one pass.
pub enum LayerData<'r, 'a, T: Transfer> {
    /// Resident: the backend finds it in its own buffers.
    Resident,
    /// In a pipeline slot (wait for its event before reading).
    Slot(&'r Ready<'a, T>, &'a T::Slot),
}

impl<T: Transfer> Core<T> {
    /// Opens the data paths of `setup`'s plan through `transfer` (the pinned tier loaded, the
    /// storage path opened; `storage` overrides it) and the pipeline when some layer streams.
    pub fn new(
        setup: Setup,
        opts: &EngineOptions,
        transfer: T,
        storage: Option<Box<dyn Source>>,
    ) -> Result<Self> {
        let sources = build(&setup, opts, &transfer, storage)?;
        let trace = opts.trace.then(|| Arc::new(Trace::new()));
        let pipeline = if setup.plan.streaming {
            let slot = usize::try_from(setup.plan.slot_bytes).unwrap_or(usize::MAX);
            let mut p = Pipeline::new(transfer, setup.plan.slots, slot).map_err(from_pipeline)?;
            p.set_trace(trace.clone());
            Some(p)
        } else {
            None
        };
        let stats = EngineStats {
            bytes_per_pass: bytes_per_pass(&setup, &setup.plan.homes),
            predicted_s: setup.plan.predicted_s,
            ..EngineStats::default()
        };
        let homes = setup.plan.homes.clone();
        Ok(Self {
            setup,
            pipeline,
            sources,
            stats,
            homes,
            io_threads: opts.io_threads,
            trace,
        })
    }

    /// Applies layer moves between passes: re-routes each layer's pipeline source (see
    /// [`Sources::reroute`]); the schedule stays. Needs the pipeline (a plan that streams),
    /// whose transfer pins the buffers of layers bound for pinned RAM. A move that fails stops
    /// there: the moves before it stay applied ([`Core::homes`] says where every layer is).
    pub fn move_layers(&mut self, moves: &[LayerMove]) -> Result<()> {
        if moves.is_empty() {
            return Ok(());
        }
        let Self {
            setup,
            pipeline,
            sources,
            stats,
            homes,
            io_threads,
            ..
        } = self;
        let Some(pipeline) = pipeline.as_ref() else {
            return Err(EngineError::Usage(
                "layers can move off the device only when the plan streams (it has no streaming slots)".into(),
            ));
        };
        let mut r = Ok(());
        for m in moves {
            match sources.reroute(setup, m.layer, m.to, pipeline.transfer(), *io_threads) {
                Ok(got) => {
                    if let Some(h) = homes.get_mut(m.layer) {
                        *h = got;
                    }
                }
                Err(e) => {
                    r = Err(e);
                    break;
                }
            }
        }
        stats.bytes_per_pass = bytes_per_pass(setup, homes);
        r
    }

    /// Runs every running layer once, in order, through `f(setup, compact index, layer, data)`:
    /// resident layers in place, streamed ones from the pipeline's slots. `f` returns the event
    /// after which the slot may be overwritten (device-side compute) or `None` when it is done
    /// with it. An error of `f` comes back as itself; a data path's as [`EngineError::Stream`].
    pub fn run_layers<F>(&mut self, f: F) -> Result<Option<PipelineStats>>
    where
        F: FnMut(&Setup, usize, &LayerLayout, LayerData<'_, '_, T>) -> Result<Option<T::Event>>,
    {
        self.run_layers_on(None, f)
    }

    /// [`Core::run_layers`] with the pipeline streaming `schedule` instead of the whole
    /// layers (e.g. only the device's rows of split layers; every running layer in order, keyed
    /// by its index).
    pub fn run_layers_on<F>(
        &mut self,
        schedule: Option<&Schedule>,
        mut f: F,
    ) -> Result<Option<PipelineStats>>
    where
        F: FnMut(&Setup, usize, &LayerLayout, LayerData<'_, '_, T>) -> Result<Option<T::Event>>,
    {
        let Self {
            setup,
            pipeline,
            sources,
            trace,
            ..
        } = self;
        let setup = &*setup;
        match pipeline {
            None => {
                for &i in &setup.running {
                    let k = setup.compact[i].unwrap_or(i);
                    let t = Instant::now();
                    f(setup, k, &setup.layout.layers[i], LayerData::Resident)?;
                    if let Some(tr) = trace {
                        tr.record(Stage::Compute, i as u64, t, Instant::now());
                    }
                }
                Ok(None)
            }
            Some(p) => {
                let mut failed: Option<EngineError> = None;
                let schedule = schedule.unwrap_or(&sources.schedule);
                let r = p.run(schedule, &mut sources.routed, |ready| {
                    let i = ready.item.key as usize;
                    let layer = setup.layout.layers.get(i).ok_or_else(|| {
                        format!("the schedule names layer {i}, which the model lacks")
                    })?;
                    let k = setup.compact.get(i).copied().flatten().unwrap_or(i);
                    let data = match ready.buffer() {
                        Some(slot) => LayerData::Slot(&ready, slot),
                        None => LayerData::Resident,
                    };
                    match f(setup, k, layer, data) {
                        Ok(ev) => Ok(ev),
                        Err(e) => {
                            let text = e.to_string();
                            failed = Some(e);
                            Err(text.into())
                        }
                    }
                });
                match (r, failed) {
                    (_, Some(e)) => Err(e),
                    (Ok(stats), None) => Ok(Some(stats)),
                    (Err(e), None) => Err(from_pipeline(e)),
                }
            }
        }
    }

    /// Records one pass of `tokens` tokens started at `t0`.
    pub fn record(&mut self, tokens: usize, t0: Instant, p: Option<&PipelineStats>) {
        self.stats.add_pass(tokens, t0.elapsed(), p);
        if let Some(t) = self
            .sources
            .prefetch
            .as_ref()
            .and_then(|t| t.lock().ok().map(|g| *g))
        {
            self.stats.add_prefetch(t);
        }
    }
}
