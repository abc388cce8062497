//! The few syscalls rustix does not wrap (clone with namespace flags,
//! mount_setattr, close_range, keyctl, signal masks and signalfd), behind
//! small safe functions.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Which side of a fork we are on.
pub enum Forked {
    Parent(libc::pid_t),
    Child,
}

/// `clone(2)` used like `fork(2)` but into new namespaces: the child runs
/// on a copy of the caller's stack and returns `Forked::Child`.
///
/// The caller must be single-threaded: the kernel refuses `CLONE_NEWUSER`
/// otherwise, and a forked copy of a multi-threaded process may hold
/// locks no thread will ever release.
pub fn clone_into_namespaces(flags: libc::c_int) -> io::Result<Forked> {
    let flags = (flags | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: a null stack makes clone behave like fork; no pointers are passed.
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    forked(ret as libc::pid_t)
}

/// Plain `fork(2)`; same single-threaded rule as above.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: den is single-threaded whenever it forks.
    forked(unsafe { libc::fork() })
}

fn forked(ret: libc::pid_t) -> io::Result<Forked> {
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// Makes a detached mount tree (from `open_tree`) read-only, submounts
/// included. A plain remount would only touch the top mount.
pub fn make_tree_read_only(tree: impl AsFd) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `attr` outlives the call and its size is passed with it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_fd().as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Closes every descriptor of the process but `keep` (in any order).
pub fn close_all_except(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd >= 0).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first = 0;
    for fd in keep {
        if fd > first {
            close_range(first, fd - 1, 0)?;
        }
        first = fd + 1;
    }
    close_range(first, RawFd::MAX, 0)
}

/// Closes one descriptor that no Rust object owns in this process (one
/// den's memory copy names but init never uses).
pub fn close_fd(fd: RawFd) -> io::Result<()> {
    close_range(fd, fd, 0)
}

/// Marks every descriptor from `first` on close-on-exec.
pub fn close_on_exec_from(first: RawFd) -> io::Result<()> {
    close_range(first, RawFd::MAX, libc::CLOSE_RANGE_CLOEXEC)
}

fn close_range(first: RawFd, last: RawFd, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: close_range takes plain numbers; closing descriptors that
    // Rust objects still own is the caller's business (init and the
    // command close only what den's memory copy holds but never uses).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            last as libc::c_uint,
            flags,
        )
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Clears close-on-exec on `fd`, so the next exec passes it on.
pub fn keep_across_exec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD with 0 only changes the descriptor's flags.
    match unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } {
        -1 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

/// Whether `fd` is an open descriptor.
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// A new, empty session keyring for the process and its children, so
/// that no key of the user's login session is reachable. A kernel
/// without keyrings, or a seccomp filter above den that already refuses
/// them (EPERM), leaves nothing to hide.
pub fn join_new_session_keyring() -> io::Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: a null name asks for a new anonymous keyring.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    let err = io::Error::last_os_error();
    match (ret, err.raw_os_error()) {
        (-1, Some(libc::ENOSYS | libc::EPERM)) => Ok(()),
        (-1, _) => Err(err),
        _ => Ok(()),
    }
}

/// Overwrites the environment den was started with: its strings sit in
/// the process's memory, where `/proc/<pid>/environ` reads them.
pub fn wipe_environment() -> io::Result<()> {
    let (start, end) = environment_strings()?;
    // SAFETY: after clearenv, libc holds no pointer into the strings, and
    // Rust's std reads the environment only through libc; the range is
    // where the kernel put them on the initial stack, which is mapped and
    // writable.
    unsafe {
        libc::clearenv();
        std::ptr::write_bytes(start as *mut u8, 0, end - start);
    }
    Ok(())
}

unsafe extern "C" {
    static environ: *const *const libc::c_char;
}

