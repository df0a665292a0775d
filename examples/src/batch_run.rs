//! Driving a [`BatchEngine`] for the programs: a list of prompts as one batch (`generate
//! --batch-file`), throughput at several batch sizes against B x the single-sequence figure of
//! the same run (`bench-stream-model --batch`, `bench-decode --batch`), and the memory check
//! (many steps with sequences joining and leaving; host RSS and free device memory before and
//! after).

use std::collections::BTreeMap;
use std::time::Instant;

use llama_model::sampler::SamplerConfig;

use crate::engine::{BatchEngine, EngineError, SeqEvent, SeqId, SeqRequest};

/// Parses a batch-size list: `1,8,32`, or `A..B` for the powers of two from A to B
/// (`1..64` = 1,2,4,...,64); the two forms can be mixed (`1..8,12`).
pub fn parse_batches(text: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |s: &str| {
            s.trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("--batch {text}: `{s}` is not a positive number"))
        };
        match part.split_once("..") {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("--batch {text}: {a}..{b} is empty"));
                }
                let mut n = a;
                while n < b {
                    out.push(n);
                    n *= 2;
                }
                out.push(b);
            }
            None => out.push(num(part)?),
        }
    }
    if out.is_empty() {
        return Err(format!("--batch {text}: no batch sizes"));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// What one prompt of a batch produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Completion {
    /// The generated tokens (stop tokens excluded).
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub finish: Option<crate::engine::FinishReason>,
}

