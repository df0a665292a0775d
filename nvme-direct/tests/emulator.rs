//! The real driver logic against the in-process emulated controller.

use std::time::Duration;

use nvme_direct::emu::{EmuConfig, Emulator, Fault};
use nvme_direct::{BlockRange, Config, Controller, DmaBuffer, DmaMemory, Error};

/// Deterministic pseudo-random bytes (xorshift64*), the "known image".
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

fn setup(
    emu_cfg: EmuConfig,
    img_len: usize,
    cfg: Config,
) -> (Emulator, Controller<Emulator, Emulator>, Vec<u8>) {
    let img = image(img_len, 0x1234_5678);
    let emu = Emulator::new(emu_cfg, img.clone());
    let ctrl = Controller::new(emu.clone(), emu.clone(), cfg).expect("bring-up");
    (emu, ctrl, img)
}

fn read_back(buf: &impl DmaBuffer, off: usize, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    buf.read_bytes(off, &mut v).unwrap();
    v
}

#[test]
fn bring_up_reports_identity_and_namespace() {
    let cfg = EmuConfig {
        mdts: 3,
        block_size: 4096,
        ..Default::default()
    };
    let (_e, mut c, img) = setup(cfg, 1 << 20, Config::default());
    assert_eq!(c.identity().model, "vramless emulated NVMe");
    assert_eq!(c.identity().serial, "EMU0001");
    assert_eq!(c.identity().mdts, 3);
    assert_eq!(c.identity().namespace_count, 1);
    assert_eq!(c.max_transfer_bytes(), 4096 << 3);
    assert_eq!(c.version().to_string(), "1.4.0");
    let ns = c.namespace(1).unwrap();
    assert_eq!(ns.block_size, 4096);
    assert_eq!(ns.size_blocks, (img.len() / 4096) as u64);
    assert!(matches!(c.namespace(2), Err(Error::InvalidArgument(_))));
}

#[test]
fn whole_image_reads_at_several_depths_and_offsets() {
    let (_e, mut c, img) = setup(EmuConfig::default(), 3 << 20, Config::default());
    let ns = c.namespace(1).unwrap();
    for (qd, off) in [(1usize, 0usize), (4, 4), (32, 512), (255, 4092)] {
        let mut buf = c.memory().alloc(img.len() + off).unwrap();
        let range = BlockRange {
            lba: 0,
            blocks: ns.size_blocks,
        };
        c.read(0, &ns, range, &mut buf, off, qd).unwrap();
        assert!(
            read_back(&buf, off, img.len()) == img,
            "qd {qd} offset {off}"
        );
    }
}

#[test]
fn writes_then_reads_back() {
    let (e, mut c, mut img) = setup(EmuConfig::default(), 1 << 20, Config::default());
    let ns = c.namespace(1).unwrap();
    let data = image(64 * 512, 99);
    let mut buf = c.memory().alloc(data.len() + 8).unwrap();
    buf.write_bytes(8, &data).unwrap();
    c.write(
        0,
        &ns,
        BlockRange {
            lba: 100,
            blocks: 64,
        },
        &mut buf,
        8,
        8,
    )
    .unwrap();
    img[100 * 512..164 * 512].copy_from_slice(&data);
    assert!(e.image() == img);
    let mut rb = c.memory().alloc(data.len()).unwrap();
    c.read(
        0,
        &ns,
        BlockRange {
            lba: 100,
            blocks: 64,
        },
        &mut rb,
        0,
        8,
    )
    .unwrap();
    assert!(read_back(&rb, 0, data.len()) == data);
}

#[test]
fn mdts_splitting_counts_commands() {
    // MDTS 1 = 8 KiB per command; the emulator rejects anything larger.
    let cfg = EmuConfig {
        mdts: 1,
        ..Default::default()
    };
    let (e, mut c, img) = setup(cfg, 1 << 20, Config::default());
    let ns = c.namespace(1).unwrap();
    let before = e.stats().io_commands;
    let mut buf = c.memory().alloc(1 << 20).unwrap();
    c.read(
        0,
        &ns,
        BlockRange {
            lba: 0,
            blocks: 2048,
        },
        &mut buf,
        0,
        16,
    )
    .unwrap();
    assert_eq!(e.stats().io_commands - before, (1 << 20) / 8192);
    assert!(read_back(&buf, 0, img.len()) == img);
}

