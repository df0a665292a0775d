//! The engine on CUDA: resident layers uploaded to device buffers once, streamed layers copied
//! into the pipeline's device slots on its copy stream; the compute stream waits on each slot's
//! copy event, runs `cuda::forward_layer` (one token) or `cuda::forward_layer_batch` (a batch
//! of tokens, tensor-core GEMMs) on the slot, and records the release event after which the copy
//! engine may overwrite the slot. The batch path holds one `GpuState` per sequence and runs
//! every sequence through each layer while the layer is on the device.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::CudaSlice;
use llama_model::cuda::{
    forward_layer, forward_layer_batch, CudaBackend, CudaError, DeviceLayerWeights, DeviceWeight,
    GpuBatch, GpuState, PREFILL_CHUNK,
};
use slep_pipeline::{CudaSignal, CudaTransfer, Source};

use super::backend::{Backend, Core, Head, HeadOut, KvUsage, LayerData, SeqRows};
use super::budget::kv_bytes;
use super::error::{from_pipeline, EngineError, Result};
use super::layout::{GlobalTensor, LayerLayout};
use super::options::EngineOptions;
use super::plan::Home;
use super::setup::{setup, DeviceFacts, Setup};
use super::sources::bytes_bar;
use super::stats::EngineStats;

/// Prompts of at least this many tokens go through batched prefill, as in `CudaModel::prefill`
/// (llama-model's `cuda/model/prefill.rs`), so streamed and resident prefills run the same kernels.
const BATCHED_MIN_TOKENS: usize = 4;

/// Bytes per KV value of the GPU cache (f16).
pub const KV_VALUE_BYTES: u64 = 2;

/// A CUDA error in `what` as the engine's: allocation failures name the budget to lower.
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
            source => EngineError::Cuda {
                what: what.to_string(),
                source,
            },
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

/// The device buffers that never move: embedding, final norm, LM head, resident layers.
struct Weights {
    embd: CudaSlice<u8>,
    norm: CudaSlice<u8>,
    head: Option<CudaSlice<u8>>,
    resident: HashMap<usize, CudaSlice<u8>>,
}

