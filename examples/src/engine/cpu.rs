//! The engine on the CPU reference backend: resident layers are read in place from the mapped
//! file, streamed layers arrive in host slots through the pipeline's CPU transfer, and
//! `cpu::forward_layer` runs on whichever buffer holds the layer. A pass feeds a batch of tokens
//! (each streamed layer crosses once per pass), exactly like `cpu::Model`. The batch path runs
//! `cpu::forward_layer_multi` over llama-model's paged KV pool (`MultiState`): every sequence's
//! rows through each layer at once, the weights read once.

use std::time::Instant;

use llama_model::cpu::{
    embed, forward_layer, forward_layer_multi, logits, on_pool, Kernel, LayerWeights, MultiState,
    State, TensorView,
};
use llama_model::paged::{KvPool, KvPoolOptions, KvSeq, StepPart, KV_BLOCK};
use llama_model::PREFILL_CHUNK;
use slep_pipeline::{CpuTransfer, Source};

use super::backend::{Backend, Core, Head, HeadOut, KvUsage, LayerData, SeqRows};
use super::error::{forward_err, EngineError, Result};
use super::layout::{GlobalTensor, LayerLayout};
use super::options::EngineOptions;
use super::plan::Home;
use super::rebalance::LayerMove;
use super::setup::{setup, DeviceFacts, Setup};
use super::stats::EngineStats;

/// Bytes per KV value of the single-sequence CPU cache (f32).
pub const KV_VALUE_BYTES: u64 = 4;

/// The CPU engine.
pub struct CpuEngine {
    core: Core<CpuTransfer>,
    state: State,
    draft: Option<State>,
    /// The batch path: every sequence's paged KV and the step's rows (batch engines only).
    multi: Option<MultiState>,
}

impl std::fmt::Debug for CpuEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuEngine")
            .field("path", &self.core.setup.path)
            .field("n_past", &self.state.n_past())
            .finish_non_exhaustive()
    }
}

fn global_view<'a>(file: &'a [u8], t: &'a GlobalTensor) -> Result<TensorView<'a>> {
    let data = file
        .get(t.range.clone())
        .ok_or_else(|| EngineError::Compute(format!("{} lies outside the file", t.name)))?;
    TensorView::new(&t.name, data, t.ggml_type, t.row_len, t.n_rows).map_err(forward_err(&t.name))
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
        v.push(
            TensorView::new(&t.name, data, t.ggml_type, t.row_len, t.n_rows)
                .map_err(forward_err(&t.name))?,
        );
    }
    let arr: [TensorView<'a>; 9] = v
        .try_into()
        .map_err(|_| EngineError::Compute(format!("layer {} lacks tensors", layer.index)))?;
    Ok(LayerWeights::from_array(arr))
}

/// The packed bytes of a resident layer: its span in the mapped file (every real file has one).
fn resident_bytes<'a>(file: &'a [u8], layer: &LayerLayout) -> Result<&'a [u8]> {
    match layer.spans.as_slice() {
        [r] => file.get(r.start as usize..r.end as usize).ok_or_else(|| {
            EngineError::Compute(format!("layer {} lies outside the file", layer.index))
        }),
        _ => Err(EngineError::Compute(format!(
            "layer {} is stored in {} pieces; the CPU engine runs resident layers in place and needs one",
            layer.index,
            layer.spans.len()
        ))),
    }
}

/// The bytes of `layer` in this pass: in place from the file, or the slot once its copy is done.
fn layer_bytes<'a>(
    file: &'a [u8],
    layer: &LayerLayout,
    data: &LayerData<'_, 'a, CpuTransfer>,
) -> Result<&'a [u8]> {
    match data {
        LayerData::Resident => resident_bytes(file, layer),
        LayerData::Slot(ready, slot) => {
            ready.wait().map_err(super::error::from_pipeline)?;
            slot.as_slice().get(..ready.len).ok_or_else(|| {
                EngineError::Compute(format!(
                    "layer {}: the slot is smaller than the layer",
                    layer.index
                ))
            })
        }
    }
}

fn no_pool() -> EngineError {
    EngineError::Usage("the engine was opened for one sequence; open a batch engine".into())
}

/// Undoes a batch begun at `start` that failed inside the layers (some layers already hold its
/// keys and values): commits it, then truncates every layer back to `start`.
fn rollback(state: &mut State, start: usize) {
    state.end_batch();
    state.truncate(start);
}

