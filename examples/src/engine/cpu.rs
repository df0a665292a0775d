//! The engine on the CPU reference backend: resident layers are read in place from the mapped
//! file, streamed layers arrive in host slots through the pipeline's CPU transfer, and
//! `cpu::forward_layer` runs on whichever buffer holds the layer. Prompts run as batches (each
//! streamed layer crosses once per batch), exactly like `cpu::Model`.

use std::time::Instant;

use llama_model::cpu::{embed, forward_layer, logits, Kernel, LayerWeights, State, TensorView};
use llama_model::PREFILL_CHUNK;
use slep_pipeline::{CpuTransfer, Pipeline, Source};

use super::error::{from_pipeline, EngineError, Result};
use super::layout::{GlobalTensor, LayerLayout};
use super::options::EngineOptions;
use super::plan::Home;
use super::setup::{setup, DeviceFacts, Setup};
use super::sources::{build, Sources};
use super::stats::EngineStats;

/// The CPU engine.
pub struct CpuEngine {
    setup: Setup,
    state: State,
    draft: Option<State>,
    pipeline: Option<Pipeline<CpuTransfer>>,
    sources: Sources,
    stats: EngineStats,
}

impl std::fmt::Debug for CpuEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuEngine")
            .field("path", &self.setup.path)
            .field("n_past", &self.state.n_past())
            .finish_non_exhaustive()
    }
}

fn cpu_err(e: llama_model::cpu::ForwardError) -> EngineError {
    EngineError::Compute(e.to_string())
}

fn global_view<'a>(file: &'a [u8], t: &'a GlobalTensor) -> Result<TensorView<'a>> {
    let data = file
        .get(t.range.clone())
        .ok_or_else(|| EngineError::Compute(format!("{} lies outside the file", t.name)))?;
    TensorView::new(&t.name, data, t.ggml_type, t.row_len, t.n_rows).map_err(cpu_err)
}

/// The nine weights of `layer` inside `bytes` (the layer's packed bytes).
pub fn layer_views<'a>(layer: &'a LayerLayout, bytes: &'a [u8]) -> Result<LayerWeights<'a>> {
    let mut v = Vec::with_capacity(9);
    for t in &layer.tensors {
        let data = bytes.get(t.range.clone()).ok_or_else(|| {
            EngineError::Compute(format!(
                "{}: the buffer holds {} bytes",
                t.name,
                bytes.len()
            ))
        })?;
        v.push(TensorView::new(&t.name, data, t.ggml_type, t.row_len, t.n_rows).map_err(cpu_err)?);
    }
    let arr: [TensorView<'a>; 9] = v
        .try_into()
        .map_err(|_| EngineError::Compute(format!("layer {} lacks tensors", layer.index)))?;
    Ok(LayerWeights::from_array(arr))
}

/// The packed bytes of a resident layer: its span in the mapped file (every real file has one).
fn resident_bytes<'a>(file: &'a [u8], layer: &LayerLayout) -> Result<&'a [u8]> {
    match layer.spans.as_slice() {
        [r] => file
            .get(r.start as usize..r.end as usize)
            .ok_or_else(|| EngineError::Compute(format!("layer {} lies outside the file", layer.index))),
        _ => Err(EngineError::Compute(format!(
            "layer {} is stored in {} pieces; the CPU engine runs resident layers in place and needs one",
            layer.index,
            layer.spans.len()
        ))),
    }
}

