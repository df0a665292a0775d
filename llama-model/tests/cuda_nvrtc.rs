//! CPU-side kernel compile check (feature `cuda`, no GPU needed): every kernel module compiles
//! with NVRTC for sm_80 and sm_90, the output is a CUDA ELF image exporting the kernel entry
//! points the backend loads, and a broken source is reported as a compile error with NVRTC's log.
//!
//! NVRTC comes from `pip install nvidia-cuda-nvrtc` (libnvrtc.so.13 under
//! site-packages/nvidia/cu13/lib). The test takes `VRAMLESS_NVRTC_LIB`, else asks python3 where
//! site-packages is. Without NVRTC it skips loudly, except with `CI=true`, where it fails.
#![cfg(feature = "cuda")]

use llama_model::cuda::compile::{
    cache_key, compile_module, compile_module_cached, nvrtc_available, nvrtc_version,
    use_nvrtc_library, COMMON_PRELUDE, KERNEL_MODULES,
};
use llama_model::cuda::{type_code, CudaError, SUPPORTED_TYPES};

/// Kernel entry points the backend loads from each module.
const ENTRY_POINTS: &[(&str, &[&str])] = &[
    ("matvec", &["matvec_multi", "matvec_multi4"]),
    (
        "matvec_q8",
        &["quantize_q8", "rmsnorm_q8", "matvec_q8", "matvec_q8_4"],
    ),
    ("embed", &["embed_rows"]),
    (
        "elementwise",
        &[
            "rmsnorm",
            "rope",
            "swiglu",
            "add_inplace",
            "store_f32",
            "argmax",
            "rep_penalty",
            "topk_pass",
        ],
    ),
    ("attention", &["kv_store", "rope_kv", "attn_partial"]),
];

