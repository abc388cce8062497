//! Turning a build step's overlay upper dir into a store layer, in place.
//!
//! A step runs on an overlay whose upper dir is `<layer dir>/fs`; once the
//! overlay is gone that dir already is a layer in the store's format
//! (overlayfs whiteouts and `user.overlay.opaque`, see `image::unpack`).
//! Capture makes it canonical and writes its `meta` (see `image::meta`):
//!
//! - a 0:0 character device stays and is a `w` line; an opaque directory
//!   keeps its xattr and gets an `o` line after its `d` line;
//! - every other `user.overlay.*` xattr (origin, impure, uuid…) goes: the
//!   kernel ignores them in a lower layer, and layers must not depend on
//!   the upper they came from;
//! - the owner column comes from `user.den.owner` ("uid:gid", recorded by
//!   the build's chown handler), which stays so a later copy-up keeps it;
//! - setuid/setgid (and, on files, sticky) bits are stripped as unpack
//!   strips them from pulled layers and the original mode goes to `meta`.
//!   It also goes to `user.den.mode`, as in a build the file may be copied
//!   up by a later step, whose capture only sees the stripped inode: the
//!   xattr is trusted while the permission bits still match it (a `chmod`
//!   that changed them since wins). Pulled layers record the mode only in
//!   `meta`, so a pulled setuid file changed by a step loses its bits.
//! - sockets are dropped; other devices and fifos are recorded and removed,
//!   as unpack records them without creating them.
//!
//! Everything is done through directory fds without following symlinks.
//! Files and directories are made owner-readable and -writable for the
//! time of the xattr calls (user xattrs need it, even for the owner).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, XattrFlags};
use rustix::io::Errno;

use crate::image::fsx;
use crate::image::meta::{self, EntryKind, MetaEntry};

/// "uid:gid" of a file whose owner the container could not set.
pub const OWNER_XATTR: &str = "user.den.owner";
/// Octal mode of a file whose setuid/setgid/sticky bits were stripped.
pub const MODE_XATTR: &str = "user.den.mode";
const OVERLAY_XATTRS: &[u8] = b"user.overlay.";
const OPAQUE_XATTR: &[u8] = b"user.overlay.opaque";

/// What a step left in its layer, for the step summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Captured {
    /// Files, directories, symlinks and whiteouts.
    pub entries: u64,
    /// Bytes of regular files.
    pub bytes: u64,
}

/// Turns `layer_dir` (holding the step's upper dir `fs` and the overlay's
/// `work`) into a finished layer: removes `work` and the empty stubs and
/// mount points den made (`den_made`, relative to `fs`), cleans `fs` and
/// writes `meta`.
pub fn capture(layer_dir: &Path, den_made: &[PathBuf]) -> anyhow::Result<Captured> {
    let work = layer_dir.join("work");
    fsx::remove_path(&work).with_context(|| format!("cannot remove `{}`", work.display()))?;
    let fs = layer_dir.join("fs");
    let root = fsx::open_dir(&fs).with_context(|| format!("cannot open `{}`", fs.display()))?;
    remove_den_made(root.as_fd(), den_made)?;

    let meta_path = layer_dir.join("meta");
    let file = File::create(&meta_path)
        .with_context(|| format!("cannot create `{}`", meta_path.display()))?;
    let mut walker = Walker {
        out: BufWriter::new(file),
        captured: Captured::default(),
    };
    meta::write_header(&mut walker.out)?;
    clean_xattrs(root.as_fd(), false).context("the layer root")?;
    walker.dir(root.as_fd(), &mut PathBuf::new())?;
    meta::write_footer(&mut walker.out, 0)?;
    walker
        .out
        .into_inner()
        .map_err(io::IntoInnerError::into_error)
        .with_context(|| format!("cannot write `{}`", meta_path.display()))?;
    Ok(walker.captured)
}

