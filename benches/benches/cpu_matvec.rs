//! CPU single-token matrix-vector products per weight type and Llama-3.1-8B shape, both
//! kernels: GB/s of weight bytes read, from memory (the matrix is rotated over copies totalling
//! at least 1 GiB, so no product finds its weights in cache) and cache-hot (one copy, the compute
//! ceiling), for each rayon pool size in `CPU_MATVEC_THREADS` (comma-separated; default: all
//! cores and 1); `CPU_MATVEC_TYPES` (e.g. `Q4_K,Q8_0`) limits the types, `CPU_MATVEC_MS` sets
//! the time per figure (default 300 ms), `CPU_MATVEC_Q8_ONLY` (any value) skips the f32 kernel,
//! `CPU_MATVEC_SIMD` (`avx512bw`, `avx2`, `portable`) caps the k-quant copy used,
//! `CPU_MATVEC_HUGE=1` puts the weights in transparent huge pages (default: 4 KiB pages; the
//! engine's RAM and pinned tiers use huge pages where the kernel gives them).
//!
//! Beside each figure: the fraction of llama.cpp's CPU decode on the H200 machine (66.7 GB/s of
//! weights, 70B CPU-only, 2026-12-02, docs/PERF.md) and of this machine's memory-read bandwidth
//! measured in the same run (every thread summing its share of a 2 GiB buffer). Also printed:
//! the cost of one empty rayon pass over as many tasks as a product uses (scheduling overhead).
//!
//! `cargo bench -p vramless-benches --bench cpu_matvec` (plain text, not criterion).

use std::hint::black_box;
use std::time::{Duration, Instant};

use gguf::GgmlType;
use llama_model::cpu::{
    kquant_kernel, limit_kquant_simd, matmul, read_bandwidth, Kernel, KquantSimd, TensorView,
};
use rayon::prelude::*;
use vramless_benches::quant_data::random_tensor_bytes;

/// llama.cpp CPU-only decode on the H200 machine's 16 cores (GB/s of weights per token).
const PEER_GBS: f64 = 66.7;

/// (rows, cols) of the 8B products: attention projection, FFN gate/up, FFN down.
const SHAPES: [(usize, usize); 3] = [(4096, 4096), (14336, 4096), (4096, 14336)];

const TYPES: [GgmlType; 4] = [
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_0,
];

/// Bytes the rotating copies of one matrix add up to (at least).
const ROTATION_BYTES: usize = 1 << 30;

/// Runs `f` (one product) until `budget` has passed (at least 3 times, after one warm-up) and
/// returns the mean seconds per call.
fn time_per_call(budget: Duration, mut f: impl FnMut(usize)) -> f64 {
    f(0);
    let start = Instant::now();
    let mut n = 0;
    while n < 3 || start.elapsed() < budget {
        f(n + 1);
        n += 1;
    }
    start.elapsed().as_secs_f64() / n as f64
}

/// `copies` back-to-back copies of `one` in anonymous memory, advised to use transparent huge
/// pages when `huge`.
fn copies_in_memory(one: &[u8], copies: usize, huge: bool) -> memmap2::MmapMut {
    let mut m = memmap2::MmapMut::map_anon(one.len() * copies).expect("anonymous memory");
    if huge {
        m.advise(memmap2::Advice::HugePage).expect("madvise");
    }
    for c in m.chunks_exact_mut(one.len()) {
        c.copy_from_slice(one);
    }
    m
}

