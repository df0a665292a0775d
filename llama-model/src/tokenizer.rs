//! Byte-level BPE tokenizer read from GGUF metadata, matching llama.cpp token for token.
//!
//! Encoding runs in four steps:
//! 1. special tokens written in the text are cut out ([`Tokenizer::encode`]'s `parse_special`;
//!    user-defined tokens are always cut out, control tokens only when asked, as in llama.cpp);
//! 2. each remaining piece is split into words by the vocabulary's [`PreTokenizer`];
//! 3. each word's UTF-8 bytes are written in the GPT-2 byte alphabet;
//! 4. each word is merged by BPE rank (for Llama 3, a word that is already a token is taken
//!    whole, llama.cpp's "ignore merges").
//!
//! Decoding maps tokens back to bytes; [`StreamDecoder`] emits only whole UTF-8 characters.

mod bpe;
mod bytes;
mod decode;
mod hash;
mod load;
mod pretokenize;
mod special;
mod unicode;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

pub use decode::StreamDecoder;
pub use load::keys;
pub use pretokenize::PreTokenizer;

use bpe::MergeRanks;
use bytes::ByteMap;
use hash::{fast_map, FastMap};
use special::Fragment;

/// Errors building a tokenizer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// `tokenizer.ggml.model` names a tokenizer family this crate does not implement.
    #[error(
        "tokenizer model `{0}` (tokenizer.ggml.model) is not supported: only byte-level BPE \
         (`gpt2`, used by Llama 3 and SmolLM2) is implemented"
    )]
    UnsupportedModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not implement.
    #[error(
        "pre-tokenizer `{name}` (tokenizer.ggml.pre) is not supported; supported names: {}",
        PreTokenizer::SUPPORTED.join(", ")
    )]
    UnsupportedPreTokenizer {
        /// The name found in the file.
        name: String,
    },
    /// A metadata key is missing or has the wrong type.
    #[error("reading the tokenizer from GGUF metadata: {0}")]
    Metadata(#[from] gguf::GgufError),
    /// The vocabulary has no tokens.
    #[error("the vocabulary (tokenizer.ggml.tokens) is empty")]
    EmptyVocab,
    /// More tokens than 32-bit ids can address.
    #[error("the vocabulary has {0} tokens, more than 32-bit token ids can address")]
    VocabTooLarge(usize),
    /// `tokenizer.ggml.token_type` does not have one entry per token.
    #[error(
        "tokenizer.ggml.token_type has {types} entries but tokenizer.ggml.tokens has {tokens}"
    )]
    TypeCountMismatch {
        /// Number of tokens.
        tokens: usize,
        /// Number of token types.
        types: usize,
    },
    /// A special token id (BOS, EOS ...) is not a token of the vocabulary.
    #[error("{what} token id {id} is outside the vocabulary of {vocab_size} tokens")]
    IdOutOfRange {
        /// Which id (e.g. "BOS").
        what: &'static str,
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab_size: usize,
    },
}

/// What kind of token a vocabulary entry is (GGUF `tokenizer.ggml.token_type` values 0..=6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// 0 or any unknown value.
    Undefined,
    /// 1: an ordinary BPE token (text in the byte-level alphabet).
    Normal,
    /// 2: the unknown token.
    Unknown,
    /// 3: a control token (`<|begin_of_text|>`, `<|im_end|>` ...).
    Control,
    /// 4: a user-defined token, matched literally in text.
    UserDefined,
    /// 5: an unused slot.
    Unused,
    /// 6: a raw byte token.
    Byte,
}

impl TokenKind {
    /// Kind for a `tokenizer.ggml.token_type` value.
    pub fn from_gguf(value: i32) -> TokenKind {
        match value {
            1 => TokenKind::Normal,
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => TokenKind::Undefined,
        }
    }
}

/// Token texts that end generation when present in a vocabulary (llama.cpp's list); such
/// tokens are also treated as control tokens.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// Token texts that may serve as end-of-turn when the metadata names none.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<EOT>",
    "_<EOT>",
    "<end_of_utterance>",
];

