//! Answers as OpenAI shapes: the whole JSON of a non-streamed answer, or server-sent events
//! (`data: {chunk}` per delta, a last chunk with `finish_reason`, with
//! `stream_options.include_usage` a usage chunk with no choices, then `data: [DONE]`).

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::api::{
    AnswerMessage, ChatChoice, ChatChunk, ChatCompletion, ChunkChoice, Delta, Endpoint, TextChoice,
    TextCompletion, Usage,
};
use super::errors::ApiError;
use super::scheduler::{Event, Finish, Ticket};

/// What every chunk of one answer repeats.
#[derive(Debug, Clone)]
pub struct AnswerMeta {
    /// `chatcmpl-...` / `cmpl-...`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// Model id.
    pub model: String,
    /// Which shape.
    pub endpoint: Endpoint,
    /// Send a usage chunk before `[DONE]`.
    pub include_usage: bool,
}

impl AnswerMeta {
    /// A streamed chunk carrying `text` (and `finish` in the last one).
    pub fn chunk(&self, text: Option<String>, role: bool, finish: Option<Finish>) -> String {
        let finish_reason = finish.map(Finish::as_str);
        let json = match self.endpoint {
            Endpoint::Chat => serde_json::to_string(&ChatChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk",
                created: self.created,
                model: self.model.clone(),
                choices: vec![ChunkChoice {
                    index: 0,
                    delta: Delta {
                        role: role.then_some("assistant"),
                        content: text,
                    },
                    finish_reason,
                    logprobs: None,
                }],
                usage: None,
            }),
            Endpoint::Completions => serde_json::to_string(&TextCompletion {
                id: self.id.clone(),
                object: "text_completion",
                created: self.created,
                model: self.model.clone(),
                choices: vec![TextChoice {
                    text: text.unwrap_or_default(),
                    index: 0,
                    logprobs: None,
                    finish_reason,
                }],
                usage: None,
            }),
        };
        json.unwrap_or_default()
    }

    /// The usage chunk (no choices).
    pub fn usage_chunk(&self, usage: Usage) -> String {
        let json = match self.endpoint {
            Endpoint::Chat => serde_json::to_string(&ChatChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk",
                created: self.created,
                model: self.model.clone(),
                choices: Vec::new(),
                usage: Some(usage),
            }),
            Endpoint::Completions => serde_json::to_string(&TextCompletion {
                id: self.id.clone(),
                object: "text_completion",
                created: self.created,
                model: self.model.clone(),
                choices: Vec::new(),
                usage: Some(usage),
            }),
        };
        json.unwrap_or_default()
    }

    /// The whole answer of a non-streamed request.
    pub fn whole(&self, text: String, finish: Finish, usage: Usage) -> String {
        let json = match self.endpoint {
            Endpoint::Chat => serde_json::to_string(&ChatCompletion {
                id: self.id.clone(),
                object: "chat.completion",
                created: self.created,
                model: self.model.clone(),
                choices: vec![ChatChoice {
                    index: 0,
                    message: AnswerMessage {
                        role: "assistant",
                        content: text,
                    },
                    finish_reason: finish.as_str(),
                    logprobs: None,
                }],
                usage,
            }),
            Endpoint::Completions => serde_json::to_string(&TextCompletion {
                id: self.id.clone(),
                object: "text_completion",
                created: self.created,
                model: self.model.clone(),
                choices: vec![TextChoice {
                    text,
                    index: 0,
                    logprobs: None,
                    finish_reason: Some(finish.as_str()),
                }],
                usage: Some(usage),
            }),
        };
        json.unwrap_or_default()
    }
}

/// Waits for the whole answer: `(text, finish, usage)`, or the engine's failure as a 500.
pub async fn collect(ticket: &mut Ticket) -> Result<(String, Finish, Usage), ApiError> {
    let mut text = String::new();
    loop {
        match ticket.next().await {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done { finish, usage }) => return Ok((text, finish, usage)),
            Some(Event::Failed(e)) => return Err(ApiError::internal(e)),
            None => return Err(ApiError::internal("the engine thread stopped")),
        }
    }
}

