//! Test harness: runs the real `den` binary as an unprivileged user.
//!
//! When the suite runs as root (as CI does), every `den` call drops to
//! the test user `den-test` with setpriv, so a test passes only if den
//! works rootless for real; `Runner::Root` runs den as root on purpose.
//! When the suite runs as an ordinary user, that user is the test user.

pub mod mirror;
pub mod oci;
pub mod pty;
pub mod registry;
pub mod spawned;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{OnceLock, mpsc};
use std::thread;
use std::time::Duration;

/// The unprivileged account tests run den as; `.ci/setup` creates it.
pub const TEST_USER: &str = "den-test";

/// Who runs den.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runner {
    /// The unprivileged test user (or the invoking user when not root).
    User,
    /// Root; only possible when the suite runs as root.
    Root,
}

pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// The runners available here: both when root, only the user otherwise.
pub fn runners() -> Vec<Runner> {
    if running_as_root() {
        vec![Runner::User, Runner::Root]
    } else {
        vec![Runner::User]
    }
}

/// (uid, gid) of the test user, or of the current user when not root.
pub fn test_ids() -> (u32, u32) {
    static IDS: OnceLock<(u32, u32)> = OnceLock::new();
    *IDS.get_or_init(|| {
        if !running_as_root() {
            let meta = fs::metadata("/proc/self").expect("stat /proc/self");
            use std::os::unix::fs::MetadataExt;
            return (meta.uid(), meta.gid());
        }
        let id = |flag: &str| -> u32 {
            let out = Command::new("id")
                .arg(flag)
                .arg(TEST_USER)
                .output()
                .expect("run id");
            assert!(
                out.status.success(),
                "test user `{TEST_USER}` is missing: run .ci/setup (as root) first"
            );
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("numeric id")
        };
        (id("-u"), id("-g"))
    })
}

/// A copy of den every user can execute (the build tree may sit under
/// a directory the test user cannot enter, such as /root).
pub fn den_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // One copy per build, shared by every test process: a directory
        // named after the build's size and mtime, filled under a temporary
        // name and renamed, so concurrent test processes never see half a
        // copy. The file keeps the name `den` (tests look for it in ps).
        use std::os::unix::fs::MetadataExt;
        let source = Path::new(env!("CARGO_BIN_EXE_den"));
        let meta = fs::metadata(source).expect("stat den");
        let parent = std::env::temp_dir().join(format!("den-test-bin-{}", test_ids().0));
        fs::create_dir_all(&parent).expect("create binary dir");
        fs::set_permissions(&parent, fs::Permissions::from_mode(0o755)).expect("chmod binary dir");
        let dir = parent.join(format!(
            "{}-{}.{}",
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec()
        ));
        if !dir.exists() {
            let partial = parent.join(format!(".partial-{}", std::process::id()));
            fs::create_dir_all(&partial).expect("create binary dir");
            fs::set_permissions(&partial, fs::Permissions::from_mode(0o755))
                .expect("chmod binary dir");
            fs::copy(source, partial.join("den")).expect("copy den");
            fs::set_permissions(partial.join("den"), fs::Permissions::from_mode(0o755))
                .expect("chmod den");
            if fs::rename(&partial, &dir).is_err() {
                // Another test process placed it first.
                let _ = fs::remove_dir_all(&partial);
            }
        }
        dir.join("den")
    })
}

/// Hands a tree to the test user, so den (running as it) can use it.
pub fn give_to_test_user(path: &Path) {
    if !running_as_root() {
        return;
    }
    let (uid, gid) = test_ids();
    let status = Command::new("chown")
        .args(["-R", "-h", &format!("{uid}:{gid}")])
        .arg(path)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown {}", path.display());
}

/// A project directory with a den.yaml, its own image store and home.
pub struct Project {
    /// Holds everything; removed at drop (by root, so nothing is left).
    _temp: tempfile::TempDir,
    pub root: PathBuf,
    pub data: PathBuf,
    pub home: PathBuf,
}

impl Project {
    /// A project with this den.yaml; fixtures can be added before use.
    pub fn new(den_yaml: &str) -> Project {
        let temp = tempfile::Builder::new()
            .prefix("den-test-")
            .tempdir()
            .expect("tempdir");
        fs::set_permissions(temp.path(), fs::Permissions::from_mode(0o755)).expect("chmod tempdir");
        let root = temp.path().join("project");
        let data = temp.path().join("data");
        let home = temp.path().join("home");
        for dir in [&root, &data, &home] {
            fs::create_dir(dir).expect("create dir");
        }
        fs::write(root.join("den.yaml"), den_yaml).expect("write den.yaml");
        let project = Project {
            _temp: temp,
            root,
            data,
            home,
        };
        project.hand_over();
        project
    }

