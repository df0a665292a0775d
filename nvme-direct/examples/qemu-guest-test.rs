//! Driver test run inside the QEMU guest (see scripts/qemu-nvme-test.sh): identify, whole-image
//! reads at several queue depths and buffer offsets checked against a known SHA-256, a
//! write + read-back on a scratch region, throughput lines, and a final result marker.
//! The main suite runs on the VFIO type1 container; before it, the iommufd + device cdev path
//! is tried (IOMMUFD-RESULT, or IOMMUFD-SKIPPED with the reason). With `nvt.hugepages=N` on
//! the kernel command line it reserves N huge pages and checks a 2 MiB-page buffer read
//! (HUGEPAGE-RESULT). The file reader (`ExtentReader::read_at`) reads the image into a
//! page-aligned destination (straight in by DMA) and into one a byte off alignment (through
//! its DMA buffer and a copy, the path every read took before), both checked.
//!
//! Usage: `qemu-guest-test BDF IMAGE_BYTES SHA256_HEX SCRATCH_LBA`
//!        `qemu-guest-test extents FILE OUT_LIST` (filesystem mounted: FIEMAP -> LBA list)
//!        `qemu-guest-test read-extents BDF LIST SHA256_HEX FILE_LEN` (device on vfio-pci)

use std::time::{Duration, Instant};

use nvme_direct::vfio::{Bar0, HugePages, IommuMode, VfioDevice, VfioDma, VfioOptions};
use nvme_direct::{
    BlockRange, Config, Controller, DmaBuffer, DmaMemory, ExtentReader, FileLocation,
    NamespaceIdentity,
};
use sha2::{Digest, Sha256};

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

type Ctrl = Controller<Bar0, VfioDma>;

/// A field of /proc/meminfo (pages for the HugePages_* counters).
fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// `nvt.hugepages=N` from the kernel command line: reserves N 2 MiB pages.
fn reserve_hugepages() -> Option<u64> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
    let n: u64 = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("nvt.hugepages="))?
        .parse()
        .ok()?;
    if let Err(e) = std::fs::write("/proc/sys/vm/nr_hugepages", n.to_string()) {
        println!("hugepages: writing /proc/sys/vm/nr_hugepages failed: {e}");
    }
    let free = meminfo("HugePages_Free");
    println!(
        "hugepages: asked for {n}, HugePages_Free {free} (Hugepagesize {} kB)",
        meminfo("Hugepagesize")
    );
    Some(n)
}

/// Reads the whole image at depth `qd` into `buf` at `off`, checks its SHA-256; MB/s.
fn read_checked(
    c: &mut Ctrl,
    ns: &NamespaceIdentity,
    buf: &mut nvme_direct::vfio::VfioBuffer,
    image_bytes: usize,
    qd: usize,
    off: usize,
    want: &str,
) -> Result<f64, String> {
    let blocks = (image_bytes / ns.block_size as usize) as u64;
    let t = Instant::now();
    for _ in 0..3 {
        c.read(0, ns, BlockRange { lba: 0, blocks }, buf, off, qd)
            .map_err(|e| format!("read qd {qd}: {e}"))?;
    }
    let s = t.elapsed().as_secs_f64() / 3.0;
    let got = hex(&Sha256::digest(&buf.as_slice()[off..off + image_bytes]));
    if got != want {
        return Err(format!(
            "sha256 mismatch at qd {qd} offset {off}: {got} != {want}"
        ));
    }
    Ok(image_bytes as f64 / s / 1e6)
}

