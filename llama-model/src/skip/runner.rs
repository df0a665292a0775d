//! Running a chosen subset of layers (a [`LayerPlan`]) with logits for any positions.
//!
//! Built only on the public per-layer API ([`forward_layer`], [`State`], the embedding and
//! LM-head tensors of the GGUF), so it works over any [`Model`] without touching its own state.

use crate::cpu::{
    embed, forward_layer, matmul, rmsnorm, vector, ForwardError, Model, State, TensorView,
};

/// Tokens per batch fed through the layers (bounds the activation buffers).
const BATCH: usize = 128;

/// Which layers run; a layer that does not run is the identity (its input passes through).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerPlan {
    run: Vec<bool>,
}

impl LayerPlan {
    /// Every one of `n_layers` layers runs (the plain model).
    pub fn full(n_layers: usize) -> LayerPlan {
        LayerPlan {
            run: vec![true; n_layers],
        }
    }

    /// Only the first `d` of `n_layers` layers run (a self-speculative draft).
    pub fn prefix(n_layers: usize, d: usize) -> LayerPlan {
        LayerPlan {
            run: (0..n_layers).map(|i| i < d).collect(),
        }
    }

    /// This plan with the layers in `skipped` turned off (indices past the end are ignored).
    pub fn without(mut self, skipped: &[usize]) -> LayerPlan {
        for &i in skipped {
            if let Some(r) = self.run.get_mut(i) {
                *r = false;
            }
        }
        self
    }

    /// Whether layer `i` runs.
    pub fn runs(&self, i: usize) -> bool {
        self.run.get(i).copied().unwrap_or(false)
    }

    /// Layers the plan covers (running or not).
    pub fn n_layers(&self) -> usize {
        self.run.len()
    }

    /// Number of layers that run.
    pub fn n_running(&self) -> usize {
        self.run.iter().filter(|&&r| r).count()
    }

    /// Indices of the layers that run, in order.
    pub fn running(&self) -> Vec<usize> {
        (0..self.run.len()).filter(|&i| self.run[i]).collect()
    }
}

/// Called with `(layer, hidden before, hidden after)` around every layer that runs.
pub type LayerObserver<'a> = dyn FnMut(usize, &[f32], &[f32]) + 'a;

/// Which logits a [`Runner::feed`] call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only after the last token fed (`vocab` values).
    Last,
    /// After every token of the call from index `i` on (`(n - i) * vocab` values, row-major).
    From(usize),
}

/// One sequence run through a [`LayerPlan`] of a [`Model`], with its own KV cache.
pub struct Runner<'m> {
    model: &'m Model,
    token_embd: TensorView<'m>,
    lm_head: TensorView<'m>,
    output_norm: Vec<f32>,
    state: State,
    plan: LayerPlan,
}

impl std::fmt::Debug for Runner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("plan", &self.plan)
            .field("n_past", &self.state.n_past())
            .finish_non_exhaustive()
    }
}

fn tensor<'m>(model: &'m Model, name: &'m str) -> Result<TensorView<'m>, ForwardError> {
    let info = model
        .gguf()
        .tensor(name)
        .ok_or_else(|| ForwardError::MissingTensor(name.to_string()))?;
    TensorView::from_dims(
        name,
        model.gguf().tensor_data(info),
        info.ggml_type,
        &info.dims,
    )
}

