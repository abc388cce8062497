//! The container runtime, seen from outside: exit statuses, signals,
//! process cleanup, stdio with and without a terminal, /work, ephemeral
//! writes, concurrency and isolation. den runs as the unprivileged test
//! user, and as root too where that makes sense.

use std::collections::BTreeSet;
use std::fs;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::pty::Pty;
use crate::harness::spawned::{
    Spawned, TIMEOUT, eventually, marker, output_within, processes_with_argv, wait_until,
};
use crate::harness::{self, Project, Runner, runners, success, test_ids, text};
use rustix::fs::inotify;
use rustix::termios::LocalModes;

const DEN_YAML: &str = "\
containers:
  bb:
    from: oci:image:latest
    environ:
      A: container
      B: container
  u1000:
    from: oci:image:latest
    user: 1000
commands:
  showenv:
    container: bb
    run: env
    environ:
      B: command
  interfaces:
    container: bb
    run: cat /proc/net/dev
    network: none
";

/// A project with the busybox fixture image.
fn project() -> Project {
    let project = Project::new(DEN_YAML);
    harness::oci::write_busybox(&project.root.join("image"));
    project.hand_over();
    project
}

/// `den exec bb -- sh -c <script>`, as a command to adjust and run.
fn sh_command(project: &Project, runner: Runner, script: &str) -> Command {
    project.den(runner, &["exec", "bb", "--", "sh", "-c", script])
}

/// Runs `script` in container `bb` to the end.
fn sh(project: &Project, runner: Runner, script: &str) -> Output {
    output_within(sh_command(project, runner, script), b"")
}

/// Runs `script` in container `bb`; asserts success and returns stdout.
#[track_caller]
fn sh_ok(project: &Project, runner: Runner, script: &str) -> String {
    success(&sh(project, runner, script))
}

#[track_caller]
fn assert_code(output: &Output, code: i32, what: &str) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{what}: den exited with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
}

// 1. Exit statuses

#[test]
fn exit_codes_propagate() {
    let project = project();
    for runner in runners() {
        for code in [0, 1, 7, 255] {
            let output = sh(&project, runner, &format!("exit {code}"));
            assert_code(&output, code, &format!("{runner:?} exit {code}"));
        }
    }
}

#[test]
fn a_command_killed_by_signal_n_gives_128_plus_n() {
    let project = project();
    for runner in runners() {
        for (signal, code) in [("KILL", 137), ("TERM", 143), ("USR1", 138)] {
            let output = sh(&project, runner, &format!("kill -{signal} $$; sleep 5"));
            assert_code(&output, code, &format!("{runner:?} kill -{signal}"));
        }
    }
}

#[test]
fn exec_of_a_missing_program_gives_127_and_of_a_non_executable_126() {
    let project = project();
    for runner in runners() {
        let output = output_within(
            project.den(runner, &["exec", "bb", "--", "no-such-program"]),
            b"",
        );
        assert_code(&output, 127, "missing program in PATH");
        assert!(
            text(&output.stderr).contains("no-such-program"),
            "{}",
            text(&output.stderr)
        );
        let output = output_within(project.den(runner, &["exec", "bb", "--", "/bin/nope"]), b"");
        assert_code(&output, 127, "missing program by path");
        let output = output_within(
            project.den(runner, &["exec", "bb", "--", "/etc/passwd"]),
            b"",
        );
        assert_code(&output, 126, "non-executable file");
    }
}

#[test]
fn dens_own_failure_gives_125() {
    let project = project();
    let output = output_within(
        project.den(Runner::User, &["exec", "no-such-container", "--", "true"]),
        b"",
    );
    assert_code(&output, 125, "unknown container");
}

// 2. Signals

#[test]
fn signals_sent_to_den_reach_the_commands_trap() {
    let project = project();
    for runner in runners() {
        for (signal, name, code) in [
            (libc::SIGTERM, "TERM", 41),
            (libc::SIGINT, "INT", 42),
            (libc::SIGUSR1, "USR1", 43),
            (libc::SIGHUP, "HUP", 44),
        ] {
            let script = format!(
                "trap 'echo got-{name}; exit {code}' {name}; echo ready; while :; do sleep 0.1; done"
            );
            let mut den = Spawned::start(sh_command(&project, runner, &script));
            den.expect_line("ready");
            den.signal(signal);
            let (status, lines) = den.finish();
            assert_eq!(status.code(), Some(code), "{runner:?} SIG{name}: {lines:?}");
            assert!(
                lines.contains(&format!("got-{name}")),
                "{runner:?} SIG{name}: {lines:?}"
            );
        }
    }
}

