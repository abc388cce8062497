//! File locks and temporary entries in the store's `tmp/`.
//!
//! Locks are `flock`s (std `File::lock`): the kernel drops them when a
//! process dies, even by kill -9, so a lock never outlives its holder.
//! Every temporary file or directory is locked by its creator until it is
//! renamed into place or removed; whatever sits in `tmp/` unlocked is the
//! leftover of a dead process and `clean_tmp` removes it.

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};

use super::fsx;

/// An exclusive lock, held until dropped.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

/// Waits for and takes the exclusive lock on `path` (created if needed;
/// lock files are never deleted, so two processes always lock the same
/// inode).
pub fn lock_exclusive(path: &Path) -> anyhow::Result<FileLock> {
    lock_exclusive_or_wait(path, || {}).map(|(lock, _)| lock)
}

/// As `lock_exclusive`, calling `on_wait` first when another process
/// holds the lock (to say what den waits for); also tells whether it
/// had to wait.
pub fn lock_exclusive_or_wait(
    path: &Path,
    on_wait: impl FnOnce(),
) -> anyhow::Result<(FileLock, bool)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open lock file `{}`", path.display()))?;
    let waited = match file.try_lock() {
        Ok(()) => false,
        Err(TryLockError::WouldBlock) => {
            on_wait();
            file.lock()
                .with_context(|| format!("cannot lock `{}`", path.display()))?;
            true
        }
        Err(TryLockError::Error(err)) => {
            return Err(err).with_context(|| format!("cannot lock `{}`", path.display()));
        }
    };
    Ok((FileLock { _file: file }, waited))
}

/// A locked file or directory in `tmp/`, removed on drop unless it was
/// moved into place with `persist`.
#[derive(Debug)]
pub struct TempEntry {
    path: PathBuf,
    handle: File,
    is_dir: bool,
    kept: bool,
}

impl TempEntry {
    pub fn dir(tmp: &Path, prefix: &str) -> anyhow::Result<TempEntry> {
        TempEntry::create(tmp, prefix, true)
    }

    /// A new file; write to it through `handle()`.
    pub fn file(tmp: &Path, prefix: &str) -> anyhow::Result<TempEntry> {
        TempEntry::create(tmp, prefix, false)
    }

    fn create(tmp: &Path, prefix: &str, is_dir: bool) -> anyhow::Result<TempEntry> {
        for _ in 0..8 {
            let path = tmp.join(unique_name(prefix));
            let handle = if is_dir {
                let created = DirBuilder::new().mode(0o700).create(&path);
                match created.and_then(|()| File::open(&path)) {
                    // A cleaner removed the new, still unlocked directory
                    // before it could be opened: make another.
                    Err(err) if err.kind() == io::ErrorKind::NotFound && tmp.is_dir() => continue,
                    other => other,
                }
            } else {
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
            }
            .with_context(|| format!("cannot create `{}`", path.display()))?;
            handle.lock()?;
            // A cleaner may have removed it between creation and locking.
            if handle.metadata()?.nlink() > 0 {
                return Ok(TempEntry {
                    path,
                    handle,
                    is_dir,
                    kept: false,
                });
            }
        }
        bail!("cannot create a temporary entry in `{}`", tmp.display())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn handle(&mut self) -> &mut File {
        &mut self.handle
    }

    /// Renames into place. A directory whose destination already exists
    /// is dropped instead: contents are addressed by digest, so the one
    /// already there is the same.
    pub fn persist(mut self, dest: &Path) -> anyhow::Result<()> {
        match std::fs::rename(&self.path, dest) {
            Ok(()) => {
                self.kept = true;
                Ok(())
            }
            Err(err)
                if self.is_dir
                    && dest.is_dir()
                    && err.kind() == io::ErrorKind::DirectoryNotEmpty =>
            {
                Ok(())
            }
            Err(err) => Err(err).with_context(|| format!("cannot move into `{}`", dest.display())),
        }
    }
}

impl Drop for TempEntry {
    fn drop(&mut self) {
        if !self.kept {
            // Best effort: a later `clean_tmp` retries.
            let _ = fsx::remove_path(&self.path);
        }
    }
}

fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{count}-{nanos:x}", std::process::id())
}

/// Removes the entries of `tmp` that no live process holds; returns how
/// many it removed.
pub fn clean_tmp(tmp: &Path) -> anyhow::Result<usize> {
    let dir = match fsx::open_dir(tmp) {
        Ok(dir) => dir,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err).with_context(|| format!("cannot open `{}`", tmp.display())),
    };
    let mut removed = 0;
    for name in fsx::list_dir(dir.as_fd())? {
        let path = tmp.join(&name);
        let Ok(file) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        else {
            continue;
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => continue,
            Err(TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("cannot lock `{}`", path.display()));
            }
        }
        // Still the same entry, not renamed into place meanwhile?
        let still_here =
            fsx::stat_at(dir.as_fd(), &name).is_ok_and(|stat| fsx::same_file(&stat, &file));
        if still_here {
            fsx::remove_at(dir.as_fd(), &name)
                .with_context(|| format!("cannot remove `{}`", path.display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_tmp_removes_only_unlocked_leftovers() {
        let tmp = tempfile::tempdir().unwrap();
        let held = TempEntry::dir(tmp.path(), "held").unwrap();
        // A leftover of a killed process: unlocked, and read-only inside.
        let dead = tmp.path().join("layer-dead");
        std::fs::create_dir_all(dead.join("fs/ro/sub")).unwrap();
        std::fs::write(dead.join("fs/ro/sub/f"), "x").unwrap();
        for dir in ["fs/ro/sub", "fs/ro"] {
            std::fs::set_permissions(
                dead.join(dir),
                std::os::unix::fs::PermissionsExt::from_mode(0o500),
            )
            .unwrap();
        }
        std::fs::write(tmp.path().join("file-dead"), "x").unwrap();

        assert_eq!(clean_tmp(tmp.path()).unwrap(), 2);
        assert!(held.path().is_dir());
        assert!(!dead.exists());
        drop(held);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn persisted_entries_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let mut entry = TempEntry::file(tmp.path(), "file").unwrap();
        std::io::Write::write_all(entry.handle(), b"data").unwrap();
        let dest = tmp.path().join("dest");
        entry.persist(&dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"data");
    }
}
