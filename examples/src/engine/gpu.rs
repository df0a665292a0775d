//! The engine on CUDA: resident layers uploaded to device buffers once, streamed layers copied
//! into the pipeline's device slots on its copy stream; the compute stream waits on each slot's
//! copy event, runs `cuda::forward_layer` on the slot, and records the release event after which
//! the copy engine may overwrite the slot. Prompts run token by token.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::CudaSlice;
use llama_model::cuda::{
    forward_layer, forward_layer_batch, CudaBackend, CudaError, DeviceLayerWeights, DeviceWeight,
    GpuBatch, GpuState,
};
use llama_model::{BATCHED_MIN_TOKENS, PREFILL_CHUNK};
use slep_pipeline::{CudaTransfer, Pipeline, PipelineStats, Source};

use super::error::{from_pipeline, EngineError, Result};
use super::layout::{GlobalTensor, LayerLayout};
use super::options::EngineOptions;
use super::plan::Home;
use super::setup::{setup, DeviceFacts, Setup};
use super::sources::{build, bytes_bar, Sources};
use super::stats::EngineStats;

/// A CUDA error as the engine's: allocation failures name the budget to lower.
fn gpu_err(what: &str) -> impl Fn(CudaError) -> EngineError + '_ {
    move |e| {
        let text = e.to_string();
        match e {
            CudaError::Unavailable(m) => EngineError::NoCuda(m),
            _ if text.contains("OUT_OF_MEMORY") => EngineError::OutOfMemory {
                what: what.to_string(),
                bytes: "?".into(),
                reason: text,
            },
            _ => EngineError::Compute(format!("{what}: {text}")),
        }
    }
}

fn upload(backend: &CudaBackend, bytes: &[u8], what: &str) -> Result<CudaSlice<u8>> {
    backend
        .stream()
        .clone_htod(bytes)
        .map_err(|e| EngineError::OutOfMemory {
            what: what.to_string(),
            bytes: super::budget::show(bytes.len() as u64),
            reason: e.to_string(),
        })
}

fn weight<'a>(
    buf: &'a CudaSlice<u8>,
    range: std::ops::Range<usize>,
    t: (gguf::GgmlType, usize, usize),
) -> Result<DeviceWeight<'a>> {
    if range.end > buf.len() {
        return Err(EngineError::Compute(format!(
            "tensor bytes {range:?} outside a buffer of {}",
            buf.len()
        )));
    }
    DeviceWeight::new(buf.slice(range), t.0, t.1, t.2).map_err(gpu_err("weight view"))
}

fn global<'a>(buf: &'a CudaSlice<u8>, t: &GlobalTensor) -> Result<DeviceWeight<'a>> {
    weight(buf, 0..t.range.len(), (t.ggml_type, t.row_len, t.n_rows))
}

/// The nine device views of `layer` inside `buf` (its packed bytes).
fn layer_views<'a>(layer: &LayerLayout, buf: &'a CudaSlice<u8>) -> Result<DeviceLayerWeights<'a>> {
    let mut v = Vec::with_capacity(9);
    for t in &layer.tensors {
        v.push(weight(
            buf,
            t.range.clone(),
            (t.ggml_type, t.row_len, t.n_rows),
        )?);
    }
    let arr: [DeviceWeight<'a>; 9] = v
        .try_into()
        .map_err(|_| EngineError::Compute(format!("layer {} lacks tensors", layer.index)))?;
    Ok(DeviceLayerWeights::from_array(arr))
}

/// The CUDA engine.
pub struct GpuEngine {
    setup: Setup,
    backend: Arc<CudaBackend>,
    state: GpuState,
    draft: Option<GpuState>,
    vbatch: Option<GpuBatch>,
    embd: CudaSlice<u8>,
    norm: CudaSlice<u8>,
    head: Option<CudaSlice<u8>>,
    resident: HashMap<usize, CudaSlice<u8>>,
    pipeline: Option<Pipeline<CudaTransfer>>,
    sources: Sources,
    stats: EngineStats,
    h2d_gbps: f64,
}

impl std::fmt::Debug for GpuEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuEngine")
            .field("path", &self.setup.path)
            .finish_non_exhaustive()
    }
}

