//! Fake ownership for build steps: root inside a single-id user namespace
//! (docs/design/builds.md §2).
//!
//! A build step runs as container root, and that is the only id mapped:
//! a chown to any other id, or a switch to another user, fails in the
//! kernel. Package managers do both. A seccomp filter fakes them:
//! - `setgroups`, and the set*id calls that name an id other than 0 or
//!   -1, return 0 and do nothing; mapped ids still reach the kernel;
//! - `chown`, `fchown`, `lchown` and `fchownat` go to init as
//!   notifications. Init records the requested owner as "uid:gid" in the
//!   file's `user.den.owner` xattr, where build capture finds it. A chown
//!   back to 0:0 removes the record and lets the kernel run the call.
//!
//! Init installs the filter on itself right before forking the command,
//! which inherits it. Init holds CAP_SYS_ADMIN in its user namespace, so
//! it needs no no_new_privs for that, and it owns the listener without a
//! socket hand-over from the command. The price: from then on init must
//! never call chown or set*id (it would wait on its own notification);
//! answering a notification takes only open, read, stat, xattr and ioctl.
//!
//! The BPF program is assembled here (under 40 instructions) rather than
//! with seccompiler: one program returns both actions, and there is no
//! library output to patch (seccompiler has no USER_NOTIF action and
//! kills the process on a foreign architecture instead of allowing it).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use anyhow::{Context, Result};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags, XattrFlags};
use rustix::io::Errno;

use super::bpf::{
    Instruction, NATIVE_ARCH, jump_if_equal, load_arch, load_arg_low, load_nr, ret, ret_errno,
};
use crate::sys::seccomp::{self as sys, Answer, receive, send, still_waiting};

/// The xattr holding a file's faked owner, "uid:gid" in decimal.
pub const OWNER_XATTR: &str = "user.den.owner";

/// A set*id argument that leaves the id unchanged.
const UNCHANGED: u32 = u32::MAX;
const ROOT: Owner = Owner { uid: 0, gid: 0 };
const PATH_MAX: usize = libc::PATH_MAX as usize;

/// The chown syscalls of the architecture den runs on.
#[cfg(target_arch = "x86_64")]
const CHOWN_CALLS: &[libc::c_long] = &[
    libc::SYS_chown,
    libc::SYS_lchown,
    libc::SYS_fchown,
    libc::SYS_fchownat,
];
#[cfg(not(target_arch = "x86_64"))]
const CHOWN_CALLS: &[libc::c_long] = &[libc::SYS_fchown, libc::SYS_fchownat];

/// The set*id calls and how many id arguments each takes.
const SET_ID_CALLS: [(libc::c_long, usize); 6] = [
    (libc::SYS_setuid, 1),
    (libc::SYS_setgid, 1),
    (libc::SYS_setreuid, 2),
    (libc::SYS_setregid, 2),
    (libc::SYS_setresuid, 3),
    (libc::SYS_setresgid, 3),
];

/// The listener of the filter: init answers the command's chowns with it.
pub(in crate::userns) struct FakeOwnership {
    listener: OwnedFd,
}

impl FakeOwnership {
    /// Installs the filter on the calling (single-threaded) process; the
    /// children it forks from now on inherit it. The caller must hold
    /// CAP_SYS_ADMIN in its user namespace and must not call chown or
    /// set*id afterwards.
    pub(in crate::userns) fn install() -> Result<FakeOwnership> {
        let arch = NATIVE_ARCH.context("build steps run on x86_64 and aarch64 only")?;
        let listener = sys::set_filter(&filter(arch), true).map_err(|err| {
            let hint = match err.raw_os_error() {
                // Only one listener per chain of filters.
                Some(libc::EBUSY) => " (den cannot build inside another den build step)",
                Some(libc::EINVAL) => " (build steps need Linux 5.9 or later)",
                _ => "",
            };
            anyhow::Error::new(err).context(format!(
                "installing the seccomp filter that lets build steps chown{hint}"
            ))
        })?;
        let listener = listener.context("the kernel gave no seccomp listener")?;
        Ok(FakeOwnership { listener })
    }

    /// Answers one pending chown; call when the listener is readable.
    /// Failures about the file are the syscall's result; an error here
    /// means the listener itself failed.
    pub(in crate::userns) fn handle_one(&self) -> io::Result<()> {
        let listener = self.listener.as_fd();
        let Some(notification) = receive(listener)? else {
            return Ok(());
        };
        match answer(listener, &notification) {
            Some(answer) => send(listener, notification.id, answer),
            None => Ok(()),
        }
    }
}