/// The iommufd + VFIO cdev path: identify, whole-image read on a 2 MiB-page buffer when huge
/// pages are reserved, write + read-back. Prints IOMMUFD-RESULT or IOMMUFD-SKIPPED.
fn iommufd_suite(
    bdf: &str,
    image_bytes: usize,
    want: &str,
    scratch_lba: u64,
) -> Result<(), String> {
    println!(
        "iommufd: /dev/iommu {}, VFIO cdev of {bdf} {}; IommuMode::Auto would use {}",
        if std::path::Path::new("/dev/iommu").exists() {
            "present"
        } else {
            "absent"
        },
        if std::path::Path::new(&format!("/sys/bus/pci/devices/{bdf}/vfio-dev")).exists() {
            "present"
        } else {
            "absent"
        },
        if VfioDevice::iommufd_available(bdf) {
            "iommufd"
        } else {
            "type1"
        }
    );
    let dev = match VfioDevice::open_with(
        bdf,
        VfioOptions {
            iommu: IommuMode::Iommufd,
            ..VfioOptions::default()
        },
    ) {
        Ok(d) => d,
        Err(e) => {
            println!("IOMMUFD-SKIPPED: the guest kernel cannot open {bdf} through iommufd: {e}");
            return Ok(());
        }
    };
    let ranges: Vec<String> = dev
        .iova_ranges()
        .iter()
        .map(|(a, b)| format!("{a:#x}-{b:#x}"))
        .collect();
    let (w0, w1) = dev.iova_window();
    println!(
        "iommufd: IOAS allowed IOVA ranges [{}]; DMA window {w0:#x}..{w1:#x}",
        ranges.join(", ")
    );
    let (bar, dma) = dev.into_parts();
    let mut c = Controller::new(bar, dma, Config::default())
        .map_err(|e| format!("iommufd bring-up: {e}"))?;
    let ns = c.namespace(1).map_err(|e| e.to_string())?;
    let mut buf = c.memory().alloc(image_bytes).map_err(|e| e.to_string())?;
    let mbs = read_checked(&mut c, &ns, &mut buf, image_bytes, 32, 0, want)?;
    println!(
        "RESULT-LINE iommufd driver read qd=32 ({} pages): {mbs:.1} MB/s sha256 OK",
        if buf.is_huge() { "2 MiB" } else { "4 KiB" }
    );
    let wlen = 1 << 20;
    let w = c.memory().alloc(wlen).map_err(|e| e.to_string())?;
    let pattern: Vec<u8> = (0..wlen).map(|i| (i * 13 + 5) as u8).collect();
    w.write_bytes(0, &pattern).map_err(|e| e.to_string())?;
    let wr = BlockRange {
        lba: scratch_lba,
        blocks: (wlen / ns.block_size as usize) as u64,
    };
    let mut w = w;
    c.write(0, &ns, wr, &mut w, 0, 32)
        .map_err(|e| format!("iommufd write: {e}"))?;
    let mut r = c.memory().alloc(wlen).map_err(|e| e.to_string())?;
    c.read(0, &ns, wr, &mut r, 0, 32)
        .map_err(|e| format!("iommufd read back: {e}"))?;
    if r.as_slice()[..wlen] != pattern[..] {
        return Err("iommufd write/read-back mismatch".into());
    }
    c.shutdown().map_err(|e| e.to_string())?;
    println!("IOMMUFD-RESULT: PASS");
    Ok(())
}

/// Timeout -> Abort on QEMU's controller: the whole image read with a 20 µs command timeout,
/// so that commands time out while QEMU is still working on them and get an NVMe Abort. The
/// controller may abort them (then the read is retried) or answer "not aborted" and complete
/// them; either way no reset may happen and the bytes must be right.
fn abort_suite(
    c: &mut Ctrl,
    ns: &NamespaceIdentity,
    image_bytes: usize,
    want: &str,
) -> Result<(), String> {
    let before = c.recovery();
    c.set_timeouts(Duration::from_micros(20), Duration::from_secs(2));
    let mut buf = c.memory().alloc(image_bytes).map_err(|e| e.to_string())?;
    let blocks = (image_bytes / ns.block_size as usize) as u64;
    // Up to 5 passes until at least one command has timed out (QEMU is usually slower
    // than 20 us per command under TCG, so the first pass does it).
    let mut first = Ok(());
    for _ in 0..5 {
        first = c.read(0, ns, BlockRange { lba: 0, blocks }, &mut buf, 0, 32);
        if first.is_err() || c.recovery().aborts_sent > before.aborts_sent {
            break;
        }
    }
    let outcome = match &first {
        Ok(()) => "every command completed (Abort answered: not aborted)".to_string(),
        Err(nvme_direct::Error::Aborted { cid, .. }) => {
            format!("QEMU aborted cid {cid}; read repeated")
        }
        Err(e) => format!("error {e}"),
    };
    c.set_timeouts(Duration::from_secs(5), Duration::from_secs(2));
    if first.is_err() {
        c.read(0, ns, BlockRange { lba: 0, blocks }, &mut buf, 0, 32)
            .map_err(|e| format!("read after abort: {e}"))?;
    }
    let after = c.recovery();
    let got = hex(&Sha256::digest(&buf.as_slice()[..image_bytes]));
    println!(
        "RESULT-LINE abort: image read with a 20 us command timeout: {} Aborts sent, {} resets; {outcome}; sha256 {}",
        after.aborts_sent - before.aborts_sent,
        after.resets - before.resets,
        if got == want { "OK" } else { "MISMATCH" }
    );
    if got != want {
        return Err("data wrong after aborts".into());
    }
    if after.aborts_sent == before.aborts_sent {
        return Err("no command timed out: the Abort path was not exercised".into());
    }
    if after.resets != before.resets
        || matches!(first, Err(ref e) if !matches!(e, nvme_direct::Error::Aborted { .. }))
    {
        return Err(format!(
            "the Abort did not recover without a reset ({outcome})"
        ));
    }
    Ok(())
}