impl GpuEngine {
    /// Opens `path` on GPU 0: measures the links, plans, uploads the resident tier, pins the RAM
    /// tier and opens the storage path (`storage` overrides it).
    pub fn open(
        path: &std::path::Path,
        opts: &EngineOptions,
        storage: Option<Box<dyn Source>>,
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
            kv_value_bytes: 2,
            bandwidth: [d2d / 2.0, h2d_gbps * 1e9, opts.storage_bw],
        };
        let setup = setup(path, opts, facts)?;
        let file = setup.file.as_bytes();
        let lay = &setup.layout;
        let embd = upload(
            &backend,
            &file[lay.token_embd.range.clone()],
            "token embedding",
        )?;
        let norm = upload(
            &backend,
            &file[lay.output_norm.range.clone()],
            "output norm",
        )?;
        let head = if lay.lm_head.range == lay.token_embd.range {
            None
        } else {
            Some(upload(
                &backend,
                &file[lay.lm_head.range.clone()],
                "LM head",
            )?)
        };
        let dev = setup.plan.layers(Home::Device);
        let total: u64 = dev.iter().map(|&i| lay.layers[i].bytes).sum();
        let bar = bytes_bar(opts.verbose, total, "uploading resident layers");
        let mut resident = HashMap::new();
        for &i in &dev {
            let l = &lay.layers[i];
            let buf = match l.spans.as_slice() {
                [r] => upload(
                    &backend,
                    &file[r.start as usize..r.end as usize],
                    "resident layer",
                )?,
                _ => upload(&backend, &l.pack(file)?, "resident layer")?,
            };
            resident.insert(i, buf);
            bar.inc(l.bytes);
        }
        bar.finish_and_clear();
        let sources = build(&setup, opts, &transfer, storage)?;
        let pipeline = if setup.plan.streaming {
            let slot = usize::try_from(setup.plan.slot_bytes).unwrap_or(usize::MAX);
            Some(Pipeline::new(transfer, setup.plan.slots, slot).map_err(from_pipeline)?)
        } else {
            None
        };
        let state = GpuState::new(backend.clone(), &setup.run_config, opts.ctx)
            .map_err(gpu_err("KV cache and activations"))?;
        let draft = if setup.draft.is_empty() {
            None
        } else {
            Some(
                GpuState::new(backend.clone(), &setup.draft_config, opts.ctx)
                    .map_err(gpu_err("the draft's KV cache and activations"))?,
            )
        };
        let lb: Vec<u64> = lay.layers.iter().map(|l| l.bytes).collect();
        let stats = EngineStats {
            bytes_per_pass: [
                setup.plan.bytes_from(Home::Device, &lb),
                setup.plan.bytes_from(Home::Pinned, &lb),
                setup.plan.bytes_from(Home::Storage, &lb),
            ],
            predicted_s: setup.plan.predicted_s,
            ..EngineStats::default()
        };
        Ok(Self {
            setup,
            backend,
            state,
            draft,
            vbatch: None,
            embd,
            norm,
            head,
            resident,
            pipeline,
            sources,
            stats,
            h2d_gbps,
        })
    }

    /// The opened model.
    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<CudaBackend> {
        &self.backend
    }

    /// Pinned host-to-device bandwidth measured at start, GB/s.
    pub fn h2d_gbps(&self) -> f64 {
        self.h2d_gbps
    }

    /// Statistics so far.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Statistics, to clear them.
    pub fn stats_mut(&mut self) -> &mut EngineStats {
        &mut self.stats
    }

    /// Positions in the KV cache.
    pub fn n_past(&self) -> usize {
        self.state.n_past()
    }

    /// Positions the KV cache holds.
    pub fn max_context(&self) -> usize {
        self.state.max_context()
    }

    /// Forgets the sequence.
    pub fn reset(&mut self) {
        self.state.reset();
        if let Some(d) = &mut self.draft {
            d.reset();
        }
    }

    /// Positions in the draft's KV cache (0 without a draft).
    pub fn draft_n_past(&self) -> usize {
        self.draft.as_ref().map_or(0, GpuState::n_past)
    }

    /// Rolls the draft's cache back to its first `n` positions.
    pub fn draft_truncate(&mut self, n: usize) {
        if let Some(d) = &mut self.draft {
            d.truncate(n);
        }
    }

    /// Feeds `tokens` one by one through the draft (its device-resident layers), then runs
    /// `head` on the draft's hidden state. All or nothing.
    fn draft_run<T>(
        &mut self,
        tokens: &[u32],
        head: impl FnOnce(
            &mut GpuState,
            &DeviceWeight<'_>,
            &DeviceWeight<'_>,
        ) -> std::result::Result<T, CudaError>,
    ) -> Result<T> {
        let Self {
            setup,
            draft,
            resident,
            embd,
            norm,
            head: hbuf,
            ..
        } = self;
        let state = draft.as_mut().ok_or_else(|| {
            EngineError::Usage("the engine was opened without draft layers".into())
        })?;
        if tokens.is_empty() {
            return Err(EngineError::Usage("no tokens to feed".into()));
        }
        let start = state.n_past();
        let r = (|| {
            let lay = &setup.layout;
            let e = global(embd, &lay.token_embd)?;
            for &t in tokens {
                state
                    .begin_token(&e, t)
                    .map_err(gpu_err("draft embedding"))?;
                for (k, &i) in setup.draft.iter().enumerate() {
                    let buf = resident.get(&i).ok_or_else(|| {
                        EngineError::Compute(format!("draft layer {i} is not on the device"))
                    })?;
                    forward_layer(k, &layer_views(&lay.layers[i], buf)?, state)
                        .map_err(gpu_err("draft layer"))?;
                }
                state.end_token().map_err(gpu_err("draft end of token"))?;
            }
            let n = global(norm, &lay.output_norm)?;
            let h = global(hbuf.as_ref().unwrap_or(embd), &lay.lm_head)?;
            head(state, &n, &h).map_err(gpu_err("draft LM head"))
        })();
        if r.is_err() {
            state.truncate(start);
        }
        r
    }

    /// Feeds `tokens` through the draft; the logits after the last.
    pub fn draft_feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.draft_run(tokens, |s, n, h| s.head(n, h))
    }

    /// Feeds `tokens` through the draft; its greedy next token (argmax on the GPU).
    pub fn draft_feed_argmax(&mut self, tokens: &[u32]) -> Result<u32> {
        self.draft_run(tokens, |s, n, h| s.head_argmax(n, h))
    }

    /// One batched pass of the full model over `tokens` (every streamed layer crosses the bus
    /// once), then `head` on the batch's rows. Positions stay committed; on error the cache
    /// is rolled back.
    fn verify_with<T>(
        &mut self,
        tokens: &[u32],
        head: impl FnOnce(
            &mut GpuBatch,
            &GpuState,
            &DeviceWeight<'_>,
            &DeviceWeight<'_>,
        ) -> std::result::Result<T, CudaError>,
    ) -> Result<T> {
        if tokens.is_empty() || tokens.len() > PREFILL_CHUNK {
            return Err(EngineError::Usage(format!(
                "a verify pass takes 1 to {PREFILL_CHUNK} tokens, not {}",
                tokens.len()
            )));
        }
        let t0 = Instant::now();
        let start = self.state.n_past();
        let mut batch = match self.vbatch.take() {
            Some(b) => b,
            None => GpuBatch::new(&self.state).map_err(gpu_err("batch"))?,
        };
        let r = (|| {
            let embd = global(&self.embd, &self.setup.layout.token_embd)?;
            batch
                .begin(&mut self.state, &embd, tokens)
                .map_err(gpu_err("batch embedding"))?;
            let p = self.run_layers(|k, w, s| forward_layer_batch(k, w, s, &mut batch))?;
            batch
                .end(&mut self.state)
                .map_err(gpu_err("end of batch"))?;
            let lay = &self.setup.layout;
            let n = global(&self.norm, &lay.output_norm)?;
            let h = global(self.head.as_ref().unwrap_or(&self.embd), &lay.lm_head)?;
            let v = head(&mut batch, &self.state, &n, &h).map_err(gpu_err("verify LM head"))?;
            Ok((v, p))
        })();
        match r {
            Ok((v, p)) => {
                self.vbatch = Some(batch);
                self.stats.add_pass(tokens.len(), t0.elapsed(), p.as_ref());
                self.note_prefetch();
                Ok(v)
            }
            Err(e) => {
                batch.cancel(&mut self.state);
                self.state.truncate(start);
                Err(e)
            }
        }
    }

    /// One batched pass over `tokens`: the logits after each (`tokens.len()` rows).
    pub fn verify(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.verify_with(tokens, |b, s, n, h| b.head_all(s, n, h))
    }

    /// One batched pass over `tokens`: the greedy next token after each.
    pub fn verify_argmax(&mut self, tokens: &[u32]) -> Result<Vec<u32>> {
        self.verify_with(tokens, |b, s, n, h| b.head_argmax_all(s, n, h))
    }

    /// Rolls back to the first `n` positions.
    pub fn truncate(&mut self, n: usize) {
        self.state.truncate(n);
    }

    /// Runs every running layer once, in order, through `f` (one token or a batch): resident
    /// layers from their device buffers, streamed ones from the pipeline's slots (the compute
    /// stream waits on the slot's copy event; the slot is released by an event recorded after
    /// the layer's kernels).
    fn run_layers(
        &mut self,
        mut f: impl FnMut(
            usize,
            &DeviceLayerWeights<'_>,
            &mut GpuState,
        ) -> std::result::Result<(), CudaError>,
    ) -> Result<Option<PipelineStats>> {
        let Self {
            setup,
            state,
            resident,
            pipeline,
            sources,
            ..
        } = self;
        let lay = &setup.layout;
        match pipeline {
            None => {
                for &i in &setup.running {
                    let buf = resident.get(&i).ok_or_else(|| {
                        EngineError::Compute(format!("layer {i} is not resident"))
                    })?;
                    let k = setup.compact[i].unwrap_or(i);
                    f(k, &layer_views(&lay.layers[i], buf)?, state).map_err(gpu_err("layer"))?;
                }
                Ok(None)
            }
            Some(p) => {
                let compact = &setup.compact;
                let stats = p
                    .run(&sources.schedule, &mut sources.routed, |ready| {
                        let i = ready.item.key as usize;
                        let layer = lay.layers.get(i).ok_or_else(|| format!("no layer {i}"))?;
                        let k = compact.get(i).copied().flatten().unwrap_or(i);
                        match ready.buffer() {
                            None => {
                                let buf = resident
                                    .get(&i)
                                    .ok_or_else(|| format!("layer {i} is not resident"))?;
                                f(k, &layer_views(layer, buf)?, state)?;
                                Ok(None)
                            }
                            Some(slot) => {
                                let stream = state.backend().stream().clone();
                                if let Some(ev) = ready.event() {
                                    stream.wait(ev.event()).map_err(|e| e.to_string())?;
                                }
                                f(k, &layer_views(layer, slot.slice())?, state)?;
                                Ok(Some(ready.transfer().release_signal(&stream)?))
                            }
                        }
                    })
                    .map_err(from_pipeline)?;
                Ok(Some(stats))
            }
        }
    }

    /// Runs every layer for one token (embedding in, hidden state out, position committed).
    fn layers(&mut self, token: u32) -> Result<Option<PipelineStats>> {
        let embd = global(&self.embd, &self.setup.layout.token_embd)?;
        self.state
            .begin_token(&embd, token)
            .map_err(gpu_err("embedding"))?;
        let out = self.run_layers(forward_layer)?;
        self.state.end_token().map_err(gpu_err("end of token"))?;
        Ok(out)
    }

    /// Feeds `tokens` as batches of up to `PREFILL_CHUNK` through the batched layer forward
    /// (tensor-core GEMMs): every streamed layer crosses the bus once per batch, not once per
    /// token. All or nothing: on error the cache is rolled back.
    fn feed_batched(&mut self, tokens: &[u32]) -> Result<()> {
        let start = self.state.n_past();
        let mut batch = GpuBatch::new(&self.state).map_err(gpu_err("batch"))?;
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            let t0 = Instant::now();
            let r = (|| {
                let embd = global(&self.embd, &self.setup.layout.token_embd)?;
                batch
                    .begin(&mut self.state, &embd, chunk)
                    .map_err(gpu_err("batch embedding"))?;
                let p = self.run_layers(|k, w, s| forward_layer_batch(k, w, s, &mut batch))?;
                batch
                    .end(&mut self.state)
                    .map_err(gpu_err("end of batch"))?;
                Ok(p)
            })();
            match r {
                Ok(p) => {
                    self.stats.add_pass(chunk.len(), t0.elapsed(), p.as_ref());
                    self.note_prefetch();
                }
                Err(e) => {
                    batch.cancel(&mut self.state);
                    self.state.truncate(start);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn note_prefetch(&mut self) {
        if let Some(t) = self
            .sources
            .prefetch
            .as_ref()
            .and_then(|t| t.lock().ok().map(|g| *g))
        {
            self.stats.add_prefetch(t);
        }
    }

    /// The final norm and LM head on the current hidden state.
    fn head_of<T>(
        &mut self,
        head: impl FnOnce(
            &mut GpuState,
            &DeviceWeight<'_>,
            &DeviceWeight<'_>,
        ) -> std::result::Result<T, CudaError>,
    ) -> Result<T> {
        let lay = &self.setup.layout;
        let norm = global(&self.norm, &lay.output_norm)?;
        let hbuf = self.head.as_ref().unwrap_or(&self.embd);
        let hw = global(hbuf, &lay.lm_head)?;
        head(&mut self.state, &norm, &hw).map_err(gpu_err("LM head"))
    }

    fn step<T>(
        &mut self,
        token: u32,
        head: impl FnOnce(
            &mut GpuState,
            &DeviceWeight<'_>,
            &DeviceWeight<'_>,
        ) -> std::result::Result<T, CudaError>,
    ) -> Result<T> {
        let t0 = Instant::now();
        let start = self.state.n_past();
        let r = self
            .layers(token)
            .and_then(|p| Ok((self.head_of(head)?, p)));
        match r {
            Ok((v, p)) => {
                self.stats.add_pass(1, t0.elapsed(), p.as_ref());
                self.note_prefetch();
                Ok(v)
            }
            Err(e) => {
                self.state.truncate(start);
                Err(e)
            }
        }
    }

    /// Feeds one token, returns the logits after it.
    pub fn decode(&mut self, token: u32) -> Result<Vec<f32>> {
        self.step(token, |s, n, h| s.head(n, h))
    }

    /// Feeds one token, returns the greedy next token (argmax on the GPU).
    pub fn decode_argmax(&mut self, token: u32) -> Result<u32> {
        self.step(token, |s, n, h| s.head_argmax(n, h))
    }

    /// Feeds tokens (4 or more as batches, fewer one by one, as `CudaModel`), returns the
    /// logits after the last.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.len() >= BATCHED_MIN_TOKENS {
            let start = self.state.n_past();
            self.feed_batched(tokens)?;
            return self
                .head_of(|s, n, h| s.head(n, h))
                .inspect_err(|_| self.state.truncate(start));
        }
        let (last, rest) = tokens
            .split_last()
            .ok_or_else(|| EngineError::Usage("no tokens to feed".into()))?;
        let start = self.state.n_past();
        for &t in rest {
            if let Err(e) = self.step(t, |_, _, _| Ok(())) {
                self.state.truncate(start);
                return Err(e);
            }
        }
        self.decode(*last)
            .inspect_err(|_| self.state.truncate(start))
    }

    /// As [`GpuEngine::prefill`], returning the greedy next token.
    pub fn prefill_argmax(&mut self, tokens: &[u32]) -> Result<u32> {
        if tokens.len() >= BATCHED_MIN_TOKENS {
            let start = self.state.n_past();
            self.feed_batched(tokens)?;
            return self
                .head_of(|s, n, h| s.head_argmax(n, h))
                .inspect_err(|_| self.state.truncate(start));
        }
        let (last, rest) = tokens
            .split_last()
            .ok_or_else(|| EngineError::Usage("no tokens to feed".into()))?;
        let start = self.state.n_past();
        for &t in rest {
            if let Err(e) = self.step(t, |_, _, _| Ok(())) {
                self.state.truncate(start);
                return Err(e);
            }
        }
        self.decode_argmax(*last)
            .inspect_err(|_| self.state.truncate(start))
    }
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
