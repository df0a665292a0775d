//! The multi-sequence modes of the programs on the CPU with the real default model:
//! `generate --batch-file` prints for each prompt what `generate --prompt` gives for it alone
//! (greedy), and `bench-stream-model --batch` on a streamed plan reports every batch size, the
//! KV pool, and a join/leave memory check with no host-memory growth.

use std::path::Path;
use std::process::Command;

#[macro_use]
mod common;

fn json_of(out: &std::process::Output, what: &str) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{') || l.starts_with('['))
        .unwrap_or_else(|| panic!("{what}: no JSON line in {text}"));
    serde_json::from_str(line).unwrap()
}

fn generate(model: &Path, extra: &[&str], json: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_generate"))
        .args([
            "--model",
            model.to_str().unwrap(),
            "--max-tokens",
            "8",
            "--ctx",
            "128",
        ])
        .args(["--json", json.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn generate_batch_file_equals_each_prompt_alone() {
    let model = model_or_skip!();
    let dir = std::env::temp_dir().join(format!("vramless-batch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prompts = [
        common::PROMPT,
        "",
        "Water boils at",
        "My favourite colour is",
    ];
    let file = dir.join("prompts.txt");
    std::fs::write(&file, prompts.join("\n")).unwrap();
    let bj = dir.join("batch.json");
    let out = generate(
        &model,
        &["--batch-file", file.to_str().unwrap(), "--max-seqs", "2"],
        &bj,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let batch: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&bj).unwrap()).unwrap();
    let batch = batch.as_array().unwrap();
    assert_eq!(batch.len(), 3, "the empty line is skipped");
    for (k, p) in prompts.iter().filter(|p| !p.is_empty()).enumerate() {
        let sj = dir.join(format!("single{k}.json"));
        let o = generate(&model, &["--prompt", p], &sj);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let single: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&sj).unwrap()).unwrap();
        assert_eq!(
            batch[k]["prompt_tokens"], single["prompt_tokens"],
            "prompt {k}"
        );
        assert_eq!(batch[k]["tokens"], single["tokens"], "prompt {k}: {p}");
        assert!(stdout.contains(&format!("=== {} ", k + 1)), "{stdout}");
    }
    // And the first against llama-model's resident model directly.
    let got: Vec<u32> = batch[0]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    assert!(!got.is_empty());
    let want = common::reference(&model, &common::prompt(&model), got.len());
    assert_eq!(got, want);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_stream_model_batch_mode_reports_batches_kv_and_memory() {
    let model = model_or_skip!();
    let out = Command::new(env!("CARGO_BIN_EXE_bench-stream-model"))
        .args(["--device", "cpu", "--model", model.to_str().unwrap()])
        .args([
            "--batch",
            "1,3",
            "--tokens",
            "3",
            "--ctx",
            "64",
            "--churn-steps",
            "120",
        ])
        .args(["--vram-budget", "130MiB", "--ram-budget", "1GiB"])
        .output()
        .unwrap();
    let v = json_of(&out, "bench-stream-model --batch");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("KV pool"), "{err}");
    let b = v["batches"].as_array().unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(b[0]["batch"], 1);
    assert_eq!(b[0]["ratio_to_b_x_single"].as_f64(), Some(1.0));
    assert!(b[1]["aggregate_tok_s"].as_f64().unwrap() > 0.0);
    assert!(
        v["streamed_bytes_per_step"].as_u64().unwrap() > 0,
        "the plan streams"
    );
    assert!(v["kv_bytes_per_seq"].as_u64().unwrap() > 0);
    let m = &v["memory"];
    assert_eq!(m["steps"], 120);
    assert!(m["sequences"].as_u64().unwrap() > 10, "{m}");
    let (before, after) = (
        m["rss_before"].as_f64().unwrap(),
        m["rss_after"].as_f64().unwrap(),
    );
    assert!(before > 0.0);
    assert!(
        after <= before + 32e6,
        "host memory grew from {before} to {after} bytes over the join/leave run"
    );
}

#[test]
fn bench_decode_batch_mode_reports_every_size_against_batch_one() {
    let model = model_or_skip!();
    let out = Command::new(env!("CARGO_BIN_EXE_bench-decode"))
        .args(["--device", "cpu", "--model", model.to_str().unwrap()])
        .args(["--batch", "1..4", "--prompt-len", "8", "--gen", "3"])
        .args(["--churn-steps", "40"])
        .output()
        .unwrap();
    let v = json_of(&out, "bench-decode --batch");
    let b = v["batches"].as_array().unwrap();
    let sizes: Vec<u64> = b.iter().map(|f| f["batch"].as_u64().unwrap()).collect();
    assert_eq!(sizes, vec![1, 2, 4]);
    assert_eq!(v["resident"], true);
    assert!(v["kv_pool_bytes"].as_u64().unwrap() >= 4 * v["kv_bytes_per_seq"].as_u64().unwrap());
    for f in b {
        assert!(f["aggregate_tok_s"].as_f64().unwrap() > 0.0, "{f}");
        assert!(f["kv_blocks_used"].as_u64().unwrap() >= f["batch"].as_u64().unwrap());
    }
    assert_eq!(v["memory"]["steps"], 40);
}
