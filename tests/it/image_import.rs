//! Importing `oci:` images end to end, through the real `den` binary as
//! the test user: what a container sees of an OCI image (whiteouts,
//! compression, links, modes, mtimes, tags, archives), refusal of
//! malicious and corrupt layers without touching the host or recording
//! anything, concurrent imports, the fast path for unchanged sources, and
//! the errors for bad sources.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::oci::{
    self, Compression, Layer, TarBuilder, blob_path, busybox, manifest, read_json,
};
use crate::harness::{Project, Runner, bounded, give_to_test_user, refused, success, text};
use serde_json::Value;

// ---------------------------------------------------------------------------
// Running den, always with a deadline.

/// Runs den as the test user in the project root, bounded.
fn den(project: &Project, args: &[&str]) -> Output {
    bounded(project.den(Runner::User, args))
}

/// `den exec <container> -- sh -c <script>`.
fn sh(project: &Project, container: &str, script: &str) -> Output {
    den(project, &["exec", container, "--", "sh", "-c", script])
}

// ---------------------------------------------------------------------------
// Fixtures.

fn layer(tar: Vec<u8>, compression: Compression) -> Layer {
    Layer { tar, compression }
}

/// A project whose den.yaml has these containers, as (name, `from:`).
fn project_with(containers: &[(&str, &str)]) -> Project {
    let mut yaml = String::from("containers:\n");
    for (name, from) in containers {
        yaml.push_str(&format!("  {name}:\n    from: \"{from}\"\n"));
    }
    Project::new(&yaml)
}

/// Writes a one-image layout `dir` (relative to the project root) tagged
/// `latest`, and hands it to the test user.
fn write_image(project: &Project, dir: &str, layers: &[Layer]) {
    oci::write_layout(
        &project.root.join(dir),
        "latest",
        layers,
        &["PATH=/bin"],
        &["sh"],
    );
    project.hand_over();
}

