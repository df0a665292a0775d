//! `serve`: an OpenAI-compatible HTTP server over the streaming engine, with continuous
//! batching (requests join the running batch at the next step and leave when done).
//!
//! ```text
//! cargo run --release --bin serve -- --model model.gguf --port 8080
//! cargo run --release --features cuda --bin serve -- --device cuda --model 70b.gguf \
//!     --vram-budget 24GiB --max-seqs 32
//! curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \
//!     -d '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":32}'
//! ```
//! Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health,
//! GET /metrics. With no `--model` the default model (SmolLM2-135M-Instruct) is used. Logs go
//! to stderr (`--log debug` for more). SIGINT/SIGTERM stop it gracefully.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use llama_model::tokenizer::Tokenizer;
use vramless_engine::engine::budget::parse_size;
use vramless_engine::engine::cli::{parse_device, EngineArgs};
use vramless_engine::engine::BatchEngine;
use vramless_engine::serve::metrics::Metrics;
use vramless_engine::serve::scheduler::{self, Opened};
use vramless_engine::serve::{self as server, App, AppOptions};

#[derive(Parser, Debug)]
#[command(
    about = "OpenAI-compatible HTTP server for a Llama GGUF, with continuous batching over the \
             streaming engine",
    after_help = "Example:\n  serve --model model.gguf --port 8080\n  curl \
                  http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \
                  -d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":32}'"
)]
struct Args {
    /// GGUF model file (default: the SmolLM2-135M model from scripts/fetch-model.sh).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Address to listen on (loopback by default; 0.0.0.0 to serve the network).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free one; the address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every request (default: the VRAMLESS_API_KEY
    /// variable; neither: no key needed).
    #[arg(long)]
    api_key: Option<String>,
    /// Compute device: cpu, or cuda (needs a build with `--features cuda` and an NVIDIA GPU).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Positions per request (prompt + answer); the KV pool holds --max-seqs (the running
    /// batch, an engine flag) of them.
    #[arg(long, default_value_t = 4096)]
    ctx: usize,
    /// Most requests waiting for a slot; more get 503 with Retry-After.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Largest request body (e.g. 4MiB); larger ones get 413.
    #[arg(long, default_value = "4MiB")]
    max_body: String,
    /// Prompt tokens each joining request prefills per step (0: the engine's default).
    #[arg(long, default_value_t = 0)]
    prefill_chunk: usize,
    /// Seconds running requests may take to finish after SIGINT/SIGTERM before they are failed.
    #[arg(long, default_value_t = 30)]
    shutdown_timeout: u64,
    /// Log filter (error, warn, info, debug, trace, or tracing directives).
    #[arg(long, default_value = "info")]
    log: String,
    #[command(flatten)]
    engine: EngineArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serve: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The id clients send as `model`: `general.name`, else the file stem.
fn model_id(engine: &BatchEngine, path: &Path) -> String {
    match engine.gguf().metadata().opt_str("general.name") {
        Ok(Some(n)) if !n.trim().is_empty() => n.trim().to_owned(),
        _ => path
            .file_stem()
            .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned()),
    }
}

fn run(args: Args) -> Result<(), String> {
    if args.engine.trace.is_some() {
        return Err("--trace records the passes of one run: use it with generate, speculate or bench-stream-model, not serve".into());
    }
    if args.engine.max_seqs == 0 {
        return Err("--max-seqs 0: at least one request must be able to run".into());
    }
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .or_else(|_| {
            use std::net::ToSocketAddrs;
            (args.host.as_str(), args.port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or(())
        })
        .map_err(|()| format!("--host {}: not an address or a resolvable name", args.host))?;
    let max_body = parse_size("--max-body", &args.max_body).map_err(|e| e.to_string())?;
    let max_body = usize::try_from(max_body).unwrap_or(usize::MAX);
    let api_key = args
        .api_key
        .clone()
        .or_else(|| std::env::var("VRAMLESS_API_KEY").ok())
        .filter(|k| !k.is_empty());
    let device = parse_device(&args.device).map_err(|e| e.to_string())?;
    let opts = args
        .engine
        .options(device, args.ctx)
        .map_err(|e| e.to_string())?;
    let path = vramless_engine::model_path("serve", args.model.clone())?;
    let stats = args.engine.stats;
    let chunk = args.prefill_chunk;
    let metrics = Arc::new(Metrics::default());
    let open_path = path.clone();
    let (sched, engine, tokenizer, (model_id, max_context)) = scheduler::start(
        move || {
            let mut engine = BatchEngine::open(&open_path, &opts).map_err(|e| e.to_string())?;
            if chunk > 0 {
                engine.set_prefill_chunk(chunk);
            }
            let tokenizer = Tokenizer::from_gguf(engine.gguf().metadata())
                .map_err(|e| format!("reading the model's tokenizer: {e}"))?;
            Ok(Opened {
                engine,
                tokenizer: Arc::new(tokenizer),
            })
        },
        move |e: &BatchEngine| {
            if stats {
                eprint!("{}", e.stats().report());
            }
            (model_id(e, &path), e.max_context())
        },
        args.max_queue,
        Arc::clone(&metrics),
    )?;
    let app = Arc::new(App::new(
        sched,
        tokenizer,
        Arc::clone(&metrics),
        AppOptions {
            model_id: model_id.clone(),
            max_context,
            api_key: api_key.clone(),
            max_body,
        },
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e} (is the port taken? try --port)"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(
            "serving `{model_id}` on http://{local} ({} sequences of {max_context} positions, \
             queue {}, {})",
            args.engine.max_seqs,
            args.max_queue,
            if api_key.is_some() { "API key required" } else { "no API key" }
        );
        if !local.ip().is_loopback() && api_key.is_none() {
            tracing::warn!("listening beyond loopback without --api-key: anyone who can reach {local} can use it");
        }
        server::run(
            listener,
            app,
            engine,
            Duration::from_secs(args.shutdown_timeout),
            shutdown_signal(),
        )
        .await
        .map_err(|e| format!("serving: {e}"))
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM ({e}); stop with Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
        () = term => tracing::info!("SIGTERM"),
    }
}
