//! Building a [`Tokenizer`] from GGUF metadata (`tokenizer.*` keys).

use gguf::Metadata;

use super::{PreTokenizer, Tokenizer, TokenizerData, TokenizerError};

/// GGUF metadata keys read by [`Tokenizer::from_gguf`].
pub mod keys {
    /// Tokenizer family; must be `gpt2` (byte-level BPE).
    pub const MODEL: &str = "tokenizer.ggml.model";
    /// Pre-tokenizer name.
    pub const PRE: &str = "tokenizer.ggml.pre";
    /// Token texts.
    pub const TOKENS: &str = "tokenizer.ggml.tokens";
    /// Token kinds (optional).
    pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    /// BPE merge rules.
    pub const MERGES: &str = "tokenizer.ggml.merges";
    /// Beginning-of-sequence id.
    pub const BOS: &str = "tokenizer.ggml.bos_token_id";
    /// End-of-sequence id.
    pub const EOS: &str = "tokenizer.ggml.eos_token_id";
    /// End-of-turn id.
    pub const EOT: &str = "tokenizer.ggml.eot_token_id";
    /// End-of-message id.
    pub const EOM: &str = "tokenizer.ggml.eom_token_id";
    /// Whether prompts start with BOS.
    pub const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    /// Whether prompts end with EOS.
    pub const ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
    /// Jinja chat template.
    pub const CHAT_TEMPLATE: &str = "tokenizer.chat_template";
}

impl Tokenizer {
    /// Reads the tokenizer stored in a GGUF file's metadata. Only byte-level BPE
    /// (`tokenizer.ggml.model = gpt2`) with the `llama-bpe`, `smollm` or `gpt2` pre-tokenizer is
    /// supported; anything else is a clear error.
    pub fn from_gguf(meta: &Metadata) -> Result<Tokenizer, TokenizerError> {
        let model = meta.get_str(keys::MODEL)?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.to_owned()));
        }
        let pre_name = meta.opt_str(keys::PRE)?.unwrap_or("(absent)");
        let pre = PreTokenizer::from_name(pre_name).ok_or_else(|| {
            TokenizerError::UnsupportedPreTokenizer {
                name: pre_name.to_owned(),
            }
        })?;
        let tokens: Vec<String> = meta
            .get_str_array(keys::TOKENS)?
            .into_iter()
            .map(str::to_owned)
            .collect();
        let token_types = if meta.contains_key(keys::TOKEN_TYPE) {
            Some(meta.get_i32_array(keys::TOKEN_TYPE)?)
        } else {
            None
        };
        let merges: Vec<&str> = meta.get_str_array(keys::MERGES)?;
        let data = TokenizerData {
            tokens,
            token_types,
            merges: Vec::new(),
            pre,
            bos_id: meta.opt_u32(keys::BOS)?,
            eos_id: meta.opt_u32(keys::EOS)?,
            eot_id: meta.opt_u32(keys::EOT)?,
            eom_id: meta.opt_u32(keys::EOM)?,
            add_bos: meta.opt_bool(keys::ADD_BOS)?,
            add_eos: meta.opt_bool(keys::ADD_EOS)?,
            chat_template: meta.opt_str(keys::CHAT_TEMPLATE)?.map(str::to_owned),
        };
        Tokenizer::build(data, &merges)
    }
}
