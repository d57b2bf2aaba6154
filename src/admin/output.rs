//! How admin commands print: one JSON document with `--json` (sizes in
//! bytes, ages in seconds, as numbers), otherwise aligned tables with
//! human-readable sizes and ages for people.

use std::io::Write;

use serde_json::Value;

/// The output mode every command is given.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// One JSON document on stdout instead of text.
    pub json: bool,
}

impl Out {
    /// Prints `v` as the command's JSON document.
    pub fn json(&self, v: &Value) {
        let mut out = std::io::stdout().lock();
        // A closed pipe is the reader's choice; nothing to report.
        let _ = serde_json::to_writer_pretty(&mut out, v).map(|_| writeln!(out));
    }

    /// Prints `v` with --json, else the text `human` makes.
    pub fn either(&self, v: Value, human: impl FnOnce() -> String) {
        if self.json {
            self.json(&v);
        } else {
            println!("{}", human());
        }
    }
}

/// A size in binary units (KiB, MiB, …).
pub fn human_bytes(n: u64) -> String {
    crate::preferred::format_size(n, true)
}

/// How long ago, in the largest whole unit: "3s ago", "5m ago", "2h ago",
/// "4d ago".
pub fn human_age(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs}s ago"),
        120..7_200 => format!("{}m ago", secs / 60),
        7_200..172_800 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// Seconds since a unix-milliseconds time, or None for 0 (never).
pub fn age_secs(unix_ms: u64) -> Option<u64> {
    (unix_ms != 0).then(|| crate::clock::unix_ms().saturating_sub(unix_ms) / 1000)
}

/// A table for people: a header row and columns padded to their widest cell.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table { headers: headers.to_vec(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, without a trailing newline; the last column is
    /// not padded.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let line = |cells: Vec<&str>| {
            let n = cells.len();
            let mut s = String::new();
            for (i, c) in cells.into_iter().enumerate() {
                s.push_str(c);
                if i + 1 < n {
                    let pad = widths[i] - c.chars().count() + 2;
                    s.extend(std::iter::repeat_n(' ', pad));
                }
            }
            s
        };
        let mut lines = vec![line(self.headers.clone())];
        lines.extend(self.rows.iter().map(|r| line(r.iter().map(String::as_str).collect())));
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_as_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(human_age(3), "3s ago");
        assert_eq!(human_age(600), "10m ago");
        assert_eq!(human_age(7_200), "2h ago");
        assert_eq!(human_age(3 * 86_400), "3d ago");
    }

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&["NAME", "HEALTH", "FREE"]);
        t.row(vec!["node10".into(), "up".into(), "1.0 GiB".into()]);
        t.row(vec!["n".into(), "unknown".into(), "-".into()]);
        assert_eq!(
            t.render(),
            "NAME    HEALTH   FREE\nnode10  up       1.0 GiB\nn       unknown  -"
        );
    }
}