/// Everything a tokenizer is built from, as plain data (what the GGUF metadata holds).
#[derive(Debug, Clone, Default)]
pub struct TokenizerData {
    /// `tokenizer.ggml.tokens`: token texts (byte-level alphabet for normal tokens).
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`; `None` means every token is normal.
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges`: "left right" lines, highest priority first.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.pre`.
    pub pre: PreTokenizer,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.eot_token_id` (found by text when absent).
    pub eot_id: Option<u32>,
    /// `tokenizer.ggml.eom_token_id` (found by text `<|eom_id|>` when absent).
    pub eom_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`; `None` uses llama.cpp's default for the pre-tokenizer
    /// (true for Llama 3, false otherwise).
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`; `None` means false.
    pub add_eos: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

/// Words cached before the cache is emptied.
const CACHE_LIMIT: usize = 1 << 16;

/// A byte-level BPE tokenizer (GGUF `tokenizer.ggml.model = gpt2`). See the module docs.
#[derive(Debug)]
pub struct Tokenizer {
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    token_to_id: FastMap<String, u32>,
    ranks: MergeRanks,
    pre: PreTokenizer,
    /// Special tokens matched when `parse_special` is true, longest first.
    specials_all: Vec<(String, u32)>,
    /// Special tokens matched always (user-defined), longest first.
    specials_user: Vec<(String, u32)>,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    eot_id: Option<u32>,
    eom_id: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    eog: HashSet<u32>,
    chat_template: Option<String>,
    byte_map: ByteMap,
    /// Byte-level word -> token ids.
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

fn find_text(map: &FastMap<String, u32>, texts: &[&str]) -> Option<u32> {
    texts.iter().find_map(|t| map.get(*t).copied())
}

impl Tokenizer {
    /// Builds a tokenizer from plain data.
    pub fn from_data(mut data: TokenizerData) -> Result<Tokenizer, TokenizerError> {
        let merges = std::mem::take(&mut data.merges);
        Tokenizer::build(data, &merges)
    }

    /// Builds a tokenizer from `data` (whose `merges` field is ignored) and borrowed merge lines.
    fn build<S: AsRef<str> + Sync>(
        data: TokenizerData,
        merges: &[S],
    ) -> Result<Tokenizer, TokenizerError> {
        let n = data.tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        if u32::try_from(n).is_err() {
            return Err(TokenizerError::VocabTooLarge(n));
        }
        let mut kinds: Vec<TokenKind> = match &data.token_types {
            None => vec![TokenKind::Normal; n],
            Some(types) if types.len() == n => {
                types.iter().map(|&t| TokenKind::from_gguf(t)).collect()
            }
            Some(types) => {
                return Err(TokenizerError::TypeCountMismatch {
                    tokens: n,
                    types: types.len(),
                })
            }
        };
        let mut token_to_id = fast_map(n);
        for (id, text) in data.tokens.iter().enumerate() {
            // Later duplicates win, as in llama.cpp. `n` fits u32 (checked above).
            token_to_id.insert(text.clone(), id as u32);
        }
        let check = |what: &'static str, id: Option<u32>| match id {
            Some(id) if id as usize >= n => Err(TokenizerError::IdOutOfRange {
                what,
                id,
                vocab_size: n,
            }),
            _ => Ok(id),
        };
        let bos_id = check("BOS", data.bos_id)?;
        let eos_id = check("EOS", data.eos_id)?;
        let eot_id = check("EOT", data.eot_id)?.or_else(|| find_text(&token_to_id, EOT_TEXTS));
        let eom_id =
            check("EOM", data.eom_id)?.or_else(|| find_text(&token_to_id, &["<|eom_id|>"]));

        // End-of-generation tokens: llama.cpp's text list (made control tokens) plus EOS/EOT/EOM.
        let mut eog = HashSet::new();
        for t in EOG_TEXTS {
            if let Some(&id) = token_to_id.get(*t) {
                eog.insert(id);
                kinds[id as usize] = TokenKind::Control;
            }
        }
        if let Some(id) = eot_id {
            kinds[id as usize] = TokenKind::Control;
        }
        eog.extend([eos_id, eot_id, eom_id].into_iter().flatten());

        let mut specials_all = Vec::new();
        let mut specials_user = Vec::new();
        for (id, (text, kind)) in data.tokens.iter().zip(&kinds).enumerate() {
            let entry = (text.clone(), id as u32);
            match kind {
                TokenKind::Control | TokenKind::Unknown => specials_all.push(entry),
                TokenKind::UserDefined => {
                    specials_all.push(entry.clone());
                    specials_user.push(entry);
                }
                _ => {}
            }
        }
        for list in [&mut specials_all, &mut specials_user] {
            list.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        }

