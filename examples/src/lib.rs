//! The engine that composes the vramless crates; shared by the example binaries.
#![forbid(unsafe_code)]

pub mod default_model;
pub mod engine;

use std::path::PathBuf;

/// The model to run: `model` when the user gave one, else the default model (found in the
/// cache or fetched there, see [`default_model`]). `program` names the caller in the progress
/// lines printed on stderr.
pub fn model_path(program: &str, model: Option<PathBuf>) -> Result<PathBuf, String> {
    match model {
        Some(path) => Ok(path),
        None => default_model::path(program),
    }
}

/// The VFIO options the programs take from the environment: `NVME_DIRECT_IOMMU`
/// (`auto`|`type1`|`iommufd`) and `NVME_DIRECT_HUGEPAGES` (`auto`|`required`|`off`), each `auto`
/// when unset. A misspelt value is an error naming the variable (the library itself reads no
/// environment; it takes [`nvme_direct::vfio::VfioOptions`]).
pub fn vfio_options_from_env() -> Result<nvme_direct::vfio::VfioOptions, String> {
    fn var<T: std::str::FromStr<Err = nvme_direct::Error> + Default>(
        name: &str,
    ) -> Result<T, String> {
        match std::env::var(name) {
            Ok(v) => v.parse().map_err(|e| format!("{name}: {e}")),
            Err(std::env::VarError::NotPresent) => Ok(T::default()),
            Err(e) => Err(format!("{name}: {e}")),
        }
    }
    Ok(nvme_direct::vfio::VfioOptions {
        iommu: var("NVME_DIRECT_IOMMU")?,
        huge_pages: var("NVME_DIRECT_HUGEPAGES")?,
    })
}