#[test]
fn an_untrapped_sigterm_to_den_ends_the_command_with_143() {
    let project = project();
    let mut den = Spawned::start(sh_command(
        &project,
        Runner::User,
        "echo ready; sleep 100; echo survived",
    ));
    den.expect_line("ready");
    den.signal(libc::SIGTERM);
    let (status, lines) = den.finish();
    assert_eq!(status.code(), Some(143), "{lines:?}");
    assert_eq!(lines, ["ready"]);
}

// 3. No orphans

/// Starts `sleep <mark>` three times in the background (one of them
/// double-forked, so it lands on init) and says "ready".
fn background_sleeps(mark: &str) -> String {
    format!(
        "sleep {mark} >/dev/null 2>&1 & sleep {mark} >/dev/null 2>&1 & \
         (sleep {mark} >/dev/null 2>&1 &); echo ready"
    )
}

#[track_caller]
fn wait_for_count(mark: &str, count: usize) {
    let found = eventually(TIMEOUT, || {
        processes_with_argv(&["sleep", mark]).len() == count
    });
    assert!(
        found,
        "expected {count} `sleep {mark}`, found {:?}",
        processes_with_argv(&["sleep", mark])
    );
}

#[test]
fn background_children_die_when_the_command_exits() {
    let project = project();
    for (salt, runner) in runners().into_iter().enumerate() {
        let mark = marker(1 + salt as u32);
        let script = format!("{}; read line; exit 3", background_sleeps(&mark));
        let mut den = Spawned::start(sh_command(&project, runner, &script));
        den.expect_line("ready");
        wait_for_count(&mark, 3);
        den.write_stdin(b"go\n");
        let (status, _) = den.finish();
        assert_eq!(status.code(), Some(3), "{runner:?}");
        // The kernel ends the pid namespace before init can be reaped.
        assert_eq!(
            processes_with_argv(&["sleep", &mark]),
            Vec::<u32>::new(),
            "{runner:?}"
        );
    }
}

#[test]
fn killing_den_with_sigkill_ends_every_process_in_the_container() {
    let project = project();
    for (salt, runner) in runners().into_iter().enumerate() {
        let mark = marker(3 + salt as u32);
        let script = format!("{}; sleep {mark}", background_sleeps(&mark));
        let mut den = Spawned::start(sh_command(&project, runner, &script));
        den.expect_line("ready");
        wait_for_count(&mark, 4);
        den.signal(libc::SIGKILL);
        assert_eq!(den.wait().signal(), Some(libc::SIGKILL));
        let gone = eventually(Duration::from_secs(5), || {
            processes_with_argv(&["sleep", &mark]).is_empty()
        });
        assert!(
            gone,
            "{runner:?}: left behind: {:?}",
            processes_with_argv(&["sleep", &mark])
        );
    }
}

#[test]
fn init_reaps_orphaned_zombies() {
    let project = project();
    // Orphans land on pid 1 when they exit; a zombie is `Z` in /proc/N/stat.
    let out = sh_ok(
        &project,
        Runner::User,
        "for i in 1 2 3; do (sleep 0.1 &); done; sleep 0.3; i=0; \
         while grep -q '^[0-9]* ([^)]*) Z' /proc/[0-9]*/stat && test $i -lt 100; do \
         sleep 0.1; i=$((i+1)); done; grep -l '^[0-9]* ([^)]*) Z' /proc/[0-9]*/stat; echo done",
    );
    assert_eq!(out, "done\n");
}

// 4. Pipes

/// Deterministic bytes that no compression or line handling leaves alone.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[test]
fn piped_stdin_reaches_the_command_intact() {
    let project = project();
    let input = noise(4 << 20);
    for runner in runners() {
        let output = output_within(project.den(runner, &["exec", "bb", "--", "cat"]), &input);
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert!(
            output.stdout == input,
            "{runner:?}: {} bytes out for {} in",
            output.stdout.len(),
            input.len()
        );
    }
}

