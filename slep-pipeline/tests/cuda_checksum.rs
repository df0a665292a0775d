//! GPU checksum of a streamed file (feature `cuda`).
//!
//! - `nvrtc_compiles_checksum_kernel` (no GPU needed): the kernel compiles with NVRTC for sm_80 and
//!   sm_90 into a CUDA ELF image exporting `slep_checksum`. NVRTC comes from `VRAMLESS_NVRTC_LIB`,
//!   else python's site-packages (`pip install nvidia-cuda-nvrtc`); without it the test skips
//!   loudly, except with `CI=true`, where it fails.
//! - `every_source_streams_a_large_file_with_gpu_checksum` (GPU): writes a file of
//!   `VRAMLESS_STREAM_TEST_BYTES` pseudo-random bytes (default 64 MiB; the device run uses 3 GiB),
//!   computing the host checksum of each chunk while writing, then streams it through every source
//!   with 2 and 3 slots and an odd chunk size that does not divide the file; the consumer runs the
//!   checksum kernel on its compute stream and the one value read back at the end must equal the
//!   host's. Skips loudly without a GPU, unless `VRAMLESS_REQUIRE_GPU=1`.
#![cfg(feature = "cuda")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use slep_pipeline::checksum::{item_checksum, KERNEL_NAME};
use slep_pipeline::{
    compile_checksum_kernel, nvrtc_available, use_nvrtc_library, ByteRange, CudaTransfer,
    FileSource, GpuChecksum, IoEngine, Item, MmapBaselineSource, MmapSource, PinnedRamSource,
    Pipeline, ReadMode, Schedule, Source,
};

