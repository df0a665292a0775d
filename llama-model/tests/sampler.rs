//! Sampler behaviour on small hand-made logits, against probabilities computed here by hand
//! (softmax of the given logits), over many seeded draws.

use llama_model::sampler::{Sampler, SamplerConfig, SamplerError};

const DRAWS: usize = 40_000;

/// Frequencies of each token over `DRAWS` draws.
fn frequencies(cfg: SamplerConfig, logits: &[f32], history: &[u32]) -> Vec<f64> {
    let mut s = Sampler::new(cfg);
    let mut counts = vec![0usize; logits.len()];
    for _ in 0..DRAWS {
        counts[s.sample(logits, history).unwrap() as usize] += 1;
    }
    counts.iter().map(|c| *c as f64 / DRAWS as f64).collect()
}

/// Binomial standard deviation of a frequency is <= 0.0025 at 40k draws; 0.012 is ~5 sigma.
fn assert_close(got: &[f64], want: &[f64]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() < 0.012,
            "token {i}: frequency {g:.4}, expected {w:.4}"
        );
    }
}

fn ln(v: &[f64]) -> Vec<f32> {
    v.iter().map(|p| p.ln() as f32).collect()
}

fn sampling(temperature: f32) -> SamplerConfig {
    SamplerConfig {
        temperature,
        seed: 42,
        ..SamplerConfig::default()
    }
}

#[test]
fn greedy_picks_the_argmax_and_lowest_id_on_ties() {
    let mut s = Sampler::new(SamplerConfig::default());
    assert_eq!(s.sample(&[0.1, 3.0, -2.0, 2.9], &[]).unwrap(), 1);
    assert_eq!(s.sample(&[1.0, 5.0, 5.0], &[]).unwrap(), 1);
    assert_eq!(s.sample(&[f32::NAN, -1.0], &[]).unwrap(), 1);
}

#[test]
fn temperature_one_follows_the_softmax() {
    // Logits ln(p) give probabilities p exactly.
    let p = [0.1, 0.2, 0.3, 0.4];
    assert_close(&frequencies(sampling(1.0), &ln(&p), &[]), &p);
}

#[test]
fn temperature_sharpens_and_flattens() {
    let p = [0.1, 0.2, 0.3, 0.4];
    // T = 0.5: p^2 normalised = [1, 4, 9, 16] / 30.
    let sharp = [1.0 / 30.0, 4.0 / 30.0, 9.0 / 30.0, 16.0 / 30.0];
    assert_close(&frequencies(sampling(0.5), &ln(&p), &[]), &sharp);
    // T = 2: sqrt(p) normalised.
    let r: Vec<f64> = p.iter().map(|x: &f64| x.sqrt()).collect();
    let sum: f64 = r.iter().sum();
    let flat: Vec<f64> = r.iter().map(|x| x / sum).collect();
    assert_close(&frequencies(sampling(2.0), &ln(&p), &[]), &flat);
}

#[test]
fn top_k_keeps_only_the_k_largest_renormalised() {
    let p = [0.05, 0.4, 0.1, 0.3, 0.15];
    let cfg = SamplerConfig {
        top_k: 2,
        ..sampling(1.0)
    };
    let f = frequencies(cfg, &ln(&p), &[]);
    assert_eq!(f[0] + f[2] + f[4], 0.0, "picked outside the top 2: {f:?}");
    assert_close(&f, &[0.0, 0.4 / 0.7, 0.0, 0.3 / 0.7, 0.0]);
}

#[test]
fn top_p_keeps_the_smallest_nucleus() {
    // Sorted probabilities 0.5, 0.3, 0.15, 0.05: cumulative 0.5, 0.8 -> top_p 0.75 keeps two.
    let p = [0.15, 0.5, 0.05, 0.3];
    let cfg = SamplerConfig {
        top_p: 0.75,
        ..sampling(1.0)
    };
    assert_close(
        &frequencies(cfg, &ln(&p), &[]),
        &[0.0, 0.5 / 0.8, 0.0, 0.3 / 0.8],
    );
}

#[test]
fn min_p_drops_tokens_below_a_fraction_of_the_best() {
    // Threshold 0.25 * 0.5 = 0.125: keeps 0.5, 0.3, 0.15.
    let p = [0.15, 0.5, 0.05, 0.3];
    let cfg = SamplerConfig {
        min_p: 0.25,
        ..sampling(1.0)
    };
    assert_close(
        &frequencies(cfg, &ln(&p), &[]),
        &[0.15 / 0.95, 0.5 / 0.95, 0.0, 0.3 / 0.95],
    );
}

#[test]
fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
    let greedy_penalised = |logits: &[f32], history: &[u32]| {
        Sampler::new(SamplerConfig {
            repeat_penalty: 1.2,
            ..SamplerConfig::default()
        })
        .sample(logits, history)
        .unwrap()
    };
    // 2.0 / 1.2 = 1.67 < 1.9: the seen token loses.
    assert_eq!(greedy_penalised(&[2.0, 1.9], &[0]), 1);
    assert_eq!(greedy_penalised(&[2.0, 1.9], &[]), 0);
    // -1.0 * 1.2 = -1.2 < -1.1: a negative seen logit moves down, not up.
    assert_eq!(greedy_penalised(&[-1.0, -1.1], &[0, 0]), 1);
    // Only the last `repeat_last_n` tokens count.
    let mut s = Sampler::new(SamplerConfig {
        repeat_penalty: 1.2,
        repeat_last_n: 1,
        ..SamplerConfig::default()
    });
    assert_eq!(s.sample(&[2.0, 1.9, 0.0], &[0, 2]).unwrap(), 0);
    // Out-of-vocabulary history ids are ignored.
    assert_eq!(greedy_penalised(&[2.0, 1.9], &[7]), 0);
}

#[test]
fn same_seed_same_tokens_other_seed_other_tokens() {
    let logits = ln(&[0.25, 0.25, 0.25, 0.25]);
    let run = |seed| {
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            seed,
            ..SamplerConfig::default()
        });
        (0..64)
            .map(|_| s.sample(&logits, &[]).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    // Two seeds agreeing on 64 uniform 4-way draws has probability 4^-64.
    assert_ne!(run(7), run(8));
}

#[test]
fn empty_and_broken_logits_are_errors() {
    let mut s = Sampler::new(sampling(1.0));
    assert_eq!(s.sample(&[], &[]), Err(SamplerError::Empty));
    assert_eq!(
        s.sample(&[f32::NAN, f32::NEG_INFINITY], &[]),
        Err(SamplerError::NoFiniteLogit)
    );
}
