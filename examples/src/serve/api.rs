//! The OpenAI request and response shapes, and the checks that turn a request body into what
//! the scheduler runs (or into a 400 that names the field at fault).

use llama_model::chat::ChatMessage;
use llama_model::sampler::SamplerConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::ApiError;

/// Most stop strings per request (OpenAI's limit).
pub const MAX_STOPS: usize = 4;

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// A message's `content`: text, or a list of parts of which only text parts are supported.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts (`{"type": "text", "text": ...}`).
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    /// Part type; only `text` is supported.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a text part.
    pub text: Option<String>,
}

/// One chat message as sent.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// The text (absent or null only for assistant tool calls, which are not supported).
    pub content: Option<Content>,
    /// Tool calls of an assistant message (unsupported).
    pub tool_calls: Option<Value>,
}

/// `prompt` of `/v1/completions`: text or tokens, one prompt per request.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    /// One text.
    Text(String),
    /// Texts (exactly one is accepted).
    Texts(Vec<String>),
    /// Token ids.
    Tokens(Vec<u32>),
    /// Lists of token ids (exactly one is accepted).
    TokenLists(Vec<Vec<u32>>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// Every field either endpoint reads (others are ignored, as OpenAI's own clients add some).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawRequest {
    /// Model id; must be the served one when given.
    pub model: Option<String>,
    /// Chat messages (`/v1/chat/completions`).
    pub messages: Option<Vec<Message>>,
    /// Prompt (`/v1/completions`).
    pub prompt: Option<PromptField>,
    /// Most tokens to generate (legacy name).
    pub max_tokens: Option<i64>,
    /// Most tokens to generate (current name; wins over `max_tokens`).
    pub max_completion_tokens: Option<i64>,
    /// Sampling temperature, 0..=2 (0: greedy). Default 1.
    pub temperature: Option<f32>,
    /// Nucleus sampling mass, (0, 1].
    pub top_p: Option<f32>,
    /// Keep the k most likely tokens (0: off).
    pub top_k: Option<i64>,
    /// Minimum probability relative to the most likely token, 0..=1.
    pub min_p: Option<f32>,
    /// Random seed.
    pub seed: Option<i64>,
    /// Stop strings.
    pub stop: Option<StopField>,
    /// -2..=2.
    pub presence_penalty: Option<f32>,
    /// -2..=2.
    pub frequency_penalty: Option<f32>,
    /// llama.cpp's multiplicative repetition penalty (extension; 1: off).
    pub repeat_penalty: Option<f32>,
    /// Server-sent events.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Choices per request (only 1).
    pub n: Option<i64>,
    /// Unsupported.
    pub tools: Option<Value>,
    /// Unsupported unless `none`.
    pub tool_choice: Option<Value>,
    /// Unsupported (legacy tools).
    pub functions: Option<Value>,
    /// Unsupported (legacy tools).
    pub function_call: Option<Value>,
    /// Unsupported (chat: true; completions: a number).
    pub logprobs: Option<Value>,
    /// Unsupported.
    pub top_logprobs: Option<Value>,
    /// Unsupported unless empty.
    pub logit_bias: Option<Value>,
    /// Only `{"type": "text"}`.
    pub response_format: Option<Value>,
    /// Completions: unsupported when true.
    pub echo: Option<bool>,
    /// Completions: unsupported.
    pub suffix: Option<Value>,
    /// Completions: only 1.
    pub best_of: Option<i64>,
}

/// What to feed the model.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Chat messages, rendered with the model's template.
    Chat(Vec<ChatMessage>),
    /// Text, tokenized as a prompt.
    Text(String),
    /// Token ids, fed as given.
    Tokens(Vec<u32>),
}

/// A checked request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// Most tokens to generate (`None`: up to the context).
    pub max_tokens: Option<usize>,
    /// Sampling settings.
    pub sampler: SamplerConfig,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Answer as server-sent events.
    pub stream: bool,
    /// With `stream`: a last chunk with the usage.
    pub include_usage: bool,
}

/// Which endpoint a body was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completions,
}

/// Parses and checks a request body for `endpoint`; `model` is the served model's id.
pub fn parse(body: &[u8], endpoint: Endpoint, model: &str) -> Result<GenRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
            .with_code("invalid_json")
    })?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let raw: RawRequest = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ApiError::invalid_param(path.clone(), format!("field `{path}`: {}", e.into_inner()))
    })?;
    check(raw, endpoint, model)
}

