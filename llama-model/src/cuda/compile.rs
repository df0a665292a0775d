//! Kernel sources (embedded at build time), NVRTC compilation and the on-disk cubin cache.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::error::{CudaError, Result};
use super::sys;

/// The prelude every kernel module starts with (types, block decoders, reductions).
pub const COMMON_PRELUDE: &str = include_str!("kernels/common.cuh");

/// The kernel modules: (name, source). Each is compiled as `COMMON_PRELUDE + source`. The two
/// matrix-vector modules start with their shared work layout (`kernels/matvec_body.cuh`).
pub const KERNEL_MODULES: &[(&str, &str)] = &[
    (
        "matvec",
        concat!(
            include_str!("kernels/matvec_body.cuh"),
            include_str!("kernels/matvec.cu")
        ),
    ),
    (
        "matvec_q8",
        concat!(
            include_str!("kernels/matvec_body.cuh"),
            include_str!("kernels/matvec_q8.cu")
        ),
    ),
    ("embed", include_str!("kernels/embed.cu")),
    ("elementwise", include_str!("kernels/elementwise.cu")),
    ("attention", include_str!("kernels/attention.cu")),
];

/// The full source NVRTC compiles for module `body`.
pub fn module_source(body: &str) -> String {
    let mut s = String::with_capacity(COMMON_PRELUDE.len() + body.len() + 1);
    s.push_str(COMMON_PRELUDE);
    s.push('\n');
    s.push_str(body);
    s
}

/// Library names under which NVRTC may be found (the dynamic loader's search path applies).
pub fn nvrtc_library_names() -> Vec<String> {
    cudarc::get_lib_name_candidates("nvrtc")
}

/// Checks that NVRTC can be loaded, without touching cudarc (whose loader panics when the
/// library is absent). A library loaded by [`use_nvrtc_library`] before is found by soname.
pub fn nvrtc_available() -> Result<()> {
    let names = nvrtc_library_names();
    sys::probe_library(&names)
        .map_err(|why| CudaError::Unavailable(format!("cannot load libnvrtc ({why})")))
}

/// Loads the NVRTC library at `path` (and the `libnvrtc-builtins` beside it) and keeps it
/// loaded for the life of the process, so that cudarc's lookup by soname, and NVRTC's own
/// lookup of its builtins at compile time, resolve to it.
pub fn use_nvrtc_library(path: &Path) -> Result<()> {
    let p = path.to_string_lossy().into_owned();
    sys::probe_library(std::slice::from_ref(&p))
        .map_err(|why| CudaError::Unavailable(format!("cannot load libnvrtc ({why})")))?;
    sys::pin_library(&p);
    if let Some(dir) = path.parent() {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("libnvrtc-builtins.so") {
                    sys::pin_library(&e.path().to_string_lossy());
                }
            }
        }
    }
    Ok(())
}

/// NVRTC's version as (major, minor); probes the library first.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    nvrtc_available()?;
    std::panic::catch_unwind(sys::nvrtc_version)
        .map_err(|_| CudaError::Unavailable("the NVRTC library failed to load".into()))?
}

/// Compiles module `name` (`COMMON_PRELUDE + body`) for `arch` (`sm_80`, `sm_90`, ...) to a
/// cubin, without the disk cache.
pub fn compile_module(name: &str, body: &str, arch: &str) -> Result<Vec<u8>> {
    nvrtc_available()?;
    let src = module_source(body);
    std::panic::catch_unwind(|| sys::compile_cubin(name, &src, arch))
        .map_err(|_| CudaError::Unavailable("the NVRTC library failed to load".into()))?
}

/// Cache key of a module: hash of the full source, the architecture and NVRTC's version.
pub fn cache_key(name: &str, body: &str, arch: &str, nvrtc: (i32, i32)) -> String {
    let mut h = Sha256::new();
    h.update(module_source(body).as_bytes());
    h.update(arch.as_bytes());
    h.update(format!("nvrtc {}.{}", nvrtc.0, nvrtc.1).as_bytes());
    let digest = h.finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{name}-{arch}-{hex}.cubin")
}

/// Compiles module `name` for `arch`, reusing a cubin cached on disk in `cache` under the same
/// key (`None`: no cache). Cache problems (unwritable directory, unreadable file) only cost a
/// recompilation.
pub fn compile_module_cached(
    name: &str,
    body: &str,
    arch: &str,
    cache: Option<&Path>,
) -> Result<Vec<u8>> {
    let version = nvrtc_version()?;
    let key = cache_key(name, body, arch, version);
    let path = cache.map(|d| d.join(&key));
    if let Some(p) = &path {
        if let Ok(bytes) = std::fs::read(p) {
            if !bytes.is_empty() {
                return Ok(bytes);
            }
        }
    }
    let cubin = compile_module(name, body, arch)?;
    if let Some(p) = &path {
        if let Some(dir) = p.parent() {
            if std::fs::create_dir_all(dir).is_ok() {
                // Write then rename, so a concurrent reader never sees a partial file.
                let tmp = p.with_extension(format!("tmp{}", std::process::id()));
                if std::fs::write(&tmp, &cubin).is_ok() && std::fs::rename(&tmp, p).is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
            }
        }
    }
    Ok(cubin)
}
