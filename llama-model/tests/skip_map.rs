//! Layer skipping: cosine and percentile math against independent references, skip-map
//! invariants, file round trip, model fingerprint, and the runner on the real model.

mod skipspec_common;

use llama_model::skip::{
    calibrate, cosine, model_fingerprint, percentile, Calibration, LayerPlan, LayerStat, Logits,
    Runner, SkipError, SkipMap,
};
use sha2::{Digest, Sha256};

#[test]
fn cosine_matches_known_angles() {
    // Vectors at a known angle: cos(angle) exactly, whatever the lengths.
    for deg in [0.0f64, 10.0, 45.0, 90.0, 135.0, 180.0] {
        let t = deg.to_radians();
        let a = [3.0f32, 0.0, 0.0];
        let b = [(2.5 * t.cos()) as f32, (2.5 * t.sin()) as f32, 0.0];
        assert!((cosine(&a, &b) - t.cos()).abs() < 1e-6, "angle {deg}");
    }
    // A zero vector has no direction: defined as 1 (unchanged).
    assert_eq!(cosine(&[0.0, 0.0], &[1.0, 2.0]), 1.0);
}

#[test]
fn cosine_matches_independent_formula() {
    // cos = 1 - |a/|a| - b/|b||^2 / 2, an identity computed a different way.
    let a: Vec<f32> = (0..576)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
        .collect();
    let b: Vec<f32> = (0..576)
        .map(|i| ((i * 53 % 89) as f32 - 40.0) / 3.0 + a[i])
        .collect();
    let na = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let nb = b.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let d2: f64 = a
        .iter()
        .zip(&b)
        .map(|(&x, &y)| (f64::from(x) / na - f64::from(y) / nb).powi(2))
        .sum();
    assert!((cosine(&a, &b) - (1.0 - d2 / 2.0)).abs() < 1e-9);
}

#[test]
fn percentile_matches_numpy() {
    // Values printed by numpy.percentile (linear interpolation, numpy's default).
    let v: Vec<f64> = (1..=10).map(f64::from).collect();
    assert!((percentile(&v, 5.0) - 1.45).abs() < 1e-12);
    assert!((percentile(&[3.0, 1.0, 2.0, 10.0], 50.0) - 2.5).abs() < 1e-12);
    assert!((percentile(&[0.5, 0.9, 0.1, 0.7, 0.3], 90.0) - 0.82).abs() < 1e-12);
    assert!(percentile(&[], 5.0).is_nan());
}

fn synthetic(p5: &[f64]) -> Calibration {
    Calibration {
        layers: p5
            .iter()
            .enumerate()
            .map(|(layer, &p)| LayerStat {
                layer,
                mean: p,
                p5: p,
                min: p,
            })
            .collect(),
        tokens: 1,
    }
}

#[test]
fn maps_never_skip_first_or_last_and_respect_count_and_threshold() {
    // The first and last layers look the most skippable: they must still never be chosen.
    let cal = synthetic(&[0.999, 0.5, 0.99, 0.97, 0.98, 0.2, 0.999]);
    let r = cal.ranking();
    assert_eq!(r, vec![2, 4, 3, 1, 5]);
    let m = cal.map_for_count("fp", 3).unwrap();
    assert_eq!(m.skipped, vec![2, 3, 4]);
    let m = cal.map_for_threshold("fp", 0.975).unwrap();
    assert_eq!(m.skipped, vec![2, 4]);
    for s in &m.skipped {
        assert!(cal.layers[*s].p5 >= 0.975);
    }
    assert_eq!(
        cal.map_for_count("fp", 5).unwrap().skipped,
        vec![1, 2, 3, 4, 5]
    );
    assert!(matches!(
        cal.map_for_count("fp", 6),
        Err(SkipError::Invalid(_))
    ));
    assert!(cal.map_for_threshold("fp", 1.5).unwrap().skipped.is_empty());
    // Hand-made maps: first, last and out-of-range layers are refused.
    for bad in [vec![0], vec![6], vec![7], vec![2, 0]] {
        assert!(matches!(
            SkipMap::new("fp".into(), 7, bad, String::new()),
            Err(SkipError::Invalid(_))
        ));
    }
}

