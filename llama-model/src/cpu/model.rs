//! A whole model over a memory-mapped GGUF: embedding, every layer, final norm and LM head.

use std::ops::Range;
use std::path::Path;

use gguf::{GgmlType, GgufFile};

use crate::config::LlamaConfig;

use super::error::ForwardError;
use super::head::{embed, logits};
use super::layer::{forward_layer, State};
use super::matmul::Kernel;
use super::weights::{LayerWeights, TensorView, LAYER_TENSOR_NAMES};

use crate::generation::PREFILL_CHUNK;

/// Options of [`Model::open_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ModelOptions {
    /// Most positions the KV cache holds (0: the model's context length).
    pub max_context: usize,
    /// Matmul kernel.
    pub kernel: Kernel,
}

/// Where one tensor lies in the file.
#[derive(Debug, Clone)]
struct TensorLoc {
    name: String,
    range: Range<usize>,
    ty: GgmlType,
    dims: Vec<u64>,
}

/// A Llama model running on the CPU over a memory-mapped GGUF file, with one sequence's state.
pub struct Model {
    file: GgufFile,
    config: LlamaConfig,
    state: State,
    token_embd: TensorLoc,
    output_norm: TensorLoc,
    lm_head: TensorLoc,
    layers: Vec<[TensorLoc; 9]>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .field("n_past", &self.state.n_past())
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Opens (memory-maps) a Llama GGUF with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Model, ForwardError> {
        Model::open_with(path, ModelOptions::default())
    }

    /// Opens a Llama GGUF.
    pub fn open_with(path: impl AsRef<Path>, opts: ModelOptions) -> Result<Model, ForwardError> {
        Model::from_gguf(GgufFile::open(path)?, opts)
    }

