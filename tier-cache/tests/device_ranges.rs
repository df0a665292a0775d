//! The layer-range cut for several GPUs against brute force over every cut (up to 10 layers,
//! 4 devices): the reference enumerates all compositions of the layers into non-empty
//! contiguous ranges and computes each device's time straight from the formula
//! `max(0, bytes - budget) / link + bytes / compute`; `plan_ranges` must reach the same
//! smallest bottleneck and, among those, the same smallest total.

use proptest::prelude::*;
use tier_cache::{plan_ranges, DeviceShare, PlanError};

fn time(d: &DeviceShare, bytes: u64) -> f64 {
    let streamed = bytes.max(d.budget) - d.budget;
    streamed as f64 / d.link_bw + bytes as f64 / d.compute_bw
}

/// Every cut of `n` layers into `g` non-empty ranges, as the ranges' end points.
fn cuts(n: usize, g: usize) -> Vec<Vec<usize>> {
    if g == 1 {
        return vec![vec![n]];
    }
    let mut out = Vec::new();
    for first in 1..=(n - (g - 1)) {
        for rest in cuts(n - first, g - 1) {
            let mut c = vec![first];
            c.extend(rest.iter().map(|e| e + first));
            out.push(c);
        }
    }
    out
}

fn reference(layers: &[u64], devices: &[DeviceShare]) -> (f64, f64) {
    let mut best = (f64::INFINITY, f64::INFINITY);
    for ends in cuts(layers.len(), devices.len()) {
        let mut start = 0;
        let (mut worst, mut total) = (0f64, 0f64);
        for (d, &end) in devices.iter().zip(&ends) {
            let t = time(d, layers[start..end].iter().sum());
            worst = worst.max(t);
            total += t;
            start = end;
        }
        if worst < best.0 || (worst == best.0 && total < best.1) {
            best = (worst, total);
        }
    }
    best
}

fn device() -> impl Strategy<Value = DeviceShare> {
    (0u64..300, 1.0f64..50.0, 50.0f64..500.0).prop_map(|(budget, link_bw, compute_bw)| {
        DeviceShare {
            budget,
            link_bw,
            compute_bw,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn the_cut_is_as_good_as_the_best_of_every_cut(
        layers in proptest::collection::vec(1u64..120, 1..=10),
        devices in proptest::collection::vec(device(), 1..=4),
    ) {
        prop_assume!(layers.len() >= devices.len());
        let plan = plan_ranges(&layers, &devices).unwrap();
        // Contiguous, in order, non-empty, covering every layer.
        prop_assert_eq!(plan.ranges.len(), devices.len());
        prop_assert_eq!(plan.ranges[0].start, 0);
        prop_assert_eq!(plan.ranges.last().unwrap().end, layers.len());
        for w in plan.ranges.windows(2) {
            prop_assert_eq!(w[0].end, w[1].start);
        }
        prop_assert!(plan.ranges.iter().all(|r| !r.is_empty()));
        // Each device's time is the formula's for its range.
        for ((d, r), t) in devices.iter().zip(&plan.ranges).zip(&plan.seconds) {
            let want = time(d, layers[r.clone()].iter().sum());
            prop_assert!((t - want).abs() <= 1e-12 * want.max(1.0), "{} vs {}", t, want);
        }
        let (worst, total) = reference(&layers, &devices);
        let got_total: f64 = plan.seconds.iter().sum();
        prop_assert!((plan.bottleneck_s - worst).abs() <= 1e-9 * worst, "{} vs {}", plan.bottleneck_s, worst);
        prop_assert!((got_total - total).abs() <= 1e-9 * total.max(1.0), "{} vs {}", got_total, total);
    }
}

/// A Llama-3.1-70B Q4_K_M (80 layers of 0.53 GB) on two identical GPUs with 12 GiB each for
/// layers: the cut is in the middle, and with both links streaming at once a step takes a
/// fraction of one GPU's time with the same 12 GiB (which streams everything else over one link).
#[test]
fn two_equal_gpus_split_a_70b_in_the_middle() {
    let layers = vec![531_000_000u64; 80];
    let gpu = DeviceShare {
        budget: 12 << 30,
        link_bw: 53e9,
        compute_bw: 3.0e12,
    };
    let one = plan_ranges(&layers, &[gpu]).unwrap();
    let two = plan_ranges(&layers, &[gpu, gpu]).unwrap();
    assert_eq!(two.ranges, vec![0..40, 40..80]);
    let single: u64 = layers.iter().sum();
    assert!((one.bottleneck_s - time(&gpu, single)).abs() < 1e-12);
    let speedup = one.bottleneck_s / two.bottleneck_s;
    assert!(speedup > 1.8, "two links at once: {speedup:.2}x one");
}

/// A GPU with a slower link and no room gets fewer layers: its share streams every byte.
#[test]
fn a_slower_link_gets_a_shorter_range() {
    let layers = vec![100u64; 20];
    let fast = DeviceShare {
        budget: 400,
        link_bw: 50.0,
        compute_bw: 1e6,
    };
    let slow = DeviceShare {
        budget: 0,
        link_bw: 10.0,
        compute_bw: 1e6,
    };
    let p = plan_ranges(&layers, &[fast, slow]).unwrap();
    assert!(p.ranges[1].len() < p.ranges[0].len(), "{:?}", p.ranges);
    let (worst, _) = reference(&layers[..], &[fast, slow]);
    assert!((p.bottleneck_s - worst).abs() < 1e-9);
}

#[test]
fn bad_input_is_a_typed_error() {
    let d = DeviceShare {
        budget: 0,
        link_bw: 1.0,
        compute_bw: 1.0,
    };
    assert_eq!(plan_ranges(&[1, 2], &[]).unwrap_err(), PlanError::NoDevices);
    assert!(matches!(
        plan_ranges(&[1], &[d, d]).unwrap_err(),
        PlanError::TooFewLayers {
            layers: 1,
            devices: 2
        }
    ));
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = plan_ranges(&[1, 2], &[d, DeviceShare { link_bw: bad, ..d }]).unwrap_err();
        assert!(
            matches!(e, PlanError::InvalidDevice { device: 1, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("link bandwidth"), "{e}");
    }
}
