//! A whole model resident in VRAM: every tensor of a GGUF uploaded into one device buffer.
//! Decode runs one token at a time on the GPU (the embedding and every layer's
//! [`forward_layer`] kernels replayed from one captured CUDA graph unless turned off; final
//! norm, LM head and argmax or top-k on the GPU). Prompts of four or more tokens go through the
//! batched tensor-core path (`prefill` child module).

mod prefill;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use cudarc::driver::{sys as cu, CudaGraph, CudaSlice};
use gguf::{GgmlType, GgufFile};

use crate::config::LlamaConfig;
use crate::cpu::LAYER_TENSOR_NAMES;

use super::backend::CudaBackend;
use super::error::{driver, CudaError, Result};
use super::layer::{enqueue_layer, forward_layer, DeviceLayerWeights, GpuState};
use super::options::CudaOptions;
use super::weights::DeviceWeight;

/// Where one tensor lies in the device buffer (same offsets as in the file).
#[derive(Debug, Clone)]
struct Loc {
    range: Range<usize>,
    ty: GgmlType,
    row_len: usize,
    n_rows: usize,
}

/// A Llama GGUF resident on one GPU, with one sequence's state (KV cache in VRAM).
pub struct CudaModel {
    file: GgufFile,
    config: LlamaConfig,
    weights: CudaSlice<u8>,
    token_embd: Loc,
    output_norm: Loc,
    lm_head: Loc,
    layers: Vec<[Loc; 9]>,
    state: GpuState,
    /// Replay the decode step (embedding + every layer) from a captured CUDA graph.
    use_graph: bool,
    /// The captured step, once captured (lazily, at the first token).
    graph: Option<CudaGraph>,
}

impl std::fmt::Debug for CudaModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaModel")
            .field("config", &self.config)
            .field("n_past", &self.state.n_past())
            .finish_non_exhaustive()
    }
}

fn loc(file: &GgufFile, name: &str) -> Result<Loc> {
    let info = file
        .tensor(name)
        .ok_or_else(|| CudaError::MissingTensor(name.to_string()))?;
    let bad = |why: &str| CudaError::Shape {
        op: "load",
        detail: format!("tensor {name}: {why}"),
    };
    let r = info.byte_range();
    let range = usize::try_from(r.start).map_err(|_| bad("offset too large"))?
        ..usize::try_from(r.end).map_err(|_| bad("offset too large"))?;
    if range.end > file.as_bytes().len() || range.start > range.end {
        return Err(bad("data lies outside the file"));
    }
    let dims = &info.dims;
    let row_len = dims
        .first()
        .and_then(|d| usize::try_from(*d).ok())
        .ok_or_else(|| bad("no dims"))?;
    let mut n_rows: usize = 1;
    for d in dims.iter().skip(1) {
        n_rows = usize::try_from(*d)
            .ok()
            .and_then(|d| n_rows.checked_mul(d))
            .ok_or_else(|| bad("dims overflow"))?;
    }
    Ok(Loc {
        range,
        ty: info.ggml_type,
        row_len,
        n_rows,
    })
}

fn view<'a>(buf: &'a CudaSlice<u8>, l: &Loc) -> Result<DeviceWeight<'a>> {
    DeviceWeight::new(buf.slice(l.range.clone()), l.ty, l.row_len, l.n_rows)
}

impl CudaModel {
    /// Opens a Llama GGUF on GPU 0 and uploads all of it into one device buffer, with a KV
    /// cache of `max_context` positions (0: the model's context length).
    /// Uses the default [`CudaOptions`] (no disk cache of compiled kernels).
    pub fn open(path: impl AsRef<Path>, max_context: usize) -> Result<Self> {
        Self::open_with(path, max_context, &CudaOptions::default())
    }

    /// As [`CudaModel::open`], with a backend opened with `options`.
    pub fn open_with(
        path: impl AsRef<Path>,
        max_context: usize,
        options: &CudaOptions,
    ) -> Result<Self> {
        let backend = Arc::new(CudaBackend::with_options(0, options)?);
        Self::open_on(backend, path, max_context)
    }

