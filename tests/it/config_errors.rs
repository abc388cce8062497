//! den.yaml mistakes and command-line mistakes, through the real `den`
//! binary as the test user: den fails with 125 and says where (file, line
//! and column), what is wrong and what it expected. Also how `den` alone
//! lists the commands and how extra arguments reach a command.

use std::path::Path;
use std::process::Output;

use crate::harness::{self, Project, Runner, bounded, refused};

fn den(project: &Project, args: &[&str]) -> Output {
    bounded(project.den(Runner::User, args))
}

fn den_in(project: &Project, dir: &Path, args: &[&str]) -> Output {
    bounded(project.den_in(Runner::User, dir, args))
}

/// den.yaml as written (`\` continuations are not used, so every line
/// and column below is literally where it looks).
const BASE: &str = "\
containers:
  dev:
    from: oci:./image
";

/// With `yaml` as den.yaml, every den command fails with 125 and reports
/// `<path>/den.yaml:<line>:<column>: ` followed by a message containing
/// `needles`, and nothing else on stderr.
#[track_caller]
fn assert_config_error(yaml: &str, line: u32, column: u32, needles: &[&str]) {
    let project = Project::new(yaml);
    let file = project
        .root
        .canonicalize()
        .unwrap()
        .join("den.yaml")
        .display()
        .to_string();
    let place = format!("den: {file}:{line}:{column}: ");
    for args in [&[][..], &["run", "go"], &["exec", "dev", "--", "true"]] {
        let stderr = refused(&den(&project, args), needles);
        assert!(
            stderr.starts_with(&place),
            "`den {}`: expected the error at `{place}`, got:\n{stderr}",
            args.join(" ")
        );
        assert_eq!(stderr.lines().count(), 1, "one line:\n{stderr}");
    }
}

// ---------------------------------------------------------------------------
// Mistakes in den.yaml.

#[test]
fn unknown_key_names_it_and_suggests_the_close_one() {
    let yaml = format!("{BASE}    environment:\n      A: 1\n");
    assert_config_error(
        &yaml,
        4,
        5,
        &[
            "unknown key `environment` in container `dev`",
            "(did you mean `environ`?)",
            "expected one of `from`, `bootstrap`, `setup`, `environ`, `workdir`, `user`, `network`, \
             `host-loopback`, `host-ca`, `caps`, `cap-drop`, `seccomp` or `limits`",
        ],
    );
}

#[test]
fn accepts_arguments_as_a_string_is_a_type_error_at_the_value() {
    let yaml = format!(
        "{BASE}commands:\n  go:\n    container: dev\n    run: echo hi\n    accepts-arguments: \"yes\"\n"
    );
    assert_config_error(
        &yaml,
        8,
        24,
        &[
            "`accepts-arguments` in command `go` is `yes`",
            "expected `true` or `false`",
        ],
    );
}

#[test]
fn environ_as_a_list_is_a_type_error_at_the_value() {
    let yaml = format!("{BASE}    environ: [a]\n");
    assert_config_error(
        &yaml,
        4,
        14,
        &[
            "`environ` in container `dev` is a list",
            "expected a map from variable names to values",
        ],
    );
}

#[test]
fn command_naming_a_missing_container_suggests_the_close_one() {
    let yaml = "\
containers:
  dev:
    from: oci:./image
  tools:
    from: oci:./image
commands:
  go:
    container: deb
    run: echo hi
";
    assert_config_error(
        yaml,
        8,
        16,
        &[
            "unknown container `deb` in command `go`",
            "(did you mean `dev`?)",
            "expected one of `dev` or `tools`",
        ],
    );
}

#[test]
fn bad_indentation_is_a_yaml_error_at_the_misplaced_key() {
    // `environ` is indented by three spaces, between `dev` and its keys.
    let yaml = format!("{BASE}   environ:\n      A: 1\n");
    assert_config_error(&yaml, 4, 4, &["invalid YAML"]);
}

#[test]
fn unclosed_quote_is_a_yaml_error_at_the_quote() {
    let yaml = "\
containers:
  dev:
    from: \"oci:./image
commands: {}
";
    assert_config_error(yaml, 3, 11, &["invalid YAML", "unclosed quote"]);
}

#[test]
fn unknown_network_lists_the_allowed_values() {
    let yaml = format!(
        "{BASE}commands:\n  go:\n    container: dev\n    run: echo hi\n    network: bridge\n"
    );
    assert_config_error(
        &yaml,
        8,
        14,
        &[
            "unknown network `bridge` in command `go`",
            "expected `slirp` (its own network, reaching out through den), \
             `host` (share the host's network) or `none` (loopback only)",
        ],
    );
}

#[test]
fn command_without_run_is_reported_at_the_command() {
    let yaml = format!("{BASE}commands:\n  go:\n    container: dev\n    description: Go\n");
    assert_config_error(
        &yaml,
        5,
        3,
        &[
            "command `go` has no `run`",
            "expected `run:` with a shell command or a list of arguments",
        ],
    );
}

// ---------------------------------------------------------------------------
// Mistakes on the command line.

