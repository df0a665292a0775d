//! Self-speculative decoding: the acceptance rule reproduces the target distribution
//! (chi-square over many trials), the adaptive-K arithmetic, and greedy output identical to
//! plain greedy decoding on the real model.

mod skipspec_common;

use llama_model::speculative::{
    accept_or_resample, argmax, probabilities, sample_index, AdaptiveConfig, AdaptiveK,
    SelfSpeculative, SpecConfig, Verdict,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Pearson chi-square statistic of `counts` against probabilities `p`.
fn chi_square(counts: &[u64], p: &[f64]) -> f64 {
    let n: u64 = counts.iter().sum();
    counts
        .iter()
        .zip(p)
        .map(|(&c, &pi)| {
            let e = pi * n as f64;
            (c as f64 - e).powi(2) / e
        })
        .sum()
}

/// Upper quantile of chi-square with `k` degrees of freedom at tail probability 1e-4, by the
/// Wilson-Hilferty approximation (z = 3.719 for 1e-4).
fn chi_square_limit(k: usize) -> f64 {
    let k = k as f64;
    let z = 3.719;
    k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

fn run_rule(p: &[f32], q: &[f32], trials: usize, seed: u64) -> (Vec<u64>, f64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut counts = vec![0u64; p.len()];
    let mut accepted = 0usize;
    for _ in 0..trials {
        let x = sample_index(q, &mut rng);
        let out = match accept_or_resample(p, q, x, &mut rng) {
            Verdict::Accept => {
                accepted += 1;
                x
            }
            Verdict::Reject(t) => t,
        };
        counts[out] += 1;
    }
    (counts, accepted as f64 / trials as f64)
}

#[test]
fn acceptance_rule_output_is_distributed_as_the_target() {
    let p = [0.10f32, 0.20, 0.30, 0.25, 0.15, 0.0];
    let q = [0.40f32, 0.10, 0.10, 0.10, 0.25, 0.05];
    let trials = 200_000;
    let (counts, acc) = run_rule(&p, &q, trials, 7);
    assert_eq!(counts[5], 0, "a token with p = 0 must never come out");
    let p64: Vec<f64> = p[..5].iter().map(|&x| f64::from(x)).collect();
    let chi = chi_square(&counts[..5], &p64);
    let limit = chi_square_limit(4);
    assert!(
        chi < limit,
        "chi-square {chi} >= {limit}: output is not distributed as p"
    );
    // Expected acceptance is sum_x min(p(x), q(x)) = 1 - TV(p, q).
    let expect: f64 = p.iter().zip(&q).map(|(&a, &b)| f64::from(a.min(b))).sum();
    let sd = (expect * (1.0 - expect) / trials as f64).sqrt();
    assert!(
        (acc - expect).abs() < 5.0 * sd,
        "acceptance {acc} vs {expect}"
    );

    // Negative control: keeping every draft gives q, which the same test rejects.
    let mut rng = StdRng::seed_from_u64(8);
    let mut naive = [0u64; 6];
    for _ in 0..trials {
        naive[sample_index(&q, &mut rng)] += 1;
    }
    assert!(chi_square(&naive[..5], &p64) > 100.0 * limit);
}

#[test]
fn acceptance_rule_with_equal_distributions_always_accepts() {
    let p = [0.5f32, 0.25, 0.125, 0.125];
    let (counts, acc) = run_rule(&p, &p, 10_000, 1);
    assert_eq!(acc, 1.0);
    assert_eq!(counts.iter().sum::<u64>(), 10_000);
}

#[test]
fn acceptance_rule_with_disjoint_supports_always_resamples_from_p() {
    let p = [0.0f32, 0.0, 0.6, 0.4];
    let q = [0.7f32, 0.3, 0.0, 0.0];
    let (counts, acc) = run_rule(&p, &q, 50_000, 3);
    assert_eq!(acc, 0.0);
    assert_eq!(counts[0] + counts[1], 0);
    let chi = chi_square(&counts[2..], &[0.6, 0.4]);
    assert!(chi < chi_square_limit(1));
}

#[test]
fn probabilities_and_argmax() {
    let l = [0.0f32, (2.0f32).ln(), (3.0f32).ln()];
    let p = probabilities(&l, 1.0);
    for (a, b) in p.iter().zip([1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0]) {
        assert!((f64::from(*a) - b).abs() < 1e-6);
    }
    // Temperature 0.5 squares the odds: 1:4:9.
    let p = probabilities(&l, 0.5);
    assert!((f64::from(p[2]) - 9.0 / 14.0).abs() < 1e-6);
    assert_eq!(probabilities(&l, 0.0), vec![0.0, 0.0, 1.0]);
    assert_eq!(argmax(&[1.0, f32::NAN, 3.0, 3.0]), 2);
}

#[test]
fn adaptive_k_expected_tokens_and_choice() {
    // E[tokens] = sum_{i=0..k} a^i, summed directly.
    for &a in &[0.0, 0.3, 0.8, 0.95] {
        for k in 0..8 {
            let direct: f64 = (0..=k).map(|i| f64::powi(a, i as i32)).sum();
            assert!((AdaptiveK::expected_tokens(a, k) - direct).abs() < 1e-12);
        }
    }
    assert_eq!(AdaptiveK::expected_tokens(1.0, 4), 5.0);
    let cfg = AdaptiveConfig {
        k_min: 0,
        k_max: 8,
        draft_cost: 0.1,
        verify_cost_per_token: 0.0,
        decay: 0.9,
    };
    // Always rejected drafts: drafting does not pay.
    let mut low = AdaptiveK::new(cfg);
    for _ in 0..50 {
        low.observe(0, true);
    }
    assert!(low.acceptance() < 0.1);
    assert_eq!(low.best_k(), 0);
    // Always accepted drafts: draft as much as allowed.
    let mut high = AdaptiveK::new(cfg);
    for _ in 0..50 {
        high.observe(8, false);
    }
    assert!(high.acceptance() > 0.95);
    assert_eq!(high.best_k(), 8);
    // The choice is the brute-force best over k at the estimate.
    let mut mid = AdaptiveK::new(cfg);
    for _ in 0..20 {
        mid.observe(2, true);
    }
    let a = mid.acceptance();
    let brute = (0..=8)
        .max_by(|&x, &y| {
            let f = |k: usize| AdaptiveK::expected_tokens(a, k) / (1.0 + 0.1 * k as f64);
            f(x).total_cmp(&f(y))
        })
        .unwrap();
    assert_eq!(mid.best_k(), brute);
}

fn plain_greedy(model: &mut llama_model::cpu::Model, prompt: &[u32], n: usize) -> Vec<u32> {
    model.reset();
    let mut out = Vec::new();
    let mut logits = model.prefill(prompt).unwrap();
    while out.len() < n {
        let t = argmax(&logits);
        out.push(t);
        if out.len() < n {
            logits = model.decode(t).unwrap();
        }
    }
    out
}

#[test]
fn greedy_speculative_equals_plain_greedy_on_the_real_model() {
    let Some((mut model, _)) = skipspec_common::open_model() else {
        return;
    };
    let tok = llama_model::Tokenizer::from_gguf(model.gguf().metadata()).unwrap();
    let prompt = tok
        .encode_prompt("<|im_start|>user\nWrite a short story about a lighthouse.<|im_end|>\n<|im_start|>assistant\n")
        .unwrap();
    let n = 32;
    let plain = plain_greedy(&mut model, &prompt, n);
    let layers = model.config().n_layers;
    let cases: Vec<(usize, Vec<usize>, usize, bool)> = vec![
        (4, vec![], 3, false),
        (16, vec![], 2, false),
        (26, vec![], 5, false),
        (layers, vec![13], 4, false),
        (20, vec![3, 12], 3, true),
        (layers, vec![], 6, false),
    ];
    for (d, skip, k, adaptive) in cases {
        let cfg = SpecConfig {
            draft_layers: d,
            draft_skip: skip.clone(),
            k,
            adaptive: adaptive.then(AdaptiveConfig::default),
            temperature: 0.0,
            seed: 0,
            max_context: 512,
        };
        let mut spec = SelfSpeculative::new(&model, cfg).unwrap();
        let out = spec.generate(&prompt, n, &|_| false, &mut |_| {}).unwrap();
        let s = spec.stats();
        eprintln!(
            "D={d} skip={skip:?} K={k} adaptive={adaptive}: acceptance {:.1}%, {:.2} tokens/verify",
            s.acceptance_rate() * 100.0,
            s.tokens_per_verify()
        );
        assert_eq!(out, plain, "D={d} skip={skip:?} K={k}");
        assert_eq!(
            s.generated + 1,
            n,
            "every token but the first comes from a verify pass"
        );
        if d == layers && skip.is_empty() {
            // The draft is the whole model: every draft is accepted.
            assert_eq!(s.acceptance_rate(), 1.0);
        }
    }
    // Stopping on a token: the output ends at its first occurrence.
    let stop_at = plain[5];
    let mut spec = SelfSpeculative::new(&model, SpecConfig::default()).unwrap();
    let out = spec
        .generate(&prompt, n, &|t| t == stop_at, &mut |_| {})
        .unwrap();
    let first = plain.iter().position(|&t| t == stop_at).unwrap();
    assert_eq!(out, plain[..=first].to_vec());
    assert!(SelfSpeculative::new(
        &model,
        SpecConfig {
            draft_layers: 0,
            ..SpecConfig::default()
        }
    )
    .is_err());
    assert!(SelfSpeculative::new(
        &model,
        SpecConfig {
            draft_layers: layers + 1,
            ..SpecConfig::default()
        }
    )
    .is_err());
}