#[test]
fn large_output_arrives_intact() {
    let project = project();
    let output = sh(
        &project,
        Runner::User,
        "dd if=/dev/zero bs=1048576 count=8 2>/dev/null; echo end",
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(output.stdout.len(), (8 << 20) + 4);
    assert!(output.stdout[..8 << 20].iter().all(|&b| b == 0));
    assert_eq!(&output.stdout[8 << 20..], b"end\n");
}

#[test]
fn stdout_and_stderr_stay_separate() {
    let project = project();
    for runner in runners() {
        let output = sh(
            &project,
            runner,
            "echo to-out; echo to-err >&2; echo more-out",
        );
        assert!(output.status.success());
        assert_eq!(text(&output.stdout), "to-out\nmore-out\n", "{runner:?}");
        assert_eq!(text(&output.stderr), "to-err\n", "{runner:?}");
    }
}

#[test]
fn without_a_terminal_no_tty_is_made() {
    let project = project();
    let out = sh_ok(
        &project,
        Runner::User,
        "tty; echo tty=$?; test -t 0 || echo stdin-not-tty; test -t 1 || echo stdout-not-tty; \
         (: >/dev/tty) 2>/dev/null || echo no-controlling-tty; echo TERM=$TERM",
    );
    assert_eq!(
        out,
        "not a tty\ntty=1\nstdin-not-tty\nstdout-not-tty\nno-controlling-tty\nTERM=\n"
    );
}

// 5. A terminal

/// Starts den on `pty`; the returned child must be waited with a bound.
fn spawn_on(pty: &Pty, mut command: Command) -> std::process::Child {
    pty.attach(&mut command);
    // The command's copies of the slave close when it is dropped.
    command.spawn().expect("spawn den")
}

const SHORT: Duration = Duration::from_secs(10);

#[test]
fn a_terminal_gives_the_command_a_pty_of_the_same_size() {
    let project = project();
    for runner in runners() {
        let mut pty = Pty::open(33, 101);
        let before = pty.mode();
        let script = "tty; stty size; test -t 0 && test -t 1 && echo both-ttys; echo TERM=$TERM";
        let mut den = spawn_on(&pty, sh_command(&project, runner, script));
        pty.expect("/dev/pts/", TIMEOUT);
        pty.expect("33 101", SHORT);
        pty.expect("both-ttys", SHORT);
        pty.expect("TERM=xterm", SHORT);
        let status = wait_until(&mut den, Instant::now() + TIMEOUT);
        assert_eq!(status.code(), Some(0), "{}", pty.transcript_text());
        let after = pty.mode();
        assert_eq!(
            after.local_modes, before.local_modes,
            "den left the terminal in another mode"
        );
    }
}

#[test]
fn output_through_the_terminal_arrives_whole() {
    let project = project();
    let mut pty = Pty::open(24, 80);
    let mut den = spawn_on(&pty, sh_command(&project, Runner::User, "seq 1 20000"));
    let expected: String = (1..=20000).map(|n| format!("{n}\r\n")).collect();
    // The tail is still in the container's pty when the command ends:
    // den must drain it before exiting.
    pty.expect("\r\n20000\r\n", TIMEOUT);
    let status = wait_until(&mut den, Instant::now() + TIMEOUT);
    assert_eq!(status.code(), Some(0));
    assert!(
        pty.transcript_text() == expected,
        "{} bytes instead of {}",
        pty.transcript_text().len(),
        expected.len()
    );
}

#[test]
fn typed_input_reaches_an_interactive_shell_and_exit_status_returns() {
    let project = project();
    let mut pty = Pty::open(24, 80);
    let cooked = pty.mode().local_modes;
    let mut den = spawn_on(&pty, project.den(Runner::User, &["shell"]));
    pty.type_in(b"echo typed-$((1+2))\n");
    pty.expect("typed-3", TIMEOUT);
    let raw = pty.mode().local_modes;
    assert!(
        !raw.intersects(LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG),
        "den's terminal is not in raw mode: {raw:?}"
    );
    pty.type_in(b"exit 5\n");
    let status = wait_until(&mut den, Instant::now() + TIMEOUT);
    assert_eq!(status.code(), Some(5), "{}", pty.transcript_text());
    assert_eq!(
        pty.mode().local_modes,
        cooked,
        "den did not restore the mode"
    );
}

#[test]
fn ctrl_c_interrupts_the_foreground_job_and_the_shell_goes_on() {
    let project = project();
    let mark = marker(5);
    let mut pty = Pty::open(24, 80);
    let mut den = spawn_on(&pty, project.den(Runner::User, &["shell"]));
    pty.type_in(b"echo shell-$((1+1))\n");
    pty.expect("shell-2", TIMEOUT);
    pty.type_in(format!("sleep {mark}\n").as_bytes());
    wait_for_count(&mark, 1);
    pty.type_in(b"\x03");
    let interrupted = eventually(SHORT, || processes_with_argv(&["sleep", &mark]).is_empty());
    assert!(interrupted, "Ctrl-C left the sleep running");
    pty.type_in(b"echo after-$((2+3))\n");
    pty.expect("after-5", SHORT);
    pty.type_in(b"exit 5\n");
    let status = wait_until(&mut den, Instant::now() + TIMEOUT);
    assert_eq!(status.code(), Some(5), "{}", pty.transcript_text());
}

#[test]
fn resizing_the_terminal_resizes_the_containers() {
    let project = project();
    let mut pty = Pty::open(24, 80);
    let mut den = spawn_on(&pty, project.den(Runner::User, &["shell"]));
    pty.type_in(b"stty size\n");
    pty.expect("24 80", TIMEOUT);
    pty.resize(40, 120);
    // The change travels as SIGWINCH to den; ask until it has landed.
    let deadline = Instant::now() + SHORT;
    let mut resized = false;
    while !resized && Instant::now() < deadline {
        pty.type_in(b"stty size\n");
        resized = pty.wait_for("40 120", Duration::from_millis(500));
    }
    assert!(resized, "{}", pty.transcript_text());
    pty.type_in(b"exit\n");
    let status = wait_until(&mut den, Instant::now() + TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", pty.transcript_text());
}

#[test]
fn closing_the_terminal_ends_den_and_its_container() {
    let project = project();
    let mark = marker(6);
    let mut pty = Pty::open(24, 80);
    let mut den = spawn_on(&pty, project.den(Runner::User, &["shell"]));
    pty.type_in(format!("sleep {mark} & echo started\n").as_bytes());
    pty.expect("started", TIMEOUT);
    wait_for_count(&mark, 1);
    pty.hang_up();
    let status = wait_until(&mut den, Instant::now() + TIMEOUT);
    assert!(!status.success(), "{status}");
    let gone = eventually(Duration::from_secs(5), || {
        processes_with_argv(&["sleep", &mark]).is_empty()
    });
    assert!(gone, "the container outlived its terminal");
}

// 6. /work and the ephemeral root

/// A directory `runner` can write into: the project for the test user;
/// for root, a root-owned subdirectory (root inside the container has no
/// power over files of the test user, whose id is not mapped there).
fn writable_dir(project: &Project, runner: Runner) -> std::path::PathBuf {
    match runner {
        Runner::User => project.root.clone(),
        Runner::Root => {
            let dir = project.root.join("root-owned");
            fs::create_dir_all(&dir).unwrap();
            std::os::unix::fs::chown(&dir, Some(0), Some(0)).unwrap();
            dir
        }
    }
}

fn owner_of(runner: Runner) -> (u32, u32) {
    match runner {
        Runner::User => test_ids(),
        Runner::Root => (0, 0),
    }
}

#[test]
fn files_made_in_work_belong_to_the_invoking_user() {
    let project = project();
    for runner in runners() {
        let dir = writable_dir(&project, runner);
        for container in ["bb", "u1000"] {
            let name = format!("made-by-{container}");
            let output = output_within(
                project.den_in(
                    runner,
                    &dir,
                    &[
                        "exec",
                        container,
                        "--",
                        "sh",
                        "-c",
                        &format!("echo content-$(id -u) > {name}"),
                    ],
                ),
                b"",
            );
            success(&output);
            let file = dir.join(&name);
            let meta = fs::metadata(&file).expect("the file is on the host");
            assert_eq!((meta.uid(), meta.gid()), owner_of(runner), "{runner:?}");
            let uid = if container == "bb" { 0 } else { 1000 };
            assert_eq!(
                fs::read_to_string(&file).unwrap(),
                format!("content-{uid}\n")
            );
        }
    }
}

#[test]
fn the_working_directory_follows_the_subdirectory() {
    let project = project();
    let sub = project.root.join("sub/dir");
    fs::create_dir_all(&sub).unwrap();
    project.hand_over();
    for runner in runners() {
        let output = output_within(
            project.den_in(runner, &sub, &["exec", "bb", "--", "pwd"]),
            b"",
        );
        assert_eq!(success(&output), "/work/sub/dir\n", "{runner:?}");
        let output = output_within(project.den(runner, &["exec", "bb", "--", "pwd"]), b"");
        assert_eq!(success(&output), "/work\n", "{runner:?}");
    }
}

/// Every entry under `dir`: path, kind, size, mode, owner and mtime.
fn snapshot(dir: &Path) -> BTreeSet<String> {
    let mut entries = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            entries.insert(format!(
                "{} {:?} {} {:o} {}:{} {}.{}",
                path.display(),
                meta.file_type(),
                meta.len(),
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.mtime(),
                meta.mtime_nsec()
            ));
        }
    }
    entries
}

