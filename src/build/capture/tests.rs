use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::net::UnixListener;

use super::*;

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, XattrFlags::empty())
        .unwrap_or_else(|err| panic!("setxattr {name} on {}: {err}", path.display()));
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut value = [0; 64];
    match rustix::fs::lgetxattr(path, name, &mut value[..]) {
        Ok(len) => Some(value[..len].to_vec()),
        Err(Errno::NODATA) => None,
        Err(err) => panic!("getxattr {name} on {}: {err}", path.display()),
    }
}

fn xattr_names(path: &Path) -> Vec<String> {
    let mut names = [0u8; 1024];
    let len = rustix::fs::llistxattr(path, &mut names[..]).unwrap();
    names[..len]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn write(path: &Path, data: &str, mode: u32) {
    std::fs::write(path, data).unwrap();
    chmod(path, mode);
}

fn mkdir(path: &Path, mode: u32) {
    std::fs::create_dir(path).unwrap();
    chmod(path, mode);
}

/// Makes an overlay whiteout; false (with a note) where this user may not.
fn whiteout(path: &Path) -> bool {
    let made = rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        FileType::CharacterDevice,
        Mode::empty(),
        0,
    );
    if let Err(err) = made {
        eprintln!(
            "skipping the whiteout part: mknod of a 0:0 device failed here ({err}); \
             it needs Linux 5.8+ or root"
        );
    }
    made.is_ok()
}

