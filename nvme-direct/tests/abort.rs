//! Per-command timeout -> NVMe Abort -> controller reset, against the emulated controller.
//!
//! 256 KiB image, 8 KiB per command (32 commands of 16 blocks), queue depth 8, command
//! timeout 200 ms. The emulator counts what a correct driver must never cause: a command id
//! reused while the controller still holds it (`cid_conflicts`) and device DMA to an address
//! that is not mapped (`unmapped_dma`, e.g. into a buffer the driver already released).

use std::time::{Duration, Instant};

use nvme_direct::emu::{EmuBuffer, EmuConfig, Emulator, Fault};
use nvme_direct::{BlockRange, Config, Controller, DmaBuffer, DmaMemory, Error};

const IMG: usize = 256 << 10;
const PER_CMD: usize = 8192;
const TIMEOUT: Duration = Duration::from_millis(200);

fn image(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 57) as u8 | 1)
        .collect()
}

fn setup(abort_ms: u64, deferred: bool, queues: u16) -> (Emulator, Controller<Emulator, Emulator>) {
    let emu = Emulator::new(
        EmuConfig {
            deferred,
            ..Default::default()
        },
        image(IMG),
    );
    let conf = Config {
        command_timeout: TIMEOUT,
        abort_timeout: Duration::from_millis(abort_ms),
        max_transfer: PER_CMD,
        io_queues: queues,
        ..Default::default()
    };
    let c = Controller::new(emu.clone(), emu.clone(), conf).expect("bring-up");
    (emu, c)
}

fn bytes(buf: &impl DmaBuffer) -> Vec<u8> {
    let mut v = vec![0u8; buf.len()];
    buf.read_bytes(0, &mut v).unwrap();
    v
}

fn read_all(c: &mut Controller<Emulator, Emulator>) -> (Result<(), Error>, EmuBuffer) {
    let ns = c.namespace(1).unwrap();
    let mut buf = c.memory().alloc(IMG).unwrap();
    let range = BlockRange {
        lba: 0,
        blocks: ns.size_blocks,
    };
    let r = c.read(0, &ns, range, &mut buf, 0, 8);
    (r, buf)
}

/// Reads everything again and checks the bytes, the ids and the DMA record.
fn assert_healthy(e: &Emulator, c: &mut Controller<Emulator, Emulator>) {
    let (r, buf) = read_all(c);
    r.expect("the queue is usable after recovery");
    assert!(bytes(&buf) == image(IMG), "data after recovery");
    let st = e.stats();
    assert_eq!(
        st.cid_conflicts, 0,
        "a command id was reused while still held"
    );
    assert_eq!(st.unmapped_dma, 0, "device DMA to an unmapped address");
}

#[test]
fn stalled_command_is_aborted_and_others_complete() {
    let (e, mut c) = setup(1000, false, 1);
    let enables = e.stats().enables;
    e.inject(3, Fault::Stall);
    let (r, buf) = read_all(&mut c);
    let cid = match r {
        Err(Error::Aborted {
            opcode: 0x02,
            qid: 1,
            cid,
            timeout,
        }) => {
            assert_eq!(timeout, TIMEOUT);
            cid
        }
        other => panic!("expected Error::Aborted, got {other:?}"),
    };
    let st = e.stats();
    assert_eq!(st.aborts, 1);
    assert_eq!(
        st.aborted,
        vec![(1, cid)],
        "the Abort named the stalled command"
    );
    assert_eq!(st.enables, enables, "no controller reset");
    // Every other command of the transfer moved its data; the aborted 4th one moved none.
    let (img, got) = (image(IMG), bytes(&buf));
    let (a, b) = (3 * PER_CMD, 4 * PER_CMD);
    assert!(got[..a] == img[..a] && got[b..] == img[b..]);
    assert!(got[a..b].iter().all(|&x| x == 0));
    assert_healthy(&e, &mut c);
    assert_eq!(e.stats().enables, enables);
    let rec = c.recovery();
    assert_eq!((rec.aborts_sent, rec.resets), (1, 0));
}

#[test]
fn aborted_completion_posted_late_keeps_its_command_id_reserved() {
    // The Abort is acknowledged at once, but the aborted command's own completion comes
    // 300 ms later: the driver must wait for it before releasing the id or the buffer.
    let (e, mut c) = setup(1000, false, 1);
    let enables = e.stats().enables;
    let late = Duration::from_millis(300);
    e.inject(3, Fault::StallAbortLate { after: late });
    let t = Instant::now();
    let (r, _buf) = read_all(&mut c);
    assert!(matches!(r, Err(Error::Aborted { qid: 1, .. })), "{r:?}");
    assert!(
        t.elapsed() >= TIMEOUT + late,
        "returned before the aborted command's completion arrived"
    );
    assert_eq!(e.stats().aborted.len(), 1);
    assert_eq!(e.stats().enables, enables, "no controller reset");
    // Reusing ids right away: a released-too-early id would collide with the held command.
    assert_healthy(&e, &mut c);
}

