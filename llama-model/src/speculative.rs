//! Self-speculative decoding: the first layers of the model (optionally with skipped layers)
//! draft K tokens, one pass of the full model over K+1 positions verifies them.
//!
//! Greedy decoding gives exactly the tokens of plain greedy decoding. Sampling uses the
//! speculative sampling acceptance rule ([`accept_or_resample`]), so tokens are distributed
//! as the full model's `softmax(logits / temperature)` (temperature only: top-k/top-p/min-p
//! filters are not applied here).

mod adaptive;
mod decode;
mod sampling;

pub use adaptive::{AdaptiveConfig, AdaptiveK};
pub use decode::{SelfSpeculative, SpecConfig, SpecStats};
pub use sampling::{accept_or_resample, argmax, probabilities, sample_index, Verdict};
