//! The programs find the default model without the repository: the constants agree with
//! `scripts/fetch-model.sh` (file, package, SHA-256, cache location), `--help` names the model
//! and its cache, and a program run from outside the source tree with `XDG_CACHE_HOME` pointing
//! at a cache holding the model uses that file.

use std::path::PathBuf;
use std::process::Command;

use vramless_engine::default_model::{sha256_file, FILE, HELP, PACKAGE, SHA256};

fn script() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-model.sh");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The value of `NAME="..."` in the script.
fn script_var(text: &str, name: &str) -> String {
    let prefix = format!("{name}=\"");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name}= in fetch-model.sh"));
    line.trim_end_matches('"').to_string()
}

#[test]
fn constants_agree_with_fetch_model_sh() {
    let s = script();
    assert_eq!(script_var(&s, "FILE"), FILE);
    assert_eq!(script_var(&s, "SHA256"), SHA256);
    assert_eq!(script_var(&s, "PKG"), PACKAGE);
    assert_eq!(
        script_var(&s, "CACHE"),
        "${XDG_CACHE_HOME:-$HOME/.cache}/vramless/models"
    );
    assert!(HELP.contains(FILE) && HELP.contains("vramless/models"));
}

#[test]
fn every_model_program_names_the_default_in_its_help() {
    let mut checked = 0;
    for exe in [
        env!("CARGO_BIN_EXE_generate"),
        env!("CARGO_BIN_EXE_chat"),
        env!("CARGO_BIN_EXE_bench-decode"),
        env!("CARGO_BIN_EXE_bench-stream-model"),
        env!("CARGO_BIN_EXE_calibrate-skip"),
        env!("CARGO_BIN_EXE_perplexity"),
        env!("CARGO_BIN_EXE_speculate"),
    ] {
        let out = Command::new(exe).arg("--help").output().unwrap();
        assert!(out.status.success(), "{exe} --help failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(FILE) && text.contains("~/.cache/vramless/models"),
            "{exe} --help does not name the default model and its cache:\n{text}"
        );
        checked += 1;
    }
    assert_eq!(checked, 7);
}

#[test]
fn generate_outside_the_tree_uses_the_cached_model() {
    let model = match std::env::var("VRAMLESS_MODEL") {
        Ok(p) => PathBuf::from(p),
        Err(_) => match vramless_engine::default_model::path("default_model test") {
            Ok(p) => p,
            Err(e) => {
                eprintln!("\n*** SKIPPED: the default model is unavailable: {e} ***\n");
                assert!(
                    std::env::var("CI").is_err(),
                    "CI=true: the default model is required"
                );
                return;
            }
        },
    };
    assert_eq!(sha256_file(&model).unwrap(), SHA256, "{}", model.display());
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("dm-{}", std::process::id()));
    let cache = tmp.join("cache/vramless/models");
    std::fs::create_dir_all(&cache).unwrap();
    let link = cache.join(FILE);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&model, &link).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_generate"))
        .args(["--prompt", "Hi", "--max-tokens", "1"])
        .current_dir(&tmp)
        .env("XDG_CACHE_HOME", tmp.join("cache"))
        .env_remove("CARGO_MANIFEST_DIR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "generate failed:\n{err}");
    assert!(
        err.contains(&link.display().to_string()),
        "generate did not use the cached model {}:\n{err}",
        link.display()
    );
    std::fs::remove_dir_all(&tmp).ok();
}