#[test]
fn abort_that_times_out_resets_the_controller() {
    let (e, mut c) = setup(300, false, 1);
    let enables = e.stats().enables;
    e.inject(3, Fault::StallIgnoringAbort);
    let (r, _buf) = read_all(&mut c);
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
    let st = e.stats();
    assert_eq!(st.aborts, 1, "an Abort was tried first");
    assert!(st.aborted.is_empty());
    assert_eq!(st.enables, enables + 1, "controller reset");
    let rec = c.recovery();
    assert_eq!((rec.aborts_sent, rec.resets), (1, 1));
    assert_healthy(&e, &mut c);
}

#[test]
fn completion_after_a_failed_abort_is_a_success() {
    // The command executes 1 s after submission: the Abort (at 200 ms) answers "not
    // aborted", and the data arrives within the 2 s grace period.
    let (e, mut c) = setup(2000, false, 1);
    let enables = e.stats().enables;
    e.inject(
        3,
        Fault::Delayed {
            after: Duration::from_millis(1000),
        },
    );
    let (r, buf) = read_all(&mut c);
    r.expect("late completion within the abort grace period");
    assert!(bytes(&buf) == image(IMG));
    let st = e.stats();
    assert_eq!((st.aborts, st.aborted.len()), (1, 0));
    assert_eq!(st.enables, enables);
    assert_healthy(&e, &mut c);
}

#[test]
fn late_command_past_the_grace_period_never_touches_the_released_buffer() {
    // Executes 2 s after submission; timeout 200 ms + grace 300 ms: the driver resets the
    // controller (which stops its DMA) before returning and the buffer is freed at once.
    let (e, mut c) = setup(300, false, 1);
    let enables = e.stats().enables;
    e.inject(
        3,
        Fault::Delayed {
            after: Duration::from_millis(2000),
        },
    );
    let t = Instant::now();
    let (r, buf) = read_all(&mut c);
    assert!(matches!(r, Err(Error::Timeout { qid: 1, .. })), "{r:?}");
    drop(buf);
    assert_eq!(e.stats().enables, enables + 1, "controller reset");
    // Let the delayed command's time pass while the driver keeps reading memory.
    while t.elapsed() < Duration::from_millis(2200) {
        assert_healthy(&e, &mut c);
    }
    assert_healthy(&e, &mut c);
}

#[test]
fn abort_on_one_thread_leaves_the_other_queue_running() {
    let (e, mut c) = setup(1000, true, 2);
    let enables = e.stats().enables;
    let ns = c.namespace(1).unwrap();
    let half = ns.size_blocks / 2;
    let mut bufs = [
        c.memory().alloc(IMG / 2).unwrap(),
        c.memory().alloc(IMG / 2).unwrap(),
    ];
    e.inject(5, Fault::Stall);
    let mut queues = c.io_queues();
    let ns = &ns;
    let results: Vec<Result<(), Error>> = std::thread::scope(|s| {
        let hs: Vec<_> = queues
            .iter_mut()
            .zip(bufs.iter_mut())
            .enumerate()
            .map(|(i, (q, buf))| {
                s.spawn(move || {
                    let r = BlockRange {
                        lba: i as u64 * half,
                        blocks: half,
                    };
                    q.read(ns, r, buf, 0, 8)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let aborted = results
        .iter()
        .filter(|r| matches!(r, Err(Error::Aborted { .. })))
        .count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!((aborted, ok), (1, 1), "{results:?}");
    let img = image(IMG);
    for (i, r) in results.iter().enumerate() {
        if r.is_ok() {
            assert!(bytes(&bufs[i]) == img[i * IMG / 2..(i + 1) * IMG / 2]);
        }
    }
    // Both handles still work, with no reset.
    for (i, (q, buf)) in queues.iter_mut().zip(bufs.iter_mut()).enumerate() {
        let r = BlockRange {
            lba: i as u64 * half,
            blocks: half,
        };
        q.read(ns, r, buf, 0, 8).expect("handle usable after abort");
        assert!(bytes(buf) == img[i * IMG / 2..(i + 1) * IMG / 2]);
    }
    drop(queues);
    assert_eq!(e.stats().enables, enables, "no controller reset");
    assert_eq!(e.stats().aborts, 1);
    assert_healthy(&e, &mut c);
}
