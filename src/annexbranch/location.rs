//! Location logs (`Logs/Location.hs`, `Logs/Presence/Pure.hs`): one file
//! per key at `aaa/bbb/KEY.log` (the first six hex digits of the md5 of the
//! key, in two levels, as `hashDirLower`), with lines `STAMP STATUS UUID`,
//! STATUS `1` present, `0` missing, `X` dead.

use std::collections::BTreeMap;

use md5::{Digest, Md5};

use super::Stamp;

/// What a location line says of a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Present,
    Missing,
    Dead,
}

impl Status {
    fn char(self) -> char {
        match self {
            Status::Present => '1',
            Status::Missing => '0',
            Status::Dead => 'X',
        }
    }
}

/// One line of a location log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub stamp: Stamp,
    pub status: Status,
    pub uuid: String,
}

/// The location log's path in the git-annex branch for `key`.
pub fn path(key: &str) -> String {
    // The md5 is of the key without chunk fields; a key that does not
    // parse is hashed as written.
    let hashed = match key.parse::<crate::p2p::key::Key>() {
        Ok(k) => k.without_chunk().to_string(),
        Err(_) => key.to_string(),
    };
    let hex = hex::encode(Md5::digest(hashed.as_bytes()));
    format!("{}/{}/{}.log", &hex[0..3], &hex[3..6], key_file(key))
}

/// A key as a file name, as git-annex's `keyFile`: when it has any of
/// `& % : /`, `&` becomes `&a`, `%` `&s`, `:` `&c` and `/` `%`.
fn key_file(key: &str) -> String {
    if !key.contains(['&', '%', ':', '/']) {
        return key.to_string();
    }
    let mut out = String::with_capacity(key.len() + 8);
    for c in key.chars() {
        match c {
            '&' => out.push_str("&a"),
            '%' => out.push_str("&s"),
            ':' => out.push_str("&c"),
            '/' => out.push('%'),
            c => out.push(c),
        }
    }
    out
}

/// Parses a location log; lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Line> {
    text.lines()
        .filter_map(|l| {
            let (stamp, rest) = l.split_once(' ')?;
            let (status, uuid) = rest.split_once(' ')?;
            let status = match status {
                "1" => Status::Present,
                "0" => Status::Missing,
                "X" => Status::Dead,
                _ => return None,
            };
            Some(Line { stamp: Stamp::parse(stamp)?, status, uuid: uuid.to_string() })
        })
        .collect()
}

/// One line per UUID, the newest (the first on a tie, as git-annex
/// compacts), in UUID order.
pub fn compact(lines: Vec<Line>) -> Vec<Line> {
    let mut m: BTreeMap<String, Line> = BTreeMap::new();
    for l in lines.into_iter().rev() {
        match m.get(&l.uuid) {
            Some(old) if old.stamp > l.stamp => {}
            _ => {
                m.insert(l.uuid.clone(), l);
            }
        }
    }
    m.into_values().collect()
}

/// The text of `lines`.
pub fn build(lines: &[Line]) -> String {
    lines.iter().map(|l| format!("{} {} {}\n", l.stamp, l.status.char(), l.uuid)).collect()
}

/// `text` with `changes` applied, each unless the log has a newer line for
/// its UUID, compacted; None when nothing changed.
pub fn apply(text: &str, changes: &[Line]) -> Option<String> {
    let old = parse(text);
    let before = compact(old.clone());
    // New lines go first, so that they win ties, as git-annex adds them.
    let mut all: Vec<Line> = changes.to_vec();
    all.extend(old);
    let after = compact(all);
    (after != before || build(&after) != text).then(|| build(&after))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str =
        "SHA256E-s6--5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
    const U1: &str = "e9a1b2c3-0000-4000-8000-000000000001";
    const U2: &str = "e9a1b2c3-0000-4000-8000-000000000002";

    #[test]
    fn paths_as_in_git_annex_branches() {
        // hashdirlower of HELLO is 992/280 (`git annex examinekey`).
        assert_eq!(path(HELLO), format!("992/280/{HELLO}.log"));
        // Chunk fields do not move it; they stay in the file name.
        let chunked = "SHA256-s100-S10-C2--abc";
        assert!(path(chunked).starts_with(&path("SHA256-s100--abc")[..8]));
        assert!(path(chunked).ends_with("/SHA256-s100-S10-C2--abc.log"));
        assert!(path("URL--http&c%%foo&a%").ends_with("/URL--http&ac&s&sfoo&aa&s.log"));
        assert_eq!(key_file("URL--http://x/y"), "URL--http&c%%x%y");
    }

    #[test]
    fn lines_as_git_annex_writes_them() {
        let lines = vec![
            Line {
                stamp: Stamp::from_unix_ms(1_700_000_000_250),
                status: Status::Present,
                uuid: U1.into(),
            },
            Line {
                stamp: Stamp::from_secs(1_700_000_001),
                status: Status::Missing,
                uuid: U2.into(),
            },
        ];
        let text = build(&lines);
        assert_eq!(text, format!("1700000000.25s 1 {U1}\n1700000001s 0 {U2}\n"));
        assert_eq!(parse(&text), lines);
    }

    #[test]
    fn newest_line_per_uuid_wins_and_older_changes_are_ignored() {
        let text = format!("20s 1 {U1}\n10s 1 {U2}\n");
        let changed = apply(
            &text,
            &[
                Line { stamp: Stamp::from_secs(15), status: Status::Missing, uuid: U1.into() },
                Line { stamp: Stamp::from_secs(15), status: Status::Missing, uuid: U2.into() },
            ],
        )
        .unwrap();
        assert_eq!(changed, format!("20s 1 {U1}\n15s 0 {U2}\n"));
        // The same change again changes nothing.
        assert_eq!(
            apply(
                &changed,
                &[Line { stamp: Stamp::from_secs(15), status: Status::Missing, uuid: U2.into() }]
            ),
            None
        );
        // A union-merged file with two lines for one UUID is compacted.
        let merged = format!("1s 1 {U1}\n2s 0 {U1}\n");
        assert_eq!(apply(&merged, &[]), Some(format!("2s 0 {U1}\n")));
    }
}
