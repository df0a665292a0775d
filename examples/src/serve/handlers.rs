//! The HTTP routes: request in, checked, tokenized, submitted to the scheduler, answered.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::api::{self, Endpoint, ModelCard, ModelList, Prompt};
use super::errors::ApiError;
use super::metrics::Outcome;
use super::scheduler::Job;
use super::sse::{self, AnswerMeta};
use super::App;

/// Checks `Authorization: Bearer KEY` when the server has a key.
pub async fn auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(key) = &app.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|g| same(g.as_bytes(), key.as_bytes())) {
            app.metrics.request(Outcome::BadRequest);
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// Compares without stopping at the first difference (no timing hint about the key).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// `POST /v1/chat/completions`.
pub async fn chat(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    generate(app, body, Endpoint::Chat).await
}

/// `POST /v1/completions`.
pub async fn completions(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(app, body, Endpoint::Completions).await
}

async fn generate(
    app: Arc<App>,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Response {
    match answer(&app, body, endpoint).await {
        Ok(r) => r,
        Err(e) => {
            if e.status.is_client_error() {
                app.metrics.request(Outcome::BadRequest);
                tracing::info!(status = e.status.as_u16(), "refused: {}", e.message);
            } else if e.status == StatusCode::INTERNAL_SERVER_ERROR {
                tracing::error!("{}", e.message);
            }
            e.into_response()
        }
    }
}

async fn answer(
    app: &Arc<App>,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(app.max_body)
        } else {
            ApiError::bad_request(format!("cannot read the request body: {}", r.body_text()))
        }
    })?;
    let req = api::parse(&body, endpoint, &app.model_id)?;
    let prompt = app.tokens(&req.prompt)?;
    let room = app.max_context.saturating_sub(prompt.len());
    let max_new = req.max_tokens.unwrap_or(room);
    if prompt.len() + max_new > app.max_context || max_new == 0 {
        let param = match (req.max_tokens, endpoint) {
            (Some(_), _) => "max_tokens",
            (None, Endpoint::Chat) => "messages",
            (None, Endpoint::Completions) => "prompt",
        };
        return Err(ApiError::invalid_param(
            param,
            format!(
                "the prompt ({} tokens) plus max_tokens ({}) is more than the context of {} \
                 positions per request (the server's --ctx): shorten the prompt or lower max_tokens",
                prompt.len(),
                max_new,
                app.max_context
            ),
        )
        .with_code("context_length_exceeded"));
    }
    let job = Job {
        prompt,
        sampler: req.sampler,
        max_new_tokens: max_new,
        stop_tokens: app.tokenizer.eog_ids(),
    };
    let prompt_tokens = job.prompt.len();
    let mut ticket = app.sched.submit(job, req.stop)?;
    let id = app.next_id(endpoint);
    let meta = AnswerMeta {
        id: id.clone(),
        created: super::unix_now(),
        model: app.model_id.clone(),
        endpoint,
        include_usage: req.include_usage,
    };
    let started = Instant::now();
    if req.stream {
        tracing::debug!(%id, prompt_tokens, "streaming");
        return Ok(sse::stream(meta, ticket, move |finish, usage| {
            tracing::info!(
                %id,
                prompt_tokens = usage.prompt_tokens,
                completion_tokens = usage.completion_tokens,
                finish = finish.as_str(),
                ms = started.elapsed().as_millis() as u64,
                "streamed"
            );
        }));
    }
    let (text, finish, usage) = sse::collect(&mut ticket).await?;
    tracing::info!(
        %id,
        prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens,
        finish = finish.as_str(),
        ms = started.elapsed().as_millis() as u64,
        "answered"
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        meta.whole(text, finish, usage),
    )
        .into_response())
}

impl App {
    /// The prompt's tokens: chats rendered with the model's template (BOS added when the
    /// vocabulary asks for it and the template did not write it), text as llama.cpp tokenizes a
    /// prompt, token ids checked against the vocabulary.
    pub fn tokens(&self, prompt: &Prompt) -> Result<Vec<u32>, ApiError> {
        let tok = &self.tokenizer;
        let fail = |e: llama_model::TokenizerError| {
            ApiError::bad_request(format!("cannot tokenize the prompt: {e}"))
        };
        match prompt {
            Prompt::Chat(messages) => {
                let template = self.template.as_ref().ok_or_else(|| {
                    ApiError::bad_request(
                        "this model has no chat template: use /v1/completions with a prompt",
                    )
                })?;
                let text = template.render(messages, true).map_err(|e| {
                    ApiError::invalid_param(
                        "messages",
                        format!("the model's chat template refused the messages: {e}"),
                    )
                })?;
                let mut out = Vec::new();
                let body = tok.encode(&text, true).map_err(fail)?;
                if let Some(bos) = tok.bos_id().filter(|_| tok.add_bos()) {
                    if body.first() != Some(&bos) {
                        out.push(bos);
                    }
                }
                out.extend(body);
                Ok(out)
            }
            Prompt::Text(t) => tok.encode_prompt(t).map_err(fail),
            Prompt::Tokens(ids) => {
                let vocab = tok.vocab_size();
                if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
                    return Err(ApiError::invalid_param(
                        "prompt",
                        format!("prompt: token id {bad} is outside the vocabulary of {vocab}"),
                    ));
                }
                Ok(ids.clone())
            }
        }
    }
}

/// `GET /v1/models`.
pub async fn models(State(app): State<Arc<App>>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: vec![app.card()],
    })
}

/// `GET /v1/models/{id}`.
pub async fn model(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    if id == app.model_id {
        Ok(Json(app.card()))
    } else {
        Err(ApiError::model_not_found(&id, &app.model_id))
    }
}

/// `GET /health`: 200 while serving, 503 while shutting down.
pub async fn health(State(app): State<Arc<App>>) -> Response {
    let m = &app.metrics;
    let body = serde_json::json!({
        "status": if app.closing.load(Ordering::SeqCst) { "shutting_down" } else { "ok" },
        "model": app.model_id,
        "running": m.running.load(Ordering::Relaxed),
        "queued": m.queued.load(Ordering::Relaxed),
    });
    let status = if app.closing.load(Ordering::SeqCst) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics` (Prometheus text).
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        app.metrics
            .render(&app.model_id, app.sched.max_seqs(), app.sched.max_queue()),
    )
        .into_response()
}

/// Unknown routes: 404 with the routes there are.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::no_route(method.as_str(), uri.path())
}

/// Known path, wrong method: 405.
pub async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::wrong_method(method.as_str(), uri.path())
}
