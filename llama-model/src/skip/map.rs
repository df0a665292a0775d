//! Skip maps: which layers to treat as the identity, saved next to the model and keyed by
//! a fingerprint of the model file.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::SkipError;

/// Bytes hashed at the start and at the end of a model file for its fingerprint.
const HEAD_BYTES: u64 = 32 << 20;
const TAIL_BYTES: u64 = 4 << 20;

/// A fingerprint of a model file: SHA-256 over the file size (8 bytes, little endian), the
/// first 32 MiB and the last 4 MiB (the whole file when smaller). The GGUF header, metadata
/// and tensor table lie in the first bytes, so any change of shape, type or tokenizer changes
/// it; hashing a 40 GB file whole would take minutes. Returned as lowercase hex.
pub fn model_fingerprint(path: &Path) -> Result<String, SkipError> {
    let io = |e: std::io::Error| SkipError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    let mut h = Sha256::new();
    h.update(size.to_le_bytes());
    let mut buf = vec![0u8; 1 << 20];
    let head = size.min(HEAD_BYTES);
    hash_range(&mut f, head, &mut h, &mut buf).map_err(io)?;
    let tail_start = size.saturating_sub(TAIL_BYTES).max(head);
    if tail_start < size {
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(tail_start)).map_err(io)?;
        hash_range(&mut f, size - tail_start, &mut h, &mut buf).map_err(io)?;
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn hash_range(
    f: &mut std::fs::File,
    mut n: u64,
    h: &mut Sha256,
    buf: &mut [u8],
) -> std::io::Result<()> {
    while n > 0 {
        let want = usize::try_from(n.min(buf.len() as u64)).unwrap_or(buf.len());
        let got = f.read(&mut buf[..want])?;
        if got == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file shrank while hashing",
            ));
        }
        h.update(&buf[..got]);
        n -= got as u64;
    }
    Ok(())
}

/// Layers to skip for one model file.
#[derive(Debug, Clone, PartialEq)]
pub struct SkipMap {
    /// [`model_fingerprint`] of the model the map was calibrated on.
    pub model_fingerprint: String,
    /// Layer count of that model.
    pub n_layers: usize,
    /// Skipped layer indices, ascending, never the first or the last layer.
    pub skipped: Vec<usize>,
    /// How the map was chosen (free text, e.g. "threshold 0.98" or "skip 4").
    pub rule: String,
}

impl SkipMap {
    /// A map skipping `skipped` (sorted and deduplicated here) of an `n_layers` model.
    /// Fails if it names the first or the last layer or a layer past the end.
    pub fn new(
        model_fingerprint: String,
        n_layers: usize,
        mut skipped: Vec<usize>,
        rule: String,
    ) -> Result<SkipMap, SkipError> {
        skipped.sort_unstable();
        skipped.dedup();
        let map = SkipMap {
            model_fingerprint,
            n_layers,
            skipped,
            rule,
        };
        map.check_layers()?;
        Ok(map)
    }

    fn check_layers(&self) -> Result<(), SkipError> {
        for &i in &self.skipped {
            if i == 0 || i + 1 >= self.n_layers {
                return Err(SkipError::Invalid(format!(
                    "layer {i} cannot be skipped in a {}-layer model (never the first or the last, \
                     nothing past the end)",
                    self.n_layers
                )));
            }
        }
        if self.skipped.windows(2).any(|w| w[0] >= w[1]) {
            return Err(SkipError::Invalid(
                "skipped layers must be ascending and distinct".into(),
            ));
        }
        Ok(())
    }

    /// Whether layer `i` is skipped.
    pub fn skips(&self, i: usize) -> bool {
        self.skipped.binary_search(&i).is_ok()
    }

    /// The default file name next to `model`: `<model file name>.skipmap.json`.
    pub fn default_path(model: &Path) -> PathBuf {
        let mut name = model
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".skipmap.json");
        model.with_file_name(name)
    }

    /// The map as JSON text.
    pub fn to_json(&self) -> String {
        let v = serde_json::json!({
            "format": "vramless-skipmap-1",
            "model_fingerprint": self.model_fingerprint,
            "n_layers": self.n_layers,
            "skipped": self.skipped,
            "rule": self.rule,
        });
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// Parses JSON written by [`SkipMap::to_json`], checking its invariants.
    pub fn from_json(text: &str) -> Result<SkipMap, SkipError> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| SkipError::Invalid(format!("not JSON: {e}")))?;
        let field = |k: &str| {
            v.get(k)
                .ok_or_else(|| SkipError::Invalid(format!("field `{k}` is missing")))
        };
        if field("format")?.as_str() != Some("vramless-skipmap-1") {
            return Err(SkipError::Invalid(
                "`format` is not vramless-skipmap-1".into(),
            ));
        }
        let fp = field("model_fingerprint")?
            .as_str()
            .ok_or_else(|| SkipError::Invalid("`model_fingerprint` is not a string".into()))?;
        let n_layers = field("n_layers")?
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| SkipError::Invalid("`n_layers` is not a count".into()))?;
        let skipped = field("skipped")?
            .as_array()
            .ok_or_else(|| SkipError::Invalid("`skipped` is not a list".into()))?
            .iter()
            .map(|x| {
                x.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| SkipError::Invalid("`skipped` holds a non-index".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rule = field("rule")?.as_str().unwrap_or_default().to_string();
        let map = SkipMap {
            model_fingerprint: fp.to_string(),
            n_layers,
            skipped,
            rule,
        };
        map.check_layers()?;
        Ok(map)
    }

    /// Writes the map to `path`.
    pub fn save(&self, path: &Path) -> Result<(), SkipError> {
        std::fs::write(path, self.to_json()).map_err(|e| SkipError::Io {
            path: path.to_path_buf(),
            source: e,
        })
    }

    /// Reads a map from `path` and checks it belongs to the model at `model_path` with
    /// `n_layers` layers.
    pub fn load_for(path: &Path, model_path: &Path, n_layers: usize) -> Result<SkipMap, SkipError> {
        let text = std::fs::read_to_string(path).map_err(|e| SkipError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let map = SkipMap::from_json(&text)?;
        map.validate(&model_fingerprint(model_path)?, n_layers)?;
        Ok(map)
    }

    /// Checks the map against a model's fingerprint and layer count.
    pub fn validate(&self, fingerprint: &str, n_layers: usize) -> Result<(), SkipError> {
        if self.model_fingerprint != fingerprint {
            return Err(SkipError::ModelMismatch {
                expected: self.model_fingerprint.clone(),
                found: fingerprint.to_string(),
            });
        }
        if self.n_layers != n_layers {
            return Err(SkipError::Invalid(format!(
                "the map is for {} layers, the model has {n_layers}",
                self.n_layers
            )));
        }
        self.check_layers()
    }
}