#[test]
fn splits_at_65536_blocks_and_chains_prp_lists() {
    // No MDTS and a big config bound: the NLB limit (65536 blocks) and chained lists apply.
    let cfg = EmuConfig {
        mdts: 0,
        ..Default::default()
    };
    let conf = Config {
        max_transfer: 64 << 20,
        io_queue_size: 8,
        ..Default::default()
    };
    let blocks = 70_000u64;
    let (e, mut c, img) = setup(cfg, blocks as usize * 512, conf);
    let ns = c.namespace(1).unwrap();
    assert_eq!(c.blocks_per_command(&ns), 65536);
    let before = e.stats().io_commands;
    let mut buf = c.memory().alloc(img.len() + 4).unwrap();
    c.read(0, &ns, BlockRange { lba: 0, blocks }, &mut buf, 4, 4)
        .unwrap();
    assert_eq!(e.stats().io_commands - before, 2);
    // 32 MiB in one command = 8193 pages: 17 chained list pages.
    assert!(e.stats().max_prp_list_pages >= 17, "{:?}", e.stats());
    assert!(read_back(&buf, 4, img.len()) == img);
}

#[test]
fn small_queue_wraps_and_flips_phase() {
    let conf = Config {
        io_queue_size: 4,
        max_transfer: 4096,
        ..Default::default()
    };
    let (e, mut c, img) = setup(EmuConfig::default(), 256 << 10, conf);
    let ns = c.namespace(1).unwrap();
    let mut buf = c.memory().alloc(img.len()).unwrap();
    c.read(
        0,
        &ns,
        BlockRange {
            lba: 0,
            blocks: ns.size_blocks,
        },
        &mut buf,
        0,
        64,
    )
    .unwrap();
    assert!(e.stats().phase_flips >= 10, "{:?}", e.stats());
    assert!(e.stats().max_outstanding <= 3);
    assert!(read_back(&buf, 0, img.len()) == img);
}

#[test]
fn deep_queue_keeps_many_commands_in_flight() {
    let conf = Config {
        io_queue_size: 128,
        max_transfer: 4096,
        ..Default::default()
    };
    let (e, mut c, img) = setup(
        EmuConfig {
            deferred: true,
            ..Default::default()
        },
        1 << 20,
        conf,
    );
    let ns = c.namespace(1).unwrap();
    let mut buf = c.memory().alloc(img.len()).unwrap();
    c.read(
        0,
        &ns,
        BlockRange {
            lba: 0,
            blocks: ns.size_blocks,
        },
        &mut buf,
        0,
        127,
    )
    .unwrap();
    assert_eq!(e.stats().max_outstanding, 127, "{:?}", e.stats());
    assert!(read_back(&buf, 0, img.len()) == img);
}

