//! Where the tests find the default model (SmolLM2-135M-Instruct Q4_1).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The default model path: $VRAMLESS_MODEL, else what scripts/fetch-model.sh prints (it downloads
/// the model on first use). `None` (after printing the script's error) when neither works.
pub fn model_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("VRAMLESS_MODEL") {
        return Some(PathBuf::from(p));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-model.sh");
    let out = Command::new("bash").arg(&script).output().ok()?;
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    p.exists().then_some(p)
}
