//! Parsing preferred content expressions into their tree: tokens, terms and
//! the equal-precedence, left-to-right grouping of `and` and `or`.

use super::glob::Glob;
use super::size::parse_size;
use super::{Term, Tree};

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
    #[error("expression nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("expression has more than {MAX_TERMS} terms")]
    TooManyTerms,
    #[error("expression is longer than {MAX_LEN} bytes")]
    TooLong,
}

/// Deepest nesting of `not` and parentheses accepted. Parsing recurses once
/// per level, so this bounds the stack whatever the input; real expressions
/// (git-annex's standard ones included) nest a handful of levels.
pub const MAX_DEPTH: usize = 100;

/// Most terms in one expression. `and`/`or` chains fold into a tree as deep
/// as they are long, and evaluating or dropping it recurses that deep, so
/// this bounds the stack too; git-annex's longest standard expression has
/// about twenty.
pub const MAX_TERMS: usize = 1000;

/// Longest expression accepted, in bytes: far beyond any real one (the
/// standard expressions are under 300 bytes).
pub const MAX_LEN: usize = 64 * 1024;

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

/// Parses a whole expression.
pub(super) fn parse(source: &str) -> Result<Tree, ParseError> {
    let tokens = tokenize(source);
    if tokens.is_empty() {
        return Err(ParseError::Empty);
    }
    // Too long: the structure alone is read first (bounded by the depth
    // and term limits, compiling no glob), so that a deeply nested
    // expression is refused for what is wrong with it.
    let too_long = source.len() > MAX_LEN;
    let mut p = Parser { tokens: &tokens, pos: 0, depth: 0, terms: 0, structure_only: too_long };
    let tree = p.sequence()?;
    if too_long {
        return Err(ParseError::TooLong);
    }
    // `sequence` only stops early at a ")".
    match tree {
        Some(t) if p.pos == tokens.len() => Ok(t),
        _ => Err(ParseError::UnexpectedClose),
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
    /// Levels of `not` and parentheses open at `pos`.
    depth: usize,
    /// Terms read so far.
    terms: usize,
    /// Checks the structure only: terms are not read.
    structure_only: bool,
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
            "not" | "(" => {
                if self.depth >= MAX_DEPTH {
                    return Err(ParseError::TooDeep);
                }
                self.depth += 1;
                let r = self.nested(tok);
                self.depth -= 1;
                r
            }
            ")" => Err(ParseError::UnexpectedClose),
            t => {
                self.terms += 1;
                if self.terms > MAX_TERMS {
                    return Err(ParseError::TooManyTerms);
                }
                if self.structure_only {
                    return Ok(Tree::Term(Term::Anything));
                }
                Ok(Tree::Term(term(t)?))
            }
        }
    }

    /// What follows a `not` or a "(", one level deeper.
    fn nested(&mut self, tok: &str) -> Result<Tree, ParseError> {
        if tok == "not" {
            return Ok(Tree::Not(Box::new(self.operand("not")?)));
        }
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