#[test]
fn writes_outside_work_are_discarded() {
    let project = project();
    for runner in runners() {
        // Imports the image, so the layers exist before the snapshot.
        sh_ok(&project, runner, "true");
        let store = project.data_dir(runner);
        let layers = snapshot(&store.join("layers"));
        assert!(!layers.is_empty());
        sh_ok(
            &project,
            runner,
            "set -e; echo x > /etc/foo; echo x > /bin/new; echo x > /root/x; \
             echo intruder:x:0:0::/:/bin/sh >> /etc/passwd; rm /bin/ls; mkdir /opt",
        );
        let out = sh_ok(
            &project,
            runner,
            "for f in /etc/foo /bin/new /root/x /opt; do test -e $f && echo kept $f; done; \
             grep -c intruder /etc/passwd; test -e /bin/ls && echo ls-there",
        );
        assert_eq!(out, "0\nls-there\n", "{runner:?}");
        assert_eq!(
            snapshot(&store.join("layers")),
            layers,
            "{runner:?}: the layers changed"
        );
        let scratch: Vec<_> = fs::read_dir(store.join("scratch")).unwrap().collect();
        assert!(scratch.is_empty(), "{runner:?}: scratch holds {scratch:?}");
    }
}

// 7. Concurrency

/// Runs `count` `den exec` at once; each must print its own line.
fn run_concurrently(project: &Project, count: usize) {
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..count)
            .map(|i| {
                let command = project.den(
                    Runner::User,
                    &["exec", "bb", "--", "echo", &format!("run-{i}")],
                );
                scope.spawn(move || output_within(command, b""))
            })
            .collect();
        for (i, run) in runs.into_iter().enumerate() {
            let output = run.join().unwrap();
            assert_eq!(success(&output), format!("run-{i}\n"));
        }
    });
}

