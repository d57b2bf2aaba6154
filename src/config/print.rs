//! `annexmesh config print ROLE ...`: the settings a role would run with.

use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches};

use super::CONFIG_ENV;
use crate::cli::{self, CONFIGURED_ROLES};

/// The effective settings of `role` given its flags `args`, the
/// environment and its config file, as TOML; each line says where the
/// value came from. Secrets are not shown.
pub fn print(role: &str, args: &[String]) -> anyhow::Result<String> {
    anyhow::ensure!(
        CONFIGURED_ROLES.contains(&role),
        "unknown role {role:?}; one of {}",
        CONFIGURED_ROLES.join(", ")
    );
    let argv: Vec<OsString> = ["annexmesh", role]
        .into_iter()
        .map(OsString::from)
        .chain(args.iter().map(OsString::from))
        .collect();
    // Admin's commands are not settings: the connection is enough here.
    let base = || cli::command().mut_subcommand("admin", |s| s.subcommand_required(false));
    let parsed = match super::parse_with(base, &argv, std::env::var_os(CONFIG_ENV)) {
        Err(super::Error::Usage(e)) => e.exit(),
        other => other?,
    };
    let loaded = &parsed.loaded;
    let matches = parsed.sourced.subcommand_matches(role).expect("the role parsed");
    // In the definition's order (applying the file reorders them).
    let plain = cli::command();
    let sub = plain.find_subcommand(role).expect("a role");
    let mut out = String::new();
    if let Some(file) = &loaded.file {
        out.push_str(&format!("# annexmesh {role}, with {}\n", file.display()));
    } else {
        out.push_str(&format!("# annexmesh {role}, no config file\n"));
    }
    for arg in super::settable(sub).filter(|a| !a.is_hide_set()) {
        let id = arg.get_id().as_str();
        let key = arg.get_long().expect("settable args are flags");
        let source = match matches.value_source(id) {
            None => {
                out.push_str(&format!("# {key} is not set\n"));
                continue;
            }
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "env",
            Some(_) if loaded.from_file.iter().any(|(f, _)| f == id) => "file",
            Some(_) => "default",
        };
        if arg.is_hide_env_values_set() {
            out.push_str(&format!("# {key} is set (hidden)  # {source}\n"));
            continue;
        }
        let value = value(arg, matches, id);
        out.push_str(&format!("{key} = {value}  # {source}\n"));
    }
    Ok(out)
}

/// The raw values of `id` as a TOML value: booleans for switches, a list
/// for repeatable flags, numbers where they read as one.
fn value(arg: &clap::Arg, matches: &ArgMatches, id: &str) -> toml::Value {
    let raw: Vec<String> = matches
        .get_raw(id)
        .map(|vals| vals.map(|v| v.to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let scalar = |s: &str| -> toml::Value {
        if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
            && let Ok(b) = s.parse::<bool>()
        {
            return toml::Value::Boolean(b);
        }
        if let Ok(i) = s.parse::<i64>() {
            return toml::Value::Integer(i);
        }
        if s.contains('.')
            && let Ok(f) = s.parse::<f64>()
            && f.is_finite()
        {
            return toml::Value::Float(f);
        }
        toml::Value::String(s.to_string())
    };
    if matches!(arg.get_action(), ArgAction::Append) {
        toml::Value::Array(raw.iter().map(|s| scalar(s)).collect())
    } else {
        scalar(raw.first().map_or("", |s| s.as_str()))
    }
}