#[test]
fn several_queues_and_doorbell_stride() {
    let cfg = EmuConfig {
        dstrd: 2,
        max_io_queues: 3,
        ..Default::default()
    };
    let conf = Config {
        io_queues: 8,
        ..Default::default()
    };
    let (_e, mut c, img) = setup(cfg, 512 << 10, conf);
    assert_eq!(c.capabilities().doorbell_stride, 16);
    assert_eq!(c.io_queue_count(), 3);
    let ns = c.namespace(1).unwrap();
    for q in 0..3 {
        let mut buf = c.memory().alloc(img.len()).unwrap();
        c.read(
            q,
            &ns,
            BlockRange {
                lba: 0,
                blocks: ns.size_blocks,
            },
            &mut buf,
            0,
            8,
        )
        .unwrap();
        assert!(read_back(&buf, 0, img.len()) == img);
    }
    let mut buf = c.memory().alloc(4096).unwrap();
    assert!(matches!(
        c.read(3, &ns, BlockRange { lba: 0, blocks: 1 }, &mut buf, 0, 1),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn bad_arguments_are_errors() {
    let (_e, mut c, _img) = setup(EmuConfig::default(), 64 << 10, Config::default());
    let ns = c.namespace(1).unwrap();
    let mut buf = c.memory().alloc(4096).unwrap();
    let r = |lba, blocks| BlockRange { lba, blocks };
    assert!(matches!(
        c.read(0, &ns, r(0, 9), &mut buf, 0, 1),
        Err(Error::BufferRange(_))
    ));
    assert!(matches!(
        c.read(0, &ns, r(0, 1), &mut buf, 2, 1),
        Err(Error::BufferRange(_))
    ));
    assert!(matches!(
        c.read(0, &ns, r(128, 1), &mut buf, 0, 1),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.read(0, &ns, r(u64::MAX, 2), &mut buf, 0, 1),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.read(0, &ns, r(0, 0), &mut buf, 0, 1),
        Err(Error::InvalidArgument(_))
    ));
}

fn fault_setup() -> (Emulator, Controller<Emulator, Emulator>, Vec<u8>) {
    let conf = Config {
        command_timeout: Duration::from_millis(200),
        abort_timeout: Duration::from_millis(300),
        max_transfer: 8192,
        ..Default::default()
    };
    setup(EmuConfig::default(), 256 << 10, conf)
}

fn read_all(
    c: &mut Controller<Emulator, Emulator>,
    len: usize,
) -> (Result<(), Error>, nvme_direct::emu::EmuBuffer) {
    let ns = c.namespace(1).unwrap();
    let mut buf = c.memory().alloc(len).unwrap();
    let r = c.read(
        0,
        &ns,
        BlockRange {
            lba: 0,
            blocks: ns.size_blocks,
        },
        &mut buf,
        0,
        8,
    );
    (r, buf)
}

#[test]
fn error_status_is_typed() {
    let (e, mut c, img) = fault_setup();
    e.inject(
        3,
        Fault::Status {
            sct: 2,
            sc: 0x81,
            dnr: true,
            more: true,
        },
    );
    let (r, _) = read_all(&mut c, img.len());
    match r {
        Err(Error::Status {
            opcode: 0x02,
            qid: 1,
            status,
        }) => {
            assert_eq!(
                (status.sct, status.sc, status.dnr, status.more),
                (2, 0x81, true, true)
            );
            assert_eq!(status.describe(), "unrecovered read error");
        }
        other => panic!("expected a status error, got {other:?}"),
    }
    // The queue is still usable.
    let (r, buf) = read_all(&mut c, img.len());
    r.unwrap();
    assert!(read_back(&buf, 0, img.len()) == img);
}

/// A dropped completion: the controller answers the Abort with "not aborted" and the command
/// never completes, so after the abort grace period the controller is reset.
#[test]
fn dropped_completion_times_out_aborts_and_resets() {
    let (e, mut c, img) = fault_setup();
    let enables = e.stats().enables;
    e.inject(5, Fault::DropCompletion);
    let (r, _) = read_all(&mut c, img.len());
    assert!(
        matches!(
            r,
            Err(Error::Timeout {
                opcode: 0x02,
                qid: 1,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(e.stats().aborts, 1);
    assert_eq!(e.stats().enables, enables + 1, "controller was reset");
    let (r, buf) = read_all(&mut c, img.len());
    r.unwrap();
    assert!(read_back(&buf, 0, img.len()) == img);
}

#[test]
fn late_completion_within_timeout_succeeds() {
    let (e, mut c, img) = fault_setup();
    e.inject(2, Fault::LateCompletion { ticks: 50 });
    let (r, buf) = read_all(&mut c, img.len());
    r.unwrap();
    assert!(read_back(&buf, 0, img.len()) == img);
}

#[test]
fn late_completion_past_timeout_is_aborted() {
    let (e, mut c, img) = fault_setup();
    let enables = e.stats().enables;
    e.inject(0, Fault::LateCompletion { ticks: u32::MAX });
    let (r, _) = read_all(&mut c, img.len());
    // The Abort ends the pending command: a typed "aborted" error, no reset.
    assert!(matches!(r, Err(Error::Aborted { qid: 1, .. })), "{r:?}");
    assert_eq!(e.stats().aborted.len(), 1);
    assert_eq!(
        e.stats().enables,
        enables,
        "no reset after a successful abort"
    );
    let (r, buf) = read_all(&mut c, img.len());
    r.unwrap();
    assert!(read_back(&buf, 0, img.len()) == img);
    assert_eq!(e.stats().cid_conflicts, 0);
}

#[test]
fn wrong_command_id_is_detected_and_recovered() {
    let (e, mut c, img) = fault_setup();
    e.inject(1, Fault::WrongCommandId);
    let (r, _) = read_all(&mut c, img.len());
    assert!(
        matches!(r, Err(Error::UnexpectedCompletion { qid: 1, .. })),
        "{r:?}"
    );
    let (r, buf) = read_all(&mut c, img.len());
    r.unwrap();
    assert!(read_back(&buf, 0, img.len()) == img);
}

#[test]
fn controller_fatal_status_is_reported() {
    let (e, mut c, img) = fault_setup();
    e.inject(0, Fault::Fatal);
    let (r, _) = read_all(&mut c, img.len());
    assert!(matches!(r, Err(Error::ControllerFatal)), "{r:?}");
    // The reset cleared CFS: reads work again.
    let (r, _) = read_all(&mut c, img.len());
    r.unwrap();
}

#[test]
fn all_ones_registers_mean_device_gone() {
    let (e, mut c, img) = fault_setup();
    e.inject(0, Fault::AllOnes);
    let (r, _) = read_all(&mut c, img.len());
    assert!(matches!(r, Err(Error::DeviceGone { .. })), "{r:?}");
    let again = Controller::new(e.clone(), e.clone(), Config::default());
    assert!(matches!(again, Err(Error::DeviceGone { offset: 0 })));
}

#[test]
fn shutdown_completes() {
    let (_e, mut c, _img) = setup(EmuConfig::default(), 64 << 10, Config::default());
    c.shutdown().unwrap();
    c.shutdown().unwrap();
}
