//! A file's location on a namespace as a list of LBA extents, and the `.extents` text file that
//! carries it from the mounted filesystem (where FIEMAP can see it) to the userspace driver
//! (where the kernel no longer can).
//!
//! The format: optional `# file_len N` (the file's size in bytes), other `#` lines ignored, then
//! one `logical lba blocks` line per extent (decimal): file byte `logical` onwards lies at block
//! `lba`, for `blocks` blocks.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::extent::{file_extents, partition_start, to_lba_extents, LbaExtent};

/// Where a file lies on a namespace: its extents and (when known) its length.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtentList {
    /// The file's length in bytes, when recorded (`# file_len N`).
    pub file_len: Option<u64>,
    /// The extents, in file order.
    pub extents: Vec<LbaExtent>,
}

impl ExtentList {
    /// Parses the text of a `.extents` file (see the module docs). An empty list is an error:
    /// reading a file through it would return nothing but zeros.
    pub fn parse(text: &str) -> Result<Self> {
        let mut out = Self::default();
        for (n, line) in text.lines().enumerate() {
            let bad = |reason: String| Error::ExtentsFile {
                line: n + 1,
                reason,
            };
            let num = |s: &str| {
                s.parse::<u64>()
                    .map_err(|_| bad(format!("`{s}` is not a non-negative integer")))
            };
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                [] => {}
                ["#", "file_len", len] => out.file_len = Some(num(len)?),
                [first, ..] if first.starts_with('#') => {}
                [l, a, b] => out.extents.push(LbaExtent {
                    logical: num(l)?,
                    lba: num(a)?,
                    blocks: num(b)?,
                }),
                _ => {
                    return Err(bad(format!(
                        "expected `logical lba blocks`, found {} fields",
                        f.len()
                    )))
                }
            }
        }
        if out.extents.is_empty() {
            return Err(Error::ExtentsFile {
                line: 0,
                reason: "no extents listed".into(),
            });
        }
        Ok(out)
    }

    /// The text [`ExtentList::parse`] reads back.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        if let Some(len) = self.file_len {
            s.push_str(&format!("# file_len {len}\n"));
        }
        for e in &self.extents {
            s.push_str(&format!("{} {} {}\n", e.logical, e.lba, e.blocks));
        }
        s
    }

    /// Reads and parses a `.extents` file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Sys {
            op: format!("read {}", path.display()),
            source,
            hint: "check the path of the .extents file",
        })?;
        Self::parse(&text).map_err(|e| match e {
            Error::ExtentsFile { line, reason } => Error::ExtentsFile {
                line,
                reason: format!("{}: {reason}", path.display()),
            },
            other => other,
        })
    }

    /// Writes the list as a `.extents` file.
    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_text()).map_err(|source| Error::Sys {
            op: format!("write {}", path.display()),
            source,
            hint: "check that the directory exists and is writable",
        })
    }

    /// The extents of `path` on a mounted filesystem (FIEMAP, partition offset added), in
    /// blocks of `block_size` bytes, with the file's length.
    pub fn of_mounted_file(path: &Path, block_size: u32) -> Result<Self> {
        let len = std::fs::metadata(path)
            .map_err(|source| Error::Sys {
                op: format!("stat {}", path.display()),
                source,
                hint: "check the path",
            })?
            .len();
        let ext = file_extents(path)?;
        let part = partition_start(path)?;
        Ok(Self {
            file_len: Some(len),
            extents: to_lba_extents(&ext, part, block_size)?,
        })
    }

    /// The `.extents` file beside `file` (`file` with `.extents` appended to its name).
    pub fn sidecar_path(file: &Path) -> PathBuf {
        let mut name = file.as_os_str().to_owned();
        name.push(".extents");
        PathBuf::from(name)
    }

    /// The extents of `file`: from [`ExtentList::sidecar_path`] when that exists, else FIEMAP on
    /// the mounted file (which only helps if the device is bound to vfio-pci later).
    pub fn for_file(file: &Path, block_size: u32) -> Result<Self> {
        let saved = Self::sidecar_path(file);
        if saved.exists() {
            return Self::load(&saved);
        }
        Self::of_mounted_file(file, block_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_writes() {
        let list =
            ExtentList::parse("# file_len 10000\n0 2048 16\n# note\n\n8192 9000 4\n").unwrap();
        assert_eq!(list.file_len, Some(10000));
        assert_eq!(list.extents.len(), 2);
        assert_eq!(
            list.extents[1],
            LbaExtent {
                logical: 8192,
                lba: 9000,
                blocks: 4
            }
        );
        assert_eq!(ExtentList::parse(&list.to_text()).unwrap(), list);
    }

    #[test]
    fn bad_lines_name_the_line() {
        match ExtentList::parse("0 1 2\n1 2\n") {
            Err(Error::ExtentsFile { line: 2, .. }) => {}
            other => panic!("expected a line-2 error, got {other:?}"),
        }
        match ExtentList::parse("0 -1 2\n") {
            Err(Error::ExtentsFile { line: 1, reason }) => assert!(reason.contains("-1")),
            other => panic!("expected a line-1 error, got {other:?}"),
        }
        assert!(matches!(
            ExtentList::parse("# nothing\n"),
            Err(Error::ExtentsFile { line: 0, .. })
        ));
        assert!(ExtentList::parse("0 1 99999999999999999999\n").is_err());
    }
}
