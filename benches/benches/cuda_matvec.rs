//! Batch-1 decode products on the GPU (feature `cuda`): each product of a Llama-3.1 8B and 70B
//! Q4_K_M decode step (and Q8_0 shapes) timed with the f32 matrix-vector kernel ("before",
//! [`CudaOptions::matvec_q8`] off) and with the 8-bit-activation integer kernel ("after",
//! on), as GB/s of weight bytes and as a fraction of a device-to-device copy measured in the
//! same run (read + write bytes over time, 1 GiB copies).
//!
//! Each measurement replays a captured CUDA graph of 32 launches of the product (the
//! quantization kernel included on the "after" side), rotating over enough copies of the
//! weight (random valid blocks) that they do not fit the L2 cache; median of 7 replays.
//!
//! `cargo bench -p vramless-benches --features cuda --bench cuda_matvec` (NVRTC from
//! `VRAMLESS_NVRTC_LIB` or the loader's path, kernel cache from `VRAMLESS_KERNEL_CACHE`).
//! Without a GPU it prints why and exits 0.

#[cfg(feature = "cuda")]
mod gpu {
    use cudarc::driver::{sys as cu, CudaSlice};
    use gguf::GgmlType;
    use llama_model::cuda::{CudaBackend, CudaOptions, DeviceWeight};

    /// Launches per captured graph.
    const LAUNCHES: usize = 32;
    /// Replays timed per measurement (the median is reported).
    const REPLAYS: usize = 7;
    /// The weight copies of one product together exceed this (several times the L2).
    const ROTATE_BYTES: usize = 512 << 20;

    /// What one product is.
    #[derive(Clone, Copy)]
    enum Kind {
        /// `y = W x`.
        Plain,
        /// `y += W x` (the residual add of attn_output and ffn_down).
        Accum,
        /// Q, K and V (rows of each; V's type may differ) into one output.
        Qkv(usize, usize, GgmlType),
        /// Gate and up (same shape) with SwiGLU.
        Swiglu,
    }

    struct Product {
        name: &'static str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        kind: Kind,
    }

