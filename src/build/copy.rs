//! The `copy` step: files from the project into the image, as Docker's
//! `COPY` does.
//!
//! `from` is a path inside the project (never absolute, never `..`, never
//! through a symlink); a directory's contents go into `to`, a file goes to
//! `to` (or into it when `to` ends with `/` or is a directory). Symlinks
//! are copied as symlinks and never followed; fifos, sockets and devices
//! are skipped with a warning. Perm bits and mtimes are kept (setuid and
//! setgid dropped), the owner is the container's root. `exclude` takes
//! gitignore patterns relative to `from`.
//!
//! The work is split in three:
//! - `scan`, on the host, walks `from` and hashes every file (a per-project
//!   `StatCache` skips unchanged ones), giving the step's `CopyInputs`: the
//!   sorted entries whose digest goes into the step's cache key, and the
//!   stat signatures `den run` compares to see that nothing changed;
//! - `unchanged` is that comparison: one `lstat` per watched path;
//! - `apply` runs inside the build container, with the project mounted
//!   read-only somewhere, and writes the entries, checking each file's
//!   content against the digest `scan` took.

mod apply;
mod cache;

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags, Timespec};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};

use crate::image::digest::to_hex;
use crate::image::fsx;

pub use apply::apply;
use cache::{Signature, Timestamp};
pub use cache::{StatCache, Watched, unchanged};

/// `copy:` as den.yaml gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySpec {
    /// Relative to the project root.
    pub from: PathBuf,
    /// Absolute, in the container.
    pub to: String,
    /// gitignore patterns, relative to `from`.
    pub exclude: Vec<String>,
}

/// One thing to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to `from`; empty when `from` itself is a file or symlink.
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Permission bits (with sticky), setuid/setgid dropped.
    pub perm: u32,
    /// Kept on the copy, but not part of the key.
    mtime: Timespec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File { sha256: [u8; 32] },
    Symlink { target: OsString },
}

/// What a `copy` step reads, found by `scan`.
#[derive(Debug, Clone)]
pub struct CopyInputs {
    /// `from`, cleaned (empty for the project root).
    from: PathBuf,
    from_is_dir: bool,
    /// Sorted by path (so each directory comes before its contents).
    pub entries: Vec<Entry>,
    /// Every copied path and `from` itself, for `unchanged`.
    pub watched: Vec<Watched>,
    /// One line per skipped special file, for the user.
    pub warnings: Vec<String>,
}

impl CopyInputs {
    /// The entries as the step key covers them: path, type, perm bits and
    /// content digest or link target; not mtimes or owners.
    pub fn key_bytes(&self) -> Vec<u8> {
        let mut out = b"den-copy/1\0".to_vec();
        for entry in &self.entries {
            out.extend_from_slice(entry.path.as_os_str().as_bytes());
            out.push(0);
            out.extend_from_slice(&entry.perm.to_be_bytes());
            match &entry.kind {
                EntryKind::Dir => out.push(b'd'),
                EntryKind::File { sha256 } => {
                    out.push(b'f');
                    out.extend_from_slice(sha256);
                }
                EntryKind::Symlink { target } => {
                    out.push(b'l');
                    out.extend_from_slice(target.as_bytes());
                    out.push(0);
                }
            }
        }
        out
    }

    /// sha256 of `key_bytes`, in hex.
    pub fn digest(&self) -> String {
        to_hex(&Sha256::digest(self.key_bytes()))
    }
}

/// Walks `spec.from` under `project_root` and hashes what `copy` would
/// copy, reusing and updating the digests in `cache`.
pub fn scan(
    project_root: &Path,
    spec: &CopySpec,
    cache: &mut StatCache,
) -> anyhow::Result<CopyInputs> {
    let from = project_path(&spec.from)?;
    let excludes = excludes(project_root, &from, &spec.exclude)?;
    let root = fsx::open_dir(project_root)
        .with_context(|| format!("cannot open the project `{}`", project_root.display()))?;
    let shown = || format!("copy: `from: {}`", spec.from.display());
    let (parent, name, stat) = open_from(root.as_fd(), &from).with_context(shown)?;
    let from_is_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
    let mut scanner = Scanner {
        from: from.clone(),
        excludes,
        cache: cache.session(&from),
        inputs: CopyInputs {
            from,
            from_is_dir,
            entries: Vec::new(),
            watched: Vec::new(),
            warnings: Vec::new(),
        },
    };
    match &name {
        Some(name) if !from_is_dir => {
            scanner.entry(parent.as_fd(), name, PathBuf::new(), &stat)?;
        }
        Some(name) => {
            let dir = fsx::open_dir_beneath(parent.as_fd(), Path::new(name))
                .map_err(io::Error::from)
                .with_context(shown)?;
            scanner.top_dir(dir.as_fd(), &stat)?;
        }
        None => scanner.top_dir(parent.as_fd(), &stat)?,
    }
    Ok(scanner.finish())
}

