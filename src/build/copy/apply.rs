//! Writing a scanned `copy` into the container's root filesystem.
//!
//! Runs in the build container, in place of the step's command, with the
//! project mounted read-only at `source_root`. Paths in the container are
//! resolved like the kernel does for the container (symlinks followed,
//! confined to the root with `RESOLVE_IN_ROOT`), except the last
//! component of each copied entry, which is replaced, never followed.
//! The project side is read without following any symlink, and each
//! file's bytes are hashed while copied and checked against `scan`'s
//! digest: the layer holds exactly what the step key covers.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};

use super::{COPY_BUFFER, CopyInputs, Entry, EntryKind, IN_PROJECT};
use crate::image::fsx;

/// Copies `inputs` (scanned from the project now mounted at
/// `source_root`) to `to` in the container's root.
pub fn apply(source_root: &Path, inputs: &CopyInputs, to: &str) -> anyhow::Result<()> {
    apply_under(Path::new("/"), source_root, inputs, to)
}

/// `apply` with `root` standing for the container's `/`.
pub(super) fn apply_under(
    root: &Path,
    source_root: &Path,
    inputs: &CopyInputs,
    to: &str,
) -> anyhow::Result<()> {
    let to_rel = container_path(to)?;
    let root = fsx::open_dir(root).with_context(|| format!("cannot open `{}`", root.display()))?;
    let source = fsx::open_dir(source_root)
        .with_context(|| format!("cannot open the project at `{}`", source_root.display()))?;
    let mut writer = Writer {
        root,
        source,
        inputs,
        parent: None,
        made_dirs: Vec::new(),
        buf: vec![0; COPY_BUFFER],
    };
    if !inputs.from_is_dir {
        return writer.single(&to_rel, to.ends_with('/'));
    }
    writer.make_dirs(&to_rel)?;
    for entry in &inputs.entries {
        let name = entry
            .path
            .file_name()
            .context("copy: an entry has no name")?;
        let parent = to_rel.join(entry.path.parent().unwrap_or(Path::new("")));
        writer.write(&parent, name, entry)?;
    }
    writer.finish_dirs()
}

/// `to` as a path relative to the container's root.
fn container_path(to: &str) -> anyhow::Result<PathBuf> {
    if !to.starts_with('/') {
        bail!("copy: `to: {to}` must be an absolute path in the container");
    }
    let mut rel = PathBuf::new();
    for component in Path::new(to).components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                bail!("copy: `to: {to}` must not contain `..`")
            }
        }
    }
    Ok(rel)
}

/// Resolving in the container: symlinks followed, but never out of it.
const IN_CONTAINER: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

struct Writer<'a> {
    root: OwnedFd,
    source: OwnedFd,
    inputs: &'a CopyInputs,
    /// The last parent directory written to (entries come sorted).
    parent: Option<(PathBuf, OwnedFd)>,
    /// Directories this copy created, to get their mode and mtime last.
    made_dirs: Vec<(PathBuf, u32, Timespec)>,
    buf: Vec<u8>,
}

