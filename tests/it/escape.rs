//! The container is a wall: every way out found in the audit of issue 13,
//! tried from inside as an attacker would, in a `den run` command and in
//! a `setup:` step, as the unprivileged test user and as root. Each must
//! fail with the expected errno, and no marker may appear on the host.
//!
//! The attacker is `tests/it/escape/probe.c`, built static by the test and
//! run in the busybox image: each of its subcommands tries one thing and
//! prints `OK` or the errno's name.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::harness::{self, Project, Runner, oci, refused, runners, success, text};

/// Masked paths, and read-only ones (`mount -o remount,rw` is refused
/// too): none may be unmounted from inside.
const MASKS: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/dev/block",
    "/sys/devices/virtual/powercap",
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The test's `den.yaml`; `battery_step` is the attack script for the
/// build step, which copies the probe into the image first.
fn den_yaml(battery_step: &str) -> String {
    format!(
        "\
containers:
  bb:
    from: oci:image:latest
  admin:
    from: oci:image:latest
    caps: [SYS_ADMIN]
  unconfined:
    from: oci:image:latest
    seccomp: unconfined
  small:
    from: oci:image:latest
    limits: {{root: 4M, tmp: 8M, pids: 64}}
  loopback:
    from: oci:image:latest
    host-loopback: true
  u1000:
    from: oci:image:latest
    user: 1000
  step:
    from: oci:image:latest
    setup:
      - copy: {{from: probe, to: /probe}}
      - run: |
{battery_step}
"
    )
}

/// The probe, compiled once per test run.
fn probe_binary() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("den-test-probe-")
            .tempdir()
            .expect("tempdir")
            .keep();
        let binary = dir.join("probe");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/escape/probe.c");
        let output = Command::new("cc")
            .args(["-static", "-O2", "-o"])
            .arg(&binary)
            .arg(&source)
            .output()
            .expect("run cc (.ci/setup installs gcc and libc6-dev)");
        assert!(
            output.status.success(),
            "building the probe failed:\n{}",
            text(&output.stderr)
        );
        harness::give_to_test_user(&dir);
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod probe dir");
        binary
    })
}

/// One attack: a label, the probe's arguments, what it must print.
struct Attack {
    label: String,
    script: String,
    expected: String,
}

fn attack(label: &str, probe_args: &str, expected: &str) -> Attack {
    Attack {
        label: label.to_string(),
        script: format!("echo \"{label}=$($P {probe_args})\""),
        expected: expected.to_string(),
    }
}

/// Every attack of the audit. `marker_dir` is a host directory the test
/// user may write to (relative to `/`), the target of the escapes;
/// `port` is a server on the host's 127.0.0.1.
fn battery(marker_dir: &str, port: u16) -> Vec<Attack> {
    let mut attacks = vec![
        attack("fds", "fds", "0 1 2"),
        attack(
            "proc1-fd-walk",
            &format!("fd-walk 1 {marker_dir} MARK-init"),
            "EACCES",
        ),
        attack(
            "self-fd-walk",
            &format!("fd-walk self {marker_dir} MARK-self"),
            "EACCES",
        ),
        attack("caller-fd-7", "write-through-fd 7 MARK-7", "EBADF"),
        attack("caller-fd-3", "write-through-fd 3 MARK-3", "EBADF"),
        attack("proc1-environ", "read /proc/1/environ", "EACCES"),
        attack("proc1-mem", "read /proc/1/mem", "EACCES"),
        attack("proc1-root", "read /proc/1/root/etc/hostname", "EACCES"),
        attack("ptrace-pid1", "ptrace 1", "EPERM"),
        attack("keyctl", "syscall keyctl", "ENOSYS"),
        attack("add_key", "syscall add_key", "ENOSYS"),
        attack("io_uring_setup", "syscall io_uring_setup", "ENOSYS"),
        attack("bpf", "syscall bpf", "EPERM"),
        attack("perf_event_open", "syscall perf_event_open", "EPERM"),
        attack("userfaultfd", "syscall userfaultfd", "EPERM"),
        attack("fsopen", "syscall fsopen", "ENOSYS"),
        attack("remount-sys-rw", "remount-rw /sys", "EPERM"),
        attack("remount-proc-sys-rw", "remount-rw /proc/sys", "EPERM"),
        attack("fresh-proc", "mount-proc /tmp", "EPERM"),
        attack("nested-umount-keys", "nested-umount /proc/keys", "EINVAL"),
        attack(
            "host-loopback",
            &format!("connect 10.0.2.2 {port}"),
            "ECONNREFUSED",
        ),
        attack("shm-2g", "fill /dev/shm/fill 2048", "ENOSPC"),
        Attack {
            label: "foreign-arch".into(),
            // Killed by SIGSYS: the shell reports 128 + 31. (Build steps
            // run under `sh -e`.)
            script: "code=0; $P foreign-arch >/dev/null 2>&1 || code=$?; \
                     echo \"foreign-arch=$code\""
                .into(),
            expected: "159".into(),
        },
        Attack {
            label: "caps".into(),
            script: "echo \"caps=$(sed -n 's/^CapEff:\\t//p;s/^CapBnd:\\t//p' \
                     /proc/self/status | tr '\\n' ' ')\""
                .into(),
            expected: "00000000800405fb 00000000800405fb ".into(),
        },
    ];
    for mask in MASKS.iter().filter(|mask| Path::new(mask).exists()) {
        attacks.push(attack(
            &format!("umount {mask}"),
            &format!("umount {mask}"),
            "EPERM",
        ));
    }
    attacks
}