fn meta_lines(layer: &Path) -> Vec<String> {
    std::fs::read_to_string(layer.join("meta"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A leftover overlay workdir: `work/work` is `d---------` with a whiteout.
fn overlay_work(layer: &Path) {
    let work = layer.join("work/work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("stale"), "").unwrap();
    chmod(&work, 0);
}

#[test]
fn capture_writes_meta_and_cleans_the_upper_dir() {
    let layer = tempfile::tempdir().unwrap();
    let layer = layer.path();
    let fs = layer.join("fs");
    mkdir(&fs, 0o755);
    overlay_work(layer);
    set_xattr(&fs, "user.overlay.uuid", b"0123");

    mkdir(&fs.join("bin"), 0o755);
    write(&fs.join("bin/tool"), "tool", 0o4755);
    mkdir(&fs.join("etc"), 0o755);
    set_xattr(&fs.join("etc"), "user.overlay.origin", b"");
    set_xattr(&fs.join("etc"), "user.overlay.impure", b"y");
    write(&fs.join("etc/passwd"), "root:x:0:0\n", 0o644);
    set_xattr(&fs.join("etc/passwd"), "user.overlay.origin", b"");
    let has_whiteout = whiteout(&fs.join("etc/gone"));
    write(&fs.join("etc/hosts"), "", 0o644);
    write(&fs.join("etc/resolv.conf"), "nameserver 10.0.0.1\n", 0o644);
    rustix::fs::mkfifoat(rustix::fs::CWD, fs.join("fifo"), Mode::from_raw_mode(0o644)).unwrap();
    chmod(&fs.join("fifo"), 0o644);
    symlink("etc/passwd", fs.join("link")).unwrap();
    mkdir(&fs.join("opq"), 0o755);
    set_xattr(&fs.join("opq"), "user.overlay.opaque", b"y");
    write(&fs.join("opq/new"), "new", 0o644);
    mkdir(&fs.join("ro"), 0o755);
    // Unprivileged, user xattrs need write permission: set it first.
    write(&fs.join("ro/f"), "read-only", 0o644);
    set_xattr(&fs.join("ro/f"), "user.overlay.origin", b"");
    chmod(&fs.join("ro/f"), 0o444);
    chmod(&fs.join("ro"), 0o555);
    mkdir(&fs.join("run"), 0o755);
    mkdir(&fs.join("run/den"), 0o755);
    mkdir(&fs.join("tmp"), 0o1777);
    write(&fs.join("tmp/keep"), "kept", 0o644);
    let _socket = UnixListener::bind(fs.join("sock")).unwrap();
    write(&fs.join("util"), "utempter", 0o2755);
    set_xattr(&fs.join("util"), OWNER_XATTR, b"0:43");

    let den_made: Vec<PathBuf> = ["run/den", "run", "etc/hosts", "etc/resolv.conf", "tmp"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let captured = capture(layer, &den_made).unwrap();

    let mut expected = vec![
        meta::HEADER,
        "d 0755 0:0 bin",
        "f 4755 0:0 bin/tool",
        "d 0755 0:0 etc",
        "w 0000 0:0 etc/gone",
        "f 0644 0:0 etc/passwd",
        "f 0644 0:0 etc/resolv.conf",
        "p 0644 0:0 fifo",
        "l 0777 0:0 link",
        "d 0755 0:0 opq",
        "o 0755 0:0 opq",
        "f 0644 0:0 opq/new",
        "d 0555 0:0 ro",
        "f 0444 0:0 ro/f",
        "d 1777 0:0 tmp",
        "f 0644 0:0 tmp/keep",
        "f 2755 0:43 util",
        "# implicit directories: 0",
    ];
    if !has_whiteout {
        expected.retain(|line| !line.ends_with("etc/gone"));
    }
    assert_eq!(meta_lines(layer), expected);
    let entries = if has_whiteout { 14 } else { 13 };
    let bytes = [
        "tool",
        "root:x:0:0\n",
        "nameserver 10.0.0.1\n",
        "new",
        "read-only",
    ]
    .iter()
    .chain(&["kept", "utempter"])
    .map(|s| s.len() as u64)
    .sum();
    assert_eq!(captured, Captured { entries, bytes });

    assert!(!layer.join("work").exists(), "work is removed");
    for gone in ["run", "etc/hosts", "sock", "fifo"] {
        assert!(std::fs::symlink_metadata(fs.join(gone)).is_err(), "{gone}");
    }
    if has_whiteout {
        assert!(fsx::is_whiteout(
            &rustix::fs::lstat(fs.join("etc/gone")).unwrap()
        ));
    }
    for clean in ["", "etc", "etc/passwd", "ro/f", "opq/new"] {
        assert_eq!(
            xattr_names(&fs.join(clean)),
            Vec::<String>::new(),
            "{clean}"
        );
    }
    assert_eq!(xattr_names(&fs.join("opq")), ["user.overlay.opaque"]);
    assert_eq!(xattr(&fs.join("util"), OWNER_XATTR).unwrap(), b"0:43");
    assert_eq!(xattr(&fs.join("util"), MODE_XATTR).unwrap(), b"2755");
    assert_eq!(xattr(&fs.join("bin/tool"), MODE_XATTR).unwrap(), b"4755");
    assert_eq!(mode(&fs.join("util")), 0o755);
    assert_eq!(mode(&fs.join("bin/tool")), 0o755);
    assert_eq!(mode(&fs.join("ro")), 0o555);
    assert_eq!(mode(&fs.join("ro/f")), 0o444);
    assert_eq!(mode(&fs.join("tmp")), 0o1777, "sticky stays on directories");
}

#[test]
fn stripped_modes_survive_a_copy_up_until_a_chmod() {
    let layer = tempfile::tempdir().unwrap();
    let layer = layer.path();
    let fs = layer.join("fs");
    mkdir(&fs, 0o755);
    // As a later step's upper holds them: copied up with den's xattrs.
    write(&fs.join("passwd"), "", 0o755);
    set_xattr(&fs.join("passwd"), MODE_XATTR, b"4755");
    set_xattr(&fs.join("passwd"), "user.overlay.origin", b"");
    write(&fs.join("chmodded"), "", 0o700);
    set_xattr(&fs.join("chmodded"), MODE_XATTR, b"4755");
    mkdir(&fs.join("mail"), 0o2775);

    capture(layer, &[]).unwrap();

    let lines = meta_lines(layer);
    assert_eq!(
        lines[1..4],
        [
            "f 0700 0:0 chmodded",
            "d 2775 0:0 mail",
            "f 4755 0:0 passwd"
        ]
    );
    assert_eq!(xattr(&fs.join("chmodded"), MODE_XATTR), None);
    assert_eq!(xattr(&fs.join("passwd"), MODE_XATTR).unwrap(), b"4755");
    assert_eq!(xattr_names(&fs.join("passwd")), [MODE_XATTR]);
    assert_eq!(mode(&fs.join("mail")), 0o775);
    assert_eq!(xattr(&fs.join("mail"), MODE_XATTR).unwrap(), b"2775");
}

#[test]
fn den_made_paths_are_removed_only_when_empty_and_listed() {
    let layer = tempfile::tempdir().unwrap();
    let layer = layer.path();
    let fs = layer.join("fs");
    mkdir(&fs, 0o755);
    std::fs::create_dir_all(fs.join("run/den/cache")).unwrap();
    std::fs::create_dir_all(fs.join("work")).unwrap();
    write(&fs.join("stub"), "", 0o644);

    // `run` is not listed: it stays although it ends up empty.
    capture(
        layer,
        &["/run/den/cache".into(), "run/den".into(), "work".into()],
    )
    .unwrap();
    assert!(fs.join("run").is_dir());
    assert!(!fs.join("run/den").exists());
    assert!(!fs.join("work").exists());
    assert!(fs.join("stub").exists(), "not listed");

    let err = capture(layer, &["../escape".into()]).unwrap_err();
    assert!(format!("{err:#}").contains("leaves the layer"), "{err:#}");
}

/// What the forked child does on the overlay (paths under the merged dir).
enum Op {
    Unlink(&'static str),
    Rmdir(&'static str),
    Mkdir(&'static str),
    Append(&'static str, &'static str),
}

/// Mounts an overlay of `lower` on `merged` with `layer/fs` as its upper
/// dir in a forked child with its own user and mount namespaces, runs
/// `ops` there and unmounts. Returns false when this host cannot.
fn in_overlay(lower: &Path, layer: &Path, merged: &Path, ops: &[Op]) -> bool {
    let cstr = |text: &[u8]| CString::new(text).unwrap();
    let under = |rel: &str| cstr(merged.join(rel).as_os_str().as_bytes());
    let options = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        lower.display(),
        layer.join("fs").display(),
        layer.join("work").display()
    );
    let (uid, gid) = (rustix::process::getuid(), rustix::process::getgid());
    let writes = [
        (cstr(b"/proc/self/setgroups"), cstr(b"deny")),
        (
            cstr(b"/proc/self/uid_map"),
            cstr(format!("0 {} 1", uid.as_raw()).as_bytes()),
        ),
        (
            cstr(b"/proc/self/gid_map"),
            cstr(format!("0 {} 1", gid.as_raw()).as_bytes()),
        ),
    ];
    let ops: Vec<(&Op, CString)> = ops
        .iter()
        .map(|op| {
            let (Op::Unlink(p) | Op::Rmdir(p) | Op::Mkdir(p) | Op::Append(p, _)) = op;
            (op, under(p))
        })
        .collect();
    let (target, options, overlay) = (
        cstr(merged.as_os_str().as_bytes()),
        cstr(options.as_bytes()),
        cstr(b"overlay"),
    );
    // SAFETY: the child only makes system calls on data prepared above
    // (no allocation, no locks) and ends with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: as above, in the child.
        let code = unsafe { overlay_child(&writes, &target, &options, &overlay, &ops) };
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child died: {status}");
    match libc::WEXITSTATUS(status) {
        0 => true,
        1 => {
            eprintln!("skipping: no user namespace or overlay mount on this host");
            false
        }
        code => panic!("overlay operation {} failed", code - 10),
    }
}

/// The child's half of `in_overlay`: exit code 0, 1 if the namespace or
/// mount is refused, 10 + n if operation n failed.
unsafe fn overlay_child(
    writes: &[(CString, CString)],
    target: &CString,
    options: &CString,
    overlay: &CString,
    ops: &[(&Op, CString)],
) -> i32 {
    // SAFETY: plain system calls on valid C strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
            return 1;
        }
        for (path, text) in writes {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
            let len = text.as_bytes().len();
            if fd < 0 || libc::write(fd, text.as_ptr().cast(), len) != len as isize {
                return 1;
            }
            libc::close(fd);
        }
        let root = c"/".as_ptr();
        let private = libc::MS_REC | libc::MS_PRIVATE;
        if libc::mount(
            std::ptr::null(),
            root,
            std::ptr::null(),
            private,
            std::ptr::null(),
        ) != 0
        {
            return 1;
        }
        let (source, data) = (overlay.as_ptr(), options.as_ptr().cast());
        if libc::mount(source, target.as_ptr(), source, 0, data) != 0 {
            return 1;
        }
        for (n, (op, path)) in ops.iter().enumerate() {
            let ok = match op {
                Op::Unlink(_) => libc::unlink(path.as_ptr()) == 0,
                Op::Rmdir(_) => libc::rmdir(path.as_ptr()) == 0,
                Op::Mkdir(_) => libc::mkdir(path.as_ptr(), 0o755) == 0,
                Op::Append(_, text) => {
                    let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT;
                    let fd = libc::open(path.as_ptr(), flags, 0o644);
                    let written = libc::write(fd, text.as_ptr().cast(), text.len());
                    fd >= 0 && written == text.len() as isize && libc::close(fd) == 0
                }
            };
            if !ok {
                return 10 + n as i32;
            }
        }
        if libc::umount2(target.as_ptr(), 0) != 0 {
            return 10 + ops.len() as i32;
        }
        0
    }
}

#[test]
fn a_real_overlay_upper_captures() {
    let tmp = tempfile::tempdir().unwrap();
    let (lower, layer, merged) = (
        tmp.path().join("lower"),
        tmp.path().join("layer"),
        tmp.path().join("merged"),
    );
    for dir in [
        &lower,
        &layer,
        &merged,
        &layer.join("fs"),
        &layer.join("work"),
    ] {
        mkdir(dir, 0o755);
    }
    write(&lower.join("gone"), "bye", 0o644);
    write(&lower.join("keep"), "a\n", 0o644);
    mkdir(&lower.join("opq"), 0o755);
    write(&lower.join("opq/inner"), "hidden", 0o644);
    mkdir(&lower.join("sub"), 0o755);
    write(&lower.join("sub/deep"), "deep", 0o644);
    mkdir(&lower.join("run"), 0o755);

    let ops = [
        Op::Unlink("gone"),
        Op::Unlink("opq/inner"),
        Op::Rmdir("opq"),
        Op::Mkdir("opq"),
        Op::Append("opq/fresh", "new\n"),
        Op::Append("keep", "b\n"),
        Op::Mkdir("newdir"),
        Op::Append("newdir/file", "x"),
        Op::Append("sub/added", "y"),
        Op::Mkdir("run/den"),
    ];
    if !in_overlay(&lower, &layer, &merged, &ops) {
        return;
    }
    let captured = capture(&layer, &["run/den".into()]).unwrap();

    let lines = meta_lines(&layer);
    let kinds: Vec<(&str, &str)> = lines[1..lines.len() - 1]
        .iter()
        .map(|line| {
            let mut fields = line.split(' ');
            (fields.next().unwrap(), fields.nth(2).unwrap())
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("w", "gone"),
            ("f", "keep"),
            ("d", "newdir"),
            ("f", "newdir/file"),
            ("d", "opq"),
            ("o", "opq"),
            ("f", "opq/fresh"),
            ("d", "run"),
            ("d", "sub"),
            ("f", "sub/added"),
        ],
        "{lines:#?}"
    );
    assert_eq!(captured.entries, 9);
    let fs = layer.join("fs");
    assert_eq!(std::fs::read_to_string(fs.join("keep")).unwrap(), "a\nb\n");
    for path in ["", "keep", "newdir", "run", "sub", "sub/added"] {
        let overlay: Vec<_> = xattr_names(&fs.join(path))
            .into_iter()
            .filter(|name| name.starts_with("user.overlay."))
            .collect();
        assert!(overlay.is_empty(), "{path}: {overlay:?}");
    }
    assert_eq!(xattr(&fs.join("opq"), "user.overlay.opaque").unwrap(), b"y");
    assert!(!layer.join("work").exists());
}