/// The final norm and LM head on the last row of `hidden` (`dim` wide).
fn head_row(setup: &Setup, hidden: &[f32], kernel: Kernel) -> Result<Vec<f32>> {
    let file = setup.file.as_bytes();
    logits(
        hidden,
        &global_view(file, &setup.layout.output_norm)?,
        &global_view(file, &setup.layout.lm_head)?,
        setup.config.rms_eps,
        kernel,
    )
    .map_err(forward_err("the LM head"))
}

/// The rows `head` asks for, after a pass that left `state`'s hidden states.
fn head_of(setup: &Setup, state: &State, n: usize, head: Head) -> Result<HeadOut> {
    let hidden = state.hidden();
    let dim = setup.config.dim;
    let rows = match head {
        Head::None => return Ok(HeadOut::None),
        Head::Logits | Head::Argmax => 1,
        Head::AllLogits | Head::AllArgmax => n,
    };
    let mut out = Vec::new();
    for r in (0..rows).rev() {
        let end = hidden.len().saturating_sub(r * dim);
        out.extend_from_slice(&head_row(setup, &hidden[..end], state.kernel())?);
    }
    Ok(match head {
        Head::Argmax | Head::AllArgmax => {
            HeadOut::Tokens(HeadOut::Logits(out).into_tokens(setup.config.vocab_size))
        }
        _ => HeadOut::Logits(out),
    })
}

impl CpuEngine {
    /// Opens and plans `path`; `storage` replaces the storage path's source (tests, drivers);
    /// `batch`: for the multi-sequence engine.
    pub fn open(
        path: &std::path::Path,
        opts: &EngineOptions,
        storage: Option<Box<dyn Source>>,
        batch: bool,
    ) -> Result<Self> {
        let facts = DeviceFacts {
            free_device: super::budget::mem_available(),
            kv_value_bytes: KV_VALUE_BYTES,
            bandwidth: [20e9, 10e9, opts.storage_bw],
        };
        let setup = setup(path, opts, facts, batch)?;
        let core = Core::new(setup, opts, CpuTransfer::default(), storage)?;
        let setup = &core.setup;
        let state = State::new(&setup.run_config, setup.ctx, Kernel::default());
        let draft = (!setup.draft.is_empty())
            .then(|| State::new(&setup.draft_config, setup.ctx, Kernel::default()));
        let multi = if batch {
            Some(
                MultiState::new(
                    &setup.run_config,
                    KvPoolOptions::for_sequences(setup.max_seqs, setup.ctx),
                    Kernel::default(),
                )
                .map_err(forward_err("the KV pool"))?,
            )
        } else {
            None
        };
        Ok(Self {
            core,
            state,
            draft,
            multi,
        })
    }
}

impl Backend for CpuEngine {
    fn setup(&self) -> &Setup {
        &self.core.setup
    }

    fn stats(&self) -> &EngineStats {
        &self.core.stats
    }

    fn stats_mut(&mut self) -> &mut EngineStats {
        &mut self.core.stats
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
        let t0 = Instant::now();
        let Self { core, state, .. } = self;
        let file = core.setup.file.as_bytes();
        let hidden = embed(&global_view(file, &core.setup.layout.token_embd)?, tokens)
            .map_err(forward_err("the embedding"))?;
        let start = state.n_past();
        state
            .begin_batch(hidden)
            .map_err(forward_err("the batch"))?;
        // On a rayon thread: the layers' products then need no thread switch each.
        let p = on_pool(|| {
            core.run_layers(|setup, k, layer, data| {
                let file = setup.file.as_bytes();
                let w = layer_views(layer, layer_bytes(file, layer, &data)?)?;
                forward_layer(k, &w, state)
                    .map_err(forward_err(&format!("layer {}", layer.index)))?;
                Ok(None)
            })
        })
        .inspect_err(|_| rollback(state, start))?;
        state.end_batch();
        let out = head_of(&core.setup, state, tokens.len(), head)?;
        core.record(tokens.len(), t0, p.as_ref());
        Ok(out)
    }

    fn draft_n_past(&self) -> usize {
        self.draft.as_ref().map_or(0, State::n_past)
    }

    fn draft_truncate(&mut self, n: usize) {
        if let Some(d) = &mut self.draft {
            d.truncate(n);
        }
    }