/// Removes each listed path if it is an empty directory or an empty
/// file, deepest first, so a listed parent goes once its children went.
fn remove_den_made(root: BorrowedFd<'_>, den_made: &[PathBuf]) -> anyhow::Result<()> {
    let mut paths = den_made
        .iter()
        .map(|path| relative(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    paths.sort_by_key(|path| std::cmp::Reverse(path.components().count()));
    for path in paths {
        remove_if_empty(root, &path)
            .with_context(|| format!("cannot remove den's `{}`", path.display()))?;
    }
    Ok(())
}

fn relative(path: &Path) -> anyhow::Result<PathBuf> {
    crate::image::clean_path(path)
        .with_context(|| format!("den-made path `{}` leaves the layer", path.display()))
}

fn remove_if_empty(root: BorrowedFd<'_>, rel: &Path) -> anyhow::Result<()> {
    let Some(name) = rel.file_name() else {
        return Ok(());
    };
    let parent = match fsx::open_dir_beneath(root, rel.parent().unwrap_or(Path::new(""))) {
        Ok(parent) => parent,
        // Not there, or not den's any more: nothing to remove.
        Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(()),
        Err(err) => return Err(io::Error::from(err).into()),
    };
    let stat = match fsx::stat_at(parent.as_fd(), name) {
        Ok(stat) => stat,
        Err(Errno::NOENT) => return Ok(()),
        Err(err) => return Err(io::Error::from(err).into()),
    };
    let removed = match FileType::from_raw_mode(stat.st_mode) {
        FileType::Directory => rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR),
        FileType::RegularFile if stat.st_size == 0 => {
            rustix::fs::unlinkat(&parent, name, AtFlags::empty())
        }
        _ => Ok(()),
    };
    match removed {
        // A step put something in it: it is the step's now.
        Ok(()) | Err(Errno::NOTEMPTY | Errno::NOENT) => Ok(()),
        Err(err) => Err(io::Error::from(err).into()),
    }
}

struct Walker {
    out: BufWriter<File>,
    captured: Captured,
}

impl Walker {
    /// Records and cleans the children of `dir` (at `rel`) in name order,
    /// each directory before its contents.
    fn dir(&mut self, dir: BorrowedFd<'_>, rel: &mut PathBuf) -> anyhow::Result<()> {
        let mut names =
            fsx::list_dir(dir).with_context(|| format!("cannot list `{}`", shown(rel)))?;
        names.sort();
        for name in names {
            rel.push(&name);
            let stat = fsx::stat_at(dir, &name)
                .map_err(io::Error::from)
                .with_context(|| format!("cannot stat `{}`", rel.display()))?;
            if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
                self.subdir(dir, &name, rel, &stat)?;
            } else {
                self.leaf(dir, &name, rel, &stat)
                    .with_context(|| cannot_capture(rel))?;
            }
            rel.pop();
        }
        Ok(())
    }

    fn subdir(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        rel: &mut PathBuf,
        stat: &rustix::fs::Stat,
    ) -> anyhow::Result<()> {
        let disk = stat.st_mode & 0o7777;
        // Listing, entering and removing children need all three.
        let opened = open_inode(parent, name, disk, 0o700, OFlags::DIRECTORY)
            .and_then(|fd| Ok((clean_xattrs(fd.as_fd(), true)?, fd)));
        let (attrs, fd) = opened.with_context(|| cannot_capture(rel))?;
        let mode = Modes::new(disk, 0o1777, attrs.kept_mode);
        self.record(EntryKind::Dir, mode.recorded, attrs.owner, rel)?;
        if attrs.opaque {
            self.record(EntryKind::Opaque, mode.recorded, attrs.owner, rel)?;
        }
        self.dir(fd.as_fd(), rel)?;
        mode.apply(fd.as_fd(), disk | 0o700)
            .with_context(|| cannot_capture(rel))
    }

    fn leaf(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        stat: &rustix::fs::Stat,
    ) -> anyhow::Result<()> {
        let disk = stat.st_mode & 0o7777;
        let device = || {
            let rdev = stat.st_rdev;
            (rustix::fs::major(rdev), rustix::fs::minor(rdev))
        };
        let unpackable = match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => return self.file(parent, name, rel, stat),
            FileType::Symlink => return self.record(EntryKind::Symlink, 0o777, ROOT, rel),
            FileType::CharacterDevice if stat.st_rdev == 0 => {
                return self.record(EntryKind::Whiteout, disk, ROOT, rel);
            }
            FileType::CharacterDevice => {
                let (major, minor) = device();
                Some(EntryKind::CharDevice(major, minor))
            }
            FileType::BlockDevice => {
                let (major, minor) = device();
                Some(EntryKind::BlockDevice(major, minor))
            }
            FileType::Fifo => Some(EntryKind::Fifo),
            FileType::Socket => None,
            other => bail!("unexpected file type {other:?}"),
        };
        if let Some(kind) = unpackable {
            self.write(kind, disk, ROOT, rel)?;
        }
        rustix::fs::unlinkat(parent, name, AtFlags::empty())?;
        Ok(())
    }

    fn file(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        stat: &rustix::fs::Stat,
    ) -> anyhow::Result<()> {
        let disk = stat.st_mode & 0o7777;
        let fd = open_inode(parent, name, disk, 0o600, OFlags::empty())?;
        let attrs = clean_xattrs(fd.as_fd(), false)?;
        let mode = Modes::new(disk, 0o777, attrs.kept_mode);
        mode.apply(fd.as_fd(), disk | 0o600)?;
        self.captured.bytes += u64::try_from(stat.st_size).unwrap_or(0);
        self.record(EntryKind::File, mode.recorded, attrs.owner, rel)
    }

    /// A meta line for an entry that stays in the layer.
    fn record(
        &mut self,
        kind: EntryKind,
        mode: u32,
        owner: (u64, u64),
        rel: &Path,
    ) -> anyhow::Result<()> {
        if kind != EntryKind::Opaque {
            self.captured.entries += 1;
        }
        self.write(kind, mode, owner, rel)
    }

    fn write(
        &mut self,
        kind: EntryKind,
        mode: u32,
        (uid, gid): (u64, u64),
        rel: &Path,
    ) -> anyhow::Result<()> {
        let entry = MetaEntry {
            kind,
            mode,
            uid,
            gid,
            path: rel.to_path_buf(),
        };
        meta::write_entry(&mut self.out, &entry).context("cannot write the layer metadata")
    }
}

