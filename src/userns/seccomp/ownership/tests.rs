//! The filter and its handler against the real kernel. A forked child
//! plays init: a new user namespace where only its own ids are mapped (to
//! 0), the filter installed on itself, notifications answered until the
//! build step ends. A grandchild plays the build step. The test then
//! reads the recorded owners from the host side.

use std::ffi::CStr;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::event::{PollFd, PollFlags, poll};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, WaitOptions, pidfd_open, waitpid};

use super::{FakeOwnership, OWNER_XATTR, UNCHANGED};

#[test]
fn build_step_chowns_are_recorded_and_user_switches_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    assert_user_xattrs_work(dir);
    create_fixture(dir);

    let failure = run_in_container(dir);

    assert_eq!(failure, "", "the build step's view");
    let expected = [
        ("file", Some("1000:1000")),
        ("back", None),
        ("by-fd", Some("0:43")),
        ("link", None),
        ("via-link", None),
        ("followed", Some("7:7")),
        ("sub", Some("1000:1000")),
        ("sub/at-file", Some("1000:1000")),
        ("empty-path", Some("5:6")),
        ("nofollow", None),
        ("untouched", None),
        ("partial", Some("1000:43")),
        ("fifo", None),
        ("unchanged", None),
    ];
    for (name, owner) in expected {
        assert_eq!(recorded_owner(&dir.join(name)).as_deref(), owner, "{name}");
    }
    let host_uid = rustix::process::geteuid().as_raw();
    assert_eq!(
        std::fs::metadata(dir.join("file")).unwrap().uid(),
        host_uid,
        "a faked chown leaves the real owner alone"
    );
}

fn assert_user_xattrs_work(dir: &Path) {
    if let Err(err) =
        rustix::fs::setxattr(dir, "user.den.probe", b"1", rustix::fs::XattrFlags::empty())
    {
        panic!(
            "{} does not support user xattrs ({err}): set TMPDIR to a directory on ext4, \
             xfs, btrfs, or tmpfs with Linux 6.6 or later",
            dir.display()
        );
    }
}

fn create_fixture(dir: &Path) {
    for file in [
        "file",
        "back",
        "by-fd",
        "followed",
        "empty-path",
        "untouched",
        "partial",
        "unchanged",
    ] {
        std::fs::write(dir.join(file), "").unwrap();
    }
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/at-file"), "").unwrap();
    std::os::unix::fs::symlink("file", dir.join("link")).unwrap();
    std::os::unix::fs::symlink("followed", dir.join("via-link")).unwrap();
    std::os::unix::fs::symlink("untouched", dir.join("nofollow")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        0,
    )
    .unwrap();
}

fn recorded_owner(path: &Path) -> Option<String> {
    let mut value = [0u8; 32];
    let len = rustix::fs::lgetxattr(path, OWNER_XATTR, &mut value[..]).ok()?;
    Some(String::from_utf8_lossy(&value[..len]).into_owned())
}

/// Forks the "init" child; returns what went wrong in it or in the build
/// step (empty when nothing did).
fn run_in_container(dir: &Path) -> String {
    let (failures, report) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    // SAFETY: the child only makes syscalls, allocates (glibc's malloc is
    // fork-safe) and leaves with _exit; it takes no lock another test
    // thread could hold.
    let child = match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            let code = exit_code(play_init(dir, &report), &report);
            // SAFETY: ends the forked child without running the test harness's exit code.
            unsafe { libc::_exit(code) }
        }
        pid => Pid::from_raw(pid).unwrap(),
    };
    drop(report);
    let mut failure = String::new();
    std::fs::File::from(failures)
        .read_to_string(&mut failure)
        .unwrap();
    let (_, status) = waitpid(Some(child), WaitOptions::empty()).unwrap().unwrap();
    if status.exit_status() != Some(0) && failure.is_empty() {
        failure = format!("the init child ended with {status:?}");
    }
    failure
}

fn exit_code(result: Result<(), String>, report: &OwnedFd) -> i32 {
    match result {
        Ok(()) => 0,
        Err(message) => {
            let _ = rustix::io::write(report, format!("{message}\n").as_bytes());
            1
        }
    }
}

/// What den's init does in a build, minus the root filesystem.
fn play_init(dir: &Path, report: &OwnedFd) -> Result<(), String> {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    // SAFETY: plain syscall; the forked child is single-threaded.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } == -1 {
        return Err(format!("unshare: {}", std::io::Error::last_os_error()));
    }
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/self/{file}"), text).map_err(|err| format!("{file}: {err}"))
    };
    write("setgroups", "deny".into())?;
    write("uid_map", format!("0 {uid} 1"))?;
    write("gid_map", format!("0 {gid} 1"))?;
    let fake = FakeOwnership::install().map_err(|err| format!("{err:#}"))?;
    // SAFETY: as in the test thread's fork, now from a single thread.
    let step = match unsafe { libc::fork() } {
        -1 => return Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            let code = exit_code(play_build_step(dir), report);
            // SAFETY: ends the build step without unwinding into the harness.
            unsafe { libc::_exit(code) }
        }
        pid => Pid::from_raw(pid).unwrap(),
    };
    let step_ended = pidfd_open(step, PidfdFlags::empty()).map_err(|err| err.to_string())?;
    loop {
        let mut fds = [
            PollFd::new(&fake, PollFlags::IN),
            PollFd::new(&step_ended, PollFlags::IN),
        ];
        poll(&mut fds, None).map_err(|err| format!("poll: {err}"))?;
        let (notified, ended) = (fds[0].revents(), fds[1].revents());
        if notified.contains(PollFlags::IN) {
            fake.handle_one()
                .map_err(|err| format!("handling a notification: {err}"))?;
        } else if !ended.is_empty() {
            break;
        }
    }
    let (_, status) = waitpid(Some(step), WaitOptions::empty())
        .map_err(|err| err.to_string())?
        .ok_or("no status")?;
    match status.exit_status() {
        Some(0) => Ok(()),
        _ => Err(format!("the build step ended with {status:?}")),
    }
}

