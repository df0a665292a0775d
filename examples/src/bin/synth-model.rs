//! `synth-model --shape SHAPE --quant QUANT --vocab GGUF --out FILE`: writes a Llama-shaped GGUF
//! with random weights, for benchmarks where speed depends on shape and types, not values.
//!
//! Shapes: `tiny` (2 layers, 256 wide; for tests), `smollm2-135m`, `llama3.1-8b`,
//! `llama3.1-70b`. Quant presets follow llama.cpp's type choice per tensor:
//! - `q4_k_m`: Q4_K, with Q6_K for `output` and for `attn_v` / `ffn_down` in the layers where
//!   llama.cpp spends more bits (the first and last eighth, and every third layer between);
//! - `q8_0`, `q6_k`, `q4_0` (with a Q6_K `output`), `f16`.
//!
//! Norms and `rope_freqs` are F32. A k-quant tensor whose rows are not a multiple of 256 falls
//! back as in llama.cpp (Q4_K -> Q5_0, Q5_K/Q6_K -> Q8_0). Quantized blocks are random bytes
//! with random finite f16 scales (no NaN/Inf). Llama 3.x shapes get llama3 `rope_freqs.weight`
//! (factor 8, low/high frequency factors 1/4, original context 8192). Every `tokenizer.*` key is
//! copied from the `--vocab` GGUF (e.g. llama.cpp's ggml-vocab-llama-bpe.gguf), whose token
//! count is the vocabulary size. The file is written streaming, one buffer at a time, with the
//! random bytes made on every core; names, types and metadata keys are llama.cpp's.

use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use gguf::{GgmlType, GgufFile, GgufWriter, Metadata, TensorDecl, Value};

/// Write a Llama-shaped GGUF with random weights.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Model shape.
    #[arg(long, value_enum)]
    shape: Shape,
    /// Quantization preset.
    #[arg(long, value_enum)]
    quant: Quant,
    /// GGUF whose tokenizer metadata is copied (its token count sets the vocabulary size).
    #[arg(long)]
    vocab: PathBuf,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Shape {
    Tiny,
    #[value(name = "smollm2-135m")]
    Smollm2_135m,
    #[value(name = "llama3.1-8b")]
    Llama31_8b,
    #[value(name = "llama3.1-70b")]
    Llama31_70b,
}

#[derive(Clone, Copy, ValueEnum)]
enum Quant {
    #[value(name = "q4_k_m")]
    Q4KM,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q6_k")]
    Q6K,
    #[value(name = "q4_0")]
    Q4_0,
    #[value(name = "f16")]
    F16,
}

struct Dims {
    name: &'static str,
    layers: usize,
    dim: usize,
    ffn: usize,
    heads: usize,
    kv_heads: usize,
    rope_base: f32,
    context: u32,
    tied: bool,
    llama3_rope: bool,
}

fn dims(s: Shape) -> Dims {
    let d = |name, layers, dim, ffn, heads, kv_heads| Dims {
        name,
        layers,
        dim,
        ffn,
        heads,
        kv_heads,
        rope_base: 500_000.0,
        context: 131_072,
        tied: false,
        llama3_rope: true,
    };
    match s {
        Shape::Tiny => d("tiny", 2, 256, 512, 4, 2),
        Shape::Llama31_8b => d("llama3.1-8b", 32, 4096, 14336, 32, 8),
        Shape::Llama31_70b => d("llama3.1-70b", 80, 8192, 28672, 64, 8),
        Shape::Smollm2_135m => Dims {
            rope_base: 100_000.0,
            context: 8192,
            tied: true,
            llama3_rope: false,
            ..d("smollm2-135m", 30, 576, 1536, 9, 3)
        },
    }
}