/// Reads the image into a buffer that must be made of 2 MiB pages and one that must not.
fn hugepage_suite(
    c: &mut Ctrl,
    ns: &NamespaceIdentity,
    image_bytes: usize,
    want: &str,
) -> Result<(), String> {
    let before = meminfo("HugePages_Free");
    let huge_dma = c.memory().clone().with_huge_pages(HugePages::Required);
    let mut hb = huge_dma
        .alloc(image_bytes)
        .map_err(|e| format!("2 MiB-page buffer: {e}"))?;
    let taken = before.saturating_sub(meminfo("HugePages_Free"));
    if !hb.is_huge() || taken * (2 << 20) < image_bytes as u64 {
        return Err(format!(
            "buffer not on huge pages (is_huge {}, {taken} pages taken)",
            hb.is_huge()
        ));
    }
    let mbs = read_checked(c, ns, &mut hb, image_bytes, 32, 0, want)?;
    println!("RESULT-LINE driver read qd=32 into 2 MiB hugetlb pages ({taken} pages taken from HugePages_Free {before}): {mbs:.1} MB/s sha256 OK");
    let small_dma = c.memory().clone().with_huge_pages(HugePages::Off);
    let mut sb = small_dma.alloc(image_bytes).map_err(|e| e.to_string())?;
    if sb.is_huge() {
        return Err("HugePages::Off buffer reports huge pages".into());
    }
    let mbs = read_checked(c, ns, &mut sb, image_bytes, 32, 0, want)?;
    println!("RESULT-LINE driver read qd=32 into 4 KiB pages: {mbs:.1} MB/s sha256 OK");
    Ok(())
}

/// `ExtentReader::read_at` of the whole image (raw at LBA 0) into caller memory, 3 passes
/// each: a page-aligned destination (mapped for the device: DMA straight in) and one a byte
/// off (the reader's DMA buffer plus a copy); MB/s and the SHA-256 of each.
fn file_reader_suite(bdf: &str, image_bytes: usize, want: &str) -> Result<(), String> {
    let (bar, dma) = VfioDevice::open(bdf)
        .map_err(|e| e.to_string())?
        .into_parts();
    let c = Controller::new(bar, dma, Config::default()).map_err(|e| e.to_string())?;
    let mut r = ExtentReader::new(c, 1, FileLocation::Raw(0), image_bytes as u64)
        .map_err(|e| e.to_string())?;
    let mut v = vec![0u8; image_bytes + 2 * 4096];
    let skew = (4096 - v.as_ptr() as usize % 4096) % 4096;
    for (name, at) in [
        ("page-aligned, DMA straight in", skew),
        ("unaligned, via the reader's DMA buffer + copy", skew + 1),
    ] {
        let dst = &mut v[at..at + image_bytes];
        dst.fill(0);
        let t = Instant::now();
        for _ in 0..3 {
            r.read_at(0, dst)
                .map_err(|e| format!("read_at ({name}): {e}"))?;
        }
        let s = t.elapsed().as_secs_f64() / 3.0;
        let got = hex(&Sha256::digest(&*dst));
        println!(
            "RESULT-LINE file reader read_at {name}: {:.1} MB/s ({image_bytes} bytes in {s:.3} s per pass) sha256 {}",
            image_bytes as f64 / s / 1e6,
            if got == want { "OK" } else { "MISMATCH" }
        );
        if got != want {
            return Err(format!("file reader ({name}): sha256 {got} != {want}"));
        }
    }
    r.controller().shutdown().map_err(|e| e.to_string())?;
    Ok(())
}

