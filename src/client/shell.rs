//! `annexmesh shell`'s inputs: git-annex-shell's command line, the ssh
//! directory it names, and the environment that configures it. Pure apart
//! from reading the token file.

use std::path::{Path, PathBuf};

use super::address::{GatewayAddress, valid_repo_name};
use super::links::SHELL_PROGRAM;
use crate::auth::Mode;
use crate::p2p::message::{AuthToken, Service, Uuid};

/// Gateway listener `annexmesh shell` uses without `ANNEXMESH_P2P`.
pub const DEFAULT_GATEWAY: &str = "127.0.0.1:9418";
/// Token file `annexmesh shell` reads when the environment names none.
pub const DEFAULT_TOKEN_FILE: &str = "/etc/annexmesh/shell-token";

/// What an `annexmesh shell` invocation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellRequest {
    pub command: ShellCommand,
    /// The repository name the directory maps to.
    pub repo: String,
    /// `--uuid`: the repository UUID the client expects to reach.
    pub expected_uuid: Option<String>,
    /// The `-- field=value ... --` section (git-annex sends `autoinit=1`
    /// with configlist); none of them changes what we do.
    pub fields: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellCommand {
    ConfigList,
    P2pStdio {
        client: Uuid,
    },
    /// `git-upload-pack DIR` or `git-receive-pack DIR`: git over ssh, for
    /// the cluster's repository.
    Git(Service),
}

/// Parse git-annex-shell's command line: `[-c] CMD DIR [params...]
/// [-- field=value ... --] [options]`, or a single shell-quoted
/// `git-annex-shell ...` string (when we are the login shell), or, with no
/// arguments, sshd's `SSH_ORIGINAL_COMMAND` (under ForceCommand).
pub fn parse_shell_args(
    args: &[String],
    ssh_original_command: Option<&str>,
) -> Result<ShellRequest, String> {
    let mut args = args;
    while let [first, rest @ ..] = args
        && first == "-c"
    {
        args = rest;
    }
    let words: Vec<String> = match args {
        [] => {
            let Some(cmdline) = ssh_original_command.filter(|c| !c.trim().is_empty()) else {
                return Err(format!(
                    "bad parameters: usage: {SHELL_PROGRAM} [-c] COMMAND DIRECTORY [PARAMS...] [OPTIONS...]"
                ));
            };
            let mut words = split_command_line(cmdline)?;
            if words
                .first()
                .is_some_and(|w| Path::new(w).file_name() == Some(SHELL_PROGRAM.as_ref()))
            {
                words.remove(0);
            }
            words
        }
        // As the login shell: one string, `git-annex-shell ...` or git's
        // `git-upload-pack 'DIR'`.
        [one] if one.starts_with("git-annex-shell ") => split_command_line(one)?.split_off(1),
        [one] if one.starts_with("git-upload-pack ") || one.starts_with("git-receive-pack ") => {
            split_command_line(one)?
        }
        _ => args.to_vec(),
    };
    let Some((cmd, rest)) = words.split_first() else {
        return Err("bad parameters: no command".into());
    };
    // git runs `git-upload-pack 'DIR'` (sshd hands it over as one string).
    let git = match cmd.rsplit('/').next().unwrap_or(cmd) {
        "git-upload-pack" => Some(Service::UploadPack),
        "git-receive-pack" => Some(Service::ReceivePack),
        _ => None,
    };
    if let Some(service) = git {
        let [dir] = rest else {
            return Err(format!("{cmd}: expected one directory, got {rest:?}"));
        };
        let repo = repo_name_from_dir(dir)?;
        return Ok(ShellRequest {
            command: ShellCommand::Git(service),
            repo,
            expected_uuid: None,
            fields: Vec::new(),
        });
    }
    if cmd != "configlist" && cmd != "p2pstdio" {
        return Err(unsupported(cmd));
    }
    let Some((dir, params)) = rest.split_first() else {
        return Err(format!("{cmd}: missing directory parameter"));
    };
    let repo = repo_name_from_dir(dir)?;

    // Like git-annex-shell: parameters, then fields between two "--", then
    // (after the second "--") options for rsync, which we have no use for.
    let mut segments = params.split(|p| p == "--");
    let params = segments.next().unwrap_or_default();
    let fields = segments
        .next()
        .unwrap_or_default()
        .iter()
        .map(|f| match f.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (f.clone(), String::new()),
        })
        .collect();

    let mut expected_uuid = None;
    let mut positional = Vec::new();
    let mut it = params.iter();
    while let Some(p) = it.next() {
        if let Some(u) = p.strip_prefix("--uuid=") {
            expected_uuid = Some(u.to_owned());
            continue;
        }
        match p.as_str() {
            "--uuid" => {
                let u = it.next().ok_or("--uuid needs a value")?;
                expected_uuid = Some(u.clone());
            }
            // Output options that make no difference to a relay.
            "--debug" | "--no-debug" | "--quiet" | "-q" | "--verbose" | "-v" => {}
            _ if p.starts_with('-') && p.len() > 1 => {
                return Err(format!("{cmd}: unsupported option {p}"));
            }
            _ => positional.push(p.clone()),
        }
    }

    let command = match (cmd.as_str(), positional.as_slice()) {
        ("configlist", []) => ShellCommand::ConfigList,
        ("p2pstdio", [client]) => ShellCommand::P2pStdio {
            client: Uuid::new(client.clone())
                .ok_or_else(|| format!("p2pstdio: bad UUID {client:?}"))?,
        },
        ("p2pstdio", []) => return Err("p2pstdio: missing UUID parameter".into()),
        _ => return Err(format!("{cmd}: unexpected parameters {positional:?}")),
    };
    Ok(ShellRequest { command, repo, expected_uuid, fields })
}