/// The address range of the environment strings. den never sets a
/// variable, so `environ` still lists the kernel's strings, which lie
/// end to end; that is checked, and `/proc/self/stat` (a slower read)
/// tells otherwise.
fn environment_strings() -> io::Result<(usize, usize)> {
    let mut range: Option<(usize, usize)> = None;
    // SAFETY: `environ` is the NUL-terminated array libc keeps; nothing
    // changes it while den is single-threaded.
    let mut entry = unsafe { environ };
    while !entry.is_null() {
        // SAFETY: as above; each entry is a NUL-terminated string.
        let string = unsafe { *entry };
        if string.is_null() {
            return Ok(range.unwrap_or((0, 0)));
        }
        // SAFETY: a NUL-terminated string of libc's.
        let len = unsafe { libc::strlen(string) } + 1;
        let (at, next) = (string as usize, string as usize + len);
        range = match range {
            None => Some((at, next)),
            Some((start, end)) if at == end => Some((start, next)),
            Some(_) => return environment_strings_from_proc(),
        };
        // SAFETY: the array is NUL-terminated, checked above.
        entry = unsafe { entry.add(1) };
    }
    Ok((0, 0))
}

fn environment_strings_from_proc() -> io::Result<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which may hold spaces; env_start
    // and env_end are fields 50 and 51 of proc(5), the first here is 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |number: usize| -> io::Result<usize> {
        fields
            .get(number - 3)
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| io::Error::other("unexpected /proc/self/stat"))
    };
    Ok((field(50)?, field(51)?))
}

/// A set of signal numbers.
pub struct SignalSet(libc::sigset_t);

impl SignalSet {
    pub fn of(signals: &[libc::c_int]) -> SignalSet {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set; sigaddset only reads valid numbers.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for &signal in signals {
                libc::sigaddset(set.as_mut_ptr(), signal);
            }
            SignalSet(set.assume_init())
        }
    }

    /// Blocks these signals so they queue for a signalfd instead of
    /// running default actions. Children inherit the mask.
    pub fn block(&self) -> io::Result<()> {
        self.set_mask(libc::SIG_BLOCK)
    }

    /// Replaces the mask: used with an empty set before exec.
    pub fn set_as_mask(&self) -> io::Result<()> {
        self.set_mask(libc::SIG_SETMASK)
    }

    fn set_mask(&self, how: libc::c_int) -> io::Result<()> {
        // SAFETY: valid set pointer, null old-set pointer.
        let ret = unsafe { libc::sigprocmask(how, &self.0, std::ptr::null_mut()) };
        if ret == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// A signalfd that reads these (blocked) signals.
    pub fn signalfd(&self) -> io::Result<OwnedFd> {
        // SAFETY: valid set pointer; the returned fd is owned by us.
        let fd = unsafe { libc::signalfd(-1, &self.0, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if fd == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Reads one pending signal from a non-blocking signalfd.
pub fn read_signal(signalfd: impl AsFd) -> io::Result<Option<libc::c_int>> {
    let mut info = MaybeUninit::<libc::signalfd_siginfo>::uninit();
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: the buffer is exactly one siginfo long.
    let n = unsafe { libc::read(signalfd.as_fd().as_raw_fd(), info.as_mut_ptr().cast(), size) };
    if n == -1 {
        let err = io::Error::last_os_error();
        return if err.kind() == io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(err)
        };
    }
    // SAFETY: the kernel filled a whole siginfo.
    Ok(Some(unsafe { info.assume_init() }.ssi_signo as libc::c_int))
}

/// Puts a signal's disposition back to the default. Needed before exec
/// because Rust ignores SIGPIPE and an ignored signal stays ignored
/// across exec (`yes | head` would then never end).
pub fn reset_signal_disposition(signal: libc::c_int) {
    // SAFETY: SIG_DFL is always a valid disposition.
    unsafe { libc::signal(signal, libc::SIG_DFL) };
}

/// Brings the loopback interface of the current network namespace up.
pub fn bring_loopback_up() -> io::Result<()> {
    // SAFETY: a plain socket for the ioctl; closed by OwnedFd.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags =
        (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: valid ifreq pointer for SIOCSIFFLAGS.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
