//! Chat templates (the model's own Jinja `tokenizer.chat_template`, rendered with minijinja)
//! and conversations that feed only what is new each turn.
//!
//! Templates are rendered the way Hugging Face and llama.cpp render them: `trim_blocks` and
//! `lstrip_blocks` on, with `messages`, `add_generation_prompt`, `bos_token` and `eos_token`
//! defined, plus `raise_exception(msg)`, `strftime_now(fmt)` (Llama 3.x date line) and common
//! Python string/dict methods (`strip`, `startswith`, `split`, `items`, `get` ...).

mod pycompat;
mod time;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use minijinja::{context, Environment, Error, ErrorKind, Value};

use crate::tokenizer::Tokenizer;

/// Name under which the template is stored in the environment.
const TEMPLATE_NAME: &str = "chat";

/// A ChatML template (`<|im_start|>role\ncontent<|im_end|>\n`), the format SmolLM2 and many
/// other models use; for vocabularies that ship no template.
pub const CHATML_TEMPLATE: &str =
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n\
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// A Llama 3 template (header ids, two newlines, trimmed content, `<|eot_id|>`), for Llama 3
/// vocabularies that ship no template.
pub const LLAMA3_TEMPLATE: &str =
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}\
<|end_header_id|>\n\n{{ m.content | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}\
<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";

/// Errors rendering chats.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    /// The model ships no chat template.
    #[error(
        "the model has no chat template (GGUF key tokenizer.chat_template); use \
         ChatTemplate::new with CHATML_TEMPLATE or LLAMA3_TEMPLATE, or pass a plain prompt"
    )]
    NoTemplate,
    /// The template text is not valid Jinja.
    #[error("the chat template does not parse: {0:#}")]
    Syntax(#[source] Error),
    /// A metadata key has the wrong type.
    #[error("reading the chat template from GGUF metadata: {0}")]
    Metadata(#[from] gguf::GgufError),
    /// Rendering failed (including `raise_exception` called by the template).
    #[error("the chat template failed to render: {0:#}")]
    Render(#[source] Error),
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// "system", "user", "assistant" ...
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A compiled chat template with its BOS/EOS texts.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
    /// Seconds since the Unix epoch for `strftime_now`; `i64::MIN` means "the system clock".
    fixed_time: Arc<AtomicI64>,
}

impl ChatTemplate {
    /// Compiles `source` (Jinja). `bos_token` / `eos_token` are the texts the template sees.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate, ChatError> {
        let fixed_time = Arc::new(AtomicI64::new(i64::MIN));
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, Error> {
                Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("template raised: {message}"),
                ))
            },
        );
        let clock = Arc::clone(&fixed_time);
        env.add_function("strftime_now", move |format: String| -> String {
            let fixed = clock.load(Ordering::Relaxed);
            let secs = if fixed == i64::MIN {
                time::now_unix()
            } else {
                fixed
            };
            time::strftime(&format, secs)
        });
        env.set_unknown_method_callback(pycompat::call_method);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(ChatError::Syntax)?;
        Ok(ChatTemplate {
            env,
            source: source.to_owned(),
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
            fixed_time,
        })
    }

    /// The template in GGUF metadata (`tokenizer.chat_template`), with the BOS/EOS texts
    /// named by `tokenizer.ggml.bos_token_id` / `eos_token_id`.
    pub fn from_gguf(meta: &gguf::Metadata) -> Result<ChatTemplate, ChatError> {
        use crate::tokenizer::keys;
        let source = meta
            .opt_str(keys::CHAT_TEMPLATE)?
            .ok_or(ChatError::NoTemplate)?;
        let tokens = meta.get_array(keys::TOKENS)?;
        let text = |key: &str| -> Result<String, ChatError> {
            let id = meta.opt_u32(key)?;
            Ok(id
                .and_then(|id| tokens.values.get(id as usize))
                .and_then(gguf::Value::as_str)
                .unwrap_or("")
                .to_owned())
        };
        ChatTemplate::new(source, &text(keys::BOS)?, &text(keys::EOS)?)
    }

    /// The template stored with a tokenizer's vocabulary, with its BOS/EOS texts.
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Result<ChatTemplate, ChatError> {
        let source = tokenizer.chat_template().ok_or(ChatError::NoTemplate)?;
        let text = |id: Option<u32>| id.and_then(|id| tokenizer.token_text(id)).unwrap_or("");
        ChatTemplate::new(source, text(tokenizer.bos_id()), text(tokenizer.eos_id()))
    }

    /// The model's template, or a built-in one chosen from the vocabulary when the model has
    /// none: Llama 3 when `<|start_header_id|>` is a token, ChatML when `<|im_start|>` is.
    pub fn from_tokenizer_or_builtin(tokenizer: &Tokenizer) -> Result<ChatTemplate, ChatError> {
        match ChatTemplate::from_tokenizer(tokenizer) {
            Err(ChatError::NoTemplate) => {
                let source = if tokenizer.token_id("<|start_header_id|>").is_some() {
                    LLAMA3_TEMPLATE
                } else if tokenizer.token_id("<|im_start|>").is_some() {
                    CHATML_TEMPLATE
                } else {
                    return Err(ChatError::NoTemplate);
                };
                let text =
                    |id: Option<u32>| id.and_then(|id| tokenizer.token_text(id)).unwrap_or("");
                ChatTemplate::new(source, text(tokenizer.bos_id()), text(tokenizer.eos_id()))
            }
            other => other,
        }
    }

    /// Makes `strftime_now` report this moment (seconds since the Unix epoch, UTC) instead of
    /// the system clock, for reproducible output.
    pub fn set_time(&self, unix_seconds: i64) {
        self.fixed_time.store(unix_seconds, Ordering::Relaxed);
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends where the assistant's
    /// reply begins.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| context! { role => m.role.as_str(), content => m.content.as_str() })
            .collect();
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(ChatError::Render)?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token.as_str(),
                eos_token => self.eos_token.as_str(),
            })
            .map_err(ChatError::Render)
    }
}

