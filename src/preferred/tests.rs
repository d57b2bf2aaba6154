//! Tests of whole expressions: terms, globs in terms, grouping, errors, and
//! random expressions against a direct evaluation.

use proptest::prelude::*;

use super::*;
use crate::p2p::key::Key;

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
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Gen::And(Box::new(a), Box::new(b))),
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
}

#[test]
fn hostile_nesting_is_refused_without_deep_recursion() {
    // Far deeper than any stack could take if parsing recursed per level.
    let deep = format!("{}anything", "not ".repeat(50_000));
    assert_eq!(err(&deep), ParseError::TooDeep);
    assert_eq!(err(&deep).to_string(), "expression nests deeper than 100 levels");
    let parens = format!("{}anything{}", "(".repeat(50_000), ")".repeat(50_000));
    assert_eq!(err(&parens), ParseError::TooDeep);
    // Exactly the limit is fine, and evaluates.
    let ok = format!("{}anything", "not ".repeat(parse::MAX_DEPTH));
    assert!(eval(&ok, None, None, 0));
    let over = format!("{}anything", "not ".repeat(parse::MAX_DEPTH + 1));
    assert_eq!(err(&over), ParseError::TooDeep);
}

#[test]
fn long_expressions_are_refused() {
    let chain = vec!["anything"; parse::MAX_TERMS].join(" and ");
    assert!(eval(&chain, None, None, 0), "the most terms allowed evaluate");
    let more = vec!["anything"; parse::MAX_TERMS + 1].join(" or ");
    assert_eq!(err(&more), ParseError::TooManyTerms);
    // Within the term limit but over the length limit.
    let long = vec![format!("include={}", "a".repeat(glob::MAX_GLOB)); 20].join(" or ");
    assert_eq!(err(&long), ParseError::TooLong);
    let glob = format!("include={}", "*".repeat(glob::MAX_GLOB + 1));
    assert!(matches!(err(&glob), ParseError::BadGlob { .. }));
    // A chain of 50,000 terms is cut off at the limit, not built and dropped.
    let huge = vec!["anything"; 50_000].join(" ");
    assert_eq!(err(&huge), ParseError::TooManyTerms);
}
