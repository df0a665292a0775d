//! The engine on CUDA: resident layers uploaded to device buffers once, streamed layers copied
//! into the pipeline's device slots on its copy stream; the compute stream waits on each slot's
//! copy event, runs `cuda::forward_layer` (one token) or `cuda::forward_layer_batch` (a batch
//! of tokens, tensor-core GEMMs) on the slot, and records the release event after which the copy
//! engine may overwrite the slot. The batch path runs llama-model's `cuda::forward_layer_multi`
//! over its paged VRAM KV pool (`GpuMultiState`): every sequence's rows through each layer while
//! the layer is on the device, the weights read once (few-row matvec or tensor-core GEMM),
//! paged attention over each sequence's own blocks in one launch. Layers split by rows with CPU
//! threads (`--hybrid`) run `cuda::forward_layer_hybrid` (one token) or
//! `cuda::forward_layer_multi_hybrid` (steps of a few rows) on the device's part of the slot.
//! The weights that do not stream live in `gpu_weights`.

use std::sync::Arc;
use std::time::Instant;

use llama_model::cuda::{
    forward_layer, forward_layer_batch, forward_layer_hybrid, forward_layer_multi,
    forward_layer_multi_hybrid, CudaBackend, CudaError, GpuBatch, GpuMultiState, GpuState,
    HybridScratch, MultiHybridScratch,
};
use llama_model::paged::{KvPool, KvPoolOptions, KvSeq, StepPart, KV_BLOCK};
use llama_model::{BATCHED_MIN_TOKENS, PREFILL_CHUNK};
use slep_pipeline::{CudaSignal, CudaTransfer, Source, Trace};

use super::backend::{Backend, Core, Head, HeadOut, KvUsage, LayerData, SeqRows};
use super::error::{from_pipeline, EngineError, Result};
use super::gpu_hybrid::{finish, run_layer};
use super::gpu_trace::LayerTimer;
use super::gpu_weights::{layer_views, upload_layer, upload_weights, Weights};
use super::hybrid::{HybridPlan, PassMeasure};
use super::hybrid_batch::MAX_HYBRID_ROWS;
use super::options::EngineOptions;
use super::plan::Home;
use super::rebalance::LayerMove;
use super::setup::{setup, DeviceFacts, Setup};
use super::stats::EngineStats;

/// Bytes per KV value of the GPU cache (f16).
pub const KV_VALUE_BYTES: u64 = 2;

/// A CUDA error in `what` as the engine's: allocation failures name the budget to lower.
pub(super) fn gpu_err(what: &str) -> impl Fn(CudaError) -> EngineError + '_ {
    move |e| {
        let text = e.to_string();
        match e {
            CudaError::Unavailable(m) => EngineError::NoCuda(m),
            _ if text.contains("OUT_OF_MEMORY") => EngineError::OutOfMemory {
                what: what.to_string(),
                bytes: "?".into(),
                reason: text,
            },
            source => EngineError::Cuda {
                what: what.to_string(),
                source,
            },
        }
    }
}

/// The event after which the compute stream is done with the slot of `data` (none for a
/// resident layer).
fn release(
    data: &LayerData<'_, '_, CudaTransfer>,
    stream: &Arc<cudarc::driver::CudaStream>,
) -> Result<Option<CudaSignal>> {
    match data {
        LayerData::Resident => Ok(None),
        LayerData::Slot(ready, _) => ready
            .transfer()
            .release_signal(stream)
            .map(Some)
            .map_err(from_pipeline),
    }
}

/// The CUDA engine.
pub struct GpuEngine {
    core: Core<CudaTransfer>,
    backend: Arc<CudaBackend>,
    weights: Weights,
    state: GpuState,
    draft: Option<GpuState>,
    vbatch: Option<GpuBatch>,
    /// The batch path: every sequence's paged KV in VRAM (batch engines only).
    multi: Option<GpuMultiState>,
    h2d_gbps: f64,
    /// Layers split between the bus and CPU threads, with their exchange buffers
    /// ([`EngineOptions::hybrid`]; decode tokens of the single sequence).
    hybrid: Option<(HybridPlan, HybridScratch)>,
    /// The exchange buffers of split layers in multi-sequence steps (batch engines with a
    /// hybrid plan).
    multi_hybrid: Option<MultiHybridScratch>,
    /// Print what the engine learns while it runs (the hybrid share).
    verbose: bool,
}

