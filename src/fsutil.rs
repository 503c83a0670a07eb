//! File-system helpers that never leave the user's files half-written: everything is written to a
//! temporary sibling first and renamed into place.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Write `bytes` to `path` through a temp file in the same directory and a rename. Public for
/// the binary, which writes its reports (bench CSV and plot) with it. Errors name `path` (a full
/// disk: "No space left on device"); on any error the temp file is removed and whatever was at
/// `path` before is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_sibling(path);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| Error::io("write", path, e))?;
        f.sync_all().map_err(|e| Error::io("write", path, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io("rename into place", path, e))?;
        sync_parent(path);
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Sync the directory holding `path`, so a rename into it survives a power cut (best effort:
/// some file systems refuse to sync directories).
pub(crate) fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
}

/// An exclusive advisory lock (`flock`) on a lock file, held until dropped (and released by the
/// kernel when the process dies, so a killed run never leaves a stale lock). The file holds the
/// holder's process id, for messages.
#[derive(Debug)]
pub struct FileLock {
    file: std::fs::File,
}

impl FileLock {
    /// Wait for the lock on `path` (created if needed).
    pub fn acquire(path: &Path) -> Result<FileLock> {
        let file = open_lock_file(path)?;
        // SAFETY: flock on a descriptor this function owns.
        let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) };
        if rc != 0 {
            return Err(Error::io("lock", path, std::io::Error::last_os_error()));
        }
        Ok(FileLock::holding(file))
    }

    /// Take the lock on `path` if no other process holds it; `Err(pid)` names the holder (its
    /// id as the lock file says, `None` when unreadable) otherwise.
    pub fn try_acquire(path: &Path) -> Result<std::result::Result<FileLock, Option<u32>>> {
        let file = open_lock_file(path)?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let pid = std::fs::read_to_string(path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                return Ok(Err(pid));
            }
            return Err(Error::io("lock", path, e));
        }
        Ok(Ok(FileLock::holding(file)))
    }

    fn holding(mut file: std::fs::File) -> FileLock {
        use std::io::Seek;
        // Best effort: the pid only serves messages.
        let _ = file.set_len(0);
        let _ = file.seek(std::io::SeekFrom::Start(0));
        let _ = write!(file, "{}", std::process::id());
        FileLock { file }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlocking our own descriptor (closing it would release the lock too).
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&self.file), libc::LOCK_UN) };
    }
}

fn open_lock_file(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io("open lock file", path, e))
}

/// `dir/.name.lock`: the lock file that guards `path`.
pub fn lock_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.lock"))
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

/// Remove the temporary siblings of `target` (`.name.tmp-<pid>-<n>`) that a killed process left:
/// those whose process is gone. A live process's (another run writing the same target) is kept.
/// Best effort: what cannot be removed stays.
fn remove_stale_temps(target: &Path) {
    let (Some(name), Some(parent)) = (target.file_name(), target.parent()) else {
        return;
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| p != std::process::id() as i32 && !process_alive(p)) {
            let p = entry.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// Whether a process with id `pid` exists (signal 0 probes without sending anything).
fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for the process.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
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
        remove_stale_temps(target);
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
    fn stale_temp_dirs_of_dead_processes_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        // a dead process's leftovers (pid 2^22 + 1 is above Linux's pid_max) and a live one's
        let dead = root.path().join(format!(".out.tmp-{}-0", (1 << 22) + 1));
        let live = root.path().join(format!(
            ".out.tmp-{}-0",
            std::os::unix::process::parent_id()
        ));
        let other = root.path().join(format!(".other.tmp-{}-0", (1 << 22) + 1));
        for d in [&dead, &live, &other] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("x"), b"x").unwrap();
        }
        let out = OutputDir::create(&target, false).unwrap();
        assert!(!dead.exists() && live.exists() && other.exists());
        out.commit().unwrap();
    }

    #[test]
    fn try_lock_names_the_holder() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path().join(".run.lock");
        let held = FileLock::try_acquire(&p).unwrap().unwrap();
        // flock locks belong to the open file, so a second open in this process conflicts too
        let other = FileLock::try_acquire(&p).unwrap();
        assert_eq!(other.err(), Some(Some(std::process::id())));
        drop(held);
        assert!(FileLock::try_acquire(&p).unwrap().is_ok());
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
