//! Settings from a TOML file per role (`--config FILE`, `ANNEXMESH_CONFIG`).
//!
//! Precedence is flag > environment variable > file > built-in default.
//! Before clap parses, the file's values become the defaults of the
//! role's arguments, so clap's own order (command line, then `env`, then
//! default) does the rest, and the process environment is never changed.
//! The file's keys are the role's long flag names.

mod print;
mod reference;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{ArgAction, Command, FromArgMatches};

use crate::cli::{self, CONFIGURED_ROLES, Cli};

pub use print::print;
pub use reference::reference;

/// The environment variable naming a role's config file.
pub const CONFIG_ENV: &str = "ANNEXMESH_CONFIG";

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}:{column}: not valid TOML: {message}", path.display())]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    #[error(
        "{}: unknown key `{key}` for `annexmesh {role}`{}; the keys are the long flag names of `annexmesh {role} --help`",
        path.display(),
        nearest_hint(nearest)
    )]
    UnknownKey { path: PathBuf, key: String, role: String, nearest: Vec<String> },
    #[error("{}: key `{key}`: {why}", path.display())]
    BadValue { path: PathBuf, key: String, why: String },
}

fn nearest_hint(nearest: &[String]) -> String {
    match nearest {
        [] => String::new(),
        [one] => format!(" (did you mean `{one}`?)"),
        more => format!(
            " (did you mean one of {}?)",
            more.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// A role's command line definition with a config file's values applied.
pub struct Loaded {
    /// The whole command line definition, the file's values as defaults.
    pub command: Command,
    /// The role the command line names, if it names one taking `--config`.
    pub role: Option<String>,
    /// Where the role's name is in the arguments.
    pub role_at: usize,
    /// The file read, if any.
    pub file: Option<PathBuf>,
    /// The role's arguments the file sets (ids), with their values.
    pub from_file: Vec<(String, Vec<String>)>,
}

/// Parses the command line (with `--config` or `ANNEXMESH_CONFIG`
/// applied); clap's usage errors, `--help` and `--version` exit as usual,
/// and a bad config file exits with status 2 and a message naming it.
pub fn parse_or_exit(args: impl IntoIterator<Item = OsString>) -> Cli {
    let args: Vec<OsString> = args.into_iter().collect();
    let parsed = match parse(&args, std::env::var_os(CONFIG_ENV)) {
        Ok(p) => p,
        Err(Error::Config(e)) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
        Err(Error::Usage(e)) => e.exit(),
    };
    Cli::from_arg_matches(&parsed.matches).unwrap_or_else(|e| e.exit())
}

/// Why a command line could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Usage(#[from] clap::Error),
}

/// A parsed command line.
pub struct Parsed {
    /// The file's values applied as flags: clap checked them like flags
    /// (what each requires or conflicts with).
    pub matches: clap::ArgMatches,
    /// The file's values applied as defaults, so that each value's source
    /// (flag, env, default) is known.
    pub sourced: clap::ArgMatches,
    pub loaded: Loaded,
}

/// Parses `args`, applying the role's config file (from `--config` or
/// `env_file`).
pub fn parse(args: &[OsString], env_file: Option<OsString>) -> Result<Parsed, Error> {
    parse_with(cli::command, args, env_file)
}

/// [`parse`] with the command line definition `base` makes.
pub(crate) fn parse_with(
    base: fn() -> Command,
    args: &[OsString],
    env_file: Option<OsString>,
) -> Result<Parsed, Error> {
    let mut loaded = load(base(), args, env_file)?;
    if loaded.from_file.is_empty() {
        let matches = loaded.command.try_get_matches_from_mut(args)?;
        return Ok(Parsed { sourced: matches.clone(), matches, loaded });
    }
    // Defaults do not count for what a flag requires (--p2p-tls-key needs
    // --p2p-tls-cert), so this pass only finds each value's source; the
    // next one checks everything.
    loaded.command = loaded.command.ignore_errors(true);
    let sourced = loaded.command.try_get_matches_from_mut(args)?;
    let matches = match &loaded.role {
        Some(role) => {
            // Once more with the file's values used (neither flag nor env
            // beat them) given as flags right after the role's name, so that
            // clap validates them as it does flags.
            let at = loaded.role_at;
            let sub = loaded.command.find_subcommand(role).expect("a role");
            let role_matches = sourced.subcommand_matches(role).expect("the role parsed");
            let mut again: Vec<OsString> = args[..=at].to_vec();
            for (id, values) in &loaded.from_file {
                use clap::parser::ValueSource::{CommandLine, EnvVariable};
                if matches!(role_matches.value_source(id), Some(CommandLine | EnvVariable)) {
                    continue;
                }
                let arg = settable(sub).find(|a| a.get_id() == id).expect("checked by load");
                let long = arg.get_long().expect("a flag");
                match arg.get_action() {
                    ArgAction::SetTrue | ArgAction::SetFalse => {
                        let on = values.first().is_some_and(|v| v == "true");
                        if on == matches!(arg.get_action(), ArgAction::SetTrue) {
                            again.push(format!("--{long}").into());
                        }
                    }
                    _ => {
                        again.extend(values.iter().map(|v| OsString::from(format!("--{long}={v}"))))
                    }
                }
            }
            again.extend_from_slice(&args[at + 1..]);
            base().try_get_matches_from(again)?
        }
        _ => sourced.clone(),
    };
    Ok(Parsed { matches, sourced, loaded })
}

/// Finds the role and its config file on the command line (or, without
/// `--config`, in `env_file`), reads the file and applies it to `command`.
pub fn load(
    command: Command,
    args: &[OsString],
    env_file: Option<OsString>,
) -> Result<Loaded, ConfigError> {
    let Some((role, role_at, flag_file)) = find_role(&command, args) else {
        return Ok(Loaded { command, role: None, role_at: 0, file: None, from_file: Vec::new() });
    };
    let file = flag_file.or_else(|| env_file.filter(|f| !f.is_empty()).map(PathBuf::from));
    let Some(file) = file else {
        return Ok(Loaded {
            command,
            role: Some(role),
            role_at,
            file: None,
            from_file: Vec::new(),
        });
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|source| ConfigError::Read { path: file.clone(), source })?;
    let table = parse_toml(&file, &text)?;
    let sub = command.find_subcommand(&role).expect("role found on the command").clone();
    let mut values = Vec::new();
    for (key, value) in &table {
        let Some(arg) = settable(&sub).find(|a| a.get_long() == Some(key.as_str())) else {
            return Err(ConfigError::UnknownKey {
                path: file.clone(),
                key: key.clone(),
                role: role.clone(),
                nearest: nearest(key, settable(&sub).filter_map(|a| a.get_long())),
            });
        };
        let multi =
            matches!(arg.get_action(), ArgAction::Append) || arg.get_value_delimiter().is_some();
        let strings = strings(value, multi).map_err(|why| ConfigError::BadValue {
            path: file.clone(),
            key: key.clone(),
            why,
        })?;
        let switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        if switch && !matches!(strings.as_slice(), [b] if b == "true" || b == "false") {
            return Err(ConfigError::BadValue {
                path: file.clone(),
                key: key.clone(),
                why: "a switch takes true or false".into(),
            });
        }
        values.push((arg.get_id().to_string(), strings));
    }
    let command = command.mut_subcommand(&role, |mut sub| {
        for (id, strings) in values.clone() {
            // Defaults must outlive the command; this runs once per process.
            let leaked: Vec<&'static str> =
                strings.into_iter().map(|s| &*Box::leak(s.into_boxed_str())).collect();
            sub = sub.mut_arg(id, |a| a.default_values(leaked).required(false));
        }
        sub
    });
    Ok(Loaded { command, role: Some(role), role_at, file: Some(file), from_file: values })
}

/// The arguments of a role a file may set: its flags, not positionals,
/// and not `--config` itself.
fn settable(sub: &Command) -> impl Iterator<Item = &clap::Arg> {
    sub.get_arguments().filter(|a| !a.is_positional() && a.get_id() != "config")
}

/// The role the command line runs (the first word naming a role that
/// takes `--config`) and the file its `--config` names.
fn find_role(command: &Command, args: &[OsString]) -> Option<(String, usize, Option<PathBuf>)> {
    let mut words = args.iter().map(|a| a.to_str()).enumerate().skip(1);
    let (at, role) = loop {
        let (at, word) = words.next()?;
        let word = word?;
        if word == "--" {
            return None;
        }
        if command.find_subcommand(word).is_some() {
            if !CONFIGURED_ROLES.contains(&word) {
                return None;
            }
            break (at, word.to_string());
        }
    };
    let mut words = words.map(|(_, w)| w);
    let mut file = None;
    while let Some(word) = words.next() {
        match word {
            Some("--") => break,
            Some("--config") => file = words.next().flatten().map(PathBuf::from),
            Some(w) if w.starts_with("--config=") => {
                file = Some(PathBuf::from(&w["--config=".len()..]))
            }
            _ => {}
        }
    }
    Some((role, at, file))
}

fn parse_toml(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| {
        let at = e.span().map_or(0, |s| s.start).min(text.len());
        let before = &text[..at];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })
}

/// A TOML value as the strings clap would get on the command line. A list
/// for a single-valued flag becomes a comma list (as `--coordinator` takes).
fn strings(value: &toml::Value, multi: bool) -> Result<Vec<String>, String> {
    fn scalar(v: &toml::Value) -> Result<String, String> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            other => Err(format!(
                "a {} is not a setting; give a string, number or boolean",
                other.type_str()
            )),
        }
    }
    match value {
        toml::Value::Array(items) => {
            let items = items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?;
            Ok(if multi { items } else { vec![items.join(",")] })
        }
        v => Ok(vec![scalar(v)?]),
    }
}

/// The candidates closest to `key` by edit distance, for a "did you mean".
fn nearest<'a>(key: &str, candidates: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut scored: Vec<(usize, &str)> = candidates.map(|c| (distance(key, c), c)).collect();
    scored.sort();
    // Only the closest (ties included), and only when close at all.
    let best = scored.first().map_or(usize::MAX, |(d, _)| *d);
    let limit = (key.len() / 3).max(2);
    scored
        .into_iter()
        .filter(|(d, _)| *d <= limit && *d == best)
        .take(3)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests;