        let ranks = MergeRanks::new(merges, &token_to_id);
        Ok(Tokenizer {
            add_bos: data.add_bos.unwrap_or(data.pre == PreTokenizer::Llama3),
            add_eos: data.add_eos.unwrap_or(false),
            tokens: data.tokens,
            kinds,
            token_to_id,
            ranks,
            pre: data.pre,
            specials_all,
            specials_user,
            bos_id,
            eos_id,
            eot_id,
            eom_id,
            eog,
            chat_template: data.chat_template,
            byte_map: ByteMap::new(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Encodes `text`. With `parse_special`, control tokens written in the text (such as
    /// `<|im_start|>`) become their ids; without it they are ordinary text. User-defined
    /// tokens are always matched (as llama.cpp does). Never adds BOS: see
    /// [`Tokenizer::encode_prompt`].
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, TokenizerError> {
        let specials = if parse_special {
            &self.specials_all
        } else {
            &self.specials_user
        };
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.len() > CACHE_LIMIT {
            cache.clear();
        }
        for fragment in special::partition(text, specials) {
            match fragment {
                Fragment::Token(id) => out.push(id),
                Fragment::Text(piece) => self.encode_piece(piece, &mut cache, &mut out),
            }
        }
        Ok(out)
    }

    /// Tokens for a prompt exactly as llama.cpp's tools build them: BOS first when the
    /// vocabulary asks for it ([`Tokenizer::add_bos`]), special tokens parsed, EOS last when
    /// `tokenizer.ggml.add_eos_token` is set.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::new();
        if self.add_bos {
            out.extend(self.bos_id);
        }
        out.extend(self.encode(text, true)?);
        if self.add_eos {
            out.extend(self.eos_id);
        }
        Ok(out)
    }

    fn encode_piece(&self, piece: &str, cache: &mut HashMap<String, Vec<u32>>, out: &mut Vec<u32>) {
        let cps: Vec<char> = piece.chars().collect();
        // Byte offset of every code point, plus the end.
        let offsets: Vec<usize> = piece
            .char_indices()
            .map(|(i, _)| i)
            .chain([piece.len()])
            .collect();
        let mut words = Vec::new();
        self.pre.split(&cps, &mut words);
        let mut word = String::new();
        for range in words {
            let (Some(&start), Some(&end)) = (offsets.get(range.start), offsets.get(range.end))
            else {
                continue;
            };
            word.clear();
            self.byte_map
                .encode_into(&piece.as_bytes()[start..end], &mut word);
            if let Some(ids) = cache.get(&word) {
                out.extend_from_slice(ids);
                continue;
            }
            let mut ids = Vec::new();
            match self.token_to_id.get(&word) {
                Some(&id) if self.pre == PreTokenizer::Llama3 => ids.push(id),
                _ => bpe::merge_word(&word, &self.token_to_id, &self.ranks, &mut ids),
            }
            out.extend_from_slice(&ids);
            cache.insert(word.clone(), ids);
        }
    }

    /// The BOS token id, if the vocabulary has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// The EOS token id, if the vocabulary has one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The end-of-turn token id (metadata, or found by text such as `<|eot_id|>`).
    pub fn eot_id(&self) -> Option<u32> {
        self.eot_id
    }

    /// The end-of-message token id (`<|eom_id|>` in Llama 3.1), if any.
    pub fn eom_id(&self) -> Option<u32> {
        self.eom_id
    }

    /// Whether prompts start with BOS (`tokenizer.ggml.add_bos_token`, llama.cpp's default
    /// when absent).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether prompts end with EOS (`tokenizer.ggml.add_eos_token`).
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// True for end-of-generation tokens: EOS, EOT, EOM and llama.cpp's list of end tokens
    /// present in the vocabulary (`<|eot_id|>`, `<|eom_id|>`, `<|im_end|>`, `<|endoftext|>` ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// All end-of-generation ids, sorted.
    pub fn eog_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.eog.iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Number of tokens.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The pre-tokenizer in use.
    pub fn pre_tokenizer(&self) -> PreTokenizer {
        self.pre
    }

    /// Number of merge rules.
    pub fn merge_count(&self) -> usize {
        self.ranks.len()
    }

    /// The raw vocabulary string of a token (byte-level alphabet for normal tokens).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The kind of a token.
    pub fn token_kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    /// The id of a vocabulary string, if it is a token.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    /// True for control and unknown tokens (those llama.cpp hides unless asked to render
    /// special tokens).
    pub fn is_special(&self, id: u32) -> bool {
        matches!(
            self.token_kind(id),
            Some(TokenKind::Control | TokenKind::Unknown)
        )
    }

    /// The bytes a token stands for: normal tokens are decoded from the byte-level alphabet;
    /// control, unknown and user-defined tokens are their text; unused and byte tokens, and ids
    /// outside the vocabulary, are empty.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let (Some(text), Some(kind)) = (self.token_text(id), self.token_kind(id)) else {
            return Vec::new();
        };
        match kind {
            TokenKind::Normal => {
                let mut out = Vec::with_capacity(text.len());
                self.byte_map.decode_into(text, &mut out);
                out
            }
            TokenKind::Control | TokenKind::Unknown | TokenKind::UserDefined => {
                text.as_bytes().to_vec()
            }
            TokenKind::Undefined | TokenKind::Unused | TokenKind::Byte => Vec::new(),
        }
    }

    /// Decodes tokens to text (special tokens as their text; invalid UTF-8 as U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend(self.token_bytes(id));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Forgets the per-word cache (for measuring cold encoding; never needed for correctness).
    pub fn clear_cache(&self) {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    /// The chat template stored with the vocabulary (`tokenizer.chat_template`), if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}