impl<'m> Runner<'m> {
    /// A runner over `model` following `plan`, holding at most `max_context` positions
    /// (0: the model's context length). The plan must cover exactly the model's layers.
    pub fn new(
        model: &'m Model,
        plan: LayerPlan,
        max_context: usize,
    ) -> Result<Runner<'m>, ForwardError> {
        let c = model.config();
        if plan.n_layers() != c.n_layers {
            return Err(ForwardError::Batch(format!(
                "layer plan covers {} layers but the model has {}",
                plan.n_layers(),
                c.n_layers
            )));
        }
        let token_embd = tensor(model, "token_embd.weight")?;
        let lm_head = if c.tied_output {
            token_embd
        } else {
            tensor(model, "output.weight")?
        };
        let output_norm = vector(&tensor(model, "output_norm.weight")?)?;
        let state = State::new(c, max_context, model.state().kernel());
        Ok(Runner {
            model,
            token_embd,
            lm_head,
            output_norm,
            state,
            plan,
        })
    }

    /// The plan this runner follows.
    pub fn plan(&self) -> &LayerPlan {
        &self.plan
    }

    /// The model.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Positions in this runner's KV cache.
    pub fn n_past(&self) -> usize {
        self.state.n_past()
    }

    /// Rolls the sequence back to its first `n` positions.
    pub fn truncate(&mut self, n: usize) {
        self.state.truncate(n);
    }

    /// Feeds `tokens` after the positions already held and returns the requested logits.
    /// All or nothing: on error the cache is as before the call.
    pub fn feed(&mut self, tokens: &[u32], want: Logits) -> Result<Vec<f32>, ForwardError> {
        self.feed_observed(tokens, want, &mut |_, _, _| {})
    }

    /// As [`Runner::feed`], calling `observe(layer, before, after)` with the hidden states of
    /// the batch (rows of `dim`) around every layer that runs.
    pub fn feed_observed(
        &mut self,
        tokens: &[u32],
        want: Logits,
        observe: &mut LayerObserver<'_>,
    ) -> Result<Vec<f32>, ForwardError> {
        if tokens.is_empty() {
            return Err(ForwardError::Batch("no tokens to feed".into()));
        }
        let start = self.state.n_past();
        let result = self.feed_inner(tokens, want, observe);
        if result.is_err() {
            self.state.truncate(start);
        }
        result
    }

    fn feed_inner(
        &mut self,
        tokens: &[u32],
        want: Logits,
        observe: &mut LayerObserver<'_>,
    ) -> Result<Vec<f32>, ForwardError> {
        let first = match want {
            Logits::Last => tokens.len() - 1,
            Logits::From(i) if i < tokens.len() => i,
            Logits::From(i) => {
                return Err(ForwardError::Batch(format!(
                    "logits asked from token {i} of a batch of {}",
                    tokens.len()
                )))
            }
        };
        let mut out = Vec::new();
        let mut done = 0;
        for chunk in tokens.chunks(BATCH) {
            let hidden = embed(&self.token_embd, chunk)?;
            self.state.begin_batch(hidden)?;
            let mut before = Vec::new();
            for i in 0..self.plan.n_layers() {
                if !self.plan.runs(i) {
                    continue;
                }
                let w = self.model.layer_weights(i)?;
                before.clear();
                before.extend_from_slice(self.state.hidden());
                forward_layer(i, &w, &mut self.state)?;
                observe(i, &before, self.state.hidden());
            }
            self.state.end_batch();
            let lo = first.saturating_sub(done).min(chunk.len());
            if lo < chunk.len() {
                out.extend(self.head_rows(lo)?);
            }
            done += chunk.len();
        }
        Ok(out)
    }

    /// Final norm + LM head over rows `lo..` of the current batch.
    fn head_rows(&self, lo: usize) -> Result<Vec<f32>, ForwardError> {
        let dim = self.model.config().dim;
        let rows = &self.state.hidden()[lo * dim..];
        let n = rows.len() / dim;
        let mut xn = vec![0f32; rows.len()];
        for (x, o) in rows.chunks_exact(dim).zip(xn.chunks_exact_mut(dim)) {
            rmsnorm(x, &self.output_norm, self.model.config().rms_eps, o);
        }
        let mut out = vec![0f32; n * self.lm_head.n_rows];
        matmul(&self.lm_head, &xn, n, &mut out, self.state.kernel())?;
        Ok(out)
    }
}
