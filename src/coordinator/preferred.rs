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

use std::fmt;
use std::str::FromStr;

use regex::Regex;

use crate::p2p::key::Key;

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

#[derive(Debug, Clone)]
enum Tree {
    Term(Term),
    Not(Box<Tree>),
    And(Box<Tree>, Box<Tree>),
    Or(Box<Tree>, Box<Tree>),
}

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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the expression is empty")]
    Empty,
    #[error("unknown term {0:?}")]
    Unknown(String),
    #[error("{0:?} is a git-annex term that annexmesh does not support")]
    Unsupported(String),
    #[error("bad size in {term:?}: {why}")]
    BadSize { term: String, why: String },
    #[error(
        "bad number in {0:?}: copies=N takes a whole number (trust levels and groups are not supported)"
    )]
    BadCopies(String),
    #[error("bad glob in {term:?}: {why}")]
    BadGlob { term: String, why: String },
    #[error("{0:?} has no value: write {0}VALUE")]
    MissingValue(String),
    #[error("{0:?} takes no value")]
    UnexpectedValue(String),
    #[error("expected a term after {0:?}")]
    Dangling(String),
    #[error("{0:?} needs a term before it")]
    NothingBefore(String),
    #[error("unbalanced parentheses: a \"(\" is not closed")]
    Unclosed,
    #[error("unbalanced parentheses: a \")\" closes nothing")]
    UnexpectedClose,
    #[error("empty parentheses")]
    EmptyGroup,
}

/// git-annex preferred content terms annexmesh does not evaluate.
const UNSUPPORTED: &[&str] = &[
    "standard",
    "groupwanted",
    "inpreferreddir",
    "present",
    "securehash",
    "unused",
    "lackingcopies",
    "approxlackingcopies",
    "inbackend",
    "metadata",
    "url",
    "inallgroup",
    "onlyingroup",
    "balanced",
    "fullybalanced",
    "sizebalanced",
    "fullysizebalanced",
    "mimetype",
    "mimeencoding",
];

impl Expr {
    pub fn parse(source: &str) -> Result<Expr, ParseError> {
        let tokens = tokenize(source);
        if tokens.is_empty() {
            return Err(ParseError::Empty);
        }
        let mut p = Parser { tokens: &tokens, pos: 0 };
        let tree = p.sequence()?;
        // `sequence` only stops early at a ")".
        let tree = match tree {
            Some(t) if p.pos == tokens.len() => t,
            _ => return Err(ParseError::UnexpectedClose),
        };
        Ok(Expr { source: source.split_whitespace().collect::<Vec<_>>().join(" "), tree })
    }

    /// The expression as written, with runs of whitespace made single spaces.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, s: &Subject<'_>) -> bool {
        self.tree.eval(s)
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

/// Words separated by whitespace, with every parenthesis a token of its own.
fn tokenize(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for word in s.split_whitespace() {
        let mut start = 0;
        for (i, c) in word.char_indices() {
            if c == '(' || c == ')' {
                if start < i {
                    out.push(&word[start..i]);
                }
                out.push(&word[i..i + 1]);
                start = i + 1;
            }
        }
        if start < word.len() {
            out.push(&word[start..]);
        }
    }
    out
}

struct Parser<'t, 's> {
    tokens: &'t [&'s str],
    pos: usize,
}

