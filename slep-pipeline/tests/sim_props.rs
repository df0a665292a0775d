//! Properties of the simulated pipeline (virtual clock), checked with proptest over N, staging
//! count, item counts and per-item stage times.
//!
//! Oracles: (1) the max-plus recurrences that define the policy, written out independently here;
//! (2) for equal stage times, the textbook pipeline formula `r + c + k + (n - 1) * max(r, c, k)`;
//! (3) the trivial bounds: no faster than the busiest stage, no slower than running serially.

use proptest::prelude::*;
use slep_pipeline::sim::{SimItem, SimTrace, Simulator, SlotState};

/// Stage start/end times from the policy's defining recurrences (streamed items only):
/// read j starts when the reader is free and a staging buffer is (copy j-S done);
/// copy j starts when read j is done, the copy engine is free and slot (j mod N) is
/// released (compute j-N done); compute j starts when copy j is done and compute j-1 is done.
fn recurrence(items: &[SimItem], n_slots: usize, staging: usize) -> u64 {
    let n = items.len();
    let (mut re, mut ce, mut ke) = (vec![0u64; n], vec![0u64; n], vec![0u64; n]);
    for j in 0..n {
        let mut rs = if j > 0 { re[j - 1] } else { 0 };
        if j >= staging {
            rs = rs.max(ce[j - staging]);
        }
        re[j] = rs + items[j].read;
        let mut cs = re[j];
        if j > 0 {
            cs = cs.max(ce[j - 1]);
        }
        if j >= n_slots {
            cs = cs.max(ke[j - n_slots]);
        }
        ce[j] = cs + items[j].copy;
        let ks = if j > 0 { ce[j].max(ke[j - 1]) } else { ce[j] };
        ke[j] = ks + items[j].compute;
    }
    ke.last().copied().unwrap_or(0)
}

fn item_strategy() -> impl Strategy<Value = SimItem> {
    (0u64..1000, 0u64..1000, 0u64..1000).prop_map(|(r, c, k)| SimItem::new(r, c, k))
}

fn check_common(trace: &SimTrace, items: &[SimItem], n_slots: usize) {
    // Consumed in schedule order.
    assert_eq!(trace.consumed, (0..items.len()).collect::<Vec<_>>());
    // Never more than N-1 slots ahead of the one being computed (N while computing a resident
    // item, which holds no slot).
    if items.iter().any(|i| i.resident) {
        assert!(trace.max_ahead <= n_slots);
    } else {
        assert!(trace.max_ahead < n_slots);
    }
    // Per item: read before copy before compute; slots in range.
    for (j, t) in trace.items.iter().enumerate() {
        assert!(
            t.read.1 <= t.copy.0 && t.copy.1 <= t.compute.0,
            "item {j}: {t:?}"
        );
        if let Some(s) = t.slot {
            assert!(s < n_slots);
        }
    }
    // Two items never occupy one slot at once: the interval from copy start to compute end of
    // items sharing a slot must not overlap (checked pairwise: brute force).
    for a in 0..items.len() {
        for b in a + 1..items.len() {
            let (ta, tb) = (trace.items[a], trace.items[b]);
            if ta.slot.is_some() && ta.slot == tb.slot {
                assert!(
                    ta.compute.1 <= tb.copy.0,
                    "slot {:?} overwritten by item {b} at {} before item {a} released it at {}",
                    ta.slot,
                    tb.copy.0,
                    ta.compute.1
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn simulation_matches_policy_recurrence_and_is_slot_safe(
        n_slots in 2usize..7,
        staging in 1usize..7,
        items in prop::collection::vec(item_strategy(), 0..40),
    ) {
        let mut sim = Simulator::new(n_slots, staging).unwrap();
        let trace = sim.run(&items).unwrap();
        check_common(&trace, &items, n_slots);
        prop_assert_eq!(trace.total, recurrence(&items, n_slots, staging));
        // Bounds: at least the busiest stage, at most everything in series.
        let sum = |f: fn(&SimItem) -> u64| items.iter().map(f).sum::<u64>();
        let busiest = sum(|i| i.read).max(sum(|i| i.copy)).max(sum(|i| i.compute));
        prop_assert!(trace.total >= busiest);
        prop_assert!(trace.total <= sum(|i| i.read + i.copy + i.compute));
        prop_assert!(sim.slot_states().iter().all(|s| *s == SlotState::Free));
    }

    #[test]
    fn equal_stage_times_overlap_fully(
        n_slots in 2usize..8,
        extra_staging in 0usize..4,
        n in 1usize..60,
        r in 0u64..500, c in 0u64..500, k in 0u64..500,
    ) {
        // With at least two staging buffers, the pass takes fill + n x the slowest stage + drain,
        // not n x the sum of the stages.
        let items = vec![SimItem::new(r, c, k); n];
        let mut sim = Simulator::new(n_slots, 2 + extra_staging).unwrap();
        let trace = sim.run(&items).unwrap();
        check_common(&trace, &items, n_slots);
        let m = r.max(c).max(k);
        prop_assert_eq!(trace.total, r + c + k + (n as u64 - 1) * m);
        // Compute only stalls when compute is not the slowest stage.
        if k == m {
            prop_assert_eq!(trace.compute_stall, 0);
        }
    }

    #[test]
    fn changing_schedules_between_passes_with_resident_items_stay_safe(
        n_slots in 2usize..6,
        staging in 1usize..5,
        passes in prop::collection::vec(
            prop::collection::vec((item_strategy(), any::<bool>()), 0..25), 1..5),
    ) {
        let mut sim = Simulator::new(n_slots, staging).unwrap();
        for pass in passes {
            let items: Vec<SimItem> = pass
                .into_iter()
                .map(|(mut it, resident)| {
                    it.resident = resident;
                    if resident {
                        it.copy = 0;
                    }
                    it
                })
                .collect();
            let trace = sim.run(&items).unwrap();
            check_common(&trace, &items, n_slots);
            for (t, it) in trace.items.iter().zip(&items) {
                prop_assert_eq!(t.slot.is_none(), it.resident);
            }
            prop_assert!(sim.slot_states().iter().all(|s| *s == SlotState::Free));
        }
    }
}

#[test]
fn one_slot_is_rejected() {
    assert!(Simulator::new(1, 2).is_err());
}

#[test]
fn double_buffering_example_by_hand() {
    // Three items, read 2, copy 1, compute 3, two slots, two staging buffers. By hand:
    // read  [0,2) [2,4) [4,6); copy [2,3) [4,5) then item 2 waits for slot 0 (compute 0 ends
    // at 6): [6,7); compute [3,6) [6,9) [9,12). Total 12 (serial would be 18).
    let items = vec![SimItem::new(2, 1, 3); 3];
    let trace = Simulator::new(2, 2).unwrap().run(&items).unwrap();
    assert_eq!(trace.items[2].copy, (6, 7));
    assert_eq!(trace.items[2].compute, (9, 12));
    assert_eq!(trace.total, 12);
    assert_eq!(trace.compute_stall, 0);
}