#[test]
fn json_round_trip_and_malformed_input() {
    let m = SkipMap::new("abc".into(), 30, vec![13, 3, 3], "test".into()).unwrap();
    assert_eq!(m.skipped, vec![3, 13]);
    assert_eq!(SkipMap::from_json(&m.to_json()).unwrap(), m);
    for bad in [
        "",
        "[]",
        r#"{"format":"other","model_fingerprint":"a","n_layers":3,"skipped":[],"rule":""}"#,
        r#"{"format":"vramless-skipmap-1","model_fingerprint":"a","n_layers":3,"skipped":[2],"rule":""}"#,
        r#"{"format":"vramless-skipmap-1","model_fingerprint":"a","n_layers":30,"skipped":[-1],"rule":""}"#,
        r#"{"format":"vramless-skipmap-1","n_layers":30,"skipped":[],"rule":""}"#,
    ] {
        assert!(
            matches!(SkipMap::from_json(bad), Err(SkipError::Invalid(_))),
            "{bad}"
        );
    }
}

#[test]
fn fingerprint_is_sha256_of_size_and_bytes_and_mismatch_is_typed() {
    let dir = std::env::temp_dir().join(format!("skipmap-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("m.gguf");
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&model, &bytes).unwrap();
    // Small file: the fingerprint covers the size and the whole file.
    let mut h = Sha256::new();
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(&bytes);
    let expect: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let fp = model_fingerprint(&model).unwrap();
    assert_eq!(fp, expect);

    let map = SkipMap::new(fp, 10, vec![4, 5], "t".into()).unwrap();
    let path = SkipMap::default_path(&model);
    assert_eq!(path, dir.join("m.gguf.skipmap.json"));
    map.save(&path).unwrap();
    assert_eq!(SkipMap::load_for(&path, &model, 10).unwrap(), map);
    assert!(matches!(
        SkipMap::load_for(&path, &model, 12),
        Err(SkipError::Invalid(_))
    ));
    // One byte of the model changes: the map no longer belongs to it.
    let mut changed = bytes.clone();
    changed[10] ^= 1;
    std::fs::write(&model, &changed).unwrap();
    assert!(matches!(
        SkipMap::load_for(&path, &model, 10),
        Err(SkipError::ModelMismatch { .. })
    ));
    assert!(matches!(
        SkipMap::load_for(&dir.join("missing.json"), &model, 10),
        Err(SkipError::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn plans() {
    let p = LayerPlan::prefix(6, 3).without(&[1, 9]);
    assert_eq!(p.running(), vec![0, 2]);
    assert_eq!(p.n_layers(), 6);
    let m = SkipMap::new("x".into(), 6, vec![2, 3], String::new()).unwrap();
    assert_eq!(LayerPlan::from_skip_map(&m).running(), vec![0, 1, 4, 5]);
}

#[test]
fn real_model_zero_skips_equal_plain_model_and_calibration_is_sane() {
    let Some((mut model, path)) = skipspec_common::open_model() else {
        return;
    };
    let n = model.config().n_layers;
    let vocab = model.config().vocab_size;
    let tokens: Vec<u32> = vec![1, 504, 3458, 282, 4649, 314, 12, 1053, 28, 9, 1945];
    let plain = model.prefill(&tokens).unwrap();
    let second = model.decode(253).unwrap();
    let (a, b) = {
        let mut r = Runner::new(&model, LayerPlan::full(n), 64).unwrap();
        let all = r.feed(&tokens, Logits::From(0)).unwrap();
        let b = r.feed(&[253], Logits::Last).unwrap();
        (all, b)
    };
    assert_eq!(a.len(), tokens.len() * vocab);
    assert_eq!(
        &a[(tokens.len() - 1) * vocab..],
        &plain[..],
        "last-position logits"
    );
    assert_eq!(b, second, "decode after the batch");
    let cal = calibrate(&model, &tokens).unwrap();
    assert_eq!(cal.layers.len(), n);
    assert_eq!(cal.tokens, tokens.len());
    for s in &cal.layers {
        assert!(s.min <= s.p5 + 1e-12 && s.p5 <= s.mean + 1e-12, "{s:?}");
        assert!((-1.0..=1.0 + 1e-9).contains(&s.mean));
    }
    let fp = model_fingerprint(&path).unwrap();
    let map = cal.map_for_count(&fp, 4).unwrap();
    assert!(!map.skips(0) && !map.skips(n - 1));
    map.validate(&fp, n).unwrap();
    let mut r = Runner::new(&model, LayerPlan::from_skip_map(&map), 64).unwrap();
    let skipped = r.feed(&tokens, Logits::Last).unwrap();
    assert_eq!(skipped.len(), vocab);
    assert_ne!(skipped, plain, "skipping 4 layers must change the logits");
}
