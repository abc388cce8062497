//! `setup:` builds end to end, with den as the unprivileged test user:
//! steps become layers that `den run` uses, the no-op check builds
//! nothing, an edited copied file rebuilds from its step only, a failing
//! step records nothing and keeps the previous build, chown to ids that
//! are not mapped is recorded, and two dens needing one build share it.
//! The Debian test installs real packages from Debian's archive and a
//! Python package from PyPI over https.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::harness::oci;
use crate::harness::registry::{self, Auth, Registry};
use crate::harness::{
    DEN_TIME_LIMIT, Project, Runner, bounded, refused, run_bounded, success, text,
};

const BUSYBOX_YAML: &str = "\
containers:
  dev:
    from: oci:image:latest
    setup:
      - run: echo one > /one
      - text:
          to: /etc/greeting
          content: |
            hello from text
          mode: 0640
      - env:
          GREETING_FILE: /etc/greeting
      - copy:
          from: src
          to: /opt/src
          exclude: ['*.tmp']
      - run: cat /opt/src/a.txt > /opt/copied-a
commands:
  show:
    container: dev
    run: cat /one $GREETING_FILE /opt/src/a.txt /opt/copied-a; ls /opt/src; stat -c '%a' /etc/greeting
";

fn busybox_project(den_yaml: &str) -> Project {
    let project = Project::new(den_yaml);
    oci::write_busybox(&project.root.join("image"));
    fs::create_dir_all(project.root.join("src/sub")).unwrap();
    fs::write(project.root.join("src/a.txt"), "a1\n").unwrap();
    fs::write(project.root.join("src/sub/b.txt"), "b\n").unwrap();
    fs::write(project.root.join("src/skip.tmp"), "no\n").unwrap();
    project.hand_over();
    project
}

fn den(project: &Project, args: &[&str]) -> Output {
    bounded(project.den(Runner::User, args))
}

/// Lines of den's stderr that report a step.
fn step_lines(output: &Output) -> Vec<String> {
    text(&output.stderr)
        .lines()
        .filter(|line| line.contains(": step "))
        .map(str::to_string)
        .collect()
}

fn built(lines: &[String]) -> usize {
    lines
        .iter()
        .filter(|line| line.contains(" done in "))
        .count()
}

fn cached(lines: &[String]) -> usize {
    lines
        .iter()
        .filter(|line| line.ends_with("(cached)"))
        .count()
}

#[test]
fn steps_build_once_and_an_edit_rebuilds_from_its_step() {
    let project = busybox_project(BUSYBOX_YAML);
    let first = den(&project, &["run", "show"]);
    let out = success(&first);
    assert_eq!(
        out,
        "one\nhello from text\na1\na1\na.txt\nsub\n640\n",
        "stderr:\n{}",
        text(&first.stderr)
    );
    // env makes no container; every other step is built once.
    assert_eq!(built(&step_lines(&first)), 4, "{}", text(&first.stderr));

    // Nothing changed: no step is even looked at.
    let again = den(&project, &["run", "show"]);
    assert_eq!(success(&again), out);
    assert!(step_lines(&again).is_empty(), "{}", text(&again.stderr));

    // An excluded file changes nothing either.
    fs::write(project.root.join("src/skip.tmp"), "still no\n").unwrap();
    let excluded = den(&project, &["run", "show"]);
    assert_eq!(success(&excluded), out);
    assert_eq!(
        built(&step_lines(&excluded)),
        0,
        "{}",
        text(&excluded.stderr)
    );

    // Editing a copied file rebuilds from the copy step on.
    fs::write(project.root.join("src/a.txt"), "a2\n").unwrap();
    project.hand_over();
    let edited = den(&project, &["run", "show"]);
    assert_eq!(
        success(&edited),
        "one\nhello from text\na2\na2\na.txt\nsub\n640\n"
    );
    let lines = step_lines(&edited);
    assert_eq!(cached(&lines), 3, "{lines:?}");
    assert_eq!(built(&lines), 2, "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("step 4/5: copy src")),
        "{lines:?}"
    );
}

