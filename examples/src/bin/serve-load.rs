//! `serve-load`: a load generator for `serve` (or any OpenAI-compatible server): N concurrent
//! clients, each on its own connection, send streaming chat requests one after another; prints
//! aggregate generated tokens per second, time to first token and per-stream speed.
//!
//! ```text
//! serve-load --url http://127.0.0.1:8080 --clients 8 --requests 32 --max-tokens 64
//! serve-load --clients 1,8,32 --json load.json     # one run per client count
//! ```
//! Tokens are the server's own `usage.completion_tokens` (`stream_options.include_usage`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::header;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Load generator for OpenAI-compatible servers: concurrent streaming clients, \
                   aggregate tok/s and time to first token"
)]
struct Args {
    /// Server address (http only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Concurrent clients, one connection each; a list (1,8,32) runs once per count.
    #[arg(long, default_value = "8", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Requests per run, spread over the clients (default: 4 per client).
    #[arg(long)]
    requests: Option<usize>,
    /// Tokens to generate per request.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// The user message.
    #[arg(long, default_value = "Write a short story about a lighthouse keeper.")]
    prompt: String,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Model id to send (default: the server's first from /v1/models).
    #[arg(long)]
    model: Option<String>,
    /// Bearer key (default: the VRAMLESS_API_KEY variable).
    #[arg(long)]
    api_key: Option<String>,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One request's measurements.
#[derive(Debug, Clone, Default)]
struct Sample {
    ttft: Duration,
    total: Duration,
    tokens: usize,
}

struct Target {
    host: String,
    port: u16,
    key: Option<String>,
}

fn parse_url(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url {url}: only http:// URLs are supported"))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    match hostport.rsplit_once(':') {
        Some((h, p)) => Ok((
            h.to_owned(),
            p.parse()
                .map_err(|_| format!("--url {url}: bad port `{p}`"))?,
        )),
        None => Ok((hostport.to_owned(), 80)),
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(t: &Target) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(|e| format!("cannot connect to {}:{}: {e}", t.host, t.port))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn request(
    t: &Target,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<hyper::Request<Full<Bytes>>, String> {
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, format!("{}:{}", t.host, t.port))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(k) = &t.key {
        b = b.header(header::AUTHORIZATION, format!("Bearer {k}"));
    }
    let bytes = body.map_or_else(Bytes::new, |v| Bytes::from(v.to_string()));
    b.body(Full::new(bytes)).map_err(|e| e.to_string())
}

/// One streaming request on `sender`; reads the SSE answer to `[DONE]`.
async fn one(sender: &mut Sender, t: &Target, body: &Value) -> Result<Sample, String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let start = Instant::now();
    let resp = sender
        .send_request(request(t, "POST", "/v1/chat/completions", Some(body))?)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let text = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&text)));
    }
    let mut s = Sample::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the stream: {e}"))?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        buf.extend_from_slice(data);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            for line in String::from_utf8_lossy(&event).lines() {
                let Some(d) = line.strip_prefix("data: ") else {
                    continue;
                };
                if d == "[DONE]" {
                    s.total = start.elapsed();
                    s.ttft = first.unwrap_or(s.total);
                    return Ok(s);
                }
                let v: Value =
                    serde_json::from_str(d).map_err(|e| format!("bad chunk {d}: {e}"))?;
                if let Some(e) = v.get("error") {
                    return Err(format!("server error: {e}"));
                }
                let content = v["choices"][0]["delta"]["content"].as_str().unwrap_or("");
                if first.is_none() && !content.is_empty() {
                    first = Some(start.elapsed());
                }
                if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                    s.tokens = n as usize;
                }
            }
        }
    }
    Err("the stream ended without [DONE]".into())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn model_id(t: &Target) -> Result<String, String> {
    let mut s = connect(t).await?;
    let resp = s
        .send_request(request(t, "GET", "/v1/models", None)?)
        .await
        .map_err(|e| format!("GET /v1/models: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let v: Value = serde_json::from_slice(&body).map_err(|e| format!("GET /v1/models: {e}"))?;
    if !status.is_success() {
        return Err(format!("GET /v1/models: HTTP {status}: {v}"));
    }
    v["data"][0]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("GET /v1/models lists no model: {v}"))
}

async fn run_one(
    args: &Args,
    t: &std::sync::Arc<Target>,
    model: &str,
    clients: usize,
) -> Result<Value, String> {
    let requests = args.requests.unwrap_or(clients * 4).max(clients);
    let body = json!({
        "model": model,
        "messages": [{"role": "user", "content": args.prompt}],
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let n = requests / clients + usize::from(c < requests % clients);
        let (t, body) = (std::sync::Arc::clone(t), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut sender = match connect(&t).await {
                Ok(s) => s,
                Err(e) => return vec![Err(e)],
            };
            for _ in 0..n {
                out.push(one(&mut sender, &t, &body).await);
            }
            out
        }));
    }
    let mut samples = Vec::new();
    let mut errors = Vec::new();
    for task in tasks {
        for r in task.await.map_err(|e| e.to_string())? {
            match r {
                Ok(s) => samples.push(s),
                Err(e) => errors.push(e),
            }
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let tokens: usize = samples.iter().map(|s| s.tokens).sum();
    let mut ttft: Vec<f64> = samples.iter().map(|s| s.ttft.as_secs_f64()).collect();
    ttft.sort_by(f64::total_cmp);
    let per_stream: f64 = if samples.is_empty() {
        0.0
    } else {
        samples
            .iter()
            .map(|s| {
                let decode = (s.total - s.ttft).as_secs_f64();
                if decode > 0.0 && s.tokens > 1 {
                    (s.tokens - 1) as f64 / decode
                } else {
                    0.0
                }
            })
            .sum::<f64>()
            / samples.len() as f64
    };
    println!(
        "clients {clients:>3}: {}/{requests} requests, {tokens} tokens in {wall:.2} s = {:.1} tok/s \
         aggregate; time to first token p50 {:.3} s, p90 {:.3} s, max {:.3} s; {per_stream:.1} tok/s \
         per stream{}",
        samples.len(),
        tokens as f64 / wall,
        percentile(&ttft, 0.5),
        percentile(&ttft, 0.9),
        ttft.last().copied().unwrap_or(0.0),
        if errors.is_empty() {
            String::new()
        } else {
            format!("; {} FAILED (first: {})", errors.len(), errors[0])
        }
    );
    Ok(json!({
        "clients": clients,
        "requests": requests,
        "completed": samples.len(),
        "failed": errors.len(),
        "tokens": tokens,
        "wall_s": wall,
        "tok_per_s": tokens as f64 / wall,
        "ttft_p50_s": percentile(&ttft, 0.5),
        "ttft_p90_s": percentile(&ttft, 0.9),
        "ttft_max_s": ttft.last().copied().unwrap_or(0.0),
        "per_stream_tok_per_s": per_stream,
        "max_tokens": args.max_tokens,
    }))
}

async fn run(args: Args) -> Result<bool, String> {
    let (host, port) = parse_url(&args.url)?;
    let key = args
        .api_key
        .clone()
        .or_else(|| std::env::var("VRAMLESS_API_KEY").ok());
    let t = std::sync::Arc::new(Target { host, port, key });
    let model = match &args.model {
        Some(m) => m.clone(),
        None => model_id(&t).await?,
    };
    println!(
        "serve-load: {} model `{model}`, {} tokens per request",
        args.url, args.max_tokens
    );
    let mut runs = Vec::new();
    let mut ok = true;
    for &c in &args.clients {
        if c == 0 {
            return Err("--clients 0: at least one client".into());
        }
        let r = run_one(&args, &t, &model, c).await?;
        ok &= r["failed"] == 0;
        runs.push(r);
    }
    if let Some(p) = &args.json {
        let doc = json!({"url": args.url, "model": model, "runs": runs});
        std::fs::write(p, format!("{doc:#}\n"))
            .map_err(|e| format!("writing {}: {e}", p.display()))?;
    }
    Ok(ok)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("serve-load: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("serve-load: some requests failed");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("serve-load: {e}");
            ExitCode::FAILURE
        }
    }
}
