//! Streams a file through the slep pipeline and prints the achieved bandwidth of every stage,
//! next to a limit measured in the same run: pinned host-to-device bandwidth with `--device cuda`,
//! host memcpy bandwidth with `--device cpu`, and, for the CPU-worker source, the disk's raw
//! O_DIRECT read bandwidth.
//!
//! ```text
//! bench-stream --file model.gguf --slots 2 --source cpu-worker --chunk 512MiB --device cuda
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, ValueEnum};
use slep_pipeline::{
    choose_source, ByteRange, CpuTransfer, FileSource, HostBuffer, IoEngine, Item, Location,
    MachineCaps, MmapBaselineSource, MmapSource, PinnedRamSource, Pipeline, PipelineError,
    PipelineStats, ReadMode, Schedule, Source, SourceKind, Transfer,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SourceArg {
    /// Load every chunk into pinned RAM first, then stream from there (one copy per chunk).
    Pinned,
    /// O_DIRECT reads (io_uring or pread) into pinned staging, then copy.
    CpuWorker,
    /// mmap + worker-thread memcpy into pinned staging, then copy.
    Mmap,
    /// Baseline: the pageable mmap pointer handed straight to the copy.
    MmapBaseline,
    /// Choose from where the file lives and what this machine allows.
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DeviceArg {
    /// Host buffers as device slots (no GPU needed).
    Cpu,
    /// GPU 0 through CUDA (needs the `cuda` feature and a driver).
    Cuda,
}

/// Stream a file through the N-buffered pipeline and report per-stage bandwidth.
#[derive(Debug, Parser)]
#[command(name = "bench-stream")]
struct Args {
    /// File to stream.
    #[arg(long)]
    file: PathBuf,
    /// Number of device slots (at least 2).
    #[arg(long, default_value_t = 2)]
    slots: usize,
    /// Data path.
    #[arg(long, value_enum, default_value_t = SourceArg::Auto)]
    source: SourceArg,
    /// Item (chunk) size, e.g. 512MiB, 64MiB, 1GiB, 4096.
    #[arg(long, default_value = "512MiB", value_parser = parse_size)]
    chunk: u64,
    /// Where the slots live.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// Passes over the file (the first one also warms whatever cache the source uses).
    #[arg(long, default_value_t = 2)]
    passes: usize,
    /// Worker threads for reads and memcpy.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Stream at most this many bytes of the file (e.g. 8GiB).
    #[arg(long, value_parser = parse_size)]
    max_bytes: Option<u64>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size like 512MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KiB, MiB or GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("size `{s}` is zero or too large"))
}

fn schedule_for(len: u64, chunk: u64) -> Schedule {
    let mut s = Schedule::default();
    let mut offset = 0;
    let mut key = 0;
    while offset < len {
        let n = chunk.min(len - offset);
        s.push(Item::single(key, ByteRange::new(offset, n)));
        offset += n;
        key += 1;
    }
    s
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Host memcpy bandwidth (GB/s, best of 10 copies) from a page-aligned buffer: the CPU device's
/// copy limit.
fn measure_memcpy(bytes: usize, threads: usize) -> Result<f64, PipelineError> {
    let src = HostBuffer::new(bytes)?;
    let t = CpuTransfer::new(threads);
    let mut slot = t.alloc_slot(bytes)?;
    let seg = [slot_segment(&src)];
    t.copy(&seg, &mut slot, None)?;
    let mut best = 0f64;
    for _ in 0..10 {
        let start = Instant::now();
        t.copy(&seg, &mut slot, None)?;
        best = best.max(bytes as f64 / start.elapsed().as_secs_f64() / 1e9);
    }
    Ok(best)
}

fn slot_segment(src: &HostBuffer) -> slep_pipeline::CopySegment<'_> {
    slep_pipeline::CopySegment {
        src: src.as_slice(),
        dst_offset: 0,
    }
}

/// Raw O_DIRECT read bandwidth of the file (GB/s): the CPU-worker source's storage limit.
fn measure_disk(
    path: &Path,
    schedule: &Schedule,
    threads: usize,
) -> Result<(f64, String), BoxError> {
    let mut src = FileSource::open(path, ReadMode::Direct, IoEngine::Auto)?.with_threads(threads);
    let need = schedule
        .items()
        .iter()
        .map(|i| src.staging_bytes(i))
        .try_fold(0u64, |m, b| b.map(|b| m.max(b)))?;
    let mut staging = HostBuffer::new(usize::try_from(need)?)?;
    let start = Instant::now();
    let mut bytes = 0;
    for item in schedule.items() {
        src.fetch(item, &mut staging)?;
        bytes += item.total_len()?;
    }
    let gbps = bytes as f64 / start.elapsed().as_secs_f64() / 1e9;
    Ok((
        gbps,
        format!(
            "{} via {}",
            if src.is_direct() {
                "O_DIRECT"
            } else {
                "buffered"
            },
            src.engine_name()
        ),
    ))
}

fn build_source<T: Transfer>(
    args: &Args,
    transfer: &T,
    schedule: &Schedule,
) -> Result<(Box<dyn Source>, SourceKind), BoxError> {
    let kind = match args.source {
        SourceArg::Pinned => SourceKind::PinnedRam,
        SourceArg::CpuWorker => SourceKind::CpuWorkerDirect,
        SourceArg::Mmap => SourceKind::CpuWorkerMmap,
        SourceArg::MmapBaseline => SourceKind::MmapBaseline,
        SourceArg::Auto => {
            let caps = MachineCaps::probe(&args.file);
            let choice = choose_source(&Location::File(args.file.clone()), &caps);
            println!("auto source: {choice}");
            choice.kind
        }
    };
    let source: Box<dyn Source> = match kind {
        SourceKind::PinnedRam => {
            let mut p = PinnedRamSource::new();
            let t = Instant::now();
            for item in schedule.items() {
                p.load_from_file(transfer, &args.file, item)?;
            }
            println!(
                "loaded {} bytes into pinned RAM in {:.2} s",
                p.bytes(),
                t.elapsed().as_secs_f64()
            );
            Box::new(p)
        }
        SourceKind::CpuWorkerDirect | SourceKind::CpuWorkerBuffered | SourceKind::NvmeDirect => {
            let f = FileSource::open(&args.file, ReadMode::Direct, IoEngine::Auto)?
                .with_threads(args.threads);
            println!("cpu-worker: {}", f.reason());
            Box::new(f)
        }
        SourceKind::CpuWorkerMmap => Box::new(MmapSource::open(&args.file, args.threads)?),
        SourceKind::MmapBaseline | SourceKind::Resident => {
            Box::new(MmapBaselineSource::open(&args.file)?)
        }
    };
    Ok((source, kind))
}

fn report(stats: &PipelineStats, limit_gbps: f64, limit_name: &str) {
    print!("{stats}");
    let frac = |g: f64| {
        if limit_gbps > 0.0 {
            100.0 * g / limit_gbps
        } else {
            0.0
        }
    };
    println!(
        "  end-to-end {:.2} GB/s = {:.1}% of {limit_name} ({limit_gbps:.2} GB/s); copy stage {:.1}%",
        stats.end_to_end_gbps(),
        frac(stats.end_to_end_gbps()),
        frac(stats.copy.gbps()),
    );
}

fn run<T: Transfer>(
    args: &Args,
    transfer: T,
    limit_gbps: f64,
    limit_name: &str,
) -> Result<(), BoxError> {
    let file_len = std::fs::metadata(&args.file)
        .map_err(|e| format!("{}: {e}", args.file.display()))?
        .len();
    let len = args.max_bytes.map_or(file_len, |m| m.min(file_len));
    let schedule = schedule_for(len, args.chunk);
    println!(
        "streaming {} bytes of {} in {} items of up to {} bytes through {} slots",
        len,
        args.file.display(),
        schedule.len(),
        args.chunk,
        args.slots
    );
    let (mut source, kind) = build_source(args, &transfer, &schedule)?;
    let slot_bytes = usize::try_from(args.chunk.min(len.max(1)))?;
    let mut pipeline = Pipeline::new(transfer, args.slots, slot_bytes)?;
    let disk = if matches!(
        kind,
        SourceKind::CpuWorkerDirect | SourceKind::CpuWorkerBuffered
    ) {
        let (g, how) = measure_disk(&args.file, &schedule, args.threads)?;
        println!("disk limit: {g:.2} GB/s ({how}, same file, no pipeline)");
        Some(g)
    } else {
        None
    };
    let mut disk = disk;
    for pass in 0..args.passes.max(1) {
        let stats = pipeline.run(&schedule, &mut source, |ready| {
            ready.wait()?;
            Ok(None)
        })?;
        println!("pass {pass} ({kind}):");
        report(&stats, limit_gbps, limit_name);
        if let Some(d) = disk.as_mut() {
            // Re-measure after each pass (shared machines are noisy); the best is the limit.
            let (g, _) = measure_disk(&args.file, &schedule, args.threads)?;
            *d = d.max(g);
            let d = *d;
            println!(
                "  read stage {:.2} GB/s = {:.1}% of the disk's O_DIRECT bandwidth ({d:.2} GB/s, best measured so far)",
                stats.read.gbps(),
                if d > 0.0 {
                    100.0 * stats.read.gbps() / d
                } else {
                    0.0
                }
            );
        }
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    if let Err(e) = bench(&args) {
        eprintln!("bench-stream: error: {e}");
        std::process::exit(1);
    }
}

fn bench(args: &Args) -> Result<(), BoxError> {
    let probe_bytes = usize::try_from(args.chunk.min(256 << 20))?;
    match args.device {
        DeviceArg::Cpu => {
            let limit = measure_memcpy(probe_bytes, args.threads)?;
            println!(
                "limit: host memcpy {limit:.2} GB/s ({probe_bytes} bytes, {} threads)",
                args.threads
            );
            run(
                args,
                CpuTransfer::new(args.threads),
                limit,
                "host memcpy bandwidth",
            )
        }
        DeviceArg::Cuda => cuda_main(args, probe_bytes),
    }
}

#[cfg(feature = "cuda")]
fn cuda_main(args: &Args, probe_bytes: usize) -> Result<(), BoxError> {
    let t = slep_pipeline::CudaTransfer::new(0)?;
    let limit = t.measure_pinned_h2d(probe_bytes, 10)?;
    println!("limit: pinned H2D {limit:.2} GB/s ({probe_bytes} bytes, measured now)");
    run(args, t, limit, "pinned H2D bandwidth")
}

#[cfg(not(feature = "cuda"))]
fn cuda_main(_args: &Args, _probe_bytes: usize) -> Result<(), BoxError> {
    Err("this binary was built without CUDA; rebuild with `--features cuda`".into())
}
