//! The few syscalls rustix does not wrap (clone with namespace flags,
//! mount_setattr, signal masks and signalfd), behind small safe functions.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

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
