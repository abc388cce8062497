//! `den images`, `den rmi` and `den gc` on local `oci:` images, through
//! the real `den` binary as the test user: listing, removal, collection
//! of unshared layers only, `--dry-run`, and gc refusing while a
//! container runs.

use std::collections::BTreeSet;
use std::fs;
use std::process::Output;

use crate::harness::oci::{self, Compression, Layer, TarBuilder};
use crate::harness::spawned::{Spawned, output_within};
use crate::harness::{self, DEN_FAILED, Project, Runner, text};

/// busybox plus a layer holding `/marker` with `name`.
fn write_image(dir: &std::path::Path, name: &str) {
    let layers = [
        Layer {
            tar: oci::busybox_layer(),
            compression: Compression::Gzip,
        },
        Layer {
            tar: TarBuilder::new()
                .file("marker", 0o644, format!("{name}\n").as_bytes())
                .finish(),
            compression: Compression::Gzip,
        },
    ];
    oci::write_layout(dir, "latest", &layers, &["PATH=/bin"], &["sh"]);
}

/// A project with containers `a` and `b`: two images sharing busybox.
fn project() -> Project {
    let project =
        Project::new("containers:\n  a:\n    from: oci:img-a\n  b:\n    from: oci:img-b\n");
    write_image(&project.root.join("img-a"), "image-a");
    write_image(&project.root.join("img-b"), "image-b");
    project.hand_over();
    project
}

fn den(project: &Project, args: &[&str]) -> Output {
    output_within(project.den(Runner::User, args), b"")
}

#[track_caller]
fn ok(output: &Output) -> String {
    harness::success(output)
}

fn marker(project: &Project, container: &str) -> String {
    ok(&den(project, &["exec", container, "--", "cat", "/marker"]))
}

fn layers(project: &Project) -> BTreeSet<String> {
    fs::read_dir(project.data.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The ID column of the `den images` line whose repository contains `needle`.
fn image_id(listing: &str, needle: &str) -> String {
    let line = listing
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no image `{needle}` in:\n{listing}"));
    line.split_whitespace().nth(2).unwrap().to_string()
}

#[test]
fn images_rmi_and_gc() {
    let project = project();
    assert_eq!(marker(&project, "a"), "image-a\n");
    assert_eq!(marker(&project, "b"), "image-b\n");
    assert_eq!(layers(&project).len(), 3, "busybox is shared");

    let listing = ok(&den(&project, &["images"]));
    assert!(listing.starts_with("REPOSITORY"), "{listing}");
    assert!(
        listing.contains("img-a") && listing.contains("img-b"),
        "{listing}"
    );
    assert!(
        listing.contains("kB") || listing.contains("MB"),
        "sizes:\n{listing}"
    );
    let id_a = image_id(&listing, "img-a");
    assert_eq!(id_a.len(), 12);

    // Nothing is garbage yet.
    let report = ok(&den(&project, &["gc"]));
    assert!(
        report.contains("removed 0 image(s), 0 layer(s)"),
        "{report}"
    );
    assert_eq!(layers(&project).len(), 3);

    // rmi: unknown names are refused clearly.
    let output = den(&project, &["rmi", "no-such-image:1"]);
    assert_eq!(output.status.code(), Some(DEN_FAILED));
    assert!(
        text(&output.stderr).contains("no image `no-such-image:1`"),
        "{}",
        text(&output.stderr)
    );

    let removed = ok(&den(&project, &["rmi", &id_a]));
    assert!(removed.contains(&id_a), "{removed}");
    let listing = ok(&den(&project, &["images"]));
    assert!(!listing.contains("img-a"), "{listing}");
    assert!(listing.contains("img-b"), "{listing}");
    assert_eq!(layers(&project).len(), 3, "rmi leaves layers to gc");

    // --dry-run reports and removes nothing.
    let before = layers(&project);
    let report = ok(&den(&project, &["gc", "--dry-run"]));
    assert!(
        report.contains("would remove 0 image(s), 1 layer(s)"),
        "{report}"
    );
    assert_eq!(layers(&project), before);

    // A leftover of a killed import goes too.
    fs::write(project.data.join("tmp/file-leftover"), "x").unwrap();
    project.hand_over();
    let report = ok(&den(&project, &["gc"]));
    assert!(
        report.contains("removed 0 image(s), 1 layer(s)"),
        "{report}"
    );
    assert!(report.contains("freed"), "{report}");
    assert!(report.contains("1 temporary entry"), "{report}");
    assert!(!project.data.join("tmp/file-leftover").exists());
    let after = layers(&project);
    assert_eq!(after.len(), 2);
    assert!(after.is_subset(&before));

    // b still runs offline from the store; a is imported again.
    assert_eq!(marker(&project, "b"), "image-b\n");
    assert_eq!(marker(&project, "a"), "image-a\n");
    assert_eq!(layers(&project), before);
}

#[test]
fn gc_refuses_while_a_container_runs() {
    let project = project();
    assert_eq!(marker(&project, "a"), "image-a\n");
    let mut running = Spawned::start(project.den(
        Runner::User,
        &[
            "exec",
            "a",
            "--",
            "sh",
            "-c",
            "echo ready; read line; cat /marker; ls /bin/sh",
        ],
    ));
    running.expect_line("ready");

    // Its record goes, but its layers must stay while it runs.
    let id = image_id(&ok(&den(&project, &["images"])), "img-a");
    ok(&den(&project, &["rmi", &id]));
    let before = layers(&project);
    let output = den(&project, &["gc"]);
    assert_eq!(
        output.status.code(),
        Some(DEN_FAILED),
        "{}",
        text(&output.stdout)
    );
    assert!(
        text(&output.stderr).contains("den is running elsewhere"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(layers(&project), before);

    running.write_stdin(b"go\n");
    let (status, lines) = running.finish();
    assert!(status.success(), "{lines:?}");
    assert_eq!(lines, ["ready", "image-a", "/bin/sh"]);

    // Once it has exited, gc goes ahead.
    let report = ok(&den(&project, &["gc"]));
    assert!(
        report.contains("removed 0 image(s), 2 layer(s)"),
        "{report}"
    );
    assert!(layers(&project).is_empty());
}
