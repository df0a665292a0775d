//! Runtime scenarios with hand-computed expectations: hit/miss accounting, LRU and plan-aware
//! eviction, demotion on a shrinking budget, pinned items, bandwidth-driven re-plans, cycles
//! of moves, and concurrent use.

use std::sync::Arc;
use std::time::Duration;

use tier_cache::{
    CacheError, CacheOptions, Eviction, Item, MemStorage, MoveReason, Storage, Tier, TierCache,
    TierId,
};

const FAST: TierId = TierId(0);

fn bytes_of(key: u32, size: u64) -> Vec<u8> {
    (0..size).map(|j| (key as u64 * 13 + j) as u8).collect()
}

/// A cache with the given tiers and items inserted in `at` with known bytes.
fn cache_with(
    tiers: Vec<Tier>,
    items: &[Item<u32>],
    at: TierId,
    eviction: Eviction,
) -> TierCache<u32, MemStorage> {
    let options = CacheOptions {
        eviction,
        ..CacheOptions::default()
    };
    let cache = TierCache::new(tiers, MemStorage::new(), options).unwrap();
    for item in items {
        let h = cache.storage().allocate(at, item.size).unwrap();
        cache
            .storage()
            .write(at, &h, 0, &bytes_of(item.key, item.size))
            .unwrap();
        cache.insert(item.clone(), at, h).unwrap();
    }
    cache
}

fn home_bytes(cache: &TierCache<u32, MemStorage>, key: u32) -> Vec<u8> {
    let (t, h) = cache.home_handle(&key).unwrap();
    cache.storage().read(t, &h).unwrap()
}

/// Streaming-only fast tier: 200 bytes, all reserved, four 100-byte items on a slow tier.
fn streaming_cache(eviction: Eviction, weights: [f64; 4]) -> TierCache<u32, MemStorage> {
    let tiers = vec![
        Tier::new("fast", 200, 1000.0),
        Tier::unlimited("slow", 10.0),
    ];
    let items: Vec<Item<u32>> = (0..4)
        .map(|i| Item::new(i, 100, weights[i as usize]))
        .collect();
    let cache = cache_with(tiers, &items, TierId(1), eviction);
    cache.set_streaming_reserve(FAST, 200).unwrap();
    assert!(cache.replan().unwrap().is_empty());
    cache
}

#[test]
fn lru_eviction_and_counters() {
    let cache = streaming_cache(Eviction::Lru, [1.0; 4]);
    assert!(!cache.ensure(&0, FAST).unwrap().hit);
    assert!(!cache.ensure(&1, FAST).unwrap().hit);
    assert!(cache.ensure(&0, FAST).unwrap().hit);
    // Room for two: streaming 2 evicts the least recently used, item 1.
    let a = cache.ensure(&2, FAST).unwrap();
    assert!(!a.hit);
    assert_eq!(a.source, Some(TierId(1)));
    assert_eq!(
        cache.storage().read(FAST, &a.handle).unwrap(),
        bytes_of(2, 100)
    );
    assert!(cache.copies_of(&1).is_empty());
    assert_eq!(cache.copies_of(&0), vec![FAST]);
    let s = cache.stats();
    assert_eq!((s.hits(), s.misses(), s.evictions()), (1, 3, 1));
    assert_eq!(s.tiers[0].bytes_in, 300);
    assert_eq!(s.tiers[1].bytes_out, 300);
    assert_eq!(cache.used_bytes(FAST), 200);
    assert_eq!(cache.storage().used(FAST), 200);
    // The home is still there and unchanged.
    assert_eq!(home_bytes(&cache, 1), bytes_of(1, 100));
}

#[test]
fn plan_aware_eviction_keeps_valuable_copies() {
    // Item 0 is read 0.1 times per step, item 1 twice: evict 0 even though it is most recent.
    let cache = streaming_cache(Eviction::PlanAware, [0.1, 2.0, 1.0, 1.0]);
    cache.ensure(&1, FAST).unwrap();
    cache.ensure(&0, FAST).unwrap();
    cache.ensure(&2, FAST).unwrap();
    assert!(cache.copies_of(&0).is_empty());
    assert_eq!(cache.copies_of(&1), vec![FAST]);
}