const ROOT: (u64, u64) = (0, 0);

fn cannot_capture(rel: &Path) -> String {
    format!("cannot capture `{}`", rel.display())
}

fn shown(rel: &Path) -> std::path::Display<'_> {
    if rel.as_os_str().is_empty() {
        Path::new(".").display()
    } else {
        rel.display()
    }
}

/// Opens a file or directory of the layer, first adding the owner bits
/// `needed` to its mode if it lacks any (a `0444` file, a `d---------`).
fn open_inode(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    disk: u32,
    needed: u32,
    flags: OFlags,
) -> anyhow::Result<OwnedFd> {
    if disk & needed != needed {
        // The type was checked without following links, and nothing else
        // writes to a layer being captured, so this changes that inode.
        rustix::fs::chmodat(
            parent,
            name,
            Mode::from_raw_mode(disk | needed),
            AtFlags::empty(),
        )?;
    }
    let flags = flags | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(parent, name, flags, Mode::empty())?)
}

/// An inode's mode: what `meta` records and what stays on disk.
struct Modes {
    recorded: u32,
    on_disk: u32,
}

impl Modes {
    /// `disk` is the mode found; `allowed` the bits a layer may keep on
    /// disk; `kept` the `user.den.mode` of an earlier capture.
    fn new(disk: u32, allowed: u32, kept: Option<u32>) -> Modes {
        let on_disk = disk & allowed;
        let recorded = match kept {
            Some(kept) if on_disk == disk && kept & allowed == disk => kept,
            _ => disk,
        };
        Modes { recorded, on_disk }
    }

