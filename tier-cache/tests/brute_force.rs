//! Optimality against brute force over every placement (up to 7 items, 3 tiers).
//!
//! The reference enumerates all 3^n assignments, keeps those that satisfy every constraint and
//! capacity, and computes each one's cost straight from the formula
//! `weight * (latency + size / bandwidth)`; the planner must find the same minimum (and fail
//! exactly when no assignment is feasible).

use proptest::prelude::*;
use tier_cache::{Constraint, Item, PlanMethod, PlanOptions, Planner, Tier, TierId};

#[derive(Clone, Debug)]
struct Case {
    tiers: Vec<Tier>,
    items: Vec<Item<u8>>,
}

fn tier_strategy(last_unlimited: bool) -> impl Strategy<Value = Vec<Tier>> {
    (
        (0u64..400, 0u64..400, 0u64..600),
        (1.0f64..100.0, 1.0f64..100.0, 1.0f64..100.0),
        (0.0f64..2.0, 0.0f64..2.0, 0.0f64..2.0),
    )
        .prop_map(move |(caps, bws, lats)| {
            let caps = [
                caps.0,
                caps.1,
                if last_unlimited { u64::MAX } else { caps.2 },
            ];
            let bws = [bws.0, bws.1, bws.2];
            let lats = [lats.0, lats.1, lats.2];
            (0..3)
                .map(|t| {
                    let mut tier = Tier::new(format!("T{t}"), caps[t], bws[t]);
                    tier.latency = lats[t];
                    tier
                })
                .collect()
        })
}

fn item_strategy(allow_zero_weight: bool) -> impl Strategy<Value = (u64, f64, u8, usize)> {
    let w = if allow_zero_weight {
        0.0f64..3.0
    } else {
        0.1f64..3.0
    };
    // constraint kind: 0..6 none, 6 pin, 7 never; tier index
    (1u64..150, w, 0u8..8, 0usize..3).prop_map(move |(s, w, c, t)| {
        // A quarter of the weights exactly 0 when allowed.
        let w = if allow_zero_weight && w < 0.75 {
            0.0
        } else {
            w
        };
        (s, w, c, t)
    })
}

fn case_strategy(last_unlimited: bool, allow_zero_weight: bool) -> impl Strategy<Value = Case> {
    (
        tier_strategy(last_unlimited),
        prop::collection::vec(item_strategy(allow_zero_weight), 1..=7),
    )
        .prop_map(|(tiers, specs)| {
            let items = specs
                .into_iter()
                .enumerate()
                .map(|(i, (s, w, c, t))| {
                    let item = Item::new(i as u8, s, w);
                    match c {
                        6 => item.pinned(TierId(t)),
                        7 => item.never_in(TierId(t)),
                        _ => item,
                    }
                })
                .collect();
            Case { tiers, items }
        })
}

/// Minimum cost over all feasible assignments, computed from first principles.
fn brute_force(case: &Case) -> Option<f64> {
    let n = case.items.len();
    let nt = case.tiers.len();
    let mut best: Option<f64> = None;
    let total = nt.pow(n as u32);
    for code in 0..total {
        let mut c = code;
        let mut used = vec![0u128; nt];
        let mut cost = 0.0;
        let mut ok = true;
        for item in &case.items {
            let t = c % nt;
            c /= nt;
            for con in &item.constraints {
                match *con {
                    Constraint::PinTo(p) if p.0 != t => ok = false,
                    Constraint::Never(p) if p.0 == t => ok = false,
                    _ => {}
                }
            }
            used[t] += u128::from(item.size);
            let tier = &case.tiers[t];
            cost += item.weight * (tier.latency + item.size as f64 / tier.bandwidth);
        }
        for (u, tier) in used.iter().zip(&case.tiers) {
            if *u > u128::from(tier.capacity) {
                ok = false;
            }
        }
        if ok && !matches!(best, Some(b) if b <= cost) {
            best = Some(cost);
        }
    }
    best
}

