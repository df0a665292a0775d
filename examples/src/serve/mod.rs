//! `serve`: an OpenAI-compatible HTTP server over the streaming engine with continuous
//! batching.
//!
//! Routes ([`handlers`]): `POST /v1/chat/completions` (the GGUF's chat template),
//! `POST /v1/completions`, `GET /v1/models`, `GET /health`, `GET /metrics` ([`metrics`]).
//! Requests are checked into OpenAI-style errors ([`api`], [`errors`]), tokenized, and handed to
//! the engine thread ([`scheduler`]), which runs the batch step by step and sends each request
//! its text ([`text`]: whole characters, stop strings); answers go back whole or as server-sent
//! events ([`sse`]).

pub mod api;
pub mod batch;
pub mod errors;
pub mod handlers;
pub mod metrics;
pub mod scheduler;
pub mod sse;
pub mod text;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use llama_model::chat::ChatTemplate;
use llama_model::tokenizer::Tokenizer;

use api::{Endpoint, ModelCard};
use metrics::Metrics;
use scheduler::{EngineThread, Scheduler};

/// The server's shared state.
pub struct App {
    /// The engine thread's handle for requests.
    pub sched: Scheduler,
    /// The model's tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// The model's chat template (None: chat requests are refused).
    pub template: Option<ChatTemplate>,
    /// The id clients name the model by.
    pub model_id: String,
    /// Positions per request (prompt + answer).
    pub max_context: usize,
    /// Required bearer key.
    pub api_key: Option<String>,
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// Unix seconds at start.
    pub created: u64,
    /// Set once shutdown began.
    pub closing: AtomicBool,
    ids: AtomicU64,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("model_id", &self.model_id)
            .field("max_context", &self.max_context)
            .finish_non_exhaustive()
    }
}

/// How the server is set up besides the engine.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// The model's id (GGUF `general.name`, else the file stem).
    pub model_id: String,
    /// Positions per request.
    pub max_context: usize,
    /// Required bearer key (None: no auth).
    pub api_key: Option<String>,
    /// Largest request body, bytes.
    pub max_body: usize,
}

impl App {
    /// The state for `sched`'s engine with `tokenizer` (its chat template read from the GGUF's
    /// vocabulary, or a built-in one matching it).
    pub fn new(
        sched: Scheduler,
        tokenizer: Arc<Tokenizer>,
        metrics: Arc<Metrics>,
        opts: AppOptions,
    ) -> App {
        let template = match ChatTemplate::from_tokenizer_or_builtin(&tokenizer) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("chat completions are off: {e}");
                None
            }
        };
        App {
            sched,
            tokenizer,
            template,
            model_id: opts.model_id,
            max_context: opts.max_context,
            api_key: opts.api_key,
            max_body: opts.max_body,
            metrics,
            created: unix_now(),
            closing: AtomicBool::new(false),
            ids: AtomicU64::new(1),
        }
    }

    /// The one entry of `/v1/models`.
    pub fn card(&self) -> ModelCard {
        ModelCard {
            id: self.model_id.clone(),
            object: "model",
            created: self.created,
            owned_by: "vramless",
        }
    }

    /// A fresh answer id.
    pub fn next_id(&self, endpoint: Endpoint) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completions => "cmpl",
        };
        format!("{prefix}-{:x}{n:06x}", self.created)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The routes, with the body limit, auth and JSON 404/405.
pub fn router(app: Arc<App>) -> Router {
    let limit = app.max_body;
    Router::new()
        .route("/v1/chat/completions", post(handlers::chat))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/models", get(handlers::models))
        .route("/v1/models/{id}", get(handlers::model))
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::wrong_method)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            handlers::auth,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

/// Serves on `listener` until `signal` completes, then shuts down gracefully: new requests get
/// 503, running ones finish (for at most `grace`, after which they are failed), and the engine
/// thread stops. Returns when everything is closed.
pub async fn run(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    engine: EngineThread,
    grace: Duration,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = Arc::new(tokio::sync::Notify::new());
    let server = {
        let stop = Arc::clone(&stop);
        axum::serve(listener, router(Arc::clone(&app)))
            .with_graceful_shutdown(async move { stop.notified().await })
    };
    let mut server = tokio::spawn(async move { server.await });
    tokio::select! {
        r = &mut server => {
            // The server ended by itself (an accept error): stop the engine and report it.
            engine.join();
            return r.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        }
        () = signal => {}
    }
    tracing::info!(
        "shutting down: refusing new requests, finishing {} held (at most {:.0} s)",
        engine.in_flight(),
        grace.as_secs_f64()
    );
    app.closing.store(true, Ordering::SeqCst);
    engine.close();
    stop.notify_one();
    let result = match tokio::time::timeout(grace, &mut server).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(
                "grace time over: failing the {} requests still held",
                engine.in_flight()
            );
            engine.abort("the server is shutting down");
            match tokio::time::timeout(Duration::from_secs(5), &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    server.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    tokio::task::spawn_blocking(move || engine.join())
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    tracing::info!("stopped");
    result.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}
