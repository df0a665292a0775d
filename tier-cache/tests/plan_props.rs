//! Planner invariants on random problems of every size (exact and greedy paths):
//! no tier over capacity, every item exactly one home, constraints honoured, and when planning
//! fails, a typed error that names a real item and a real reason.

use std::collections::HashMap;

use proptest::prelude::*;
use tier_cache::{Constraint, Item, PlanError, Planner, Tier, TierId};

#[derive(Clone, Debug)]
struct Case {
    tiers: Vec<Tier>,
    items: Vec<Item<u32>>,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        2usize..=4,
        prop::collection::vec((0u64..12_000, 1.0f64..1e3, 0.0f64..1.0), 4),
        any::<bool>(),
        prop::collection::vec((1u64..600, 0u8..4, 0u8..30, 0usize..4), 1..60),
    )
        .prop_map(|(nt, tier_specs, last_unlimited, specs)| {
            let mut tiers: Vec<Tier> = tier_specs[..nt]
                .iter()
                .enumerate()
                .map(|(i, &(cap, bw, lat))| {
                    let mut t = Tier::new(format!("T{i}"), cap, bw);
                    t.latency = lat;
                    t
                })
                .collect();
            if last_unlimited {
                if let Some(t) = tiers.last_mut() {
                    t.capacity = u64::MAX;
                }
            }
            let items = specs
                .into_iter()
                .enumerate()
                .map(|(i, (size, w, c, t))| {
                    let weight = f64::from(w) * 0.5; // 0, 0.5, 1, 1.5
                    let item = Item::new(i as u32, size, weight);
                    let t = TierId(t % nt);
                    match c {
                        0 => item.pinned(t),
                        1 | 2 => item.never_in(t),
                        _ => item,
                    }
                })
                .collect();
            Case { tiers, items }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn placements_respect_capacity_homes_and_constraints(case in case_strategy()) {
        let planner = Planner::new(case.tiers.clone()).unwrap();
        match planner.plan(&case.items) {
            Ok(plan) => {
                // Exactly one home per item.
                let homes: Vec<(u32, TierId)> =
                    plan.assignments().map(|(it, t)| (it.key, t)).collect();
                prop_assert_eq!(homes.len(), case.items.len());
                let mut used = vec![0u128; case.tiers.len()];
                for item in &case.items {
                    let t = plan.tier_of(&item.key);
                    prop_assert!(t.is_some(), "item {} has no home", item.key);
                    let t = t.unwrap();
                    used[t.0] += u128::from(item.size);
                    for c in &item.constraints {
                        match *c {
                            Constraint::PinTo(p) => prop_assert_eq!(t, p),
                            Constraint::Never(n) => prop_assert_ne!(t, n),
                        }
                    }
                }
                for (t, tier) in case.tiers.iter().enumerate() {
                    prop_assert!(used[t] <= u128::from(tier.capacity),
                        "tier {t} holds {} of {}", used[t], tier.capacity);
                    prop_assert_eq!(u128::from(plan.used_bytes(TierId(t))), used[t]);
                }
                // Weight-0 items stay in unlimited storage when they may.
                let last = TierId(case.tiers.len() - 1);
                if case.tiers[last.0].capacity == u64::MAX {
                    for item in &case.items {
                        if item.weight == 0.0 && item.constraints.is_empty() {
                            prop_assert_eq!(plan.tier_of(&item.key), Some(last));
                        }
                    }
                }
                // Every item has one explanation, for its real home.
                let why = plan.explain();
                prop_assert_eq!(why.len(), case.items.len());
                for e in &why {
                    prop_assert_eq!(Some(e.tier), plan.tier_of(&e.key));
                }
            }
            Err(err) => check_error(&case, &err)?,
        }
    }
}

/// The error must name a real item and its claim must hold when checked independently.
fn check_error(case: &Case, err: &PlanError) -> Result<(), TestCaseError> {
    let by_name: HashMap<String, &Item<u32>> = case
        .items
        .iter()
        .map(|it| (format!("{:?}", it.key), it))
        .collect();
    match err {
        PlanError::PinnedDoesNotFit {
            item,
            constraint,
            tier_name,
            ..
        } => {
            let it = by_name.get(item);
            prop_assert!(it.is_some(), "error names unknown item {item}");
            let pin = it.unwrap().pinned_tier().unwrap();
            prop_assert_eq!(constraint, &Constraint::PinTo(pin).to_string());
            prop_assert_eq!(tier_name, &case.tiers[pin.0].name);
            // Pinned items to that tier really exceed its capacity.
            let pinned: u128 = case
                .items
                .iter()
                .filter(|i| i.pinned_tier() == Some(pin))
                .map(|i| u128::from(i.size))
                .sum();
            prop_assert!(pinned > u128::from(case.tiers[pin.0].capacity));
        }
        PlanError::NoRoom { item, size, .. } => {
            let it = by_name.get(item);
            prop_assert!(it.is_some(), "error names unknown item {item}");
            prop_assert_eq!(*size, it.unwrap().size);
            // Then no unlimited tier may be allowed for that item.
            let it = it.unwrap();
            prop_assert!(!(0..case.tiers.len())
                .any(|t| it.allows(TierId(t)) && case.tiers[t].capacity == u64::MAX));
        }
        PlanError::ConflictingConstraints { item, .. } => {
            let it = by_name.get(item);
            prop_assert!(it.is_some(), "error names unknown item {item}");
            let it = it.unwrap();
            prop_assert!(!(0..case.tiers.len()).any(|t| it.allows(TierId(t))));
        }
        other => prop_assert!(false, "unexpected error {other}"),
    }
    Ok(())
}

#[test]
fn typed_errors_name_item_and_constraint() {
    let tiers = vec![Tier::new("VRAM", 100, 1e12), Tier::unlimited("RAM", 1e10)];
    let planner = Planner::new(tiers).unwrap();
    let err = planner
        .plan(&[
            Item::new("draft.0", 80, 1.0).pinned(TierId(0)),
            Item::new("draft.1", 80, 1.0).pinned(TierId(0)),
        ])
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PlanError::PinnedDoesNotFit { .. }), "{msg}");
    assert!(msg.contains("\"draft.1\"") && msg.contains("pin to tier 0") && msg.contains("VRAM"));

    let err = planner
        .plan(&[Item::new("x", 1, 1.0).pinned(TierId(0)).never_in(TierId(0))])
        .unwrap_err();
    assert!(
        matches!(err, PlanError::ConflictingConstraints { .. }),
        "{err}"
    );

    let err = planner
        .plan(&[Item::new("x", 1, 1.0).never_in(TierId(5))])
        .unwrap_err();
    assert!(matches!(err, PlanError::UnknownTier { .. }), "{err}");

    let err = planner.plan(&[Item::new("x", 1, f64::NAN)]).unwrap_err();
    assert!(matches!(err, PlanError::InvalidItem { .. }), "{err}");

    let err = planner
        .plan(&[Item::new("x", 1, 1.0), Item::new("x", 2, 1.0)])
        .unwrap_err();
    assert!(matches!(err, PlanError::DuplicateKey { .. }), "{err}");

    let limited = Planner::new(vec![
        Tier::new("VRAM", 10, 1e12),
        Tier::new("RAM", 10, 1e10),
    ])
    .unwrap();
    let err = limited
        .plan(&[Item::new("big", 11, 1.0).never_in(TierId(0))])
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PlanError::NoRoom { .. }), "{msg}");
    assert!(
        msg.contains("\"big\"") && msg.contains("never in tier 0"),
        "{msg}"
    );

    assert!(matches!(Planner::new(vec![]), Err(PlanError::NoTiers)));
    assert!(matches!(
        Planner::new(vec![Tier::new("bad", 1, 0.0)]),
        Err(PlanError::InvalidTier { .. })
    ));
}
