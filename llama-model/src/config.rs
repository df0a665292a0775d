//! Model hyper-parameters read from GGUF metadata (`llama.*` keys).
//!
//! [`LlamaConfig::from_gguf`] checks every value it reads, so the forward pass can size its
//! buffers from the config without further checks.

use gguf::{GgmlType, GgufError, GgufFile};

/// Largest width (embedding, FFN, vocabulary) accepted from a file. Real models stay far below;
/// the bound only stops a corrupt header from sizing huge allocations.
const MAX_DIM: u64 = 1 << 24;
/// Largest layer or head count accepted from a file.
const MAX_COUNT: u64 = 1 << 16;

/// An error reading the model configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file is not a Llama-architecture model.
    #[error(
        "unsupported architecture `{0}`: only `llama` models are supported (general.architecture)"
    )]
    Architecture(String),
    /// A metadata key is missing or has the wrong type.
    #[error("GGUF metadata: {0}")]
    Gguf(#[from] GgufError),
    /// A value is present but unusable.
    #[error("invalid model config: `{key}` {reason}")]
    Invalid {
        /// The metadata key or tensor name concerned.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Llama model hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Number of transformer blocks (`llama.block_count`).
    pub n_layers: usize,
    /// Hidden size (`llama.embedding_length`).
    pub dim: usize,
    /// FFN inner size (`llama.feed_forward_length`).
    pub ffn_dim: usize,
    /// Query heads (`llama.attention.head_count`).
    pub n_heads: usize,
    /// Key/value heads (`llama.attention.head_count_kv`; equals `n_heads` when absent).
    pub n_kv_heads: usize,
    /// Size of one head (`dim / n_heads`).
    pub head_dim: usize,
    /// Number of leading elements of each head that rotary embedding rotates
    /// (`llama.rope.dimension_count`, default `head_dim`).
    pub rope_dim: usize,
    /// Rotary base theta (`llama.rope.freq_base`, default 10000).
    pub rope_base: f32,
    /// Llama 3.1 rope scaling: per rotation pair `i` (`rope_dim / 2` values) the divisor applied to
    /// the frequency `rope_base^(-2i/rope_dim)`, from the `rope_freqs.weight` tensor.
    pub rope_freq_factors: Option<Vec<f32>>,
    /// RMSNorm epsilon (`llama.attention.layer_norm_rms_epsilon`).
    pub rms_eps: f32,
    /// Training context length (`llama.context_length`).
    pub context_length: usize,
    /// Vocabulary size (length of `tokenizer.ggml.tokens`, else `llama.vocab_size`, else the
    /// embedding tensor's row count).
    pub vocab_size: usize,
    /// True when there is no `output.weight` and the LM head reuses `token_embd.weight`.
    pub tied_output: bool,
}

impl LlamaConfig {
    /// Size of the key (and value) vector of one position: `n_kv_heads * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Reads and validates the config of a Llama GGUF.
    pub fn from_gguf(file: &GgufFile) -> Result<LlamaConfig, ConfigError> {
        let meta = file.metadata();
        let arch = meta.get_str("general.architecture")?;
        if arch != "llama" {
            return Err(ConfigError::Architecture(arch.to_string()));
        }
        let count = |key: &str| -> Result<usize, ConfigError> {
            bounded(key, meta.get_u64(key)?, MAX_COUNT)
        };
        let width =
            |key: &str| -> Result<usize, ConfigError> { bounded(key, meta.get_u64(key)?, MAX_DIM) };
        let n_layers = count("llama.block_count")?;
        let dim = width("llama.embedding_length")?;
        let ffn_dim = width("llama.feed_forward_length")?;
        let n_heads = count("llama.attention.head_count")?;
        let n_kv_heads = match meta.opt_u32("llama.attention.head_count_kv")? {
            Some(v) => bounded("llama.attention.head_count_kv", u64::from(v), MAX_COUNT)?,
            None => n_heads,
        };
        if dim % n_heads != 0 {
            return Err(invalid(
                "llama.attention.head_count",
                format!("({n_heads}) does not divide llama.embedding_length ({dim})"),
            ));
        }
        if n_heads % n_kv_heads != 0 {
            return Err(invalid(
                "llama.attention.head_count_kv",
                format!("({n_kv_heads}) does not divide llama.attention.head_count ({n_heads})"),
            ));
        }
        let head_dim = dim / n_heads;
        let rope_dim = match meta.opt_u32("llama.rope.dimension_count")? {
            Some(v) => v as usize,
            None => head_dim,
        };
        if rope_dim == 0 || rope_dim % 2 != 0 || rope_dim > head_dim {
            return Err(invalid(
                "llama.rope.dimension_count",
                format!("({rope_dim}) must be even, non-zero and at most the head size {head_dim}"),
            ));
        }
        let rope_base = meta.opt_f32("llama.rope.freq_base")?.unwrap_or(10000.0);
        if !(rope_base.is_finite() && rope_base > 1.0) {
            return Err(invalid(
                "llama.rope.freq_base",
                format!("({rope_base}) must be a finite number > 1"),
            ));
        }
        let rms_eps = meta.get_f32("llama.attention.layer_norm_rms_epsilon")?;
        if !(rms_eps.is_finite() && rms_eps >= 0.0) {
            return Err(invalid(
                "llama.attention.layer_norm_rms_epsilon",
                format!("({rms_eps}) must be finite and >= 0"),
            ));
        }
        let context_length = match meta.opt_u32("llama.context_length")? {
            Some(v) => bounded("llama.context_length", u64::from(v), MAX_DIM)?,
            None => 2048,
        };

        let embd = file.tensor("token_embd.weight").ok_or_else(|| {
            invalid(
                "token_embd.weight",
                "tensor is missing from the file".into(),
            )
        })?;
        let vocab_size = if let Some(gguf::Value::Array(a)) = meta.get("tokenizer.ggml.tokens") {
            a.values.len()
        } else if let Some(v) = meta.opt_u32("llama.vocab_size")? {
            v as usize
        } else {
            embd.n_rows() as usize
        };
        let vocab_size = bounded("vocabulary size", vocab_size as u64, MAX_DIM)?;
        if embd.row_len() != dim as u64 || embd.n_rows() != vocab_size as u64 {
            return Err(invalid(
                "token_embd.weight",
                format!(
                    "has dims {:?}, expected [{dim}, {vocab_size}] (embedding x vocabulary)",
                    embd.dims
                ),
            ));
        }
        let tied_output = file.tensor("output.weight").is_none();

        let rope_freq_factors = match file.tensor("rope_freqs.weight") {
            None => None,
            Some(info) => {
                let n = rope_dim / 2;
                if info.n_elements() != n as u64 {
                    return Err(invalid(
                        "rope_freqs.weight",
                        format!(
                            "has {} elements, expected rope_dim/2 = {n}",
                            info.n_elements()
                        ),
                    ));
                }
                let bytes = file.tensor_data(info);
                let factors = decode_small_f32(info.ggml_type, bytes, n).ok_or_else(|| {
                    invalid(
                        "rope_freqs.weight",
                        format!(
                            "has type {} and {} bytes; expected F32 or F16",
                            info.ggml_type,
                            bytes.len()
                        ),
                    )
                })?;
                if factors.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
                    return Err(invalid(
                        "rope_freqs.weight",
                        "holds a factor that is not a positive finite number".into(),
                    ));
                }
                Some(factors)
            }
        };

        Ok(LlamaConfig {
            n_layers,
            dim,
            ffn_dim,
            n_heads,
            n_kv_heads,
            head_dim,
            rope_dim,
            rope_base,
            rope_freq_factors,
            rms_eps,
            context_length,
            vocab_size,
            tied_output,
        })
    }
}

fn invalid(key: &str, reason: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        reason,
    }
}

fn bounded(key: &str, v: u64, max: u64) -> Result<usize, ConfigError> {
    if v == 0 || v > max {
        return Err(invalid(key, format!("({v}) must be between 1 and {max}")));
    }
    usize::try_from(v).map_err(|_| invalid(key, format!("({v}) does not fit in memory")))
}

/// Decodes a small F32 or F16 vector of exactly `n` elements.
fn decode_small_f32(ty: GgmlType, bytes: &[u8], n: usize) -> Option<Vec<f32>> {
    match ty {
        GgmlType::F32 if bytes.len() == n * 4 => Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        GgmlType::F16 if bytes.len() == n * 2 => Some(
            bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        _ => None,
    }
}