    fn draft_pass(&mut self, tokens: &[u32], head: Head) -> Result<HeadOut> {
        let Self { core, draft, .. } = self;
        let setup = &core.setup;
        let state = draft.as_mut().ok_or_else(|| {
            EngineError::Usage("the engine was opened without draft layers".into())
        })?;
        let file = setup.file.as_bytes();
        let mut out = HeadOut::None;
        for (c, chunk) in tokens.chunks(PREFILL_CHUNK).enumerate() {
            let hidden = embed(&global_view(file, &setup.layout.token_embd)?, chunk)
                .map_err(forward_err("the draft's embedding"))?;
            let start = state.n_past();
            state
                .begin_batch(hidden)
                .map_err(forward_err("the draft's batch"))?;
            let r = on_pool(|| {
                for (k, &i) in setup.draft.iter().enumerate() {
                    let layer = &setup.layout.layers[i];
                    let w = layer_views(layer, resident_bytes(file, layer)?)?;
                    forward_layer(k, &w, state).map_err(forward_err("a draft layer"))?;
                }
                Ok(())
            });
            if let Err(e) = r {
                rollback(state, start);
                return Err(e);
            }
            state.end_batch();
            if (c + 1) * PREFILL_CHUNK >= tokens.len() {
                out = head_of(setup, state, chunk.len(), head)?;
            }
        }
        Ok(out)
    }

    fn seq_alloc(&mut self) -> Result<usize> {
        let multi = self.multi.as_mut().ok_or_else(no_pool)?;
        let seq = multi.add_seq().map_err(|e| match e {
            llama_model::cpu::ForwardError::Kv(k) => {
                EngineError::Sequence(format!("{k}: finish or cancel a sequence first"))
            }
            other => forward_err("adding a sequence")(other),
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
        let Self { core, multi, .. } = self;
        let multi = multi.as_mut().ok_or_else(no_pool)?;
        let parts: Vec<StepPart> = rows
            .iter()
            .map(|r| StepPart {
                seq: KvSeq(r.seq as u32),
                tokens: r.tokens.to_vec(),
                want_logits: r.logits,
            })
            .collect();
        let r = (|| {
            {
                let file = core.setup.file.as_bytes();
                let embd = global_view(file, &core.setup.layout.token_embd)?;
                multi
                    .begin_step(&embd, &parts)
                    .map_err(forward_err("the step's embedding"))?;
            }
            let p = on_pool(|| {
                core.run_layers(|setup, k, layer, data| {
                    let file = setup.file.as_bytes();
                    let w = layer_views(layer, layer_bytes(file, layer, &data)?)?;
                    forward_layer_multi(k, &w, multi)
                        .map_err(forward_err(&format!("layer {}", layer.index)))?;
                    Ok(None)
                })
            })?;
            multi.end_step().map_err(forward_err("the step's end"))?;
            let file = core.setup.file.as_bytes();
            let lay = &core.setup.layout;
            let got = multi
                .logits(
                    &global_view(file, &lay.output_norm)?,
                    &global_view(file, &lay.lm_head)?,
                )
                .map_err(forward_err("the LM head"))?;
            Ok((got, p))
        })();
        let (got, p) = r.inspect_err(|_| multi.cancel_step())?;
        let mut out: Vec<Option<Vec<f32>>> = vec![None; rows.len()];
        for (seq, l) in got {
            if let Some(i) = rows.iter().position(|r| r.seq == seq.0 as usize) {
                out[i] = Some(l);
            }
        }
        let n: usize = rows.iter().map(|r| r.tokens.len()).sum();
        core.record(n, t0, p.as_ref());
        Ok(out)
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

    fn homes(&self) -> Vec<Home> {
        self.core.homes.clone()
    }

    fn trace(&self) -> Option<&std::sync::Arc<slep_pipeline::Trace>> {
        self.core.trace.as_ref()
    }

    /// The CPU "device" is host memory: a resident layer is read in place from the mapped
    /// file, so demoting one frees nothing but re-routes it through the pipeline; the KV pool
    /// grows and shrinks in host memory.
    fn can_grow_kv(&self) -> bool {
        self.multi.is_some() && self.core.pipeline.is_some()
    }

    fn kv_grow(&mut self, blocks: usize, seqs: usize) -> Result<()> {
        let multi = self.multi.as_mut().ok_or_else(no_pool)?;
        multi
            .grow_pool(blocks, seqs)
            .map_err(forward_err("growing the KV pool"))
    }

    fn kv_trim(&mut self, keep: usize) -> usize {
        match &mut self.multi {
            Some(m) => m.trim_pool(keep),
            None => 0,
        }
    }

    fn move_layers(&mut self, moves: &[LayerMove]) -> Result<()> {
        self.core.move_layers(moves)
    }
}
