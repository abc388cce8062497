//! den.yaml loading: valid files, and the exact text and place of each error.

use std::fs;

use super::*;

const FILE: &str = "/p/den.yaml";

fn ok(text: &str) -> Config {
    parse(text, Path::new(FILE)).unwrap_or_else(|err| panic!("{err}"))
}

/// The error's text, without the file name every message starts with.
fn err(text: &str) -> String {
    let err = parse(text, Path::new(FILE))
        .expect_err("should be rejected")
        .to_string();
    err.strip_prefix(&format!("{FILE}:"))
        .unwrap_or_else(|| panic!("no file: {err}"))
        .to_string()
}

fn pairs(map: &IndexMap<String, String>) -> Vec<(&str, &str)> {
    map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// One container `dev` plus the given commands section.
fn with_commands(commands: &str) -> String {
    format!("containers:\n  dev:\n    from: oci:img\ncommands:\n{commands}")
}

#[test]
fn full_file() {
    let config = ok(r#"
version: 1
containers:
  dev:
    from: oci:images/dev:v2
    environ:
      DEBUG: 1
      NAME: den
    workdir: /src
    user: "1000:100"
  ci:
    from: oci-archive:/abs/ci.tar
commands:
  build:
    container: dev
    run: [cargo, build]
    description: Build everything
    environ: {RUST_LOG: debug}
    network: none
    accepts-arguments: false
  shell:
    container: ci
    run: exec bash
"#);
    let dev = &config.containers["dev"];
    assert_eq!(
        dev.from,
        Base::Image(Source::OciLayout {
            path: "/p/images/dev".into(),
            tag: Some("v2".into())
        })
    );
    assert_eq!(pairs(&dev.environ), [("DEBUG", "1"), ("NAME", "den")]);
    assert_eq!(dev.workdir.as_deref(), Some("/src"));
    assert_eq!(
        dev.user,
        User {
            uid: 1000,
            gid: 100
        }
    );
    let ci = &config.containers["ci"];
    assert_eq!(
        ci.from,
        Base::Image(Source::OciArchive {
            path: "/abs/ci.tar".into(),
            tag: None
        })
    );
    assert_eq!((ci.user, ci.workdir.as_deref()), (User::default(), None));

    let names: Vec<&str> = config.commands.keys().map(String::as_str).collect();
    assert_eq!(names, ["build", "shell"], "file order");
    let build = &config.commands["build"];
    assert_eq!(build.container, "dev");
    assert_eq!(build.run, Run::Argv(vec!["cargo".into(), "build".into()]));
    assert_eq!(build.description.as_deref(), Some("Build everything"));
    assert_eq!(build.environ["RUST_LOG"], "debug");
    assert_eq!(
        (build.network, build.accepts_arguments),
        (Some(Network::None), false)
    );
    let shell = &config.commands["shell"];
    assert_eq!(shell.run, Run::Shell("exec bash".into()));
    assert_eq!((shell.network, shell.accepts_arguments), (None, true));
    assert!(shell.description.is_none() && shell.environ.is_empty());
}

#[test]
fn no_commands_is_valid() {
    let config = ok("containers:\n  dev:\n    from: oci:img\n");
    assert!(config.commands.is_empty());
    assert!(
        ok("containers:\n  dev: {from: oci:img}\ncommands:\n")
            .commands
            .is_empty()
    );
}

#[test]
fn run_string_or_list() {
    let run = |value: &str| {
        ok(&with_commands(&format!(
            "  c:\n    container: dev\n    run: {value}\n"
        )))
        .commands["c"]
            .run
            .clone()
    };
    assert_eq!(run("make -j4 all"), Run::Shell("make -j4 all".into()));
    assert_eq!(
        run("|\n      set -e\n      make"),
        Run::Shell("set -e\nmake\n".into())
    );
    assert_eq!(
        run("[sleep, 1.50]"),
        Run::Argv(vec!["sleep".into(), "1.50".into()])
    );
    assert_eq!(
        run("\n      - ls\n      - -l"),
        Run::Argv(vec!["ls".into(), "-l".into()])
    );
}

#[test]
fn user_forms() {
    let user = |value: &str| {
        ok(&format!(
            "containers:\n  dev:\n    from: oci:img\n    user: {value}\n"
        ))
        .containers["dev"]
            .user
    };
    assert_eq!(
        user("1000"),
        User {
            uid: 1000,
            gid: 1000
        }
    );
    assert_eq!(
        user("\"1000\""),
        User {
            uid: 1000,
            gid: 1000
        }
    );
    assert_eq!(
        user("\"1000:100\""),
        User {
            uid: 1000,
            gid: 100
        }
    );
    assert_eq!(
        user("1000:100"),
        User {
            uid: 1000,
            gid: 100
        }
    );
    assert_eq!(user("0"), User::default());
}

#[test]
fn environ_values_keep_their_text() {
    let config = ok(r#"
containers:
  dev:
    from: oci:img
    environ:
      DEBUG: 1
      RATIO: 1.10
      HEX: 0x1F
      ON: true
      SHARED: &v 42
      EMPTY: ""
      AGAIN: *v
"#);
    let environ = pairs(&config.containers["dev"].environ);
    assert_eq!(
        environ,
        [
            ("DEBUG", "1"),
            ("RATIO", "1.10"),
            ("HEX", "0x1F"),
            ("ON", "true"),
            ("SHARED", "42"),
            ("EMPTY", ""),
            ("AGAIN", "42")
        ]
    );
}

#[test]
fn empty_or_containerless_files() {
    let no_containers =
        "expected at least one container, e.g. `containers: {dev: {from: \"oci:./image\"}}`";
    assert_eq!(err(""), format!("1:1: the file is empty; {no_containers}"));
    assert_eq!(
        err("# just a comment\n"),
        format!("1:1: the file is empty; {no_containers}")
    );
    assert_eq!(
        err("# intro\ncommands: {}\n"),
        format!("2:1: no `containers` defined; {no_containers}")
    );
    assert_eq!(
        err("containers: {}\n"),
        format!("1:1: `containers` is empty; {no_containers}")
    );
    assert_eq!(
        err("containers:\n"),
        format!("1:1: `containers` is empty; {no_containers}")
    );
    assert_eq!(
        err("- dev\n"),
        "1:1: den.yaml is a list; \
         expected a map with keys among `version`, `containers` or `commands`"
    );
}

#[test]
fn unknown_keys_suggest_the_right_one() {
    assert_eq!(
        err("containers:\n  dev:\n    from: oci:img\ncomands: {}\n"),
        "4:1: unknown key `comands` in den.yaml (did you mean `commands`?); \
         expected one of `version`, `containers` or `commands`"
    );
    assert_eq!(
        err("containers:\n  dev:\n    from: oci:img\n    environment: {A: b}\n"),
        "4:5: unknown key `environment` in container `dev` (did you mean `environ`?); \
         expected one of `from`, `bootstrap`, `setup`, `environ`, `workdir`, `user`, `network`, \
         `host-loopback`, `host-ca`, `caps`, `cap-drop`, `seccomp` or `limits`"
    );
    assert_eq!(
        err("containers:\n  dev:\n    image: oci:img\n"),
        "3:5: unknown key `image` in container `dev` (did you mean `from`?); \
         expected one of `from`, `bootstrap`, `setup`, `environ`, `workdir`, `user`, `network`, \
         `host-loopback`, `host-ca`, `caps`, `cap-drop`, `seccomp` or `limits`"
    );
    assert_eq!(
        err(&with_commands("  b:\n    container: dev\n    cmd: make\n")),
        "7:5: unknown key `cmd` in command `b` (did you mean `run`?); expected one of `container`, \
         `run`, `description`, `environ`, `network`, `ports` or `accepts-arguments`"
    );
    assert_eq!(
        err(&with_commands(
            "  b:\n    container: dev\n    run: make\n    volumes: []\n"
        )),
        "8:5: unknown key `volumes` in command `b`; expected one of `container`, \
         `run`, `description`, `environ`, `network`, `ports` or `accepts-arguments`"
    );
}

#[test]
fn unknown_container_reference() {
    let text = "containers:\n  dev: {from: oci:a}\n  ci: {from: oci:b}\n\
                commands:\n  b:\n    container: deb\n    run: x\n";
    assert_eq!(
        err(text),
        "6:16: unknown container `deb` in command `b` (did you mean `dev`?); \
         expected one of `dev` or `ci`"
    );
    assert_eq!(
        err(&with_commands(
            "  b:\n    container: production\n    run: x\n"
        )),
        "6:16: unknown container `production` in command `b`; expected `dev`"
    );
}

#[test]
fn missing_required_keys() {
    assert_eq!(
        err("containers:\n  dev:\n    workdir: /w\n"),
        "2:3: container `dev` has no `from`; expected `from:` with an image such as \
         `debian:bookworm`, `oci:./image` or `oci-archive:./image.tar`, or `container:<name>` \
         to build on another container; or `bootstrap:` with `debian/<suite>` or `ubuntu/<suite>`, \
         such as `debian/bookworm` or `ubuntu/noble`"
    );
    assert_eq!(
        err("containers:\n  dev:\n"),
        "2:3: container `dev` has no `from`; expected `from:` with an image such as \
         `debian:bookworm`, `oci:./image` or `oci-archive:./image.tar`, or `container:<name>` \
         to build on another container; or `bootstrap:` with `debian/<suite>` or `ubuntu/<suite>`, \
         such as `debian/bookworm` or `ubuntu/noble`"
    );
    assert_eq!(
        err(&with_commands("  b:\n    run: x\n")),
        "5:3: command `b` has no `container`; expected `container:` with `dev`"
    );
    assert_eq!(
        err(&with_commands("  b:\n    container: dev\n")),
        "5:3: command `b` has no `run`; expected `run:` with a shell command or a list of arguments"
    );
}

#[test]
fn bad_values_are_placed_at_the_value() {
    assert_eq!(
        err("containers:\n  dev:\n    from: docker://x\n"),
        "3:11: `docker://x` is not an image source (a registry reference has no scheme: write `host/name:tag`); expected a registry reference `[host[:port]/]name[:tag][@sha256:<hex>]` (e.g. `python:3.12`), `oci:<dir>[:<tag>]` (an OCI image layout) or `oci-archive:<file.tar>[:<tag>]`"
    );
    assert_eq!(
        err("containers:\n  dev:\n    from: [oci:img]\n"),
        "3:11: `from` in container `dev` is a list; expected an image such as \
         `debian:bookworm`, `oci:./image` or `oci-archive:./image.tar`, or `container:<name>` \
         to build on another container"
    );
    assert_eq!(
        err("containers:\n  dev:\n    from: oci:img\n    workdir: src\n"),
        "4:14: `workdir` in container `dev` is `src`, a relative path; \
         expected an absolute path inside the container, such as `/work`"
    );
    assert_eq!(
        err("containers:\n  dev:\n    from: oci:img\n    environ:\n      A:\n"),
        "5:7: `A` in `environ` in container `dev` is empty; \
         expected a string, number or boolean (`\"\"` for an empty value)"
    );
    assert_eq!(
        err("containers:\n  dev:\n    from: oci:img\n    environ: {\"A=B\": 1}\n"),
        "4:15: invalid environment variable name `A=B` in `environ` in container `dev`; \
         expected a non-empty name without `=`"
    );
    assert_eq!(
        err("version: 2\n"),
        "1:10: unsupported `version` `2`; expected `1`, the only version so far"
    );
}

#[test]
fn bad_user() {
    let expected = "expected a numeric uid such as `1000`, or uid:gid such as `\"1000:100\"` \
                    (user names are not supported)";
    for (value, shown) in [
        ("root", "`root`"),
        ("-1", "`-1`"),
        ("\"1000:x\"", "`1000:x`"),
        ("[1]", "a list"),
    ] {
        assert_eq!(
            err(&format!(
                "containers:\n  dev:\n    from: oci:img\n    user: {value}\n"
            )),
            format!("4:11: `user` in container `dev` is {shown}; {expected}")
        );
    }
}

#[test]
fn bad_command_values() {
    let command = |rest: &str| {
        err(&with_commands(&format!(
            "  b:\n    container: dev\n    run: x\n{rest}"
        )))
    };
    assert_eq!(
        command("    network: hots\n"),
        "8:14: unknown network `hots` in command `b` (did you mean `host`?); \
         expected `slirp` (its own network, reaching out through den), \
         `host` (share the host's network) or `none` (loopback only)"
    );
    assert_eq!(
        command("    accepts-arguments: yes\n"),
        "8:24: `accepts-arguments` in command `b` is `yes`; expected `true` or `false`"
    );
    assert_eq!(
        err(&with_commands("  b:\n    container: dev\n    run: []\n")),
        "7:10: `run` in command `b` is an empty list; \
         expected a program and its arguments, such as `[cargo, build]`"
    );
    assert_eq!(
        err(&with_commands(
            "  b:\n    container: dev\n    run: [ls, {a: 1}]\n"
        )),
        "7:15: an argument in `run` of command `b` is a map; expected a string"
    );
    assert_eq!(
        err(&with_commands("  b:\n    container: dev\n    run: \" \"\n")),
        "7:10: `run` in command `b` is blank; \
         expected a shell command, or a list of a program and its arguments"
    );
}

#[test]
fn bad_names() {
    let rule = "expected letters, digits, `-`, `_` and `.`, not starting with `-` or `.`";
    assert_eq!(
        err("containers:\n  -dev:\n    from: oci:img\n"),
        format!("2:3: invalid container name `-dev`; {rule}")
    );
    assert_eq!(
        err(&with_commands(
            "  my build:\n    container: dev\n    run: x\n"
        )),
        format!("5:3: invalid command name `my build`; {rule}")
    );
    assert_eq!(
        err(&with_commands("  .hidden: {container: dev, run: x}\n")),
        format!("5:3: invalid command name `.hidden`; {rule}")
    );
}

#[test]
fn duplicate_keys() {
    assert_eq!(
        err("containers:\n  dev:\n    from: oci:a\n  dev:\n    from: oci:b\n"),
        "4:3: duplicate key `dev` in `containers`, first at line 2, column 3; \
         expected each key at most once"
    );
    assert_eq!(
        err("containers:\n  dev: {from: oci:a, from: oci:b}\n"),
        "2:22: duplicate key `from` in container `dev`, first at line 2, column 9; \
         expected each key at most once"
    );
}

#[test]
fn yaml_syntax_errors_are_located() {
    assert_eq!(
        err("containers: [\n"),
        "1:13: invalid YAML: unclosed bracket '['"
    );
    assert_eq!(
        err("containers:\n  dev:\n    from: oci:img\n   x: 1\n"),
        "4:4: invalid YAML: while parsing a block mapping, did not find expected key"
    );
}

#[test]
fn load_walks_up_from_a_subdirectory() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join(FILE_NAME),
        "containers:\n  dev:\n    from: oci:img\n",
    )
    .unwrap();
    let sub = dir.path().join("a/b");
    fs::create_dir_all(&sub).unwrap();
    let root = dir.path().canonicalize().unwrap();

    let project = load(&sub).unwrap();
    assert_eq!(project.root, root);
    assert_eq!(project.file, root.join(FILE_NAME));
    assert_eq!(find(&sub), Some(root.join(FILE_NAME)));
    assert_eq!(
        project.config.containers["dev"].from,
        Base::Image(Source::OciLayout {
            path: root.join("img"),
            tag: None
        }),
        "relative to den.yaml, not the start directory"
    );
}

#[test]
fn load_errors() {
    let dir = tempfile::tempdir().unwrap();
    let start = dir.path().canonicalize().unwrap();
    // A den.yaml in a parent of the temporary directory would be found instead.
    if find(&start).is_none() {
        assert_eq!(
            load(&start).unwrap_err().to_string(),
            format!(
                "no den.yaml found in {} or any parent directory; \
                 expected one at the project root: \
                 create den.yaml there with a `containers:` map (see den's docs/config.md)",
                start.display()
            )
        );
    }
    let file = start.join(FILE_NAME);
    fs::write(&file, b"containers:\n  d\xffv: x\n").unwrap();
    assert_eq!(
        load(&start).unwrap_err().to_string(),
        format!(
            "{}:2:4: this is not UTF-8 text; expected a UTF-8 encoded YAML file",
            file.display()
        )
    );
}

#[test]
fn examples_in_the_docs_are_valid() {
    let docs = include_str!("../../docs/config.md");
    let mut checked = 0;
    for block in docs.split("```yaml\n").skip(1) {
        let block = &block[..block.find("```").expect("closed block")];
        let indent = block.len() - block.trim_start_matches(' ').len();
        let text: String = block
            .lines()
            .map(|line| format!("{}\n", line.get(indent..).unwrap_or("")))
            .collect();
        if text.starts_with("containers:") || text.starts_with("version:") {
            ok(&text);
            checked += 1;
        }
    }
    assert_eq!(
        checked, 8,
        "the minimal, full, setup, bootstrap, merge-key, host-loopback, caps and limits examples"
    );
}

fn with_setup(steps: &str) -> String {
    format!("containers:\n  dev:\n    from: oci:img\n    setup:\n{steps}")
}

#[test]
fn setup_steps_parse_into_their_kinds() {
    use crate::config::step::{Copy, Pip};
    let config = ok(&with_setup(
        "      - run: make\n      - install: [git, curl]\n      - copy: {from: src, to: /opt/src/, exclude: ['*.o']}\n      - env: {A: 1}\n      - text: {to: /etc/x, content: hi, mode: 0600}\n      - pip: [requests]\n      - npm: /app\n",
    ));
    let steps = &config.containers["dev"].setup;
    assert_eq!(steps.len(), 7);
    assert_eq!(steps[0].kind, StepKind::Run("make".into()));
    assert_eq!((steps[0].line, steps[0].column), (5, 9));
    assert_eq!(
        steps[1].kind,
        StepKind::Install(vec!["git".into(), "curl".into()])
    );
    assert_eq!(
        steps[2].kind,
        StepKind::Copy(Copy {
            from: "src".into(),
            to: "/opt/src/".into(),
            exclude: vec!["*.o".into()],
        })
    );
    let StepKind::Text(text) = &steps[4].kind else {
        panic!("{:?}", steps[4]);
    };
    assert_eq!(text.mode, 0o600);
    assert_eq!(
        steps[5].kind,
        StepKind::Pip(Pip {
            packages: vec!["requests".into()],
            requirements: None,
            venv: None,
        })
    );
}

#[test]
fn bad_setup_steps_are_placed_and_explained() {
    assert_eq!(
        err(&with_setup("      - apt: [git]\n")),
        "5:9: unknown step `apt` in step 1 of `setup` in container `dev` (did you mean `install`?); \
         expected `run`, `install`, `copy`, `env`, `download`, `text`, `pip` or `npm`"
    );
    assert_eq!(
        err(&with_setup("      - run: make\n        install: [git]\n")),
        "5:9: step 1 of `setup` in container `dev` is a map with 2 keys; expected a one-key map \
         such as `- run: make` or `- install: [git]`; start each step with its own `-`"
    );
    assert_eq!(
        err(&with_setup("      - copy: {from: ../secrets, to: /s}\n")),
        "5:22: `from` in the `copy` step is `../secrets`, outside the project; \
         expected a path relative to the project root (the directory of den.yaml)"
    );
    assert_eq!(
        err(&with_setup(
            "      - download: {url: https://x/y, to: /y}\n"
        )),
        "5:19: the `download` step has no `sha256`; expected `sha256:` with the file's SHA-256 \
         as 64 hex digits (required: run `sha256sum` on a copy you trust)"
    );
    assert_eq!(
        err(&with_setup(
            "      - text: {to: /x, content: a, mode: 999}\n"
        )),
        "5:42: `mode` in the `text` step is `999`; expected an octal mode such as `0755` or `\"644\"`"
    );
    assert_eq!(
        err(&with_setup("      - install: []\n")),
        "5:18: the `install` step is empty; expected a list of package names, such as `[git, curl]`"
    );
}

#[test]
fn container_bases_must_exist_and_not_loop() {
    assert_eq!(
        err("containers:\n  a:\n    from: container:b\n  b:\n    from: container:a\n"),
        "3:11: containers build on each other in a loop: a → b → a; \
         expected a chain of `from: container:` that ends at an image"
    );
    assert_eq!(
        err("containers:\n  a:\n    from: container:bb\n  b:\n    from: oci:img\n"),
        "3:11: unknown container `bb` in `from` of container `a` (did you mean `b`?); \
         expected `container:` followed by `b`"
    );
    let config = ok("containers:\n  a:\n    from: oci:img\n  b:\n    from: container:a\n");
    assert_eq!(config.containers["b"].from, Base::Container("a".into()));
}

#[test]
fn ports_parse_and_need_slirp() {
    let config = ok(&with_commands(
        "  web:\n    container: dev\n    run: serve\n    ports: [\"8080:80\", \"127.0.0.1:5353:53/udp\"]\n",
    ));
    let ports: Vec<String> = config.commands["web"]
        .ports
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(ports, ["127.0.0.1:8080:80/tcp", "127.0.0.1:5353:53/udp"]);
    assert_eq!(
        err(&with_commands(
            "  web:\n    container: dev\n    run: serve\n    network: host\n    ports: [\"8080:80\"]\n"
        )),
        "9:5: command `web` publishes `ports` with `network: host`; expected `network: slirp` \
         (with `host`, the command's ports are the host's already)"
    );
}

#[test]
fn bootstrap_forms() {
    use crate::config::{Bootstrap, Distro, Variant};
    let config = ok("containers:\n  a:\n    bootstrap: debian/bookworm\n");
    assert_eq!(
        config.containers["a"].from,
        Base::Bootstrap(Bootstrap {
            distro: Distro::Debian,
            suite: "bookworm".into(),
            mirror: None,
            components: vec!["main".into()],
            variant: Variant::Minbase,
            keyring: None,
        })
    );
    assert_eq!(config.containers["a"].from_at, (3, 16));
    let config = ok(
        "containers:\n  b:\n    bootstrap:\n      distro: ubuntu/noble\n      \
         mirror: http://127.0.0.1:8080/ubuntu/\n      components: [main, universe]\n      \
         variant: buildd\n      keyring: keys/archive.gpg\n",
    );
    let Base::Bootstrap(bootstrap) = &config.containers["b"].from else {
        panic!("{:?}", config.containers["b"].from);
    };
    assert_eq!(bootstrap.distro, Distro::Ubuntu);
    assert_eq!(
        bootstrap.mirror.as_deref(),
        Some("http://127.0.0.1:8080/ubuntu")
    );
    assert_eq!(bootstrap.components, ["main", "universe"]);
    assert_eq!(bootstrap.variant, Variant::Buildd);
    assert_eq!(
        bootstrap.keyring.as_deref(),
        Some(Path::new("/p/keys/archive.gpg"))
    );
}

#[test]
fn bad_bootstraps_are_placed_and_explained() {
    assert_eq!(
        err("containers:\n  a:\n    bootstrap: debain/bookworm\n"),
        "3:16: unknown distribution `debain` in `bootstrap` of container `a` (did you mean \
         `debian`?); expected `debian/<suite>` or `ubuntu/<suite>`, such as `debian/bookworm` \
         or `ubuntu/noble`"
    );
    assert_eq!(
        err("containers:\n  a:\n    bootstrap: debian\n"),
        "3:16: `debian` in `bootstrap` of container `a` names no suite; expected \
         `debian/<suite>` or `ubuntu/<suite>`, such as `debian/bookworm` or `ubuntu/noble`"
    );
    assert_eq!(
        err("containers:\n  a:\n    from: oci:img\n    bootstrap: debian/sid\n"),
        "4:5: container `a` has both `from` and `bootstrap`; expected one of them: `from:` \
         starts from an image, `bootstrap:` makes one from a distribution's archive"
    );
    assert_eq!(
        err("containers:\n  a:\n    bootstrap: {distro: debian/sid, variant: mini}\n"),
        "3:46: unknown variant `mini` in `bootstrap` of container `a`; expected `minbase` \
         (essential and required packages with apt) or `buildd` (minbase with build-essential)"
    );
    assert_eq!(
        err("containers:\n  a:\n    bootstrap: {distro: debian/sid, mirror: ftp://x}\n"),
        "3:45: `mirror` in `bootstrap` of container `a` is `ftp://x`; expected the archive's \
         root URL, such as `http://deb.debian.org/debian` or a snapshot such as \
         `http://snapshot.debian.org/archive/debian/20260711T000000Z`"
    );
    assert!(
        err("containers:\n  a:\n    bootstrap: {distro: debian/sid, mirorr: http://x}\n")
            .contains("did you mean `mirror`"),
    );
}

fn container_with(keys: &str) -> String {
    format!("containers:\n  dev:\n    from: oci:img\n{keys}")
}

#[test]
fn confinement_defaults_to_podmans_capabilities_and_dens_profile() {
    let config = ok(&container_with(""));
    let dev = &config.containers["dev"];
    assert_eq!(dev.confinement, crate::userns::Confinement::default());
    assert!(!dev.host_loopback, "host loopback is opt-in");
}

#[test]
fn caps_add_and_cap_drop_remove() {
    use crate::userns::Capabilities;
    let config = ok(&container_with(
        "    caps: [SYS_PTRACE, cap_net_raw]\n    cap-drop: [CHOWN]\n    seccomp: unconfined\n",
    ));
    let confinement = config.containers["dev"].confinement;
    assert!(
        confinement
            .caps
            .contains(Capabilities::SYS_PTRACE | Capabilities::NET_RAW)
    );
    assert!(!confinement.caps.contains(Capabilities::CHOWN));
    assert!(confinement.caps.contains(Capabilities::SETUID));
    assert!(!confinement.seccomp);
}

#[test]
fn an_unknown_capability_is_placed_with_a_suggestion() {
    let message = err(&container_with("    caps: [SYS_PTRACE, SYS_PTRCE]\n"));
    assert!(
        message.starts_with(
            "4:24: unknown capability `SYS_PTRCE` in `caps` in container `dev` \
             (did you mean `SYS_PTRACE`?)"
        ),
        "{message}"
    );
    let message = err(&container_with("    seccomp: off\n"));
    assert!(
        message.starts_with("4:14: unknown `seccomp` mode `off`"),
        "{message}"
    );
}

#[test]
fn limits_take_sizes_and_a_process_count() {
    use crate::userns::Size;
    let config = ok(&container_with(
        "    limits: {tmp: 2G, shm: 50%, pids: 100}\n",
    ));
    let limits = config.containers["dev"].confinement.limits;
    assert_eq!(limits.tmp, Size::Bytes(2 << 30));
    assert_eq!(limits.shm, Size::PercentOfMemory(50));
    assert_eq!(limits.run_den, crate::userns::Limits::default().run_den);
    assert_eq!(limits.pids, 100);
    let message = err(&container_with("    limits: {tmp: lots}\n"));
    assert!(
        message
            .starts_with("4:19: `tmp` in `limits` of container `dev` is `lots`; expected a size"),
        "{message}"
    );
    let message = err(&container_with("    limits: {pids: 3}\n"));
    assert!(
        message.contains("expected a number of processes"),
        "{message}"
    );
    let message = err(&container_with("    limits: {memory: 1G}\n"));
    assert!(message.contains("unknown key `memory`"), "{message}");
}
