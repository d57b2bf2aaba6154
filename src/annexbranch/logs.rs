//! Logs with one value per UUID, newest wins (`Logs/UUIDBased.hs`,
//! `Logs/MapLog.hs`). Two line formats exist:
//!
//! - old, for `uuid.log` and `trust.log`: `UUID VALUE timestamp=STAMP`
//!   (very old lines have no timestamp);
//! - new, for `cluster.log` and `proxy.log`: `STAMP UUID VALUE`.
//!
//! Lines are written in UUID order, one per UUID, as git-annex does when it
//! changes such a log.

use std::collections::BTreeMap;

use super::Stamp;

/// Which line format a log uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Old,
    New,
}

/// A UUID's newest entry. `stamp` is None for a line without one, which
/// loses to any line with one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub stamp: Option<Stamp>,
    pub value: String,
}

/// A parsed UUID-based log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UuidLog {
    pub entries: BTreeMap<String, Entry>,
}

impl UuidLog {
    /// Parses `text`; lines that do not parse are skipped, as git-annex
    /// skips them. Of two lines for one UUID the newer wins, the later on a
    /// tie.
    pub fn parse(format: Format, text: &str) -> UuidLog {
        let mut log = UuidLog::default();
        for line in text.lines() {
            let parsed = match format {
                Format::Old => parse_old(line),
                Format::New => parse_new(line),
            };
            if let Some((uuid, entry)) = parsed {
                log.add(uuid, entry);
            }
        }
        log
    }

    /// Adds `entry` unless the log has a newer one for `uuid`.
    pub fn add(&mut self, uuid: &str, entry: Entry) {
        match self.entries.get(uuid) {
            Some(old) if old.stamp > entry.stamp => {}
            _ => {
                self.entries.insert(uuid.to_string(), entry);
            }
        }
    }

    /// The value of `uuid`, if any.
    pub fn value(&self, uuid: &str) -> Option<&str> {
        self.entries.get(uuid).map(|e| e.value.as_str())
    }

    /// Sets `uuid` to `value` at `candidate`, or past the stamp it replaces
    /// when that is not older, so that the change wins. Returns the stamp.
    pub fn change(&mut self, uuid: &str, value: &str, candidate: Stamp) -> Stamp {
        let prev = self.entries.get(uuid).and_then(|e| e.stamp);
        let stamp = Stamp::advance(candidate, prev);
        self.entries.insert(uuid.to_string(), Entry { stamp: Some(stamp), value: value.into() });
        stamp
    }

    /// The log's text in `format`.
    pub fn build(&self, format: Format) -> String {
        let mut out = String::new();
        for (uuid, e) in &self.entries {
            match (format, e.stamp) {
                (Format::Old, Some(s)) => {
                    out.push_str(&format!("{uuid} {} timestamp={s}\n", e.value))
                }
                (Format::Old, None) => out.push_str(&format!("{uuid} {}\n", e.value)),
                (Format::New, s) => {
                    // A stampless entry shows as git-annex shows an unknown
                    // clock: 0.
                    let s = s.map_or_else(|| "0".to_string(), |s| s.to_string());
                    out.push_str(&format!("{s} {uuid} {}\n", e.value))
                }
            }
        }
        out
    }
}

fn parse_old(line: &str) -> Option<(&str, Entry)> {
    let (uuid, rest) = match line.split_once(' ') {
        Some((u, r)) => (u, Some(r)),
        None => (line, None),
    };
    if uuid.is_empty() {
        return None;
    }
    let Some(rest) = rest else {
        return Some((uuid, Entry { stamp: None, value: String::new() }));
    };
    // The timestamp ends the line; whatever comes before it is the value.
    let with_space = format!(" {rest}");
    if let Some(pos) = with_space.rfind(" timestamp=")
        && let Some(stamp) = Stamp::parse(&with_space[pos + " timestamp=".len()..])
    {
        let value = with_space[..pos].strip_prefix(' ').unwrap_or("").to_string();
        return Some((uuid, Entry { stamp: Some(stamp), value }));
    }
    Some((uuid, Entry { stamp: None, value: rest.to_string() }))
}

fn parse_new(line: &str) -> Option<(&str, Entry)> {
    let (stamp, rest) = line.split_once(' ')?;
    let stamp = Stamp::parse(stamp)?;
    let (uuid, value) = rest.split_once(' ')?;
    if uuid.is_empty() {
        return None;
    }
    Some((uuid, Entry { stamp: Some(stamp), value: value.to_string() }))
}

/// `cluster.log`'s value: the node UUIDs, sorted, space separated.
pub fn cluster_value<'a>(nodes: impl IntoIterator<Item = &'a str>) -> String {
    let set: std::collections::BTreeSet<&str> = nodes.into_iter().collect();
    set.into_iter().collect::<Vec<_>>().join(" ")
}

/// `proxy.log`'s value: `UUID:NAME` for each proxied repository, sorted,
/// space separated; names are made legal git remote names first, as
/// clients ignore others.
pub fn proxy_value<'a>(proxied: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let set: std::collections::BTreeSet<(String, String)> =
        proxied.into_iter().map(|(u, n)| (u.to_string(), make_legal_name(n))).collect();
    set.into_iter().map(|(u, n)| format!("{u}:{n}")).collect::<Vec<_>>().join(" ")
}