fn range(param: &str, v: Option<f32>, lo: f32, hi: f32) -> Result<(), ApiError> {
    match v {
        Some(x) if !(lo..=hi).contains(&x) => Err(ApiError::invalid_param(
            param,
            format!("{param} must be between {lo} and {hi}, got {x}"),
        )),
        _ => Ok(()),
    }
}

fn unsupported_if(cond: bool, param: &str, what: &str) -> Result<(), ApiError> {
    if cond {
        Err(ApiError::unsupported(
            param,
            format!("{param}: {what} is not supported by this server"),
        ))
    } else {
        Ok(())
    }
}

fn present(v: &Option<Value>) -> bool {
    !matches!(v, None | Some(Value::Null))
}

/// Checks the fields of `raw` for `endpoint`.
pub fn check(raw: RawRequest, endpoint: Endpoint, model: &str) -> Result<GenRequest, ApiError> {
    if let Some(m) = &raw.model {
        if m != model {
            return Err(ApiError::model_not_found(m, model));
        }
    }
    // Fields that would change the answer and are not implemented: refuse, never ignore.
    unsupported_if(
        raw.n.is_some_and(|n| n != 1),
        "n",
        "more than one choice (n > 1)",
    )?;
    unsupported_if(
        raw.best_of.is_some_and(|n| n != 1),
        "best_of",
        "best_of > 1",
    )?;
    let tools = match &raw.tools {
        Some(Value::Array(a)) => !a.is_empty(),
        other => present(other),
    };
    unsupported_if(tools, "tools", "tool calling")?;
    unsupported_if(present(&raw.functions), "functions", "function calling")?;
    unsupported_if(
        present(&raw.function_call) && raw.function_call != Some(Value::from("none")),
        "function_call",
        "function calling",
    )?;
    unsupported_if(
        present(&raw.tool_choice) && raw.tool_choice != Some(Value::from("none")),
        "tool_choice",
        "tool calling",
    )?;
    let logprobs = match &raw.logprobs {
        Some(Value::Bool(b)) => *b,
        other => present(other),
    };
    unsupported_if(logprobs, "logprobs", "logprobs")?;
    unsupported_if(present(&raw.top_logprobs), "top_logprobs", "top_logprobs")?;
    let bias = match &raw.logit_bias {
        Some(Value::Object(o)) => !o.is_empty(),
        other => present(other),
    };
    unsupported_if(bias, "logit_bias", "logit_bias")?;
    if let Some(f) = &raw.response_format {
        if f.get("type").and_then(Value::as_str) != Some("text") {
            return Err(ApiError::unsupported(
                "response_format",
                "response_format: only {\"type\": \"text\"} is supported (no JSON mode)",
            ));
        }
    }
    unsupported_if(raw.echo == Some(true), "echo", "echo")?;
    unsupported_if(present(&raw.suffix), "suffix", "suffix (insertion)")?;

    let prompt = match endpoint {
        Endpoint::Chat => Prompt::Chat(messages(raw.messages)?),
        Endpoint::Completions => prompt(raw.prompt)?,
    };
    let (param, max) = match (raw.max_completion_tokens, raw.max_tokens) {
        (Some(m), _) => ("max_completion_tokens", Some(m)),
        (None, m) => ("max_tokens", m),
    };
    let max_tokens = match max {
        Some(m) if m < 1 => {
            return Err(ApiError::invalid_param(
                param,
                format!("{param} must be at least 1, got {m}"),
            ))
        }
        Some(m) => Some(usize::try_from(m).unwrap_or(usize::MAX)),
        None => None,
    };
    range("temperature", raw.temperature, 0.0, 2.0)?;
    if let Some(p) = raw.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(ApiError::invalid_param(
                "top_p",
                format!("top_p must be above 0 and at most 1, got {p}"),
            ));
        }
    }
    if let Some(k) = raw.top_k {
        if k < 0 {
            return Err(ApiError::invalid_param(
                "top_k",
                format!("top_k must be 0 (off) or more, got {k}"),
            ));
        }
    }
    range("min_p", raw.min_p, 0.0, 1.0)?;
    range("presence_penalty", raw.presence_penalty, -2.0, 2.0)?;
    range("frequency_penalty", raw.frequency_penalty, -2.0, 2.0)?;
    range("repeat_penalty", raw.repeat_penalty, 0.0, 10.0)?;
    let stop = match raw.stop {
        None => Vec::new(),
        Some(StopField::One(s)) => vec![s],
        Some(StopField::Many(v)) => v,
    };
    if stop.len() > MAX_STOPS {
        return Err(ApiError::invalid_param(
            "stop",
            format!("stop: at most {MAX_STOPS} stop strings, got {}", stop.len()),
        ));
    }
    let stream = raw.stream.unwrap_or(false);
    let sampler = SamplerConfig {
        temperature: raw.temperature.unwrap_or(1.0),
        top_k: raw.top_k.map_or(0, |k| usize::try_from(k).unwrap_or(0)),
        top_p: raw.top_p.unwrap_or(1.0),
        min_p: raw.min_p.unwrap_or(0.0),
        repeat_penalty: raw.repeat_penalty.unwrap_or(1.0),
        presence_penalty: raw.presence_penalty.unwrap_or(0.0),
        frequency_penalty: raw.frequency_penalty.unwrap_or(0.0),
        // Negative seeds keep their bits.
        seed: raw.seed.map_or(0, |s| s as u64),
        ..SamplerConfig::default()
    };
    Ok(GenRequest {
        prompt,
        max_tokens,
        sampler,
        stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        stream,
        include_usage: stream && raw.stream_options.is_some_and(|o| o.include_usage),
    })
}

