//! Test helpers of the vramless crates (a dev-dependency only).
//!
//! A test that needs something it cannot find calls one of these helpers instead of printing
//! and returning, so that a skip is never silent and never passes where the resource must exist:
//!
//! - [`skip`] (and [`model_or_skip`], [`require_path`]): a missing resource. Prints
//!   `!!! SKIPPED <test>: <what>` straight to the process's stderr (the test harness captures
//!   only `print!`/`eprint!`, so the line shows in a plain `cargo test`), and **panics** when
//!   `CI=true` or `VRAMLESS_REQUIRE=1`: CI installs every resource first, so a missing one there
//!   is a failure.
//! - [`skip_gpu`]: no usable GPU. Prints the same way but panics only when
//!   `VRAMLESS_REQUIRE_GPU=1`. CI runs on machines without a GPU, so `CI=true` alone never
//!   turns a GPU skip into a failure; the GPU machine's scripts set `VRAMLESS_REQUIRE_GPU=1`.
//! - [`fixture`]: a file that is part of the repository. Missing means a broken checkout, and
//!   the test always fails.
//! - [`not_applicable`]: the test's situation does not arise on this machine (for example the
//!   "no CUDA driver" error path on a machine that has one). Printed, never a failure.
//!
//! Every skip line is also appended to the file named by `VRAMLESS_SKIP_LOG` when it is set
//! (`scripts/test.sh` sets it and prints the collected list at the end of the run).
#![forbid(unsafe_code)]

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// File name of the default model (SmolLM2-135M-Instruct, Q4_1) in the model cache.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Whether a missing (non-GPU) resource fails the test: `CI=true` or `VRAMLESS_REQUIRE=1`.
pub fn required() -> bool {
    env_is("CI", "true") || env_is("VRAMLESS_REQUIRE", "1")
}

/// Whether a missing GPU fails the test: `VRAMLESS_REQUIRE_GPU=1` (never `CI` alone).
pub fn gpu_required() -> bool {
    env_is("VRAMLESS_REQUIRE_GPU", "1")
}

fn env_is(name: &str, value: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == value)
}

/// The running test's name (libtest names each test's thread after it), if there is one.
fn test_name() -> String {
    match std::thread::current().name() {
        Some(n) if n != "main" => n.to_owned(),
        _ => std::env::args()
            .next()
            .map(|a| {
                Path::new(&a)
                    .file_name()
                    .map_or(a.clone(), |f| f.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "test".to_owned()),
    }
}

/// Writes `msg` as one line to the process's stderr, bypassing the test harness's output
/// capture, and appends it to `$VRAMLESS_SKIP_LOG` when that is set.
pub fn loud(msg: impl Display) {
    let line = format!("{msg}\n");
    // Direct writes to the stderr handle are not captured by libtest (only the print macros are).
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(log) = std::env::var_os("VRAMLESS_SKIP_LOG") {
        // One append-mode write per line: lines of parallel tests and processes do not mix.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// The calling test cannot run because `what` is missing: prints a loud skip line, or panics
/// (failing the test) when [`required`] says the resource must be there. The caller returns
/// right after.
#[track_caller]
pub fn skip(what: impl Display) {
    let test = test_name();
    if required() {
        panic!(
            "{test}: {what}\n(CI=true or VRAMLESS_REQUIRE=1: a missing resource is a failure; \
             unset both to let the test skip)"
        );
    }
    loud(format!("!!! SKIPPED {test}: {what}"));
}

/// The calling test cannot run because there is no usable GPU (`why`): prints a loud skip
/// line, or panics when `VRAMLESS_REQUIRE_GPU=1`. `CI=true` alone does not fail: CI has no GPU.
#[track_caller]
pub fn skip_gpu(why: impl Display) {
    let test = test_name();
    if gpu_required() {
        panic!("{test}: VRAMLESS_REQUIRE_GPU=1 but there is no usable GPU: {why}");
    }
    loud(format!("!!! SKIPPED (no GPU) {test}: {why}"));
}

/// The calling test's situation does not arise on this machine (`why`): printed loudly, never
/// a failure. Use only where the test is meaningless here, not where something is missing.
pub fn not_applicable(why: impl Display) {
    loud(format!("--- NOT APPLICABLE {}: {why}", test_name()));
}

/// `path`, a file or folder that is part of the repository; panics if it does not exist (a
/// broken checkout is never a skip).
#[track_caller]
pub fn fixture(path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    if !path.exists() {
        panic!(
            "the in-repository fixture {} is missing: the checkout is incomplete \
             (restore it with git; the README of its folder says how it was made)",
            path.display()
        );
    }
    path.to_path_buf()
}

/// `path` if it exists; otherwise [`skip`] with `what` and how to get it (`hint`), and `None`.
#[track_caller]
pub fn require_path(path: impl AsRef<Path>, what: &str, hint: &str) -> Option<PathBuf> {
    let path = path.as_ref();
    if path.exists() {
        Some(path.to_path_buf())
    } else {
        skip(format!("{what} not found at {} ({hint})", path.display()));
        None
    }
}

/// The default model's path (see [`default_model`]), or a [`skip`] saying why not and `None`.
#[track_caller]
pub fn model_or_skip() -> Option<PathBuf> {
    match default_model() {
        Ok(p) => Some(p.to_path_buf()),
        Err(why) => {
            skip(why);
            None
        }
    }
}

/// Where the default model is, found once per test process: `$VRAMLESS_MODEL` (which must
/// exist), else the model cache `${XDG_CACHE_HOME:-~/.cache}/vramless/models/`
/// [`DEFAULT_MODEL_FILE`], else what the repository's `scripts/fetch-model.sh` prints (it
/// downloads the model once). The error says what was tried.
pub fn default_model() -> Result<&'static Path, &'static str> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(find_default_model)
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(String::as_str)
}

fn find_default_model() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("VRAMLESS_MODEL") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "the default model is missing: VRAMLESS_MODEL={} is not a file",
                p.display()
            ))
        };
    }
    if let Some(cached) = cache_dir().map(|d| d.join("vramless/models").join(DEFAULT_MODEL_FILE)) {
        if cached.is_file() {
            return Ok(cached);
        }
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-model.sh");
    if !script.is_file() {
        return Err(format!(
            "the default model is missing: VRAMLESS_MODEL is not set, it is not in the model \
             cache, and there is no {} to fetch it",
            script.display()
        ));
    }
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| {
            format!(
                "the default model is missing: cannot run {}: {e}",
                script.display()
            )
        })?;
    let printed = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && printed.is_file() {
        Ok(printed)
    } else {
        Err(format!(
            "the default model is missing: VRAMLESS_MODEL is not set and {} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("XDG_CACHE_HOME") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")),
    }
}