#[test]
fn a_failing_step_records_nothing_and_the_previous_build_stays() {
    let project = busybox_project(BUSYBOX_YAML);
    let good = success(&den(&project, &["run", "show"]));
    let broken = BUSYBOX_YAML.replace(
        "      - run: cat /opt/src/a.txt > /opt/copied-a\n",
        "      - run: echo about to fail; exit 3\n",
    );
    fs::write(project.root.join("den.yaml"), &broken).unwrap();
    let failed = den(&project, &["run", "show"]);
    let stderr = refused(
        &failed,
        &[
            "den.yaml:17:9: step 5/5 of container `dev` (`run`) failed with exit code 3",
            "about to fail",
            "previous build stays usable",
        ],
    );
    assert_eq!(cached(&step_lines(&failed)), 4, "{stderr}");
    // Back to the working den.yaml: nothing to build, it runs as before.
    fs::write(project.root.join("den.yaml"), BUSYBOX_YAML).unwrap();
    let back = den(&project, &["run", "show"]);
    assert_eq!(success(&back), good);
    assert!(step_lines(&back).is_empty(), "{}", text(&back.stderr));
    // Nothing of the failed step was kept in the store's tmp.
    let leftovers: Vec<_> = fs::read_dir(project.data.join("tmp"))
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The `meta` line of `path` in the layer holding it, from the store.
fn meta_line(data: &Path, path: &str) -> Option<String> {
    let layers = fs::read_dir(data.join("layers")).ok()?;
    let suffix = format!(" {path}");
    layers
        .flatten()
        .filter_map(|layer| fs::read_to_string(layer.path().join("meta")).ok())
        .flat_map(|meta| meta.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|line| line.ends_with(&suffix))
        .last()
}

#[test]
fn chown_to_ids_that_are_not_mapped_succeeds_and_is_recorded() {
    let project = busybox_project(
        "\
containers:
  dev:
    from: oci:image:latest
    setup:
      - run: |
          mkdir -p /srv/data
          echo x > /srv/data/file
          chown 1000:1000 /srv/data
          chown 0:43 /srv/data/file
          chown -h 7:7 /bin/sh
commands:
  owners:
    container: dev
    run: ls -ln /srv/data
",
    );
    let output = den(&project, &["run", "owners"]);
    let listing = success(&output);
    // Inside, with one id mapped, everything is root's.
    assert!(listing.contains("file"), "{listing}");
    assert_eq!(
        meta_line(&project.data, "srv/data").as_deref(),
        Some("d 0755 1000:1000 srv/data")
    );
    assert_eq!(
        meta_line(&project.data, "srv/data/file").as_deref(),
        Some("f 0644 0:43 srv/data/file")
    );
}

#[test]
fn two_dens_needing_one_build_build_it_once() {
    let project = busybox_project(
        "\
containers:
  dev:
    from: oci:image:latest
    setup:
      - run: sleep 2; date +%s%N > /built
commands:
  show:
    container: dev
    run: cat /built
",
    );
    let spawn = || {
        let command = project.den(Runner::User, &["run", "show"]);
        std::thread::spawn(move || run_bounded(command, DEN_TIME_LIMIT))
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(success(&a), success(&b), "both run the one build");
    let lines: Vec<String> = step_lines(&a).into_iter().chain(step_lines(&b)).collect();
    assert_eq!(built(&lines), 1, "{lines:?}");
}

/// Serves `body` over HTTP on 127.0.0.1 until the test ends; returns
/// the port.
fn serve_file(body: &'static [u8]) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                line.clear();
            }
            let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    port
}

#[test]
fn a_download_is_checked_against_its_sha256() {
    const BODY: &[u8] = b"#!/bin/sh\necho downloaded tool\n";
    let port = serve_file(BODY);
    let sha = oci::sha256_hex(BODY);
    let yaml = |sha: &str| {
        format!(
            "\
containers:
  dev:
    from: oci:image:latest
    setup:
      - download:
          url: http://127.0.0.1:{port}/tool
          sha256: {sha}
          to: /usr/local/bin/tool
          mode: 0755
commands:
  tool:
    container: dev
    run: /usr/local/bin/tool; stat -c %a /usr/local/bin/tool
"
        )
    };
    let project = busybox_project(&yaml(&"0".repeat(64)));
    refused(
        &den(&project, &["run", "tool"]),
        &[&format!(
            "has sha256 {sha}, but den.yaml expects {}",
            "0".repeat(64)
        )],
    );
    fs::write(project.root.join("den.yaml"), yaml(&sha)).unwrap();
    assert_eq!(
        success(&den(&project, &["run", "tool"])),
        "downloaded tool\n755\n"
    );
}

/// The bookworm image `.ci/setup` makes (scripts/debian-image).
fn debian_layout() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("DEN_TEST_DEBIAN_IMAGE").unwrap_or("/var/cache/den-ci/bookworm".into()),
    );
    assert!(
        dir.join("index.json").is_file(),
        "{} is missing: run scripts/debian-image (as root) first",
        dir.display()
    );
    dir
}

