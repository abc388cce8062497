//! Unpacking one layer tar into an empty directory, rootless and safely.
//!
//! Every path is resolved under the layer root with openat2
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`) and
//! every change is an *at() call relative to the parent directory's fd,
//! so no entry can write outside the layer: `..` components, symlinks in a
//! parent path and hard links to anything not already in this layer make
//! the whole layer fail. Symlink targets are stored as they are and never
//! followed here.
//!
//! OCI whiteouts become overlayfs whiteouts as the runtime mounts layers
//! with `userxattr`: `.wh.<name>` → a 0:0 character device `<name>`,
//! `.wh..wh..opq` → xattr `user.overlay.opaque=y` on the directory.
//!
//! Directories are created 0700 and get their real mode and mtime at the
//! end, deepest first, so read-only directories can still be filled and
//! their mtimes survive. Files lose setuid/setgid bits; the original mode
//! and owner of every entry go to the metadata file (see `meta`).
//!
//! Parents missing from the tar are made 0755 and recorded as implicit
//! directories; whether lower layers of an image have a symlink there is
//! checked once the image's layers are all in (see `implicit`).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use tar::EntryType;

use super::fsx;
use super::meta::{self, EntryKind, MetaEntry};

const OPAQUE_XATTR: &str = "user.overlay.opaque";
const COPY_BUFFER: usize = 256 << 10;

/// Unpacks the tar stream `tar` into the empty directory `root`, writing
/// the metadata file to `meta`. Returns the stream, positioned after the
/// end-of-archive marker, so the caller can hash what is left.
pub fn unpack<R: Read>(tar: R, root: &Path, meta: &mut dyn Write) -> anyhow::Result<R> {
    let root = fsx::open_dir(root).with_context(|| format!("cannot open `{}`", root.display()))?;
    meta::write_header(meta)?;
    let mut unpacker = Unpacker {
        root,
        parent: None,
        dirs: HashMap::new(),
        meta,
        implicit_dirs: 0,
        buf: vec![0; COPY_BUFFER],
    };
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().context("cannot read the layer tar")? {
        let mut entry = entry.context("the layer tar is corrupt")?;
        let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        unpacker
            .entry(&mut entry)
            .with_context(|| format!("entry `{shown}`"))?;
    }
    unpacker.finish_dirs()?;
    meta::write_footer(unpacker.meta, unpacker.implicit_dirs)
        .context("cannot write the layer metadata")?;
    Ok(archive.into_inner())
}

struct Unpacker<'m> {
    root: OwnedFd,
    /// The parent directory of the previous entry; consecutive entries
    /// usually share one. An entry only changes its parent's children,
    /// never the parent itself, so this never goes stale.
    parent: Option<(PathBuf, OwnedFd)>,
    /// Final mode and mtime per directory, applied at the end.
    dirs: HashMap<PathBuf, Attrs>,
    meta: &'m mut dyn Write,
    /// How many parents missing from the tar were made (the meta footer).
    implicit_dirs: u64,
    buf: Vec<u8>,
}

#[derive(Clone, Copy)]
struct Attrs {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: Timespec,
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> anyhow::Result<()> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let rel = clean_path(&entry.path()?)?;
        let attrs = attrs(entry)?;
        let Some(name) = rel.file_name().map(OsStr::to_os_string) else {
            if !kind.is_dir() {
                bail!("only a directory can stand for the layer root");
            }
            self.dirs.insert(PathBuf::new(), attrs);
            return self.record(EntryKind::Dir, attrs, Path::new("."));
        };
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let parent = self.parent(&parent_rel)?;
        let placed = self.place(parent.as_fd(), &parent_rel, &name, &rel, attrs, entry);
        self.parent = Some((parent_rel, parent));
        placed
    }

    fn place<R: Read>(
        &mut self,
        parent: BorrowedFd<'_>,
        parent_rel: &Path,
        name: &OsStr,
        rel: &Path,
        attrs: Attrs,
        entry: &mut tar::Entry<R>,
    ) -> anyhow::Result<()> {
        if let Some(hidden) = name.as_bytes().strip_prefix(b".wh.") {
            return self.whiteout(parent, parent_rel, OsStr::from_bytes(hidden), attrs);
        }
        let mut entry_type = entry.header().entry_type();
        // Old tars mark directories only by a trailing slash.
        if entry_type == EntryType::Regular && entry.path_bytes().ends_with(b"/") {
            entry_type = EntryType::Directory;
        }
        let kind = match entry_type {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(parent, name, entry, attrs)?;
                EntryKind::File
            }
            EntryType::Directory => {
                self.dir(parent, name, rel, attrs)?;
                EntryKind::Dir
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .context("symlink without a target")?;
                symlink(parent, name, OsStr::from_bytes(&target), attrs.mtime)?;
                EntryKind::Symlink
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .context("hard link without a target")?;
                self.hard_link(parent, name, rel, Path::new(OsStr::from_bytes(&target)))?;
                EntryKind::HardLink
            }
            // Device nodes cannot be made rootless; the runtime provides /dev.
            EntryType::Char => {
                let (major, minor) = device(entry.header());
                EntryKind::CharDevice(major, minor)
            }
            EntryType::Block => {
                let (major, minor) = device(entry.header());
                EntryKind::BlockDevice(major, minor)
            }
            EntryType::Fifo => EntryKind::Fifo,
            other => bail!("unsupported tar entry type {:?}", other.as_byte() as char),
        };
        self.record(kind, attrs, rel)
    }

    fn record(&mut self, kind: EntryKind, attrs: Attrs, rel: &Path) -> anyhow::Result<()> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let entry = MetaEntry {
            kind,
            mode: attrs.mode,
            uid: attrs.uid,
            gid: attrs.gid,
            path: rel.to_path_buf(),
        };
        meta::write_entry(self.meta, &entry).context("cannot write the layer metadata")
    }

    /// Opens the parent directory of an entry, creating missing ones 0755.
    fn parent(&mut self, rel: &Path) -> anyhow::Result<OwnedFd> {
        if let Some((cached, fd)) = self.parent.take()
            && cached == rel
        {
            return Ok(fd);
        }
        match fsx::open_dir_beneath(self.root.as_fd(), rel) {
            Ok(fd) => Ok(fd),
            Err(Errno::NOENT) => self.make_parents(rel),
            Err(err) => Err(explain(self.root.as_fd(), err, rel)),
        }
    }

    fn make_parents(&mut self, rel: &Path) -> anyhow::Result<OwnedFd> {
        let mut dir =
            fsx::open_dir_beneath(self.root.as_fd(), Path::new("")).map_err(io::Error::from)?;
        let mut so_far = PathBuf::new();
        for component in rel.components() {
            let name = component.as_os_str();
            so_far.push(name);
            match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)) {
                Ok(()) => {
                    let attrs = Attrs {
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                        mtime: Timespec {
                            tv_sec: 0,
                            tv_nsec: 0,
                        },
                    };
                    self.record(EntryKind::ImplicitDir, attrs, &so_far)?;
                    self.implicit_dirs += 1;
                }
                Err(Errno::EXIST) => {}
                Err(err) => return Err(explain(self.root.as_fd(), err, &so_far)),
            }
            dir = fsx::open_dir_beneath(dir.as_fd(), Path::new(name))
                .map_err(|err| explain(self.root.as_fd(), err, &so_far))?;
        }
        Ok(dir)
    }

    fn file(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        data: &mut impl Read,
        attrs: Attrs,
    ) -> anyhow::Result<()> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let create = || rustix::fs::openat(parent, name, flags, Mode::RUSR | Mode::WUSR);
        let fd = match create() {
            Err(Errno::EXIST) => {
                fsx::remove_at(parent, name)?;
                create()?
            }
            other => other?,
        };
        let mut file = File::from(fd);
        copy(data, &mut file, &mut self.buf)?;
        // No setuid/setgid on the host: the store may be readable by others.
        rustix::fs::fchmod(&file, Mode::from_raw_mode(attrs.mode & 0o777))?;
        rustix::fs::futimens(&file, &times(attrs.mtime))?;
        Ok(())
    }

    fn dir(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        attrs: Attrs,
    ) -> anyhow::Result<()> {
        match rustix::fs::mkdirat(parent, name, Mode::RWXU) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let existing = fsx::stat_at(parent, name)?;
                if FileType::from_raw_mode(existing.st_mode) != FileType::Directory {
                    fsx::remove_at(parent, name)?;
                    rustix::fs::mkdirat(parent, name, Mode::RWXU)?;
                    // A directory replacing a whiteout of this layer must
                    // still hide the lower layers' directory.
                    if fsx::is_whiteout(&existing) {
                        set_opaque(fsx::open_dir_beneath(parent, Path::new(name))?.as_fd())?;
                        self.record(EntryKind::Opaque, attrs, rel)?;
                    }
                }
            }
            Err(err) => return Err(io::Error::from(err).into()),
        }
        self.dirs.insert(rel.to_path_buf(), attrs);
        Ok(())
    }

    fn hard_link(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        target: &Path,
    ) -> anyhow::Result<()> {
        let target = clean_path(target).context("bad hard link target")?;
        let not_here = || {
            anyhow!(
                "hard link target `{}` is not in this layer",
                target.display()
            )
        };
        let Some(target_name) = target.file_name() else {
            bail!("hard link to the layer root");
        };
        let target_parent = target.parent().unwrap_or(Path::new(""));
        let dir = match fsx::open_dir_beneath(self.root.as_fd(), target_parent) {
            Ok(dir) => dir,
            Err(Errno::NOENT) => return Err(not_here()),
            Err(err) => {
                let why = explain(self.root.as_fd(), err, target_parent);
                return Err(why.context(format!("bad hard link target `{}`", target.display())));
            }
        };
        let found = match fsx::stat_at(dir.as_fd(), target_name) {
            Ok(stat) => stat,
            Err(Errno::NOENT) => return Err(not_here()),
            Err(err) => return Err(io::Error::from(err).into()),
        };
        let file_type = FileType::from_raw_mode(found.st_mode);
        if file_type == FileType::Directory || fsx::is_whiteout(&found) {
            return Err(not_here().context("hard links must point at files"));
        }
        if target == rel {
            return Ok(());
        }
        let link = || rustix::fs::linkat(&dir, target_name, parent, name, AtFlags::empty());
        match link() {
            Err(Errno::EXIST) => {
                fsx::remove_at(parent, name)?;
                link()?;
            }
            other => other?,
        }
        Ok(())
    }

    fn whiteout(
        &mut self,
        parent: BorrowedFd<'_>,
        parent_rel: &Path,
        hidden: &OsStr,
        attrs: Attrs,
    ) -> anyhow::Result<()> {
        if hidden == ".wh..opq" {
            set_opaque(parent)?;
            return self.record(EntryKind::Opaque, attrs, parent_rel);
        }
        if hidden.as_bytes().starts_with(b".wh.") {
            return Ok(()); // AUFS bookkeeping such as .wh..wh.plnk
        }
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            bail!("malformed whiteout");
        }
        // A whiteout only hides lower layers: an entry this layer already
        // has stays, and a directory of this layer hides the lower one's
        // contents.
        match fsx::stat_at(parent, hidden) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                set_opaque(fsx::open_dir_beneath(parent, Path::new(hidden))?.as_fd())?;
            }
            Ok(_) => {}
            Err(Errno::NOENT) => make_whiteout(parent, hidden)?,
            Err(err) => return Err(io::Error::from(err).into()),
        }
        self.record(EntryKind::Whiteout, attrs, &parent_rel.join(hidden))
    }

    /// Applies directory modes and mtimes, deepest first: a parent made
    /// read-only must not block its children, and fixing a child must not
    /// come after its parent's mtime was set.
    fn finish_dirs(&mut self) -> anyhow::Result<()> {
        self.parent = None;
        let mut dirs: Vec<(PathBuf, Attrs)> = std::mem::take(&mut self.dirs).into_iter().collect();
        dirs.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.components().count()));
        for (rel, attrs) in dirs {
            let dir = match fsx::open_dir_beneath(self.root.as_fd(), &rel) {
                Ok(dir) => dir,
                // A later entry replaced it.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(err) => return Err(explain(self.root.as_fd(), err, &rel)),
            };
            // Sticky stays (/tmp), setuid/setgid go (see `file`).
            rustix::fs::fchmod(&dir, Mode::from_raw_mode(attrs.mode & 0o1777))?;
            rustix::fs::futimens(&dir, &times(attrs.mtime))
                .with_context(|| format!("cannot set the mtime of `{}`", rel.display()))?;
        }
        Ok(())
    }
}

fn symlink(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    target: &OsStr,
    mtime: Timespec,
) -> anyhow::Result<()> {
    let create = || rustix::fs::symlinkat(target, parent, name);
    match create() {
        Err(Errno::EXIST) => {
            fsx::remove_at(parent, name)?;
            create()?;
        }
        other => other?,
    }
    rustix::fs::utimensat(parent, name, &times(mtime), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

fn make_whiteout(parent: BorrowedFd<'_>, name: &OsStr) -> anyhow::Result<()> {
    rustix::fs::mknodat(parent, name, FileType::CharacterDevice, Mode::empty(), 0).map_err(|err| {
        anyhow!(io::Error::from(err)).context(
            "cannot create an overlay whiteout (a 0:0 character device); \
             unprivileged users can since Linux 5.8",
        )
    })
}

fn set_opaque(dir: BorrowedFd<'_>) -> anyhow::Result<()> {
    rustix::fs::fsetxattr(dir, OPAQUE_XATTR, b"y", XattrFlags::empty()).map_err(|err| {
        anyhow!(io::Error::from(err)).context(format!(
            "cannot set {OPAQUE_XATTR} on a directory; the store's filesystem must support \
             user xattrs (ext4, xfs, btrfs, tmpfs): set DEN_DATA_DIR to a directory on one"
        ))
    })
}

/// The relative path an entry names: `/` and `.` components dropped as
/// tar tools do, `..` refused outright.
fn clean_path(path: &Path) -> anyhow::Result<PathBuf> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                bail!("its path contains `..`; refusing to write outside the layer")
            }
        }
    }
    Ok(clean)
}

/// Turns an openat2 failure on `rel` into a message naming the culprit.
fn explain(root: BorrowedFd<'_>, err: Errno, rel: &Path) -> anyhow::Error {
    if matches!(err, Errno::LOOP | Errno::NOTDIR) {
        // Earlier components are checked to be directories first, so this
        // walk follows no symlink either.
        let mut prefix = PathBuf::new();
        for component in rel.components() {
            prefix.push(component);
            let Ok(stat) = fsx::stat_at(root, prefix.as_os_str()) else {
                break;
            };
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => {}
                FileType::Symlink => {
                    return anyhow!(
                        "its path goes through the symlink `{}`; links are never followed while unpacking",
                        prefix.display()
                    );
                }
                _ => return anyhow!("`{}` is not a directory", prefix.display()),
            }
        }
    }
    match err {
        Errno::LOOP => {
            anyhow!("its path goes through a symlink; links are never followed while unpacking")
        }
        Errno::XDEV => anyhow!("its path leaves the layer"),
        other => {
            anyhow!(io::Error::from(other)).context(format!("cannot open `{}`", rel.display()))
        }
    }
}

fn attrs<R: Read>(entry: &mut tar::Entry<R>) -> anyhow::Result<Attrs> {
    let header = entry.header();
    let (mode, uid, gid) = (header.mode()? & 0o7777, header.uid()?, header.gid()?);
    let seconds = i64::try_from(header.mtime()?).unwrap_or(i64::MAX);
    let mtime = pax_mtime(entry)?.unwrap_or(Timespec {
        tv_sec: seconds,
        tv_nsec: 0,
    });
    Ok(Attrs {
        mode,
        uid,
        gid,
        mtime,
    })
}

/// PAX `mtime` ("1700000000.123456789") carries sub-second precision.
fn pax_mtime<R: Read>(entry: &mut tar::Entry<R>) -> anyhow::Result<Option<Timespec>> {
    let Some(extensions) = entry.pax_extensions()? else {
        return Ok(None);
    };
    for extension in extensions {
        let extension = extension?;
        if extension.key() == Ok("mtime") {
            return Ok(extension.value().ok().and_then(parse_pax_time));
        }
    }
    Ok(None)
}

fn parse_pax_time(text: &str) -> Option<Timespec> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let tv_sec: i64 = whole.parse().ok()?;
    let digits: String = fraction
        .chars()
        .chain(std::iter::repeat('0'))
        .take(9)
        .collect();
    let nanos: i64 = digits.parse().ok()?;
    let tv_nsec = if text.starts_with('-') { -nanos } else { nanos };
    // Normalise negative fractions (before 1970) to a positive nsec.
    Some(if tv_nsec < 0 {
        Timespec {
            tv_sec: tv_sec - 1,
            tv_nsec: tv_nsec + 1_000_000_000,
        }
    } else {
        Timespec { tv_sec, tv_nsec }
    })
}

/// Device numbers, only recorded: a malformed field reads as 0.
fn device(header: &tar::Header) -> (u32, u32) {
    let number = |n: io::Result<Option<u32>>| n.ok().flatten().unwrap_or(0);
    (number(header.device_major()), number(header.device_minor()))
}

fn times(mtime: Timespec) -> Timestamps {
    Timestamps {
        last_access: mtime,
        last_modification: mtime,
    }
}

fn copy(from: &mut impl Read, to: &mut File, buf: &mut [u8]) -> io::Result<()> {
    loop {
        match from.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => to.write_all(&buf[..n])?,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}
