//! Sizes as git-annex reads them (`readSize dataUnits`): a decimal number,
//! optional spaces, then an optional unit. Pure: no I/O.

/// A size unit: bytes, abbreviation, name.
struct Unit(f64, &'static str, &'static str);

/// git-annex's `dataUnits`, in its order (the first match wins).
const UNITS: &[Unit] = &[
    Unit(1e30, "QB", "quettabyte"),
    Unit(1e27, "RB", "ronnabyte"),
    Unit(1e24, "YB", "yottabyte"),
    Unit(1e21, "ZB", "zettabyte"),
    Unit(1e18, "EB", "exabyte"),
    Unit(1e15, "PB", "petabyte"),
    Unit(1e12, "TB", "terabyte"),
    Unit(1e9, "GB", "gigabyte"),
    Unit(1e6, "MB", "megabyte"),
    Unit(1e3, "kB", "kilobyte"),
    Unit(1.0, "B", "byte"),
    Unit(1_208_925_819_614_629_174_706_176.0, "YiB", "yobibyte"),
    Unit(1_180_591_620_717_411_303_424.0, "ZiB", "zebibyte"),
    Unit(1_152_921_504_606_846_976.0, "EiB", "exbibyte"),
    Unit(1_125_899_906_842_624.0, "PiB", "pebibyte"),
    Unit(1_099_511_627_776.0, "TiB", "tebibyte"),
    Unit(1_073_741_824.0, "GiB", "gibibyte"),
    Unit(1_048_576.0, "MiB", "mebibyte"),
    Unit(1024.0, "KiB", "kibibyte"),
    Unit(1e24 / 8.0, "Ybit", "yottabit"),
    Unit(1e21 / 8.0, "Zbit", "zettabit"),
    Unit(1e18 / 8.0, "Ebit", "exabit"),
    Unit(1e15 / 8.0, "Pbit", "petabit"),
    Unit(1e12 / 8.0, "Tbit", "terabit"),
    Unit(1e9 / 8.0, "Gbit", "gigabit"),
    Unit(1e6 / 8.0, "Mbit", "megabit"),
    Unit(1e3 / 8.0, "kbit", "kilobit"),
];

fn unit_bytes(name: &str) -> Option<f64> {
    if name.is_empty() {
        return Some(1.0);
    }
    let v = name.to_ascii_lowercase();
    UNITS
        .iter()
        .find(|Unit(_, abbrev, long)| {
            let abbrev = abbrev.to_ascii_lowercase();
            abbrev == v || *long == v || format!("{long}s") == v || abbrev == format!("{v}b")
        })
        .map(|u| u.0)
}

/// A size as people read it, to one decimal: in decimal units (kB, MB, …,
/// as `--reserve` and git-annex take them) or, with `binary`, in KiB,
/// MiB, ….
pub fn format_size(bytes: u64, binary: bool) -> String {
    let (step, units, small) = if binary {
        (1024.0, ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"], "B")
    } else {
        (1000.0, ["kB", "MB", "GB", "TB", "PB", "EB"], "bytes")
    };
    if (bytes as f64) < step {
        return format!("{bytes} {small}");
    }
    let mut v = bytes as f64 / step;
    let mut i = 0;
    while v >= step && i + 1 < units.len() {
        v /= step;
        i += 1;
    }
    format!("{v:.1} {}", units[i])
}

/// Parses a size as git-annex's `readSize dataUnits` does: "100", "1MB",
/// "500kb", "2GiB", "0.5 gb", "100 kilobytes".
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim_start();
    let b = t.as_bytes();
    let digits = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut end = digits(0);
    if end == 0 {
        return Err(format!("{s:?} does not start with a number"));
    }
    // A fraction needs digits after the point, as in Haskell's `reads`.
    if end + 1 < b.len() && b[end] == b'.' && b[end + 1].is_ascii_digit() {
        end = digits(end + 1);
    }
    if end < b.len() && (b[end] == b'e' || b[end] == b'E') {
        let mut i = end + 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let j = digits(i);
        if j > i {
            end = j;
        }
    }
    let number: f64 = t[..end].parse().map_err(|e| format!("{s:?}: {e}"))?;
    let rest = t[end..].trim_start();
    let unit_len = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
    let (unit, trailing) = rest.split_at(unit_len);
    if !trailing.trim().is_empty() {
        return Err(format!("unexpected {trailing:?} after the unit in {s:?}"));
    }
    let mult = unit_bytes(unit).ok_or_else(|| {
        format!("unknown unit {unit:?} in {s:?} (use B, kB, MB, GB, TB, KiB, MiB, GiB, TiB, ...)")
    })?;
    let bytes = (number * mult).round_ties_even();
    if !bytes.is_finite() || bytes >= 18_446_744_073_709_551_616.0 {
        return Err(format!("{s:?} is too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_are_read_like_git_annex() {
        for (s, n) in [
            ("0", 0),
            ("100", 100),
            ("1MB", 1_000_000),
            ("1mb", 1_000_000),
            ("1M", 1_000_000),
            ("500kb", 500_000),
            ("500k", 500_000),
            ("500 KB", 500_000),
            ("2GiB", 2 * 1024 * 1024 * 1024),
            ("2gib", 2 * 1024 * 1024 * 1024),
            ("2Gi", 2 * 1024 * 1024 * 1024),
            ("0.5 gb", 500_000_000),
            ("0.5gigabytes", 500_000_000),
            ("100 KiloBytes", 100_000),
            ("1 byte", 1),
            ("7bytes", 7),
            ("12B", 12),
            ("1.5KiB", 1536),
            ("1e3", 1000),
            ("1e3kB", 1_000_000),
            ("8Mbit", 1_000_000),
            ("1kbit", 125),
            ("1 mebibyte", 1_048_576),
            ("3 TiB", 3 * 1024u64.pow(4)),
            ("  42", 42),
            // Haskell's `round` rounds halves to even.
            ("2.5", 2),
            ("3.5", 4),
        ] {
            assert_eq!(parse_size(s), Ok(n), "{s:?}");
        }
        for bad in ["", "MB", "-1", "1 parsec", "1MB2", "1MB extra", ".5MB", "1QB", "99999999999EB"]
        {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
    }

    proptest! {
        #[test]
        fn plain_and_unit_sizes_round_trip(n in 0u64..(1 << 50)) {
            prop_assert_eq!(parse_size(&n.to_string()), Ok(n));
            prop_assert_eq!(parse_size(&format!("{n}B")), Ok(n));
            prop_assert_eq!(parse_size(&format!("{n} bytes")), Ok(n));
            prop_assert_eq!(parse_size(&format!("{}KiB", n >> 10)), Ok((n >> 10) << 10));
        }
    }
}
