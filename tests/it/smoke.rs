//! The basic path: den runs a project's command rootless and returns its status.

use crate::harness::{self, Project, Runner, runners, success};

const DEN_YAML: &str = "\
containers:
  bb:
    from: oci:image:latest
commands:
  hello:
    container: bb
    description: Greets
    run: echo \"hello from $(pwd) as $(id -u)\"
";

#[test]
fn runs_a_command_as_each_runner() {
    let project = Project::new(DEN_YAML);
    harness::oci::write_busybox(&project.root.join("image"));
    project.hand_over();
    for runner in runners() {
        let output = project.run(runner, &["run", "hello"]);
        assert_eq!(success(&output), "hello from /work as 0\n", "{runner:?}");
    }
}

#[test]
fn den_alone_lists_the_commands() {
    let project = Project::new(DEN_YAML);
    let listing = success(&project.run(Runner::User, &[]));
    assert!(
        listing.contains("hello") && listing.contains("Greets"),
        "{listing}"
    );
}
