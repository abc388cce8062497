//! `bootstrap:` end to end, den running as the unprivileged test user
//! (unless a test says otherwise). What the tests show:
//!
//! - Real archives: `debian/bookworm` from deb.debian.org and
//!   `ubuntu/noble` from archive.ubuntu.com become working systems whose
//!   `install:` steps run apt (python3 prints 42, `hello` greets); den.lock
//!   records the package set; with den.lock and the layer present a second
//!   run uses no network at all (a dead proxy changes nothing, while
//!   without den.lock it stops den).
//! - Trust: through a local mirror (`harness::mirror`) that lies, a changed
//!   InRelease, a Packages.xz that does not match InRelease and a .deb
//!   that does not match its index are each refused with den's error
//!   (exit 125) before dpkg runs, leaving no layer and no den.lock.
//! - den.lock reproduces: root, with its own store and an empty cache,
//!   installs exactly the versions the user's den.lock names, and leaves
//!   den.lock as it was; a pin the mirror cannot serve is refused with
//!   the package named.
//! - Interrupted bootstraps resume: killed during the download, the next
//!   run fetches only the .debs not yet verified; killed while dpkg runs,
//!   dpkg dies with den and the next run starts the system afresh; either
//!   way the store ends with one layer and nothing in its tmp.
//!
//! A bootstrap takes 30-60 s here (mostly dpkg), so there are few.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::mirror::{Mirror, Tamper};
use crate::harness::{self, Project, Runner, refused, run_bounded, running_as_root, success, text};
use serde_json::Value;

/// Any single den call; a bootstrap with an install step can take minutes
/// on a loaded machine.
const LIMIT: Duration = Duration::from_secs(600);

fn den(project: &Project, runner: Runner, args: &[&str]) -> Output {
    run_bounded(project.den(runner, args), LIMIT)
}

fn den_with(mut command: Command, env: &[(&str, &Path)]) -> Output {
    for (name, value) in env {
        command.env(name, value);
    }
    run_bounded(command, LIMIT)
}

/// A project bootstrapping bookworm from `mirror`, with a command that
/// lists the installed packages.
fn mirror_project(mirror: &Mirror) -> Project {
    Project::new(&format!(
        "\
containers:
  base:
    bootstrap:
      distro: debian/bookworm
      mirror: {}
commands:
  pkgs:
    container: base
    run: dpkg-query -W -f='${{Package}} ${{Version}}\\n'
",
        mirror.url()
    ))
}

/// `name version` lines → map.
fn package_list(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .map(|line| {
            let (name, version) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("not `name version`: {line:?}"));
            (name.to_string(), version.to_string())
        })
        .collect()
}

fn read_lock(project: &Project) -> Value {
    let path = project.root.join("den.lock");
    let bytes = fs::read(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    serde_json::from_slice(&bytes).expect("den.lock is JSON")
}

/// den.lock's `bootstraps.<container>`.
fn lock_entry(project: &Project, container: &str) -> Value {
    let lock = read_lock(project);
    lock["bootstraps"][container].clone()
}

fn locked_packages(entry: &Value) -> BTreeMap<String, String> {
    entry["packages"]
        .as_object()
        .unwrap_or_else(|| panic!("no packages in {entry}"))
        .iter()
        .map(|(name, version)| {
            (
                name.clone(),
                version.as_str().expect("a version").to_string(),
            )
        })
        .collect()
}

/// Names in `dir`, none if it does not exist.
fn entries(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(list) => list
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => panic!("read {}: {err}", dir.display()),
    }
}

fn layers(data: &Path) -> Vec<String> {
    entries(&data.join("layers"))
}

/// The test user's cache of verified .debs (HOME is the project's).
fn deb_cache(home: &Path) -> PathBuf {
    home.join(".cache/den/bootstrap/debs")
}