/// Writes a layout holding several tagged images (write_layout makes an
/// index.json with one; this merges their entries).
fn write_tagged_images(dir: &Path, images: &[(&str, &[Layer])]) {
    let mut entries = Vec::new();
    for (tag, layers) in images {
        oci::write_layout(dir, tag, layers, &["PATH=/bin"], &["sh"]);
        let index = read_json(&dir.join("index.json"));
        entries.extend(index["manifests"].as_array().unwrap().iter().cloned());
    }
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": entries });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// A tar whose entries carry their own mtimes (TarBuilder stamps every
/// entry alike).
fn tar_with_mtimes(entries: &[(&str, tar::EntryType, u32, u64, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for &(path, kind, mode, mtime, contents) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_path(path).unwrap();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(contents.len() as u64);
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_cksum();
        builder.append(&header, contents).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Packs the layout `dir` into a plain tar, as `skopeo copy … oci-archive:` does.
fn archive_layout(dir: &Path, archive: &Path) {
    let mut builder = tar::Builder::new(fs::File::create(archive).unwrap());
    builder
        .append_path_with_name(dir.join("oci-layout"), "oci-layout")
        .unwrap();
    builder
        .append_path_with_name(dir.join("index.json"), "index.json")
        .unwrap();
    for blob in fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let blob = blob.unwrap();
        let name = format!("blobs/sha256/{}", blob.file_name().to_string_lossy());
        builder.append_path_with_name(blob.path(), name).unwrap();
    }
    builder.finish().unwrap();
}

/// Stores `bytes` as a blob of `layout`; returns its descriptor fields.
fn put_blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let digest = format!("sha256:{}", oci::sha256_hex(bytes));
    fs::write(blob_path(layout, &digest), bytes).unwrap();
    (digest, bytes.len())
}

/// Edits the image config of the only image in `layout`, re-linking the
/// manifest and index.json to the new config so that only what `edit`
/// changed is wrong.
fn edit_config(layout: &Path, edit: impl FnOnce(&mut Value)) {
    let mut manifest = manifest(layout);
    let mut config = read_json(&blob_path(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    edit(&mut config);
    let (digest, size) = put_blob(layout, &serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = digest.into();
    manifest["config"]["size"] = size.into();
    let (digest, size) = put_blob(layout, &serde_json::to_vec(&manifest).unwrap());
    let mut index = read_json(&layout.join("index.json"));
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = size.into();
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

fn diff_id(tar: &[u8]) -> String {
    oci::sha256_hex(tar)
}

// ---------------------------------------------------------------------------
// Looking at the store.

#[track_caller]
fn assert_nothing_recorded(project: &Project) {
    assert_eq!(
        project.image_records(),
        Vec::<String>::new(),
        "image records"
    );
    assert_eq!(
        project.store_names("tmp"),
        Vec::<String>::new(),
        "store tmp/"
    );
}

/// Every path under `dir` named `name`, symlinks not followed.
fn find_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry.file_name() == name {
            found.push(path.clone());
        }
        if entry.file_type().unwrap().is_dir() {
            found.extend(find_named(&path, name));
        }
    }
    found
}

fn inode(path: &Path) -> u64 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .ino()
}

// ---------------------------------------------------------------------------
// 1. What the container sees.

#[test]
fn whiteouts_and_opaque_directories_give_the_tree_the_oci_spec_defines() {
    let project = project_with(&[("img", "oci:image")]);
    let lower = TarBuilder::new()
        .dir("data/", 0o755)
        .file("data/a", 0o644, b"a")
        .file("data/b", 0o644, b"b")
        .dir("keep/", 0o755)
        .file("keep/x", 0o644, b"x")
        .dir("opq/", 0o755)
        .file("opq/old1", 0o644, b"1")
        .file("opq/old2", 0o644, b"2")
        .file("file-to-dir", 0o644, b"a file")
        .dir("dir-to-file/", 0o755)
        .file("dir-to-file/inner", 0o644, b"inner")
        .dir("recreated/", 0o755)
        .file("recreated/old", 0o644, b"old")
        .finish();
    let upper = TarBuilder::new()
        .file("data/.wh.a", 0o644, b"")
        .file("opq/.wh..wh..opq", 0o644, b"")
        .file("opq/new", 0o644, b"new")
        .file(".wh.keep", 0o644, b"")
        // A whiteout hides lower layers only, never its own layer's entry.
        .file("data/c", 0o644, b"c")
        .file("data/.wh.c", 0o644, b"")
        .dir("file-to-dir/", 0o755)
        .file("file-to-dir/child", 0o644, b"child")
        .file("dir-to-file", 0o644, b"now a file")
        // Deleted and made again in one layer, as docker commits it.
        .file(".wh.recreated", 0o644, b"")
        .dir("recreated/", 0o755)
        .file("recreated/fresh", 0o644, b"fresh")
        .finish();
    write_image(
        &project,
        "image",
        &[
            busybox(),
            layer(lower, Compression::Gzip),
            layer(upper, Compression::Gzip),
        ],
    );

    let script = "\
        echo data: $(ls -A /data); \
        echo opq: $(ls -A /opq); \
        echo recreated: $(ls -A /recreated); \
        if [ -e /keep ]; then echo keep: present; else echo keep: gone; fi; \
        [ -d /file-to-dir ] && echo file-to-dir: $(cat /file-to-dir/child); \
        [ -f /dir-to-file ] && echo dir-to-file: $(cat /dir-to-file)";
    let output = success(&sh(&project, "img", script));
    assert_eq!(
        output,
        "data: b c\n\
         opq: new\n\
         recreated: fresh\n\
         keep: gone\n\
         file-to-dir: child\n\
         dir-to-file: now a file\n"
    );
}

#[test]
fn compressions_links_modes_and_mtimes_survive_into_the_container() {
    let project = project_with(&[("img", "oci:image")]);
    let links = TarBuilder::new()
        .dir("links/", 0o755)
        .file("links/orig", 0o644, b"linked\n")
        .hard_link("links/hard", "links/orig")
        .symlink("links/relative", "orig")
        .symlink("links/absolute", "/links/orig")
        .symlink("links/dangling", "/nowhere")
        .finish();
    let modes_and_times = tar_with_mtimes(&[
        (
            "private/",
            tar::EntryType::Directory,
            0o750,
            1_111_111_111,
            b"",
        ),
        (
            "private/key",
            tar::EntryType::Regular,
            0o600,
            1_222_222_222,
            b"k",
        ),
        (
            "stamped",
            tar::EntryType::Regular,
            0o644,
            1_234_567_890,
            b"s",
        ),
        // Documented: setuid/setgid are dropped on unpacking, sticky stays.
        (
            "setuid",
            tar::EntryType::Regular,
            0o4755,
            1_234_567_890,
            b"s",
        ),
        (
            "sticky/",
            tar::EntryType::Directory,
            0o1777,
            1_234_567_890,
            b"",
        ),
    ]);
    let script = TarBuilder::new()
        .file(
            "usr/local/bin/hello",
            0o755,
            b"#!/bin/sh\necho \"hello from the top layer, args: $*\"\n",
        )
        .finish();
    write_image(
        &project,
        "image",
        &[
            busybox(),                                 // gzip
            layer(links, Compression::Zstd),           // zstd
            layer(modes_and_times, Compression::None), // plain tar
            layer(script, Compression::Gzip),
        ],
    );

    let probe = "\
        [ \"$(stat -c %i /links/orig)\" = \"$(stat -c %i /links/hard)\" ] && echo same inode; \
        stat -c '%h links' /links/orig; \
        cat /links/hard /links/relative /links/absolute; \
        for l in relative absolute dangling; do readlink /links/$l; done; \
        stat -c '%a %n' /private /private/key /usr/local/bin/hello /setuid /sticky; \
        stat -c '%Y %n' /private /private/key /stamped; \
        /usr/local/bin/hello a b";
    let output = success(&sh(&project, "img", probe));
    assert_eq!(
        output,
        "same inode\n\
         2 links\n\
         linked\nlinked\nlinked\n\
         orig\n/links/orig\n/nowhere\n\
         750 /private\n600 /private/key\n755 /usr/local/bin/hello\n755 /setuid\n1777 /sticky\n\
         1111111111 /private\n1222222222 /private/key\n1234567890 /stamped\n\
         hello from the top layer, args: a b\n"
    );
}

#[test]
fn tags_pick_their_image_in_a_layout_and_in_an_archive() {
    let project = project_with(&[
        ("v1", "oci:image:v1"),
        ("v2", "oci:image:v2"),
        ("archived-v1", "oci-archive:image.tar:v1"),
        ("archived-v2", "oci-archive:image.tar:v2"),
        ("tar-command-v1", "oci-archive:by-tar-command.tar:v1"),
    ]);
    let version = |text: &[u8]| {
        layer(
            TarBuilder::new().file("version", 0o644, text).finish(),
            Compression::Gzip,
        )
    };
    let layout = project.root.join("image");
    write_tagged_images(
        &layout,
        &[
            ("v1", &[busybox(), version(b"one")]),
            ("v2", &[busybox(), version(b"two")]),
        ],
    );
    archive_layout(&layout, &project.root.join("image.tar"));
    // GNU tar names its members `./index.json`, `./blobs/sha256/…`.
    let status = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(project.root.join("by-tar-command.tar"))
        .arg(".")
        .status()
        .expect("run tar");
    assert!(status.success());
    project.hand_over();

    for (container, expected) in [
        ("v1", "one"),
        ("v2", "two"),
        ("archived-v1", "one"),
        ("archived-v2", "two"),
        ("tar-command-v1", "one"),
    ] {
        let output = sh(&project, container, "cat /version");
        assert_eq!(success(&output), expected, "container {container}");
    }
    // The layout and the archives hold the same two manifests.
    assert_eq!(project.image_records().len(), 2);
}

// ---------------------------------------------------------------------------
// 4. Malicious layers: refused, host untouched, nothing recorded.

/// A project with an image `bad` (busybox, then `bad_layers`) and an image
/// `good` (busybox alone), and an empty directory outside the project that
/// the test user could write to, for attacks to aim at.
struct Attack {
    project: Project,
    outside: PathBuf,
}

impl Attack {
    fn new(bad_layers: impl FnOnce(&Path) -> Vec<Vec<u8>>) -> Attack {
        let project = project_with(&[("bad", "oci:bad"), ("good", "oci:good")]);
        let outside = project.root.parent().unwrap().join("outside");
        fs::create_dir(&outside).unwrap();
        give_to_test_user(&outside);
        let mut layers = vec![busybox()];
        layers.extend(
            bad_layers(&outside)
                .into_iter()
                .map(|tar| layer(tar, Compression::Gzip)),
        );
        write_image(&project, "bad", &layers);
        write_image(&project, "good", &[busybox()]);
        Attack { project, outside }
    }

    /// `den` refuses the bad image for one of its layers with exit 125 and
    /// a message containing `needles`; nothing escaped, nothing was
    /// recorded, and the good image still runs in the same store.
    #[track_caller]
    fn assert_refused(&self, needles: &[&str]) {
        let stderr = self.assert_image_refused(needles);
        assert!(
            stderr.contains("was rejected and nothing of it was kept"),
            "{stderr}"
        );
        assert_eq!(
            self.project.store_names("layers"),
            [diff_id(&busybox().tar)],
            "only the good layer may be kept"
        );
    }

    /// As `assert_refused`, whatever the reason; returns den's stderr.
    #[track_caller]
    fn assert_image_refused(&self, needles: &[&str]) -> String {
        let passwd_links = fs::metadata("/etc/passwd").unwrap().nlink();
        let output = sh(&self.project, "bad", "echo ran");
        let stderr = refused(&output, needles);
        assert!(!text(&output.stdout).contains("ran"), "the image ran");
        self.assert_host_untouched();
        assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), passwd_links);
        assert_nothing_recorded(&self.project);

        let output = sh(&self.project, "good", "echo still works");
        assert_eq!(success(&output), "still works\n");
        assert_eq!(self.project.image_records().len(), 1);
        stderr
    }

    /// Nothing was written outside the store's layers (the caller checks
    /// which layers were kept).
    #[track_caller]
    fn assert_host_untouched(&self) {
        let left: Vec<_> = fs::read_dir(&self.outside).unwrap().collect();
        assert!(
            left.is_empty(),
            "the outside directory was written: {left:?}"
        );
        let everything = self.project.root.parent().unwrap();
        let layers = self.project.data.join("layers");
        for marker in ["escape", "pwned", "outside-link"] {
            let found: Vec<PathBuf> = find_named(everything, marker)
                .into_iter()
                .filter(|path| !path.starts_with(&layers))
                .collect();
            assert!(found.is_empty(), "`{marker}` was written: {found:?}");
        }
    }
}

#[test]
fn layer_entry_with_dot_dot_is_refused() {
    let attack = Attack::new(|_| {
        vec![
            TarBuilder::new()
                .entry("../escape", tar::EntryType::Regular, 0o644, b"x", None)
                .finish(),
        ]
    });
    attack.assert_refused(&["entry `../escape`", "contains `..`"]);
}

#[test]
fn layer_entry_with_absolute_traversal_is_refused() {
    let name = format!("den-escape-{}-absolute", std::process::id());
    let path = format!("/../../tmp/{name}");
    let attack = Attack::new(|_| {
        vec![
            TarBuilder::new()
                .entry(&path, tar::EntryType::Regular, 0o644, b"x", None)
                .finish(),
        ]
    });
    attack.assert_refused(&[&format!("entry `{path}`"), "contains `..`"]);
    assert!(!Path::new("/tmp").join(&name).exists());
}

#[test]
fn writing_through_a_symlink_to_an_outside_directory_is_refused() {
    let attack = Attack::new(|outside| {
        vec![
            TarBuilder::new()
                .symlink("evil", outside.to_str().unwrap())
                .file("evil/pwned", 0o644, b"x")
                .finish(),
        ]
    });
    attack.assert_refused(&["entry `evil/pwned`", "goes through the symlink `evil`"]);
}

#[test]
fn writing_through_a_symlink_to_dot_dot_is_refused() {
    let attack = Attack::new(|_| {
        vec![
            TarBuilder::new()
                .symlink("up", "..")
                .file("up/pwned", 0o644, b"x")
                .finish(),
        ]
    });
    attack.assert_refused(&["entry `up/pwned`", "goes through the symlink `up`"]);
}

#[test]
fn hard_link_to_a_host_file_is_refused() {
    let attack = Attack::new(|_| {
        vec![
            TarBuilder::new()
                .hard_link("passwd", "/etc/passwd")
                .finish(),
        ]
    });
    attack.assert_refused(&[
        "entry `passwd`",
        "hard link target `etc/passwd` is not in this layer",
    ]);
}

#[test]
fn hard_link_out_of_the_layer_is_refused() {
    let attack = Attack::new(|_| {
        vec![
            TarBuilder::new()
                .hard_link("outside-link", "../outside")
                .finish(),
        ]
    });
    attack.assert_refused(&["entry `outside-link`", "bad hard link target"]);
}

/// Layers are unpacked each into its own directory, so a symlink planted
/// by one layer is not even there when the next one is unpacked, and the
/// later `evil/pwned` would make a directory `evil` in its own layer. But
/// applied in order, as other tools do, the entry goes through the link:
/// an image that relies on that is refused once its layers are in, naming
/// both layers. Those layers are valid and may stay; the image does not.
#[test]
fn symlink_planted_by_an_earlier_layer_is_rejected() {
    let writer = TarBuilder::new().file("evil/pwned", 0o644, b"x").finish();
    let writer_hex = diff_id(&writer);
    let attack = Attack::new(|outside| {
        vec![
            TarBuilder::new()
                .symlink("evil", outside.to_str().unwrap())
                .finish(),
            writer,
        ]
    });
    let target = format!("`{}`", attack.outside.display());
    let stderr = attack.assert_image_refused(&[
        "cannot use image `oci:",
        "layer 3 (sha256:",
        "would write `evil/pwned` through the symlink `evil`",
        &target,
        "planted by layer 2 (sha256:",
        "refusing the image",
    ]);
    assert!(!stderr.contains("was rejected"), "{stderr}");
    assert_eq!(attack.project.store_names("layers").len(), 3);
    let layers = attack.project.data.join("layers");
    assert_eq!(
        find_named(&layers, "pwned"),
        [layers.join(writer_hex).join("fs/evil/pwned")]
    );
    // Again, now that every layer is in the store: still refused.
    refused(
        &sh(&attack.project, "bad", "echo ran"),
        &["would write `evil/pwned` through the symlink `evil`"],
    );
    assert_eq!(attack.project.image_records().len(), 1, "only `good`");
    assert_eq!(attack.project.store_names("tmp"), Vec::<String>::new());
    attack.assert_host_untouched();
}

/// Parents missing from a tar are fine over a lower directory and where
/// no lower layer has anything.
#[test]
fn implicit_parents_over_directories_and_new_paths_are_accepted() {
    let project = project_with(&[("img", "oci:image")]);
    let upper = TarBuilder::new()
        .file("etc/extra", 0o644, b"extra\n")
        .file("opt/tool/data", 0o644, b"data\n")
        .finish();
    write_image(
        &project,
        "image",
        &[busybox(), layer(upper, Compression::Gzip)],
    );
    let script = "cat /etc/extra /opt/tool/data; [ -f /etc/passwd ] && echo passwd kept";
    assert_eq!(
        success(&sh(&project, "img", script)),
        "extra\ndata\npasswd kept\n"
    );
}

// ---------------------------------------------------------------------------
// 5. Corrupt images.

/// A project whose image `img` is busybox plus a plain-tar layer.
fn corruptible() -> (Project, PathBuf, Vec<u8>) {
    let project = project_with(&[("img", "oci:image")]);
    let payload = TarBuilder::new()
        .file("payload", 0o644, b"original")
        .finish();
    write_image(
        &project,
        "image",
        &[busybox(), layer(payload.clone(), Compression::None)],
    );
    let layout = project.root.join("image");
    (project, layout, payload)
}

#[test]
fn layer_blob_not_matching_its_digest_is_refused() {
    let (project, layout, payload) = corruptible();
    let digest = manifest(&layout)["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = blob_path(&layout, &digest);
    let bytes = fs::read(&blob).unwrap();
    let at = bytes
        .windows(8)
        .position(|w| w == b"original")
        .expect("payload in the plain layer");
    let mut tampered = bytes.clone();
    tampered[at..at + 8].copy_from_slice(b"tampered");
    fs::write(&blob, tampered).unwrap();

    let output = sh(&project, "img", "cat /payload");
    refused(
        &output,
        &[&format!("layer {digest}"), "the blob is corrupt"],
    );
    assert_nothing_recorded(&project);
    assert!(!project.store_names("layers").contains(&diff_id(&payload)));
}

#[test]
fn config_blob_not_matching_its_digest_is_refused() {
    let (project, layout, _) = corruptible();
    let digest = manifest(&layout)["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = blob_path(&layout, &digest);
    let mut bytes = fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] = b' '; // same size, other content
    fs::write(&blob, bytes).unwrap();

    let output = sh(&project, "img", "cat /payload");
    refused(&output, &[&format!("blob {digest}"), "is corrupt"]);
    assert_nothing_recorded(&project);
    assert_eq!(project.store_names("layers"), Vec::<String>::new());
}

#[test]
fn layer_with_a_wrong_diff_id_is_refused() {
    let (project, layout, payload) = corruptible();
    let wrong = format!("sha256:{}", oci::sha256_hex(b"something else"));
    let wrong_for_edit = wrong.clone();
    edit_config(&layout, move |config| {
        config["rootfs"]["diff_ids"][1] = wrong_for_edit.into();
    });

    let output = sh(&project, "img", "cat /payload");
    let actual = format!("sha256:{}", diff_id(&payload));
    refused(
        &output,
        &[&format!(
            "its uncompressed content hashes to {actual} but the image config says {wrong}"
        )],
    );
    assert_nothing_recorded(&project);
    let layers = project.store_names("layers");
    assert!(!layers.contains(&diff_id(&payload)), "{layers:?}");
    assert!(
        !layers.contains(&wrong["sha256:".len()..].to_string()),
        "{layers:?}"
    );
}

// ---------------------------------------------------------------------------
// 6–7. Concurrency and reuse.

/// Busybox and four small layers, one per compression and then some.
fn numbered_layers() -> Vec<Layer> {
    let mut layers = vec![busybox()];
    for (n, compression) in [
        Compression::Gzip,
        Compression::Zstd,
        Compression::None,
        Compression::Zstd,
    ]
    .into_iter()
    .enumerate()
    {
        let tar = TarBuilder::new()
            .file(&format!("layer{n}"), 0o644, format!("{n}\n").as_bytes())
            .finish();
        layers.push(layer(tar, compression));
    }
    layers
}

#[test]
fn concurrent_runs_on_a_fresh_store_unpack_each_layer_once() {
    let project = project_with(&[("img", "oci:image")]);
    let layers = numbered_layers();
    write_image(&project, "image", &layers);
    let expected_layers: BTreeSet<String> = layers.iter().map(|l| diff_id(&l.tar)).collect();

    for round in 0..3 {
        // A fresh store each round.
        for name in project.store_names("") {
            let path = project.data.join(name);
            if path.is_dir() {
                let status = Command::new("rm").arg("-rf").arg(&path).status().unwrap();
                assert!(status.success());
            } else {
                fs::remove_file(path).unwrap();
            }
        }
        let args = [
            "exec", "img", "--", "cat", "/layer0", "/layer1", "/layer2", "/layer3",
        ];
        let outputs: Vec<Output> = std::thread::scope(|scope| {
            let runs: Vec<_> = (0..2)
                .map(|_| scope.spawn(|| bounded(project.den(Runner::User, &args))))
                .collect();
            runs.into_iter()
                .map(|run| run.join().expect("den runner"))
                .collect()
        });
        for output in &outputs {
            assert_eq!(success(output), "0\n1\n2\n3\n", "round {round}");
        }
        let unpacked: BTreeSet<String> = project.store_names("layers").into_iter().collect();
        assert_eq!(unpacked, expected_layers, "round {round}");
        for hex in &unpacked {
            let names = project.store_names(&format!("layers/{hex}"));
            assert_eq!(names, ["fs", "meta"], "round {round}");
        }
        assert_eq!(project.image_records().len(), 1, "round {round}");
        assert_eq!(project.store_names("tmp"), Vec::<String>::new());
    }
}

/// What `resolve` promises for an unchanged source: it reads the source
/// cache entry and the image record and stats the layer directories,
/// nothing else — not even the layout's blobs.
#[test]
fn unchanged_image_is_not_imported_again_and_edits_are_picked_up() {
    let project = project_with(&[("img", "oci:image:latest"), ("next", "oci:image:v2")]);
    let layout = project.root.join("image");
    let first = layer(
        TarBuilder::new().file("msg", 0o644, b"first").finish(),
        Compression::Gzip,
    );
    write_image(&project, "image", &[busybox(), first]);
    assert_eq!(success(&sh(&project, "img", "cat /msg")), "first");

    let layer_dirs = project.store_names("layers");
    let layer_inodes: Vec<u64> = layer_dirs
        .iter()
        .map(|hex| inode(&project.data.join("layers").join(hex)))
        .collect();
    let cache_entries = project.store_names("sources");
    assert_eq!(cache_entries.len(), 1, "{cache_entries:?}");
    let cache_entry = project.data.join("sources").join(&cache_entries[0]);
    let cache_stamp = fs::metadata(&cache_entry).unwrap();
    let records = project.image_records();

    // Without any blob the layout is unusable, unless den does not read it.
    for blob in fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        fs::remove_file(blob.unwrap().path()).unwrap();
    }
    assert_eq!(success(&sh(&project, "img", "cat /msg")), "first");
    let inodes_now: Vec<u64> = layer_dirs
        .iter()
        .map(|hex| inode(&project.data.join("layers").join(hex)))
        .collect();
    assert_eq!(inodes_now, layer_inodes, "layer directories were replaced");
    assert_eq!(project.store_names("layers"), layer_dirs);
    assert_eq!(project.image_records(), records);
    let cache_now = fs::metadata(&cache_entry).unwrap();
    assert_eq!(
        (cache_now.ino(), cache_now.mtime(), cache_now.mtime_nsec()),
        (
            cache_stamp.ino(),
            cache_stamp.mtime(),
            cache_stamp.mtime_nsec()
        ),
        "the source cache entry was rewritten"
    );

    // `latest` now names new content, and a tag `v2` appears.
    let second = layer(
        TarBuilder::new().file("msg", 0o644, b"second").finish(),
        Compression::Zstd,
    );
    let third = layer(
        TarBuilder::new().file("msg", 0o644, b"third").finish(),
        Compression::None,
    );
    refused(
        &sh(&project, "next", "cat /msg"),
        &["has no image tagged `v2`", "Tags: latest"],
    );
    write_tagged_images(
        &layout,
        &[
            ("latest", &[busybox(), second]),
            ("v2", &[busybox(), third]),
        ],
    );
    project.hand_over();
    assert_eq!(success(&sh(&project, "img", "cat /msg")), "second");
    assert_eq!(success(&sh(&project, "next", "cat /msg")), "third");
    assert_eq!(project.image_records().len(), 3);
    // The busybox layer they share was kept, not unpacked again.
    let busybox_dir = project.data.join("layers").join(diff_id(&busybox().tar));
    let before = layer_dirs
        .iter()
        .position(|hex| *hex == diff_id(&busybox().tar))
        .unwrap();
    assert_eq!(inode(&busybox_dir), layer_inodes[before]);
}

// ---------------------------------------------------------------------------
// 8. Errors naming the source.

#[test]
fn missing_source_path_is_named() {
    let project = project_with(&[("img", "oci:no-such-image")]);
    let missing = project.root.join("no-such-image");
    refused(
        &sh(&project, "img", "true"),
        &[&format!("cannot find `{}`", missing.display())],
    );
    assert_nothing_recorded(&project);
}

#[test]
fn unknown_tag_lists_the_tags_the_layout_has() {
    let project = project_with(&[("img", "oci:image:v3")]);
    write_tagged_images(
        &project.root.join("image"),
        &[("v1", &[busybox()]), ("v2", &[busybox()])],
    );
    project.hand_over();
    let stderr = refused(
        &sh(&project, "img", "true"),
        &["has no image tagged `v3`. Tags: v1, v2"],
    );
    // The source is named once, by the context.
    assert_eq!(stderr.matches("image:v3").count(), 1, "{stderr}");
    assert_nothing_recorded(&project);
}

#[test]
fn archive_named_as_a_layout_directory_says_which_to_use() {
    let project = project_with(&[("img", "oci:image.tar")]);
    let layout = project.root.join("image");
    oci::write_busybox(&layout);
    archive_layout(&layout, &project.root.join("image.tar"));
    project.hand_over();
    refused(
        &sh(&project, "img", "true"),
        &[
            "is a file, not an OCI layout directory",
            "use `oci-archive:`",
        ],
    );
}