/// `from` as a clean relative path: no root, no `..`.
fn project_path(from: &Path) -> anyhow::Result<PathBuf> {
    let mut clean = PathBuf::new();
    for component in from.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => bail!(
                "copy: `from: {}` must be a path inside the project, relative to it and without `..`",
                from.display()
            ),
        }
    }
    Ok(clean)
}

fn excludes(project_root: &Path, from: &Path, patterns: &[String]) -> anyhow::Result<Gitignore> {
    let mut builder = GitignoreBuilder::new(project_root.join(from));
    for pattern in patterns {
        builder
            .add_line(None, pattern)
            .with_context(|| format!("copy: bad `exclude` pattern `{pattern}`"))?;
    }
    builder.build().context("copy: bad `exclude` patterns")
}

/// The directory holding `from`, its last component (`None` for the
/// project root) and what that is.
fn open_from(
    root: BorrowedFd<'_>,
    from: &Path,
) -> anyhow::Result<(OwnedFd, Option<OsString>, rustix::fs::Stat)> {
    let (parent, name) = open_parent(root, from)?;
    let stat = match &name {
        Some(name) => fsx::stat_at(parent.as_fd(), name),
        None => rustix::fs::fstat(&parent),
    };
    match stat {
        Ok(stat) => Ok((parent, name, stat)),
        Err(Errno::NOENT) => bail!("no such file or directory in the project"),
        Err(err) => Err(io::Error::from(err).into()),
    }
}

/// The directory holding `from` and its last component, refusing
/// symlinks on the way.
fn open_parent(root: BorrowedFd<'_>, from: &Path) -> anyhow::Result<(OwnedFd, Option<OsString>)> {
    let (parent, name) = match from.file_name() {
        Some(name) => (
            from.parent().unwrap_or(Path::new("")),
            Some(name.to_os_string()),
        ),
        None => (Path::new(""), None),
    };
    match fsx::open_dir_beneath(root, parent) {
        Ok(dir) => Ok((dir, name)),
        Err(Errno::NOENT) => bail!("no such file or directory in the project"),
        Err(Errno::LOOP | Errno::NOTDIR | Errno::XDEV) => Err(not_a_dir(root, parent)),
        Err(err) => Err(io::Error::from(err).into()),
    }
}

/// Names the first component of `parent` that is not a directory.
fn not_a_dir(root: BorrowedFd<'_>, parent: &Path) -> anyhow::Error {
    let mut prefix = PathBuf::new();
    for component in parent.components() {
        prefix.push(component);
        // Earlier components were directories: this follows no link.
        match fsx::stat_at(root, prefix.as_os_str()).map(|s| FileType::from_raw_mode(s.st_mode)) {
            Ok(FileType::Directory) => {}
            Ok(FileType::Symlink) => {
                return anyhow::anyhow!(
                    "`{}` is a symlink; den never follows links out of `from`, name the real path",
                    prefix.display()
                );
            }
            _ => break,
        }
    }
    anyhow::anyhow!("`{}` is not a directory", prefix.display())
}

struct Scanner<'c> {
    /// Relative to the project root.
    from: PathBuf,
    excludes: Gitignore,
    cache: cache::Session<'c>,
    inputs: CopyInputs,
}

