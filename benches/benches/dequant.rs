//! Dequantization throughput per ggml type, in GB/s of input blocks, over a 4096 x 4096 tensor
//! (one Llama-7B-sized projection) of random valid blocks.

use criterion::{black_box, Criterion, Throughput};
use gguf::{dequantize, GgmlType};
use vramless_benches::quant_data::random_tensor_bytes;

const ROWS: usize = 4096;
const COLS: usize = 4096;

const TYPES: [GgmlType; 14] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
];

fn bench_dequant(c: &mut Criterion) {
    let n = ROWS * COLS;
    let mut out = vec![0.0f32; n];
    let mut group = c.benchmark_group("dequant_4096x4096");
    group.sample_size(10);
    for ty in TYPES {
        let Some(bytes) = random_tensor_bytes(ty, n, 42) else {
            eprintln!("skipping {ty}: {n} elements are not whole blocks");
            continue;
        };
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(ty.name(), |b| {
            b.iter(|| {
                dequantize(ty, black_box(&bytes), &mut out).expect("valid synthetic blocks");
                black_box(&out);
            })
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_dequant(&mut c);
    c.final_summary();
}
