//! Layer skipping: calibrate how much each layer changes the hidden state, choose layers to
//! treat as the identity ([`SkipMap`]), and run the model without them ([`Runner`]).
//!
//! A skipped layer passes its input through unchanged and keeps no KV cache. The first and
//! the last layer are never skipped.

mod calibrate;
mod map;
mod runner;

use std::path::PathBuf;

pub use calibrate::{calibrate, cosine, percentile, Calibration, LayerStat};
pub use map::{model_fingerprint, SkipMap};
pub use runner::{LayerObserver, LayerPlan, Logits, Runner};

/// Why a skip map could not be made, read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SkipError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The map was calibrated on another model file.
    #[error(
        "the skip map belongs to another model (fingerprint {expected}, this model is {found}): \
         run calibrate-skip on this model"
    )]
    ModelMismatch {
        /// Fingerprint recorded in the map.
        expected: String,
        /// Fingerprint of the model at hand.
        found: String,
    },
    /// The map is malformed or breaks a rule.
    #[error("invalid skip map: {0}")]
    Invalid(String),
}

impl LayerPlan {
    /// The full plan of `map.n_layers` layers minus the map's skipped layers.
    pub fn from_skip_map(map: &SkipMap) -> LayerPlan {
        LayerPlan::full(map.n_layers).without(&map.skipped)
    }
}
