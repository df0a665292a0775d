//! CPU forward pass on the default model (SmolLM2-135M-Instruct Q4_1): prefill of 128 tokens
//! and single-token decode, the figures llama-bench reports as pp128 / tg. Throughput is in
//! tokens (criterion's "elements"). Needs VRAMLESS_MODEL or scripts/fetch-model.sh.

use std::path::{Path, PathBuf};
use std::process::Command;

use criterion::{Criterion, Throughput};
use llama_model::cpu::{Kernel, Model, ModelOptions};

fn model_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("VRAMLESS_MODEL") {
        return Some(PathBuf::from(p));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-model.sh");
    let out = Command::new("bash").arg(script).output().ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn cpu_forward(c: &mut Criterion) {
    let Some(path) = model_path() else {
        eprintln!("*** cpu_forward SKIPPED: no model (set VRAMLESS_MODEL or run scripts/fetch-model.sh) ***");
        return;
    };
    for (kernel, name) in [(Kernel::Q8, "q8"), (Kernel::F32, "f32")] {
        let opts = ModelOptions {
            max_context: 1024,
            kernel,
        };
        let Ok(mut model) = Model::open_with(&path, opts) else {
            eprintln!(
                "*** cpu_forward SKIPPED: cannot open {} ***",
                path.display()
            );
            return;
        };
        let prompt: Vec<u32> = (0..128u32).map(|i| 100 + (i * 37) % 5000).collect();
        let mut g = c.benchmark_group(format!("cpu_forward_{name}"));
        g.sample_size(10);
        g.throughput(Throughput::Elements(128));
        g.bench_function("prefill_128", |b| {
            b.iter(|| {
                model.reset();
                model.prefill(&prompt).expect("prefill")
            })
        });
        g.throughput(Throughput::Elements(1));
        model.reset();
        model.prefill(&prompt[..64]).expect("prefill");
        g.bench_function("decode_at_64", |b| {
            b.iter(|| {
                model.truncate(64);
                model.decode(7).expect("decode")
            })
        });
        g.finish();
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    cpu_forward(&mut c);
    c.final_summary();
}
