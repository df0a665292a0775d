//! Byte and time quantities: parsing `"24GiB"` / `"530MB"` and printing sizes and durations.

use crate::error::UnitError;

/// Parses a byte quantity such as `"530MB"`, `"24GiB"`, `"1.5 TB"`, `"4096"` or `"unlimited"`.
///
/// Decimal suffixes (`kB`, `MB`, `GB`, `TB`) are powers of 1000, binary suffixes (`KiB`, `MiB`,
/// `GiB`, `TiB`) powers of 1024, `B` or no suffix means bytes. Suffixes are case-insensitive
/// (`k`, `m`, `g`, `t` alone count as decimal). `"unlimited"`, `"inf"` and `"max"` give
/// `u64::MAX`. Fractions are allowed; the result is rounded down to whole bytes.
///
/// ```
/// use tier_cache::units::parse_bytes;
/// assert_eq!(parse_bytes("530MB").unwrap(), 530_000_000);
/// assert_eq!(parse_bytes("24GiB").unwrap(), 24 << 30);
/// assert_eq!(parse_bytes("1.5 KiB").unwrap(), 1536);
/// assert_eq!(parse_bytes("unlimited").unwrap(), u64::MAX);
/// assert!(parse_bytes("12 parsecs").is_err());
/// ```
pub fn parse_bytes(text: &str) -> Result<u64, UnitError> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    if matches!(lower.as_str(), "unlimited" | "inf" | "infinite" | "max") {
        return Ok(u64::MAX);
    }
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let num: String = num.chars().filter(|&c| c != '_').collect();
    let value: f64 = num.parse().map_err(|_| UnitError {
        text: text.to_string(),
        expected: "a number of bytes such as 530MB, 24GiB or 4096",
    })?;
    let mult: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(UnitError {
                text: text.to_string(),
                expected: "a byte unit: B, kB, MB, GB, TB, KiB, MiB, GiB or TiB",
            })
        }
    };
    let bytes = value * mult;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(UnitError {
            text: text.to_string(),
            expected: "a byte count below 2^64",
        });
    }
    // Exact for the integer cases that matter (powers of two times small integers).
    Ok(bytes.floor() as u64)
}

/// Parses a bandwidth such as `"25GB/s"`, `"1TB/s"` or `"7GiB"` (the `/s` is optional) into
/// bytes per second.
///
/// ```
/// use tier_cache::units::parse_bandwidth;
/// assert_eq!(parse_bandwidth("25GB/s").unwrap(), 25e9);
/// ```
pub fn parse_bandwidth(text: &str) -> Result<f64, UnitError> {
    let t = text.trim();
    let t = t
        .strip_suffix("/s")
        .or_else(|| t.strip_suffix("/S"))
        .unwrap_or(t);
    let bytes = parse_bytes(t).map_err(|_| UnitError {
        text: text.to_string(),
        expected: "a bandwidth such as 25GB/s or 1TB/s",
    })?;
    if bytes == 0 || bytes == u64::MAX {
        return Err(UnitError {
            text: text.to_string(),
            expected: "a finite, non-zero bandwidth such as 25GB/s",
        });
    }
    Ok(bytes as f64)
}

/// Formats a byte count with a binary unit and one decimal: `22.0 GiB`, `530.0 MiB`, `512 B`;
/// `u64::MAX` prints as `unlimited`.
///
/// ```
/// use tier_cache::units::format_bytes;
/// assert_eq!(format_bytes(22 << 30), "22.0 GiB");
/// assert_eq!(format_bytes(512), "512 B");
/// assert_eq!(format_bytes(u64::MAX), "unlimited");
/// ```
pub fn format_bytes(bytes: u64) -> String {
    if bytes == u64::MAX {
        return "unlimited".to_string();
    }
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Formats seconds with a readable unit: `9.10 ms`, `35.0 us`, `1.25 s`.
///
/// ```
/// use tier_cache::units::format_seconds;
/// assert_eq!(format_seconds(0.0091), "9.10 ms");
/// ```
pub fn format_seconds(seconds: f64) -> String {
    let a = seconds.abs();
    if a >= 1.0 {
        format!("{seconds:.2} s")
    } else if a >= 1e-3 {
        format!("{:.2} ms", seconds * 1e3)
    } else if a >= 1e-6 {
        format!("{:.1} us", seconds * 1e6)
    } else {
        format!("{:.0} ns", seconds * 1e9)
    }
}

/// Formats a bandwidth in decimal units: `25.0 GB/s`.
pub fn format_bandwidth(bytes_per_second: f64) -> String {
    let b = bytes_per_second;
    if b >= 1e12 {
        format!("{:.2} TB/s", b / 1e12)
    } else if b >= 1e9 {
        format!("{:.1} GB/s", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB/s", b / 1e6)
    } else {
        format!("{b:.0} B/s")
    }
}