fn find_nvrtc() -> Option<String> {
    if let Ok(p) = std::env::var("VRAMLESS_NVRTC_LIB") {
        if std::path::Path::new(&p).exists() {
            return Some(p);
        }
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import site,sys; print('\\n'.join(site.getsitepackages() + [site.getusersitepackages()]))",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|dir| format!("{dir}/nvidia/cu13/lib/libnvrtc.so.13"))
        .find(|p| std::path::Path::new(p).exists())
}

/// Whether NVRTC loads: the library named by `VRAMLESS_NVRTC_LIB` (else found under python's
/// site-packages) is loaded first with `use_nvrtc_library` (the library reads no environment),
/// then the loader's search path; otherwise a loud skip (a failure under CI) that names the
/// pip-installed library when there is one. The test sets no variable: tests run in parallel,
/// and changing the environment of a running process is a data race.
fn nvrtc_or_skip() -> bool {
    if let Some(p) = find_nvrtc() {
        // The library reads no environment: load the one found here first.
        match use_nvrtc_library(std::path::Path::new(&p)) {
            Ok(()) => eprintln!("using NVRTC at {p}"),
            Err(e) => eprintln!("cannot load NVRTC at {p}: {e}"),
        }
    }
    match nvrtc_available() {
        Ok(()) => true,
        Err(e) => {
            let hint = match find_nvrtc() {
                Some(p) => format!("export VRAMLESS_NVRTC_LIB={p} (scripts/test.sh does)"),
                None => "python3 -m pip install nvidia-cuda-nvrtc==13.0.88, then set \
                         VRAMLESS_NVRTC_LIB to its lib/libnvrtc.so.13"
                    .to_owned(),
            };
            test_support::skip(format!(
                "NVRTC is not loadable ({e}); the kernels were NOT compile-checked: {hint}"
            ));
            false
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn every_kernel_module_compiles_for_sm80_and_sm90() {
    if !nvrtc_or_skip() {
        return;
    }
    assert_eq!(
        KERNEL_MODULES.len(),
        ENTRY_POINTS.len(),
        "a module without listed entry points"
    );
    for arch in ["sm_80", "sm_90"] {
        for (name, body) in KERNEL_MODULES {
            let cubin = compile_module(name, body, arch)
                .unwrap_or_else(|e| panic!("{name} for {arch}: {e}"));
            // A cubin is an ELF image (magic 0x7f 'E' 'L' 'F').
            assert!(
                cubin.starts_with(b"\x7fELF"),
                "{name}/{arch}: not an ELF cubin"
            );
            let entries = ENTRY_POINTS
                .iter()
                .find(|(m, _)| m == name)
                .map(|(_, e)| *e)
                .unwrap_or_else(|| panic!("no entry list for module {name}"));
            for e in entries {
                let sym = format!("{e}\0");
                assert!(
                    contains(&cubin, sym.as_bytes()),
                    "{name}/{arch}: no symbol {e}"
                );
            }
            eprintln!("{name} {arch}: {} bytes", cubin.len());
        }
    }
    // The disk cache: the first compile writes <dir>/<key>, later calls read that file back.
    let dir = std::env::temp_dir().join(format!("vramless-kcache-{}", std::process::id()));
    let (name, body) = KERNEL_MODULES[0];
    let version = nvrtc_version().expect("version");
    let key = cache_key(name, body, "sm_90", version);
    assert_ne!(
        key,
        cache_key(name, body, "sm_80", version),
        "arch must change the key"
    );
    assert_ne!(
        key,
        cache_key(name, "// edited", "sm_90", version),
        "source must change the key"
    );
    assert_ne!(
        key,
        cache_key(name, body, "sm_90", (version.0, version.1 + 1)),
        "version too"
    );
    let first = compile_module_cached(name, body, "sm_90", Some(&dir)).expect("cached compile");
    let on_disk = std::fs::read(dir.join(&key)).expect("the cubin was cached");
    assert_eq!(first, on_disk);
    // A marked file under the same key is what the next call returns: proof it reads the cache.
    std::fs::write(dir.join(&key), b"marker").unwrap();
    assert_eq!(
        compile_module_cached(name, body, "sm_90", Some(&dir)).unwrap(),
        b"marker"
    );
    std::fs::remove_dir_all(&dir).ok();

    // A broken source is a typed compile error carrying NVRTC's log.
    let err = compile_module(
        "broken",
        "extern \"C\" __global__ void k() { int x = ; }",
        "sm_90",
    )
    .expect_err("a syntax error must not compile");
    match err {
        CudaError::Compile { module, log, .. } => {
            assert_eq!(module, "broken");
            assert!(log.contains("error"), "log without the error: {log}");
        }
        other => panic!("expected a compile error, got {other}"),
    }
}

/// The Rust type codes equal the `T_*` defines the kernels switch on.
#[test]
fn type_codes_match_the_kernel_header() {
    for ty in SUPPORTED_TYPES {
        let define = format!("#define T_{} {}", ty.name(), type_code(ty).unwrap());
        assert!(
            COMMON_PRELUDE.lines().any(|l| l.trim() == define),
            "missing `{define}` in common.cuh"
        );
    }
    assert!(type_code(gguf::GgmlType::Q2_K).is_err());
}

/// The batched path's modules (tensor-core GEMM, batch kernels) compile for sm_80 and sm_90
/// and export every entry point `BatchKernels` loads.
#[test]
fn batch_kernel_modules_compile_for_sm80_and_sm90() {
    use llama_model::cuda::{BATCH_ENTRY_POINTS, BATCH_KERNEL_MODULES};
    if !nvrtc_or_skip() {
        return;
    }
    assert_eq!(BATCH_KERNEL_MODULES.len(), BATCH_ENTRY_POINTS.len());
    for arch in ["sm_80", "sm_90"] {
        for (name, body) in BATCH_KERNEL_MODULES {
            let cubin = compile_module(name, body, arch)
                .unwrap_or_else(|e| panic!("{name} for {arch}: {e}"));
            assert!(
                cubin.starts_with(b"\x7fELF"),
                "{name}/{arch}: not an ELF cubin"
            );
            let entries = BATCH_ENTRY_POINTS
                .iter()
                .find(|(m, _)| m == name)
                .map(|(_, e)| *e)
                .unwrap_or_else(|| panic!("no entry list for module {name}"));
            for e in entries {
                let sym = format!("{e}\0");
                assert!(
                    contains(&cubin, sym.as_bytes()),
                    "{name}/{arch}: no symbol {e}"
                );
            }
            eprintln!("{name} {arch}: {} bytes", cubin.len());
        }
    }
}

/// The multi-sequence step's module (paged rope/KV store/attention, row gather) compiles for
/// sm_80 and sm_90 and exports every entry point `GpuMultiState` loads.
#[test]
fn multi_kernel_modules_compile_for_sm80_and_sm90() {
    use llama_model::cuda::{MULTI_ENTRY_POINTS, MULTI_KERNEL_MODULES};
    if !nvrtc_or_skip() {
        return;
    }
    assert_eq!(MULTI_KERNEL_MODULES.len(), MULTI_ENTRY_POINTS.len());
    for arch in ["sm_80", "sm_90"] {
        for (name, body) in MULTI_KERNEL_MODULES {
            let cubin = compile_module(name, body, arch)
                .unwrap_or_else(|e| panic!("{name} for {arch}: {e}"));
            assert!(
                cubin.starts_with(b"\x7fELF"),
                "{name}/{arch}: not an ELF cubin"
            );
            let entries = MULTI_ENTRY_POINTS
                .iter()
                .find(|(m, _)| m == name)
                .map(|(_, e)| *e)
                .unwrap_or_else(|| panic!("no entry list for module {name}"));
            for e in entries {
                let sym = format!("{e}\0");
                assert!(
                    contains(&cubin, sym.as_bytes()),
                    "{name}/{arch}: no symbol {e}"
                );
            }
            eprintln!("{name} {arch}: {} bytes", cubin.len());
        }
    }
}
