//! git-annex file globs (`Utility/Glob.hs`), compiled to regular
//! expressions. Pure: no I/O.

use regex::Regex;

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

/// Longest glob accepted, in bytes. Matching costs up to its length times
/// the path's, for every key an expression is evaluated on; real globs are
/// a few dozen bytes.
pub const MAX_GLOB: usize = 4096;

impl Glob {
    pub fn new(glob: &str) -> Result<Glob, String> {
        if glob.len() > MAX_GLOB {
            return Err(format!("longer than {MAX_GLOB} bytes"));
        }
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

    proptest! {
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