/// llama.cpp's `use_more_bits`: the layers Q4_K_M gives Q6_K `attn_v` / `ffn_down`.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The type of a weight matrix with rows of `row_len`, after llama.cpp's fallback for rows that
/// are not whole k-quant super-blocks.
fn fit(ty: GgmlType, row_len: usize) -> GgmlType {
    if row_len % 256 == 0 {
        return ty;
    }
    match ty {
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K | GgmlType::Q6_K => GgmlType::Q8_0,
        other => other,
    }
}

/// Type of tensor `role` (llama.cpp name without `blk.N.`) of layer `layer` (None outside).
fn type_for(q: Quant, role: &str, layer: Option<usize>, n_layers: usize) -> GgmlType {
    let base = match q {
        Quant::Q4KM => GgmlType::Q4_K,
        Quant::Q8_0 => GgmlType::Q8_0,
        Quant::Q6K => GgmlType::Q6_K,
        Quant::Q4_0 => GgmlType::Q4_0,
        Quant::F16 => GgmlType::F16,
    };
    match (q, role) {
        (Quant::Q4KM | Quant::Q4_0, "output.weight") => GgmlType::Q6_K,
        (Quant::Q4KM, "attn_v.weight" | "ffn_down.weight")
            if layer.is_some_and(|i| use_more_bits(i, n_layers)) =>
        {
            GgmlType::Q6_K
        }
        _ => base,
    }
}

/// llama.cpp's `general.file_type` of each preset.
fn file_type(q: Quant) -> u32 {
    match q {
        Quant::F16 => 1,
        Quant::Q4_0 => 2,
        Quant::Q8_0 => 7,
        Quant::Q4KM => 15,
        Quant::Q6K => 18,
    }
}

/// Llama 3.1 rope scaling factors, one per rotation pair (as llama.cpp's converter computes them).
fn llama3_rope_factors(head_dim: usize, base: f32) -> Vec<f32> {
    let (factor, low, high, old_ctx) = (8.0f64, 1.0f64, 4.0f64, 8192.0f64);
    let (low_wavelen, high_wavelen) = (old_ctx / low, old_ctx / high);
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / f64::from(base).powf(2.0 * i as f64 / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let f = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            f as f32
        })
        .collect()
}

/// SplitMix64: a fast, seedable generator (quality is ample for random weights).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// IEEE half of `v` (|v| < 65504; mantissa truncated, subnormals rounded), little-endian.
fn f16le(v: f32) -> [u8; 2] {
    let sign: u16 = if v.is_sign_negative() { 0x8000 } else { 0 };
    let x = v.abs().min(65504.0);
    let mag = if x < 6.103_515_6e-5 {
        // Subnormal: a multiple of 2^-24 (rounding up to 1024 gives the smallest normal).
        (x * 16_777_216.0).round() as u16
    } else {
        let b = x.to_bits();
        let exp = ((b >> 23) & 0xFF) as u16 + 15 - 127;
        (exp << 10) | ((b >> 13) & 0x3FF) as u16
    };
    (sign | mag).to_le_bytes()
}

/// Fills `out` (whole blocks of `ty`) with random valid data.
fn fill_blocks(ty: GgmlType, out: &mut [u8], rng: &mut Rng) {
    match ty {
        GgmlType::F32 => {
            for c in out.chunks_exact_mut(4) {
                c.copy_from_slice(&(0.05 * rng.unit()).to_le_bytes());
            }
            return;
        }
        GgmlType::F16 => {
            for c in out.chunks_exact_mut(2) {
                c.copy_from_slice(&f16le(0.05 * rng.unit()));
            }
            return;
        }
        _ => {}
    }
    for c in out.chunks_mut(8) {
        let r = rng.next().to_le_bytes();
        c.copy_from_slice(&r[..c.len()]);
    }
    // f16 scale fields of each block layout, with a magnitude that keeps weights near 0.02.
    let (offsets, mag): (&[usize], f32) = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 => (&[0], 0.003),
        GgmlType::Q8_0 => (&[0], 0.0002),
        GgmlType::Q4_K | GgmlType::Q5_K => (&[0, 2], 0.00003),
        GgmlType::Q6_K => (&[208], 0.00002),
        _ => (&[], 0.0),
    };
    for b in out.chunks_exact_mut(ty.type_size()) {
        for &o in offsets {
            b[o..o + 2].copy_from_slice(&f16le(mag * (0.5 + 0.5 * rng.unit().abs())));
        }
    }
}