    /// Re-gives every file to the test user after a test added some.
    pub fn hand_over(&self) {
        for dir in [&self.root, &self.data, &self.home] {
            give_to_test_user(dir);
        }
    }

    /// The image store `runner` uses: root keeps its own, as a root user's
    /// home would (the test user's 0700 store is closed to root inside a
    /// user namespace, where the test user's id is not mapped).
    pub fn data_dir(&self, runner: Runner) -> PathBuf {
        match runner {
            Runner::User => self.data.clone(),
            Runner::Root => self._temp.path().join("data-root"),
        }
    }

    /// Sorted names in a subdirectory of the test user's store (none if
    /// it does not exist).
    pub fn store_names(&self, sub: &str) -> Vec<String> {
        sorted_names(&self.data.join(sub))
    }

    /// The image records (`images/<hex>.json`) in the test user's store.
    pub fn image_records(&self) -> Vec<String> {
        let mut names = self.store_names("images");
        names.retain(|name| name.ends_with(".json"));
        names
    }

    /// A `den` command run in the project root by `runner`, with a clean
    /// environment: HOME and the store in the project's temp dir.
    pub fn den(&self, runner: Runner, args: &[&str]) -> Command {
        self.den_in(runner, &self.root, args)
    }

    pub fn den_in(&self, runner: Runner, dir: &Path, args: &[&str]) -> Command {
        self.den_through(runner, dir, &[], args)
    }

    /// As `den_in`, with den started by `wrapper` (a program and its
    /// arguments, which execs the rest of its command line).
    pub fn den_through(
        &self,
        runner: Runner,
        dir: &Path,
        wrapper: &[&std::ffi::OsStr],
        args: &[&str],
    ) -> Command {
        let mut command = match (runner, running_as_root()) {
            (Runner::User, true) => {
                let (uid, gid) = test_ids();
                let mut command = Command::new("setpriv");
                command
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .args(wrapper)
                    .arg(den_binary());
                command
            }
            (Runner::Root, false) => panic!("Runner::Root needs the suite to run as root"),
            _ => match wrapper.split_first() {
                Some((program, rest)) => {
                    let mut command = Command::new(program);
                    command.args(rest).arg(den_binary());
                    command
                }
                None => Command::new(den_binary()),
            },
        };
        command
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.home)
            .env("DEN_DATA_DIR", self.data_dir(runner))
            .stdin(Stdio::null());
        command
    }

    /// Runs den to the end and returns what it printed.
    pub fn run(&self, runner: Runner, args: &[&str]) -> Output {
        self.den(runner, args).output().expect("spawn den")
    }
}

/// Sorted names of the entries of `dir` (none if it does not exist).
pub fn sorted_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Output as text, for assertions and failure messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts den succeeded and returns its stdout.
#[track_caller]
pub fn success(output: &Output) -> String {
    assert!(
        output.status.success(),
        "den failed with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// den's own exit status when it fails (as Docker and Podman use).
pub const DEN_FAILED: i32 = 125;
/// No den call may take longer than this; a hang fails the test.
pub const DEN_TIME_LIMIT: Duration = Duration::from_secs(120);

/// Runs a command to the end within `limit`; kills it and fails after.
pub fn run_bounded(mut command: Command, limit: Duration) -> Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("{command:?}");
    let child = command
        .spawn()
        .unwrap_or_else(|err| panic!("spawn {what}: {err}"));
    let pid = child.id();
    let (send, done) = mpsc::channel();
    thread::spawn(move || {
        let _ = send.send(child.wait_with_output());
    });
    match done.recv_timeout(limit) {
        Ok(output) => output.expect("wait"),
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            panic!("{what} did not finish within {limit:?}");
        }
    }
}

/// Runs a den command to the end within `DEN_TIME_LIMIT`.
pub fn bounded(command: Command) -> Output {
    run_bounded(command, DEN_TIME_LIMIT)
}

/// Asserts den itself failed (exit 125) saying each of `needles`, as
/// written; returns stderr.
#[track_caller]
pub fn refused(output: &Output, needles: &[&str]) -> String {
    refused_where(output, needles, |stderr, needle| stderr.contains(needle))
}

/// As `refused`, ignoring case.
#[track_caller]
pub fn refused_any_case(output: &Output, needles: &[&str]) -> String {
    refused_where(output, needles, |stderr, needle| {
        stderr.to_lowercase().contains(&needle.to_lowercase())
    })
}

#[track_caller]
fn refused_where(output: &Output, needles: &[&str], says: impl Fn(&str, &str) -> bool) -> String {
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(DEN_FAILED),
        "expected den to fail with {DEN_FAILED}\nstdout:\n{}\nstderr:\n{stderr}",
        text(&output.stdout)
    );
    for needle in needles {
        assert!(says(&stderr, needle), "stderr lacks `{needle}`:\n{stderr}");
    }
    stderr
}
