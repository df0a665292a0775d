//! Presence and frequency penalties against a reference computed here in f64 by hand:
//! `logit - count * frequency - (count > 0) * presence` over the last `repeat_last_n` history
//! tokens, after the repetition penalty; greedy picks and sampled frequencies over many draws.

use llama_model::sampler::{Sampler, SamplerConfig};

const DRAWS: usize = 40_000;

fn frequencies(cfg: SamplerConfig, logits: &[f32], history: &[u32]) -> Vec<f64> {
    let mut s = Sampler::new(cfg);
    let mut counts = vec![0usize; logits.len()];
    for _ in 0..DRAWS {
        counts[s.sample(logits, history).unwrap() as usize] += 1;
    }
    counts.iter().map(|c| *c as f64 / DRAWS as f64).collect()
}

/// The reference: penalised logits in f64, then softmax at `temperature`.
fn reference(
    logits: &[f32],
    history: &[u32],
    window: usize,
    repeat: f64,
    presence: f64,
    frequency: f64,
    temperature: f64,
) -> Vec<f64> {
    let recent = &history[history.len().saturating_sub(window)..];
    let adjusted: Vec<f64> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            let n = recent.iter().filter(|&&t| t as usize == i).count() as f64;
            let mut l = f64::from(l);
            if n > 0.0 {
                l = if l > 0.0 { l / repeat } else { l * repeat };
                l -= n * frequency + presence;
            }
            l / temperature
        })
        .collect();
    let max = adjusted.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = adjusted.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

fn assert_close(got: &[f64], want: &[f64]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() < 0.012,
            "token {i}: frequency {g:.4}, expected {w:.4} (got {got:?}, want {want:?})"
        );
    }
}

fn greedy(presence: f32, frequency: f32) -> SamplerConfig {
    SamplerConfig {
        presence_penalty: presence,
        frequency_penalty: frequency,
        ..SamplerConfig::default()
    }
}

#[test]
fn greedy_pick_follows_the_penalised_logits() {
    let logits = [3.0f32, 2.5, 0.0];
    // Token 0 seen twice: 3.0 - 2 * 0.3 = 2.4 < 2.5.
    assert_eq!(
        Sampler::new(greedy(0.0, 0.3))
            .sample(&logits, &[0, 0])
            .unwrap(),
        1
    );
    // Seen once: 3.0 - 0.3 = 2.7 > 2.5.
    assert_eq!(
        Sampler::new(greedy(0.0, 0.3))
            .sample(&logits, &[0])
            .unwrap(),
        0
    );
    // Presence counts once however often: 3.0 - 0.4 = 2.6 > 2.5 even when seen 5 times.
    assert_eq!(
        Sampler::new(greedy(0.4, 0.0))
            .sample(&logits, &[0; 5])
            .unwrap(),
        0
    );
    assert_eq!(
        Sampler::new(greedy(0.6, 0.0))
            .sample(&logits, &[0])
            .unwrap(),
        1
    );
    // A negative penalty favours seen tokens: 0.0 + 2 * 1.6 = 3.2 > 3.0.
    assert_eq!(
        Sampler::new(greedy(0.0, -1.6))
            .sample(&logits, &[2, 2])
            .unwrap(),
        2
    );
}

#[test]
fn only_the_last_repeat_last_n_tokens_count() {
    let logits = [3.0f32, 2.5];
    let cfg = SamplerConfig {
        repeat_last_n: 2,
        ..greedy(0.0, 0.3)
    };
    // Token 0 four times, but only two of them in the window: 3.0 - 0.6 = 2.4.
    assert_eq!(
        Sampler::new(cfg.clone())
            .sample(&logits, &[0, 0, 1, 0, 0])
            .unwrap(),
        1
    );
    // One in the window: 2.7.
    assert_eq!(
        Sampler::new(cfg).sample(&logits, &[0, 0, 0, 1, 0]).unwrap(),
        0
    );
}

#[test]
fn sampled_frequencies_match_the_f64_reference() {
    let logits = [1.0f32, 0.5, -0.25, 0.8, 0.1];
    let history = [0u32, 0, 3, 4, 0, 2, 9];
    for (repeat, presence, frequency, t) in [
        (1.0f32, 0.5f32, 0.0f32, 1.0f32),
        (1.0, 0.0, 0.4, 0.8),
        (1.0, 0.3, 0.2, 1.0),
        (1.3, 0.3, -0.2, 1.2),
    ] {
        let cfg = SamplerConfig {
            temperature: t,
            repeat_penalty: repeat,
            presence_penalty: presence,
            frequency_penalty: frequency,
            seed: 7,
            ..SamplerConfig::default()
        };
        let got = frequencies(cfg, &logits, &history);
        let want = reference(
            &logits,
            &history,
            64,
            f64::from(repeat),
            f64::from(presence),
            f64::from(frequency),
            f64::from(t),
        );
        assert_close(&got, &want);
    }
}

#[test]
fn zero_penalties_draw_exactly_what_the_plain_sampler_draws() {
    let logits = [1.0f32, 0.5, -0.25, 0.8, 0.1];
    let history = [0u32, 3, 3, 1];
    let plain = SamplerConfig {
        temperature: 0.9,
        repeat_penalty: 1.2,
        seed: 11,
        ..SamplerConfig::default()
    };
    // Reference: the repetition penalty alone, in f64, as the sampler documents it.
    let want = reference(&logits, &history, 64, 1.2, 0.0, 0.0, 0.9);
    assert_close(&frequencies(plain.clone(), &logits, &history), &want);
    let zero = SamplerConfig {
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
        ..plain.clone()
    };
    let (mut a, mut b) = (Sampler::new(plain), Sampler::new(zero));
    for _ in 0..1000 {
        assert_eq!(a.sample(&logits, &history), b.sample(&logits, &history));
    }
}