impl std::fmt::Debug for GpuEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuEngine")
            .field("path", &self.core.setup.path)
            .finish_non_exhaustive()
    }
}

impl GpuEngine {
    /// Opens `path` on GPU 0: measures the links, plans, uploads the resident tier, pins the RAM
    /// tier and opens the storage path (`storage` overrides it); `batch`: for the
    /// multi-sequence engine.
    pub fn open(
        path: &std::path::Path,
        opts: &EngineOptions,
        storage: Option<Box<dyn Source>>,
        batch: bool,
    ) -> Result<Self> {
        let options = crate::cuda_options().map_err(EngineError::NoCuda)?;
        let backend =
            Arc::new(CudaBackend::with_options(0, &options).map_err(gpu_err("CUDA start"))?);
        // The copy stream in the compute context (event tracking off): slot reuse and frees are
        // ordered by the pipeline's events, reads by the copy event each layer waits on.
        let transfer = CudaTransfer::on_context(backend.context().clone())
            .map_err(|e| EngineError::NoCuda(e.to_string()))?;
        let h2d_gbps = transfer
            .measure_pinned_h2d(256 << 20, 4)
            .map_err(from_pipeline)?;
        let d2d = backend
            .measure_d2d_bandwidth(256 << 20, 4)
            .map_err(gpu_err("bandwidth probe"))?;
        backend
            .context()
            .bind_to_thread()
            .map_err(|e| EngineError::Compute(e.to_string()))?;
        let free = cudarc::driver::result::mem_get_info()
            .ok()
            .map(|(f, _)| f as u64);
        if opts.verbose {
            eprintln!(
                "engine: CUDA {}: pinned host-to-device {:.1} GB/s, device memory {:.0} GB/s (measured now){}",
                backend.arch(),
                h2d_gbps,
                d2d / 1e9,
                free.map_or(String::new(), |f| format!(", {} free", super::budget::show(f)))
            );
        }
        let facts = DeviceFacts {
            free_device: free,
            kv_value_bytes: KV_VALUE_BYTES,
            bandwidth: [d2d / 2.0, h2d_gbps * 1e9, opts.storage_bw],
        };
        let setup = setup(path, opts, facts, batch)?;
        let weights = upload_weights(&backend, &setup, opts.verbose)?;
        let mut core = Core::new(setup, opts, transfer, storage)?;
        let setup = &core.setup;
        // The batch path keeps its sequences' states; the single-sequence state is then a
        // one-position stub.
        let single_ctx = if batch { 1 } else { setup.ctx };
        let state = GpuState::new(backend.clone(), &setup.run_config, single_ctx)
            .map_err(gpu_err("KV cache and activations"))?;
        let draft = if setup.draft.is_empty() {
            None
        } else {
            Some(
                GpuState::new(backend.clone(), &setup.draft_config, setup.ctx)
                    .map_err(gpu_err("the draft's KV cache and activations"))?,
            )
        };
        let multi = if batch {
            Some(
                GpuMultiState::new(
                    backend.clone(),
                    &setup.run_config,
                    KvPoolOptions::for_sequences(setup.max_seqs, setup.ctx),
                )
                .map_err(gpu_err("the KV pool"))?,
            )
        } else {
            None
        };
        let hybrid = {
            let pinned = core.sources.pinned.clone();
            match HybridPlan::new(
                &core.setup,
                &core.homes,
                opts.hybrid,
                opts.hybrid_kernel,
                |i| pinned.lock().memory(i as u64),
            )? {
                Some(plan) => {
                    if opts.verbose {
                        eprint!("{}", plan.report);
                        if batch && !plan.layers.is_empty() {
                            eprintln!(
                                "hybrid: multi-sequence steps of up to {MAX_HYBRID_ROWS} rows split too{}",
                                if opts.hybrid == super::options::Hybrid::Auto {
                                    ", each batch size learning its own share from its first steps"
                                } else {
                                    ", at the same share"
                                }
                            );
                        }
                    }
                    core.stats.predicted_s = plan.predicted_s;
                    let scratch =
                        HybridScratch::new(&state).map_err(gpu_err("hybrid host buffers"))?;
                    Some((plan, scratch))
                }
                None => None,
            }
        };
        let multi_hybrid = match (&hybrid, &multi) {
            (Some(_), Some(m)) => Some(
                MultiHybridScratch::new(m, MAX_HYBRID_ROWS)
                    .map_err(gpu_err("hybrid host buffers"))?,
            ),
            _ => None,
        };
        Ok(Self {
            core,
            backend,
            weights,
            state,
            draft,
            vbatch: None,
            multi,
            h2d_gbps,
            hybrid,
            multi_hybrid,
            verbose: opts.verbose,
        })
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<CudaBackend> {
        &self.backend
    }

    /// Feeds one token of the single sequence through every layer (position committed).
    fn token_pass(&mut self, token: u32) -> Result<()> {
        let t0 = Instant::now();
        let Self {
            core,
            weights,
            state,
            hybrid,
            verbose,
            ..
        } = self;
        state
            .begin_token(&weights.embd(&core.setup)?, token)
            .map_err(gpu_err("embedding"))?;
        let stream = state.backend().stream().clone();
        let mut timer = LayerTimer::start(core.trace.clone(), &stream)?;
        let trace = core.trace.clone();
        let (schedule, mut split) = match hybrid {
            Some((plan, scratch)) => (Some(&plan.schedule), Some((&*plan, scratch))),
            None => (None, None),
        };
        let mut cpu = PassMeasure::default();
        let p = core.run_layers_on(schedule, |_, k, layer, data| {
            let (cpu, t) = (&mut cpu, trace.as_ref());
            run_layer(
                weights,
                split.as_mut(),
                layer,
                &data,
                &stream,
                &mut timer,
                cpu,
                t,
                |w, host| match host {
                    Some((h, sc)) => {
                        forward_layer_hybrid(k, w, h, state, sc).map_err(gpu_err("hybrid layer"))
                    }
                    None => forward_layer(k, w, state)
                        .map(|()| Vec::new())
                        .map_err(gpu_err("layer")),
                },
            )?;
            release(&data, &stream)
        })?;
        state.end_token().map_err(gpu_err("end of token"))?;
        timer.finish()?;
        core.record(1, t0, p.as_ref());
        finish(&mut cpu, &mut core.stats, t0.elapsed(), p.as_ref());
        if let (Some((plan, _)), Some(_)) = (hybrid.as_mut(), p.as_ref()) {
            let learnt = plan.learn(&core.setup, &cpu)?;
            core.stats.predicted_s = plan.predicted_s;
            if let Some(msg) = learnt {
                if *verbose {
                    eprintln!("{msg}");
                }
            }
        }
        Ok(())
    }

    /// One batched pass of the single sequence over `tokens` (every streamed layer crosses the
    /// bus once), then `head` on the batch's rows. On error the batch is cancelled.
    fn batched_pass(&mut self, tokens: &[u32], head: Head) -> Result<HeadOut> {
        let t0 = Instant::now();
        let mut batch = match self.vbatch.take() {
            Some(b) => b,
            None => GpuBatch::new(&self.state).map_err(gpu_err("batch"))?,
        };
        let Self {
            core,
            weights,
            state,
            ..
        } = self;
        let r = (|| {
            batch
                .begin(state, &weights.embd(&core.setup)?, tokens)
                .map_err(gpu_err("batch embedding"))?;
            let stream = state.backend().stream().clone();
            let mut timer = LayerTimer::start(core.trace.clone(), &stream)?;
            let p = core.run_layers(|_, k, layer, data| {
                let w = weights.views(layer, &data, &stream)?;
                timer.before(layer.index, &stream)?;
                forward_layer_batch(k, &w, state, &mut batch).map_err(gpu_err("batch layer"))?;
                timer.after(&stream)?;
                release(&data, &stream)
            })?;
            batch.end(state).map_err(gpu_err("end of batch"))?;
            timer.finish()?;
            let (n, h) = weights.norm_head(&core.setup)?;
            let out = match head {
                Head::None => HeadOut::None,
                Head::Logits => HeadOut::Logits(state.head(&n, &h).map_err(gpu_err("LM head"))?),
                Head::Argmax => HeadOut::Tokens(vec![state
                    .head_argmax(&n, &h)
                    .map_err(gpu_err("LM head"))?]),
                Head::AllLogits => {
                    HeadOut::Logits(batch.head_all(state, &n, &h).map_err(gpu_err("LM head"))?)
                }
                Head::AllArgmax => HeadOut::Tokens(
                    batch
                        .head_argmax_all(state, &n, &h)
                        .map_err(gpu_err("LM head"))?,
                ),
            };
            Ok((out, p))
        })();
        match r {
            Ok((out, p)) => {
                self.vbatch = Some(batch);
                self.core.record(tokens.len(), t0, p.as_ref());
                Ok(out)
            }
            Err(e) => {
                batch.cancel(&mut self.state);
                Err(e)
            }
        }
    }

    /// The final norm and LM head on the single sequence's hidden state.
    fn head(&mut self, head: Head) -> Result<HeadOut> {
        let (n, h) = self.weights.norm_head(&self.core.setup)?;
        Ok(match head {
            Head::Logits => HeadOut::Logits(self.state.head(&n, &h).map_err(gpu_err("LM head"))?),
            Head::Argmax => HeadOut::Tokens(vec![self
                .state
                .head_argmax(&n, &h)
                .map_err(gpu_err("LM head"))?]),
            _ => HeadOut::None,
        })
    }
}

impl Backend for GpuEngine {
    fn setup(&self) -> &Setup {
        &self.core.setup
    }

