//! Options of the VFIO path as a struct. The library reads no environment variables: programs
//! map their own settings (the example programs: `NVME_DIRECT_IOMMU`, `NVME_DIRECT_HUGEPAGES`)
//! onto [`VfioOptions`] with the [`FromStr`] parsers here.

use std::str::FromStr;

use crate::error::Error;
use crate::sys::hostmem::HugePages;
use crate::sys::vfio::IommuMode;

/// How [`crate::vfio::VfioDevice::open_with`] opens the device and allocates DMA memory.
/// The default is `Auto` for both: iommufd when the kernel offers it (else the type1
/// container), and 2 MiB pages for large buffers when free huge pages exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VfioOptions {
    /// The IOMMU interface.
    pub iommu: IommuMode,
    /// The page policy of the DMA buffers (later changeable per allocator with
    /// [`crate::vfio::VfioDma::with_huge_pages`]).
    pub huge_pages: HugePages,
}

impl FromStr for IommuMode {
    type Err = Error;

    /// `auto`, `type1` or `iommufd`; anything else is [`Error::InvalidArgument`].
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "auto" => Ok(Self::Auto),
            "type1" => Ok(Self::Type1),
            "iommufd" => Ok(Self::Iommufd),
            other => Err(Error::InvalidArgument(format!(
                "IOMMU mode {other:?}: use auto, type1 or iommufd"
            ))),
        }
    }
}

impl FromStr for HugePages {
    type Err = Error;

    /// `auto`, `required` or `off`; anything else is [`Error::InvalidArgument`].
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "auto" => Ok(Self::Auto),
            "required" => Ok(Self::Required),
            "off" => Ok(Self::Off),
            other => Err(Error::InvalidArgument(format!(
                "huge-page policy {other:?}: use auto, required or off"
            ))),
        }
    }
}

impl std::fmt::Display for HugePages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Required => "required",
            Self::Off => "off",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_round_trips_through_its_name_and_typos_are_errors() {
        for m in [IommuMode::Auto, IommuMode::Type1, IommuMode::Iommufd] {
            assert_eq!(m.to_string().parse::<IommuMode>().unwrap(), m);
        }
        for h in [HugePages::Auto, HugePages::Required, HugePages::Off] {
            assert_eq!(h.to_string().parse::<HugePages>().unwrap(), h);
        }
        for bad in ["", "Type1", "iommu", "yes"] {
            let e = bad.parse::<IommuMode>().unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
            assert!(e.to_string().contains("auto, type1 or iommufd"), "{e}");
            assert!(bad.parse::<HugePages>().is_err());
        }
        let d = VfioOptions::default();
        assert_eq!((d.iommu, d.huge_pages), (IommuMode::Auto, HugePages::Auto));
    }
}