struct StreamState {
    ticket: Ticket,
    meta: AnswerMeta,
    pending: VecDeque<String>,
    done: bool,
}

/// The answer as server-sent events; dropping the response body (the client went away)
/// drops the ticket, which cancels the sequence.
pub fn stream(
    meta: AnswerMeta,
    ticket: Ticket,
    on_done: impl Fn(Finish, Usage) + Send + Sync + 'static,
) -> Response {
    let mut pending = VecDeque::new();
    if meta.endpoint == Endpoint::Chat {
        pending.push_back(meta.chunk(Some(String::new()), true, None));
    }
    let state = StreamState {
        ticket,
        meta,
        pending,
        done: false,
    };
    let on_done = std::sync::Arc::new(on_done);
    let events = futures_util::stream::unfold(state, move |mut st| {
        let on_done = std::sync::Arc::clone(&on_done);
        async move {
            loop {
                if let Some(data) = st.pending.pop_front() {
                    return Some((Ok::<_, Infallible>(SseEvent::default().data(data)), st));
                }
                if st.done {
                    return None;
                }
                match st.ticket.next().await {
                    Some(Event::Text(t)) => {
                        st.pending.push_back(st.meta.chunk(Some(t), false, None))
                    }
                    Some(Event::Done { finish, usage }) => {
                        on_done(finish, usage);
                        let last = match st.meta.endpoint {
                            Endpoint::Chat => st.meta.chunk(None, false, Some(finish)),
                            Endpoint::Completions => {
                                st.meta.chunk(Some(String::new()), false, Some(finish))
                            }
                        };
                        st.pending.push_back(last);
                        if st.meta.include_usage {
                            st.pending.push_back(st.meta.usage_chunk(usage));
                        }
                        st.pending.push_back("[DONE]".to_owned());
                        st.done = true;
                    }
                    Some(Event::Failed(e)) => {
                        st.pending.push_back(ApiError::internal(e).json());
                        st.pending.push_back("[DONE]".to_owned());
                        st.done = true;
                    }
                    None => {
                        st.pending
                            .push_back(ApiError::internal("the engine thread stopped").json());
                        st.done = true;
                    }
                }
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(endpoint: Endpoint) -> AnswerMeta {
        AnswerMeta {
            id: "chatcmpl-1".into(),
            created: 7,
            model: "smol".into(),
            endpoint,
            include_usage: true,
        }
    }

    #[test]
    fn chunks_have_openais_fields() {
        let m = meta(Endpoint::Chat);
        let first: serde_json::Value =
            serde_json::from_str(&m.chunk(Some(String::new()), true, None)).unwrap();
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert!(first["choices"][0]["finish_reason"].is_null());
        let last: serde_json::Value =
            serde_json::from_str(&m.chunk(None, false, Some(Finish::Length))).unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "length");
        assert!(last["choices"][0]["delta"].as_object().unwrap().is_empty());
        let usage: serde_json::Value =
            serde_json::from_str(&m.usage_chunk(Usage::new(3, 4))).unwrap();
        assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
        assert_eq!(usage["usage"]["total_tokens"], 7);
        let whole: serde_json::Value =
            serde_json::from_str(&m.whole("hi".into(), Finish::Stop, Usage::new(3, 1))).unwrap();
        assert_eq!(whole["object"], "chat.completion");
        assert_eq!(whole["choices"][0]["message"]["content"], "hi");
        assert_eq!(whole["choices"][0]["finish_reason"], "stop");
        assert_eq!(whole["usage"]["prompt_tokens"], 3);
        let text: serde_json::Value = serde_json::from_str(&meta(Endpoint::Completions).whole(
            "x".into(),
            Finish::Stop,
            Usage::new(1, 1),
        ))
        .unwrap();
        assert_eq!(text["object"], "text_completion");
        assert_eq!(text["choices"][0]["text"], "x");
    }
}