impl<'s> Parser<'_, 's> {
    fn peek(&self) -> Option<&'s str> {
        self.tokens.get(self.pos).copied()
    }

    /// Operands joined by `and`, `or` or nothing (meaning `and`), folded
    /// from the left with equal precedence; stops before a ")" or the end.
    fn sequence(&mut self) -> Result<Option<Tree>, ParseError> {
        let mut acc: Option<Tree> = None;
        loop {
            match self.peek() {
                None | Some(")") => break,
                Some(op @ ("and" | "or")) => {
                    let Some(left) = acc.take() else {
                        return Err(ParseError::NothingBefore(op.to_string()));
                    };
                    self.pos += 1;
                    let right = self.operand(op)?;
                    acc = Some(if op == "and" {
                        Tree::And(Box::new(left), Box::new(right))
                    } else {
                        Tree::Or(Box::new(left), Box::new(right))
                    });
                }
                Some(_) => {
                    let right = self.unit()?;
                    acc = Some(match acc {
                        None => right,
                        Some(left) => Tree::And(Box::new(left), Box::new(right)),
                    });
                }
            }
        }
        Ok(acc)
    }

    /// The operand after `after` ("and", "or", "not").
    fn operand(&mut self, after: &str) -> Result<Tree, ParseError> {
        match self.peek() {
            None | Some(")" | "and" | "or") => Err(ParseError::Dangling(after.to_string())),
            Some(_) => self.unit(),
        }
    }

    /// `not UNIT`, `( SEQUENCE )` or a term.
    fn unit(&mut self) -> Result<Tree, ParseError> {
        let tok = self.peek().expect("callers check for a token");
        self.pos += 1;
        match tok {
            "not" => Ok(Tree::Not(Box::new(self.operand("not")?))),
            "(" => {
                if self.peek() == Some(")") {
                    return Err(ParseError::EmptyGroup);
                }
                let inner = self.sequence()?.ok_or(ParseError::EmptyGroup)?;
                if self.peek() != Some(")") {
                    return Err(ParseError::Unclosed);
                }
                self.pos += 1;
                Ok(inner)
            }
            ")" => Err(ParseError::UnexpectedClose),
            t => Ok(Tree::Term(term(t)?)),
        }
    }
}

fn term(tok: &str) -> Result<Term, ParseError> {
    let (name, value) = match tok.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (tok, None),
    };
    let need = |v: Option<&str>| -> Result<String, ParseError> {
        match v {
            Some(v) if !v.is_empty() || name == "include" || name == "exclude" => Ok(v.to_string()),
            _ => Err(ParseError::MissingValue(format!("{name}="))),
        }
    };
    match name {
        "anything" | "nothing" if value.is_some() => {
            Err(ParseError::UnexpectedValue(name.to_string()))
        }
        "anything" => Ok(Term::Anything),
        "nothing" => Ok(Term::Nothing),
        "include" => Ok(Term::Include(glob(tok, &need(value)?)?)),
        "exclude" => Ok(Term::Exclude(glob(tok, &need(value)?)?)),
        "largerthan" => Ok(Term::LargerThan(size(tok, &need(value)?)?)),
        "smallerthan" => Ok(Term::SmallerThan(size(tok, &need(value)?)?)),
        "copies" => {
            let v = need(value)?;
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParseError::BadCopies(tok.to_string()));
            }
            v.parse().map(Term::Copies).map_err(|_| ParseError::BadCopies(tok.to_string()))
        }
        n if UNSUPPORTED.contains(&n) => Err(ParseError::Unsupported(tok.to_string())),
        _ => Err(ParseError::Unknown(tok.to_string())),
    }
}

fn size(tok: &str, v: &str) -> Result<u64, ParseError> {
    parse_size(v).map_err(|why| ParseError::BadSize { term: tok.to_string(), why })
}

fn glob(tok: &str, v: &str) -> Result<Glob, ParseError> {
    Glob::new(v).map_err(|why| ParseError::BadGlob { term: tok.to_string(), why })
}

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

/// A git-annex file glob.
#[derive(Debug, Clone)]
pub struct Glob(Regex);

const POSIX_CLASSES: &[&str] = &[
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct",
    "space", "upper", "word", "xdigit",
];

/// A character inside a regex class, escaped when the class syntax needs it.
fn class_char(c: char, out: &mut String) {
    if matches!(c, '\\' | '[' | ']' | '^' | '-' | '&' | '~' | '|') {
        out.push('\\');
    }
    out.push(c);
}