fn messages(messages: Option<Vec<Message>>) -> Result<Vec<ChatMessage>, ApiError> {
    let messages = messages
        .ok_or_else(|| ApiError::invalid_param("messages", "missing required field `messages`"))?;
    if messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "messages must hold at least one message",
        ));
    }
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.into_iter().enumerate() {
        let param = format!("messages[{i}]");
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            "tool" | "function" => {
                return Err(ApiError::unsupported(
                    &format!("{param}.role"),
                    format!("{param}.role: tool messages are not supported (no tool calling)"),
                ))
            }
            other => {
                return Err(ApiError::invalid_param(
                    format!("{param}.role"),
                    format!("{param}.role: unknown role `{other}` (use system, user or assistant)"),
                ))
            }
        };
        if present(&m.tool_calls) {
            return Err(ApiError::unsupported(
                &format!("{param}.tool_calls"),
                format!("{param}.tool_calls: tool calling"),
            ));
        }
        let content = match m.content {
            None => {
                return Err(ApiError::invalid_param(
                    format!("{param}.content"),
                    format!("{param}.content is missing"),
                ))
            }
            Some(Content::Text(t)) => t,
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.into_iter().enumerate() {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        (kind, _) => {
                            return Err(ApiError::unsupported(
                                &format!("{param}.content[{j}]"),
                                format!(
                                    "{param}.content[{j}]: content parts of type `{kind}` (only text parts with a `text` field)"
                                ),
                            ))
                        }
                    }
                }
                text
            }
        };
        out.push(ChatMessage::new(role, content));
    }
    Ok(out)
}

fn prompt(p: Option<PromptField>) -> Result<Prompt, ApiError> {
    let one = |n: usize| -> Result<(), ApiError> {
        if n == 1 {
            Ok(())
        } else {
            Err(ApiError::unsupported(
                "prompt",
                format!("prompt: {n} prompts in one request (send one prompt per request)"),
            ))
        }
    };
    let p = match p {
        None => {
            return Err(ApiError::invalid_param(
                "prompt",
                "missing required field `prompt`",
            ))
        }
        Some(PromptField::Text(t)) => Prompt::Text(t),
        Some(PromptField::Texts(mut v)) => {
            one(v.len())?;
            Prompt::Text(v.remove(0))
        }
        Some(PromptField::Tokens(t)) => Prompt::Tokens(t),
        Some(PromptField::TokenLists(mut v)) => {
            one(v.len())?;
            Prompt::Tokens(v.remove(0))
        }
    };
    let empty = match &p {
        Prompt::Text(t) => t.is_empty(),
        Prompt::Tokens(t) => t.is_empty(),
        Prompt::Chat(_) => false,
    };
    if empty {
        return Err(ApiError::invalid_param("prompt", "prompt is empty"));
    }
    Ok(p)
}

/// Token counts of one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens fed.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Both.
    pub total_tokens: usize,
}

impl Usage {
    /// Usage of `prompt` fed and `completion` generated tokens.
    pub fn new(prompt: usize, completion: usize) -> Self {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        }
    }
}

/// An assistant message in a chat answer.
#[derive(Debug, Clone, Serialize)]
pub struct AnswerMessage {
    /// Always `assistant`.
    pub role: &'static str,
    /// The text.
    pub content: String,
}

/// One choice of a chat answer.
#[derive(Debug, Clone, Serialize)]
pub struct ChatChoice {
    /// Always 0.
    pub index: usize,
    /// The message.
    pub message: AnswerMessage,
    /// `stop` or `length`.
    pub finish_reason: &'static str,
    /// Always null (not built).
    pub logprobs: Option<()>,
}

