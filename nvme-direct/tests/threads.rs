//! Per-thread I/O queue handles and bounded bring-up against the emulated controller.

use std::time::Duration;

use nvme_direct::emu::{EmuConfig, Emulator, Fault};
use nvme_direct::{BlockRange, Config, Controller, DmaBuffer, DmaMemory, Error};

fn image(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64 * 2654435761) >> 13) as u8)
        .collect()
}

#[test]
fn one_queue_per_thread_reads_its_quarter() {
    let img = image(4 << 20);
    let emu = Emulator::new(
        EmuConfig {
            deferred: true,
            ..Default::default()
        },
        img.clone(),
    );
    let conf = Config {
        io_queues: 4,
        io_queue_size: 64,
        max_transfer: 64 << 10,
        ..Default::default()
    };
    let mut c = Controller::new(emu.clone(), emu.clone(), conf).unwrap();
    let ns = c.namespace(1).unwrap();
    let quarter = ns.size_blocks / 4;
    let mut bufs: Vec<_> = (0..4)
        .map(|_| c.memory().alloc(img.len() / 4).unwrap())
        .collect();
    let mut queues = c.io_queues();
    assert_eq!(queues.len(), 4);
    let ns = &ns;
    std::thread::scope(|s| {
        for (i, (q, buf)) in queues.iter_mut().zip(bufs.iter_mut()).enumerate() {
            s.spawn(move || {
                let r = BlockRange {
                    lba: i as u64 * quarter,
                    blocks: quarter,
                };
                q.read(ns, r, buf, 0, 16).unwrap();
            });
        }
    });
    drop(queues);
    for (i, buf) in bufs.iter().enumerate() {
        let mut got = vec![0u8; img.len() / 4];
        buf.read_bytes(0, &mut got).unwrap();
        assert!(
            got[..] == img[i * img.len() / 4..(i + 1) * img.len() / 4],
            "quarter {i}"
        );
    }
}

#[test]
fn handle_timeout_disables_then_controller_resets_on_next_use() {
    let img = image(256 << 10);
    let emu = Emulator::new(EmuConfig::default(), img.clone());
    let conf = Config {
        io_queues: 2,
        command_timeout: Duration::from_millis(100),
        ..Default::default()
    };
    let mut c = Controller::new(emu.clone(), emu.clone(), conf).unwrap();
    let ns = c.namespace(1).unwrap();
    let enables = emu.stats().enables;
    let mut buf = c.memory().alloc(img.len()).unwrap();
    emu.inject(0, Fault::DropCompletion);
    {
        let mut qs = c.io_queues();
        let r = qs[1].read(&ns, BlockRange { lba: 0, blocks: 8 }, &mut buf, 0, 4);
        assert!(matches!(r, Err(Error::Timeout { qid: 2, .. })), "{r:?}");
        // The other handle refuses work until the controller is reset.
        let r = qs[0].read(&ns, BlockRange { lba: 0, blocks: 8 }, &mut buf, 0, 4);
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    }
    c.read(
        0,
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
    assert_eq!(emu.stats().enables, enables + 1);
    let mut got = vec![0u8; img.len()];
    buf.read_bytes(0, &mut got).unwrap();
    assert!(got == img);
}

#[test]
fn controller_that_never_becomes_ready_times_out_per_cap_to() {
    let emu = Emulator::new(
        EmuConfig {
            ready_delay_reads: u32::MAX,
            timeout_units: 1,
            ..Default::default()
        },
        image(64 << 10),
    );
    // Returning at all shows the wait is bounded (by CAP.TO = 500 ms here).
    let r = Controller::new(emu.clone(), emu, Config::default());
    assert!(
        matches!(r, Err(Error::ReadyTimeout { .. })),
        "{:?}",
        r.err()
    );
}