    fn xorshift(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    /// Random blocks of `ty` with small finite f16 scales.
    fn random_blocks(ty: GgmlType, rows: usize, cols: usize, seed: &mut u64) -> Vec<u8> {
        let n_blocks = rows * cols / ty.block_size();
        let bs = ty.type_size();
        let mut out = vec![0u8; n_blocks * bs];
        for c in out.chunks_mut(8) {
            let v = xorshift(seed).to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
        let offs: &[usize] = match ty {
            GgmlType::Q4_K => &[0, 2],
            GgmlType::Q6_K => &[208],
            _ => &[0],
        };
        let scale = 0x211Fu16.to_le_bytes(); // f16 0.01
        for b in out.chunks_exact_mut(bs) {
            for &o in offs {
                b[o..o + 2].copy_from_slice(&scale);
            }
        }
        out
    }

    /// Seconds per launch of `enqueue` (one product), from graph replays.
    fn time_graph(b: &CudaBackend, mut enqueue: impl FnMut(usize)) -> f64 {
        let s = b.stream();
        s.begin_capture(cu::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .expect("begin capture");
        for i in 0..LAUNCHES {
            enqueue(i);
        }
        let g = s
            .end_capture(cu::CUgraphInstantiate_flags(0))
            .expect("end capture")
            .expect("a graph");
        g.launch().expect("warm-up");
        s.synchronize().expect("sync");
        let mut t: Vec<f64> = (0..REPLAYS)
            .map(|_| {
                let t0 = std::time::Instant::now();
                g.launch().expect("replay");
                s.synchronize().expect("sync");
                t0.elapsed().as_secs_f64() / LAUNCHES as f64
            })
            .collect();
        t.sort_by(f64::total_cmp);
        t[REPLAYS / 2]
    }

    fn bytes_of(ty: GgmlType, rows: usize, cols: usize) -> usize {
        rows * cols / ty.block_size() * ty.type_size()
    }

    /// Seconds per product on backend `b`.
    fn time_product(b: &CudaBackend, p: &Product, seed: &mut u64) -> (f64, usize, bool) {
        let s = b.stream();
        // The weights of one product: (type, rows) of each part.
        let parts: Vec<(GgmlType, usize)> = match p.kind {
            Kind::Plain | Kind::Accum => vec![(p.ty, p.rows)],
            Kind::Qkv(k, v, vt) => vec![(p.ty, p.rows), (p.ty, k), (vt, v)],
            Kind::Swiglu => vec![(p.ty, p.rows), (p.ty, p.rows)],
        };
        let bytes: usize = parts.iter().map(|&(t, r)| bytes_of(t, r, p.cols)).sum();
        let copies = ROTATE_BYTES.div_ceil(bytes).clamp(1, 16);
        let mut bufs: Vec<Vec<CudaSlice<u8>>> = Vec::new();
        for _ in 0..copies {
            bufs.push(
                parts
                    .iter()
                    .map(|&(t, r)| {
                        s.clone_htod(&random_blocks(t, r, p.cols, seed))
                            .expect("upload")
                    })
                    .collect(),
            );
        }
        let x: Vec<f32> = (0..p.cols)
            .map(|_| (xorshift(seed) >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
            .collect();
        let dx = s.clone_htod(&x).expect("x");
        let out_len: usize = match p.kind {
            Kind::Swiglu => p.rows,
            _ => parts.iter().map(|q| q.1).sum(),
        };
        let mut dy = s.alloc_zeros::<f32>(out_len).expect("y");
        let views: Vec<Vec<DeviceWeight<'_>>> = bufs
            .iter()
            .map(|c| {
                c.iter()
                    .zip(&parts)
                    .map(|(d, &(t, r))| DeviceWeight::new(d.slice(..), t, p.cols, r).expect("view"))
                    .collect()
            })
            .collect();
        let q8 = views[0].iter().all(|w| b.matvec_uses_q8(w));
        let dt = time_graph(b, |i| {
            let w = &views[i % copies];
            match p.kind {
                Kind::Plain => b.matvec(&w[0], &dx, &mut dy),
                Kind::Accum => b.matvec_accumulate(&w[0], &dx, &mut dy),
                Kind::Qkv(..) => b.matvec_concat(&[&w[0], &w[1], &w[2]], &dx, &mut dy),
                Kind::Swiglu => b.matvec_swiglu(&w[0], &w[1], &dx, &mut dy),
            }
            .expect("product");
        });
        (dt, bytes, q8)
    }

    fn products() -> Vec<Product> {
        use GgmlType::{Q4_K, Q6_K, Q8_0};
        let p = |name, ty, rows, cols, kind| Product {
            name,
            ty,
            rows,
            cols,
            kind,
        };
        vec![
            p("8B attn_qkv", Q4_K, 4096, 4096, Kind::Qkv(1024, 1024, Q6_K)),
            p("8B attn_output", Q4_K, 4096, 4096, Kind::Accum),
            p("8B ffn_gate+up", Q4_K, 14336, 4096, Kind::Swiglu),
            p("8B ffn_down Q4_K", Q4_K, 4096, 14336, Kind::Accum),
            p("8B ffn_down Q6_K", Q6_K, 4096, 14336, Kind::Accum),
            p("8B output Q6_K", Q6_K, 128256, 4096, Kind::Plain),
            p("8B Q8_0 4096x4096", Q8_0, 4096, 4096, Kind::Plain),
            p("8B Q8_0 ffn_up", Q8_0, 14336, 4096, Kind::Plain),
            p(
                "70B attn_qkv",
                Q4_K,
                8192,
                8192,
                Kind::Qkv(1024, 1024, Q6_K),
            ),
            p("70B attn_output", Q4_K, 8192, 8192, Kind::Accum),
            p("70B ffn_gate+up", Q4_K, 28672, 8192, Kind::Swiglu),
            p("70B ffn_down Q4_K", Q4_K, 8192, 28672, Kind::Accum),
            p("70B ffn_down Q6_K", Q6_K, 8192, 28672, Kind::Accum),
            p("70B Q8_0 ffn_up", Q8_0, 28672, 8192, Kind::Plain),
        ]
    }

    /// The 8B attention input: RMSNorm then Q/K/V, as two calls (norm, then the product with
    /// its own quantization kernel) and as the fused call (the norm kernel quantizes).
    fn norm_fusion(b: &CudaBackend, seed: &mut u64, d2d: f64) {
        use GgmlType::{Q4_K, Q6_K};
        let s = b.stream();
        let cols = 4096;
        let parts = [(Q4_K, 4096usize), (Q4_K, 1024), (Q6_K, 1024)];
        let bytes: usize = parts.iter().map(|&(t, r)| bytes_of(t, r, cols)).sum();
        let copies = ROTATE_BYTES.div_ceil(bytes).clamp(1, 16);
        let bufs: Vec<Vec<CudaSlice<u8>>> = (0..copies)
            .map(|_| {
                parts
                    .iter()
                    .map(|&(t, r)| s.clone_htod(&random_blocks(t, r, cols, seed)).expect("w"))
                    .collect()
            })
            .collect();
        let views: Vec<Vec<DeviceWeight<'_>>> = bufs
            .iter()
            .map(|c| {
                c.iter()
                    .zip(&parts)
                    .map(|(d, &(t, r))| DeviceWeight::new(d.slice(..), t, cols, r).expect("view"))
                    .collect()
            })
            .collect();
        let x: Vec<f32> = (0..cols)
            .map(|_| (xorshift(seed) >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
            .collect();
        let dx = s.clone_htod(&x).expect("x");
        let nb: Vec<u8> = (0..cols).flat_map(|_| 1.0f32.to_le_bytes()).collect();
        let dn = s.clone_htod(&nb).expect("norm");
        let norm = DeviceWeight::new(dn.slice(..), GgmlType::F32, cols, 1).expect("norm");
        let mut xn = s.alloc_zeros::<f32>(cols).expect("xn");
        let mut y = s.alloc_zeros::<f32>(6144).expect("y");
        let two = time_graph(b, |i| {
            let w = &views[i % copies];
            b.rmsnorm_weight(&dx, &norm, &mut xn, 1e-5).expect("norm");
            b.matvec_concat(&[&w[0], &w[1], &w[2]], &xn, &mut y)
                .expect("qkv");
        });
        let fused = time_graph(b, |i| {
            let w = &views[i % copies];
            b.rmsnorm_matvec_concat(&dx, &norm, &mut xn, 1e-5, &[&w[0], &w[1], &w[2]], &mut y)
                .expect("norm + qkv");
        });
        let frac = |t: f64| bytes as f64 / t / d2d;
        println!(
            "8B rmsnorm + attn_qkv (q8): norm then product {:.2} us ({:.2} of D2D), fused norm + \
             quantization {:.2} us ({:.2} of D2D)",
            two * 1e6,
            frac(two),
            fused * 1e6,
            frac(fused)
        );
    }

    pub fn main() {
        let base = match CudaOptions::from_vars(|k| std::env::var(k).ok()) {
            Ok(o) => o,
            Err(e) => {
                println!("cuda_matvec: bad options: {e}");
                return;
            }
        };
        let open = |q8: bool| {
            let mut o = base.clone();
            o.matvec_q8 = q8;
            CudaBackend::with_options(0, &o)
        };
        let (before, after) = match (open(false), open(true)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                println!("cuda_matvec: no CUDA backend ({e}); nothing measured");
                return;
            }
        };
        let d2d = after
            .measure_d2d_bandwidth(1 << 30, 20)
            .expect("d2d bandwidth");
        println!(
            "cuda_matvec on {}: D2D copy {:.0} GB/s (read + write); unit {} rows, {:?}",
            after.arch(),
            d2d / 1e9,
            base.matvec_rows,
            base.matvec_ksplit
        );
        println!(
            "{:<20} {:>9} | {:>9} {:>7} {:>5} | {:>9} {:>7} {:>5} {:>4} | {:>5}",
            "product", "MB", "f32 us", "GB/s", "frac", "q8 us", "GB/s", "frac", "q8", "x"
        );
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let (mut tb, mut ta, mut tbytes) = (0f64, 0f64, 0usize);
        for p in products() {
            let (t0, bytes, _) = time_product(&before, &p, &mut seed);
            let (t1, _, q8) = time_product(&after, &p, &mut seed);
            let gb = |t: f64| bytes as f64 / t / 1e9;
            println!(
                "{:<20} {:>9.1} | {:>9.2} {:>7.0} {:>5.2} | {:>9.2} {:>7.0} {:>5.2} {:>4} | {:>5.2}",
                p.name,
                bytes as f64 / 1e6,
                t0 * 1e6,
                gb(t0),
                gb(t0) * 1e9 / d2d,
                t1 * 1e6,
                gb(t1),
                gb(t1) * 1e9 / d2d,
                if q8 { "yes" } else { "no" },
                t0 / t1
            );
            if p.name.starts_with("8B") && !p.name.contains("Q8_0") {
                let n = if p.name.contains("output") { 1.0 } else { 32.0 };
                let n = if p.name.contains("ffn_down") {
                    n / 2.0
                } else {
                    n
                };
                tb += t0 * n;
                ta += t1 * n;
                tbytes += (bytes as f64 * n) as usize;
            }
        }
        norm_fusion(&after, &mut seed, d2d);
        println!(
            "8B Q4_K_M step, products only (32 layers, ffn_down half Q4_K half Q6_K, output): \
             f32 {:.3} ms ({:.2} of D2D), q8 {:.3} ms ({:.2} of D2D), {:.2}x",
            tb * 1e3,
            tbytes as f64 / tb / d2d,
            ta * 1e3,
            tbytes as f64 / ta / d2d,
            tb / ta
        );
    }
}

fn main() {
    #[cfg(feature = "cuda")]
    gpu::main();
    #[cfg(not(feature = "cuda"))]
    println!("cuda_matvec: built without the `cuda` feature; nothing measured");
}