/// A `Read` that produces a tensor's random blocks, a buffer at a time, on every core.
struct BlockSource {
    ty: GgmlType,
    remaining: u64,
    buf: Vec<u8>,
    pos: usize,
    seed: u64,
}

impl BlockSource {
    fn new(ty: GgmlType, n_bytes: u64, seed: u64) -> Self {
        BlockSource {
            ty,
            remaining: n_bytes,
            buf: Vec::new(),
            pos: 0,
            seed,
        }
    }

    fn refill(&mut self) {
        const TARGET: u64 = 32 << 20;
        let bs = self.ty.type_size() as u64;
        let n = (TARGET / bs * bs).max(bs).min(self.remaining) as usize;
        self.buf.resize(n, 0);
        self.pos = 0;
        self.remaining -= n as u64;
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
        let per = (n / bs as usize).div_ceil(threads).max(1) * bs as usize;
        let (ty, seed) = (self.ty, self.seed);
        std::thread::scope(|s| {
            for (k, chunk) in self.buf.chunks_mut(per).enumerate() {
                s.spawn(move || {
                    let mut rng = Rng(seed ^ (k as u64).wrapping_mul(0xA24B_AED4_963E_E407));
                    fill_blocks(ty, chunk, &mut rng);
                });
            }
        });
        self.seed = Rng(self.seed).next();
    }
}