/// The attacks as one shell script, the probe at `probe`, indented for
/// a YAML block.
fn script(attacks: &[Attack], probe: &str, indent: usize) -> String {
    let mut lines = vec![format!("P={probe}")];
    lines.extend(attacks.iter().map(|attack| attack.script.clone()));
    lines
        .iter()
        .map(|line| format!("{:indent$}{line}\n", ""))
        .collect()
}

/// `label=result` lines printed by the script.
fn results(output: &str) -> BTreeMap<String, String> {
    output
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(label, result)| (label.to_string(), result.to_string()))
        .collect()
}

#[track_caller]
fn assert_all_refused(attacks: &[Attack], output: &str, context: &str) {
    let results = results(output);
    let failures: Vec<String> = attacks
        .iter()
        .filter(|attack| results.get(&attack.label) != Some(&attack.expected))
        .map(|attack| {
            format!(
                "{}: got {:?}, expected {:?}",
                attack.label,
                results.get(&attack.label),
                attack.expected
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{context}: attacks that did not fail as expected:\n  {}\nwhole output:\n{output}",
        failures.join("\n  ")
    );
}

/// A project set up for attacks: the busybox image, the probe at /work/probe,
/// a marker directory of the test user's, a server on 127.0.0.1.
struct Scene {
    project: Project,
    attacks: Vec<Attack>,
    markers: PathBuf,
    /// Listening, never accepting: a connection is enough to tell.
    server: TcpListener,
}

impl Scene {
    fn new() -> Scene {
        let server = TcpListener::bind("127.0.0.1:0").expect("bind a host server");
        let port = server.local_addr().expect("server address").port();
        let project = Project::new("");
        // The project's own home directory stands for the user's home.
        let markers = project.home.clone();
        let marker_rel = markers
            .strip_prefix("/")
            .expect("an absolute home")
            .to_string_lossy()
            .into_owned();
        let attacks = battery(&marker_rel, port);
        fs::write(
            project.root.join("den.yaml"),
            den_yaml(&script(&attacks, "/probe", 10)),
        )
        .expect("write den.yaml");
        oci::write_busybox(&project.root.join("image"));
        fs::copy(probe_binary(), project.root.join("probe")).expect("copy the probe");
        project.hand_over();
        Scene {
            project,
            attacks,
            markers,
            server,
        }
    }

    /// den with descriptors 3 and 7 open on the marker directory, as a
    /// caller's shell (`exec 7<~`) or `flock ~ den …` would leave them.
    fn den(&self, runner: Runner, args: &[&str]) -> Output {
        let mut command = self.project.den(runner, args);
        let home = fs::File::open(&self.markers).expect("open the marker directory");
        let fd = home.as_raw_fd();
        // SAFETY: only dup2 between fork and exec, which is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                for target in [3, 7] {
                    if libc::dup2(fd, target) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let output = harness::bounded(command);
        drop(home);
        output
    }

    #[track_caller]
    fn assert_no_marker(&self) {
        let found: Vec<_> = fs::read_dir(&self.markers)
            .expect("list the marker directory")
            .filter_map(Result::ok)
            .map(|entry| entry.file_name())
            .filter(|name| name.to_string_lossy().starts_with("MARK"))
            .collect();
        assert!(
            found.is_empty(),
            "the container wrote {found:?} on the host"
        );
    }
}

/// `den exec <container> -- sh -c <script>` output, the probe at /work/probe.
fn exec_script(scene: &Scene, runner: Runner, container: &str, script: &str) -> Output {
    let full = format!("P=/work/probe\n{script}");
    scene.den(runner, &["exec", container, "--", "sh", "-c", &full])
}

#[test]
fn every_escape_fails_in_a_command() {
    let scene = Scene::new();
    let script = script(&scene.attacks, "/work/probe", 0);
    for runner in runners() {
        let output = scene.den(runner, &["exec", "bb", "--", "sh", "-c", &script]);
        let stdout = success(&output);
        assert_all_refused(&scene.attacks, &stdout, &format!("{runner:?} den exec"));
        scene.assert_no_marker();
    }
}

#[test]
fn every_escape_fails_in_a_setup_step() {
    let scene = Scene::new();
    for runner in runners() {
        let output = scene.den(runner, &["build", "step"]);
        success(&output);
        // A build step's output goes to den's stderr without a terminal.
        let stderr = text(&output.stderr);
        assert_all_refused(&scene.attacks, &stderr, &format!("{runner:?} setup step"));
        scene.assert_no_marker();
    }
}

#[test]
fn masks_stay_locked_even_with_sys_admin() {
    let scene = Scene::new();
    let mut script = String::new();
    for mask in MASKS.iter().filter(|mask| Path::new(mask).exists()) {
        script.push_str(&format!("echo \"{mask}=$($P umount {mask})\"\n"));
    }
    script.push_str("echo \"remount-sys=$($P remount-rw /sys)\"\n");
    script.push_str("echo \"fresh-proc=$($P mount-proc /tmp)\"\n");
    for runner in runners() {
        for network in ["slirp", "host"] {
            let output = scene.den(
                runner,
                &[
                    "exec",
                    "--network",
                    network,
                    "admin",
                    "--",
                    "sh",
                    "-c",
                    &format!("P=/work/probe\n{script}"),
                ],
            );
            let results = results(&success(&output));
            let context = format!("{runner:?} --network {network}");
            for (path, result) in &results {
                // A locked mount: the capability is there, the kernel says no.
                let expected = match path.as_str() {
                    "remount-sys" | "fresh-proc" => "EPERM",
                    _ => "EINVAL",
                };
                assert_eq!(result, expected, "{context}: {path}");
            }
            assert!(results.len() > 5, "{context}: {results:?}");
        }
    }
}

#[test]
fn the_session_keyring_is_a_new_one() {
    let scene = Scene::new();
    let probe = scene.project.root.join("probe");
    let with_key = [
        probe.as_os_str(),
        "with-session-key".as_ref(),
        "den-secret".as_ref(),
    ];
    let project = &scene.project;
    for runner in runners() {
        // Control: a program of the same session finds the key (the
        // probe runs as den would, started by `with-session-key`).
        let control = Command::new("setpriv")
            .args(["--reuid", &harness::test_ids().0.to_string()])
            .args([
                "--regid",
                &harness::test_ids().1.to_string(),
                "--clear-groups",
                "--",
            ])
            .args(with_key)
            .arg(&probe)
            .args(["keyring-search", "den-secret"])
            .output()
            .expect("run the probe");
        assert_eq!(text(&control.stdout).trim(), "OK", "control: {control:?}");
        // Inside, even with seccomp off: not found.
        let inside = project.den_through(
            runner,
            &project.root,
            &with_key,
            &[
                "exec",
                "unconfined",
                "--",
                "/work/probe",
                "keyring-search",
                "den-secret",
            ],
        );
        let output = harness::bounded(inside);
        assert_eq!(success(&output).trim(), "ENOKEY", "{runner:?}");
    }
}

#[test]
fn the_hosts_loopback_is_reached_only_when_asked_for() {
    let scene = Scene::new();
    let port = scene.server.local_addr().expect("address").port();
    let connect = format!("$P connect 10.0.2.2 {port}");
    for runner in runners() {
        let refused = exec_script(&scene, runner, "bb", &connect);
        assert_eq!(
            success(&refused).trim(),
            "ECONNREFUSED",
            "{runner:?} default"
        );
        let reached = exec_script(&scene, runner, "loopback", &connect);
        assert_eq!(
            success(&reached).trim(),
            "OK",
            "{runner:?} host-loopback: true"
        );
    }
}

#[test]
fn memory_filesystems_and_processes_are_bounded() {
    let scene = Scene::new();
    let script = "echo \"root=$($P fill /fill 16)\"\n\
                  echo \"tmp=$($P fill /tmp/fill 16)\"\n\
                  echo \"shm=$($P fill /dev/shm/fill 128)\"\n\
                  echo \"run-den=$($P fill /run/den/fill 32)\"\n\
                  echo \"forks=$($P fork 200)\"\n\
                  df -k /tmp /dev/shm /run/den | sed 1d | awk '{print $2}' | tr '\\n' ' '";
    for runner in runners() {
        let output = success(&exec_script(&scene, runner, "small", script));
        let results = results(&output);
        assert_eq!(results["root"], "ENOSPC", "{runner:?}: {output}");
        assert_eq!(results["tmp"], "ENOSPC", "{runner:?}: {output}");
        assert_eq!(results["shm"], "ENOSPC", "{runner:?}: {output}");
        assert_eq!(results["run-den"], "ENOSPC", "{runner:?}: {output}");
        // RLIMIT_NPROC does not bind root of the host (kernel rule).
        if runner == Runner::User {
            assert_eq!(results["forks"], "EAGAIN", "{runner:?}: {output}");
        }
        let sizes = output.lines().last().unwrap_or_default();
        assert_eq!(sizes.trim(), "8192 65536 16384", "{runner:?}: sizes in KiB");
    }
}

#[test]
fn only_stdio_and_preserved_descriptors_reach_the_command() {
    let scene = Scene::new();
    for runner in runners() {
        let plain = exec_script(&scene, runner, "bb", "$P fds");
        assert_eq!(success(&plain).trim(), "0 1 2", "{runner:?}");
        // Passed on purpose, descriptor 3 reaches the marker directory.
        let passed = scene.den(
            runner,
            &[
                "exec",
                "--preserve-fds",
                "1",
                "bb",
                "--",
                "sh",
                "-c",
                "/work/probe fds; /work/probe write-through-fd 3 MARK-passed",
            ],
        );
        // Root of the host, unmapped owner of nothing in a user namespace,
        // may not write in the test user's directory; the test user may.
        let (expected, landed) = match runner {
            Runner::User => ("0 1 2 3\nOK\n", true),
            Runner::Root => ("0 1 2 3\nEACCES\n", false),
        };
        assert_eq!(success(&passed), expected, "{runner:?}");
        assert_eq!(scene.markers.join("MARK-passed").exists(), landed);
        let _ = fs::remove_file(scene.markers.join("MARK-passed"));
        let closed = scene.den(runner, &["exec", "--preserve-fds", "3", "bb", "--", "true"]);
        refused(&closed, &["--preserve-fds 3", "descriptor 4 is not open"]);
    }
}

#[test]
fn a_user_other_than_root_holds_no_capability() {
    let scene = Scene::new();
    let caps = "sed -n 's/^Cap\\(Eff\\|Bnd\\):\\t//p' /proc/self/status | tr '\\n' ' '";
    for runner in runners() {
        let output = exec_script(&scene, runner, "u1000", caps);
        assert_eq!(
            success(&output),
            "0000000000000000 00000000800405fb ",
            "{runner:?}"
        );
    }
}

#[test]
fn the_nested_namespace_still_binds_low_ports_and_pings() {
    let scene = Scene::new();
    let script = "$P bind 80; $P ping 10.0.2.2";
    for runner in runners() {
        for container in ["bb", "u1000"] {
            let output = exec_script(&scene, runner, container, script);
            assert_eq!(success(&output), "OK\nOK\n", "{runner:?} {container}");
        }
    }
}

#[test]
fn dens_environment_is_wiped_from_pid_1() {
    // Reading a non-dumpable process's environ takes root of the host:
    // the suite does it from outside, as root, while the container runs.
    if !harness::running_as_root() {
        return;
    }
    let scene = Scene::new();
    for (index, runner) in runners().into_iter().enumerate() {
        let mark = harness::spawned::marker(7 + index as u32);
        let secret = format!("den-test-token-{mark}");
        let mut command = scene
            .project
            .den(runner, &["exec", "bb", "--", "sleep", &mark]);
        command.env("DEN_TEST_TOKEN", &secret);
        let den = harness::spawned::Spawned::start(command);
        let mut sleepers = Vec::new();
        assert!(
            harness::spawned::eventually(harness::spawned::TIMEOUT, || {
                sleepers = harness::spawned::processes_with_argv(&["sleep", &mark]);
                !sleepers.is_empty()
            }),
            "{runner:?}: the container never started"
        );
        let init = parent_of(sleepers[0]);
        let den_environ = fs::read(format!("/proc/{}/environ", den.pid())).expect("den's environ");
        assert!(
            contains(&den_environ, secret.as_bytes()),
            "control: den holds the token"
        );
        let init_environ = fs::read(format!("/proc/{init}/environ")).expect("init's environ");
        assert!(
            !contains(&init_environ, secret.as_bytes()),
            "{runner:?}: pid 1 still shows den's environment"
        );
        assert!(
            init_environ.iter().all(|&byte| byte == 0),
            "{runner:?}: {init_environ:?}"
        );
        drop(den);
    }
}

fn parent_of(pid: u32) -> u32 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after_name = stat.rsplit_once(')').expect("stat has a name").1;
    after_name
        .split_whitespace()
        .nth(1)
        .and_then(|ppid| ppid.parse().ok())
        .expect("a parent pid")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
