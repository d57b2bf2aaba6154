//! git-annex's vector clock timestamps: POSIX seconds with an optional
//! fraction and a trailing `s`, as Haskell shows a `POSIXTime`
//! (`1700000000s`, `1700000000.25s`).

use std::fmt;

/// Picoseconds in a second: `POSIXTime` keeps twelve decimal places.
const PICO: i128 = 1_000_000_000_000;

/// A point in git-annex's vector clock, to the picosecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(i128);

impl Stamp {
    /// Whole seconds since the epoch, as git-annex writes its own changes.
    pub fn from_secs(secs: i64) -> Stamp {
        Stamp(secs as i128 * PICO)
    }

    /// Unix milliseconds, as the coordinator's location log keeps them.
    pub fn from_unix_ms(ms: u64) -> Stamp {
        Stamp(ms as i128 * (PICO / 1000))
    }

    /// Whole seconds, rounded down.
    pub fn secs(self) -> i64 {
        self.0.div_euclid(PICO) as i64
    }

    /// The stamp to write a change with, wanting `candidate`: past every
    /// stamp in `prev` (by a second, as git-annex advances its clock), so
    /// that the change wins over what it replaces.
    pub fn advance(candidate: Stamp, prev: impl IntoIterator<Item = Stamp>) -> Stamp {
        match prev.into_iter().max() {
            Some(p) if p >= candidate => Stamp(p.0 + PICO),
            _ => candidate,
        }
    }

    /// Parses `SECONDS[.FRACTION][s]`; digits past the twelfth decimal
    /// place are dropped.
    pub fn parse(s: &str) -> Option<Stamp> {
        let s = s.strip_suffix('s').unwrap_or(s);
        let (neg, s) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let secs: i128 = int.parse().ok()?;
        let mut pico: i128 = 0;
        for (i, b) in frac.bytes().take(12).enumerate() {
            pico += (b - b'0') as i128 * 10i128.pow(11 - i as u32);
        }
        let v = secs.checked_mul(PICO)?.checked_add(pico)?;
        Some(Stamp(if neg { -v } else { v }))
    }
}

impl fmt::Display for Stamp {
    /// As Haskell shows a `POSIXTime`: the fraction without trailing zeros,
    /// none when whole, then `s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let v = self.0.abs();
        let (secs, pico) = (v / PICO, v % PICO);
        if pico == 0 {
            return write!(f, "{sign}{secs}s");
        }
        let frac = format!("{pico:012}");
        write!(f, "{sign}{secs}.{}s", frac.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_as_git_annex_shows_posix_time() {
        assert_eq!(Stamp::from_secs(1_700_000_000).to_string(), "1700000000s");
        assert_eq!(Stamp::from_unix_ms(1_700_000_000_250).to_string(), "1700000000.25s");
        assert_eq!(Stamp::from_unix_ms(1_700_000_000_001).to_string(), "1700000000.001s");
        assert_eq!(Stamp::from_unix_ms(0).to_string(), "0s");
    }

    #[test]
    fn parses_what_git_annex_writes_and_reads() {
        for s in ["1431286201.113452s", "1700000000s", "1700000000.25s", "0s"] {
            assert_eq!(Stamp::parse(s).unwrap().to_string(), s);
        }
        // The `s` is optional; so is the fraction.
        assert_eq!(Stamp::parse("1700000000"), Some(Stamp::from_secs(1_700_000_000)));
        assert_eq!(Stamp::parse("1700000000.5"), Stamp::parse("1700000000.500s"));
        assert!(Stamp::parse("1.5s").unwrap() < Stamp::parse("1.50001s").unwrap());
        for bad in ["", "s", "x1s", "1.x", "1..2s", "1 s"] {
            assert_eq!(Stamp::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn advancing_passes_every_earlier_stamp() {
        let c = Stamp::from_secs(100);
        assert_eq!(Stamp::advance(c, []), c);
        assert_eq!(Stamp::advance(c, [Stamp::from_secs(99)]), c);
        assert_eq!(Stamp::advance(c, [Stamp::from_secs(100)]), Stamp::from_secs(101));
        let later = Stamp::parse("150.5s").unwrap();
        assert_eq!(Stamp::advance(c, [later]).to_string(), "151.5s");
    }
}