impl Weights {
    fn embd<'a>(&'a self, setup: &Setup) -> Result<DeviceWeight<'a>> {
        global(&self.embd, &setup.layout.token_embd)
    }

    fn norm_head<'a>(&'a self, setup: &Setup) -> Result<(DeviceWeight<'a>, DeviceWeight<'a>)> {
        let lay = &setup.layout;
        Ok((
            global(&self.norm, &lay.output_norm)?,
            global(self.head.as_ref().unwrap_or(&self.embd), &lay.lm_head)?,
        ))
    }

    fn resident(&self, i: usize) -> Result<&CudaSlice<u8>> {
        self.resident
            .get(&i)
            .ok_or_else(|| EngineError::Compute(format!("layer {i} is not on the device")))
    }

    /// The device views of `layer` in this pass: its resident buffer, or the slot after the
    /// compute stream waits for the slot's copy. Returns the views and, for a slot, the
    /// transfer to release it with.
    fn views<'a>(
        &'a self,
        layer: &LayerLayout,
        data: &LayerData<'_, 'a, CudaTransfer>,
        state_stream: &Arc<cudarc::driver::CudaStream>,
    ) -> Result<DeviceLayerWeights<'a>> {
        match data {
            LayerData::Resident => layer_views(layer, self.resident(layer.index)?),
            LayerData::Slot(ready, slot) => {
                if let Some(ev) = ready.event() {
                    state_stream
                        .wait(ev.event())
                        .map_err(|e| EngineError::Compute(e.to_string()))?;
                }
                layer_views(layer, slot.slice())
            }
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

/// One sequence of the batch path.
struct GpuSeq {
    state: GpuState,
    batch: GpuBatch,
}

/// The CUDA engine.
pub struct GpuEngine {
    core: Core<CudaTransfer>,
    backend: Arc<CudaBackend>,
    weights: Weights,
    state: GpuState,
    draft: Option<GpuState>,
    vbatch: Option<GpuBatch>,
    seqs: Vec<Option<GpuSeq>>,
    spare: Vec<GpuSeq>,
    h2d_gbps: f64,
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
        let backend = Arc::new(CudaBackend::new(0).map_err(gpu_err("CUDA start"))?);
        let transfer = CudaTransfer::new(0).map_err(|e| EngineError::NoCuda(e.to_string()))?;
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
        let core = Core::new(setup, opts, transfer, storage)?;
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
        let seqs = (0..if batch { setup.max_seqs } else { 0 })
            .map(|_| None)
            .collect();
        Ok(Self {
            core,
            backend,
            weights,
            state,
            draft,
            vbatch: None,
            seqs,
            spare: Vec::new(),
            h2d_gbps,
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
            ..
        } = self;
        state
            .begin_token(&weights.embd(&core.setup)?, token)
            .map_err(gpu_err("embedding"))?;
        let stream = state.backend().stream().clone();
        let p = core.run_layers(|_, k, layer, data| {
            let w = weights.views(layer, &data, &stream)?;
            forward_layer(k, &w, state).map_err(gpu_err("layer"))?;
            release(&data, &stream)
        })?;
        state.end_token().map_err(gpu_err("end of token"))?;
        core.record(1, t0, p.as_ref());
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
            let p = core.run_layers(|_, k, layer, data| {
                let w = weights.views(layer, &data, &stream)?;
                forward_layer_batch(k, &w, state, &mut batch).map_err(gpu_err("batch layer"))?;
                release(&data, &stream)
            })?;
            batch.end(state).map_err(gpu_err("end of batch"))?;
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

/// Uploads the embedding, final norm, LM head and every resident layer.
fn upload_weights(backend: &CudaBackend, setup: &Setup, verbose: bool) -> Result<Weights> {
    let file = setup.file.as_bytes();
    let lay = &setup.layout;
    let embd = upload(
        backend,
        &file[lay.token_embd.range.clone()],
        "token embedding",
    )?;
    let norm = upload(backend, &file[lay.output_norm.range.clone()], "output norm")?;
    let head = if lay.lm_head.range == lay.token_embd.range {
        None
    } else {
        Some(upload(
            backend,
            &file[lay.lm_head.range.clone()],
            "LM head",
        )?)
    };
    let dev = setup.plan.layers(Home::Device);
    let total: u64 = dev.iter().map(|&i| lay.layers[i].bytes).sum();
    let bar = bytes_bar(verbose, total, "uploading resident layers");
    let mut resident = HashMap::new();
    for &i in &dev {
        let l = &lay.layers[i];
        let buf = match l.spans.as_slice() {
            [r] => upload(
                backend,
                &file[r.start as usize..r.end as usize],
                "resident layer",
            )?,
            _ => upload(backend, &l.pack(file)?, "resident layer")?,
        };
        resident.insert(i, buf);
        bar.inc(l.bytes);
    }
    bar.finish_and_clear();
    Ok(Weights {
        embd,
        norm,
        head,
        resident,
    })
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
        let slot = self.seqs.iter().position(Option::is_none).ok_or_else(|| {
            EngineError::Sequence(format!(
                "the KV pool holds {} sequences and all are in use: finish or cancel one first",
                self.seqs.len()
            ))
        })?;
        let seq = match self.spare.pop() {
            Some(s) => s,
            None => {
                let setup = &self.core.setup;
                let state = GpuState::new(self.backend.clone(), &setup.run_config, setup.ctx)
                    .map_err(gpu_err("a sequence's KV cache"))?;
                let batch = GpuBatch::new(&state).map_err(gpu_err("a sequence's batch"))?;
                GpuSeq { state, batch }
            }
        };
        self.seqs[slot] = Some(seq);
        Ok(slot)
    }

    fn seq_free(&mut self, seq: usize) {
        if let Some(mut s) = self.seqs.get_mut(seq).and_then(Option::take) {
            s.batch.cancel(&mut s.state);
            s.state.reset();
            self.spare.push(s);
        }
    }

    fn seq_len(&self, seq: usize) -> usize {
        self.seqs
            .get(seq)
            .and_then(Option::as_ref)
            .map_or(0, |s| s.state.n_past())
    }

    fn seq_truncate(&mut self, seq: usize, n: usize) {
        if let Some(Some(s)) = self.seqs.get_mut(seq) {
            s.batch.cancel(&mut s.state);
            s.state.truncate(n);
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
            seqs,
            backend,
            ..
        } = self;
        let mut taken: Vec<GpuSeq> = Vec::with_capacity(rows.len());
        let mut bad = None;
        for r in rows {
            match seqs.get_mut(r.seq).and_then(Option::take) {
                Some(s) if !r.tokens.is_empty() => taken.push(s),
                other => {
                    if let Some(s) = other {
                        seqs[r.seq] = Some(s);
                    }
                    bad = Some(r.seq);
                    break;
                }
            }
        }
        let r = match bad {
            Some(s) => Err(EngineError::Usage(format!(
                "batch pass: sequence slot {s} is not held or has no tokens"
            ))),
            None => (|| {
                let embd = weights.embd(&core.setup)?;
                for (r, s) in rows.iter().zip(taken.iter_mut()) {
                    if let [t] = r.tokens {
                        s.state
                            .begin_token(&embd, *t)
                            .map_err(gpu_err("embedding"))?;
                    } else {
                        s.batch
                            .begin(&mut s.state, &embd, r.tokens)
                            .map_err(gpu_err("batch embedding"))?;
                    }
                }
                let stream = backend.stream().clone();
                let p = core.run_layers(|_, k, layer, data| {
                    let w = weights.views(layer, &data, &stream)?;
                    for (r, s) in rows.iter().zip(taken.iter_mut()) {
                        if r.tokens.len() == 1 {
                            forward_layer(k, &w, &mut s.state).map_err(gpu_err("layer"))?;
                        } else {
                            forward_layer_batch(k, &w, &mut s.state, &mut s.batch)
                                .map_err(gpu_err("batch layer"))?;
                        }
                    }
                    release(&data, &stream)
                })?;
                let (n, h) = weights.norm_head(&core.setup)?;
                let mut out = Vec::with_capacity(rows.len());
                for (r, s) in rows.iter().zip(taken.iter_mut()) {
                    if r.tokens.len() == 1 {
                        s.state.end_token().map_err(gpu_err("end of token"))?;
                    } else {
                        s.batch.end(&mut s.state).map_err(gpu_err("end of batch"))?;
                    }
                    out.push(if r.logits {
                        Some(s.state.head(&n, &h).map_err(gpu_err("LM head"))?)
                    } else {
                        None
                    });
                }
                Ok((out, p))
            })(),
        };
        let failed = r.is_err();
        for (r, mut s) in rows.iter().zip(taken) {
            if failed {
                s.batch.cancel(&mut s.state);
            }
            seqs[r.seq] = Some(s);
        }
        let (out, p) = r?;
        let n: usize = rows.iter().map(|r| r.tokens.len()).sum();
        core.record(n, t0, p.as_ref());
        Ok(out)
    }

    fn kv_usage(&self) -> KvUsage {
        let setup = &self.core.setup;
        KvUsage {
            used: self.seqs.iter().filter(|s| s.is_some()).count(),
            total: self.seqs.len(),
            bytes_per_block: kv_bytes(
                setup.running.len(),
                setup.config.kv_dim(),
                setup.ctx,
                KV_VALUE_BYTES,
            ),
            block_positions: setup.ctx,
        }
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
