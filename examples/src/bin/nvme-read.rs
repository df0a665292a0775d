//! Read blocks (or a file's extents) from an NVMe namespace with the userspace VFIO driver.
//!
//! ```text
//! nvme-read --pci 0000:01:00.0 --lba 0 --blocks 2048 --qd 32 --out first-mib.bin
//! # while the filesystem is mounted (kernel nvme driver): save where a file lies
//! nvme-read --extents-of /mnt/model.gguf --save-extents model.extents
//! # after unmounting and binding the controller to vfio-pci: read it raw
//! nvme-read --pci 0000:01:00.0 --extents-of model.extents --out model.gguf
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use nvme_direct::extent::LbaExtent;
use nvme_direct::vfio::VfioDevice;
use nvme_direct::{BlockRange, Config, Controller, DmaMemory, ExtentList};

#[derive(Parser, Debug)]
#[command(about = "Read an LBA range or a file's extents through the nvme-direct VFIO driver")]
struct Args {
    /// PCI address of the controller bound to vfio-pci, e.g. 0000:01:00.0.
    #[arg(long)]
    pci: Option<String>,
    /// Namespace id.
    #[arg(long, default_value_t = 1)]
    nsid: u32,
    /// First logical block to read.
    #[arg(long, requires = "blocks", conflicts_with = "extents_of")]
    lba: Option<u64>,
    /// Number of blocks to read.
    #[arg(long, requires = "lba")]
    blocks: Option<u64>,
    /// A file on a mounted filesystem (FIEMAP now) or a saved `.extents` list.
    #[arg(long)]
    extents_of: Option<PathBuf>,
    /// With --extents-of FILE: write the extent list here and exit (no device access).
    #[arg(long, requires = "extents_of")]
    save_extents: Option<PathBuf>,
    /// Logical block size assumed when saving extents.
    #[arg(long, default_value_t = 512)]
    block_size: u32,
    /// Write the bytes read here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Commands in flight.
    #[arg(long, default_value_t = 32)]
    qd: usize,
}

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Extents and file length, from FIEMAP or from a saved `.extents` list.
fn load_extents(path: &Path, block_size: u32) -> AnyResult<(Vec<LbaExtent>, u64)> {
    if path.extension().is_some_and(|e| e == "extents") {
        let list = ExtentList::load(path)?;
        let len = match list.file_len {
            Some(len) => len,
            None => list
                .extents
                .iter()
                .map(|e| e.logical + e.blocks * u64::from(block_size))
                .max()
                .unwrap_or(0),
        };
        return Ok((list.extents, len));
    }
    let list = ExtentList::of_mounted_file(path, block_size)?;
    Ok((list.extents, list.file_len.unwrap_or(0)))
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(a: Args) -> AnyResult<()> {
    let extents = match &a.extents_of {
        Some(p) => Some(load_extents(p, a.block_size)?),
        None => None,
    };
    if let (Some(save), Some((ext, len))) = (&a.save_extents, &extents) {
        ExtentList {
            file_len: Some(*len),
            extents: ext.clone(),
        }
        .save(save)?;
        println!(
            "saved {} extents ({len} bytes, {}-byte blocks) to {}",
            ext.len(),
            a.block_size,
            save.display()
        );
        return Ok(());
    }
    let pci = a.pci.as_deref().ok_or("--pci BDF is required to read")?;
    let (bar, dma) =
        VfioDevice::open_with(pci, vramless_engine::vfio_options_from_env()?)?.into_parts();
    let mut c = Controller::new(
        bar,
        dma,
        Config {
            io_queue_size: 256,
            ..Config::default()
        },
    )?;
    let id = c.identity().clone();
    println!(
        "controller: {} (serial {}, firmware {}), NVMe {}, MDTS {} -> {} KiB per command, {} namespaces",
        id.model,
        id.serial,
        id.firmware,
        c.version(),
        id.mdts,
        c.max_transfer_bytes() / 1024,
        id.namespace_count
    );
    let ns = c.namespace(a.nsid)?;
    println!(
        "namespace {}: {} blocks of {} bytes (LBA format {}), {:.2} GB",
        ns.nsid,
        ns.size_blocks,
        ns.block_size,
        ns.lba_format_index,
        ns.size_blocks as f64 * f64::from(ns.block_size) / 1e9
    );
    let bs = u64::from(ns.block_size);
    let (ranges, out_len): (Vec<(u64, BlockRange)>, u64) = match (&extents, a.lba, a.blocks) {
        (Some((ext, len)), _, _) => {
            if a.block_size != ns.block_size {
                return Err(format!(
                    "extents were computed for {}-byte blocks, namespace has {}",
                    a.block_size, ns.block_size
                )
                .into());
            }
            (
                ext.iter()
                    .map(|e| {
                        (
                            e.logical,
                            BlockRange {
                                lba: e.lba,
                                blocks: e.blocks,
                            },
                        )
                    })
                    .collect(),
                *len,
            )
        }
        (None, Some(lba), Some(blocks)) => (vec![(0, BlockRange { lba, blocks })], blocks * bs),
        _ => return Err("give --lba L --blocks B or --extents-of FILE".into()),
    };
    let total = ranges
        .iter()
        .map(|(l, r)| l + r.blocks * bs)
        .max()
        .unwrap_or(0);
    let mut buf = c.memory().alloc(usize::try_from(total)?)?;
    let t = Instant::now();
    let mut bytes = 0u64;
    for (logical, r) in &ranges {
        c.read(0, &ns, *r, &mut buf, usize::try_from(*logical)?, a.qd)?;
        bytes += r.blocks * bs;
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "read {bytes} bytes in {} range(s) at queue depth {}: {s:.3} s, {:.1} MB/s",
        ranges.len(),
        a.qd,
        bytes as f64 / s / 1e6
    );
    if let Some(out) = &a.out {
        let n = usize::try_from(out_len.min(total))?;
        std::fs::write(out, &buf.as_slice()[..n])?;
        println!("wrote {n} bytes to {}", out.display());
    }
    c.shutdown()?;
    Ok(())
}