#[test]
fn a_debian_build_installs_packages_users_and_pip_packages() {
    let work = registry::scratch_dir("den-test-build-");
    let storage = work.path().join("storage");
    fs::create_dir(&storage).unwrap();
    let registry = Registry::start(&storage, Auth::Anonymous);
    let debian = registry.reference("debian");
    registry::push(
        &debian_layout(),
        "bookworm",
        &format!("{debian}:bookworm"),
        &[],
    );

    let project = Project::new(&format!(
        "\
containers:
  py:
    from: {debian}:bookworm
    network: slirp
    setup:
      - install: [python3, python3-venv, libutempter0]
      - run: useradd --create-home bob && su bob -c 'touch /home/bob/by-su'
      - pip:
          packages: [cowsay==6.1]
          venv: /opt/venv
commands:
  moo:
    container: py
    run: cowsay -t 'hello from pip'
"
    ));
    let output = run_bounded(
        project.den(Runner::User, &["run", "moo"]),
        std::time::Duration::from_secs(600),
    );
    let said = success(&output);
    assert!(said.contains("hello from pip"), "{said}");
    let lib = format!(
        "usr/lib/{}-linux-gnu/utempter/utempter",
        std::env::consts::ARCH
    );
    assert_eq!(
        meta_line(&project.data, &lib).as_deref(),
        Some(format!("f 2755 0:43 {lib}").as_str()),
        "dpkg's chown of a file to group utmp is recorded"
    );
    let home = meta_line(&project.data, "home/bob").unwrap_or_default();
    assert!(
        home.starts_with("d 0") && home.ends_with(" 1000:1000 home/bob"),
        "useradd's chown of the new home is recorded: {home}"
    );
    assert!(
        meta_line(&project.data, "home/bob/by-su").is_some(),
        "su ran the command"
    );
    // The package lists and archives stayed in the cache, out of the layer.
    let cache = project.home.join(".cache/den/apt");
    assert!(cache.is_dir(), "apt cache at {}", cache.display());
    let lists = cache.read_dir().unwrap().flatten().next().unwrap().path();
    assert!(
        fs::read_dir(lists.join("lists")).unwrap().count() > 2,
        "package lists in {}",
        lists.display()
    );
    let in_layers = fs::read_dir(project.data.join("layers"))
        .unwrap()
        .flatten()
        .filter_map(|layer| fs::read_to_string(layer.path().join("meta")).ok())
        .any(|meta| meta.contains("_Packages") || meta.contains(".deb\n"));
    assert!(!in_layers, "no package list or .deb in any layer");
}

#[test]
fn den_build_prepares_ahead_and_force_rebuilds_every_step() {
    let project = busybox_project(BUSYBOX_YAML);
    let first = den(&project, &["build"]);
    assert!(success(&first).starts_with("dev: build:"), "{first:?}");
    assert_eq!(built(&step_lines(&first)), 4, "{}", text(&first.stderr));
    // den run finds it built.
    let run = den(&project, &["run", "show"]);
    success(&run);
    assert!(step_lines(&run).is_empty(), "{}", text(&run.stderr));
    let forced = den(&project, &["build", "--force", "dev"]);
    success(&forced);
    let lines = step_lines(&forced);
    assert_eq!((built(&lines), cached(&lines)), (4, 0), "{lines:?}");
}

#[test]
fn host_ca_false_gives_no_ca_bundle() {
    let with_ca = "containers:\n  dev:\n    from: oci:image:latest\n";
    let script = "env | grep -c '=/run/den/ca-certificates.crt$'; ls /run/den";
    let project = busybox_project(with_ca);
    let out = success(&den(&project, &["exec", "dev", "--", "sh", "-c", script]));
    assert_eq!(out, "7\nca-certificates.crt\n");
    fs::write(
        project.root.join("den.yaml"),
        format!("{with_ca}    host-ca: false\n"),
    )
    .unwrap();
    let out = den(&project, &["exec", "dev", "--", "sh", "-c", script]);
    assert_eq!(text(&out.stdout), "0\n", "{}", text(&out.stderr));
}
