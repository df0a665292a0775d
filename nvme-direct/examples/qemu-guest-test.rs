//! Driver test run inside the QEMU guest (see scripts/qemu-nvme-test.sh): identify, whole-image
//! reads at several queue depths and buffer offsets checked against a known SHA-256, a
//! write + read-back on a scratch region, throughput lines, and a final result marker.
//!
//! Usage: `qemu-guest-test BDF IMAGE_BYTES SHA256_HEX SCRATCH_LBA`

use std::time::Instant;

use nvme_direct::vfio::VfioDevice;
use nvme_direct::{BlockRange, Config, Controller, DmaBuffer, DmaMemory};
use sha2::{Digest, Sha256};

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
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
    let dev = VfioDevice::open(bdf).map_err(|e| e.to_string())?;
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
        let t = Instant::now();
        c.read(0, &ns, BlockRange { lba: 0, blocks }, &mut buf, off, qd)
            .map_err(|e| format!("read qd {qd}: {e}"))?;
        let s = t.elapsed().as_secs_f64();
        let got = hex(&Sha256::digest(&buf.as_slice()[off..off + image_bytes]));
        println!(
            "RESULT-LINE driver read qd={qd} offset={off}: {:.1} MB/s ({image_bytes} bytes in {s:.3} s) sha256 {}",
            image_bytes as f64 / s / 1e6,
            if got == want { "OK" } else { "MISMATCH" }
        );
        if got != want {
            return Err(format!(
                "sha256 mismatch at qd {qd} offset {off}: {got} != {want}"
            ));
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
    c.shutdown().map_err(|e| e.to_string())?;
    println!("shutdown: OK");
    Ok(())
}

fn main() {
    match run() {
        Ok(()) => println!("NVME-DIRECT-GUEST-RESULT: PASS"),
        Err(e) => {
            println!("error: {e}");
            println!("NVME-DIRECT-GUEST-RESULT: FAIL");
            std::process::exit(1);
        }
    }
}
