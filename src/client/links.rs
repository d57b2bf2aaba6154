//! The names git-annex runs the `annexmesh` binary by, and the symlinks
//! that give it those names.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The program name git-annex runs for `p2p-annex::annexmesh:` remotes.
pub const P2P_PROGRAM: &str = "git-annex-p2p-annexmesh";
/// The program name ssh remotes run on the server.
pub const SHELL_PROGRAM: &str = "git-annex-shell";

/// `annexmesh install-links DIR`: make `DIR/git-annex-p2p-annexmesh` and
/// `DIR/git-annex-shell` symlinks to this executable. Existing symlinks are
/// replaced; anything else there is left alone and reported.
pub fn install_links(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut made = Vec::new();
    for name in [P2P_PROGRAM, SHELL_PROGRAM] {
        let link = dir.join(name);
        match std::fs::symlink_metadata(&link) {
            Ok(m) if !m.file_type().is_symlink() => {
                bail!("{} exists and is not a symlink; not replacing it", link.display())
            }
            _ => {}
        }
        // Create beside it and rename over, so the name never goes missing.
        let mut tmp = OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = dir.join(tmp);
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&exe, &tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        std::fs::rename(&tmp, &link)
            .with_context(|| format!("cannot create {}", link.display()))?;
        made.push(link);
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_replace_symlinks_but_not_files() {
        let dir = tempfile::tempdir().unwrap();
        let made = install_links(dir.path()).unwrap();
        assert_eq!(made.len(), 2);
        let exe = std::env::current_exe().unwrap();
        for l in &made {
            assert_eq!(std::fs::read_link(l).unwrap(), exe);
        }
        std::fs::remove_file(&made[0]).unwrap();
        std::os::unix::fs::symlink("/nonexistent", &made[0]).unwrap();
        install_links(dir.path()).unwrap();
        assert_eq!(std::fs::read_link(&made[0]).unwrap(), exe);
        std::fs::remove_file(&made[1]).unwrap();
        std::fs::write(&made[1], "#!/bin/sh\n").unwrap();
        let e = install_links(dir.path()).unwrap_err();
        assert!(e.to_string().contains("not a symlink"), "{e}");
        assert_eq!(std::fs::read(&made[1]).unwrap(), b"#!/bin/sh\n");
    }
}