    /// Sets the final mode (the inode has `current` now) and records the
    /// stripped bits in `user.den.mode`, or clears a stale record.
    fn apply(&self, fd: BorrowedFd<'_>, current: u32) -> anyhow::Result<()> {
        if self.recorded == self.on_disk {
            match rustix::fs::fremovexattr(fd, MODE_XATTR) {
                Ok(()) | Err(Errno::NODATA) => {}
                Err(err) => {
                    return Err(io::Error::from(err)).context("cannot remove user.den.mode");
                }
            }
        } else {
            let value = format!("{:o}", self.recorded);
            rustix::fs::fsetxattr(fd, MODE_XATTR, value.as_bytes(), XattrFlags::empty())
                .map_err(io::Error::from)
                .context("cannot set user.den.mode")?;
        }
        if current != self.on_disk {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(self.on_disk))?;
        }
        Ok(())
    }
}

/// What an inode's xattrs say, once overlay's bookkeeping is gone.
struct Xattrs {
    opaque: bool,
    owner: (u64, u64),
    kept_mode: Option<u32>,
}

/// Removes every `user.overlay.*` xattr but a directory's opaque mark
/// (`keep_opaque`) and reads den's own.
fn clean_xattrs(fd: BorrowedFd<'_>, keep_opaque: bool) -> anyhow::Result<Xattrs> {
    let mut found = Xattrs {
        opaque: false,
        owner: ROOT,
        kept_mode: None,
    };
    for name in list_xattrs(fd)?
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let name = OsStr::from_bytes(name);
        let bytes = name.as_bytes();
        if keep_opaque && bytes == OPAQUE_XATTR && read_xattr(fd, name)? == b"y" {
            found.opaque = true;
        } else if bytes.starts_with(OVERLAY_XATTRS) {
            match rustix::fs::fremovexattr(fd, name) {
                Ok(()) | Err(Errno::NODATA) => {}
                Err(err) => {
                    return Err(io::Error::from(err))
                        .with_context(|| format!("cannot remove {}", name.display()));
                }
            }
        } else if bytes == OWNER_XATTR.as_bytes() {
            found.owner = parse_owner(&read_xattr(fd, name)?)?;
        } else if bytes == MODE_XATTR.as_bytes() {
            found.kept_mode = parse_mode(&read_xattr(fd, name)?);
        }
    }
    Ok(found)
}

fn list_xattrs(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut names = vec![0; 256];
    loop {
        match rustix::fs::flistxattr(fd, &mut names[..]) {
            Ok(len) => {
                names.truncate(len);
                return Ok(names);
            }
            // More names than room (or added meanwhile): ask the size.
            Err(Errno::RANGE) => {
                let len = rustix::fs::flistxattr_query(fd)?;
                names.resize(len.max(names.len() * 2), 0);
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// A short xattr value (den's and overlay's are a few bytes).
fn read_xattr(fd: BorrowedFd<'_>, name: &OsStr) -> anyhow::Result<Vec<u8>> {
    let mut value = [0; 64];
    let len = rustix::fs::fgetxattr(fd, name, &mut value[..])
        .map_err(io::Error::from)
        .with_context(|| format!("cannot read {}", name.display()))?;
    Ok(value[..len].to_vec())
}

fn parse_owner(value: &[u8]) -> anyhow::Result<(u64, u64)> {
    let text = String::from_utf8_lossy(value);
    let owner = text
        .split_once(':')
        .and_then(|(uid, gid)| Some((uid.parse().ok()?, gid.parse().ok()?)));
    owner.with_context(|| format!("bad {OWNER_XATTR} value `{text}`: expected `<uid>:<gid>`"))
}

/// An unreadable record is ignored: the mode on disk is what is left.
fn parse_mode(value: &[u8]) -> Option<u32> {
    let mode = u32::from_str_radix(std::str::from_utf8(value).ok()?, 8).ok()?;
    (mode <= 0o7777).then_some(mode)
}

#[cfg(test)]
mod tests;
