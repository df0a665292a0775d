//! The one CPU argmax (`sampler::argmax`): a NaN never wins, the lowest index wins ties, and
//! the greedy sampler and the speculative decoder choose the same token.

use llama_model::sampler::{argmax, Sampler, SamplerConfig};
use proptest::prelude::*;

#[test]
fn nan_never_wins_wherever_it_sits() {
    let nan = f32::NAN;
    assert_eq!(argmax(&[nan, 1.0, 2.0]), 2);
    assert_eq!(argmax(&[nan, -5.0]), 1);
    assert_eq!(argmax(&[3.0, nan, 1.0]), 0);
    assert_eq!(argmax(&[1.0, 2.0, nan]), 1);
    // -inf is an ordinary (smallest) value, NaN is not a value.
    assert_eq!(argmax(&[nan, f32::NEG_INFINITY]), 1);
    assert_eq!(argmax(&[f32::NEG_INFINITY, nan, f32::INFINITY]), 2);
    // A negative-sign NaN (sorted below -inf by total_cmp) and a positive one (above +inf).
    assert_eq!(argmax(&[-nan, 0.5, nan]), 1);
}

#[test]
fn ties_go_to_the_lowest_index_and_degenerate_inputs_give_zero() {
    assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    assert_eq!(argmax(&[0.0, -0.0]), 0);
    assert_eq!(argmax(&[-0.0, 0.0]), 0);
    assert_eq!(argmax(&[]), 0);
    assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
}

fn logit() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -30.0f32..30.0,
        1 => Just(f32::NAN),
        1 => Just(f32::NEG_INFINITY),
        1 => prop::sample::select(vec![0.0f32, 1.0, -1.0]),
    ]
}

proptest! {
    #[test]
    fn the_winner_is_the_first_largest_non_nan(v in prop::collection::vec(logit(), 1..200)) {
        let i = argmax(&v) as usize;
        if v.iter().all(|x| x.is_nan()) {
            prop_assert_eq!(i, 0);
        } else {
            prop_assert!(!v[i].is_nan());
            for (j, &x) in v.iter().enumerate() {
                if !x.is_nan() {
                    prop_assert!(x <= v[i], "{} at {} beats {} at {}", x, j, v[i], i);
                    if j < i {
                        prop_assert!(x < v[i], "an earlier equal maximum at {}", j);
                    }
                }
            }
        }
    }

    #[test]
    fn greedy_sampling_picks_the_argmax(v in prop::collection::vec(logit(), 1..200)) {
        // The sampler refuses logits with no finite value: only compare where one exists.
        prop_assume!(v.iter().any(|x| x.is_finite()));
        let mut s = Sampler::new(SamplerConfig::default());
        prop_assert_eq!(s.sample(&v, &[]).unwrap(), argmax(&v));
        prop_assert_eq!(
            llama_model::speculative::probabilities(&v, 0.0)
                .iter()
                .position(|&p| p == 1.0)
                .unwrap() as u32,
            argmax(&v)
        );
    }
}