/// Counts the directories made in one directory, by any process, through
/// inotify (events for distinct names are never merged). den unpacks each
/// layer into a directory of its own in the store's `tmp/` before moving
/// it into `layers/`: in an `oci:` import, these directories are the
/// unpacks.
struct DirsMade {
    inotify: OwnedFd,
}

impl DirsMade {
    fn watch(dir: &Path) -> DirsMade {
        let inotify = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .expect("inotify_init1");
        inotify::add_watch(&inotify, dir, inotify::WatchFlags::CREATE)
            .unwrap_or_else(|err| panic!("watch {}: {err}", dir.display()));
        DirsMade { inotify }
    }

    /// Directories made since the last call.
    fn count_new(&self) -> usize {
        let mut buffer = [MaybeUninit::uninit(); 4096];
        let mut events = inotify::Reader::new(&self.inotify, &mut buffer);
        let mut made = 0;
        loop {
            match events.next() {
                Ok(event) => {
                    let flags = event.events();
                    assert!(
                        !flags.contains(inotify::ReadFlags::QUEUE_OVERFLOW),
                        "inotify lost events"
                    );
                    if flags.contains(inotify::ReadFlags::CREATE | inotify::ReadFlags::ISDIR) {
                        made += 1;
                    }
                }
                Err(rustix::io::Errno::AGAIN) => return made,
                Err(err) => panic!("read inotify events: {err}"),
            }
        }
    }
}