#[test]
fn ensure_errors_are_typed() {
    let tiers = vec![Tier::new("fast", 50, 1000.0), Tier::unlimited("slow", 10.0)];
    let cache = cache_with(tiers, &[Item::new(0, 100, 1.0)], TierId(1), Eviction::Lru);
    let err = cache.ensure(&0, FAST).unwrap_err();
    assert!(
        matches!(
            err,
            CacheError::NoStreamingRoom {
                size: 100,
                free: 50,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        cache.ensure(&9, FAST),
        Err(CacheError::UnknownKey { .. })
    ));
    assert!(matches!(
        cache.ensure(&0, TierId(7)),
        Err(CacheError::UnknownTier { .. })
    ));
    let h = cache.storage().allocate(TierId(1), 1).unwrap();
    let dup = cache.insert(Item::new(0, 1, 1.0), TierId(1), h);
    assert!(matches!(dup, Err(CacheError::DuplicateKey { .. })));
    let h = cache.storage().allocate(TierId(1), 60).unwrap();
    let full = cache.insert(Item::new(5, 60, 1.0), FAST, h);
    assert!(matches!(full, Err(CacheError::NoRoom { .. })));
}

#[test]
fn shrinking_demotes_least_valuable_and_keeps_bytes() {
    let tiers = vec![
        Tier::new("VRAM", 400, 1000.0),
        Tier::new("RAM", 200, 100.0),
        Tier::unlimited("storage", 10.0),
    ];
    // Weights 4, 3, 2, 1: all four fit in VRAM at first.
    let items: Vec<Item<u32>> = (0..4).map(|i| Item::new(i, 100, 4.0 - i as f64)).collect();
    let cache = cache_with(tiers, &items, TierId(2), Eviction::Lru);
    cache.replan().unwrap();
    assert_eq!(cache.homes_in(TierId(0)), vec![0, 1, 2, 3]);
    // Shrink VRAM to 150 (one item): the least valuable go first, 3 and 2 to RAM, which is
    // then full, so 1 goes to storage.
    let moves = cache.set_capacity(TierId(0), 150).unwrap();
    let moved: Vec<(u32, TierId, TierId)> = moves.iter().map(|m| (m.key, m.from, m.to)).collect();
    assert_eq!(
        moved,
        vec![
            (3, TierId(0), TierId(1)),
            (2, TierId(0), TierId(1)),
            (1, TierId(0), TierId(2))
        ]
    );
    assert!(moves.iter().all(|m| m.reason == MoveReason::Demotion));
    // Shrink VRAM to 0: item 0 goes to storage.
    let moves = cache.set_capacity(TierId(0), 0).unwrap();
    let moved: Vec<(u32, TierId)> = moves.iter().map(|m| (m.key, m.to)).collect();
    assert_eq!(moved, vec![(0, TierId(2))]);
    for i in 0..4 {
        assert_eq!(home_bytes(&cache, i), bytes_of(i, 100), "item {i}");
    }
    assert_eq!(cache.storage().used(TierId(0)), 0);
    assert_eq!(cache.stats().tiers[0].demotions, 4);
    // Growing again re-plans and promotes the most valuable back.
    cache.set_capacity(TierId(0), 200).unwrap();
    assert_eq!(cache.homes_in(TierId(0)), vec![0, 1]);
    assert_eq!(cache.homes_in(TierId(1)), vec![2, 3]);
    assert_eq!(home_bytes(&cache, 0), bytes_of(0, 100));
}

#[test]
fn shrinking_below_pinned_items_fails_and_changes_nothing() {
    let tiers = vec![Tier::new("VRAM", 300, 1000.0), Tier::unlimited("RAM", 10.0)];
    let items = vec![
        Item::new(0, 100, 1.0).pinned(FAST),
        Item::new(1, 100, 1.0).pinned(FAST),
        Item::new(2, 100, 1.0),
    ];
    let cache = cache_with(tiers, &items, TierId(1), Eviction::Lru);
    cache.replan().unwrap();
    let err = cache.set_capacity(FAST, 150).unwrap_err();
    assert!(
        matches!(err, CacheError::ShrinkBelowPinned { pinned: 200, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("pin to tier 0"));
    assert_eq!(cache.tiers()[0].capacity, 300);
    assert_eq!(cache.homes_in(FAST), vec![0, 1, 2]);
    // 200 is enough: only the unpinned item moves.
    let moves = cache.set_capacity(FAST, 200).unwrap();
    assert_eq!(moves.len(), 1);
    assert_eq!(moves[0].key, 2);
}

#[test]
fn bandwidth_measurements_smooth_and_replan_past_threshold() {
    let tiers = vec![
        Tier::new("fast", 100, 100.0),
        Tier::new("mid", 100, 10.0),
        Tier::unlimited("slow", 1.0),
    ];
    let items = vec![Item::new(0, 100, 2.0), Item::new(1, 100, 1.0)];
    let options = CacheOptions {
        bandwidth_smoothing: 0.5,
        replan_threshold: 0.2,
        ..CacheOptions::default()
    };
    let cache = TierCache::new(tiers, MemStorage::new(), options).unwrap();
    for item in &items {
        let h = cache.storage().allocate(TierId(2), 100).unwrap();
        cache
            .storage()
            .write(TierId(2), &h, 0, &bytes_of(item.key, 100))
            .unwrap();
        cache.insert(item.clone(), TierId(2), h).unwrap();
    }
    cache.replan().unwrap();
    assert_eq!(cache.home_of(&0), Some(TierId(0)));
    assert_eq!(cache.home_of(&1), Some(TierId(1)));

    // 90 B/s sample: estimate 0.5 * 90 + 0.5 * 100 = 95, 5 % off: no re-plan.
    let u = cache
        .record_bandwidth(FAST, 90, Duration::from_secs(1))
        .unwrap();
    assert!((u.sample - 90.0).abs() < 1e-9 && (u.estimate - 95.0).abs() < 1e-9);
    assert!(!u.replanned && u.moves.is_empty());

    // Fast turns out slow: 0.1 B/s. 0.5 * 0.1 + 0.5 * 95 = 47.55 (past 20 %): re-plan, same
    // order, no moves. Again: 23.825, then 11.9625, then 6.03125 (< mid's 10): now per step
    // item 0 costs 2 * 100 / 6.03 = 33.2 s in fast but 20 s in mid, so 0 goes to mid and 1
    // (100 s on slow vs 16.6 s in fast) to fast: a swap, done through a detour via slow.
    let mut last = None;
    for _ in 0..4 {
        last = Some(
            cache
                .record_bandwidth(FAST, 1, Duration::from_secs(10))
                .unwrap(),
        );
    }
    let u = last.unwrap();
    assert!((u.estimate - 6.03125).abs() < 1e-9, "{}", u.estimate);
    assert!(u.replanned);
    assert_eq!(cache.home_of(&0), Some(TierId(1)));
    assert_eq!(cache.home_of(&1), Some(TierId(0)));
    assert!(u.moves.iter().any(|m| m.reason == MoveReason::Detour));
    assert_eq!(home_bytes(&cache, 0), bytes_of(0, 100));
    assert_eq!(home_bytes(&cache, 1), bytes_of(1, 100));
    assert!(cache.stats().replans >= 2);
    let bad = cache.record_bandwidth(FAST, 0, Duration::from_secs(1));
    assert!(matches!(bad, Err(CacheError::InvalidMeasurement { .. })));
}

#[test]
fn concurrent_ensures_are_consistent() {
    let tiers = vec![
        Tier::new("fast", 300, 1000.0),
        Tier::unlimited("slow", 10.0),
    ];
    let items: Vec<Item<u32>> = (0..10).map(|i| Item::new(i, 100, 1.0)).collect();
    let cache = Arc::new(cache_with(tiers, &items, TierId(1), Eviction::Lru));
    cache.set_streaming_reserve(FAST, 300).unwrap();
    cache.replan().unwrap();
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let cache = Arc::clone(&cache);
            std::thread::spawn(move || {
                for i in 0..250u32 {
                    let key = (i * 7 + t * 3) % 10;
                    let a = cache.ensure(&key, FAST).unwrap();
                    assert_eq!(a.tier, FAST);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = cache.stats();
    assert_eq!(s.hits() + s.misses(), 1000);
    assert_eq!(s.misses() - s.evictions(), 3); // three copies remain resident
    assert_eq!(cache.storage().used(FAST), 300);
    assert_eq!(cache.storage().buffers(), 13);
    for i in 0..10 {
        for t in cache.copies_of(&i) {
            let r = cache.residency(&i).unwrap();
            let h = &r.copies.iter().find(|c| c.0 == t).unwrap().1;
            assert_eq!(cache.storage().read(t, h).unwrap(), bytes_of(i, 100));
        }
    }
}