    fn stats(&self) -> &EngineStats {
        &self.core.stats
    }

    fn stats_mut(&mut self) -> &mut EngineStats {
        &mut self.core.stats
    }

    fn h2d_gbps(&self) -> Option<f64> {
        Some(self.h2d_gbps)
    }

    fn max_pass_tokens(&self) -> usize {
        PREFILL_CHUNK
    }

    fn n_past(&self) -> usize {
        self.state.n_past()
    }

    fn max_context(&self) -> usize {
        self.state.max_context()
    }

    fn truncate(&mut self, n: usize) {
        self.state.truncate(n);
    }

    fn reset(&mut self) {
        self.state.reset();
        if let Some(d) = &mut self.draft {
            d.reset();
        }
    }

    fn pass(&mut self, tokens: &[u32], head: Head) -> Result<HeadOut> {
        if tokens.is_empty() || tokens.len() > PREFILL_CHUNK {
            return Err(EngineError::Usage(format!(
                "a pass takes 1 to {PREFILL_CHUNK} tokens, not {}",
                tokens.len()
            )));
        }
        if head.all_rows() || tokens.len() >= BATCHED_MIN_TOKENS {
            return self.batched_pass(tokens, head);
        }
        for &t in tokens {
            self.token_pass(t)?;
        }
        self.head(head)
    }

