//! Brings up `vramless-nvme-direct`'s emulated controller over a known image, reads the whole
//! namespace with the driver, then a file scattered over it by its extents, and checks every
//! byte against the image. Exit 0 when all bytes agree.

use std::process::ExitCode;

use nvme_direct::emu::{EmuConfig, Emulator};
use nvme_direct::extent::LbaExtent;
use nvme_direct::{
    BlockRange, Config, Controller, DmaBuffer, DmaMemory, ExtentList, ExtentReader, FileLocation,
};

const BLOCK: u64 = 512;

fn image(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let img = image(4 << 20);
    let emu = Emulator::new(
        EmuConfig {
            block_size: BLOCK as u32,
            ..EmuConfig::default()
        },
        img.clone(),
    );
    let mut ctrl = Controller::new(emu.clone(), emu.clone(), Config::default())?;
    let ns = ctrl.namespace(1)?;
    println!(
        "{}: namespace 1, {} blocks of {} bytes",
        ctrl.identity().model,
        ns.size_blocks,
        ns.block_size
    );
    let mut buf = ctrl.memory().alloc(img.len())?;
    ctrl.read(
        0,
        &ns,
        BlockRange {
            lba: 0,
            blocks: ns.size_blocks,
        },
        &mut buf,
        0,
        16,
    )?;
    let mut whole = vec![0u8; img.len()];
    buf.read_bytes(0, &mut whole)?;
    if whole != img {
        return Err("the namespace read back differs from the image".into());
    }
    println!(
        "read the whole namespace ({} bytes): equal to the image",
        img.len()
    );

    // A 1 MiB + 123-byte file in three extents, listed in a .extents text as a user saves it.
    let list =
        ExtentList::parse("# file_len 1048699\n0 6000 1024\n524288 100 600\n831488 3000 600\n")?;
    let len = list.file_len.ok_or("no file_len")?;
    let mut want = Vec::new();
    for e in &list.extents {
        let n = ((e.blocks * BLOCK).min(len - e.logical)) as usize;
        let at = (e.lba * BLOCK) as usize;
        want.extend_from_slice(&img[at..at + n]);
    }
    let extents: Vec<LbaExtent> = list.extents.clone();
    let mut reader = ExtentReader::new(ctrl, 1, FileLocation::Extents(extents), len)?;
    let mut got = vec![0u8; len as usize];
    reader.read_at(0, &mut got)?;
    if got != want {
        return Err("the file read by its extents differs from the image at those extents".into());
    }
    println!(
        "read a {len}-byte file by its {} extents: equal to the image",
        list.extents.len()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("consumer-nvme-emulator: error: {e}");
            ExitCode::FAILURE
        }
    }
}
