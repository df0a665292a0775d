//! GPU kernel speed report (feature `cuda`; no assertions): the time per launch of the small
//! decode kernels at Llama-3.1-8B shapes (RMSNorm, rope + KV store, split attention over 256
//! positions), launched back to back. The weight products are `cuda_matvec`'s (GB/s and the
//! fraction of a D2D copy per product, both matrix-vector kernels).
//!
//! `cargo bench -p vramless-benches --features cuda --bench cuda_kernels`; the `VRAMLESS_*`
//! backend variables (NVRTC library, kernel cache) are read as the example programs read them.

use std::time::Instant;

use llama_model::cuda::{AttnShape, CudaOptions};
use vramless_benches::cuda_report::backend_or_exit;

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