#[test]
fn outside_any_project_every_command_says_den_yaml_is_missing() {
    let project = Project::new(BASE);
    // The project's home directory is a sibling of its root: no den.yaml
    // there or above, unless the machine has one in / or the temp dir.
    let outside = project.home.canonicalize().unwrap();
    for dir in outside.ancestors() {
        assert!(
            !dir.join("den.yaml").exists(),
            "{}/den.yaml exists; this test needs a directory with no den.yaml above it",
            dir.display()
        );
    }
    let expected = format!(
        "no den.yaml found in {} or any parent directory",
        outside.display()
    );
    for args in [
        &[][..],
        &["list"],
        &["run", "go"],
        &["exec", "dev", "--", "true"],
        &["shell"],
    ] {
        let stderr = refused(&den_in(&project, &outside, args), &[&expected]);
        assert!(stderr.contains("create den.yaml"), "{stderr}");
    }
}

const COMMANDS: &str = "\
containers:
  dev:
    from: oci:image
  tools:
    from: oci:image
commands:
  zeta:
    container: dev
    description: Listed first, as in den.yaml
    run: echo zeta
  build:
    container: dev
    description: Build everything
    run: [printf, \"<%s>\\n\", fixed]
  script:
    container: tools
    run: printf '<%s>\\n' \"$0\" \"$@\"
  sealed:
    container: dev
    description: Takes no arguments
    run: touch /work/sealed-ran
    accepts-arguments: false
";

#[test]
fn den_alone_lists_the_commands_in_file_order_with_descriptions() {
    let project = Project::new(COMMANDS);
    let file = project.root.canonicalize().unwrap().join("den.yaml");
    let expected = format!(
        "Commands in {} (den run <command>):\n\
         \x20 zeta    Listed first, as in den.yaml\n\
         \x20 build   Build everything\n\
         \x20 script\n\
         \x20 sealed  Takes no arguments\n",
        file.display()
    );
    for args in [&[][..], &["list"]] {
        let output = den(&project, args);
        assert_eq!(harness::success(&output), expected, "den {args:?}");
    }
}

#[test]
fn unknown_command_suggests_the_close_one_and_lists_them_all() {
    let project = Project::new(COMMANDS);
    let stderr = refused(
        &den(&project, &["run", "biuld"]),
        &[
            "den.yaml has no command `biuld`; did you mean `build`?",
            "commands: zeta, build, script, sealed",
        ],
    );
    assert!(!stderr.contains("did you mean `zeta`"), "{stderr}");
    let stderr = refused(
        &den(&project, &["run", "nosuch"]),
        &[
            "den.yaml has no command `nosuch`",
            "commands: zeta, build, script, sealed",
        ],
    );
    assert!(!stderr.contains("did you mean"), "{stderr}");
}

#[test]
fn unknown_container_lists_the_containers() {
    let project = Project::new(COMMANDS);
    refused(
        &den(&project, &["exec", "nosuch", "--", "true"]),
        &[
            "den.yaml has no container `nosuch`",
            "containers: dev, tools",
        ],
    );
    refused(
        &den(&project, &["exec", "tols", "--", "true"]),
        &["did you mean `tools`?", "containers: dev, tools"],
    );
    refused(
        &den(&project, &["shell", "nosuch"]),
        &[
            "den.yaml has no container `nosuch`",
            "containers: dev, tools",
        ],
    );
}

#[test]
fn arguments_to_a_command_that_accepts_none_are_refused_before_it_runs() {
    let project = Project::new(COMMANDS);
    harness::oci::write_busybox(&project.root.join("image"));
    project.hand_over();
    refused(
        &den(&project, &["run", "sealed", "extra"]),
        &[
            "command `sealed` takes no arguments (accepts-arguments: false)",
            "extra",
        ],
    );
    assert!(!project.root.join("sealed-ran").exists(), "the command ran");
    // Without arguments it runs.
    harness::success(&den(&project, &["run", "sealed"]));
    assert!(project.root.join("sealed-ran").exists());
}

#[test]
fn extra_arguments_are_appended_to_a_list_run() {
    let project = Project::new(COMMANDS);
    harness::oci::write_busybox(&project.root.join("image"));
    project.hand_over();
    let output = den(&project, &["run", "build", "one", "two words", "-x", ""]);
    assert_eq!(
        harness::success(&output),
        "<fixed>\n<one>\n<two words>\n<-x>\n<>\n"
    );
    let output = den(&project, &["run", "build"]);
    assert_eq!(harness::success(&output), "<fixed>\n");
}

#[test]
fn extra_arguments_reach_a_string_run_as_positional_parameters() {
    let project = Project::new(COMMANDS);
    harness::oci::write_busybox(&project.root.join("image"));
    project.hand_over();
    // $0 is the command's name, "$@" the arguments, each kept whole.
    let output = den(&project, &["run", "script", "one", "two words", "--flag"]);
    assert_eq!(
        harness::success(&output),
        "<script>\n<one>\n<two words>\n<--flag>\n"
    );
    let output = den(&project, &["run", "script"]);
    assert_eq!(harness::success(&output), "<script>\n");
}