fn cached_debs(home: &Path) -> usize {
    entries(&deb_cache(home))
        .iter()
        .filter(|name| name.ends_with(".deb"))
        .count()
}

/// The `fetching N of M packages` line's N and M, if den printed one.
fn fetching(stderr: &str) -> Option<(usize, usize)> {
    let line = stderr.lines().find(|line| line.contains(": fetching "))?;
    let rest = line.split(": fetching ").nth(1)?;
    let mut words = rest.split_whitespace();
    let count = words.next()?.parse().ok()?;
    assert_eq!(words.next(), Some("of"), "{line}");
    let total = words.next()?.parse().ok()?;
    Some((count, total))
}

/// A directory the test user may use as a store or home.
fn user_dir(temp: &tempfile::TempDir, name: &str) -> PathBuf {
    let dir = temp.path().join(name);
    fs::create_dir(&dir).unwrap();
    harness::give_to_test_user(&dir);
    dir
}

fn scratch() -> tempfile::TempDir {
    let temp = tempfile::Builder::new()
        .prefix("den-test-bootstrap-")
        .tempdir()
        .expect("tempdir");
    fs::set_permissions(temp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    temp
}

fn took(what: &str, started: Instant) {
    eprintln!("{what}: {:.1} s", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------
// Real archives.

#[test]
fn bookworm_from_debian_installs_python_and_reruns_offline() {
    let project = Project::new(
        "\
containers:
  deb:
    bootstrap: debian/bookworm
    setup:
      - install: [python3]
commands:
  answer:
    container: deb
    run: python3 -c 'print(6*7)'
",
    );
    let started = Instant::now();
    let first = den(&project, Runner::User, &["run", "answer"]);
    took("bookworm bootstrap + install python3", started);
    let stderr = text(&first.stderr);
    assert_eq!(success(&first), "42\n", "stderr:\n{stderr}");
    assert!(
        stderr.contains("den: deb: bootstrap debian/bookworm: Debian signed "),
        "{stderr}"
    );
    assert!(fetching(&stderr).is_some(), "{stderr}");
    assert!(stderr.contains("; configuring them with dpkg"), "{stderr}");
    assert!(stderr.contains(": dpkg done in "), "{stderr}");

    let entry = lock_entry(&project, "deb");
    assert_eq!(entry["bootstrap"], "debian/bookworm", "{entry}");
    assert_eq!(entry["mirror"], "http://deb.debian.org/debian", "{entry}");
    assert_eq!(entry["components"], serde_json::json!(["main"]), "{entry}");
    assert_eq!(entry["variant"], "minbase", "{entry}");
    if cfg!(target_arch = "x86_64") {
        assert_eq!(entry["arch"], "amd64", "{entry}");
    }
    assert!(
        entry["inrelease"]
            .as_str()
            .is_some_and(|digest| digest.starts_with("sha256:") && digest.len() == 71),
        "{entry}"
    );
    assert!(
        entry["date"].as_str().is_some_and(|date| !date.is_empty()),
        "{entry}"
    );
    let packages = locked_packages(&entry);
    for name in ["libc6", "apt", "dpkg", "base-files"] {
        assert!(packages.contains_key(name), "{name} not locked: {entry}");
    }
    // minbase, not the user's install: python3 came from a setup step.
    assert!(!packages.contains_key("python3"), "{entry}");
    let lock_before = fs::read(project.root.join("den.lock")).unwrap();

    // With den.lock and the layer, no network: a dead proxy changes nothing.
    let dead = Path::new("http://127.0.0.1:9");
    let started = Instant::now();
    let offline = den_with(
        project.den(Runner::User, &["run", "answer"]),
        &[("http_proxy", dead), ("HTTP_PROXY", dead)],
    );
    took("bookworm rerun", started);
    let stderr = text(&offline.stderr);
    assert_eq!(success(&offline), "42\n", "stderr:\n{stderr}");
    assert!(!stderr.contains("fetching"), "{stderr}");
    assert!(!stderr.contains(" signed "), "{stderr}");
    assert_eq!(
        fs::read(project.root.join("den.lock")).unwrap(),
        lock_before
    );

    // The control: without den.lock den must ask the archive, and the dead
    // proxy stops it, so the run above really used no network.
    let lock = project.root.join("den.lock");
    let aside = project.root.join("den.lock.aside");
    fs::rename(&lock, &aside).unwrap();
    let needs_network = den_with(
        project.den(Runner::User, &["run", "answer"]),
        &[("http_proxy", dead), ("HTTP_PROXY", dead)],
    );
    refused(
        &needs_network,
        &["cannot fetch http://deb.debian.org/debian/dists/bookworm/InRelease"],
    );
    assert!(!lock.exists());
    fs::rename(&aside, &lock).unwrap();
}

#[test]
fn noble_from_ubuntu_installs_hello() {
    let project = Project::new(
        "\
containers:
  ubuntu:
    bootstrap: ubuntu/noble
    setup:
      - install: [hello]
commands:
  hello:
    container: ubuntu
    run: hello
",
    );
    let started = Instant::now();
    let output = den(&project, Runner::User, &["run", "hello"]);
    took("noble bootstrap + install hello", started);
    let stderr = text(&output.stderr);
    assert_eq!(success(&output), "Hello, world!\n", "stderr:\n{stderr}");
    assert!(
        stderr.contains("den: ubuntu: bootstrap ubuntu/noble: Ubuntu signed "),
        "{stderr}"
    );
    let entry = lock_entry(&project, "ubuntu");
    assert_eq!(
        entry["mirror"], "http://archive.ubuntu.com/ubuntu",
        "{entry}"
    );
    let packages = locked_packages(&entry);
    for name in ["libc6", "apt", "dpkg", "base-files"] {
        assert!(packages.contains_key(name), "{name} not locked: {entry}");
    }
}

// ---------------------------------------------------------------------------
// A lying mirror.

/// Bootstraps from a mirror telling `lie`: den must refuse saying each of
/// `needles` before dpkg runs, and keep nothing. Returns den's stderr,
/// the mirror and the project.
fn refused_for(lie: Tamper, needles: &[&str]) -> (String, Mirror, Project) {
    let mirror = Mirror::start();
    mirror.tamper(lie);
    let project = mirror_project(&mirror);
    let output = den(&project, Runner::User, &["run", "pkgs"]);
    let stderr = refused(&output, needles);
    eprintln!("den said:\n{stderr}");
    assert!(text(&output.stdout).is_empty(), "{}", text(&output.stdout));
    assert!(!stderr.contains("configuring them with dpkg"), "{stderr}");
    assert!(
        layers(&project.data).is_empty(),
        "layers: {:?}\n{stderr}",
        layers(&project.data)
    );
    assert!(!project.root.join("den.lock").exists(), "{stderr}");
    (stderr, mirror, project)
}

#[test]
fn a_changed_inrelease_is_refused() {
    let (stderr, mirror, _project) = refused_for(
        Tamper::InRelease,
        &["/dists/bookworm/InRelease failed its signature check"],
    );
    assert!(stderr.contains(&mirror.url()), "{stderr}");
    // Nothing past InRelease was even asked for.
    let requests = mirror.requests();
    assert!(
        requests.iter().all(|path| path.ends_with("/InRelease")),
        "{requests:?}"
    );
}

/// `keyring:` replaces den's shipped keys: Debian's genuine InRelease,
/// checked against Ubuntu's keys only, is refused before anything else
/// is fetched.
#[test]
fn a_keyring_replaces_the_shipped_keys() {
    let mirror = Mirror::start();
    let project = Project::new(&format!(
        "containers:\n  base:\n    bootstrap:\n      distro: debian/bookworm\n      \
         mirror: {}\n      keyring: keys/ubuntu.gpg\n",
        mirror.url()
    ));
    let keys = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/build/bootstrap/keys/ubuntu-archive-keys.gpg");
    fs::create_dir(project.root.join("keys")).unwrap();
    fs::copy(keys, project.root.join("keys/ubuntu.gpg")).unwrap();
    project.hand_over();
    let output = den(&project, Runner::User, &["build", "base"]);
    let stderr = refused(
        &output,
        &[
            "InRelease failed its signature check",
            "signed only by keys not in the keyring",
        ],
    );
    assert!(layers(&project.data).is_empty(), "{stderr}");
    let requests = mirror.requests();
    assert!(
        requests.iter().all(|path| path.ends_with("/InRelease")),
        "{requests:?}"
    );
}

#[test]
fn a_packages_index_not_matching_inrelease_is_refused() {
    let (stderr, mirror, project) = refused_for(
        Tamper::PackagesIndex,
        &[
            "/dists/bookworm/main/binary-",
            "/by-hash/SHA256/",
            " has sha256 ",
            ", but InRelease says ",
        ],
    );
    // The hash den found is not the one it expected, and nothing was kept.
    let expected = stderr
        .split(", but InRelease says ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the expected sha256")
        .to_string();
    let url = format!("by-hash/SHA256/{expected} has sha256 ");
    assert!(stderr.contains(&url), "{stderr}");
    assert!(
        !stderr.contains(&format!("{url}{expected}")),
        "found == expected?\n{stderr}"
    );
    let indexes = project.home.join(".cache/den/bootstrap/indexes");
    assert!(!indexes.join(&expected).exists(), "{stderr}");
    assert_eq!(mirror.debs_served(), 0, "{:?}", mirror.requests());
}

#[test]
fn a_deb_not_matching_its_index_is_refused() {
    let (stderr, _mirror, project) = refused_for(
        Tamper::Deb("base-files".to_string()),
        &[
            "package base-files ",
            "/base-files_",
            ".deb has sha256 ",
            ", but the Packages index says ",
        ],
    );
    let expected = stderr
        .split(", but the Packages index says ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the expected sha256")
        .to_string();
    let cache = deb_cache(&project.home);
    assert!(
        !cache.join(format!("{expected}.deb")).exists(),
        "the bad .deb was cached"
    );
    // The failed download left no temporary file behind either.
    let leftovers = entries(&cache.join("tmp"));
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

// ---------------------------------------------------------------------------
// den.lock.

#[test]
fn den_lock_reproduces_the_same_system() {
    let mirror = Mirror::start();
    let project = mirror_project(&mirror);

    let started = Instant::now();
    let user = den(&project, Runner::User, &["run", "pkgs"]);
    took("bootstrap as the user", started);
    let user_packages = package_list(&success(&user));
    let lock_bytes = fs::read(project.root.join("den.lock")).expect("den.lock written");
    let entry = lock_entry(&project, "base");
    assert_eq!(entry["mirror"], mirror.url(), "{entry}");
    let locked = locked_packages(&entry);
    assert_eq!(user_packages, locked, "dpkg-query vs den.lock");

    // Root (or, when the suite is not root, the user again) with its own
    // store and an empty cache: the same versions, den.lock untouched.
    let temp = scratch();
    let (runner, data) = match running_as_root() {
        true => (Runner::Root, project.data_dir(Runner::Root)),
        false => (Runner::User, user_dir(&temp, "data")),
    };
    let home = user_dir(&temp, "home");
    let debs_before = mirror.debs_served();
    let started = Instant::now();
    let again = den_with(
        project.den(runner, &["run", "pkgs"]),
        &[("HOME", &home), ("DEN_DATA_DIR", &data)],
    );
    took("the same bootstrap from den.lock as root", started);
    let stderr = text(&again.stderr);
    let again_packages = package_list(&success(&again));
    assert_eq!(again_packages, locked, "stderr:\n{stderr}");
    assert_eq!(
        fs::read(project.root.join("den.lock")).unwrap(),
        lock_bytes,
        "den.lock changed"
    );
    // It really made the system again, from an empty cache.
    assert_eq!(layers(&data).len(), 1, "{stderr}");
    assert_eq!(
        fetching(&stderr),
        Some((locked.len(), locked.len())),
        "{stderr}"
    );
    assert_eq!(mirror.debs_served() - debs_before, locked.len());

    // A pin the mirror does not have: refused, naming it.
    let edited = String::from_utf8(lock_bytes.clone()).unwrap().replacen(
        &format!("\"base-files\": \"{}\"", locked["base-files"]),
        "\"base-files\": \"0.0-gone\"",
        1,
    );
    assert!(edited.contains("\"base-files\": \"0.0-gone\""), "{edited}");
    fs::write(project.root.join("den.lock"), &edited).unwrap();
    project.hand_over();
    let fresh = user_dir(&temp, "fresh-data");
    let started = Instant::now();
    let gone = den_with(
        project.den(Runner::User, &["run", "pkgs"]),
        &[("DEN_DATA_DIR", &fresh)],
    );
    took("refusing a pin the mirror lacks", started);
    let stderr = refused(
        &gone,
        &["no longer has all of it", "base-files", "0.0-gone"],
    );
    eprintln!("den said:\n{stderr}");
    assert!(layers(&fresh).is_empty(), "{:?}", layers(&fresh));
    assert_eq!(
        fs::read_to_string(project.root.join("den.lock")).unwrap(),
        edited,
        "den.lock changed"
    );
}

// ---------------------------------------------------------------------------
// Interrupted bootstraps.

/// den running in the background, its stderr collected line by line.
struct Background {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Background {
    fn start(mut command: Command) -> Background {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn den");
        let pipe = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let collected = Arc::clone(&stderr);
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut all = collected.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        Background { child, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until `condition` holds; fails if den exits first or it
    /// takes longer than `limit`.
    #[track_caller]
    fn wait_for(&mut self, what: &str, limit: Duration, mut condition: impl FnMut(&str) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            if condition(&self.stderr()) {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!("den exited ({status}) before {what}:\n{}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {limit:?}:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs den and reaps it.
    fn kill(&mut self) {
        // SAFETY: kill has no memory-safety preconditions.
        let ret = unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        assert_eq!(ret, 0, "kill den");
        let status = self.child.wait().expect("wait for den");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "{status}"
        );
    }
}

/// Every process below `pid` (children of children too).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents = BTreeMap::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes come and go while we look: a vanished one is skipped.
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let parent = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if let Some(parent) = parent {
            parents.insert(child, parent);
        }
    }
    let mut found = vec![pid];
    let mut at = 0;
    while at < found.len() {
        let parent = found[at];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| **p == parent)
                .map(|(child, _)| *child),
        );
        at += 1;
    }
    found.remove(0);
    found
}

/// The program name (`comm`) of process `pid`, if it still runs.
fn program_of(pid: u32) -> Option<String> {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end().to_string())
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn an_interrupted_bootstrap_resumes() {
    const SERVED_BEFORE_KILL: usize = 20;
    let mirror = Mirror::start();
    let project = mirror_project(&mirror);

    // Killed during the download: 20 .debs served, the rest held.
    mirror.hold_debs_after(SERVED_BEFORE_KILL as u64);
    let started = Instant::now();
    let mut first = Background::start(project.den(Runner::User, &["run", "pkgs"]));
    first.wait_for("20 .debs fetched", LIMIT, |_| {
        mirror.debs_served() >= SERVED_BEFORE_KILL
            && cached_debs(&project.home) >= SERVED_BEFORE_KILL
            && mirror.debs_waiting() > 0
    });
    first.kill();
    took("until the kill in the download", started);
    let stderr = first.stderr();
    let (count, total) = fetching(&stderr).unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(count, total, "a cold cache fetches all:\n{stderr}");
    assert!(total > SERVED_BEFORE_KILL, "{stderr}");
    let kept = cached_debs(&project.home);
    assert_eq!(kept, SERVED_BEFORE_KILL, "only verified .debs are kept");
    assert!(layers(&project.data).is_empty());
    assert!(!project.root.join("den.lock").exists());
    let temp_files = entries(&deb_cache(&project.home).join("tmp"));
    eprintln!("download temp files left by the kill: {temp_files:?}");

    // The rerun fetches only the rest, and completes.
    mirror.release_debs();
    let served_before = mirror.debs_served();
    let started = Instant::now();
    let second = den(&project, Runner::User, &["run", "pkgs"]);
    took("the rerun to completion", started);
    let stderr = text(&second.stderr);
    let installed = package_list(&success(&second));
    assert_eq!(installed.len(), total, "{stderr}");
    assert_eq!(fetching(&stderr), Some((total - kept, total)), "{stderr}");
    assert_eq!(mirror.debs_served() - served_before, total - kept);
    assert_eq!(layers(&project.data).len(), 1);
    let tmp = entries(&project.data.join("tmp"));
    assert!(tmp.is_empty(), "store tmp: {tmp:?}");
    assert_eq!(locked_packages(&lock_entry(&project, "base")), installed);
    let temp_files = entries(&deb_cache(&project.home).join("tmp"));
    eprintln!("download temp files after the rerun: {temp_files:?}");

    // Killed while dpkg runs (a new store, the .debs cached): the rerun
    // makes the system from scratch and keeps one layer.
    let temp = scratch();
    let data = user_dir(&temp, "data");
    let started = Instant::now();
    let mut command = project.den(Runner::User, &["run", "pkgs"]);
    command.env("DEN_DATA_DIR", &data);
    let mut third = Background::start(command);
    let den_pid = third.child.id();
    third.wait_for("dpkg", LIMIT, |stderr| {
        stderr.contains("; configuring them with dpkg")
    });
    // den announces dpkg before starting the container: wait for dpkg itself.
    third.wait_for("dpkg running in the container", LIMIT, |_| {
        descendants(den_pid)
            .into_iter()
            .any(|pid| program_of(pid).as_deref() == Some("dpkg"))
    });
    let container = descendants(den_pid);
    assert!(
        !container.is_empty(),
        "no container processes while dpkg runs"
    );
    third.kill();
    // The container (dpkg and all) dies with den.
    let alive = |pid: &u32| {
        fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while container.iter().any(alive) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<&u32> = container.iter().filter(|pid| alive(pid)).collect();
    assert!(
        left.is_empty(),
        "still running after den was killed: {left:?}"
    );
    took("until the kill in dpkg", started);
    let stderr = third.stderr();
    assert!(fetching(&stderr).is_none(), "{stderr}");
    assert!(layers(&data).is_empty(), "{:?}", layers(&data));
    eprintln!(
        "store tmp after the kill in dpkg: {:?}",
        entries(&data.join("tmp"))
    );
    let lock_before = fs::read(project.root.join("den.lock")).unwrap();

    let started = Instant::now();
    let fourth = den_with(
        project.den(Runner::User, &["run", "pkgs"]),
        &[("DEN_DATA_DIR", &data)],
    );
    took("the rerun after the kill in dpkg", started);
    let stderr = text(&fourth.stderr);
    assert_eq!(package_list(&success(&fourth)), installed, "{stderr}");
    assert!(fetching(&stderr).is_none(), "{stderr}");
    assert_eq!(layers(&data).len(), 1, "{:?}", layers(&data));
    let tmp = entries(&data.join("tmp"));
    assert!(tmp.is_empty(), "store tmp: {tmp:?}");
    assert_eq!(
        fs::read(project.root.join("den.lock")).unwrap(),
        lock_before
    );
}
