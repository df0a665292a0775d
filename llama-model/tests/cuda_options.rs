//! `CudaOptions::from_vars` (feature `cuda`, no GPU needed): the `VRAMLESS_*` variables the
//! example programs pass set the documented fields, unset or empty ones keep the defaults, and a
//! value that means nothing is a typed error naming the variable.
#![cfg(feature = "cuda")]

use std::collections::HashMap;
use std::path::PathBuf;

use llama_model::cuda::{CudaError, CudaOptions, MatvecKsplit};

fn from(pairs: &[(&str, &str)]) -> Result<CudaOptions, CudaError> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    CudaOptions::from_vars(|k| map.get(k).cloned())
}

#[test]
fn no_variables_give_the_defaults_without_a_cache() {
    let o = from(&[]).unwrap();
    assert_eq!(o, CudaOptions::default());
    assert!(o.cuda_graph && !o.event_tracking && o.graphs());
    assert_eq!((o.matvec_rows, o.matvec_ksplit), (4, MatvecKsplit::Auto));
    assert!(
        !o.matvec_q8,
        "the 8-bit-activation matrix-vector path is off by default (further from llama.cpp)"
    );
    assert_eq!((o.kernel_cache, o.nvrtc_lib), (None, None));
}

#[test]
fn every_variable_sets_its_field() {
    let o = from(&[
        ("VRAMLESS_CUDA_GRAPH", "0"),
        ("VRAMLESS_CUDA_EVENT_TRACKING", "1"),
        ("VRAMLESS_MATVEC_ROWS", "2"),
        ("VRAMLESS_MATVEC_KSPLIT", "4"),
        ("VRAMLESS_MATVEC_Q8", "0"),
        ("VRAMLESS_KERNEL_CACHE", "/tmp/k"),
        ("VRAMLESS_NVRTC_LIB", "/opt/nvrtc/libnvrtc.so.13"),
        ("HOME", "/home/u"),
    ])
    .unwrap();
    assert!(!o.cuda_graph && o.event_tracking && !o.graphs());
    assert_eq!(
        (o.matvec_rows, o.matvec_ksplit),
        (2, MatvecKsplit::Fixed(4))
    );
    assert!(!o.matvec_q8);
    assert!(from(&[("VRAMLESS_MATVEC_Q8", "1")]).unwrap().matvec_q8);
    assert_eq!(o.kernel_cache, Some(PathBuf::from("/tmp/k")));
    assert_eq!(
        o.nvrtc_lib,
        Some(PathBuf::from("/opt/nvrtc/libnvrtc.so.13"))
    );
    // Event tracking on alone turns graphs off.
    assert!(!from(&[("VRAMLESS_CUDA_EVENT_TRACKING", "1")])
        .unwrap()
        .graphs());
}

#[test]
fn the_kernel_cache_defaults_to_the_xdg_then_home_cache() {
    let xdg = from(&[("XDG_CACHE_HOME", "/c"), ("HOME", "/home/u")]).unwrap();
    assert_eq!(xdg.kernel_cache, Some(PathBuf::from("/c/vramless/kernels")));
    let home = from(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "")]).unwrap();
    assert_eq!(
        home.kernel_cache,
        Some(PathBuf::from("/home/u/.cache/vramless/kernels"))
    );
}

#[test]
fn values_that_mean_nothing_are_typed_errors_naming_the_variable() {
    for (k, v) in [
        ("VRAMLESS_CUDA_GRAPH", "no"),
        ("VRAMLESS_CUDA_EVENT_TRACKING", "2"),
        ("VRAMLESS_MATVEC_ROWS", "3"),
        ("VRAMLESS_MATVEC_KSPLIT", "8"),
        ("VRAMLESS_MATVEC_Q8", "yes"),
    ] {
        match from(&[(k, v)]) {
            Err(CudaError::Options(m)) => assert!(m.contains(k) && m.contains(v), "{m}"),
            other => panic!("{k}={v}: expected an options error, got {other:?}"),
        }
    }
    let bad = CudaOptions {
        matvec_rows: 3,
        ..CudaOptions::default()
    };
    assert!(matches!(bad.check(), Err(CudaError::Options(_))));
}