/// `chat.completion`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletion {
    /// `chatcmpl-...`.
    pub id: String,
    /// `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// Model id.
    pub model: String,
    /// One choice.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: Usage,
}

/// One choice of a text completion.
#[derive(Debug, Clone, Serialize)]
pub struct TextChoice {
    /// The text (a delta when streaming).
    pub text: String,
    /// Always 0.
    pub index: usize,
    /// Always null.
    pub logprobs: Option<()>,
    /// `stop`, `length`, or null in a stream chunk before the last.
    pub finish_reason: Option<&'static str>,
}

/// `text_completion` (also each streamed chunk of one).
#[derive(Debug, Clone, Serialize)]
pub struct TextCompletion {
    /// `cmpl-...`.
    pub id: String,
    /// `text_completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// Model id.
    pub model: String,
    /// One choice (none in the usage chunk of a stream).
    pub choices: Vec<TextChoice>,
    /// Token counts (in a stream: only in the usage chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// The delta of a streamed chat chunk.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delta {
    /// `assistant` in the first chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// New text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// One choice of a streamed chat chunk.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkChoice {
    /// Always 0.
    pub index: usize,
    /// What is new.
    pub delta: Delta,
    /// Null until the last chunk.
    pub finish_reason: Option<&'static str>,
    /// Always null.
    pub logprobs: Option<()>,
}

