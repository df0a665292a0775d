//! Extent lists from outside (a user's `.extents` file, FIEMAP, the device's block size) are
//! checked before any LBA is computed: hostile values give typed errors, never an overflow
//! (debug) or a wrong LBA (release).

use nvme_direct::extent::{check_extents, locate, LbaExtent};
use nvme_direct::Error;
use proptest::prelude::*;

fn ext(logical: u64, lba: u64, blocks: u64) -> LbaExtent {
    LbaExtent {
        logical,
        lba,
        blocks,
    }
}

/// The reason of a `BadExtent` at `index`, or a panic naming what came back.
fn reason(r: Result<(), Error>, index: Option<usize>) -> String {
    match r {
        Err(Error::BadExtent { index: i, reason }) => {
            assert_eq!(i, index, "{reason}");
            reason
        }
        other => panic!("expected BadExtent at {index:?}, got {other:?}"),
    }
}

#[test]
fn a_consistent_list_passes_and_locates_every_block() {
    let list = [ext(0, 100, 4), ext(4 * 512, 900, 2), ext(10 * 512, 50, 1)];
    check_extents(&list, 512, 1000).unwrap();
    assert_eq!(locate(&list, 0, 512), Some((100, 4 * 512)));
    assert_eq!(locate(&list, 3 * 512, 512), Some((103, 512)));
    assert_eq!(locate(&list, 4 * 512, 512), Some((900, 2 * 512)));
    assert_eq!(locate(&list, 5 * 512 + 7, 512), Some((901, 512 - 7)));
    // The hole between the second and the third extent, and past the end.
    assert_eq!(locate(&list, 6 * 512, 512), None);
    assert_eq!(locate(&list, 11 * 512, 512), None);
    assert_eq!(locate(&list, u64::MAX, 512), None);
}

#[test]
fn hostile_values_are_typed_errors() {
    let max = u64::MAX;
    // Byte end overflows: blocks * block size, then logical + length.
    assert!(reason(check_extents(&[ext(0, 0, max / 2)], 512, max), Some(0)).contains("overflows"));
    assert!(
        reason(check_extents(&[ext(max - 511, 0, 2)], 512, max), Some(0)).contains("overflows")
    );
    // Block end overflows.
    assert!(reason(check_extents(&[ext(0, max, 2)], 512, max), Some(0)).contains("overflows"));
    // Past the namespace.
    assert!(reason(
        check_extents(&[ext(0, 0, 4), ext(2048, 998, 3)], 512, 1000),
        Some(1)
    )
    .contains("past the namespace"));
    // Empty, misaligned, overlapping, out of order.
    assert!(reason(check_extents(&[ext(0, 0, 0)], 512, 10), Some(0)).contains("no blocks"));
    assert!(reason(check_extents(&[ext(100, 0, 1)], 512, 10), Some(0)).contains("multiple"));
    assert!(reason(
        check_extents(&[ext(0, 0, 4), ext(1024, 5, 1)], 512, 10),
        Some(1)
    )
    .contains("overlaps"));
    assert!(reason(
        check_extents(&[ext(4096, 0, 1), ext(0, 5, 1)], 512, 10),
        Some(1)
    )
    .contains("precedes"));
    // A device answering a nonsense block size.
    for bs in [0, 1, 256, 1000, 4095] {
        assert!(reason(check_extents(&[ext(0, 0, 1)], bs, 10), None).contains("block size"));
    }
    assert_eq!(locate(&[ext(0, 0, 1)], 0, 0), None);
    // The message says what to do.
    let e = check_extents(&[ext(0, 0, 0)], 512, 10)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("extent 0") && e.contains("make the extent list again"),
        "{e}"
    );
}

proptest! {
    /// Whatever the numbers, `locate` never panics (overflow checks are on in tests), and on a
    /// checked list it returns the LBA of exactly the block holding `pos`.
    #[test]
    fn locate_is_total_and_right_on_checked_lists(
        raw in prop::collection::vec((any::<u64>(), any::<u64>(), any::<u64>()), 0..6),
        pos in any::<u64>(),
        shift in 9u32..13,
    ) {
        let bs = 1u32 << shift;
        let list: Vec<LbaExtent> = raw.iter().map(|&(l, a, b)| ext(l, a, b)).collect();
        let _ = locate(&list, pos, bs);
        // A plausible list built from the random numbers, checked, then located.
        let mut logical = 0u64;
        let mut ok = Vec::new();
        for &(_, a, b) in &raw {
            let blocks = b % 64 + 1;
            ok.push(ext(logical, a % 1_000_000, blocks));
            logical += (blocks + a % 3) * u64::from(bs);
        }
        prop_assume!(check_extents(&ok, bs, 2_000_000).is_ok());
        let pos = if logical == 0 { 0 } else { pos % logical };
        match locate(&ok, pos, bs) {
            Some((lba, run)) => {
                let e = ok.iter().find(|e| pos >= e.logical && pos < e.logical + e.blocks * u64::from(bs)).unwrap();
                let rel = pos - e.logical;
                prop_assert_eq!(lba, e.lba + rel / u64::from(bs));
                prop_assert_eq!(run, e.blocks * u64::from(bs) - rel);
            }
            None => prop_assert!(ok.iter().all(|e| pos < e.logical || pos >= e.logical + e.blocks * u64::from(bs))),
        }
    }
}
