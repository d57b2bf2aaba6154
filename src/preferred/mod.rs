//! Preferred content expressions, in git-annex's syntax
//! (`git-annex-preferred-content(1)`): which keys a node wants.
//!
//! Supported terms: `anything`, `nothing`, `include=GLOB`, `exclude=GLOB`,
//! `largerthan=SIZE`, `smallerthan=SIZE` and `copies=N`, combined with `and`,
//! `or`, `not` and parentheses. As in git-annex:
//!
//! * tokens are separated by whitespace, and `(` / `)` are always tokens of
//!   their own (so a glob cannot contain a space or a parenthesis);
//! * terms written next to each other are joined by `and`;
//! * `and` and `or` have the same precedence and group from the left:
//!   `a or b and c` means `(a or b) and c`; `not` applies to the one term or
//!   parenthesised group after it;
//! * a glob is matched, case-sensitively, against the whole path of the
//!   client's associated file (relative to the top of its repository): `*`
//!   and `?` match `/` too, `[...]` / `[!...]` are character classes that may
//!   hold POSIX classes like `[[:space:]]`, a backslash is an ordinary
//!   character and `/` matches one or more slashes. Without an associated
//!   file `include=` is false and `exclude=` true (`exclude=G` is exactly
//!   `not include=G`);
//! * sizes are read like git-annex's `readSize`: a decimal number, optional
//!   spaces, then an optional unit matched without regard to case: storage
//!   units (`kB`, `MB`, `GB`, ... powers of 1000), committee units (`KiB`,
//!   `MiB`, `GiB`, ... powers of 1024) and bandwidth units (`kbit`, `Mbit`,
//!   ...), by abbreviation, name or plural name, and a unit's abbreviation
//!   may drop its final `b` (`500k` is `500kB`). No unit means bytes;
//! * `copies=N` is true when at least N copies are known (here: nodes of the
//!   cluster that the location log says hold the key).
//!
//! Where git-annex is lenient this module refuses, so that a mistyped
//! expression is caught when it is set rather than silently meaning
//! something else: unbalanced parentheses, a dangling `and`/`or`/`not`, text
//! after a size's unit, and git-annex terms annexmesh does not implement
//! (groups, trust levels, metadata, ...) are errors.
//!
//! A key without a size (`-s` field) is smaller than every size, as in
//! git-annex (which compares a missing size as less than any): it matches
//! `smallerthan` and never `largerthan`.
//!
//! Globs are compiled to regular expressions with the `regex` crate, the way
//! git-annex itself compiles them (`Utility/Glob.hs`); glob crates such as
//! `globset` differ from git-annex on `{a,b}`, `**`, backslashes and POSIX
//! classes.
//!
//! Pure: no I/O and no coordinator types. `parse` builds the tree, `glob`
//! and `size` read the values of `include=`/`exclude=` and
//! `largerthan=`/`smallerthan=`.

mod glob;
mod parse;
mod size;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use crate::p2p::key::Key;

pub use glob::Glob;
pub use parse::{MAX_DEPTH, MAX_LEN, MAX_TERMS, ParseError};
pub use size::{format_size, parse_size};

/// What an expression is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub key: &'a Key,
    /// The client's associated file, relative to the top of its repository.
    pub file: Option<&'a str>,
    /// Copies of the key known to exist.
    pub copies: u64,
}

/// A parsed preferred content expression.
#[derive(Debug, Clone)]
pub struct Expr {
    source: String,
    tree: Tree,
}

/// An expression's structure; `parse` builds it.
#[derive(Debug, Clone)]
enum Tree {
    Term(Term),
    Not(Box<Tree>),
    And(Box<Tree>, Box<Tree>),
    Or(Box<Tree>, Box<Tree>),
}

/// One term, with its value read.
#[derive(Debug, Clone)]
enum Term {
    Anything,
    Nothing,
    Include(Glob),
    Exclude(Glob),
    LargerThan(u64),
    SmallerThan(u64),
    Copies(u64),
}

impl Expr {
    /// Parses `source`, refusing what git-annex would read leniently.
    pub fn parse(source: &str) -> Result<Expr, ParseError> {
        let tree = parse::parse(source)?;
        Ok(Expr { source: source.split_whitespace().collect::<Vec<_>>().join(" "), tree })
    }

    /// The expression as written, with runs of whitespace made single spaces.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the expression wants `s`.
    pub fn matches(&self, s: &Subject<'_>) -> bool {
        self.tree.eval(s)
    }

    /// Whether the answer can depend on the associated file or on the
    /// number of copies, not only on the key.
    pub fn reads_file_or_copies(&self) -> bool {
        self.tree.reads_file_or_copies()
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for Expr {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Expr, ParseError> {
        Expr::parse(s)
    }
}

impl Tree {
    fn reads_file_or_copies(&self) -> bool {
        match self {
            Tree::Term(t) => {
                matches!(t, Term::Include(_) | Term::Exclude(_) | Term::Copies(_))
            }
            Tree::Not(a) => a.reads_file_or_copies(),
            Tree::And(a, b) | Tree::Or(a, b) => {
                a.reads_file_or_copies() || b.reads_file_or_copies()
            }
        }
    }

    fn eval(&self, s: &Subject<'_>) -> bool {
        match self {
            Tree::Term(t) => t.eval(s),
            Tree::Not(a) => !a.eval(s),
            Tree::And(a, b) => a.eval(s) && b.eval(s),
            Tree::Or(a, b) => a.eval(s) || b.eval(s),
        }
    }
}

impl Term {
    fn eval(&self, s: &Subject<'_>) -> bool {
        match self {
            Term::Anything => true,
            Term::Nothing => false,
            Term::Include(g) => s.file.is_some_and(|f| g.matches(f)),
            Term::Exclude(g) => !s.file.is_some_and(|f| g.matches(f)),
            Term::LargerThan(n) => s.key.size.is_some_and(|size| size > *n),
            Term::SmallerThan(n) => s.key.size.is_none_or(|size| size < *n),
            Term::Copies(n) => s.copies >= *n,
        }
    }
}
