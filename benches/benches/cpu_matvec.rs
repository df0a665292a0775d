//! CPU single-token matrix-vector products per weight type, both kernels: the weight bytes per
//! second each reaches (criterion's bytes throughput), on a 4096 x 4096 matrix of random valid
//! blocks (one Llama-3.1-8B attention projection), all threads of the rayon pool. The limit to
//! compare with is the machine's memory bandwidth; llama.cpp's CPU decode on the same machine
//! is the peer (`llama-bench -ngl 0`).

use criterion::{black_box, Criterion, Throughput};
use gguf::GgmlType;
use llama_model::cpu::{matmul, Kernel, TensorView};
use vramless_benches::quant_data::random_tensor_bytes;

const ROWS: usize = 4096;
const COLS: usize = 4096;

fn cpu_matvec(c: &mut Criterion) {
    let x: Vec<f32> = (0..COLS).map(|i| ((i % 23) as f32 - 11.0) / 11.0).collect();
    for ty in [
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
    ] {
        let data = random_tensor_bytes(ty, ROWS * COLS, 7).expect("whole blocks");
        let w = TensorView::new("w", &data, ty, COLS, ROWS).expect("view");
        let mut g = c.benchmark_group(format!("cpu_matvec_{ty}"));
        g.throughput(Throughput::Bytes(data.len() as u64));
        for (kernel, name) in [(Kernel::Q8, "q8"), (Kernel::F32, "f32")] {
            let mut out = vec![0f32; ROWS];
            g.bench_function(name, |b| {
                b.iter(|| {
                    matmul(&w, black_box(&x), 1, &mut out, kernel).expect("matmul");
                    black_box(&out);
                })
            });
        }
        g.finish();
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    cpu_matvec(&mut c);
    c.final_summary();
}
