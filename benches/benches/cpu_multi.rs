//! CPU multi-sequence decode on the default model (SmolLM2-135M-Instruct Q4_1): one step of B
//! sequences (each at 64 positions) through `cpu::MultiState` + `forward_layer_multi`, the
//! weights read once per step, for B = 1, 4, 8; throughput in tokens (criterion's "elements"),
//! to compare with `cpu_forward`'s single-sequence `decode_at_64`. Needs VRAMLESS_MODEL or
//! scripts/fetch-model.sh.

use std::path::{Path, PathBuf};
use std::process::Command;

use criterion::{Criterion, Throughput};
use llama_model::cpu::{forward_layer_multi, Kernel, Model, ModelOptions, MultiState};
use llama_model::paged::{KvPoolOptions, StepPart};

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

fn step(model: &Model, st: &mut MultiState, parts: &[StepPart]) -> usize {
    let embd = model.token_embd().expect("embedding");
    st.begin_step(&embd, parts).expect("begin");
    for l in 0..model.config().n_layers {
        forward_layer_multi(l, &model.layer_weights(l).expect("layer"), st).expect("layer");
    }
    st.end_step().expect("end");
    let (norm, head) = model.head_weights().expect("head");
    st.logits(&norm, &head).expect("logits").len()
}

fn cpu_multi(c: &mut Criterion) {
    let Some(path) = model_path() else {
        eprintln!("*** cpu_multi SKIPPED: no model (set VRAMLESS_MODEL or run scripts/fetch-model.sh) ***");
        return;
    };
    let opts = ModelOptions {
        max_context: 256,
        kernel: Kernel::Q8,
    };
    let Ok(model) = Model::open_with(&path, opts) else {
        eprintln!("*** cpu_multi SKIPPED: cannot open {} ***", path.display());
        return;
    };
    let mut g = c.benchmark_group("cpu_multi_q8");
    g.sample_size(10);
    for b in [1usize, 4, 8] {
        let pool = KvPoolOptions::for_sequences(b, 128);
        let mut st = MultiState::new(model.config(), pool, Kernel::Q8).expect("state");
        let seqs: Vec<_> = (0..b).map(|_| st.add_seq().expect("seq")).collect();
        let prefill: Vec<StepPart> = seqs
            .iter()
            .enumerate()
            .map(|(i, &seq)| StepPart {
                seq,
                tokens: (0..64u32)
                    .map(|t| 100 + (t * 37 + i as u32) % 5000)
                    .collect(),
                want_logits: false,
            })
            .collect();
        step(&model, &mut st, &prefill);
        let decode: Vec<StepPart> = seqs
            .iter()
            .map(|&seq| StepPart {
                seq,
                tokens: vec![7],
                want_logits: true,
            })
            .collect();
        g.throughput(Throughput::Elements(b as u64));
        g.bench_function(format!("decode_step_b{b}_at_64"), |bench| {
            bench.iter(|| {
                for &s in &seqs {
                    st.truncate(s, 64);
                }
                step(&model, &mut st, &decode)
            })
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    cpu_multi(&mut c);
    c.final_summary();
}