    /// Wraps an already opened GGUF, checking every tensor the forward pass will read.
    pub fn from_gguf(file: GgufFile, opts: ModelOptions) -> Result<Model, ForwardError> {
        let config = LlamaConfig::from_gguf(&file)?;
        let loc = |name: &str| -> Result<TensorLoc, ForwardError> {
            let info = file
                .tensor(name)
                .ok_or_else(|| ForwardError::MissingTensor(name.to_string()))?;
            let r = info.byte_range();
            let bad = || ForwardError::Shape {
                name: name.to_string(),
                reason: "byte range does not fit in memory".into(),
            };
            let range = usize::try_from(r.start).map_err(|_| bad())?
                ..usize::try_from(r.end).map_err(|_| bad())?;
            Ok(TensorLoc {
                name: name.to_string(),
                range,
                ty: info.ggml_type,
                dims: info.dims.clone(),
            })
        };
        let token_embd = loc("token_embd.weight")?;
        let output_norm = loc("output_norm.weight")?;
        let lm_head = if config.tied_output {
            token_embd.clone()
        } else {
            loc("output.weight")?
        };
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let mut v = Vec::with_capacity(9);
            for n in LAYER_TENSOR_NAMES {
                v.push(loc(&format!("blk.{i}.{n}"))?);
            }
            let arr: [TensorLoc; 9] = v
                .try_into()
                .map_err(|_| ForwardError::MissingTensor(format!("blk.{i}.*")))?;
            layers.push(arr);
        }
        let state = State::new(&config, opts.max_context, opts.kernel);
        let model = Model {
            file,
            config,
            state,
            token_embd,
            output_norm,
            lm_head,
            layers,
        };
        // Validate every view once, so later calls only fail on bad input, not bad files.
        let c = &model.config;
        model
            .view(&model.token_embd)?
            .expect_shape(c.dim, c.vocab_size)?;
        model
            .view(&model.lm_head)?
            .expect_shape(c.dim, c.vocab_size)?;
        model.view(&model.output_norm)?.expect_shape(c.dim, 1)?;
        for i in 0..c.n_layers {
            model.layer_weights(i)?.validate(c)?;
        }
        Ok(model)
    }

    fn view<'a>(&'a self, t: &'a TensorLoc) -> Result<TensorView<'a>, ForwardError> {
        let data =
            self.file
                .as_bytes()
                .get(t.range.clone())
                .ok_or_else(|| ForwardError::Shape {
                    name: t.name.clone(),
                    reason: "data lies outside the file".into(),
                })?;
        TensorView::from_dims(&t.name, data, t.ty, &t.dims)
    }

    /// The nine weights of layer `i`, borrowed from the mapped file.
    pub fn layer_weights(&self, i: usize) -> Result<LayerWeights<'_>, ForwardError> {
        let locs = self
            .layers
            .get(i)
            .ok_or_else(|| ForwardError::Batch(format!("no layer {i}")))?;
        let mut views = Vec::with_capacity(9);
        for l in locs {
            views.push(self.view(l)?);
        }
        let arr: [TensorView<'_>; 9] = views
            .try_into()
            .map_err(|_| ForwardError::Batch(format!("layer {i} lacks tensors")))?;
        Ok(LayerWeights::from_array(arr))
    }

    /// The token embedding table, borrowed from the mapped file.
    pub fn token_embd(&self) -> Result<TensorView<'_>, ForwardError> {
        self.view(&self.token_embd)
    }

    /// The final norm weight and the LM head (the embedding table when tied), borrowed from
    /// the mapped file.
    pub fn head_weights(&self) -> Result<(TensorView<'_>, TensorView<'_>), ForwardError> {
        Ok((self.view(&self.output_norm)?, self.view(&self.lm_head)?))
    }

    /// The model config.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The underlying GGUF (metadata for the tokenizer and chat template).
    pub fn gguf(&self) -> &GgufFile {
        &self.file
    }

    /// The sequence state (KV cache and positions).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Positions in the KV cache.
    pub fn n_past(&self) -> usize {
        self.state.n_past()
    }

    /// Rolls the sequence back to its first `n` positions.
    pub fn truncate(&mut self, n: usize) {
        self.state.truncate(n);
    }

    /// Forgets the whole sequence.
    pub fn reset(&mut self) {
        self.state.reset();
    }

    /// Feeds `tokens` after the positions already in the cache (as batches) and returns the
    /// logits after the last of them. On error the cache is left as it was before the call.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ForwardError> {
        if tokens.is_empty() {
            return Err(ForwardError::Batch("no tokens to feed".into()));
        }
        let needed = self.state.n_past() + tokens.len();
        if needed > self.state.max_context() {
            return Err(ForwardError::ContextFull {
                needed,
                limit: self.state.max_context(),
            });
        }
        let start = self.state.n_past();
        let mut last = Vec::new();
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            match self.forward_batch(chunk) {
                Ok(l) => last = l,
                Err(e) => {
                    // All or nothing: drop the chunks already fed.
                    self.state.truncate(start);
                    return Err(e);
                }
            }
        }
        Ok(last)
    }

    /// Feeds one token and returns the logits after it.
    pub fn decode(&mut self, token: u32) -> Result<Vec<f32>, ForwardError> {
        self.forward_batch(&[token])
    }

    fn forward_batch(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ForwardError> {
        // The whole pass on one of the pool's threads: its products then start and end there
        // (work stolen by the others) instead of each waking this thread from outside the pool.
        super::on_pool(|| self.forward_batch_here(tokens))
    }

    fn forward_batch_here(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ForwardError> {
        let start = self.state.n_past();
        let hidden = embed(&self.view(&self.token_embd)?, tokens)?;
        self.state.begin_batch(hidden)?;
        let result = self.run_layers_and_head();
        if result.is_err() {
            // Leave the cache as it was before this batch.
            self.state.truncate(start);
        }
        result
    }

    fn run_layers_and_head(&mut self) -> Result<Vec<f32>, ForwardError> {
        for i in 0..self.config.n_layers {
            let w = layer_weights_of(&self.file, &self.layers[i])?;
            forward_layer(i, &w, &mut self.state)?;
        }
        self.state.end_batch();
        let norm = self.view(&self.output_norm)?;
        let head = self.view(&self.lm_head)?;
        logits(
            self.state.hidden(),
            &norm,
            &head,
            self.config.rms_eps,
            self.state.kernel(),
        )
    }
}

/// Layer views built from the file alone (so the state can be borrowed mutably meanwhile).
fn layer_weights_of<'a>(
    file: &'a GgufFile,
    locs: &'a [TensorLoc; 9],
) -> Result<LayerWeights<'a>, ForwardError> {
    let mut views = Vec::with_capacity(9);
    for t in locs {
        let data = file
            .as_bytes()
            .get(t.range.clone())
            .ok_or_else(|| ForwardError::Shape {
                name: t.name.clone(),
                reason: "data lies outside the file".into(),
            })?;
        views.push(TensorView::from_dims(&t.name, data, t.ty, &t.dims)?);
    }
    let arr: [TensorView<'a>; 9] = views
        .try_into()
        .map_err(|_| ForwardError::Batch("layer lacks tensors".into()))?;
    Ok(LayerWeights::from_array(arr))
}