impl Glob {
    pub fn new(glob: &str) -> Result<Glob, String> {
        let mut re = String::from(r"\A(?:");
        let chars: Vec<char> = glob.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' => re.push_str(".*"),
                '?' => re.push('.'),
                '/' => re.push_str("/+"),
                '\\' => re.push_str(r"\\+"),
                '[' => i = bracket(&chars, i, &mut re)?,
                c => re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
            }
        }
        re.push_str(r")\z");
        Regex::new(&re).map(Glob).map_err(|e| format!("cannot compile it: {e}"))
    }

    pub fn matches(&self, path: &str) -> bool {
        self.0.is_match(path)
    }
}

/// Translates the bracket expression that starts at `chars[i]` (just after
/// its "["); returns the index after its "]".
fn bracket(chars: &[char], mut i: usize, re: &mut String) -> Result<usize, String> {
    re.push('[');
    if i < chars.len() && (chars[i] == '!' || chars[i] == '^') {
        re.push('^');
        i += 1;
    }
    let start = i;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err("a \"[\" is not closed by \"]\"".into());
        };
        // A "]" right after the opening is a member, as in glob(7).
        if c == ']' && i > start {
            re.push(']');
            return Ok(i + 1);
        }
        if c == '[' && matches!(chars.get(i + 1), Some(':' | '.' | '=')) {
            let kind = chars[i + 1];
            let rest: String = chars[i + 2..].iter().collect();
            let close = format!("{kind}]");
            let Some(end) = rest.find(&close) else {
                return Err(format!("\"[{kind}\" is not closed by \"{close}\""));
            };
            let name = &rest[..end];
            if kind != ':' {
                return Err(format!(
                    "\"[{kind}{name}{kind}]\": collating elements and equivalence classes are not supported"
                ));
            }
            if !POSIX_CLASSES.contains(&name) {
                return Err(format!("unknown character class \"[:{name}:]\""));
            }
            re.push_str(&format!("[:{name}:]"));
            i += 2 + name.chars().count() + 2;
            continue;
        }
        // A range "a-z"; a "-" first or last is a member.
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|&e| e != ']') {
            let end = chars[i + 2];
            if end < c {
                return Err(format!("the range \"{c}-{end}\" is backwards"));
            }
            class_char(c, re);
            re.push('-');
            class_char(end, re);
            i += 3;
        } else {
            class_char(c, re);
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(size: Option<u64>) -> Key {
        let mut k: Key =
            "SHA256E-s1--5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03.txt"
                .parse()
                .unwrap();
        k.size = size;
        k
    }

    fn eval(expr: &str, size: Option<u64>, file: Option<&str>, copies: u64) -> bool {
        let k = key(size);
        Expr::parse(expr).unwrap_or_else(|e| panic!("{expr:?}: {e}")).matches(&Subject {
            key: &k,
            file,
            copies,
        })
    }

    fn err(expr: &str) -> ParseError {
        Expr::parse(expr).expect_err(expr)
    }

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

    #[test]
    fn terms() {
        assert!(eval("anything", None, None, 0));
        assert!(!eval("nothing", None, None, 0));
        assert!(eval("largerthan=1MB", Some(2_000_000), None, 0));
        assert!(!eval("largerthan=1MB", Some(1_000_000), None, 0));
        assert!(eval("smallerthan=1MB", Some(999_999), None, 0));
        assert!(!eval("smallerthan=1MB", Some(1_000_000), None, 0));
        // Unknown size: smaller than anything, as in git-annex.
        assert!(!eval("largerthan=0", None, None, 0));
        assert!(eval("smallerthan=1", None, None, 0));
        assert!(eval("copies=2", None, None, 2));
        assert!(eval("copies=2", None, None, 3));
        assert!(!eval("copies=2", None, None, 1));
        assert!(eval("copies=0", None, None, 0));
    }

    #[test]
    fn globs_match_like_git_annex() {
        let m = |glob: &str, file: &str| eval(&format!("include={glob}"), None, Some(file), 0);
        assert!(m("*.mp3", "a.mp3"));
        // `*` and `?` match "/" too.
        assert!(m("*.mp3", "music/rock/a.mp3"));
        assert!(m("a?b", "a/b"));
        assert!(!m("*.mp3", "a.mp3.txt"));
        assert!(m("archive/*", "archive/x/y"));
        assert!(!m("archive/*", "old/archive/x"));
        assert!(m("*/archive/*", "old/archive/x"));
        assert!(!m("*/archive/*", "archive/x"));
        // Case-sensitive.
        assert!(!m("*.MP3", "a.mp3"));
        assert!(m("foo[Bb]ar", "fooBar"));
        assert!(m("foo[!Bb]ar", "fooxar"));
        assert!(!m("foo[!Bb]ar", "foobar"));
        assert!(m("f[a-c]o", "fbo"));
        assert!(!m("f[a-c]o", "fdo"));
        assert!(m("a[[:space:]]b", "a\tb"));
        assert!(m("a[[:digit:]x]b", "axb"));
        assert!(m("[]]", "]"));
        assert!(m("[a-]", "-"));
        // Regex syntax in a glob is literal; so are braces and backslashes.
        assert!(m("a.b", "a.b"));
        assert!(!m("a.b", "axb"));
        assert!(m("{a,b}", "{a,b}"));
        assert!(!m("{a,b}", "a"));
        assert!(m(r"a\*", r"a\xyz"));
        assert!(m("x+y^$|", "x+y^$|"));
        assert!(m("ünïcødé*", "ünïcødé.txt"));
        // A "/" in the glob matches runs of slashes.
        assert!(m("a/b", "a//b"));
        // An empty glob matches only an empty path.
        assert!(m("", ""));
        assert!(!m("", "a"));
        // No associated file: include is false, exclude true.
        assert!(!eval("include=*", None, None, 0));
        assert!(eval("exclude=*", None, None, 0));
        assert!(!eval("exclude=*.mp3", None, Some("x/y.mp3"), 0));
        assert!(eval("exclude=*.mp3", None, Some("x/y.ogg"), 0));
    }

    #[test]
    fn and_or_have_equal_precedence_from_the_left() {
        // git-annex reads "a or b and c" as "(a or b) and c".
        assert!(!eval("anything or anything and nothing", None, None, 0));
        assert!(eval("nothing and nothing or anything", None, None, 0));
        assert!(eval("anything or (anything and nothing)", None, None, 0));
        // Juxtaposition is "and".
        assert!(!eval("anything nothing", None, None, 0));
        assert!(eval("anything anything", None, None, 0));
        assert!(!eval("anything or anything nothing", None, None, 0));
        // "not" takes one term or group.
        assert!(eval("not nothing", None, None, 0));
        assert!(eval("not nothing and anything", None, None, 0));
        assert!(!eval("not (nothing or anything)", None, None, 0));
        assert!(eval("not not anything", None, None, 0));
        assert!(!eval("anything not anything", None, None, 0));
        assert!(eval("nothing or not nothing", None, None, 0));
        // Parentheses need no spaces.
        assert!(eval("(nothing or anything)anything", None, None, 0));
        assert!(eval("((anything))", None, None, 0));
        assert!(eval(
            "exclude=archive/* and (include=*.mp3 or smallerthan=1mb)",
            Some(5_000_000),
            Some("music/a.mp3"),
            0
        ));
        assert!(!eval(
            "exclude=archive/* and (include=*.mp3 or smallerthan=1mb)",
            Some(5_000_000),
            Some("archive/a.mp3"),
            0
        ));
        assert!(eval(
            "exclude=archive/* and (include=*.mp3 or smallerthan=1mb)",
            Some(10),
            Some("a.txt"),
            0
        ));
    }

    #[test]
    fn bad_expressions_are_refused_with_a_reason() {
        assert_eq!(err(""), ParseError::Empty);
        assert_eq!(err("  \t "), ParseError::Empty);
        assert_eq!(err("everything"), ParseError::Unknown("everything".into()));
        assert_eq!(err("anything AND nothing"), ParseError::Unknown("AND".into()));
        assert_eq!(err("standard"), ParseError::Unsupported("standard".into()));
        assert_eq!(err("metadata=tag=done"), ParseError::Unsupported("metadata=tag=done".into()));
        assert_eq!(err("copies=trusted:2"), ParseError::BadCopies("copies=trusted:2".into()));
        assert_eq!(err("copies=-1"), ParseError::BadCopies("copies=-1".into()));
        assert_eq!(err("copies="), ParseError::MissingValue("copies=".into()));
        assert_eq!(err("largerthan"), ParseError::MissingValue("largerthan=".into()));
        assert_eq!(err("anything=1"), ParseError::UnexpectedValue("anything".into()));
        assert!(matches!(err("largerthan=lots"), ParseError::BadSize { .. }));
        assert!(matches!(err("smallerthan=1 MB"), ParseError::Unknown(t) if t == "MB"));
        assert!(matches!(err("include=[abc"), ParseError::BadGlob { .. }));
        assert!(matches!(err("include=[[:bogus:]]"), ParseError::BadGlob { .. }));
        assert!(matches!(err("include=[z-a]"), ParseError::BadGlob { .. }));
        assert_eq!(err("anything and"), ParseError::Dangling("and".into()));
        assert_eq!(err("anything or )"), ParseError::Dangling("or".into()));
        assert_eq!(err("not"), ParseError::Dangling("not".into()));
        assert_eq!(err("anything and and nothing"), ParseError::Dangling("and".into()));
        assert_eq!(err("or anything"), ParseError::NothingBefore("or".into()));
        assert_eq!(err("(anything"), ParseError::Unclosed);
        assert_eq!(err("anything)"), ParseError::UnexpectedClose);
        assert_eq!(err(")"), ParseError::UnexpectedClose);
        assert_eq!(err("()"), ParseError::EmptyGroup);
        // Every message names the problem.
        assert!(err("include=[abc").to_string().contains("include=[abc"));
    }

    #[test]
    fn source_is_kept_with_whitespace_normalised() {
        let e = Expr::parse("  include=*.mp3\tor\n(largerthan=1MB )").unwrap();
        assert_eq!(e.as_str(), "include=*.mp3 or (largerthan=1MB )");
        assert_eq!(Expr::parse(e.as_str()).unwrap().as_str(), e.as_str());
    }

    /// A random expression, evaluated directly.
    #[derive(Debug, Clone)]
    enum Gen {
        Any,
        Nothing,
        Larger(u64),
        Smaller(u64),
        Copies(u64),
        Include(&'static str),
        Not(Box<Gen>),
        And(Box<Gen>, Box<Gen>),
        Or(Box<Gen>, Box<Gen>),
    }

    impl Gen {
        fn eval(&self, size: u64, file: &str, copies: u64) -> bool {
            match self {
                Gen::Any => true,
                Gen::Nothing => false,
                Gen::Larger(n) => size > *n,
                Gen::Smaller(n) => size < *n,
                Gen::Copies(n) => copies >= *n,
                Gen::Include(g) => match *g {
                    "*" => true,
                    "*.mp3" => file.ends_with(".mp3"),
                    _ => file.starts_with("archive/"),
                },
                Gen::Not(a) => !a.eval(size, file, copies),
                Gen::And(a, b) => a.eval(size, file, copies) && b.eval(size, file, copies),
                Gen::Or(a, b) => a.eval(size, file, copies) || b.eval(size, file, copies),
            }
        }

        /// Fully parenthesised; `and` written as juxtaposition when `juxtapose`.
        fn render(&self, juxtapose: bool) -> String {
            match self {
                Gen::Any => "anything".into(),
                Gen::Nothing => "nothing".into(),
                Gen::Larger(n) => format!("largerthan={n}"),
                Gen::Smaller(n) => format!("smallerthan={n}B"),
                Gen::Copies(n) => format!("copies={n}"),
                Gen::Include(g) => format!("include={g}"),
                Gen::Not(a) => format!("not ({})", a.render(juxtapose)),
                Gen::And(a, b) if juxtapose => {
                    format!("(({})({}))", a.render(juxtapose), b.render(juxtapose))
                }
                Gen::And(a, b) => {
                    format!("( {} and {} )", a.render(juxtapose), b.render(juxtapose))
                }
                Gen::Or(a, b) => format!("({} or {})", a.render(juxtapose), b.render(juxtapose)),
            }
        }
    }

    fn exprs() -> impl Strategy<Value = Gen> {
        let leaf = prop_oneof![
            Just(Gen::Any),
            Just(Gen::Nothing),
            (0u64..2000).prop_map(Gen::Larger),
            (0u64..2000).prop_map(Gen::Smaller),
            (0u64..4).prop_map(Gen::Copies),
            prop_oneof![Just("*"), Just("*.mp3"), Just("archive/*")].prop_map(Gen::Include),
        ];
        leaf.prop_recursive(5, 40, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|a| Gen::Not(Box::new(a))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Gen::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner).prop_map(|(a, b)| Gen::Or(Box::new(a), Box::new(b))),
            ]
        })
    }

    proptest! {
        #[test]
        fn parsed_expressions_evaluate_like_the_tree(
            g in exprs(),
            juxtapose in any::<bool>(),
            size in 0u64..2500,
            file in prop_oneof![Just("a.mp3"), Just("archive/x/b.mp3"), Just("archive/c.txt"), Just("d/e.txt")],
            copies in 0u64..5,
        ) {
            let src = g.render(juxtapose);
            let e = Expr::parse(&src).map_err(|e| TestCaseError::fail(format!("{src:?}: {e}")))?;
            let k = key(Some(size));
            let got = e.matches(&Subject { key: &k, file: Some(file), copies });
            prop_assert_eq!(got, g.eval(size, file, copies), "{}", src);
        }

        /// Without parentheses, operators apply from left to right.
        #[test]
        fn unparenthesised_chains_fold_from_the_left(
            first in any::<bool>(),
            rest in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..8),
        ) {
            let word = |b: bool| if b { "anything" } else { "nothing" };
            let mut src = word(first).to_string();
            let mut want = first;
            for (is_and, v) in &rest {
                src.push_str(if *is_and { " and " } else { " or " });
                src.push_str(word(*v));
                want = if *is_and { want && *v } else { want || *v };
            }
            let k = key(None);
            let e = Expr::parse(&src).unwrap();
            prop_assert_eq!(e.matches(&Subject { key: &k, file: None, copies: 0 }), want, "{}", src);
        }

        /// Parsing never panics, whatever the input.
        #[test]
        fn parse_is_total(s in "[ a-z=*?\\[\\]!:()0-9.\\-/\\\\]{0,40}") {
            let _ = Expr::parse(&s);
        }

        #[test]
        fn plain_and_unit_sizes_round_trip(n in 0u64..(1 << 50)) {
            prop_assert_eq!(parse_size(&n.to_string()), Ok(n));
            prop_assert_eq!(parse_size(&format!("{n}B")), Ok(n));
            prop_assert_eq!(parse_size(&format!("{n} bytes")), Ok(n));
            prop_assert_eq!(parse_size(&format!("{}KiB", n >> 10)), Ok((n >> 10) << 10));
        }

        /// A glob of letters, digits and punctuation with no wildcard matches
        /// exactly itself.
        #[test]
        fn literal_globs_match_only_themselves(s in "[a-zA-Z0-9._+(){}^$|-]{1,20}", t in "[a-zA-Z0-9._+(){}^$|-]{1,20}") {
            let g = Glob::new(&s).unwrap();
            prop_assert!(g.matches(&s));
            prop_assert_eq!(g.matches(&t), s == t);
        }
    }
}