    fn draft_n_past(&self) -> usize {
        self.draft.as_ref().map_or(0, GpuState::n_past)
    }

    fn draft_truncate(&mut self, n: usize) {
        if let Some(d) = &mut self.draft {
            d.truncate(n);
        }
    }

    fn draft_pass(&mut self, tokens: &[u32], head: Head) -> Result<HeadOut> {
        let Self {
            core,
            draft,
            weights,
            ..
        } = self;
        let setup = &core.setup;
        let state = draft.as_mut().ok_or_else(|| {
            EngineError::Usage("the engine was opened without draft layers".into())
        })?;
        let e = weights.embd(setup)?;
        for &t in tokens {
            state
                .begin_token(&e, t)
                .map_err(gpu_err("draft embedding"))?;
            for (k, &i) in setup.draft.iter().enumerate() {
                let w = layer_views(&setup.layout.layers[i], weights.resident(i)?)?;
                forward_layer(k, &w, state).map_err(gpu_err("draft layer"))?;
            }
            state.end_token().map_err(gpu_err("draft end of token"))?;
        }
        let (n, h) = weights.norm_head(setup)?;
        Ok(match head {
            Head::Argmax => HeadOut::Tokens(vec![state
                .head_argmax(&n, &h)
                .map_err(gpu_err("draft LM head"))?]),
            _ => HeadOut::Logits(state.head(&n, &h).map_err(gpu_err("draft LM head"))?),
        })
    }