/// `chat.completion.chunk`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatChunk {
    /// Same id in every chunk of an answer.
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// Model id.
    pub model: String,
    /// One choice (none in the usage chunk).
    pub choices: Vec<ChunkChoice>,
    /// Token counts (only in the usage chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    /// The id clients send as `model`.
    pub id: String,
    /// `model`.
    pub object: &'static str,
    /// Unix seconds the server started.
    pub created: u64,
    /// `vramless`.
    pub owned_by: &'static str,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelList {
    /// `list`.
    pub object: &'static str,
    /// The one served model.
    pub data: Vec<ModelCard>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn chat(body: &str) -> Result<GenRequest, ApiError> {
        parse(body.as_bytes(), Endpoint::Chat, "smol")
    }

    fn completion(body: &str) -> Result<GenRequest, ApiError> {
        parse(body.as_bytes(), Endpoint::Completions, "smol")
    }

    fn bad(r: Result<GenRequest, ApiError>, status: u16, param: Option<&str>) -> ApiError {
        let e = r.expect_err("must be refused");
        assert_eq!(e.status, StatusCode::from_u16(status).unwrap(), "{e}");
        assert_eq!(e.param.as_deref(), param, "{e}");
        e
    }

    #[test]
    fn a_full_chat_request_maps_every_field() {
        let r = chat(
            r#"{"model":"smol","messages":[{"role":"system","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}]}],
            "max_completion_tokens":7,"max_tokens":99,"temperature":0.5,"top_p":0.9,"top_k":40,
            "min_p":0.05,"seed":-1,"stop":["\n","END"],"presence_penalty":0.5,
            "frequency_penalty":-0.25,"stream":true,"stream_options":{"include_usage":true},
            "n":1,"user":"someone","tools":[],"tool_choice":"none","logprobs":false}"#,
        )
        .unwrap();
        assert_eq!(
            r.prompt,
            Prompt::Chat(vec![
                ChatMessage::system("Be brief."),
                ChatMessage::user("Hi there")
            ])
        );
        assert_eq!(r.max_tokens, Some(7));
        assert_eq!(r.sampler.temperature, 0.5);
        assert_eq!(r.sampler.top_p, 0.9);
        assert_eq!(r.sampler.top_k, 40);
        assert_eq!(r.sampler.min_p, 0.05);
        assert_eq!(r.sampler.seed, u64::MAX);
        assert_eq!(r.sampler.presence_penalty, 0.5);
        assert_eq!(r.sampler.frequency_penalty, -0.25);
        assert_eq!(r.stop, vec!["\n".to_owned(), "END".to_owned()]);
        assert!(r.stream && r.include_usage);
    }

    #[test]
    fn defaults_are_openais() {
        let r = completion(r#"{"prompt":"Once"}"#).unwrap();
        assert_eq!(r.prompt, Prompt::Text("Once".into()));
        assert_eq!(r.max_tokens, None);
        assert_eq!(r.sampler.temperature, 1.0);
        assert_eq!(r.sampler.top_p, 1.0);
        assert_eq!(r.sampler.presence_penalty, 0.0);
        assert!(!r.stream && !r.include_usage);
        assert_eq!(
            completion(r#"{"prompt":[[1,2,3]],"stop":"x"}"#)
                .unwrap()
                .prompt,
            Prompt::Tokens(vec![1, 2, 3])
        );
    }

    #[test]
    fn malformed_bodies_are_400_with_the_field_named() {
        let e = bad(chat("{not json"), 400, None);
        assert_eq!(e.code, Some("invalid_json"));
        bad(chat("[1,2]"), 400, None);
        bad(chat(r#"{"model":"smol"}"#), 400, Some("messages"));
        bad(chat(r#"{"messages":[]}"#), 400, Some("messages"));
        bad(chat(r#"{"messages":"hi"}"#), 400, Some("messages"));
        bad(
            chat(r#"{"messages":[{"role":"user","content":"a"}],"max_tokens":"8"}"#),
            400,
            Some("max_tokens"),
        );
        bad(
            chat(r#"{"messages":[{"role":"user","content":"a"}],"max_tokens":0}"#),
            400,
            Some("max_tokens"),
        );
        bad(
            chat(r#"{"messages":[{"role":"user","content":"a"}],"max_completion_tokens":-3}"#),
            400,
            Some("max_completion_tokens"),
        );
        bad(
            chat(r#"{"messages":[{"role":"user","content":"a"}],"temperature":3}"#),
            400,
            Some("temperature"),
        );
        bad(
            chat(r#"{"messages":[{"role":"user","content":"a"}],"top_p":0}"#),
            400,
            Some("top_p"),
        );
        bad(
            chat(r#"{"messages":[{"role":"user","content":"a"}],"top_k":-1}"#),
            400,
            Some("top_k"),
        );
        bad(
            chat(r#"{"messages":[{"role":"user","content":"a"}],"stop":["a","b","c","d","e"]}"#),
            400,
            Some("stop"),
        );
        bad(
            chat(r#"{"messages":[{"role":"user","content":"a"}],"stop":5}"#),
            400,
            Some("stop"),
        );
        bad(
            chat(r#"{"messages":[{"role":"wizard","content":"a"}]}"#),
            400,
            Some("messages[0].role"),
        );
        bad(
            chat(r#"{"messages":[{"role":"user"}]}"#),
            400,
            Some("messages[0].content"),
        );
        bad(
            chat(r#"{"messages":[{"content":"a"}]}"#),
            400,
            Some("messages[0]"),
        );
        bad(completion(r#"{"max_tokens":3}"#), 400, Some("prompt"));
        bad(completion(r#"{"prompt":""}"#), 400, Some("prompt"));
        bad(completion(r#"{"prompt":{"a":1}}"#), 400, Some("prompt"));
    }

    #[test]
    fn fields_that_change_results_are_refused_not_ignored() {
        let base = r#""messages":[{"role":"user","content":"a"}]"#;
        for (extra, param) in [
            (r#""n":2"#, "n"),
            (
                r#""tools":[{"type":"function","function":{"name":"f"}}]"#,
                "tools",
            ),
            (r#""tool_choice":"auto""#, "tool_choice"),
            (r#""logprobs":true"#, "logprobs"),
            (r#""top_logprobs":2"#, "top_logprobs"),
            (r#""logit_bias":{"5":10}"#, "logit_bias"),
            (
                r#""response_format":{"type":"json_object"}"#,
                "response_format",
            ),
        ] {
            let e = bad(chat(&format!("{{{base},{extra}}}")), 400, Some(param));
            assert_eq!(e.code, Some("unsupported_parameter"));
        }
        bad(
            chat(
                r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]}"#,
            ),
            400,
            Some("messages[0].content[0]"),
        );
        bad(
            completion(r#"{"prompt":"a","echo":true}"#),
            400,
            Some("echo"),
        );
        bad(
            completion(r#"{"prompt":"a","best_of":3}"#),
            400,
            Some("best_of"),
        );
        bad(
            completion(r#"{"prompt":"a","logprobs":2}"#),
            400,
            Some("logprobs"),
        );
        bad(completion(r#"{"prompt":["a","b"]}"#), 400, Some("prompt"));
    }

    #[test]
    fn an_unknown_model_is_404() {
        let e = bad(
            chat(r#"{"model":"gpt-4","messages":[{"role":"user","content":"a"}]}"#),
            404,
            Some("model"),
        );
        assert_eq!(e.code, Some("model_not_found"));
    }
}