fn split_command_line(s: &str) -> Result<Vec<String>, String> {
    shlex::split(s).ok_or_else(|| format!("cannot parse command line {s:?} (unbalanced quotes?)"))
}

fn unsupported(cmd: &str) -> String {
    format!(
        "only configlist, p2pstdio, git-upload-pack and git-receive-pack are served here, not \
         {cmd:?}: git-annex uses p2pstdio for annexed content when the server supports it"
    )
}

/// Map the repository directory of an ssh URL to a repository name:
/// `/~/mesh`, `~/mesh`, `/mesh`, `mesh/` and `mesh.git` all name `mesh`.
pub fn repo_name_from_dir(dir: &str) -> Result<String, String> {
    let name = ["/~/", "~/", "/"]
        .iter()
        .find_map(|p| dir.strip_prefix(p))
        .unwrap_or(dir)
        .trim_end_matches('/');
    let name = name.strip_suffix(".git").unwrap_or(name);
    valid_repo_name(name)
        .map(str::to_owned)
        .map_err(|e| format!("directory {dir:?} does not name an annexmesh repository: {e}"))
}

/// Honour `GIT_ANNEX_SHELL_DIRECTORY` as git-annex-shell does: the login may
/// only reach that one repository, named by the directory's last component.
pub fn check_directory(repo: &str, allowed: Option<&str>) -> Result<(), String> {
    let Some(allowed) = allowed else {
        return Ok(());
    };
    let base = allowed.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
    let base = base.strip_suffix(".git").unwrap_or(base);
    if base == repo && valid_repo_name(base).is_ok() {
        Ok(())
    } else {
        Err(format!("Only allowed to access {allowed} not {repo}"))
    }
}

/// The environment `annexmesh shell` reads, gathered once so that parsing
/// and configuration can be tested without touching the process's own.
#[derive(Debug, Clone, Default)]
pub struct ShellEnv {
    pub ssh_original_command: Option<String>,
    pub gateway: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub shell_directory: Option<String>,
    pub readonly: bool,
    pub appendonly: bool,
}

impl ShellEnv {
    pub fn from_process() -> ShellEnv {
        let var = |k: &str| std::env::var(k).ok();
        let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
        ShellEnv {
            ssh_original_command: var("SSH_ORIGINAL_COMMAND"),
            gateway: var("ANNEXMESH_P2P"),
            token: var("ANNEXMESH_TOKEN"),
            token_file: std::env::var_os("ANNEXMESH_TOKEN_FILE").map(PathBuf::from),
            shell_directory: var("GIT_ANNEX_SHELL_DIRECTORY"),
            readonly: set("GIT_ANNEX_SHELL_READONLY"),
            appendonly: set("GIT_ANNEX_SHELL_APPENDONLY"),
        }
    }

    /// The access this login is restricted to, as git-annex-shell's
    /// environment variables say (read-only wins).
    pub fn mode(&self) -> Option<Mode> {
        if self.readonly {
            Some(Mode::ReadOnly)
        } else if self.appendonly {
            Some(Mode::AppendOnly)
        } else {
            None
        }
    }

    pub fn gateway(&self) -> Result<GatewayAddress, String> {
        let s = self.gateway.as_deref().filter(|s| !s.is_empty()).unwrap_or(DEFAULT_GATEWAY);
        let addr: GatewayAddress = s.parse().map_err(|e| format!("ANNEXMESH_P2P: {e}"))?;
        if addr.repo.is_some() {
            return Err(format!(
                "ANNEXMESH_P2P: {s:?} names a repository; the repository comes from the ssh URL"
            ));
        }
        Ok(addr)
    }