fn planned_cost(case: &Case, homes: &[TierId]) -> f64 {
    case.items
        .iter()
        .zip(homes)
        .map(|(it, t)| {
            let tier = &case.tiers[t.0];
            it.weight * (tier.latency + it.size as f64 / tier.bandwidth)
        })
        .sum()
}

fn check(case: &Case, planner: &Planner) -> Result<(), TestCaseError> {
    let reference = brute_force(case);
    match (planner.plan(&case.items), reference) {
        (Ok(plan), Some(best)) => {
            let homes: Vec<TierId> = plan.assignments().map(|(_, t)| t).collect();
            let got = planned_cost(case, &homes);
            prop_assert!(
                (got - best).abs() <= 1e-9 * best.abs().max(1e-9),
                "planner cost {got} vs brute force {best}; homes {homes:?}"
            );
            prop_assert!((plan.seconds_per_step() - got).abs() <= 1e-9 * got.abs().max(1e-9));
        }
        (Err(e), Some(best)) => {
            return Err(TestCaseError::fail(format!(
                "planner failed ({e}) but brute force found cost {best}"
            )))
        }
        (Ok(plan), None) => {
            let homes: Vec<TierId> = plan.assignments().map(|(_, t)| t).collect();
            return Err(TestCaseError::fail(format!(
                "brute force found no feasible placement but the planner returned {homes:?}"
            )));
        }
        (Err(_), None) => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    /// Unlimited slowest tier (storage), weights including 0, all constraint kinds.
    #[test]
    fn exact_planner_matches_brute_force(case in case_strategy(true, true)) {
        let planner = Planner::new(case.tiers.clone()).unwrap();
        check(&case, &planner)?;
    }

    /// Every tier limited (feasibility can fail), weights > 0.
    #[test]
    fn exact_planner_matches_brute_force_limited_tiers(case in case_strategy(false, false)) {
        let planner = Planner::new(case.tiers.clone()).unwrap();
        check(&case, &planner)?;
        if let Ok(plan) = planner.plan(&case.items) {
            prop_assert_eq!(plan.method(), PlanMethod::Exact);
        }
    }

    /// The greedy path (exact search off) is optimal for equal-size items without constraints.
    #[test]
    fn greedy_matches_brute_force_for_equal_sizes(
        tiers in tier_strategy(true),
        size in 1u64..150,
        weights in prop::collection::vec(0.1f64..3.0, 1..=7),
    ) {
        let items: Vec<Item<u8>> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Item::new(i as u8, size, w))
            .collect();
        let case = Case { tiers: tiers.clone(), items };
        let planner = Planner::new(tiers).unwrap().with_options(PlanOptions {
            exact_max_items: 0,
            ..PlanOptions::default()
        });
        prop_assert_eq!(planner.plan(&case.items).unwrap().method(), PlanMethod::Greedy);
        check(&case, &planner)?;
    }
}

/// A case where greedy by density alone is not optimal (a big item with the best density
/// blocks two smaller ones worth more together), so the exact search must take over.
#[test]
fn exact_beats_density_greedy_on_knapsack_trap() {
    let tiers = vec![Tier::new("fast", 100, 100.0), Tier::unlimited("slow", 1.0)];
    // Savings per item = size * weight * (1/1 - 1/100).
    let items = vec![
        Item::new(0u8, 60, 1.0), // density 0.99 * 1.0
        Item::new(1u8, 50, 0.9), // density 0.99 * 0.9, two of them fill 100
        Item::new(2u8, 50, 0.9),
    ];
    let case = Case {
        tiers: tiers.clone(),
        items: items.clone(),
    };
    let best = brute_force(&case).unwrap();
    let plan = Planner::new(tiers).unwrap().plan(&items).unwrap();
    assert_eq!(plan.method(), PlanMethod::Exact);
    assert_eq!(plan.items_in(TierId(0)), vec![&1u8, &2u8]);
    assert!((plan.seconds_per_step() - best).abs() < 1e-12);
}