#[test]
fn concurrent_runs_share_one_image_import() {
    let project = project();
    assert!(!project.data.join("layers").exists(), "the store is fresh");
    // Made here as den makes it (mkdir -p, 0700), so that every unpack in
    // it is seen.
    let tmp = project.data.join("tmp");
    fs::DirBuilder::new().mode(0o700).create(&tmp).unwrap();
    harness::give_to_test_user(&tmp);
    let unpacks = DirsMade::watch(&tmp);
    run_concurrently(&project, 2);
    assert_eq!(
        unpacks.count_new(),
        1,
        "unpacks of the one layer by 2 dens at once"
    );
    run_concurrently(&project, 10);
    assert_eq!(
        unpacks.count_new(),
        0,
        "unpacks by 10 dens once it is imported"
    );
}

// 8. Isolation

/// Interface names in a /proc/net/dev listing.
fn interfaces(listing: &str) -> BTreeSet<String> {
    listing
        .lines()
        .skip(2)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .collect()
}

#[test]
fn network_none_has_only_loopback() {
    let project = project();
    let lo = BTreeSet::from(["lo".to_string()]);
    for runner in runners() {
        let output = output_within(
            project.den(
                runner,
                &[
                    "exec",
                    "--network",
                    "none",
                    "bb",
                    "--",
                    "cat",
                    "/proc/net/dev",
                ],
            ),
            b"",
        );
        assert_eq!(interfaces(&success(&output)), lo, "{runner:?} exec");
        let output = output_within(project.den(runner, &["run", "interfaces"]), b"");
        assert_eq!(interfaces(&success(&output)), lo, "{runner:?} run");
        // ...and it is up.
        let output = output_within(
            project.den(
                runner,
                &[
                    "exec",
                    "--network",
                    "none",
                    "bb",
                    "--",
                    "cat",
                    "/sys/class/net/lo/flags",
                ],
            ),
            b"",
        );
        let flags = success(&output);
        let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
        assert_eq!(
            flags & libc::IFF_UP as u32,
            libc::IFF_UP as u32,
            "{runner:?}"
        );
    }
}

#[test]
fn host_network_sees_the_host_interfaces() {
    let project = project();
    let host = interfaces(&fs::read_to_string("/proc/net/dev").unwrap());
    for runner in runners() {
        let output = output_within(
            project.den(
                runner,
                &[
                    "exec",
                    "--network",
                    "host",
                    "bb",
                    "--",
                    "cat",
                    "/proc/net/dev",
                ],
            ),
            b"",
        );
        assert_eq!(interfaces(&success(&output)), host, "{runner:?} exec");
        let output = output_within(
            project.den(runner, &["run", "--network", "host", "interfaces"]),
            b"",
        );
        assert_eq!(interfaces(&success(&output)), host, "{runner:?} run");
    }
}

#[test]
fn the_hostname_is_the_container_name() {
    let project = project();
    for runner in runners() {
        let out = sh_ok(
            &project,
            runner,
            "hostname; cat /etc/hostname; grep -c '^127\\.0\\.1\\.1.bb$' /etc/hosts",
        );
        assert_eq!(out, "bb\nbb\n1\n", "{runner:?}");
    }
}

/// The variables naming the host's CA bundle, which every container
/// gets unless `host-ca: false` (see config.md).
const CA_VARS: [&str; 7] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "NODE_EXTRA_CA_CERTS",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "CARGO_HTTP_CAINFO",
];

/// `env` output as a set of lines, without the CA bundle variables
/// (checked to name den's copy of the bundle).
fn env_of(output: &str) -> BTreeSet<&str> {
    output
        .lines()
        .filter(|line| {
            let (name, value) = line.split_once('=').unwrap_or((line, ""));
            let is_ca = CA_VARS.contains(&name);
            assert!(!is_ca || value == "/run/den/ca-certificates.crt", "{line}");
            !is_ca
        })
        .collect()
}

#[test]
fn the_environment_is_clean_with_path_and_home() {
    let project = project();
    for runner in runners() {
        let mut command = project.den(runner, &["exec", "bb", "--", "env"]);
        command.env("LEAK_ME", "1").env("TERM", "dumb");
        let out = success(&output_within(command, b""));
        assert_eq!(
            env_of(&out),
            BTreeSet::from(["PATH=/bin", "HOME=/root", "A=container", "B=container"]),
            "{runner:?}"
        );
        let out = success(&output_within(
            project.den(runner, &["exec", "u1000", "--", "env"]),
            b"",
        ));
        assert_eq!(
            env_of(&out),
            BTreeSet::from(["PATH=/bin", "HOME=/home/user"]),
            "{runner:?}"
        );
    }
}