impl CpuEngine {
    /// Opens and plans `path`; `storage` replaces the storage path's source (tests, drivers).
    pub fn open(
        path: &std::path::Path,
        opts: &EngineOptions,
        storage: Option<Box<dyn Source>>,
    ) -> Result<Self> {
        let facts = DeviceFacts {
            free_device: super::budget::mem_available(),
            kv_value_bytes: 4,
            bandwidth: [20e9, 10e9, opts.storage_bw],
        };
        let setup = setup(path, opts, facts)?;
        let transfer = CpuTransfer::default();
        let sources = build(&setup, opts, &transfer, storage)?;
        let pipeline = if setup.plan.streaming {
            let slot = usize::try_from(setup.plan.slot_bytes).unwrap_or(usize::MAX);
            Some(Pipeline::new(transfer, setup.plan.slots, slot).map_err(from_pipeline)?)
        } else {
            None
        };
        let state = State::new(&setup.run_config, opts.ctx, Kernel::default());
        let draft = (!setup.draft.is_empty())
            .then(|| State::new(&setup.draft_config, opts.ctx, Kernel::default()));
        let lb: Vec<u64> = setup.layout.layers.iter().map(|l| l.bytes).collect();
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
            state,
            draft,
            pipeline,
            sources,
            stats,
        })
    }

    /// The opened model.
    pub fn setup(&self) -> &Setup {
        &self.setup
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

    /// Rolls back to the first `n` positions.
    pub fn truncate(&mut self, n: usize) {
        self.state.truncate(n);
    }

    /// Feeds `tokens` (batches of up to 512) and returns the logits after the last.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(EngineError::Usage("no tokens to feed".into()));
        }
        let start = self.state.n_past();
        let mut last = Vec::new();
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            match self.forward(chunk, false) {
                Ok(l) => last = l,
                Err(e) => {
                    self.state.truncate(start);
                    return Err(e);
                }
            }
        }
        Ok(last)
    }

    /// Feeds one token and returns the logits after it.
    pub fn decode(&mut self, token: u32) -> Result<Vec<f32>> {
        self.forward(&[token], false)
    }

    /// One pass of the full model over `tokens` (at most 512): the logits after every one of
    /// them, `tokens.len()` rows of the vocabulary size. The positions stay committed.
    pub fn verify(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.is_empty() || tokens.len() > PREFILL_CHUNK {
            return Err(EngineError::Usage(format!(
                "a verify pass takes 1 to {PREFILL_CHUNK} tokens, not {}",
                tokens.len()
            )));
        }
        self.forward(tokens, true)
    }

    /// Positions in the draft's KV cache (0 without a draft).
    pub fn draft_n_past(&self) -> usize {
        self.draft.as_ref().map_or(0, State::n_past)
    }

    /// Rolls the draft's cache back to its first `n` positions.
    pub fn draft_truncate(&mut self, n: usize) {
        if let Some(d) = &mut self.draft {
            d.truncate(n);
        }
    }

    /// Feeds `tokens` through the draft (its resident layers, then the final norm and LM
    /// head) and returns the logits after the last. All or nothing.
    pub fn draft_feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let Self { setup, draft, .. } = self;
        let state = draft.as_mut().ok_or_else(|| {
            EngineError::Usage("the engine was opened without draft layers".into())
        })?;
        if tokens.is_empty() {
            return Err(EngineError::Usage("no tokens to feed".into()));
        }
        let start = state.n_past();
        let r = (|| {
            let file = setup.file.as_bytes();
            let mut last = Vec::new();
            for chunk in tokens.chunks(PREFILL_CHUNK) {
                let hidden =
                    embed(&global_view(file, &setup.layout.token_embd)?, chunk).map_err(cpu_err)?;
                state.begin_batch(hidden).map_err(cpu_err)?;
                for (k, &i) in setup.draft.iter().enumerate() {
                    let layer = &setup.layout.layers[i];
                    let w = layer_views(layer, resident_bytes(file, layer)?)?;
                    forward_layer(k, &w, state).map_err(cpu_err)?;
                }
                state.end_batch();
                last = logits(
                    state.hidden(),
                    &global_view(file, &setup.layout.output_norm)?,
                    &global_view(file, &setup.layout.lm_head)?,
                    setup.config.rms_eps,
                    state.kernel(),
                )
                .map_err(cpu_err)?;
            }
            Ok(last)
        })();
        if r.is_err() {
            state.truncate(start);
        }
        r
    }

    fn forward(&mut self, tokens: &[u32], all_rows: bool) -> Result<Vec<f32>> {
        let t0 = Instant::now();
        let start = self.state.n_past();
        let r = self.forward_inner(tokens, all_rows);
        match r {
            Ok((logits, pstats)) => {
                self.stats
                    .add_pass(tokens.len(), t0.elapsed(), pstats.as_ref());
                if let Some(t) = self
                    .sources
                    .prefetch
                    .as_ref()
                    .and_then(|t| t.lock().ok().map(|g| *g))
                {
                    self.stats.add_prefetch(t);
                }
                Ok(logits)
            }
            Err(e) => {
                self.state.truncate(start);
                Err(e)
            }
        }
    }

    fn forward_inner(
        &mut self,
        tokens: &[u32],
        all_rows: bool,
    ) -> Result<(Vec<f32>, Option<slep_pipeline::PipelineStats>)> {
        let Self {
            setup,
            state,
            pipeline,
            sources,
            ..
        } = self;
        let file = setup.file.as_bytes();
        let hidden =
            embed(&global_view(file, &setup.layout.token_embd)?, tokens).map_err(cpu_err)?;
        state.begin_batch(hidden).map_err(cpu_err)?;
        let mut pstats = None;
        match pipeline {
            None => {
                for &i in &setup.running {
                    let layer = &setup.layout.layers[i];
                    let w = layer_views(layer, resident_bytes(file, layer)?)?;
                    let k = setup.compact[i].unwrap_or(i);
                    forward_layer(k, &w, state).map_err(cpu_err)?;
                }
            }
            Some(p) => {
                let layout = &setup.layout;
                let compact = &setup.compact;
                let stats = p
                    .run(&sources.schedule, &mut sources.routed, |ready| {
                        let i = ready.item.key as usize;
                        let layer = layout
                            .layers
                            .get(i)
                            .ok_or_else(|| format!("no layer {i}"))?;
                        let bytes = match ready.buffer() {
                            Some(slot) => {
                                ready.wait()?;
                                slot.as_slice().get(..ready.len).ok_or("slot too small")?
                            }
                            None => resident_bytes(file, layer)?,
                        };
                        let w = layer_views(layer, bytes)?;
                        let k = compact.get(i).copied().flatten().unwrap_or(i);
                        forward_layer(k, &w, state)?;
                        Ok(None)
                    })
                    .map_err(from_pipeline)?;
                pstats = Some(stats);
            }
        }
        state.end_batch();
        let (norm, head) = (
            global_view(file, &setup.layout.output_norm)?,
            global_view(file, &setup.layout.lm_head)?,
        );
        let hidden = state.hidden();
        let dim = setup.config.dim;
        let rows = if all_rows { tokens.len() } else { 1 };
        let mut out = Vec::new();
        for r in (0..rows).rev() {
            let end = hidden.len().saturating_sub(r * dim);
            let row = logits(
                &hidden[..end],
                &norm,
                &head,
                setup.config.rms_eps,
                state.kernel(),
            )
            .map_err(cpu_err)?;
            out.extend_from_slice(&row);
        }
        Ok((out, pstats))
    }
}
