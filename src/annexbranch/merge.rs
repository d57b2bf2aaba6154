//! git-annex's union merge of the git-annex branch (`Git/UnionMerge.hs`):
//! a file on one side only is kept; a file on several sides becomes the
//! sorted union of their lines, without duplicates. Nothing any side wrote
//! is lost; readers take the newest line per UUID.

use std::collections::BTreeSet;

/// What merging versions of one file gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merged {
    /// Version `i` already is the union: keep it as it is.
    Same(usize),
    /// The union, as new content.
    New(Vec<u8>),
}

/// The union merge of `versions` of one file.
pub fn union(versions: &[&[u8]]) -> Merged {
    let sets: Vec<BTreeSet<&[u8]>> = versions.iter().map(|v| lines(v).collect()).collect();
    let all: BTreeSet<&[u8]> = sets.iter().flatten().copied().collect();
    // As git-annex, a side whose sorted unique lines are the union is
    // reused as it is.
    if let Some(i) = sets.iter().position(|s| *s == all) {
        return Merged::Same(i);
    }
    let mut out = Vec::new();
    for l in all {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    Merged::New(out)
}

/// Lines as Haskell's `lines`: split on `\n`, no empty last line.
fn lines(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    let v = v.strip_suffix(b"\n").unwrap_or(v);
    let empty = v.is_empty();
    v.split(|b| *b == b'\n').filter(move |_| !empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_keeps_every_line_once_sorted() {
        let a = b"2s 1 u1\n1s 1 u2\n";
        let b = b"3s 0 u1\n1s 1 u2\n";
        assert_eq!(union(&[a, b]), Merged::New(b"1s 1 u2\n2s 1 u1\n3s 0 u1\n".to_vec()));
        // Three sides, and a last line without a newline.
        let c = b"0s 1 u3";
        assert_eq!(
            union(&[a, b, c]),
            Merged::New(b"0s 1 u3\n1s 1 u2\n2s 1 u1\n3s 0 u1\n".to_vec())
        );
    }

    #[test]
    fn a_side_that_already_is_the_union_is_kept() {
        let big = b"1s 1 u1\n2s 1 u2\n";
        let small = b"2s 1 u2\n";
        assert_eq!(union(&[small, big]), Merged::Same(1));
        assert_eq!(union(&[big, big]), Merged::Same(0));
        // Even unsorted, as git-annex reuses it.
        assert_eq!(union(&[b"a\n", b"b\na\n"]), Merged::Same(1));
        assert_eq!(union(&[b"b\n", b"a\n"]), Merged::New(b"a\nb\n".to_vec()));
        assert_eq!(union(&[b"", b""]), Merged::Same(0));
    }
}