/// What to feed the model for a new turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptDelta {
    /// Append this text after everything fed so far (the KV cache stays valid).
    Append(String),
    /// The rendered history no longer starts with what was fed (the template rewrote an
    /// earlier part): clear the KV cache and feed this whole text.
    Restart(String),
}

impl PromptDelta {
    /// The text to feed.
    pub fn text(&self) -> &str {
        match self {
            PromptDelta::Append(t) | PromptDelta::Restart(t) => t,
        }
    }
}

/// A conversation: the message history plus the exact text already fed to the model, so each
/// turn feeds only the new part and earlier turns stay in the KV cache.
#[derive(Debug, Clone)]
pub struct Conversation {
    template: ChatTemplate,
    messages: Vec<ChatMessage>,
    fed: String,
}

impl Conversation {
    /// An empty conversation.
    pub fn new(template: ChatTemplate) -> Conversation {
        Conversation {
            template,
            messages: Vec::new(),
            fed: String::new(),
        }
    }

    /// A conversation that starts with a system message.
    pub fn with_system(template: ChatTemplate, system: &str) -> Conversation {
        let mut c = Conversation::new(template);
        c.messages.push(ChatMessage::system(system));
        c
    }

    /// The history.
    pub fn messages(&self) -> &[ChatMessage] {
        &self.messages
    }

    /// Everything fed to the model so far.
    pub fn fed_text(&self) -> &str {
        &self.fed
    }

    /// The template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// Adds a user message and returns the text to feed before generating the reply (the
    /// rendered conversation with the generation prompt, minus what was already fed).
    pub fn add_user(&mut self, content: &str) -> Result<PromptDelta, ChatError> {
        self.messages.push(ChatMessage::user(content));
        let full = self.template.render(&self.messages, true)?;
        let delta = match full.strip_prefix(self.fed.as_str()) {
            Some(rest) => PromptDelta::Append(rest.to_owned()),
            None => PromptDelta::Restart(full.clone()),
        };
        self.fed = full;
        Ok(delta)
    }

    /// Records the assistant's reply. `reply` is the message text kept in the history (without
    /// end-of-turn tokens); `fed` is the text of the tokens that actually went through the
    /// model while generating it (usually `reply`, plus the end token's text if it was fed).
    pub fn add_assistant(&mut self, reply: &str, fed: &str) {
        self.messages.push(ChatMessage::assistant(reply));
        self.fed.push_str(fed);
    }

    /// Forgets everything fed (for example after the caller cleared its KV cache); the next
    /// turn returns the whole rendered conversation.
    pub fn reset_fed(&mut self) {
        self.fed.clear();
    }
}