fn main() {
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: Vec<usize> = std::env::var("CPU_MATVEC_THREADS")
        .ok()
        .map(|s| s.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![all, 1]);
    let budget = Duration::from_millis(
        std::env::var("CPU_MATVEC_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300),
    );
    let pools: Vec<rayon::ThreadPool> = threads
        .iter()
        .map(|&n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .expect("pool")
        })
        .collect();

    // CPU_MATVEC_SIMD=avx512bw|avx2|portable: a ceiling on the k-quant copies, to compare them.
    match std::env::var("CPU_MATVEC_SIMD").as_deref() {
        Ok("avx512bw") => limit_kquant_simd(KquantSimd::Avx512Bw),
        Ok("avx2") => limit_kquant_simd(KquantSimd::Avx2),
        Ok("portable") => limit_kquant_simd(KquantSimd::Portable),
        _ => {}
    }
    println!("k-quant kernel: {}", kquant_kernel());
    let buf: Vec<u64> = (0..(2usize << 30) / 8).map(|i| i as u64).collect();
    let mut bw = Vec::new();
    for (n, pool) in threads.iter().zip(&pools) {
        let b = pool.install(|| read_bandwidth(&buf, 5)) / 1e9;
        println!("memory read bandwidth, {n} threads: {b:.1} GB/s");
        bw.push(b);
    }
    drop(buf);
    for (n, pool) in threads.iter().zip(&pools) {
        // As many tasks as a 4096-row product makes (llama-model's rows_per_task: n_rows /
        // (threads x 8 tasks per thread)).
        let tasks = (4096 / (8 * n)).clamp(8, 256);
        let tasks = 4096usize.div_ceil(tasks);
        let s = time_per_call(Duration::from_millis(100), |_| {
            pool.install(|| {
                (0..tasks).into_par_iter().for_each(|i| {
                    black_box(i);
                })
            })
        });
        println!(
            "empty rayon pass, {n} threads, {tasks} tasks: {:.1} us",
            s * 1e6
        );
    }

    println!(
        "\n{:<6} {:>11} {:>4} {:>7} {:>9} {:>7} {:>7} {:>9} {:>9}",
        "type", "rows x cols", "thr", "kernel", "GB/s", "/66.7", "/read", "hot GB/s", "us/call"
    );
    let only = std::env::var("CPU_MATVEC_TYPES").unwrap_or_default();
    // CPU_MATVEC_HUGE=1: the weights in transparent huge pages (2 MiB), to see what the TLB
    // misses of 4 KiB pages cost the products.
    let huge = std::env::var("CPU_MATVEC_HUGE").is_ok_and(|v| v == "1");
    println!(
        "weights in {} pages",
        if huge { "huge (madvise)" } else { "4 KiB" }
    );
    let kernels: &[(Kernel, &str)] = if std::env::var_os("CPU_MATVEC_Q8_ONLY").is_some() {
        &[(Kernel::Q8, "q8")]
    } else {
        &[(Kernel::Q8, "q8"), (Kernel::F32, "f32")]
    };
    for ty in TYPES {
        if !only.is_empty()
            && !only
                .split(',')
                .any(|t| t.eq_ignore_ascii_case(&ty.to_string()))
        {
            continue;
        }
        for (rows, cols) in SHAPES {
            let one = random_tensor_bytes(ty, rows * cols, 7).expect("whole blocks");
            let copies = ROTATION_BYTES.div_ceil(one.len()).max(2);
            let mats = copies_in_memory(&one, copies, huge);
            let views: Vec<TensorView<'_>> = mats
                .chunks_exact(one.len())
                .map(|m| TensorView::new("w", m, ty, cols, rows).expect("view"))
                .collect();
            let x: Vec<f32> = (0..cols).map(|i| ((i % 23) as f32 - 11.0) / 11.0).collect();
            let mut out = vec![0f32; rows];
            let gb = one.len() as f64 / 1e9;
            for ((n, pool), read_bw) in threads.iter().zip(&pools).zip(&bw) {
                for &(kernel, name) in kernels {
                    let mut run = |i: usize, rotate: bool| {
                        let w = &views[if rotate { i % copies } else { 0 }];
                        pool.install(|| matmul(w, black_box(&x), 1, &mut out, kernel))
                            .expect("matmul");
                        black_box(&out);
                    };
                    let cold = time_per_call(budget, |i| run(i, true));
                    let hot = time_per_call(budget / 2, |i| run(i, false));
                    let gbs = gb / cold;
                    println!(
                        "{:<6} {:>11} {:>4} {:>7} {:>9.2} {:>7.3} {:>7.3} {:>9.2} {:>9.1}",
                        ty.to_string(),
                        format!("{rows}x{cols}"),
                        n,
                        name,
                        gbs,
                        gbs / PEER_GBS,
                        gbs / read_bw,
                        gb / hot,
                        cold * 1e6
                    );
                }
            }
        }
    }
}
