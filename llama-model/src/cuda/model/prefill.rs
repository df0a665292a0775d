//! Batched prefill of a resident model: the prompt goes through every layer
//! [`PREFILL_CHUNK`] tokens at a time ([`GpuBatch`], tensor-core GEMMs), instead of one
//! matrix-vector product per weight per token.

use super::{view, CudaModel};
use crate::cuda::error::{CudaError, Result};
use crate::cuda::layer::batch::{forward_layer_batch, GpuBatch, PREFILL_CHUNK};
use crate::cuda::layer::DeviceLayerWeights;
use crate::cuda::weights::DeviceWeight;

pub(super) use crate::generation::BATCHED_MIN_TOKENS;

impl CudaModel {
    /// Feeds `tokens` after the positions already in the cache in batches of at most
    /// [`PREFILL_CHUNK`] tokens and returns the logits after the last of them (final norm and
    /// LM head as in the token-by-token path). On error the cache is left as it was.
    pub fn prefill_batched(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.feed_batched(tokens)?;
        let (n, h) = (
            view(&self.weights, &self.output_norm)?,
            view(&self.weights, &self.lm_head)?,
        );
        self.state.head(&n, &h)
    }

    /// As [`CudaModel::prefill_batched`], returning only the greedy next token (argmax on the
    /// GPU).
    pub fn prefill_batched_argmax(&mut self, tokens: &[u32]) -> Result<u32> {
        self.feed_batched(tokens)?;
        let (n, h) = (
            view(&self.weights, &self.output_norm)?,
            view(&self.weights, &self.lm_head)?,
        );
        self.state.head_argmax(&n, &h)
    }

    /// Feeds `tokens` as one batch (at most [`PREFILL_CHUNK`]) and returns the greedy next
    /// token after *each* of them: entry `i` is the argmax after token `i`. This is the
    /// verification step of speculative decoding (feed the last accepted token and the `K`
    /// drafts; keep drafts while they equal the previous entry, then
    /// [`CudaModel::truncate`] to the accepted length). On error the cache is left as it was.
    pub fn verify_argmax(&mut self, tokens: &[u32]) -> Result<Vec<u32>> {
        if tokens.len() > PREFILL_CHUNK {
            return Err(CudaError::Sequence(format!(
                "verify takes at most {PREFILL_CHUNK} tokens, got {}",
                tokens.len()
            )));
        }
        self.check_tokens(tokens)?;
        let start = self.state.n_past();
        let mut batch = GpuBatch::new(&self.state)?;
        let r = self.run_batch(&mut batch, tokens).and_then(|()| {
            let (n, h) = (
                view(&self.weights, &self.output_norm)?,
                view(&self.weights, &self.lm_head)?,
            );
            batch.head_argmax_all(&self.state, &n, &h)
        });
        if r.is_err() {
            self.state.truncate(start);
        }
        r
    }

    /// The token embedding table, as a view into the resident buffer (for driving a
    /// [`GpuBatch`] or a [`crate::cuda::GpuState`] of one's own over this model's weights).
    pub fn token_embd_weight(&self) -> Result<DeviceWeight<'_>> {
        view(&self.weights, &self.token_embd)
    }

    /// The final norm and LM head weights, as views into the resident buffer.
    pub fn head_weights(&self) -> Result<(DeviceWeight<'_>, DeviceWeight<'_>)> {
        Ok((
            view(&self.weights, &self.output_norm)?,
            view(&self.weights, &self.lm_head)?,
        ))
    }

    /// All-or-nothing batched feed: checks the whole prompt first, rolls back on error.
    fn feed_batched(&mut self, tokens: &[u32]) -> Result<()> {
        self.check_tokens(tokens)?;
        let start = self.state.n_past();
        let mut batch = GpuBatch::new(&self.state)?;
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            if let Err(e) = self.run_batch(&mut batch, chunk) {
                batch.cancel(&mut self.state);
                self.state.truncate(start);
                return Err(e);
            }
        }
        Ok(())
    }

    /// One batch: embedding, every layer, commit.
    fn run_batch(&mut self, batch: &mut GpuBatch, tokens: &[u32]) -> Result<()> {
        let te = view(&self.weights, &self.token_embd)?;
        batch.begin(&mut self.state, &te, tokens)?;
        for (i, locs) in self.layers.iter().enumerate() {
            let mut v = Vec::with_capacity(9);
            for l in locs {
                v.push(view(&self.weights, l)?);
            }
            let arr: [DeviceWeight<'_>; 9] = v
                .try_into()
                .map_err(|_| CudaError::Sequence(format!("layer {i} lacks tensors")))?;
            let w = DeviceLayerWeights::from_array(arr);
            if let Err(e) = forward_layer_batch(i, &w, &mut self.state, batch) {
                batch.cancel(&mut self.state);
                return Err(e);
            }
        }
        batch.end(&mut self.state)
    }
}
