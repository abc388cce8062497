//! Directory-fd helpers that never follow symlinks: resolving paths under
//! a root with openat2, and removing trees (including ones whose
//! directories were made read-only) without leaving them.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Stay under the starting directory and follow no symlinks at all.
const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens the directory `rel` (relative, symlink-free, `""` for `root`
/// itself) under `root`.
pub fn open_dir_beneath(root: BorrowedFd<'_>, rel: &Path) -> Result<OwnedFd, Errno> {
    let rel: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    loop {
        match rustix::fs::openat2(root, rel, DIR_FLAGS, Mode::empty(), BENEATH) {
            // EAGAIN: a concurrent rename somewhere on the system; retry.
            Err(Errno::AGAIN | Errno::INTR) => continue,
            other => return other,
        }
    }
}

pub fn open_dir(path: &Path) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(path, DIR_FLAGS, Mode::empty())?)
}

/// Whether `name` in `dir` is an overlay whiteout (char device 0:0).
pub fn is_whiteout(stat: &rustix::fs::Stat) -> bool {
    FileType::from_raw_mode(stat.st_mode) == FileType::CharacterDevice && stat.st_rdev == 0
}

/// For messages: "it is a fifo".
pub fn describe(file_type: FileType) -> &'static str {
    match file_type {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Fifo => "a fifo",
        FileType::Socket => "a socket",
        FileType::Unknown => "a file of unknown type",
    }
}

pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<rustix::fs::Stat, Errno> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

/// Removes whatever `name` is in `dir` (a whole tree for a directory);
/// missing is fine.
pub fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) => remove_tree_at(dir, name),
        Err(err) => Err(err.into()),
    }
}

fn remove_tree_at(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<()> {
    let fd = match rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        // A directory we made unreadable (mode 0); it is ours, and the
        // store is private, so nothing swaps it for a symlink meanwhile.
        Err(Errno::ACCESS) => {
            rustix::fs::chmodat(dir, name, Mode::RWXU, AtFlags::empty())?;
            rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())?
        }
        Err(Errno::NOENT) => return Ok(()),
        Err(err) => return Err(err.into()),
    };
    // Unlinking children needs write permission on the directory.
    rustix::fs::fchmod(&fd, Mode::RWXU)?;
    for child in list_dir(fd.as_fd())? {
        remove_at(fd.as_fd(), &child)?;
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

pub fn list_dir(fd: BorrowedFd<'_>) -> std::io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(fd)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(&name).to_os_string());
        }
    }
    Ok(names)
}

/// Removes a path (tree or file) given by an ordinary path name.
pub fn remove_path(path: &Path) -> std::io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::other(format!(
            "refusing to remove `{}`",
            path.display()
        )));
    };
    let parent = open_dir(parent)?;
    remove_at(parent.as_fd(), name)
}

/// The process's umask as `/proc/self/status` shows it (Linux 4.7+),
/// read without changing it: `umask(2)` can only swap it, which would
/// race with other threads creating files.
pub fn current_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// Same inode?
pub fn same_file(a: &rustix::fs::Stat, b: &File) -> bool {
    rustix::fs::fstat(b).is_ok_and(|s| s.st_dev == a.st_dev && s.st_ino == a.st_ino)
}