    fn seq_alloc(&mut self) -> Result<usize> {
        let multi = self.multi.as_mut().ok_or_else(no_pool)?;
        let seq = multi.add_seq().map_err(|e| match e {
            CudaError::Kv(k) => {
                EngineError::Sequence(format!("{k}: finish or cancel a sequence first"))
            }
            other => gpu_err("adding a sequence")(other),
        })?;
        Ok(seq.0 as usize)
    }

    fn seq_free(&mut self, seq: usize) {
        if let Some(m) = &mut self.multi {
            m.remove_seq(KvSeq(seq as u32));
        }
    }

    fn seq_len(&self, seq: usize) -> usize {
        self.multi
            .as_ref()
            .and_then(|m| m.seq_len(KvSeq(seq as u32)))
            .unwrap_or(0)
    }

    fn seq_truncate(&mut self, seq: usize, n: usize) {
        if let Some(m) = &mut self.multi {
            m.cancel_step();
            m.truncate(KvSeq(seq as u32), n);
        }
    }

    fn batch_pass(&mut self, rows: &[SeqRows<'_>]) -> Result<Vec<Option<Vec<f32>>>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let t0 = Instant::now();
        let Self {
            core,
            weights,
            multi,
            hybrid,
            multi_hybrid,
            verbose,
            ..
        } = self;
        let multi = multi.as_mut().ok_or_else(no_pool)?;
        let parts: Vec<StepPart> = rows
            .iter()
            .map(|r| StepPart {
                seq: KvSeq(r.seq as u32),
                tokens: r.tokens.to_vec(),
                want_logits: r.logits,
            })
            .collect();
        let n_rows: usize = parts.iter().map(|p| p.tokens.len()).sum();
        if let Some((plan, _)) = hybrid.as_mut() {
            plan.split_for_rows(&core.setup, n_rows)?;
        }
        let (schedule, mut split) = match (hybrid.as_ref(), multi_hybrid.as_mut()) {
            (Some((plan, _)), Some(sc)) if !plan.layers.is_empty() => {
                (Some(&plan.schedule), Some((plan, sc)))
            }
            _ => (None, None),
        };
        let trace = core.trace.clone();
        let mut cpu = PassMeasure::default();
        let r = (|| {
            multi
                .begin_step(&weights.embd(&core.setup)?, &parts)
                .map_err(gpu_err("the step's embedding"))?;
            let stream = multi.stream().clone();
            let mut timer = LayerTimer::start(core.trace.clone(), &stream)?;
            let p = core.run_layers_on(schedule, |_, k, layer, data| {
                let (cpu, t) = (&mut cpu, trace.as_ref());
                run_layer(
                    weights,
                    split.as_mut(),
                    layer,
                    &data,
                    &stream,
                    &mut timer,
                    cpu,
                    t,
                    |w, host| match host {
                        Some((h, sc)) => forward_layer_multi_hybrid(k, w, h, multi, sc)
                            .map_err(gpu_err("hybrid layer")),
                        None => forward_layer_multi(k, w, multi)
                            .map(|()| Vec::new())
                            .map_err(gpu_err("layer")),
                    },
                )?;
                release(&data, &stream)
            })?;
            multi.end_step().map_err(gpu_err("the step's end"))?;
            let (n, h) = weights.norm_head(&core.setup)?;
            let got = multi.logits(&n, &h).map_err(gpu_err("LM head"))?;
            timer.finish()?;
            Ok((got, p))
        })();
        let (got, p) = r.inspect_err(|_| multi.cancel_step())?;
        let mut out: Vec<Option<Vec<f32>>> = vec![None; rows.len()];
        for (seq, l) in got {
            if let Some(i) = rows.iter().position(|r| r.seq == seq.0 as usize) {
                out[i] = Some(l);
            }
        }
        core.record(n_rows, t0, p.as_ref());
        finish(&mut cpu, &mut core.stats, t0.elapsed(), p.as_ref());
        if let (Some((plan, _)), Some(_)) = (hybrid.as_mut(), p.as_ref()) {
            if let Some(msg) = plan.learn_rows(n_rows, &cpu) {
                if *verbose {
                    eprintln!("{msg}");
                }
            }
        }
        Ok(out)
    }

    fn hybrid(&self) -> Option<&HybridPlan> {
        self.hybrid.as_ref().map(|(p, _)| p)
    }

    fn homes(&self) -> Vec<Home> {
        self.core.homes.clone()
    }

    fn trace(&self) -> Option<&Arc<Trace>> {
        self.core.trace.as_ref()
    }

    /// A layer moved off the device frees its buffer (in stream order, after the kernels that
    /// read it); one moved onto it is uploaded from the mapped file before it is routed there.
    fn can_grow_kv(&self) -> bool {
        self.multi.is_some() && self.core.pipeline.is_some()
    }

    fn kv_grow(&mut self, blocks: usize, seqs: usize) -> Result<()> {
        let multi = self.multi.as_mut().ok_or_else(no_pool)?;
        multi
            .grow_pool(blocks, seqs)
            .map_err(gpu_err("growing the KV pool"))
    }

    fn kv_trim(&mut self, keep: usize) -> usize {
        match &mut self.multi {
            Some(m) => m.trim_pool(keep),
            None => 0,
        }
    }

    fn move_layers(&mut self, moves: &[LayerMove]) -> Result<()> {
        let Self {
            core,
            backend,
            weights,
            ..
        } = self;
        for m in moves.iter().filter(|m| m.to == Home::Device) {
            if let std::collections::hash_map::Entry::Vacant(v) = weights.resident.entry(m.layer) {
                v.insert(upload_layer(backend, &core.setup, m.layer)?);
            }
        }
        let r = core.move_layers(moves);
        // Keep the buffers of layers that run from the device (and of the draft's layers).
        let (homes, draft) = (&core.homes, &core.setup.draft);
        weights
            .resident
            .retain(|i, _| homes.get(*i) == Some(&Home::Device) || draft.contains(i));
        // Split only layers still homed in pinned RAM.
        let rehomed = match self.hybrid.as_mut() {
            Some((plan, _)) => plan.rehome(&core.setup, &core.homes),
            None => Ok(()),
        };
        r.and(rehomed)
    }

    fn kv_usage(&self) -> KvUsage {
        match &self.multi {
            Some(m) => KvUsage {
                used: m.pool().used_blocks(),
                total: m.pool().total_blocks(),
                bytes_per_block: KvPool::bytes_per_block(m.config()),
                block_positions: KV_BLOCK,
            },
            None => KvUsage::default(),
        }
    }
}

fn no_pool() -> EngineError {
    EngineError::Usage("the engine was opened for one sequence; open a batch engine".into())
}

/// Free memory of GPU 0 in bytes, or `None` where there is no usable CUDA driver.
pub fn free_device_memory() -> Option<u64> {
    slep_pipeline::cuda_available().ok()?;
    let ctx = std::panic::catch_unwind(|| cudarc::driver::CudaContext::new(0))
        .ok()?
        .ok()?;
    ctx.bind_to_thread().ok()?;
    cudarc::driver::result::mem_get_info()
        .ok()
        .map(|(f, _)| f as u64)
}