/// The `(UUID, NAME)` pairs of a `proxy.log` value.
pub fn parse_proxy_value(value: &str) -> Vec<(String, String)> {
    value
        .split(' ')
        .filter_map(|w| w.split_once(':'))
        .filter(|(u, n)| !u.is_empty() && !n.is_empty())
        .map(|(u, n)| (u.to_string(), n.to_string()))
        .collect()
}

/// A name git accepts as a remote name, as git-annex makes one: only
/// letters, digits, `_`, `-` and `.` (`/` becomes `_`), not starting with
/// `.`, `-` or `/`, and never empty.
pub fn make_legal_name(name: &str) -> String {
    let s: String = name
        .replace('/', "_")
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .collect();
    let trimmed = s.trim_start_matches(['.', '/', '-']);
    if trimmed.is_empty() { "unnamed".to_string() } else { trimmed.to_string() }
}

/// `trust.log`'s value for a dead repository, as `git annex dead` writes it.
pub const TRUST_DEAD: &str = "X";

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "e9a1b2c3-0000-4000-8000-000000000001";
    const U2: &str = "e9a1b2c3-0000-4000-8000-000000000002";
    const C: &str = "ac000000-0000-8000-8000-000000000000";

    #[test]
    fn old_format_lines_as_git_annex_writes_them() {
        let mut log = UuidLog::default();
        log.change(U2, "node2 (draining)", Stamp::from_secs(1_700_000_000));
        log.change(U1, "node1", Stamp::from_secs(1_700_000_000));
        assert_eq!(
            log.build(Format::Old),
            format!(
                "{U1} node1 timestamp=1700000000s\n{U2} node2 (draining) timestamp=1700000000s\n"
            )
        );
        assert_eq!(UuidLog::parse(Format::Old, &log.build(Format::Old)), log);
    }

    #[test]
    fn old_format_parses_spaces_stampless_and_newest_wins() {
        let text = format!(
            "{U1} first timestamp=10s\n{U1} a  b timestamp=12.5s\n{U1} older timestamp=11s\n\
             {U2} no stamp here\nbroken-line-without-anything\n"
        );
        let log = UuidLog::parse(Format::Old, &text);
        assert_eq!(log.value(U1), Some("a  b"));
        assert_eq!(log.entries[U1].stamp, Stamp::parse("12.5s"));
        assert_eq!(log.value(U2), Some("no stamp here"));
        assert_eq!(log.entries[U2].stamp, None);
        // Any stamp beats none.
        let mut log = log;
        log.add(U2, Entry { stamp: Some(Stamp::from_secs(1)), value: "x".into() });
        assert_eq!(log.value(U2), Some("x"));
    }

    #[test]
    fn new_format_lines_for_cluster_and_proxy_logs() {
        let mut cluster = UuidLog::default();
        cluster.change(C, &cluster_value([U2, U1]), Stamp::from_secs(1_700_000_000));
        assert_eq!(cluster.build(Format::New), format!("1700000000s {C} {U1} {U2}\n"));
        let mut proxy = UuidLog::default();
        proxy.change(C, &proxy_value([(U2, "node2"), (U1, "-node/1")]), Stamp::from_secs(5));
        assert_eq!(proxy.build(Format::New), format!("5s {C} {U1}:node_1 {U2}:node2\n"));
        let back = UuidLog::parse(Format::New, &proxy.build(Format::New));
        assert_eq!(
            parse_proxy_value(back.value(C).unwrap()),
            vec![(U1.to_string(), "node_1".to_string()), (U2.to_string(), "node2".to_string())]
        );
        // A cluster with no nodes left: an empty value, which parses back.
        cluster.change(C, &cluster_value([]), Stamp::from_secs(1_700_000_000));
        assert_eq!(cluster.build(Format::New), format!("1700000001s {C} \n"));
        assert_eq!(UuidLog::parse(Format::New, &cluster.build(Format::New)).value(C), Some(""));
    }

    #[test]
    fn trust_dead_as_git_annex_dead_writes_it() {
        let mut trust = UuidLog::default();
        trust.change(U1, TRUST_DEAD, Stamp::from_secs(1_700_000_000));
        assert_eq!(trust.build(Format::Old), format!("{U1} X timestamp=1700000000s\n"));
    }

    #[test]
    fn a_change_never_goes_behind_the_entry_it_replaces() {
        let mut log = UuidLog::parse(Format::Old, &format!("{U1} future timestamp=2000000000s\n"));
        let s = log.change(U1, "now", Stamp::from_secs(1_700_000_000));
        assert_eq!(s, Stamp::from_secs(2_000_000_001));
    }

    #[test]
    fn legal_remote_names_as_git_annex_makes_them() {
        for (name, legal) in [
            ("node1", "node1"),
            ("-x", "x"),
            (".hidden", "hidden"),
            ("a/b", "a_b"),
            ("a b!", "ab"),
            ("", "unnamed"),
            ("...", "unnamed"),
        ] {
            assert_eq!(make_legal_name(name), legal, "{name:?}");
        }
    }
}