    /// `ANNEXMESH_TOKEN`, else the first line of `ANNEXMESH_TOKEN_FILE`,
    /// else of the default token file if it can be read.
    pub fn token(&self) -> Result<AuthToken, String> {
        let (text, from) = if let Some(t) = self.token.as_deref().filter(|t| !t.is_empty()) {
            (t.to_owned(), "ANNEXMESH_TOKEN".to_owned())
        } else if let Some(f) = &self.token_file {
            let text = std::fs::read_to_string(f).map_err(|e| {
                format!("cannot read token file {} (ANNEXMESH_TOKEN_FILE): {e}", f.display())
            })?;
            (text, f.display().to_string())
        } else if let Ok(text) = std::fs::read_to_string(DEFAULT_TOKEN_FILE) {
            (text, DEFAULT_TOKEN_FILE.to_owned())
        } else {
            return Err(format!(
                "no gateway token: set ANNEXMESH_TOKEN or ANNEXMESH_TOKEN_FILE, or create {DEFAULT_TOKEN_FILE}"
            ));
        };
        let line = text.lines().next().unwrap_or_default().trim();
        if line.is_empty() {
            return Err(format!("no gateway token in {from}"));
        }
        AuthToken::new(line)
            .ok_or_else(|| format!("the token in {from} may only contain letters and digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "5c2f9a34-1111-4222-8333-944445555666";
    const C: &str = "0b1c3a3e-2b1f-4c53-9d1e-6f7a2f2f0a11";

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn p2p(client: &str) -> ShellCommand {
        ShellCommand::P2pStdio { client: Uuid::new(client).unwrap() }
    }

    #[test]
    fn plain_arguments() {
        let r = parse_shell_args(&s(&["configlist", "/~/mesh"]), None).unwrap();
        assert_eq!(r.command, ShellCommand::ConfigList);
        assert_eq!(r.repo, "mesh");
        assert_eq!(r.expected_uuid, None);
        // As git-annex sends them: command, dir, params, --uuid, fields.
        let r = parse_shell_args(
            &s(&["p2pstdio", "/mesh", "--debug", C, "--uuid", U, "--", "remoteuuid=x", "--"]),
            None,
        )
        .unwrap();
        assert_eq!(r.command, p2p(C));
        assert_eq!(r.expected_uuid.as_deref(), Some(U));
        assert_eq!(r.fields, vec![("remoteuuid".to_owned(), "x".to_owned())]);
        let r = parse_shell_args(
            &s(&["-c", "-c", "p2pstdio", "mesh.git", &format!("--uuid={U}"), C]),
            None,
        )
        .unwrap();
        assert_eq!((r.repo.as_str(), r.expected_uuid.as_deref()), ("mesh", Some(U)));
    }

    #[test]
    fn login_shell_string() {
        let line = format!("git-annex-shell 'p2pstdio' '/mesh' '--uuid' '{U}' '{C}'");
        let r = parse_shell_args(&s(&["-c", &line]), None).unwrap();
        assert_eq!(r.command, p2p(C));
        assert_eq!((r.repo.as_str(), r.expected_uuid.as_deref()), ("mesh", Some(U)));
        let r = parse_shell_args(
            &s(&["-c", "git-annex-shell 'configlist' '/~/mesh.git/' -- autoinit=1 --"]),
            None,
        )
        .unwrap();
        assert_eq!(r.command, ShellCommand::ConfigList);
        assert_eq!(r.repo, "mesh");
        assert_eq!(r.fields, vec![("autoinit".to_owned(), "1".to_owned())]);
        assert!(parse_shell_args(&s(&["-c", "git-annex-shell 'configlist"]), None).is_err());
    }

    #[test]
    fn ssh_original_command() {
        let orig = format!("git-annex-shell 'p2pstdio' '/~/mesh' '{C}' --uuid {U}");
        let r = parse_shell_args(&[], Some(&orig)).unwrap();
        assert_eq!(r.command, p2p(C));
        assert_eq!(r.expected_uuid.as_deref(), Some(U));
        let r = parse_shell_args(&[], Some("/usr/bin/git-annex-shell configlist mesh")).unwrap();
        assert_eq!(r.command, ShellCommand::ConfigList);
        // git fetch/push over the same login reach the cluster's repository.
        let r = parse_shell_args(&[], Some("git-upload-pack '/~/mesh'")).unwrap();
        assert_eq!((r.command, r.repo.as_str()), (ShellCommand::Git(Service::UploadPack), "mesh"));
        let r = parse_shell_args(&[], Some("git-receive-pack 'mesh.git'")).unwrap();
        assert_eq!((r.command, r.repo.as_str()), (ShellCommand::Git(Service::ReceivePack), "mesh"));
        let r = parse_shell_args(&s(&["-c", "git-upload-pack '/node1.git'"]), None);
        assert_eq!(r.unwrap().repo, "node1");
        assert!(parse_shell_args(&[], Some("git-upload-pack")).is_err());
        assert!(parse_shell_args(&[], Some("git-upload-pack /srv/x/mesh")).is_err());
        assert!(parse_shell_args(&[], Some("git-upload-pack a b")).is_err());
        assert!(parse_shell_args(&[], None).is_err());
        assert!(parse_shell_args(&[], Some("  ")).is_err());
    }

    #[test]
    fn other_commands_and_bad_parameters() {
        for cmd in [
            "inannex",
            "sendkey",
            "recvkey",
            "dropkey",
            "notifychanges",
            "gcryptsetup",
            "git-upload-archive",
        ] {
            let e = parse_shell_args(&s(&[cmd, "/mesh", "k"]), None).unwrap_err();
            assert!(e.contains("only configlist, p2pstdio"), "{e}");
        }
        assert!(parse_shell_args(&s(&["configlist"]), None).is_err());
        assert!(parse_shell_args(&s(&["configlist", "/mesh", "extra"]), None).is_err());
        assert!(parse_shell_args(&s(&["p2pstdio", "/mesh"]), None).is_err());
        assert!(parse_shell_args(&s(&["p2pstdio", "/mesh", C, C]), None).is_err());
        assert!(parse_shell_args(&s(&["p2pstdio", "/mesh", "--uuid"]), None).is_err());
        assert!(parse_shell_args(&s(&["p2pstdio", "/mesh", "--force", C]), None).is_err());
        // Fields and rsync options after "--" are not positional.
        let r = parse_shell_args(
            &s(&["p2pstdio", "/mesh", C, "--", "a=1", "b", "--", "--inplace"]),
            None,
        )
        .unwrap();
        assert_eq!(r.fields, vec![("a".into(), "1".into()), ("b".into(), String::new())]);
    }

    #[test]
    fn directories() {
        for (dir, name) in [
            ("/~/mesh", "mesh"),
            ("~/mesh", "mesh"),
            ("/mesh", "mesh"),
            ("mesh", "mesh"),
            ("/mesh/", "mesh"),
            ("/mesh.git", "mesh"),
            ("/~/node-1.git/", "node-1"),
        ] {
            assert_eq!(repo_name_from_dir(dir).unwrap(), name, "{dir}");
        }
        for bad in ["", "/", "/~/", ".git", "/srv/mesh", "/a b", "/a\tb", "/a\u{1}b", "~/x/y.git"] {
            assert!(repo_name_from_dir(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_shell_args(&s(&["configlist", "/srv/annex/mesh"]), None).is_err());
    }

    #[test]
    fn directory_restriction() {
        assert!(check_directory("mesh", None).is_ok());
        assert!(check_directory("mesh", Some("/srv/annex/mesh.git/")).is_ok());
        assert!(check_directory("mesh", Some("mesh")).is_ok());
        let e = check_directory("other", Some("/srv/mesh")).unwrap_err();
        assert!(e.contains("Only allowed to access /srv/mesh"), "{e}");
        assert!(check_directory("mesh", Some("")).is_err());
    }

    #[test]
    fn shell_environment() {
        let mut env = ShellEnv::default();
        assert_eq!(env.mode(), None);
        assert_eq!(env.gateway().unwrap().to_string(), DEFAULT_GATEWAY);
        env.appendonly = true;
        assert_eq!(env.mode(), Some(Mode::AppendOnly));
        env.readonly = true;
        assert_eq!(env.mode(), Some(Mode::ReadOnly));
        env.gateway = Some("gw:1/mesh".into());
        assert!(env.gateway().is_err());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "FileToken1\nignored\n").unwrap();
        env.token_file = Some(file);
        assert_eq!(env.token().unwrap().as_str(), "filetoken1");
        env.token = Some("envtoken".into());
        assert_eq!(env.token().unwrap().as_str(), "envtoken");
        env.token = Some("not a token".into());
        assert!(env.token().is_err());
        env.token = None;
        env.token_file = Some(dir.path().join("missing"));
        assert!(env.token().unwrap_err().contains("cannot read token file"));
    }
}