impl Writer<'_> {
    fn open_in_container(&self, rel: &Path) -> Result<OwnedFd, Errno> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        loop {
            match rustix::fs::openat2(&self.root, rel, DIR_FLAGS, Mode::empty(), IN_CONTAINER) {
                Err(Errno::AGAIN | Errno::INTR) => continue,
                other => return other,
            }
        }
    }

    fn is_dir(&self, rel: &Path) -> bool {
        self.open_in_container(rel).is_ok()
    }

    /// `mkdir -p` in the container: missing directories are made 0755.
    fn make_dirs(&self, rel: &Path) -> anyhow::Result<()> {
        let mut so_far = PathBuf::new();
        let mut dir = self.open_in_container(&so_far)?;
        for component in rel.components() {
            so_far.push(component);
            dir = match self.open_in_container(&so_far) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    let name = component.as_os_str();
                    rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755))
                        .map_err(io::Error::from)
                        .with_context(|| format!("cannot create `/{}`", so_far.display()))?;
                    let made = fsx::open_dir_beneath(dir.as_fd(), Path::new(name))?;
                    rustix::fs::fchmod(&made, Mode::from_raw_mode(0o755))?;
                    made
                }
                Err(Errno::NOTDIR) => bail!("copy: `/{}` is not a directory", so_far.display()),
                Err(err) => {
                    return Err(io::Error::from(err))
                        .with_context(|| format!("cannot open `/{}`", so_far.display()));
                }
            };
        }
        Ok(())
    }

    /// A file or symlink `from`: to `to`, or into it when it ends with
    /// `/` or is a directory.
    fn single(&mut self, to_rel: &Path, into_dir: bool) -> anyhow::Result<()> {
        let inputs = self.inputs;
        // None when `from` is a special file, skipped with a warning.
        let Some(entry) = inputs.entries.first() else {
            return Ok(());
        };
        let (parent, name) = if into_dir || self.is_dir(to_rel) {
            let name = inputs
                .from
                .file_name()
                .context("copy: `from` names no file")?;
            (to_rel, name)
        } else {
            let name = to_rel.file_name().context("copy: `to` names no file")?;
            (to_rel.parent().unwrap_or(Path::new("")), name)
        };
        self.make_dirs(parent)?;
        self.write(parent, name, entry)
    }

    /// Writes `entry` as `name` in the container directory `parent`.
    fn write(&mut self, parent: &Path, name: &OsStr, entry: &Entry) -> anyhow::Result<()> {
        let shown = Path::new("/").join(parent).join(name);
        let dir = self.parent_dir(parent)?;
        let written = match &entry.kind {
            EntryKind::Dir => self.dir(dir.as_fd(), parent, name, entry),
            EntryKind::File { sha256 } => self.file(dir.as_fd(), name, entry, sha256),
            EntryKind::Symlink { target } => symlink(dir.as_fd(), name, target, entry.mtime),
        };
        self.parent = Some((parent.to_path_buf(), dir));
        written.with_context(|| format!("copy: cannot write `{}`", shown.display()))
    }

    fn parent_dir(&mut self, parent: &Path) -> anyhow::Result<OwnedFd> {
        if let Some((cached, fd)) = self.parent.take()
            && cached == parent
        {
            return Ok(fd);
        }
        self.open_in_container(parent)
            .map_err(io::Error::from)
            .with_context(|| format!("copy: cannot open `/{}`", parent.display()))
    }

    fn dir(
        &mut self,
        parent: BorrowedFd<'_>,
        parent_rel: &Path,
        name: &OsStr,
        entry: &Entry,
    ) -> anyhow::Result<()> {
        let made = match rustix::fs::mkdirat(parent, name, Mode::RWXU) {
            Ok(()) => true,
            // A directory (or a link to one) is merged into, as by Docker.
            Err(Errno::EXIST) if is_dir_following(parent, name) => false,
            Err(Errno::EXIST) => {
                fsx::remove_at(parent, name)?;
                rustix::fs::mkdirat(parent, name, Mode::RWXU)?;
                true
            }
            Err(err) => return Err(io::Error::from(err).into()),
        };
        if made {
            let rel = parent_rel.join(name);
            self.made_dirs.push((rel, entry.perm, entry.mtime));
        }
        Ok(())
    }

    fn file(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        entry: &Entry,
        sha256: &[u8; 32],
    ) -> anyhow::Result<()> {
        let project_path = self.project_path(entry);
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let source = rustix::fs::openat2(
            &self.source,
            &project_path,
            flags,
            Mode::empty(),
            IN_PROJECT,
        )
        .map_err(io::Error::from)
        .with_context(|| format!("cannot open `{}` in the project", project_path.display()))?;
        let mut target = create_file(parent, name, entry.perm)?;
        let copied = copy_hashing(&mut File::from(source), &mut target, &mut self.buf)?;
        if &copied != sha256 {
            bail!(
                "`{}` changed during the build; run it again",
                project_path.display()
            );
        }
        rustix::fs::fchmod(&target, Mode::from_raw_mode(entry.perm))?;
        rustix::fs::futimens(&target, &times(entry.mtime))?;
        Ok(())
    }

    fn project_path(&self, entry: &Entry) -> PathBuf {
        let from = &self.inputs.from;
        match (
            from.as_os_str().is_empty(),
            entry.path.as_os_str().is_empty(),
        ) {
            (true, _) => entry.path.clone(),
            (false, true) => from.clone(),
            (false, false) => from.join(&entry.path),
        }
    }

    /// Modes and mtimes of the directories made, deepest first, so a
    /// read-only one was still writable while it was filled.
    fn finish_dirs(&mut self) -> anyhow::Result<()> {
        self.parent = None;
        let mut dirs = std::mem::take(&mut self.made_dirs);
        dirs.sort_by_key(|(rel, ..)| std::cmp::Reverse(rel.components().count()));
        for (rel, perm, mtime) in dirs {
            let set = self.open_in_container(&rel).and_then(|dir| {
                rustix::fs::fchmod(&dir, Mode::from_raw_mode(perm))?;
                rustix::fs::futimens(&dir, &times(mtime))
            });
            set.map_err(io::Error::from)
                .with_context(|| format!("copy: cannot set the mode of `/{}`", rel.display()))?;
        }
        Ok(())
    }
}

fn is_dir_following(parent: BorrowedFd<'_>, name: &OsStr) -> bool {
    rustix::fs::statat(parent, name, AtFlags::empty())
        .is_ok_and(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::Directory)
}

/// Replaces whatever but a directory stands at `name`, as `cp` does.
fn replace<T>(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    create: impl Fn() -> Result<T, Errno>,
) -> anyhow::Result<T> {
    match create() {
        Err(Errno::EXIST) => {
            let existing = fsx::stat_at(parent, name)?;
            if FileType::from_raw_mode(existing.st_mode) == FileType::Directory {
                bail!("a directory is in the way; remove it in an earlier step");
            }
            rustix::fs::unlinkat(parent, name, AtFlags::empty())?;
            Ok(create()?)
        }
        other => Ok(other?),
    }
}

fn create_file(parent: BorrowedFd<'_>, name: &OsStr, perm: u32) -> anyhow::Result<File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(perm);
    let fd = replace(parent, name, || {
        rustix::fs::openat(parent, name, flags, mode)
    })?;
    Ok(File::from(fd))
}

fn symlink(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    target: &OsString,
    mtime: Timespec,
) -> anyhow::Result<()> {
    replace(parent, name, || rustix::fs::symlinkat(target, parent, name))?;
    rustix::fs::utimensat(parent, name, &times(mtime), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

fn copy_hashing(from: &mut File, to: &mut File, buf: &mut [u8]) -> io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    loop {
        match from.read(buf) {
            Ok(0) => return Ok(hasher.finalize().into()),
            Ok(n) => {
                hasher.update(&buf[..n]);
                to.write_all(&buf[..n])?;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

fn times(mtime: Timespec) -> Timestamps {
    Timestamps {
        last_access: mtime,
        last_modification: mtime,
    }
}
