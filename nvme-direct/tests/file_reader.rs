//! Reading a file by offset through its extents, over the emulated controller: the bytes must be
//! the namespace image's bytes at the extents (assembled here by plain slicing).

use nvme_direct::emu::{EmuConfig, Emulator};
use nvme_direct::extent::LbaExtent;
use nvme_direct::{Config, Controller, Error, ExtentList, ExtentReader, FileLocation};

/// Deterministic pseudo-random bytes (xorshift64*).
fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

const BS: u64 = 512;

/// The file the extents describe, taken straight from the image (holes are zeros).
fn expected(img: &[u8], extents: &[LbaExtent], file_len: u64) -> Vec<u8> {
    let mut out = vec![0u8; file_len as usize];
    for e in extents {
        let src = (e.lba * BS) as usize;
        let len = ((e.blocks * BS) as usize).min(file_len as usize - e.logical as usize);
        out[e.logical as usize..e.logical as usize + len].copy_from_slice(&img[src..src + len]);
    }
    out
}

fn reader(img: &[u8], loc: FileLocation, file_len: u64) -> ExtentReader<Emulator, Emulator> {
    let emu = Emulator::new(
        EmuConfig {
            block_size: BS as u32,
            ..EmuConfig::default()
        },
        img.to_vec(),
    );
    let ctrl = Controller::new(emu.clone(), emu, Config::default()).expect("bring-up");
    ExtentReader::new(ctrl, 1, loc, file_len).expect("reader")
}

#[test]
fn scattered_extents_read_back_as_the_file() {
    let img = image(32 << 20, 7);
    // Out of LBA order, a hole between 6 MiB and 6 MiB + 4 KiB, a short last extent.
    let extents = vec![
        LbaExtent {
            logical: 0,
            lba: 30_000,
            blocks: 4096,
        },
        LbaExtent {
            logical: 2 << 20,
            lba: 100,
            blocks: 8192,
        },
        LbaExtent {
            logical: (6 << 20) + 4096,
            lba: 20_000,
            blocks: 8,
        },
        LbaExtent {
            logical: (6 << 20) + 8192,
            lba: 40_000,
            blocks: 17_000,
        },
    ];
    let file_len = (6 << 20) + 8192 + 17_000 * BS - 300;
    let want = expected(&img, &extents, file_len);
    let mut r = reader(&img, FileLocation::Extents(extents.clone()), file_len);
    assert_eq!(r.block_size(), BS);
    assert_eq!(r.file_len(), file_len);
    // Whole file in one call (crosses the 8 MiB chunk, every extent and the hole).
    let mut all = vec![0xffu8; file_len as usize];
    r.read_at(0, &mut all).unwrap();
    assert!(all == want, "whole-file read differs from the image");
    // Pieces starting at block boundaries inside extents, across boundaries and in the hole.
    let mut checked = 0;
    for (off, len) in [
        (0u64, 512usize),
        (BS * 3, 5000),
        ((2 << 20) - BS, 4 * 512 + 17),
        (6 << 20, 4096),
        ((6 << 20) - 1024, 10_000),
        (file_len / BS * BS, (file_len % BS) as usize),
    ] {
        let mut got = vec![0xeeu8; len];
        r.read_at(off, &mut got).unwrap();
        assert!(
            got[..] == want[off as usize..off as usize + len],
            "read of {len} bytes at {off} differs"
        );
        checked += 1;
    }
    assert_eq!(checked, 6);
}

#[test]
fn raw_location_reads_from_its_lba() {
    let img = image(4 << 20, 9);
    let file_len = (1 << 20) + 100;
    let mut r = reader(&img, FileLocation::Raw(2048), file_len);
    let mut got = vec![0u8; file_len as usize];
    r.read_at(0, &mut got).unwrap();
    let start = 2048 * BS as usize;
    assert!(got[..] == img[start..start + file_len as usize]);
}

#[test]
fn bad_offsets_are_typed_errors() {
    let img = image(1 << 20, 3);
    let mut r = reader(&img, FileLocation::Raw(0), 10_000);
    let mut buf = vec![0u8; 512];
    assert!(matches!(
        r.read_at(100, &mut buf),
        Err(Error::InvalidArgument(_))
    ));
    // The last block may be read whole (10_240 bytes), not one byte more.
    let mut tail = vec![0u8; 10_240 - 9728];
    r.read_at(9728, &mut tail).unwrap();
    let mut over = vec![0u8; 1024];
    assert!(matches!(
        r.read_at(9728, &mut over),
        Err(Error::PastEnd {
            file_len: 10_000,
            ..
        })
    ));
    assert!(matches!(
        r.read_at(u64::MAX / BS * BS, &mut buf),
        Err(Error::PastEnd { .. })
    ));
}

#[test]
fn hostile_extents_do_not_panic() {
    let img = image(1 << 20, 5);
    let extents = vec![
        LbaExtent {
            logical: u64::MAX - 10,
            lba: 0,
            blocks: u64::MAX,
        },
        LbaExtent {
            logical: 0,
            lba: u64::MAX,
            blocks: 2,
        },
    ];
    // Overflowing ends and an extent past the namespace are refused when the reader is made,
    // before any LBA is computed from them.
    let emu = Emulator::new(
        EmuConfig {
            block_size: BS as u32,
            ..EmuConfig::default()
        },
        img.to_vec(),
    );
    let ctrl = Controller::new(emu.clone(), emu, Config::default()).expect("bring-up");
    match ExtentReader::new(ctrl, 1, FileLocation::Extents(extents), 4096) {
        Err(Error::BadExtent { .. }) => {}
        other => panic!(
            "hostile extents must be a BadExtent error, got {:?}",
            other.err()
        ),
    }
}

#[test]
fn extent_list_file_round_trips() {
    let dir = std::env::temp_dir().join(format!("nvme-direct-extlist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("model.gguf");
    std::fs::write(&model, b"not really a model").unwrap();
    let list = ExtentList {
        file_len: Some(18),
        extents: vec![LbaExtent {
            logical: 0,
            lba: 77,
            blocks: 1,
        }],
    };
    let side = ExtentList::sidecar_path(&model);
    assert_eq!(side, dir.join("model.gguf.extents"));
    list.save(&side).unwrap();
    assert_eq!(ExtentList::for_file(&model, 512).unwrap(), list);
    std::fs::write(&side, "0 1\n").unwrap();
    match ExtentList::load(&side) {
        Err(Error::ExtentsFile { line: 1, reason }) => {
            assert!(reason.contains("model.gguf.extents"), "{reason}")
        }
        other => panic!("expected a line-1 error naming the file, got {other:?}"),
    }
    assert!(matches!(
        ExtentList::load(&dir.join("missing.extents")),
        Err(Error::Sys { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}
