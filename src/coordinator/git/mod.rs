//! The clusters' git repositories: one bare repository per cluster, kept in
//! the coordinator's data directory (`DATA/git/CLUSTER-UUID.git`) and served
//! to clients through every gateway, so that a push through one gateway is
//! seen through all of them and no gateway holds state of its own.

pub mod serve;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tokio::sync::broadcast;

/// Where the clusters' repositories are, and who wants to hear of pushes.
pub struct Repos {
    root: PathBuf,
    pushed: broadcast::Sender<String>,
}

impl Repos {
    /// The repositories under `data/git`.
    pub fn new(data: &Path) -> Repos {
        Repos { root: data.join("git"), pushed: broadcast::channel(1024).0 }
    }

    /// The bare repository of the cluster `cluster_uuid`; only UUIDs name
    /// one, so no request can point outside `DATA/git`.
    pub fn path(&self, cluster_uuid: &str) -> anyhow::Result<PathBuf> {
        if uuid::Uuid::parse_str(cluster_uuid).is_err() || cluster_uuid.len() != 36 {
            bail!("not a cluster UUID: {cluster_uuid:?}");
        }
        Ok(self.root.join(format!("{}.git", cluster_uuid.to_ascii_lowercase())))
    }

    /// The cluster's repository, created (empty, bare) if missing.
    pub async fn ensure(&self, cluster_uuid: &str) -> anyhow::Result<PathBuf> {
        let path = self.path(cluster_uuid)?;
        if path.join("HEAD").exists() {
            return Ok(path);
        }
        tokio::fs::create_dir_all(&self.root)
            .await
            .with_context(|| format!("cannot create {}", self.root.display()))?;
        // Made aside and renamed into place, so that a crash never leaves a
        // half-made repository where gateways look.
        let tmp = self.root.join(format!(".new-{}-{}", cluster_uuid, std::process::id()));
        let _ = tokio::fs::remove_dir_all(&tmp).await;
        run(git(None).args(["init", "--quiet", "--bare", "--initial-branch=main"]).arg(&tmp))
            .await?;
        for (k, v) in [
            // Corrupt or malformed objects are refused at push time.
            ("receive.fsckObjects", "true"),
            ("transfer.fsckObjects", "true"),
            // Pushes of branches that are checked out do not apply: bare.
            ("core.logAllRefUpdates", "true"),
        ] {
            run(git(Some(&tmp)).args(["config", k, v])).await?;
        }
        match tokio::fs::rename(&tmp, &path).await {
            Ok(()) => Ok(path),
            // Another task made it first.
            Err(_) if path.join("HEAD").exists() => {
                let _ = tokio::fs::remove_dir_all(&tmp).await;
                Ok(path)
            }
            Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
    }

    /// Tells those who listen that a push changed `cluster_uuid`'s refs.
    pub fn pushed(&self, cluster_uuid: &str) {
        let _ = self.pushed.send(cluster_uuid.to_string());
    }

    /// Hears of pushes, by cluster UUID.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.pushed.subscribe()
    }
}

/// `git`, on `repo` when given, with nothing of the caller's environment
/// that would point it elsewhere (`GIT_DIR`, an index, a work tree).
pub fn git(repo: Option<&Path>) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("git");
    for v in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_NAMESPACE",
        "GIT_CEILING_DIRECTORIES",
        "GIT_PROTOCOL",
    ] {
        c.env_remove(v);
    }
    if let Some(r) = repo {
        c.arg("--git-dir").arg(r);
    }
    c.kill_on_drop(true);
    c
}

/// Runs `cmd` to the end; its standard output, or an error with its
/// standard error.
pub async fn run(cmd: &mut tokio::process::Command) -> anyhow::Result<Vec<u8>> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("cannot run git (is it installed and on PATH?)")?;
    if !out.status.success() {
        bail!("{:?} failed: {}", cmd.as_std(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ensure_makes_one_bare_repository_per_cluster_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let repos = Repos::new(dir.path());
        let u = "ac2f1a3b-4c5d-8e6f-9a0b-1c2d3e4f5a6b";
        let p = repos.ensure(u).await.unwrap();
        assert_eq!(p, dir.path().join("git").join(format!("{u}.git")));
        let bare = run(git(Some(&p)).args(["rev-parse", "--is-bare-repository"])).await.unwrap();
        assert_eq!(bare, b"true\n");
        std::fs::write(p.join("description"), "kept").unwrap();
        assert_eq!(repos.ensure(u).await.unwrap(), p);
        assert_eq!(std::fs::read_to_string(p.join("description")).unwrap(), "kept");
    }

    #[test]
    fn only_uuids_name_a_repository() {
        let repos = Repos::new(Path::new("/data"));
        for bad in ["../x", "", "mesh", "ac2f1a3b-4c5d-8e6f-9a0b-1c2d3e4f5a6b/../../etc"] {
            assert!(repos.path(bad).is_err(), "{bad}");
        }
    }
}