    /// As [`CudaModel::open`], on an existing backend.
    pub fn open_on(
        backend: Arc<CudaBackend>,
        path: impl AsRef<Path>,
        max_context: usize,
    ) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let config = LlamaConfig::from_gguf(&file)?;
        let token_embd = loc(&file, "token_embd.weight")?;
        let output_norm = loc(&file, "output_norm.weight")?;
        let lm_head = if config.tied_output {
            token_embd.clone()
        } else {
            loc(&file, "output.weight")?
        };
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let mut v = Vec::with_capacity(9);
            for n in LAYER_TENSOR_NAMES {
                v.push(loc(&file, &format!("blk.{i}.{n}"))?);
            }
            let arr: [Loc; 9] = v
                .try_into()
                .map_err(|_| CudaError::MissingTensor(format!("blk.{i}.*")))?;
            layers.push(arr);
        }
        let weights = backend
            .stream()
            .clone_htod(file.as_bytes())
            .map_err(driver("upload weights"))?;
        let use_graph = backend.options().graphs();
        let state = GpuState::new(backend, &config, max_context)?;
        let model = Self {
            use_graph,
            graph: None,
            file,
            config,
            weights,
            token_embd,
            output_norm,
            lm_head,
            layers,
            state,
        };
        // Check every view once, so later calls fail only on bad input, not on a bad file.
        let c = &model.config;
        let te = view(&model.weights, &model.token_embd)?;
        if te.row_len != c.dim || te.n_rows != c.vocab_size {
            return Err(CudaError::Shape {
                op: "load",
                detail: format!("token_embd is {} x {}", te.n_rows, te.row_len),
            });
        }
        view(&model.weights, &model.output_norm)?;
        view(&model.weights, &model.lm_head)?;
        for i in 0..c.n_layers {
            model.layer_weights(i)?.validate(c)?;
        }
        Ok(model)
    }

    /// The nine weights of layer `i`, as views into the resident buffer.
    pub fn layer_weights(&self, i: usize) -> Result<DeviceLayerWeights<'_>> {
        let locs = self
            .layers
            .get(i)
            .ok_or_else(|| CudaError::Sequence(format!("no layer {i}")))?;
        let mut v = Vec::with_capacity(9);
        for l in locs {
            v.push(view(&self.weights, l)?);
        }
        let arr: [DeviceWeight<'_>; 9] = v
            .try_into()
            .map_err(|_| CudaError::Sequence(format!("layer {i} lacks tensors")))?;
        Ok(DeviceLayerWeights::from_array(arr))
    }

    /// The model config.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The GGUF (metadata for the tokenizer and chat template).
    pub fn gguf(&self) -> &GgufFile {
        &self.file
    }

    /// The backend (device, stream, kernels).
    pub fn backend(&self) -> &Arc<CudaBackend> {
        self.state.backend()
    }

    /// Bytes of weights read per decoded token (every layer tensor, the final norm and the LM
    /// head; one embedding row is negligible).
    pub fn weight_bytes_per_token(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .flat_map(|l| l.iter().map(|t| t.range.len()))
            .sum();
        layers + self.output_norm.range.len() + self.lm_head.range.len()
    }

    /// Positions in the KV cache.
    pub fn n_past(&self) -> usize {
        self.state.n_past()
    }

    /// Most positions the KV cache holds.
    pub fn max_context(&self) -> usize {
        self.state.max_context()
    }

    /// Rolls the sequence back to its first `n` positions.
    pub fn truncate(&mut self, n: usize) {
        self.state.truncate(n);
    }

    /// Forgets the whole sequence.
    pub fn reset(&mut self) {
        self.state.reset();
    }

    /// Embedding + every layer for one token (no head).
    fn step(&mut self, token: u32) -> Result<()> {
        let start = self.state.n_past();
        let r = self.step_inner(token);
        if r.is_err() {
            self.state.truncate(start);
        }
        r
    }

    fn step_inner(&mut self, token: u32) -> Result<()> {
        if self.use_graph {
            return self.step_graph(token);
        }
        let te = view(&self.weights, &self.token_embd)?;
        self.state.begin_token(&te, token)?;
        for (i, locs) in self.layers.iter().enumerate() {
            let mut v = Vec::with_capacity(9);
            for l in locs {
                v.push(view(&self.weights, l)?);
            }
            let arr: [DeviceWeight<'_>; 9] = v
                .try_into()
                .map_err(|_| CudaError::Sequence(format!("layer {i} lacks tensors")))?;
            forward_layer(i, &DeviceLayerWeights::from_array(arr), &mut self.state)?;
        }
        self.state.end_token()
    }

    /// Whether decode steps replay a captured CUDA graph (the default, unless the backend's
    /// [`super::CudaOptions`] turn graphs off or cudarc's event tracking on).
    pub fn cuda_graph_enabled(&self) -> bool {
        self.use_graph
    }

    /// Turns CUDA-graph replay of the decode step on or off (off: every kernel is launched
    /// from the host each token; the tokens are the same).
    pub fn set_cuda_graph(&mut self, on: bool) {
        self.use_graph = on;
    }

    /// One step (embedding + every layer) replayed from the captured graph, capturing it first
    /// if needed. The step's position and token go to device memory before the replay.
    fn step_graph(&mut self, token: u32) -> Result<()> {
        let te = view(&self.weights, &self.token_embd)?;
        if token as usize >= te.n_rows {
            return Err(CudaError::TokenOutOfRange {
                token,
                vocab_size: te.n_rows,
            });
        }
        if self.state.n_past() >= self.state.max_context() {
            return Err(CudaError::ContextFull {
                needed: self.state.n_past() + 1,
                limit: self.state.max_context(),
            });
        }
        self.state.set_step(token)?;
        if self.graph.is_none() {
            self.graph = Some(self.capture_step()?);
        }
        if let Some(g) = &self.graph {
            g.launch().map_err(driver("graph launch"))?;
        }
        self.state.commit_replayed_step();
        Ok(())
    }

    /// Captures the decode step's kernels (embedding of the token in the step buffer, then
    /// every layer) into a CUDA graph.
    fn capture_step(&mut self) -> Result<CudaGraph> {
        let stream = self.state.stream().clone();
        stream
            .begin_capture(cu::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(driver("begin capture"))?;
        let enqueued = self.enqueue_step();
        // End the capture whatever happened, so the stream is usable again.
        let ended = stream.end_capture(cu::CUgraphInstantiate_flags(0));
        enqueued?;
        ended
            .map_err(driver("end capture"))?
            .ok_or_else(|| CudaError::Sequence("the captured decode step is empty".into()))
    }

    fn enqueue_step(&mut self) -> Result<()> {
        let te = view(&self.weights, &self.token_embd)?;
        self.state.enqueue_embed(&te)?;
        for (i, locs) in self.layers.iter().enumerate() {
            let mut v = Vec::with_capacity(9);
            for l in locs {
                v.push(view(&self.weights, l)?);
            }
            let arr: [DeviceWeight<'_>; 9] = v
                .try_into()
                .map_err(|_| CudaError::Sequence(format!("layer {i} lacks tensors")))?;
            enqueue_layer(i, &DeviceLayerWeights::from_array(arr), &mut self.state)?;
        }
        Ok(())
    }

    /// Checks a whole prompt before feeding any of it (all or nothing).
    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(CudaError::Sequence("no tokens to feed".into()));
        }
        if let Some(&t) = tokens
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            return Err(CudaError::TokenOutOfRange {
                token: t,
                vocab_size: self.config.vocab_size,
            });
        }
        let needed = self.state.n_past() + tokens.len();
        if needed > self.state.max_context() {
            return Err(CudaError::ContextFull {
                needed,
                limit: self.state.max_context(),
            });
        }
        Ok(())
    }

    fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        self.check_tokens(tokens)?;
        let start = self.state.n_past();
        for &t in tokens {
            if let Err(e) = self.step(t) {
                self.state.truncate(start);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Feeds `tokens` after the positions already in the cache and returns the logits after
    /// the last of them: from 4 tokens on as batches through tensor-core GEMMs
    /// ([`CudaModel::prefill_batched`]), fewer one at a time through the decode step (faster
    /// there, see `prefill::BATCHED_MIN_TOKENS`). On error the cache is left as it was.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.len() >= prefill::BATCHED_MIN_TOKENS {
            return self.prefill_batched(tokens);
        }
        self.feed(tokens)?;
        let (n, h) = (
            view(&self.weights, &self.output_norm)?,
            view(&self.weights, &self.lm_head)?,
        );
        self.state.head(&n, &h)
    }

    /// As [`CudaModel::prefill`], returning only the greedy next token (argmax on the GPU).
    pub fn prefill_argmax(&mut self, tokens: &[u32]) -> Result<u32> {
        if tokens.len() >= prefill::BATCHED_MIN_TOKENS {
            return self.prefill_batched_argmax(tokens);
        }
        self.feed(tokens)?;
        let (n, h) = (
            view(&self.weights, &self.output_norm)?,
            view(&self.weights, &self.lm_head)?,
        );
        self.state.head_argmax(&n, &h)
    }

    /// Feeds one token and returns the logits after it.
    pub fn decode(&mut self, token: u32) -> Result<Vec<f32>> {
        self.prefill(&[token])
    }

    /// Feeds one token and returns the `k` (1..=[`super::MAX_TOP_K`]) most likely next tokens
    /// as (id, logit) pairs in rank order, selected on the GPU after the repetition `penalty`
    /// (1.0: off) on the distinct ids of `recent`: only `k` pairs cross the bus. Finish the
    /// choice with [`super::finish_sample`].
    pub fn decode_top_k(
        &mut self,
        token: u32,
        k: usize,
        penalty: f32,
        recent: &[u32],
    ) -> Result<Vec<(u32, f32)>> {
        self.feed(&[token])?;
        let (n, h) = (
            view(&self.weights, &self.output_norm)?,
            view(&self.weights, &self.lm_head)?,
        );
        self.state.head_top_k(&n, &h, k, penalty, recent)
    }

    /// Feeds one token and returns the greedy next token: only the token id crosses the bus.
    pub fn decode_argmax(&mut self, token: u32) -> Result<u32> {
        self.prefill_argmax(&[token])
    }
}
