//! The git plumbing the branch writer uses on a cluster's bare repository:
//! refs read and compare-and-swapped, trees read and merged in a private
//! index file (never the repository's own), blobs read and written in one
//! git process per batch, commits made.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::coordinator::git::{git, run};

/// The mesh's own last state of the branch: kept apart from
/// `refs/heads/git-annex`, so that a forced push there loses nothing.
pub const PRIVATE_REF: &str = "refs/annexmesh/git-annex";
/// The branch clients fetch and push.
pub const BRANCH_REF: &str = "refs/heads/git-annex";
/// Where `git annex sync` pushes its git-annex branch.
pub const SYNCED_REF: &str = "refs/heads/synced/git-annex";

/// One cluster's repository, with the writer's private index file.
pub struct Repo {
    pub path: PathBuf,
    index: PathBuf,
}

/// The commits the three refs point at, when they exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heads {
    pub private: Option<String>,
    pub branch: Option<String>,
    pub synced: Option<String>,
}

/// A file that differs between two trees: its blob on the newer side (None
/// when deleted there).
#[derive(Debug, Clone)]
pub struct Diff {
    pub new: Option<String>,
    pub path: String,
}

impl Repo {
    pub fn new(path: PathBuf) -> Repo {
        let index = path.join("annexmesh-git-annex.index");
        Repo { path, index }
    }

    fn git(&self) -> tokio::process::Command {
        let mut c = git(Some(&self.path));
        c.env("GIT_INDEX_FILE", &self.index);
        // Commits need an identity; the repository has none configured.
        for (k, v) in [
            ("GIT_AUTHOR_NAME", "annexmesh"),
            ("GIT_AUTHOR_EMAIL", "annexmesh@localhost"),
            ("GIT_COMMITTER_NAME", "annexmesh"),
            ("GIT_COMMITTER_EMAIL", "annexmesh@localhost"),
        ] {
            c.env(k, v);
        }
        c
    }

    /// Where the three refs point.
    pub async fn heads(&self) -> anyhow::Result<Heads> {
        let out = run(self.git().args([
            "for-each-ref",
            "--format=%(objectname) %(refname)",
            PRIVATE_REF,
            BRANCH_REF,
            SYNCED_REF,
        ]))
        .await?;
        let mut h = Heads::default();
        for line in String::from_utf8_lossy(&out).lines() {
            let Some((oid, name)) = line.split_once(' ') else { continue };
            let slot = match name {
                PRIVATE_REF => &mut h.private,
                BRANCH_REF => &mut h.branch,
                SYNCED_REF => &mut h.synced,
                _ => continue,
            };
            *slot = Some(oid.to_string());
        }
        Ok(h)
    }