/// Runs every prompt as one batch (at most `engine.max_seqs()` at once, or with KV growth as
/// many as the device room holds; the rest join as others finish) until all are done; the completions in prompt order. `on_token(i, token)` is
/// called for each token as it is produced.
pub fn run_prompts(
    engine: &mut BatchEngine,
    prompts: &[Vec<u32>],
    sampler: &SamplerConfig,
    max_new_tokens: usize,
    stop_tokens: &[u32],
    mut on_token: impl FnMut(usize, u32),
) -> Result<Vec<Completion>, EngineError> {
    let mut out = vec![Completion::default(); prompts.len()];
    let mut ids: BTreeMap<SeqId, usize> = BTreeMap::new();
    let mut next = 0;
    while next < prompts.len() || !ids.is_empty() {
        while next < prompts.len() && (engine.active() < engine.max_seqs() || engine.kv_growth()) {
            let added = engine.add(SeqRequest {
                prompt: prompts[next].clone(),
                sampler: SamplerConfig {
                    seed: sampler.seed.wrapping_add(next as u64),
                    ..sampler.clone()
                },
                max_new_tokens,
                stop_tokens: stop_tokens.to_vec(),
            });
            let id = match added {
                Ok(id) => id,
                // KV growth: the device room is spent; the rest join as others finish.
                Err(EngineError::Usage(_)) if engine.kv_growth() && !ids.is_empty() => break,
                Err(e) => return Err(e),
            };
            ids.insert(id, next);
            next += 1;
        }
        for ev in engine.step()? {
            match ev {
                SeqEvent::Token { id, token } => {
                    if let Some(&i) = ids.get(&id) {
                        out[i].tokens.push(token);
                        on_token(i, token);
                    }
                }
                SeqEvent::Finished { id, reason, .. } => {
                    if let Some(i) = ids.remove(&id) {
                        out[i].finish = Some(reason);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Throughput of one batch size.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchFigure {
    /// Sequences decoding together.
    pub batch: usize,
    /// Steps timed.
    pub steps: usize,
    /// Seconds of the timed steps.
    pub seconds: f64,
    /// Tokens per second over all sequences.
    pub aggregate_tok_s: f64,
    /// Tokens per second of each sequence.
    pub per_seq_tok_s: f64,
    /// Aggregate over B x the batch-1 figure of the same run (1.0 = perfect scaling).
    pub ratio_to_b_x_single: f64,
    /// Bytes streamed over the bus per step (pinned RAM + storage).
    pub streamed_bytes_per_step: u64,
    /// KV blocks in use while timing, of the pool's.
    pub kv_blocks_used: usize,
    /// Weight bytes CPU threads computed on per step (hybrid layers; 0 without).
    pub cpu_bytes_per_step: u64,
    /// The CPU threads' compute rate on them while busy, GB/s (0 without).
    pub cpu_busy_gb_s: f64,
}

/// For each batch size: `b` sequences of `prompt` (each a little different so no two are
/// the same: the last token varies) are prefilled, then `steps` decode steps are timed.
/// Batch 1 is measured first (added when missing) and every ratio is against it.
pub fn bench_batches(
    engine: &mut BatchEngine,
    prompt: &[u32],
    batches: &[usize],
    steps: usize,
    warmup: usize,
) -> Result<Vec<BatchFigure>, EngineError> {
    let mut sizes = batches.to_vec();
    if !sizes.contains(&1) {
        sizes.insert(0, 1);
    }
    let vocab = engine.config().vocab_size as u32;
    let mut single = 0.0;
    let mut out = Vec::new();
    for &b in &sizes {
        if b > engine.max_seqs() {
            return Err(EngineError::Usage(format!(
                "batch {b} is more than the {} sequences the engine was opened for",
                engine.max_seqs()
            )));
        }
        // Sequences whose prompt is done early decode while the others still prefill (the
        // step's token budget): give every sequence the whole context, so none finishes inside
        // the timed steps and all `b` decode in each of them.
        let room = engine.max_context().saturating_sub(prompt.len());
        if room < warmup + steps + 1 {
            return Err(EngineError::Usage(format!(
                "a context of {} positions leaves {room} tokens after the {}-token prompt: the \
                 bench needs at least {} (open the engine with a longer context)",
                engine.max_context(),
                prompt.len(),
                warmup + steps + 1
            )));
        }
        let mut ids = Vec::new();
        for k in 0..b {
            let mut p = prompt.to_vec();
            if let Some(last) = p.last_mut() {
                *last = (*last + k as u32) % vocab.max(1);
            }
            ids.push(engine.add(SeqRequest {
                prompt: p,
                sampler: SamplerConfig::default(),
                max_new_tokens: room,
                stop_tokens: Vec::new(),
            })?);
        }
        // Prefill (and the first token of each), untimed.
        while ids
            .iter()
            .any(|&id| engine.seq_positions(id).is_some_and(|p| p < prompt.len()))
        {
            engine.step()?;
        }
        // Untimed decode steps (e.g. while a hybrid plan learns this size's share).
        for _ in 0..warmup {
            engine.step()?;
        }
        engine.clear_stats();
        let t = Instant::now();
        let mut tokens = 0usize;
        let mut finished = 0usize;
        for _ in 0..steps {
            for e in engine.step()? {
                match e {
                    SeqEvent::Token { .. } => tokens += 1,
                    SeqEvent::Finished { .. } => finished += 1,
                }
            }
        }
        let seconds = t.elapsed().as_secs_f64();
        if finished > 0 || tokens != b * steps {
            return Err(EngineError::Usage(format!(
                "batch {b}: {finished} sequence(s) finished and {tokens} of {} tokens came in the \
                 {steps} timed steps: the context is too short for the prompt, the staggered \
                 prefill and the timed steps (open the engine with a longer context)",
                b * steps
            )));
        }
        let kv_used = engine.kv_usage().0;
        let (cpu_bytes, cpu_busy) = (
            engine.stats().cpu_bytes,
            engine.stats().cpu_busy.as_secs_f64(),
        );
        for id in ids {
            engine.cancel(id);
        }
        engine.step()?;
        let agg = tokens as f64 / seconds.max(1e-12);
        if b == 1 {
            single = agg;
        }
        out.push(BatchFigure {
            batch: b,
            steps,
            seconds,
            aggregate_tok_s: agg,
            per_seq_tok_s: agg / b as f64,
            ratio_to_b_x_single: if single > 0.0 {
                agg / (b as f64 * single)
            } else {
                0.0
            },
            streamed_bytes_per_step: engine.stats().streamed_per_pass(),
            cpu_bytes_per_step: cpu_bytes / steps.max(1) as u64,
            cpu_busy_gb_s: if cpu_busy > 0.0 {
                cpu_bytes as f64 / cpu_busy / 1e9
            } else {
                0.0
            },
            kv_blocks_used: kv_used,
        });
    }
    Ok(out)
}

/// Host and device memory around the join/leave run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemCheck {
    /// Steps run.
    pub steps: usize,
    /// Sequences that joined (and left).
    pub sequences: usize,
    /// Host resident set after the warm-up steps, bytes.
    pub rss_before: u64,
    /// Host resident set at the end, bytes.
    pub rss_after: u64,
    /// Free device memory after the warm-up steps (CUDA), bytes.
    pub device_free_before: Option<u64>,
    /// Free device memory at the end (CUDA), bytes.
    pub device_free_after: Option<u64>,
}

/// `steps` steps with up to `max_b` sequences joining and leaving (prompt lengths 1 to
/// `prompt.len()`, 1 to 16 new tokens each, every seventh one cancelled midway); memory is read
/// after the first tenth of the steps (allocators warm) and at the end. `device_free` reads
/// the device's free memory.
pub fn churn(
    engine: &mut BatchEngine,
    prompt: &[u32],
    steps: usize,
    max_b: usize,
    device_free: impl Fn() -> Option<u64>,
) -> Result<MemCheck, EngineError> {
    let max_b = max_b.clamp(1, engine.max_seqs());
    let warm = (steps / 10).max(1);
    let mut held: Vec<(SeqId, usize)> = Vec::new();
    let mut joined = 0usize;
    let (mut rss0, mut dev0) = (0, None);
    let ctx = engine.max_context();
    for step in 0..steps {
        if step == warm {
            rss0 = rss_bytes();
            dev0 = device_free();
        }
        while held.len() < max_b {
            let len = 1 + (joined * 7) % prompt.len().max(1);
            let new = (1 + (joined * 5) % 16).min(ctx.saturating_sub(len).max(1));
            let id = engine.add(SeqRequest {
                prompt: prompt[..len.min(prompt.len())].to_vec(),
                sampler: SamplerConfig::default(),
                max_new_tokens: new,
                stop_tokens: Vec::new(),
            })?;
            held.push((id, step + new / 2));
            joined += 1;
        }
        if let Some(k) = held
            .iter()
            .position(|&(id, at)| id.0 % 7 == 3 && at == step)
        {
            engine.cancel(held[k].0);
        }
        for ev in engine.step()? {
            if let SeqEvent::Finished { id, .. } = ev {
                held.retain(|&(h, _)| h != id);
            }
        }
    }
    for (id, _) in held.drain(..) {
        engine.cancel(id);
    }
    engine.step()?;
    Ok(MemCheck {
        steps,
        sequences: joined,
        rss_before: rss0,
        rss_after: rss_bytes(),
        device_free_before: dev0,
        device_free_after: device_free(),
    })
}

/// This process's resident set (`VmRSS` of /proc/self/status), bytes; 0 where unreadable.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_lists_parse() {
        assert_eq!(parse_batches("1,8,32").unwrap(), vec![1, 8, 32]);
        assert_eq!(
            parse_batches("1..64").unwrap(),
            vec![1, 2, 4, 8, 16, 32, 64]
        );
        assert_eq!(parse_batches("3..10, 1").unwrap(), vec![1, 3, 6, 10]);
        assert!(parse_batches("0").is_err());
        assert!(parse_batches("8..2").is_err());
        assert!(parse_batches("x").is_err());
        assert!(parse_batches("").is_err());
    }

    #[test]
    fn rss_is_read() {
        assert!(rss_bytes() > 0);
    }
}