impl Read for BlockSource {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.remaining == 0 {
                return Ok(0);
            }
            self.refill();
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The tensors of the model, in llama.cpp's order, with their data source kind.
fn plan(d: &Dims, q: Quant, vocab: usize) -> Vec<(TensorDecl, Option<Vec<f32>>)> {
    let head_dim = d.dim / d.heads;
    let kv = head_dim * d.kv_heads;
    let n = d.layers;
    let mat = |name: String, role: &str, layer, rows: usize, cols: usize| {
        let ty = fit(type_for(q, role, layer, n), cols);
        (TensorDecl::new(name, &[cols as u64, rows as u64], ty), None)
    };
    let norm = |name: String, len: usize| {
        let ones = vec![1.0f32; len];
        (
            TensorDecl::new(name, &[len as u64], GgmlType::F32),
            Some(ones),
        )
    };
    let mut t = vec![mat(
        "token_embd.weight".into(),
        "token_embd.weight",
        None,
        vocab,
        d.dim,
    )];
    if d.llama3_rope {
        let f = llama3_rope_factors(head_dim, d.rope_base);
        let decl = TensorDecl::new("rope_freqs.weight", &[f.len() as u64], GgmlType::F32);
        t.push((decl, Some(f)));
    }
    for i in 0..n {
        let p = |r: &str| format!("blk.{i}.{r}");
        t.push(norm(p("attn_norm.weight"), d.dim));
        t.push(mat(
            p("attn_q.weight"),
            "attn_q.weight",
            Some(i),
            d.dim,
            d.dim,
        ));
        t.push(mat(p("attn_k.weight"), "attn_k.weight", Some(i), kv, d.dim));
        t.push(mat(p("attn_v.weight"), "attn_v.weight", Some(i), kv, d.dim));
        t.push(mat(
            p("attn_output.weight"),
            "attn_output.weight",
            Some(i),
            d.dim,
            d.dim,
        ));
        t.push(norm(p("ffn_norm.weight"), d.dim));
        t.push(mat(
            p("ffn_gate.weight"),
            "ffn_gate.weight",
            Some(i),
            d.ffn,
            d.dim,
        ));
        t.push(mat(
            p("ffn_up.weight"),
            "ffn_up.weight",
            Some(i),
            d.ffn,
            d.dim,
        ));
        t.push(mat(
            p("ffn_down.weight"),
            "ffn_down.weight",
            Some(i),
            d.dim,
            d.ffn,
        ));
    }
    t.push(norm("output_norm.weight".into(), d.dim));
    if !d.tied {
        t.push(mat(
            "output.weight".into(),
            "output.weight",
            None,
            vocab,
            d.dim,
        ));
    }
    t
}

fn metadata(d: &Dims, q: Quant, vocab_file: &GgufFile) -> Result<(Metadata, usize), String> {
    let vm = vocab_file.metadata();
    let vocab = vm
        .get_array("tokenizer.ggml.tokens")
        .map_err(|e| format!("--vocab has no token list: {e}"))?
        .len();
    let head_dim = d.dim / d.heads;
    let mut m = Metadata::new();
    let s = |v: &str| Value::String(v.to_owned());
    let u = |v: usize| Value::U32(u32::try_from(v).unwrap_or(u32::MAX));
    m.insert("general.architecture", s("llama"));
    m.insert("general.name", s(&format!("vramless synthetic {}", d.name)));
    m.insert("general.file_type", Value::U32(file_type(q)));
    m.insert("general.quantization_version", Value::U32(2));
    m.insert("llama.block_count", u(d.layers));
    m.insert("llama.context_length", Value::U32(d.context));
    m.insert("llama.embedding_length", u(d.dim));
    m.insert("llama.feed_forward_length", u(d.ffn));
    m.insert("llama.attention.head_count", u(d.heads));
    m.insert("llama.attention.head_count_kv", u(d.kv_heads));
    m.insert("llama.rope.freq_base", Value::F32(d.rope_base));
    m.insert("llama.rope.dimension_count", u(head_dim));
    m.insert("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    m.insert("llama.vocab_size", u(vocab));
    for (k, v) in vm.iter() {
        if k.starts_with("tokenizer.") {
            m.insert(k, v.clone());
        }
    }
    Ok((m, vocab))
}

fn run(a: &Args) -> Result<(), String> {
    let d = dims(a.shape);
    let vocab_file = GgufFile::open(&a.vocab).map_err(|e| format!("{}: {e}", a.vocab.display()))?;
    let (meta, vocab) = metadata(&d, a.quant, &vocab_file)?;
    let tensors = plan(&d, a.quant, vocab);
    let decls: Vec<TensorDecl> = tensors.iter().map(|(t, _)| t.clone()).collect();
    let file = File::create(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let out = BufWriter::with_capacity(8 << 20, file);
    let mut w = GgufWriter::new(out, &meta, &decls).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut total = 0u64;
    for (i, (decl, values)) in tensors.iter().enumerate() {
        let n: u64 = decl.dims.iter().product();
        let n_bytes = n / decl.ggml_type.block_size() as u64 * decl.ggml_type.type_size() as u64;
        let res = match values {
            Some(v) => {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                w.write_tensor(&decl.name, &bytes)
            }
            None => {
                let seed = a.seed.wrapping_mul(0x1000_0000_01B3) ^ i as u64;
                w.write_tensor_from(&decl.name, BlockSource::new(decl.ggml_type, n_bytes, seed))
            }
        };
        res.map_err(|e| format!("writing {}: {e}", decl.name))?;
        total += n_bytes;
    }
    let mut out = w.finish().map_err(|e| e.to_string())?;
    std::io::Write::flush(&mut out).map_err(|e| e.to_string())?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} ({} tensors, {:.2} GB of tensor data) in {secs:.1} s ({:.2} GB/s)",
        a.out.display(),
        tensors.len(),
        total as f64 / 1e9,
        total as f64 / 1e9 / secs.max(1e-9)
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("synth-model: {e}");
            ExitCode::FAILURE
        }
    }
}
