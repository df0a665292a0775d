//! GPU kernel speed report (feature `cuda`; no assertions): the decode matvec's weight
//! bandwidth per type on Llama-3.1-8B/70B shapes as GB/s and as a fraction of a device-to-device
//! copy measured in the same run, then the time per launch of the small decode kernels at 8B
//! shapes (RMSNorm, rope + KV store, split attention over 256 positions).
//!
//! `cargo bench -p vramless-benches --features cuda --bench cuda_kernels`; the `VRAMLESS_*`
//! backend variables (NVRTC library, kernel cache) are read as the example programs read them.

use std::time::Instant;

use gguf::GgmlType;
use llama_model::cuda::{AttnShape, CudaOptions, DeviceWeight};
use vramless_benches::cuda_report::{backend_or_exit, d2d_or_exit};
use vramless_benches::quant_data::random_tensor_bytes;

fn main() {
    let opts = match CudaOptions::from_vars(|k| std::env::var(k).ok()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("!!! bad VRAMLESS_* CUDA variable: {e}");
            std::process::exit(2);
        }
    };
    let b = backend_or_exit(&opts);
    let s = b.stream();
    let d2d = d2d_or_exit(&b);

    println!("| matvec | rows x cols | us | GB/s of weights | fraction of D2D |");
    println!("| --- | --- | --- | --- | --- |");
    for (ty, rows, cols) in [
        (GgmlType::Q4_K, 4096usize, 4096usize),
        (GgmlType::Q4_K, 14336, 4096),
        (GgmlType::Q6_K, 4096, 14336),
        (GgmlType::Q6_K, 128256, 4096),
        (GgmlType::Q4_K, 28672, 8192),
        (GgmlType::Q4_K, 8192, 28672),
        (GgmlType::Q6_K, 8192, 28672),
        (GgmlType::Q8_0, 28672, 8192),
        (GgmlType::Q4_0, 28672, 8192),
        (GgmlType::F16, 8192, 8192),
    ] {
        let bytes =
            random_tensor_bytes(ty, rows * cols, (rows * 31 + cols) as u64).expect("whole blocks");
        let dbytes = s.clone_htod(&bytes).expect("upload");
        let w = DeviceWeight::new(dbytes.slice(..), ty, cols, rows).expect("view");
        let x: Vec<f32> = (0..cols).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
        let dx = s.clone_htod(&x).expect("x");
        let mut dy = s.alloc_zeros::<f32>(rows).expect("y");
        for _ in 0..3 {
            b.matvec(&w, &dx, &mut dy).expect("warm-up");
        }
        s.synchronize().expect("sync");
        let iters = 50;
        let t = Instant::now();
        for _ in 0..iters {
            b.matvec(&w, &dx, &mut dy).expect("matvec");
        }
        s.synchronize().expect("sync");
        let dt = t.elapsed().as_secs_f64() / f64::from(iters);
        let gbs = bytes.len() as f64 / dt;
        println!(
            "| {ty} | {rows} x {cols} | {:.1} | {:.0} | {:.3} |",
            dt * 1e6,
            gbs / 1e9,
            gbs / d2d
        );
    }

    let shape = AttnShape {
        n_heads: 32,
        n_kv_heads: 8,
        head_dim: 128,
        max_ctx: 264,
    };
    let dim = 4096;
    let x = s.clone_htod(&vec![0.5f32; dim]).expect("x");
    let w = s.clone_htod(&vec![1.0f32; dim]).expect("w");
    let mut out = s.alloc_zeros::<f32>(dim).expect("out");
    let mut qkv = s.clone_htod(&vec![0.1f32; dim + 2 * 1024]).expect("qkv");
    let mut kc = s.alloc_zeros::<u16>(shape.cache_len()).expect("kc");
    let mut vc = s.alloc_zeros::<u16>(shape.cache_len()).expect("vc");
    let q = s.clone_htod(&vec![0.1f32; dim]).expect("q");
    let splits = shape.fixed_splits();
    let mut scratch = s
        .alloc_zeros::<f32>(shape.n_heads * splits * (shape.head_dim + 2))
        .expect("scratch");
    let time = |name: &str, f: &mut dyn FnMut()| {
        for _ in 0..5 {
            f();
        }
        s.synchronize().expect("sync");
        let n = 200;
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        s.synchronize().expect("sync");
        println!(
            "{name}: {:.2} us per launch",
            t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
        );
    };
    time("rmsnorm 4096", &mut || {
        b.rmsnorm(&x, &w, &mut out, dim, 1e-5).expect("rmsnorm")
    });
    time("rope_kv 32+8 heads", &mut || {
        b.rope_kv(&mut qkv, &mut kc, &mut vc, shape, 128, 200, 500000.0, None)
            .expect("rope_kv")
    });
    time(
        &format!("attention 256 positions, {splits} splits"),
        &mut || {
            b.attention_decode_splits(&q, &kc, &vc, &mut scratch, &mut out, shape, 256, splits)
                .expect("attention")
        },
    );
}