fn run() -> Result<(), String> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 5 {
        return Err("usage: qemu-guest-test BDF IMAGE_BYTES SHA256_HEX SCRATCH_LBA".into());
    }
    let bdf = &a[1];
    let image_bytes: usize = a[2].parse().map_err(|e| format!("IMAGE_BYTES: {e}"))?;
    let want = a[3].to_lowercase();
    let scratch_lba: u64 = a[4].parse().map_err(|e| format!("SCRATCH_LBA: {e}"))?;
    let hugepages = reserve_hugepages();
    if let Err(e) = iommufd_suite(bdf, image_bytes, &want, scratch_lba) {
        println!("error: {e}");
        println!("IOMMUFD-RESULT: FAIL");
    }
    file_reader_suite(bdf, image_bytes, &want)?;
    let dev = VfioDevice::open_with(
        bdf,
        VfioOptions {
            iommu: IommuMode::Type1,
            ..VfioOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    println!("vfio: IOMMU interface {}", dev.iommu_mode());
    let (w0, w1) = dev.iova_window();
    let ranges: Vec<String> = dev
        .iova_ranges()
        .iter()
        .map(|(a, b)| format!("{a:#x}-{b:#x}"))
        .collect();
    println!(
        "vfio: IOMMU valid IOVA ranges [{}]; DMA window {w0:#x}..{w1:#x}",
        ranges.join(", ")
    );
    let (bar, dma) = dev.into_parts();
    let conf = Config {
        io_queue_size: 256,
        io_queues: 2,
        ..Default::default()
    };
    let mut c = Controller::new(bar, dma, conf).map_err(|e| e.to_string())?;
    let id = c.identity().clone();
    println!(
        "identify: model '{}' serial '{}' fw '{}' mdts {} nn {} version {} mqes {} dstrd {}",
        id.model,
        id.serial,
        id.firmware,
        id.mdts,
        id.namespace_count,
        c.version(),
        c.capabilities().max_queue_entries,
        c.capabilities().doorbell_stride
    );
    let ns = c.namespace(1).map_err(|e| e.to_string())?;
    println!(
        "namespace 1: {} blocks of {} bytes",
        ns.size_blocks, ns.block_size
    );
    let bs = ns.block_size as usize;
    let blocks = (image_bytes / bs) as u64;
    for (qd, off) in [(1usize, 0usize), (8, 4), (32, 0), (64, 2048), (128, 0)] {
        let mut buf = c
            .memory()
            .alloc(image_bytes + off)
            .map_err(|e| e.to_string())?;
        // Three passes, like the kernel-driver measurement.
        let t = Instant::now();
        for _ in 0..3 {
            c.read(0, &ns, BlockRange { lba: 0, blocks }, &mut buf, off, qd)
                .map_err(|e| format!("read qd {qd}: {e}"))?;
        }
        let s = t.elapsed().as_secs_f64() / 3.0;
        let got = hex(&Sha256::digest(&buf.as_slice()[off..off + image_bytes]));
        println!(
            "RESULT-LINE driver read qd={qd} offset={off} (3 passes, {} pages): {:.1} MB/s ({image_bytes} bytes in {s:.3} s per pass) sha256 {}",
            if buf.is_huge() { "2 MiB" } else { "4 KiB" },
            image_bytes as f64 / s / 1e6,
            if got == want { "OK" } else { "MISMATCH" }
        );
        if got != want {
            return Err(format!(
                "sha256 mismatch at qd {qd} offset {off}: {got} != {want}"
            ));
        }
    }
    // Both I/O queues at once, one thread each, every thread reading half of the image.
    {
        let half = blocks / 2;
        let half_bytes = half as usize * bs;
        let mut halves = [
            c.memory().alloc(half_bytes).map_err(|e| e.to_string())?,
            c.memory().alloc(half_bytes).map_err(|e| e.to_string())?,
        ];
        let t = Instant::now();
        let nsr = &ns;
        let results: Vec<Result<(), String>> = std::thread::scope(|s| {
            let handles: Vec<_> = c
                .io_queues()
                .into_iter()
                .zip(halves.iter_mut())
                .enumerate()
                .map(|(i, (mut q, buf))| {
                    s.spawn(move || {
                        let r = BlockRange {
                            lba: i as u64 * half,
                            blocks: half,
                        };
                        q.read(nsr, r, buf, 0, 32).map_err(|e| e.to_string())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
                .collect()
        });
        let secs = t.elapsed().as_secs_f64();
        for r in results {
            r?;
        }
        let mut h = Sha256::new();
        h.update(&halves[0].as_slice()[..half_bytes]);
        h.update(&halves[1].as_slice()[..half_bytes]);
        let mut whole = c
            .memory()
            .alloc(2 * half_bytes)
            .map_err(|e| e.to_string())?;
        c.read(
            0,
            &ns,
            BlockRange {
                lba: 0,
                blocks: 2 * half,
            },
            &mut whole,
            0,
            32,
        )
        .map_err(|e| e.to_string())?;
        let ok = h.finalize()[..] == Sha256::digest(&whole.as_slice()[..2 * half_bytes])[..];
        println!(
            "RESULT-LINE driver read 2 threads x 1 queue each, qd=32: {:.1} MB/s, bytes {}",
            (2 * half_bytes) as f64 / secs / 1e6,
            if ok { "OK" } else { "MISMATCH" }
        );
        if !ok {
            return Err("two-thread read differs from a single-queue read".into());
        }
    }
    // Second queue, a smaller unaligned read checked against the first queue's bytes.
    let mut a1 = c.memory().alloc(1 << 20).map_err(|e| e.to_string())?;
    let mut a2 = c.memory().alloc((1 << 20) + 8).map_err(|e| e.to_string())?;
    let n = ((1 << 20) / bs) as u64;
    c.read(
        0,
        &ns,
        BlockRange {
            lba: 3,
            blocks: n.min(blocks - 3),
        },
        &mut a1,
        0,
        4,
    )
    .map_err(|e| e.to_string())?;
    c.read(
        1,
        &ns,
        BlockRange {
            lba: 3,
            blocks: n.min(blocks - 3),
        },
        &mut a2,
        8,
        4,
    )
    .map_err(|e| e.to_string())?;
    let len = (n.min(blocks - 3) as usize) * bs;
    if a1.as_slice()[..len] != a2.as_slice()[8..8 + len] {
        return Err("queue 2 read differs from queue 1".into());
    }
    // Write + read back on the scratch region.
    let wlen = 1 << 20;
    let mut w = c.memory().alloc(wlen).map_err(|e| e.to_string())?;
    let pattern: Vec<u8> = (0..wlen).map(|i| (i * 7 + i / 4096) as u8).collect();
    w.write_bytes(0, &pattern).map_err(|e| e.to_string())?;
    let wr = BlockRange {
        lba: scratch_lba,
        blocks: (wlen / bs) as u64,
    };
    let t = Instant::now();
    c.write(0, &ns, wr, &mut w, 0, 32)
        .map_err(|e| format!("write: {e}"))?;
    println!(
        "RESULT-LINE driver write qd=32: {:.1} MB/s",
        wlen as f64 / t.elapsed().as_secs_f64() / 1e6
    );
    let mut r = c.memory().alloc(wlen).map_err(|e| e.to_string())?;
    c.read(0, &ns, wr, &mut r, 0, 32)
        .map_err(|e| format!("read back: {e}"))?;
    if r.as_slice()[..wlen] != pattern[..] {
        return Err("write/read-back mismatch".into());
    }
    println!("write+read-back of {wlen} bytes at LBA {scratch_lba}: OK");
    match abort_suite(&mut c, &ns, image_bytes, &want) {
        Ok(()) => println!("ABORT-RESULT: PASS"),
        Err(e) => println!("error: {e}\nABORT-RESULT: FAIL"),
    }
    if hugepages.is_some() {
        match hugepage_suite(&mut c, &ns, image_bytes, &want) {
            Ok(()) => println!("HUGEPAGE-RESULT: PASS"),
            Err(e) => println!("error: {e}\nHUGEPAGE-RESULT: FAIL"),
        }
    } else {
        println!("HUGEPAGE-RESULT: SKIPPED (no nvt.hugepages= on the kernel command line)");
    }
    c.shutdown().map_err(|e| e.to_string())?;
    println!("shutdown: OK");
    Ok(())
}

/// Saves the LBA extents of a file on a mounted filesystem as "logical lba blocks" lines.
fn save_extents(file: &str, out: &str) -> Result<(), String> {
    let path = std::path::Path::new(file);
    let ext = nvme_direct::extent::file_extents(path).map_err(|e| e.to_string())?;
    let part = nvme_direct::extent::partition_start(path).map_err(|e| e.to_string())?;
    let lbas = nvme_direct::extent::to_lba_extents(&ext, part, 512).map_err(|e| e.to_string())?;
    let text: String = lbas
        .iter()
        .map(|e| format!("{} {} {}\n", e.logical, e.lba, e.blocks))
        .collect();
    std::fs::write(out, text).map_err(|e| e.to_string())?;
    println!(
        "extents: {} of {file} (partition offset {part}) saved to {out}",
        lbas.len()
    );
    Ok(())
}

/// Reads the saved extents through the driver and checks the file's SHA-256.
fn read_extents(bdf: &str, list: &str, want: &str, len: usize) -> Result<(), String> {
    let text = std::fs::read_to_string(list).map_err(|e| e.to_string())?;
    let mut ranges = Vec::new();
    for line in text.lines() {
        let f: Vec<u64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [logical, lba, blocks] = f[..] {
            ranges.push((logical, BlockRange { lba, blocks }));
        }
    }
    let (bar, dma) = VfioDevice::open(bdf)
        .map_err(|e| e.to_string())?
        .into_parts();
    let mut c = Controller::new(bar, dma, Config::default()).map_err(|e| e.to_string())?;
    let ns = c.namespace(1).map_err(|e| e.to_string())?;
    let bs = u64::from(ns.block_size);
    let total = ranges
        .iter()
        .map(|(l, r)| l + r.blocks * bs)
        .max()
        .unwrap_or(0);
    let mut buf = c
        .memory()
        .alloc((total as usize).max(len))
        .map_err(|e| e.to_string())?;
    for (logical, r) in &ranges {
        c.read(0, &ns, *r, &mut buf, *logical as usize, 32)
            .map_err(|e| format!("extent read: {e}"))?;
    }
    let got = hex(&Sha256::digest(&buf.as_slice()[..len]));
    c.shutdown().map_err(|e| e.to_string())?;
    if got != want.to_lowercase() {
        return Err(format!(
            "file read through its extents: sha256 {got} != {want}"
        ));
    }
    println!(
        "extents: {} ranges read raw through vfio, sha256 of the {len}-byte file OK",
        ranges.len()
    );
    Ok(())
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let mode = a.get(1).map(String::as_str);
    if mode == Some("extents") || mode == Some("read-extents") {
        let r = match (mode, a.len()) {
            (Some("extents"), 4) => save_extents(&a[2], &a[3]),
            (Some("read-extents"), 6) => a[5]
                .parse()
                .map_err(|e| format!("FILE_LEN: {e}"))
                .and_then(|len| read_extents(&a[2], &a[3], &a[4], len)),
            _ => Err("bad extent arguments".into()),
        };
        match r {
            Ok(()) => println!("EXTENT-RESULT: PASS"),
            Err(e) => {
                println!("error: {e}");
                println!("EXTENT-RESULT: FAIL");
                std::process::exit(1);
            }
        }
        return;
    }
    match run() {
        Ok(()) => println!("NVME-DIRECT-GUEST-RESULT: PASS"),
        Err(e) => {
            println!("error: {e}");
            println!("NVME-DIRECT-GUEST-RESULT: FAIL");
            std::process::exit(1);
        }
    }
}
