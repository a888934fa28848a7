//! One owner per run directory: an advisory lock on `RUN_DIR/run.lock` (the kernel's `flock`,
//! released when the process dies, however it dies) whose text names the holder (pid, host,
//! start time), so a second run into the same directory is refused with a message saying who
//! holds it. A lock file left by a dead process is detected and taken over. Where the file
//! system has no locks, the holder's pid is checked instead (same host only).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside a run directory.
pub const LOCK_FILE: &str = "run.lock";

/// Who holds a run directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// Unix time (seconds) the lock was taken.
    pub since: u64,
}

impl LockHolder {
    fn me() -> Self {
        Self {
            pid: std::process::id(),
            host: host_name(),
            since: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    fn describe(&self) -> String {
        format!("pid {} on host {}", self.pid, self.host)
    }

    /// Whether the holder is a live process (known only on this host).
    fn alive_here(&self) -> Option<bool> {
        (self.host == host_name()).then(|| Path::new(&format!("/proc/{}", self.pid)).exists())
    }
}

/// The machine's host name (`unknown` where it cannot be read).
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// A held run-directory lock; dropping it releases the lock and removes the file.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `dir` (which must exist), or explains who holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        // A holder that exits removes the file: if it did so between our open and our lock,
        // we locked a deleted file and must try again on the new one.
        let path = dir.join(LOCK_FILE);
        for _ in 0..8 {
            let file = Self::try_acquire(dir, &path)?;
            if same_file(&file, &path) {
                return Ok(Self { file, path });
            }
        }
        bail!(
            "could not lock {}: its lock file keeps changing",
            dir.display()
        )
    }

    fn try_acquire(dir: &Path, path: &Path) -> Result<File> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("creating the run lock {}", path.display()))?;
        let previous = read_holder(&mut file);
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => bail!(
                "{} is in use by another v4train run ({}; lock file {}); wait for it to finish, \
                 stop it, or choose another [checkpoint] dir",
                dir.display(),
                previous
                    .as_ref()
                    .map_or("holder unknown".to_string(), LockHolder::describe),
                path.display()
            ),
            // No advisory locks on this file system: trust a live pid on this host.
            Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                if let Some(h) = previous.as_ref().filter(|h| h.alive_here() == Some(true)) {
                    bail!(
                        "{} is in use by another v4train run ({}; lock file {}, file locks \
                         unsupported here so the pid was checked)",
                        dir.display(),
                        h.describe(),
                        path.display()
                    );
                }
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
        if let Some(h) = previous.filter(|h| h.pid != std::process::id()) {
            eprintln!(
                "taking over the stale run lock {} left by {} (that process is gone)",
                path.display(),
                h.describe()
            );
        }
        let me = serde_json::to_vec(&LockHolder::me())?;
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|()| file.write_all(&me))
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing the run lock {}", path.display()))?;
        Ok(file)
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Remove the file while still holding the lock, so no other run sees it half-written.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// Whether `path` still names the open `file` (same device and inode).
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The holder recorded in a lock file (None when empty or unreadable).
fn read_holder(file: &mut File) -> Option<LockHolder> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_and_a_stale_one_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let held = RunLock::acquire(dir.path()).unwrap();
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        assert!(!dir.path().join(LOCK_FILE).exists());
        // A lock file written by a process that is gone (no flock held on it).
        let ghost = LockHolder {
            pid: u32::MAX,
            host: host_name(),
            since: 0,
        };
        std::fs::write(
            dir.path().join(LOCK_FILE),
            serde_json::to_vec(&ghost).unwrap(),
        )
        .unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(lock.path()).unwrap();
        let now: LockHolder = serde_json::from_str(&text).unwrap();
        assert_eq!(now.pid, std::process::id());
    }
}