impl AsFd for FakeOwnership {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

// ---- the BPF program ----

fn filter(arch: u32) -> Vec<Instruction> {
    let mut program = vec![
        load_arch(),
        // A foreign-architecture process (i386 on x86_64) just misses the
        // fakes; the command's own profile decides whether it runs at all.
        jump_if_equal(arch, 1, 0),
        ret(libc::SECCOMP_RET_ALLOW),
        load_nr(),
    ];
    for &call in CHOWN_CALLS {
        program.push(jump_if_equal(call as u32, 0, 1));
        program.push(ret(libc::SECCOMP_RET_USER_NOTIF));
    }
    program.push(jump_if_equal(libc::SYS_setgroups as u32, 0, 1));
    program.push(ret_errno(0));
    for (call, id_args) in SET_ID_CALLS {
        program.extend(set_id_check(call, id_args));
    }
    program.push(ret(libc::SECCOMP_RET_ALLOW));
    program
}

/// For one set*id call: return 0 if any id argument is neither 0 nor -1,
/// else let the kernel run it. Falls through for other syscalls.
fn set_id_check(call: libc::c_long, id_args: usize) -> Vec<Instruction> {
    let per_arg = 4;
    let mut block = vec![jump_if_equal(call as u32, 0, (per_arg * id_args + 1) as u8)];
    for arg in 0..id_args {
        block.push(load_arg_low(arg));
        block.push(jump_if_equal(0, 2, 0));
        block.push(jump_if_equal(UNCHANGED, 1, 0));
        block.push(ret_errno(0)); // success without effect
    }
    block.push(ret(libc::SECCOMP_RET_ALLOW));
    block
}

// ---- the notification protocol ----

// ---- faking one chown ----

/// A chown call as the caller made it.
#[derive(Debug, Clone, Copy)]
struct Request {
    target: Target,
    uid: u32,
    gid: u32,
}

#[derive(Debug, Clone, Copy)]
enum Target {
    /// `fchown(fd, …)`.
    Fd(libc::c_int),
    /// A path in the caller's memory, resolved as `fchownat` does.
    Path {
        dirfd: libc::c_int,
        address: u64,
        flags: libc::c_int,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    uid: u32,
    gid: u32,
}

/// The answer to one notification; None when its caller stopped waiting.
fn answer(listener: BorrowedFd<'_>, notification: &libc::seccomp_notif) -> Option<Answer> {
    let Some(request) = decode(&notification.data) else {
        return Some(Answer::Continue);
    };
    let target = open_target(notification.pid, request.target);
    if !still_waiting(listener, notification.id) {
        return None;
    }
    Some(match target {
        Ok(file) => set_owner(&file, request.uid, request.gid),
        Err(errno) => Answer::Fail(errno),
    })
}

fn decode(data: &libc::seccomp_data) -> Option<Request> {
    let args = data.args;
    let path = |dirfd, address, flags| Target::Path {
        dirfd,
        address,
        flags,
    };
    let (target, uid, gid) = match libc::c_long::from(data.nr) {
        libc::SYS_fchown => (Target::Fd(args[0] as libc::c_int), args[1], args[2]),
        libc::SYS_fchownat => (
            path(args[0] as libc::c_int, args[1], args[4] as libc::c_int),
            args[2],
            args[3],
        ),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_chown => (path(libc::AT_FDCWD, args[0], 0), args[1], args[2]),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_lchown => (
            path(libc::AT_FDCWD, args[0], libc::AT_SYMLINK_NOFOLLOW),
            args[1],
            args[2],
        ),
        _ => return None,
    };
    Some(Request {
        target,
        uid: uid as u32,
        gid: gid as u32,
    })
}

/// Records the new owner (or forgets it for root) and says how the
/// call ends. Only regular files and directories can hold user xattrs:
/// the owner of anything else (symlinks, fifos, devices) is dropped.
fn set_owner(file: &OwnedFd, uid: u32, gid: u32) -> Answer {
    let kind = match rustix::fs::fstat(file) {
        Ok(stat) => FileType::from_raw_mode(stat.st_mode),
        Err(errno) => return Answer::Fail(errno),
    };
    let holds_xattrs = matches!(kind, FileType::RegularFile | FileType::Directory);
    // A path that reaches the file itself, as an O_PATH fd allows no
    // f*xattr calls.
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let current = holds_xattrs
        .then(|| recorded_owner(&path))
        .flatten()
        .unwrap_or(ROOT);
    let owner = Owner {
        uid: if uid == UNCHANGED { current.uid } else { uid },
        gid: if gid == UNCHANGED { current.gid } else { gid },
    };
    let result = match (owner == ROOT, holds_xattrs) {
        (true, true) => forget_owner(&path).map(|()| Answer::Continue),
        (true, false) => Ok(Answer::Continue),
        (false, true) => record_owner(&path, owner).map(|()| Answer::Success),
        (false, false) => Ok(Answer::Success),
    };
    result.unwrap_or_else(Answer::Fail)
}

fn recorded_owner(path: &str) -> Option<Owner> {
    let mut value = [0u8; 32];
    let len = rustix::fs::getxattr(path, OWNER_XATTR, &mut value[..]).ok()?;
    let (uid, gid) = std::str::from_utf8(&value[..len]).ok()?.split_once(':')?;
    Some(Owner {
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
    })
}

fn record_owner(path: &str, owner: Owner) -> Result<(), Errno> {
    let value = format!("{}:{}", owner.uid, owner.gid);
    rustix::fs::setxattr(path, OWNER_XATTR, value.as_bytes(), XattrFlags::empty())
}

fn forget_owner(path: &str) -> Result<(), Errno> {
    match rustix::fs::removexattr(path, OWNER_XATTR) {
        Err(Errno::NODATA) => Ok(()),
        result => result,
    }
}

// ---- finding the caller's file ----

/// An O_PATH descriptor of the file the caller named, or the errno its
/// own lookup would have met.
fn open_target(pid: u32, target: Target) -> Result<OwnedFd, Errno> {
    // The kernel reports 0 for a caller outside init's pid namespace.
    if pid == 0 {
        return Err(Errno::PERM);
    }
    let (dirfd, address, flags) = match target {
        Target::Fd(fd) => return open_callers_fd(pid, fd),
        Target::Path {
            dirfd,
            address,
            flags,
        } => (dirfd, address, flags),
    };
    let path = read_callers_path(pid, address)?;
    let mut oflags = OFlags::PATH | OFlags::CLOEXEC;
    if flags & libc::AT_SYMLINK_NOFOLLOW != 0 {
        oflags |= OFlags::NOFOLLOW;
    }
    match path.as_bytes().first() {
        None if flags & libc::AT_EMPTY_PATH != 0 => open_callers_dir(pid, dirfd),
        None => Err(Errno::NOENT),
        Some(b'/') => open_in_callers_root(pid, &path, oflags),
        Some(_) => rustix::fs::openat(open_callers_dir(pid, dirfd)?, &path, oflags, Mode::empty()),
    }
}

/// An absolute path, resolved in the caller's root (it may have chrooted).
/// Paths through /proc's magic links (/proc/self/fd/N) fail with ELOOP:
/// they would name init's files, not the caller's.
fn open_in_callers_root(pid: u32, path: &CString, oflags: OFlags) -> Result<OwnedFd, Errno> {
    let root = rustix::fs::open(
        format!("/proc/{pid}/root"),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    loop {
        // EAGAIN: a rename raced with the lookup; the kernel asks to retry.
        match rustix::fs::openat2(&root, path, oflags, Mode::empty(), ResolveFlags::IN_ROOT) {
            Err(Errno::AGAIN) => continue,
            result => return result,
        }
    }
}

/// The caller's `dirfd` argument: its working directory or an open fd.
fn open_callers_dir(pid: u32, dirfd: libc::c_int) -> Result<OwnedFd, Errno> {
    if dirfd == libc::AT_FDCWD {
        rustix::fs::open(
            format!("/proc/{pid}/cwd"),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
        )
    } else {
        open_callers_fd(pid, dirfd)
    }
}

fn open_callers_fd(pid: u32, fd: libc::c_int) -> Result<OwnedFd, Errno> {
    if fd < 0 {
        return Err(Errno::BADF);
    }
    let path = format!("/proc/{pid}/fd/{fd}");
    match rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()) {
        // No such entry: the caller has no such descriptor.
        Err(Errno::NOENT) => Err(Errno::BADF),
        result => result,
    }
}

/// Reads a NUL-terminated path from the caller's memory, page by page so
/// that a string near the end of a mapping is still read.
fn read_callers_path(pid: u32, address: u64) -> Result<CString, Errno> {
    const CHUNK: u64 = 4096; // never crosses a page boundary when aligned
    let memory = rustix::fs::open(
        format!("/proc/{pid}/mem"),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut path = Vec::new();
    let mut chunk = [0u8; CHUNK as usize];
    let mut at = address;
    while path.len() < PATH_MAX {
        let wanted = ((CHUNK - at % CHUNK) as usize).min(PATH_MAX - path.len());
        let read = match rustix::io::pread(&memory, &mut chunk[..wanted], at) {
            Ok(0) | Err(_) => return Err(Errno::FAULT),
            Ok(read) => read,
        };
        if let Some(end) = chunk[..read].iter().position(|&byte| byte == 0) {
            path.extend_from_slice(&chunk[..end]);
            return CString::new(path).map_err(|_| Errno::INVAL);
        }
        path.extend_from_slice(&chunk[..read]);
        at += read as u64;
    }
    Err(Errno::NAMETOOLONG)
}

#[cfg(test)]
mod tests;
