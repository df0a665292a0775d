//! Runtime invariants under random operation sequences, checked against the in-memory backend
//! (an independent record of what is allocated where, with limits that reject any allocation
//! past a tier's capacity): no tier over capacity, one home per item, constraints honoured,
//! shrinking a budget never loses an item, and every copy keeps the item's original bytes.

use std::time::Duration;

use proptest::prelude::*;
use tier_cache::{
    CacheError, CacheOptions, Constraint, Eviction, Item, MemStorage, Storage, Tier, TierCache,
    TierId,
};

const STORAGE: TierId = TierId(2);

fn pattern(key: u32, size: u64) -> Vec<u8> {
    (0..size)
        .map(|j| ((u64::from(key) * 31 + j * 7) % 251) as u8)
        .collect()
}

#[derive(Clone, Debug)]
enum Op {
    Ensure(u32, usize),
    SetCapacity(usize, u64),
    Bandwidth(usize, f64),
    Reserve(usize, u64),
    Replan,
}

fn op_strategy(n: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..n, 0usize..3).prop_map(|(k, t)| Op::Ensure(k, t)),
        3 => (0usize..2, 0u64..3000).prop_map(|(t, b)| Op::SetCapacity(t, b)),
        1 => (0usize..3, 0.05f64..20.0).prop_map(|(t, f)| Op::Bandwidth(t, f)),
        1 => (0usize..2, 0u64..400).prop_map(|(t, b)| Op::Reserve(t, b)),
        1 => Just(Op::Replan),
    ]
}

type Cache = TierCache<u32, MemStorage>;

fn check(cache: &Cache, items: &[Item<u32>], planned: bool) -> Result<(), TestCaseError> {
    let mem = cache.storage();
    let tiers = cache.tiers();
    let mut buffers = 0;
    for (t, tier) in tiers.iter().enumerate() {
        let t = TierId(t);
        prop_assert!(mem.used(t) <= tier.capacity, "{} over capacity", tier.name);
        prop_assert_eq!(mem.used(t), cache.used_bytes(t));
    }
    for item in items {
        let r = cache.residency(&item.key);
        prop_assert!(r.is_some(), "item {} lost", item.key);
        let r = r.unwrap();
        let want = pattern(item.key, item.size);
        prop_assert_eq!(&mem.read(r.home.0, &r.home.1).unwrap(), &want);
        if planned {
            prop_assert!(
                item.allows(r.home.0),
                "item {} home breaks a constraint",
                item.key
            );
        }
        for (t, h) in &r.copies {
            prop_assert_ne!(*t, r.home.0);
            prop_assert_eq!(&mem.read(*t, h).unwrap(), &want);
        }
        buffers += 1 + r.copies.len();
    }
    prop_assert_eq!(mem.buffers(), buffers, "allocations leaked or lost");
    Ok(())
}

fn expected_error(e: &CacheError) -> bool {
    matches!(
        e,
        CacheError::NoStreamingRoom { .. }
            | CacheError::ShrinkBelowPinned { .. }
            | CacheError::CannotDemote { .. }
            | CacheError::Plan(_)
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(250))]

    #[test]
    fn random_operations_keep_invariants(
        caps in (0u64..2000, 0u64..4000),
        specs in prop::collection::vec((1u64..300, 0u8..4, 0u8..16), 1..16),
        plan_aware in any::<bool>(),
        ops in prop::collection::vec(op_strategy(16), 1..40),
    ) {
        let tiers = vec![
            Tier::new("VRAM", caps.0, 1000.0),
            Tier::new("RAM", caps.1, 100.0),
            Tier::unlimited("storage", 10.0),
        ];
        let mem = MemStorage::new().with_limit(TierId(0), caps.0).with_limit(TierId(1), caps.1);
        let options = CacheOptions {
            eviction: if plan_aware { Eviction::PlanAware } else { Eviction::Lru },
            ..CacheOptions::default()
        };
        let cache = TierCache::new(tiers, mem, options).unwrap();
        let items: Vec<Item<u32>> = specs
            .iter()
            .enumerate()
            .map(|(i, &(size, w, c))| {
                let item = Item::new(i as u32, size, f64::from(w) * 0.5);
                match c {
                    0 => item.pinned(TierId(0)),
                    1 => item.pinned(TierId(1)),
                    2 | 3 => item.never_in(TierId(0)),
                    4 => item.never_in(TierId(1)),
                    _ => item,
                }
            })
            .collect();
        for item in &items {
            let h = cache.storage().allocate(STORAGE, item.size).unwrap();
            cache.storage().write(STORAGE, &h, 0, &pattern(item.key, item.size)).unwrap();
            cache.insert(item.clone(), STORAGE, h).unwrap();
        }
        // Pinned items stay on storage until a plan succeeds; pins only hold after one.
        let planned = cache.replan();
        if let Err(e) = &planned {
            prop_assert!(expected_error(e), "{e}");
        }
        let mut planned = planned.is_ok();
        check(&cache, &items, planned)?;
        for op in ops {
            let result: Result<(), CacheError> = match op {
                Op::Ensure(k, t) => {
                    let k = k % items.len() as u32;
                    cache.ensure(&k, TierId(t)).map(|a| {
                        assert_eq!(a.tier, TierId(t));
                    })
                }
                Op::SetCapacity(t, bytes) => {
                    let old = cache.tiers()[t].capacity;
                    let mem = cache.storage();
                    mem.set_limit(TierId(t), bytes);
                    let r = cache.set_capacity(TierId(t), bytes);
                    match &r {
                        Ok(moves) => {
                            mem.set_limit(TierId(t), bytes);
                            planned |= bytes >= old;
                            if bytes < old {
                                // Shrinking only moves homes down.
                                for m in moves {
                                    prop_assert!(m.to > m.from, "{m:?}");
                                }
                            }
                        }
                        Err(_) => {
                            // A failed shrink changes nothing; a grow keeps the new
                            // capacity even when the re-plan after it fails.
                            let now = cache.tiers()[t].capacity;
                            prop_assert_eq!(now, if bytes < old { old } else { bytes });
                            mem.set_limit(TierId(t), now);
                        }
                    }
                    r.map(|_| ())
                }
                Op::Bandwidth(t, factor) => {
                    let bw = cache.tiers()[t].bandwidth;
                    let bytes = 1_000_000u64;
                    let secs = bytes as f64 / (bw * factor);
                    cache
                        .record_bandwidth(TierId(t), bytes, Duration::from_secs_f64(secs))
                        .map(|u| planned |= u.replanned)
                }
                Op::Reserve(t, bytes) => cache.set_streaming_reserve(TierId(t), bytes),
                Op::Replan => cache.replan().map(|_| planned = true),
            };
            if let Err(e) = &result {
                prop_assert!(expected_error(e), "unexpected error: {e}");
            }
            check(&cache, &items, planned)?;
            if planned {
                for item in &items {
                    if let Some(Constraint::PinTo(p)) = item.constraints.first() {
                        prop_assert_eq!(cache.home_of(&item.key), Some(*p));
                    }
                }
            }
        }
    }
}
