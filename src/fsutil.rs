//! File-system helpers that never leave the user's files half-written: everything is written to a
//! temporary sibling first and renamed into place.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Write `bytes` to `path` through a temp file in the same directory and a rename. Public for
/// the binary, which writes its reports (bench CSV and plot) with it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_sibling(path);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| Error::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("sync", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io("rename into place", path, e))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// `dir/.name.tmp-<pid>-<n>`: a sibling on the same file system, so a rename is atomic.
pub(crate) fn temp_sibling(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    parent.join(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// An output directory being built in a temporary sibling; [`OutputDir::commit`] renames it into
/// place. Dropped without commit, it removes the temporary directory, so an interrupted run never
/// leaves a directory that looks complete.
pub(crate) struct OutputDir {
    target: PathBuf,
    tmp: PathBuf,
    force: bool,
    committed: bool,
}

impl OutputDir {
    /// Refuses an existing non-empty `target` unless `force`; creates the temp directory.
    pub fn create(target: &Path, force: bool) -> Result<Self> {
        if target.exists() {
            if !target.is_dir() {
                return Err(Error::Output {
                    path: target.to_path_buf(),
                    msg: "exists and is not a directory".into(),
                });
            }
            let non_empty = std::fs::read_dir(target)
                .map_err(|e| Error::io("read directory", target, e))?
                .next()
                .is_some();
            if non_empty && !force {
                return Err(Error::OutputExists {
                    path: target.to_path_buf(),
                    setting: "force",
                });
            }
        }
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io("create directory", parent, e))?;
        }
        let tmp = temp_sibling(target);
        std::fs::create_dir(&tmp).map_err(|e| Error::io("create directory", &tmp, e))?;
        Ok(OutputDir {
            target: target.to_path_buf(),
            tmp,
            force,
            committed: false,
        })
    }

    /// Where to write the files for now.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Move the finished directory into place. With `force`, the old directory is moved aside
    /// first and removed only after the new one is in place.
    pub fn commit(mut self) -> Result<PathBuf> {
        let mut backup = None;
        if self.target.exists() {
            if !self.force {
                // Appeared while we were writing: never clobber it.
                let empty = std::fs::read_dir(&self.target)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false);
                if !empty {
                    // (It appeared while we were writing.)
                    return Err(Error::OutputExists {
                        path: self.target.clone(),
                        setting: "force",
                    });
                }
            }
            let b = temp_sibling(&self.target);
            std::fs::rename(&self.target, &b)
                .map_err(|e| Error::io("move aside", &self.target, e))?;
            backup = Some(b);
        }
        if let Err(e) = std::fs::rename(&self.tmp, &self.target) {
            if let Some(b) = &backup {
                let _ = std::fs::rename(b, &self.target);
            }
            return Err(Error::io("rename into place", &self.target, e));
        }
        self.committed = true;
        if let Some(b) = backup {
            let _ = std::fs::remove_dir_all(b);
        }
        Ok(self.target.clone())
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_dir_refuses_non_empty_and_cleans_up() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep.txt"), b"mine").unwrap();
        let err = OutputDir::create(&target, false).err().unwrap();
        assert!(
            matches!(&err, Error::OutputExists { path, setting: "force" } if path == &target),
            "{err}"
        );
        assert_eq!(std::fs::read(target.join("keep.txt")).unwrap(), b"mine");
        {
            let out = OutputDir::create(&target, true).unwrap();
            std::fs::write(out.path().join("new.txt"), b"x").unwrap();
            // dropped without commit: the old directory is untouched, the temp one is gone
        }
        assert!(target.join("keep.txt").exists());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
        let out = OutputDir::create(&target, true).unwrap();
        std::fs::write(out.path().join("new.txt"), b"x").unwrap();
        out.commit().unwrap();
        assert!(target.join("new.txt").exists() && !target.join("keep.txt").exists());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_atomic_replaces_whole_file() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    }
}
