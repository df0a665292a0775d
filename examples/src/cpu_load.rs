//! How the example programs open a model for the CPU backend: its weights copied into memory
//! (huge pages where the kernel gives them: the CPU streams them with fewer TLB misses, ~13%
//! faster decode on the dev VM, docs/PERF.md) or read in place from the file's memory map.

use std::path::Path;

use gguf::GgufFile;
use llama_model::cpu::{Model, ModelOptions};

/// Where the CPU backend reads the weights from (`--load`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// `ram` when the file fits in the memory available now with a quarter to spare, else
    /// `map`.
    Auto,
    /// A copy in anonymous memory ([`GgufFile::read`]).
    Ram,
    /// The file's memory map ([`GgufFile::open`]): nothing copied, pages read as used.
    Map,
}

impl Load {
    /// Parses `auto`, `ram` or `map`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "ram" => Ok(Self::Ram),
            "map" => Ok(Self::Map),
            other => Err(format!("--load {other}: use auto, ram or map")),
        }
    }
}

/// Bytes of memory available now (Linux's `MemAvailable`), if known.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Whether `auto` copies a file of `bytes` with `available` bytes of memory free.
fn fits(bytes: u64, available: Option<u64>) -> bool {
    available.is_some_and(|a| bytes.saturating_mul(4) <= a.saturating_mul(3))
}

/// Opens `path` for the CPU backend with `opts`, its weights where `load` says; returns the
/// model and which of `ram` / `map` was used.
pub fn open_cpu_model(
    path: &Path,
    opts: ModelOptions,
    load: Load,
) -> Result<(Model, Load), String> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let load = match load {
        Load::Auto => {
            let bytes = std::fs::metadata(path).map_err(|e| at(&e))?.len();
            if fits(bytes, available_memory()) {
                Load::Ram
            } else {
                Load::Map
            }
        }
        l => l,
    };
    let model = if load == Load::Ram {
        Model::from_gguf(GgufFile::read(path).map_err(|e| at(&e))?, opts)
    } else {
        Model::open_with(path, opts)
    }
    .map_err(|e| at(&e))?;
    Ok((model, load))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_copies_only_what_fits_with_room_to_spare() {
        assert!(fits(3 << 30, Some(4 << 30)));
        assert!(!fits(3 << 30, Some((4 << 30) - 1)));
        assert!(!fits(1, None), "unknown memory: map");
        for (s, l) in [("auto", Load::Auto), ("ram", Load::Ram), ("map", Load::Map)] {
            assert_eq!(Load::parse(s).unwrap(), l);
        }
        assert!(Load::parse("disk")
            .unwrap_err()
            .contains("auto, ram or map"));
    }
}
