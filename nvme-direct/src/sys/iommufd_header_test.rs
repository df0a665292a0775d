//! Checks the iommufd/VFIO-cdev ioctl numbers, flags and structure layouts of `iommufd.rs`
//! against the Linux uapi headers (`linux/iommufd.h`, `linux/vfio.h`, Linux >= 6.6), parsed
//! here: nothing below is a hand-typed expected value.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};

use super::*;
use vfio_bindings::bindings::vfio as vb;

/// An ioctl request number as u64 (`libc::Ioctl` is u64 on glibc, c_int on musl).
fn num(x: libc::Ioctl) -> u64 {
    u64::try_from(i128::from(x)).expect("non-negative ioctl number")
}

/// An include directory with both headers new enough, else `None`.
fn uapi_include() -> Option<PathBuf> {
    let ok = |d: &Path| {
        d.join("linux/iommufd.h").is_file()
            && std::fs::read_to_string(d.join("linux/vfio.h"))
                .is_ok_and(|t| t.contains("VFIO_DEVICE_BIND_IOMMUFD"))
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(d) = std::env::var("NVME_DIRECT_UAPI_INCLUDE") {
        dirs.push(d.into());
    }
    dirs.push("/usr/include".into());
    if let Some(h) = std::env::var_os("HOME") {
        dirs.push(Path::new(&h).join(".cache/vramless/uapi/usr/include"));
    }
    if let Some(d) = dirs.iter().find(|d| ok(d)) {
        return Some(d.clone());
    }
    // Fetch linux-libc-dev with apt (the system's sources, else <codename>-backports).
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-uapi-headers.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .ok()?;
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    ok(&d).then_some(d)
}

/// Joins backslash-continued lines and drops comments.
fn clean(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text.replace("\\\n", " ");
    while let Some(a) = rest.find("/*") {
        out.push_str(&rest[..a]);
        rest = match rest[a..].find("*/") {
            Some(b) => rest[a + b + 2..].to_string(),
            None => String::new(),
        };
    }
    out.push_str(&rest);
    out
}

/// Symbols of `#define NAME VALUE` lines and `NAME = VALUE,` / `NAME,` enum entries.
struct Symbols(HashMap<String, String>);

impl Symbols {
    fn parse(texts: &[String]) -> Self {
        let mut m = HashMap::new();
        for t in texts {
            let mut prev_enum: Option<String> = None;
            for line in t.lines().map(str::trim) {
                if let Some(d) = line.strip_prefix("#define") {
                    let d = d.trim();
                    if let Some((name, value)) = d.split_once(|c: char| c.is_whitespace()) {
                        if !name.contains('(') {
                            m.insert(name.to_string(), value.trim().to_string());
                        }
                    }
                    continue;
                }
                if line.starts_with("enum ") || line.starts_with('}') {
                    prev_enum = None;
                    continue;
                }
                let entry = line.trim_end_matches(',');
                let is_ident = |s: &str| {
                    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                };
                if let Some((name, value)) = entry.split_once('=') {
                    let name = name.trim();
                    if line.ends_with(',')
                        && is_ident(name)
                        && name.starts_with(|c: char| c.is_ascii_uppercase())
                    {
                        m.insert(name.to_string(), value.trim().to_string());
                        prev_enum = Some(name.to_string());
                    }
                } else if line.ends_with(',') && is_ident(entry) {
                    if let Some(p) = prev_enum.take() {
                        m.insert(entry.to_string(), format!("{p} + 1"));
                    }
                    prev_enum = Some(entry.to_string());
                }
            }
        }
        Self(m)
    }

    /// Evaluates integers, `'c'`, identifiers, `a + b`, `a << b`, parentheses and `_IO(t, n)`.
    fn eval(&self, expr: &str) -> u64 {
        let e = expr.trim();
        if let Some(inner) = e.strip_prefix("_IO(").and_then(|x| x.strip_suffix(')')) {
            let (t, n) = inner.split_once(',').expect("_IO(type, nr)");
            return num(libc::_IO(self.eval(t) as u32, self.eval(n) as u32));
        }
        if e.starts_with('(') && e.ends_with(')') {
            return self.eval(&e[1..e.len() - 1]);
        }
        if let Some((a, b)) = e.split_once("<<") {
            return self.eval(a) << self.eval(b);
        }
        if let Some((a, b)) = e.split_once('+') {
            return self.eval(a) + self.eval(b);
        }
        if e.len() == 3 && e.starts_with('\'') && e.ends_with('\'') {
            return u64::from(e.as_bytes()[1]);
        }
        if let Some(h) = e.strip_prefix("0x") {
            return u64::from_str_radix(h, 16).expect("hex literal");
        }
        if let Ok(v) = e.parse() {
            return v;
        }
        let v = self
            .0
            .get(e)
            .unwrap_or_else(|| panic!("symbol {e} not in the headers"));
        self.eval(v)
    }
}

/// `(field name without leading underscores, offset, size)` of a header struct, C layout.
fn header_struct(text: &str, name: &str) -> Vec<(String, usize, usize)> {
    let start = text
        .find(&format!("struct {name} {{"))
        .unwrap_or_else(|| panic!("struct {name} not in the header"));
    let body = &text[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find("};").unwrap()];
    let mut off = 0usize;
    let mut out = Vec::new();
    for decl in body.split(';').map(str::trim).filter(|d| !d.is_empty()) {
        let mut words = decl.split_whitespace();
        let (ty, field) = (words.next().unwrap(), words.next().unwrap());
        let size = match ty {
            "__u32" | "__s32" => 4,
            "__u64" | "__aligned_u64" | "__s64" => 8,
            "__u16" => 2,
            "__u8" => 1,
            other => panic!("type {other} of {name}.{field} not handled"),
        };
        off = off.next_multiple_of(size);
        out.push((field.trim_start_matches('_').to_string(), off, size));
        off += size;
    }
    out
}

/// Our struct must be a prefix of the header's: same names, offsets and sizes, and its size
/// the end of that prefix rounded to its alignment.
fn check_prefix(text: &str, name: &str, ours: &[(&str, usize, usize)], size: usize) {
    let theirs = header_struct(text, name);
    assert!(
        ours.len() <= theirs.len(),
        "{name}: more fields than the header"
    );
    for ((n, o, s), (hn, ho, hs)) in ours.iter().zip(&theirs) {
        assert_eq!((*n, *o, *s), (hn.as_str(), *ho, *hs), "{name}.{n}");
    }
    let (_, o, s) = ours.last().unwrap();
    let align = ours.iter().map(|f| f.2).max().unwrap();
    assert_eq!(size, (o + s).next_multiple_of(align), "size of {name}");
}

macro_rules! fields {
    ($t:ty: $($f:ident as $n:literal),*) => {
        &[$(($n, offset_of!($t, $f), {
            fn sz<T>(_: fn(&$t) -> &T) -> usize { size_of::<T>() }
            sz(|s: &$t| &s.$f)
        })),*]
    };
}

#[test]
fn ioctls_and_layouts_match_the_uapi_header() {
    let Some(inc) = uapi_include() else {
        let msg = "linux/iommufd.h (Linux >= 6.6 uapi) not found in /usr/include, \
                   $NVME_DIRECT_UAPI_INCLUDE or ~/.cache/vramless/uapi and could not be \
                   fetched with nvme-direct/scripts/fetch-uapi-headers.sh";
        test_support::skip(msg);
        return;
    };
    eprintln!("iommufd header check against {}", inc.display());
    let iommufd_h = clean(&std::fs::read_to_string(inc.join("linux/iommufd.h")).unwrap());
    let vfio_h = clean(&std::fs::read_to_string(inc.join("linux/vfio.h")).unwrap());
    let sym = Symbols::parse(&[iommufd_h.clone(), vfio_h.clone()]);
    // VFIO's own constants as the bindings crate has them, and the header's.
    assert_eq!(sym.eval("VFIO_TYPE"), u64::from(vb::VFIO_TYPE));
    assert_eq!(sym.eval("VFIO_BASE"), u64::from(vb::VFIO_BASE));
    for (name, ours) in [
        ("IOMMU_IOAS_ALLOC", IOMMU_IOAS_ALLOC),
        ("IOMMU_IOAS_IOVA_RANGES", IOMMU_IOAS_IOVA_RANGES),
        ("IOMMU_IOAS_MAP", IOMMU_IOAS_MAP),
        ("IOMMU_IOAS_UNMAP", IOMMU_IOAS_UNMAP),
        ("VFIO_DEVICE_BIND_IOMMUFD", VFIO_DEVICE_BIND_IOMMUFD),
        (
            "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
            VFIO_DEVICE_ATTACH_IOMMUFD_PT,
        ),
    ] {
        assert_eq!(num(ours), sym.eval(name), "{name}");
        eprintln!("  {name} = {ours:#x} (header agrees)");
    }
    for (name, ours) in [
        ("IOMMU_IOAS_MAP_FIXED_IOVA", IOMMU_IOAS_MAP_FIXED_IOVA),
        ("IOMMU_IOAS_MAP_WRITEABLE", IOMMU_IOAS_MAP_WRITEABLE),
        ("IOMMU_IOAS_MAP_READABLE", IOMMU_IOAS_MAP_READABLE),
    ] {
        assert_eq!(u64::from(ours), sym.eval(name), "{name}");
    }
    check_prefix(
        &vfio_h,
        "vfio_device_bind_iommufd",
        fields!(VfioDeviceBindIommufd: argsz as "argsz", flags as "flags", iommufd as "iommufd", out_devid as "out_devid"),
        size_of::<VfioDeviceBindIommufd>(),
    );
    check_prefix(
        &vfio_h,
        "vfio_device_attach_iommufd_pt",
        fields!(VfioDeviceAttachIommufdPt: argsz as "argsz", flags as "flags", pt_id as "pt_id"),
        size_of::<VfioDeviceAttachIommufdPt>(),
    );
    check_prefix(
        &iommufd_h,
        "iommu_ioas_alloc",
        fields!(IommuIoasAlloc: size as "size", flags as "flags", out_ioas_id as "out_ioas_id"),
        size_of::<IommuIoasAlloc>(),
    );
    check_prefix(
        &iommufd_h,
        "iommu_ioas_iova_ranges",
        fields!(IommuIoasIovaRanges: size as "size", ioas_id as "ioas_id", num_iovas as "num_iovas",
            reserved as "reserved", allowed_iovas as "allowed_iovas",
            out_iova_alignment as "out_iova_alignment"),
        size_of::<IommuIoasIovaRanges>(),
    );
    check_prefix(
        &iommufd_h,
        "iommu_iova_range",
        fields!(IommuIovaRange: start as "start", last as "last"),
        size_of::<IommuIovaRange>(),
    );
    check_prefix(
        &iommufd_h,
        "iommu_ioas_map",
        fields!(IommuIoasMap: size as "size", flags as "flags", ioas_id as "ioas_id",
            reserved as "reserved", user_va as "user_va", length as "length", iova as "iova"),
        size_of::<IommuIoasMap>(),
    );
    check_prefix(
        &iommufd_h,
        "iommu_ioas_unmap",
        fields!(IommuIoasUnmap: size as "size", ioas_id as "ioas_id", iova as "iova", length as "length"),
        size_of::<IommuIoasUnmap>(),
    );
}

/// The parser itself on a snippet in the header's style (sequential and explicit enum values,
/// continued `#define` lines).
#[test]
fn symbol_parser_follows_c_rules() {
    let text = clean(
        "#define T (';')\nenum {\n\tB = 0x80,\n\tX = B,\n\tY,\n\tZ = 0x90,\n};\n\
         #define IOY _IO(T, \\\n\t\tY)\n/* Q = 1, */\n",
    );
    let s = Symbols::parse(&[text]);
    assert_eq!(s.eval("Y"), 0x81);
    assert_eq!(s.eval("Z"), 0x90);
    assert_eq!(s.eval("IOY"), num(libc::_IO(0x3b, 0x81)));
    assert!(!s.0.contains_key("Q"));
}