impl Scanner<'_> {
    /// Adds a directory `from` (its contents) and watches it.
    fn top_dir(&mut self, dir: BorrowedFd<'_>, stat: &rustix::fs::Stat) -> anyhow::Result<()> {
        self.watch(Path::new(""), stat);
        self.walk(dir, &mut PathBuf::new())
    }

    /// The inputs, sorted; the cache keeps what this scan saw.
    fn finish(self) -> CopyInputs {
        let Scanner {
            mut inputs, cache, ..
        } = self;
        cache.finish();
        inputs
            .entries
            .sort_by(|a, b| path_bytes(a).cmp(path_bytes(b)));
        inputs
    }

    /// Adds the contents of `dir` (at `rel` under `from`), in name order.
    fn walk(&mut self, dir: BorrowedFd<'_>, rel: &mut PathBuf) -> anyhow::Result<()> {
        let mut names = fsx::list_dir(dir)
            .with_context(|| format!("cannot list `{}`", self.shown(rel).display()))?;
        names.sort();
        for name in names {
            rel.push(&name);
            let stat = fsx::stat_at(dir, &name)
                .map_err(io::Error::from)
                .with_context(|| format!("cannot stat `{}`", self.shown(rel).display()))?;
            let is_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
            if !self.excludes.matched(&*rel, is_dir).is_ignore() {
                if is_dir {
                    self.watch(rel, &stat);
                    self.push(rel.clone(), EntryKind::Dir, &stat);
                    let sub = fsx::open_dir_beneath(dir, Path::new(&name))
                        .map_err(io::Error::from)
                        .with_context(|| format!("cannot open `{}`", self.shown(rel).display()))?;
                    self.walk(sub.as_fd(), rel)?;
                } else {
                    self.entry(dir, &name, rel.clone(), &stat)?;
                }
            }
            rel.pop();
        }
        Ok(())
    }

    /// Adds a file, symlink or (with a warning) nothing for anything else.
    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &std::ffi::OsStr,
        rel: PathBuf,
        stat: &rustix::fs::Stat,
    ) -> anyhow::Result<()> {
        let shown = self.shown(&rel);
        let kind = match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => {
                let (stat, sha256) = self
                    .file_digest(dir, name, &shown, stat)
                    .with_context(|| format!("cannot read `{}`", shown.display()))?;
                self.watch(&rel, &stat);
                self.push(rel, EntryKind::File { sha256 }, &stat);
                return Ok(());
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(dir, name, Vec::new())
                    .map_err(io::Error::from)
                    .with_context(|| format!("cannot read the link `{}`", shown.display()))?;
                let target = std::ffi::OsStr::from_bytes(target.as_bytes()).to_os_string();
                EntryKind::Symlink { target }
            }
            other => {
                self.inputs.warnings.push(format!(
                    "copy: skipping `{}`: a {} (den copies files, directories and symlinks)",
                    shown.display(),
                    type_name(other)
                ));
                return Ok(());
            }
        };
        self.watch(&rel, stat);
        self.push(rel, kind, stat);
        Ok(())
    }

    /// The file's digest, from the cache when its signature is known;
    /// also the stat it belongs to.
    fn file_digest(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &std::ffi::OsStr,
        shown: &Path,
        stat: &rustix::fs::Stat,
    ) -> anyhow::Result<(rustix::fs::Stat, [u8; 32])> {
        if let Some(sha256) = self.cache.lookup(shown, Signature::of(stat)) {
            return Ok((*stat, sha256));
        }
        // NONBLOCK: a fifo swapped in since the stat must not hang us.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let file = std::fs::File::from(rustix::fs::openat(dir, name, flags, Mode::empty())?);
        let stat = rustix::fs::fstat(&file)?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            bail!("it was replaced while den read the project");
        }
        let sha256 = hash(file)?;
        self.cache.insert(shown, Signature::of(&stat), sha256);
        Ok((stat, sha256))
    }

    fn push(&mut self, path: PathBuf, kind: EntryKind, stat: &rustix::fs::Stat) {
        let perm = match kind {
            EntryKind::Symlink { .. } => 0o777,
            _ => stat.st_mode & 0o1777,
        };
        self.inputs.entries.push(Entry {
            path,
            kind,
            perm,
            mtime: Timestamp::mtime(stat),
        });
    }

    fn watch(&mut self, rel: &Path, stat: &rustix::fs::Stat) {
        let path = self.shown(rel);
        self.inputs
            .watched
            .push(Watched::new(path, Signature::of(stat)));
    }

    /// `rel` (under `from`) relative to the project root.
    fn shown(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.from.clone()
        } else {
            self.from.join(rel)
        }
    }
}

fn path_bytes(entry: &Entry) -> &[u8] {
    entry.path.as_os_str().as_bytes()
}

fn type_name(kind: FileType) -> &'static str {
    match kind {
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "special file",
    }
}

const COPY_BUFFER: usize = 256 << 10;

fn hash(mut file: impl Read) -> io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; COPY_BUFFER];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(hasher.finalize().into()),
            Ok(n) => hasher.update(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// openat2 flags resolving a project path: under the root, no symlinks.
const IN_PROJECT: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

#[cfg(test)]
mod tests;