/// The calls a package manager makes, with the results it must see.
fn play_build_step(dir: &Path) -> Result<(), String> {
    std::env::set_current_dir(dir).map_err(|err| err.to_string())?;
    let absolute =
        |name: &str| std::ffi::CString::new(format!("{}/{name}", dir.display())).unwrap();
    let open = |name: &CStr, flags| {
        // SAFETY: a valid C string.
        unsafe { libc::open(name.as_ptr(), flags | libc::O_CLOEXEC) }
    };
    // SAFETY (all calls below): valid C strings and plain integer arguments.
    unsafe {
        expect(
            "chown a relative path",
            libc::chown(c"file".as_ptr(), 1000, 1000),
            Ok(()),
        )?;
        let back = absolute("back");
        expect(
            "chown an absolute path",
            libc::chown(back.as_ptr(), 1000, 1000),
            Ok(()),
        )?;
        expect(
            "chown it back to root",
            libc::chown(back.as_ptr(), 0, 0),
            Ok(()),
        )?;
        let by_fd = open(c"by-fd", libc::O_RDONLY);
        expect("fchown", libc::fchown(by_fd, 0, 43), Ok(()))?;
        expect(
            "lchown a symlink",
            libc::lchown(c"link".as_ptr(), 2000, 2000),
            Ok(()),
        )?;
        expect(
            "chown through a symlink",
            libc::chown(c"via-link".as_ptr(), 7, 7),
            Ok(()),
        )?;
        expect(
            "chown a directory",
            libc::chown(c"sub".as_ptr(), 1000, 1000),
            Ok(()),
        )?;
        let sub = open(c"sub", libc::O_DIRECTORY | libc::O_PATH);
        let at_file = libc::fchownat(sub, c"at-file".as_ptr(), 1000, 1000, 0);
        expect("fchownat in a directory fd", at_file, Ok(()))?;
        let empty = open(c"empty-path", libc::O_PATH);
        let empty_path = libc::fchownat(empty, c"".as_ptr(), 5, 6, libc::AT_EMPTY_PATH);
        expect("fchownat with AT_EMPTY_PATH", empty_path, Ok(()))?;
        let nofollow = libc::fchownat(
            libc::AT_FDCWD,
            c"nofollow".as_ptr(),
            1000,
            1000,
            libc::AT_SYMLINK_NOFOLLOW,
        );
        expect("fchownat AT_SYMLINK_NOFOLLOW", nofollow, Ok(()))?;
        let partial = libc::chown(c"partial".as_ptr(), UNCHANGED, 43);
        expect("chown of the group only", partial, Ok(()))?;
        let partial = libc::chown(c"partial".as_ptr(), 1000, UNCHANGED);
        expect("chown of the user only", partial, Ok(()))?;
        let unchanged = libc::chown(c"unchanged".as_ptr(), UNCHANGED, UNCHANGED);
        expect("chown changing nothing", unchanged, Ok(()))?;
        expect(
            "chown a fifo",
            libc::chown(c"fifo".as_ptr(), 1000, 1000),
            Ok(()),
        )?;
        let missing = libc::chown(c"missing".as_ptr(), 1000, 1000);
        expect("chown a missing file", missing, Err(Errno::NOENT))?;
        let not_dir = libc::chown(c"file/below".as_ptr(), 1000, 1000);
        expect("chown below a file", not_dir, Err(Errno::NOTDIR))?;
        expect(
            "fchown a closed fd",
            libc::fchown(999, 1000, 1000),
            Err(Errno::BADF),
        )?;

        let setresuid = libc::setresuid(1000, 1000, 1000);
        expect("setresuid to an unmapped id", setresuid, Ok(()))?;
        if libc::getuid() != 0 {
            return Err("a faked setresuid changed the uid".into());
        }
        expect("setgroups", libc::setgroups(0, std::ptr::null()), Ok(()))?;
        expect("setgid to an unmapped id", libc::setgid(1000), Ok(()))?;
        expect("setreuid", libc::setreuid(UNCHANGED, 1000), Ok(()))?;
        expect("setuid(0) reaches the kernel", libc::setuid(0), Ok(()))?;
        // The kernel refuses -1 as a uid: proof that the call reached it.
        let minus_one = libc::setuid(UNCHANGED);
        expect(
            "setuid(-1) reaches the kernel",
            minus_one,
            Err(Errno::INVAL),
        )?;
    }
    Ok(())
}

/// Compares a libc-style result (-1 and errno) with the expected one.
fn expect(what: &str, ret: libc::c_int, want: Result<(), Errno>) -> Result<(), String> {
    let got = match ret {
        -1 => Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap()),
        0 => Ok(()),
        other => return Err(format!("{what}: returned {other}")),
    };
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}