/// Prints past the test harness's output capture.
fn loud(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn find_nvrtc() -> Option<String> {
    if let Ok(p) = std::env::var("VRAMLESS_NVRTC_LIB") {
        if Path::new(&p).exists() {
            return Some(p);
        }
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import site; print('\\n'.join(site.getsitepackages() + [site.getusersitepackages()]))",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|dir| format!("{dir}/nvidia/cu13/lib/libnvrtc.so.13"))
        .find(|p| Path::new(p).exists())
}

/// Whether NVRTC loads: the library named by `VRAMLESS_NVRTC_LIB` (handed to the crate with
/// `use_nvrtc_library`; the crate reads no environment), else the loader's search path;
/// otherwise a loud skip (a failure under CI) naming the pip-installed library when there is
/// one. Tests run in parallel: they never set the variable themselves.
fn nvrtc_or_skip() -> bool {
    let named = std::env::var("VRAMLESS_NVRTC_LIB")
        .ok()
        .filter(|p| !p.is_empty())
        .map(|p| use_nvrtc_library(Path::new(&p)));
    let r = match named {
        Some(Err(e)) => Err(e),
        _ => nvrtc_available(),
    };
    match r {
        Ok(()) => true,
        Err(e) => {
            let hint = match find_nvrtc() {
                Some(p) => format!("export VRAMLESS_NVRTC_LIB={p} (scripts/test.sh does)"),
                None => "python3 -m pip install nvidia-cuda-nvrtc==13.0.88, then set \
                         VRAMLESS_NVRTC_LIB to its lib/libnvrtc.so.13"
                    .to_owned(),
            };
            test_support::skip(format!("NVRTC is not loadable ({e}): {hint}"));
            false
        }
    }
}

#[test]
fn nvrtc_compiles_checksum_kernel() {
    if !nvrtc_or_skip() {
        return;
    }
    for arch in ["sm_80", "sm_90"] {
        let cubin = compile_checksum_kernel(arch).unwrap();
        assert!(cubin.len() > 64, "{arch}: cubin of {} bytes", cubin.len());
        assert_eq!(&cubin[..4], b"\x7fELF", "{arch}: not an ELF image");
        assert!(
            cubin
                .windows(KERNEL_NAME.len())
                .any(|w| w == KERNEL_NAME.as_bytes()),
            "{arch}: entry point {KERNEL_NAME} missing"
        );
    }
    match compile_checksum_kernel("sm_1") {
        Err(slep_pipeline::PipelineError::KernelCompile { arch, .. }) => assert_eq!(arch, "sm_1"),
        other => panic!("a bogus architecture must be a compile error, got {other:?}"),
    }
}

/// xorshift64* (Vigna): fast pseudo-random bytes for the test file.
struct XorShift(u64);

impl XorShift {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Writes `len` pseudo-random bytes to `path` in chunks of `chunk` bytes (the last one shorter)
/// and returns the schedule of those chunks and the host checksum of that schedule.
fn write_file(path: &Path, len: u64, chunk: u64) -> (Schedule, u64) {
    let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path).unwrap());
    let mut rng = XorShift(0x1234_5678_9ABC_DEF1);
    let mut buf = vec![0u8; chunk as usize];
    let mut schedule = Schedule::default();
    let mut sum = 0u64;
    let (mut offset, mut index) = (0u64, 0u64);
    while offset < len {
        let n = chunk.min(len - offset);
        let bytes = &mut buf[..n as usize];
        rng.fill(bytes);
        f.write_all(bytes).unwrap();
        sum = sum.wrapping_add(item_checksum(index, bytes));
        schedule.push(Item::new(index, vec![ByteRange::new(offset, n)]));
        offset += n;
        index += 1;
    }
    f.flush().unwrap();
    f.get_ref().sync_all().unwrap();
    (schedule, sum)
}

fn scratch_dir() -> PathBuf {
    let base = std::env::var_os("VRAMLESS_STREAM_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let d = base.join(format!("slep-gpu-checksum-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn every_source_streams_a_large_file_with_gpu_checksum() {
    let require = std::env::var("VRAMLESS_REQUIRE_GPU").as_deref() == Ok("1");
    if let Err(e) = CudaTransfer::new(0) {
        test_support::skip_gpu(e);
        return;
    }
    if !nvrtc_or_skip() {
        assert!(!require, "VRAMLESS_REQUIRE_GPU=1 but NVRTC is missing");
        return;
    }
    let len: u64 = std::env::var("VRAMLESS_STREAM_TEST_BYTES")
        .ok()
        .map(|v| {
            v.parse()
                .expect("VRAMLESS_STREAM_TEST_BYTES must be a byte count")
        })
        .unwrap_or(64 << 20);
    // Odd chunk size: 7 MiB + 4099 bytes, so chunks are unaligned and the last one is short.
    let chunk: u64 = (7 << 20) + 4099;
    assert!(
        !len.is_multiple_of(chunk),
        "pick a size the chunk does not divide"
    );
    let dir = scratch_dir();
    let path = dir.join("stream.bin");
    let t0 = Instant::now();
    let (schedule, want) = write_file(&path, len, chunk);
    loud(&format!(
        "wrote {len} bytes ({} chunks of {chunk}) to {} in {:.1} s; host checksum {want:#018x}",
        schedule.items().len(),
        path.display(),
        t0.elapsed().as_secs_f64()
    ));
    let mut results = Vec::new();
    for n_slots in [2usize, 3] {
        let t = CudaTransfer::new(0).unwrap();
        let mut pinned = PinnedRamSource::new();
        for item in schedule.items() {
            pinned.load_from_file(&t, &path, item).unwrap();
        }
        let mut sources: Vec<(&str, Box<dyn Source>)> = vec![
            ("pinned-ram", Box::new(pinned)),
            (
                "cpu-worker-odirect",
                Box::new(FileSource::open(&path, ReadMode::Direct, IoEngine::Auto).unwrap()),
            ),
            ("mmap-worker", Box::new(MmapSource::open(&path, 4).unwrap())),
            (
                "mmap-baseline",
                Box::new(MmapBaselineSource::open(&path).unwrap()),
            ),
        ];
        let compute = t.context().new_stream().unwrap();
        let mut p = Pipeline::new(t, n_slots, chunk as usize).unwrap();
        for (name, src) in &mut sources {
            let mut gpu = GpuChecksum::new(compute.clone()).unwrap();
            let start = Instant::now();
            let stats = p
                .run(&schedule, src, |ready| {
                    let slot = ready.buffer().expect("every item is streamed");
                    if let Some(ev) = ready.event() {
                        gpu.stream().wait(ev.event())?;
                    }
                    gpu.add(slot, ready.len, ready.index as u64)?;
                    Ok(Some(ready.transfer().release_signal(gpu.stream())?))
                })
                .unwrap();
            let got = gpu.total().unwrap();
            let secs = start.elapsed().as_secs_f64();
            loud(&format!(
                "N={n_slots} {name:<19} gpu checksum {got:#018x} host {want:#018x} {} | {:.2} GB/s end to end\n{stats}",
                if got == want { "EQUAL" } else { "DIFFERENT" },
                len as f64 / secs / 1e9
            ));
            results.push((n_slots, *name, got));
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    for (n, name, got) in results {
        assert_eq!(
            got, want,
            "N={n} {name}: GPU checksum differs from the host's"
        );
    }
}