#[test]
fn the_commands_environ_wins_over_the_containers() {
    let project = project();
    let mut command = project.den(Runner::User, &["run", "showenv"]);
    command.env("LEAK_ME", "1");
    let out = success(&output_within(command, b""));
    let env = env_of(&out);
    for expected in ["A=container", "B=command", "PATH=/bin", "HOME=/root"] {
        assert!(env.contains(expected), "{expected} missing from {env:?}");
    }
    assert!(
        !out.contains("LEAK_ME") && !out.contains("DEN_DATA_DIR"),
        "{out}"
    );
}

#[test]
fn proc_is_the_containers_with_host_details_masked() {
    let project = project();
    // Only files this kernel has can be masked.
    let masked: Vec<&str> = ["kcore", "keys", "timer_list", "sched_debug"]
        .into_iter()
        .filter(|file| Path::new("/proc").join(file).exists())
        .collect();
    for runner in runners() {
        let mut script = String::from("cat /proc/1/comm; ls /proc | grep -c '^[0-9]'; ");
        for file in &masked {
            script.push_str(&format!("echo {file} $(head -c 64 /proc/{file} | wc -c); "));
        }
        script.push_str("test -d /proc/acpi && ls -A /proc/acpi | wc -l; true");
        let out = sh_ok(&project, runner, &script);
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("den"), "{runner:?}: pid 1 is den's init");
        let visible: u32 = lines.next().unwrap().parse().unwrap();
        assert!(visible <= 5, "{runner:?}: {visible} processes visible");
        for file in &masked {
            assert_eq!(
                lines.next(),
                Some(format!("{file} 0").as_str()),
                "{runner:?}"
            );
        }
        if Path::new("/proc/acpi").is_dir() {
            assert_eq!(lines.next(), Some("0"), "{runner:?}: /proc/acpi");
        }
    }
}

#[test]
fn sys_is_read_only() {
    let project = project();
    for runner in runners() {
        for network in ["host", "none"] {
            let output = output_within(
                project.den(
                    runner,
                    &[
                        "exec",
                        "--network",
                        network,
                        "bb",
                        "--",
                        "sh",
                        "-c",
                        "grep ' /sys ' /proc/mounts; touch /sys/den-probe",
                    ],
                ),
                b"",
            );
            assert!(!output.status.success(), "{runner:?} {network}: wrote /sys");
            let mount = text(&output.stdout);
            assert!(
                mount
                    .split_whitespace()
                    .nth(3)
                    .unwrap_or("")
                    .starts_with("ro"),
                "{runner:?} {network}: {mount}"
            );
            assert!(
                text(&output.stderr).contains("Read-only file system"),
                "{runner:?} {network}: {}",
                text(&output.stderr)
            );
        }
    }
}

#[test]
fn dev_has_the_usual_nodes_and_tmp_is_writable() {
    let project = project();
    for runner in runners() {
        let out = sh_ok(
            &project,
            runner,
            "for n in null zero full random urandom tty; do test -c /dev/$n || echo missing $n; done; \
             test -c /dev/pts/ptmx && test -e /dev/ptmx && test -d /dev/shm || echo missing pts; \
             echo discarded > /dev/null; head -c 5 /dev/zero | wc -c; head -c 5 /dev/urandom | wc -c; \
             (echo x > /dev/full) 2>/dev/null || echo full-is-full; \
             echo kept > /tmp/f && cat /tmp/f; echo shared > /dev/shm/f && cat /dev/shm/f",
        );
        assert_eq!(out, "5\n5\nfull-is-full\nkept\nshared\n", "{runner:?}");
    }
}

// 9. Root

#[test]
fn root_runs_a_command_and_writes_to_work_as_root() {
    if !harness::running_as_root() {
        return;
    }
    let project = project();
    let dir = writable_dir(&project, Runner::Root);
    let output = output_within(
        project.den_in(
            Runner::Root,
            &dir,
            &["exec", "bb", "--", "sh", "-c", "id -u; pwd; echo hi > f"],
        ),
        b"",
    );
    assert_eq!(success(&output), "0\n/work/root-owned\n");
    let meta = fs::metadata(dir.join("f")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
}
