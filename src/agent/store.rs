//! A node's object store in git-annex's bare-repository layout.
//!
//! Complete objects live at `annex/objects/<h1>/<h2>/KEY/KEY`; uploads in
//! progress at `annex/tmp/KEY`, where an interrupted upload stays so that the
//! next one can resume from its length. Copies found corrupt are moved to
//! `annex/bad/KEY`, never deleted.

use std::io;
use std::path::{Path, PathBuf};

use crate::p2p::key::Key;
use crate::p2p::layout::object_path_bare;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating when needed) a store rooted at `root`.
    pub fn open(root: &Path) -> Result<Store> {
        for sub in ["annex/objects", "annex/tmp"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(Store { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The node's UUID, created on first use and kept in the store so that the
    /// node keeps its identity across restarts.
    pub fn uuid(&self) -> Result<String> {
        let path = self.root.join("uuid");
        match std::fs::read_to_string(&path) {
            Ok(s) => {
                let s = s.trim().to_string();
                uuid::Uuid::parse_str(&s).map_err(|e| {
                    StoreError::Invalid(format!("{} does not hold a UUID: {e}", path.display()))
                })?;
                Ok(s)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let u = uuid::Uuid::new_v4().to_string();
                write_durably(&path, u.as_bytes())?;
                Ok(u)
            }
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    pub fn object_path(&self, key: &Key) -> PathBuf {
        self.root.join(object_path_bare(key))
    }

    pub fn partial_path(&self, key: &Key) -> PathBuf {
        self.root.join("annex/tmp").join(key.to_string())
    }

    /// Size of the complete object, if present.
    pub async fn object_size(&self, key: &Key) -> Result<Option<u64>> {
        let p = self.object_path(key);
        match tokio::fs::metadata(&p).await {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Length of the partial upload kept for resume (0 when none).
    pub async fn partial_len(&self, key: &Key) -> Result<u64> {
        let p = self.partial_path(key);
        match tokio::fs::metadata(&p).await {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Asks the kernel to start writing `len` bytes at `offset` of an upload
    /// to disk, without waiting. Uploads call this as data arrives, so the
    /// fsync before the rename finds little left to write: the disk works
    /// while the data is still streaming rather than after it.
    pub fn start_writeback(fd: std::os::fd::RawFd, offset: u64, len: u64) {
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else { return };
        // SAFETY: sync_file_range reads only its integer arguments; the
        // caller keeps the file open for the duration of the call. Failure
        // is harmless (the later fsync does the work), so it is ignored.
        unsafe {
            libc::sync_file_range(fd, offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }

    /// Moves a verified partial file, open as `file`, into place: fsync the
    /// data, rename, then fsync the directory so that the rename itself
    /// survives a crash. Blocking: uploads call it from their writer thread.
    pub fn commit_partial(&self, key: &Key, file: &std::fs::File) -> Result<()> {
        let tmp = self.partial_path(key);
        let dest = self.object_path(key);
        let dir = dest.parent().expect("object path has a parent");
        file.sync_all().map_err(io_err(&tmp))?;
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        // Objects are immutable, as in git-annex.
        let mut perm = file.metadata().map_err(io_err(&tmp))?.permissions();
        perm.set_readonly(true);
        file.set_permissions(perm).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
        sync_dir(dir)
    }

    /// Deletes a partial upload (absent is fine). Blocking.
    pub fn discard_partial(&self, key: &Key) -> Result<()> {
        let p = self.partial_path(key);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Where corrupt copies are kept.
    pub fn bad_dir(&self) -> PathBuf {
        self.root.join("annex/bad")
    }

    /// Moves the object out of `annex/objects` into `annex/bad/KEY` (with a
    /// numeric suffix when an earlier bad copy is there); None when the
    /// object was already gone. Blocking.
    pub fn quarantine(&self, key: &Key) -> Result<Option<PathBuf>> {
        let src = self.object_path(key);
        let bad = self.bad_dir();
        std::fs::create_dir_all(&bad).map_err(io_err(&bad))?;
        let name = key.to_string();
        let mut dest = bad.join(&name);
        let mut n = 0;
        while dest.symlink_metadata().is_ok() {
            n += 1;
            dest = bad.join(format!("{name}.{n}"));
        }
        match std::fs::rename(&src, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&src)(e)),
        }
        sync_dir(&bad)?;
        if let Some(dir) = src.parent() {
            let _ = sync_dir(dir);
        }
        Ok(Some(dest))
    }

    /// Removes the object (absent is fine) and its now-empty directories.
    pub async fn remove(&self, key: &Key) -> Result<()> {
        let p = self.object_path(key);
        let objects = self.root.join("annex/objects");
        tokio::task::spawn_blocking(move || -> Result<()> {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io_err(&p)(e)),
            }
            let mut dir = p.parent().map(Path::to_path_buf);
            while let Some(d) = dir {
                if d == objects || std::fs::remove_dir(&d).is_err() {
                    break;
                }
                dir = d.parent().map(Path::to_path_buf);
            }
            if let Some(parent) = p.parent().and_then(Path::parent) {
                let _ = sync_dir(parent);
            }
            Ok(())
        })
        .await
        .expect("remove task panicked")
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

/// Writes a small file so that it is either wholly there or not at all.
pub fn write_durably(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn uuid_is_stable_and_objects_use_bare_layout() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let u1 = store.uuid().unwrap();
        let u2 = Store::open(dir.path()).unwrap().uuid().unwrap();
        assert_eq!(u1, u2);
        let key: Key =
            "SHA256E-s6--5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
                .parse()
                .unwrap();
        let p = store.object_path(&key);
        assert!(p.starts_with(dir.path().join("annex/objects/992/280")));
        assert_eq!(store.object_size(&key).await.unwrap(), None);
        store.remove(&key).await.unwrap(); // absent is not an error
    }
}