    /// Whether `a` is `b` or one of its ancestors.
    pub async fn is_ancestor(&self, a: &str, b: &str) -> anyhow::Result<bool> {
        let st = self
            .git()
            .args(["merge-base", "--is-ancestor", a, b])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .context("cannot run git")?;
        match st.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => bail!("git merge-base --is-ancestor {a} {b} failed in {}", self.path.display()),
        }
    }

    /// The message of commit `c`.
    pub async fn message(&self, c: &str) -> anyhow::Result<String> {
        let out = run(self.git().args(["cat-file", "commit", c])).await?;
        let text = String::from_utf8_lossy(&out);
        Ok(text.split_once("\n\n").map(|(_, m)| m.to_string()).unwrap_or_default())
    }

    /// Loads the private index with commit `c`'s tree, or empties it.
    pub async fn read_tree(&self, c: Option<&str>) -> anyhow::Result<()> {
        match c {
            Some(c) => run(self.git().args(["read-tree", c])).await?,
            None => run(self.git().args(["read-tree", "--empty"])).await?,
        };
        Ok(())
    }

    /// The files that differ from `a` to `b` (every file of `b` when `a`
    /// is None).
    pub async fn diff(&self, a: Option<&str>, b: &str) -> anyhow::Result<Vec<Diff>> {
        let mut out = Vec::new();
        let Some(a) = a else {
            let raw = run(self.git().args(["ls-tree", "-r", "-z", b])).await?;
            for rec in raw.split(|c| *c == 0).filter(|r| !r.is_empty()) {
                let rec = String::from_utf8_lossy(rec);
                let Some((meta, path)) = rec.split_once('\t') else { continue };
                let mut w = meta.split(' ');
                let (_mode, kind, oid) = (w.next(), w.next(), w.next());
                if kind == Some("blob") {
                    out.push(Diff { new: oid.map(str::to_string), path: path.into() });
                }
            }
            return Ok(out);
        };
        let raw =
            run(self.git().args(["diff-tree", "-r", "-z", "--raw", "--no-renames", a, b])).await?;
        let mut parts = raw.split(|c| *c == 0).filter(|r| !r.is_empty());
        while let (Some(meta), Some(path)) = (parts.next(), parts.next()) {
            let meta = String::from_utf8_lossy(meta);
            let w: Vec<&str> = meta.split(' ').collect();
            if w.len() < 5 {
                bail!("unexpected git diff-tree output: {meta}");
            }
            let oid = |s: &str| (!s.bytes().all(|b| b == b'0')).then(|| s.to_string());
            out.push(Diff { new: oid(w[3]), path: String::from_utf8_lossy(path).into_owned() });
        }
        Ok(out)
    }

    /// The contents of `objects` (blob ids, or `:PATH` for a file of the
    /// private index), None for those missing; one git process.
    pub async fn cat(&self, objects: &[String]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        if objects.is_empty() {
            return Ok(Vec::new());
        }
        let mut input = Vec::new();
        for o in objects {
            input.extend_from_slice(o.as_bytes());
            input.push(b'\n');
        }
        let out = run_with_input(self.git().args(["cat-file", "--batch"]), input).await?;
        let mut rest = &out[..];
        let mut res = Vec::with_capacity(objects.len());
        for o in objects {
            let nl = rest.iter().position(|c| *c == b'\n').context("short git cat-file output")?;
            let header = String::from_utf8_lossy(&rest[..nl]).into_owned();
            rest = &rest[nl + 1..];
            if header.ends_with(" missing") || header.ends_with(" ambiguous") {
                res.push(None);
                continue;
            }
            let size: usize = header
                .rsplit(' ')
                .next()
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("bad git cat-file header for {o}: {header}"))?;
            if rest.len() < size + 1 {
                bail!("short git cat-file output for {o}");
            }
            res.push(Some(rest[..size].to_vec()));
            rest = &rest[size + 1..];
        }
        Ok(res)
    }

    /// Writes `blobs` to the object store; their ids, in order. One git
    /// process: the contents go through files in a scratch directory.
    pub async fn hash(&self, blobs: &[Vec<u8>]) -> anyhow::Result<Vec<String>> {
        if blobs.is_empty() {
            return Ok(Vec::new());
        }
        let dir = self.path.join("annexmesh-scratch");
        let _ = tokio::fs::remove_dir_all(&dir).await;
        tokio::fs::create_dir_all(&dir)
            .await
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut paths = Vec::new();
        for (i, b) in blobs.iter().enumerate() {
            let p = dir.join(i.to_string());
            tokio::fs::write(&p, b)
                .await
                .with_context(|| format!("cannot write {}", p.display()))?;
            paths.extend_from_slice(p.as_os_str().as_encoded_bytes());
            paths.push(b'\n');
        }
        let out = run_with_input(
            self.git().args(["hash-object", "-w", "--no-filters", "--stdin-paths"]),
            paths,
        )
        .await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        let ids: Vec<String> = String::from_utf8_lossy(&out?).lines().map(str::to_string).collect();
        if ids.len() != blobs.len() {
            bail!("git hash-object gave {} ids for {} blobs", ids.len(), blobs.len());
        }
        Ok(ids)
    }

    /// Sets files of the private index to blobs: (blob id, path).
    pub async fn stage(&self, files: &[(String, String)]) -> anyhow::Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let mut input = Vec::new();
        for (oid, path) in files {
            input.extend_from_slice(format!("100644 {oid}\t{path}").as_bytes());
            input.push(0);
        }
        run_with_input(self.git().args(["update-index", "-z", "--index-info"]), input).await?;
        Ok(())
    }

    /// The tree of the private index.
    pub async fn write_tree(&self) -> anyhow::Result<String> {
        Ok(trim(run(self.git().arg("write-tree")).await?))
    }

    /// The tree of commit `c`.
    pub async fn tree_of(&self, c: &str) -> anyhow::Result<String> {
        Ok(trim(run(self.git().args(["rev-parse", &format!("{c}^{{tree}}")])).await?))
    }

    /// A new commit of `tree` with `parents`.
    pub async fn commit(
        &self,
        tree: &str,
        parents: &[String],
        message: &str,
    ) -> anyhow::Result<String> {
        let mut c = self.git();
        c.args(["commit-tree", tree, "-m", message]);
        for p in parents {
            c.args(["-p", p]);
        }
        Ok(trim(run(&mut c).await?))
    }

    /// Packs loose objects when git thinks there are enough to.
    pub async fn gc_auto(&self) -> anyhow::Result<()> {
        run(self.git().args(["gc", "--auto", "--quiet"])).await?;
        Ok(())
    }

    /// Points `name` at `new` if it still points at `old` (does not exist
    /// when None); false when it moved meanwhile.
    pub async fn swap(&self, name: &str, new: &str, old: Option<&str>) -> anyhow::Result<bool> {
        let out = self
            .git()
            .args(["update-ref", "-m", "annexmesh: git-annex branch", name, new, old.unwrap_or("")])
            .stdin(Stdio::null())
            .output()
            .await
            .context("cannot run git")?;
        if out.status.success() {
            return Ok(true);
        }
        // Tell a ref that moved from a failure to write it.
        let now = self.heads().await?;
        let current = match name {
            PRIVATE_REF => now.private,
            BRANCH_REF => now.branch,
            _ => now.synced,
        };
        if current.as_deref() != old {
            return Ok(false);
        }
        bail!(
            "cannot update {name} in {}: {}",
            self.path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }
}

fn trim(out: Vec<u8>) -> String {
    String::from_utf8_lossy(&out).trim().to_string()
}

/// Runs `cmd` with `input` on its standard input, written while its output
/// is read, so that neither side can block the other.
async fn run_with_input(
    cmd: &mut tokio::process::Command,
    input: Vec<u8>,
) -> anyhow::Result<Vec<u8>> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run git (is it installed and on PATH?)")?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let write = async move {
        let r = stdin.write_all(&input).await;
        drop(stdin);
        r
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let (w, o, e) = tokio::join!(write, stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
    let status = child.wait().await.context("cannot wait for git")?;
    if !status.success() {
        bail!("{:?} failed: {}", cmd.as_std(), String::from_utf8_lossy(&err).trim());
    }
    w.context("cannot write to git")?;
    o.context("cannot read from git")?;
    e.context("cannot read from git")?;
    Ok(out)
}
