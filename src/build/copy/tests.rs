use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::time::{Duration, SystemTime};

use super::apply::apply_under;
use super::*;

/// A file with an mtime well in the past (so the stat cache trusts it).
fn old_file(path: &Path, data: &str, mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    set_mtime(path, 1_600_000_000);
}

fn set_mtime(path: &Path, seconds: u64) {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(seconds);
    fs::File::options()
        .write(true)
        .open(path)
        .or_else(|_| fs::File::open(path))
        .unwrap()
        .set_modified(time)
        .unwrap();
}

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    old_file(&root.join("src/a.txt"), "alpha\n", 0o644);
    old_file(&root.join("src/run.sh"), "#!/bin/sh\n", 0o755);
    old_file(&root.join("src/b/c.txt"), "gamma\n", 0o600);
    symlink("a.txt", root.join("src/link")).unwrap();
    old_file(&root.join("README"), "readme\n", 0o644);
    dir
}

fn spec(from: &str, to: &str, exclude: &[&str]) -> CopySpec {
    CopySpec {
        from: from.into(),
        to: to.into(),
        exclude: exclude.iter().map(|p| p.to_string()).collect(),
    }
}

fn scan_fresh(root: &Path, spec: &CopySpec) -> CopyInputs {
    scan(root, spec, &mut StatCache::default()).unwrap()
}

fn paths(inputs: &CopyInputs) -> Vec<String> {
    inputs
        .entries
        .iter()
        .map(|e| e.path.display().to_string())
        .collect()
}

fn digest_of(root: &Path, spec: &CopySpec) -> String {
    scan_fresh(root, spec).digest()
}

#[test]
fn scan_lists_sorted_entries_with_digests_and_links() {
    let project = project();
    let inputs = scan_fresh(project.path(), &spec("src", "/app", &[]));
    assert_eq!(paths(&inputs), ["a.txt", "b", "b/c.txt", "link", "run.sh"]);
    let a = &inputs.entries[0];
    assert_eq!(a.perm, 0o644);
    let expected: [u8; 32] = Sha256::digest(b"alpha\n").into();
    assert_eq!(a.kind, EntryKind::File { sha256: expected });
    assert_eq!(inputs.entries[1].kind, EntryKind::Dir);
    assert_eq!(
        inputs.entries[3].kind,
        EntryKind::Symlink {
            target: "a.txt".into()
        }
    );
    let watched: Vec<_> = inputs.watched.iter().map(|w| w.path()).collect();
    assert_eq!(
        watched.len(),
        6,
        "from, 4 files and a directory: {watched:?}"
    );
    assert!(watched.contains(&Path::new("src")));
    assert!(watched.contains(&Path::new("src/b/c.txt")));
}

#[test]
fn keys_follow_content_mode_and_list_but_not_mtime() {
    let project = project();
    let root = project.path();
    let spec = spec("src", "/app", &[]);
    let first = digest_of(root, &spec);
    assert_eq!(digest_of(root, &spec), first, "stable across scans");

    let a = root.join("src/a.txt");
    set_mtime(&a, 1_700_000_000);
    assert_eq!(digest_of(root, &spec), first, "mtime alone changes nothing");

    fs::write(&a, "ALPHA\n").unwrap();
    let changed = digest_of(root, &spec);
    assert_ne!(changed, first, "content");
    fs::write(&a, "alpha\n").unwrap();
    assert_eq!(digest_of(root, &spec), first);

    fs::set_permissions(&a, fs::Permissions::from_mode(0o755)).unwrap();
    assert_ne!(digest_of(root, &spec), first, "mode");
    fs::set_permissions(&a, fs::Permissions::from_mode(0o644)).unwrap();

    fs::write(root.join("src/b/new"), "").unwrap();
    assert_ne!(digest_of(root, &spec), first, "a new file");
    fs::remove_file(root.join("src/b/new")).unwrap();
    assert_eq!(digest_of(root, &spec), first);

    fs::remove_file(root.join("src/link")).unwrap();
    symlink("run.sh", root.join("src/link")).unwrap();
    assert_ne!(digest_of(root, &spec), first, "a link target");
}

#[test]
fn setuid_bits_are_dropped_and_special_files_skipped() {
    let project = project();
    let root = project.path();
    fs::set_permissions(root.join("src/run.sh"), fs::Permissions::from_mode(0o6755)).unwrap();
    rustix::fs::mkfifoat(rustix::fs::CWD, root.join("src/fifo"), Mode::RUSR).unwrap();
    let inputs = scan_fresh(root, &spec("src", "/app", &[]));
    assert_eq!(inputs.entries.last().unwrap().perm, 0o755);
    assert!(!paths(&inputs).contains(&"fifo".to_string()));
    assert_eq!(inputs.warnings.len(), 1);
    assert!(
        inputs.warnings[0].contains("src/fifo"),
        "{:?}",
        inputs.warnings
    );
}

#[test]
fn excludes_use_gitignore_syntax_relative_to_from() {
    let project = project();
    let root = project.path();
    old_file(&root.join("src/debug.log"), "", 0o644);
    old_file(&root.join("src/keep.log"), "", 0o644);
    old_file(&root.join("src/target/out.bin"), "", 0o644);
    old_file(&root.join("src/b/target/deep"), "", 0o644);
    let inputs = scan_fresh(
        root,
        &spec("src", "/app", &["*.log", "!keep.log", "/target/"]),
    );
    assert_eq!(
        paths(&inputs),
        [
            "a.txt",
            "b",
            "b/c.txt",
            "b/target",
            "b/target/deep",
            "keep.log",
            "link",
            "run.sh"
        ]
    );
    assert!(
        !inputs
            .watched
            .iter()
            .any(|w| w.path().starts_with("src/target")),
        "excluded directories are not watched"
    );

    let err = scan(
        root,
        &spec("src", "/app", &["[z-a]"]),
        &mut StatCache::default(),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("`[z-a]`"), "{err:#}");
}

#[test]
fn from_stays_in_the_project_and_links_are_not_followed() {
    let project = project();
    let root = project.path();
    symlink("/etc", root.join("src/etc")).unwrap();
    symlink("src", root.join("linked")).unwrap();
    let mut cache = StatCache::default();
    for bad in ["../x", "src/../../x", "/etc"] {
        let err = scan(root, &spec(bad, "/app", &[]), &mut cache).unwrap_err();
        assert!(
            format!("{err}").contains("inside the project"),
            "{bad}: {err}"
        );
    }
    let err = scan(root, &spec("linked/a.txt", "/app", &[]), &mut cache).unwrap_err();
    assert!(format!("{err:#}").contains("symlink"), "{err:#}");
    let err = scan(root, &spec("missing", "/app", &[]), &mut cache).unwrap_err();
    assert!(format!("{err:#}").contains("no such file"), "{err:#}");

    let inputs = scan(root, &spec("src", "/app", &[]), &mut cache).unwrap();
    let etc = inputs.entries.iter().find(|e| e.path == Path::new("etc"));
    assert_eq!(
        etc.unwrap().kind,
        EntryKind::Symlink {
            target: "/etc".into()
        }
    );
    assert!(!paths(&inputs).iter().any(|p| p.starts_with("etc/")));

    // The whole project, and a single file.
    let all = scan(root, &spec(".", "/app", &[]), &mut cache).unwrap();
    assert!(paths(&all).contains(&"src/b/c.txt".to_string()));
    assert_eq!(all.watched[0].path(), Path::new("."));
    let one = scan(root, &spec("README", "/app", &[]), &mut cache).unwrap();
    assert_eq!(paths(&one), [""]);
    let watched: Vec<_> = one.watched.iter().map(|w| w.path()).collect();
    assert_eq!(watched, [Path::new("README")]);
}

#[test]
fn the_stat_cache_is_used_saved_and_skips_racy_files() {
    let project = project();
    let root = project.path();
    fs::write(root.join("src/fresh"), "just written").unwrap();
    let store = tempfile::tempdir().unwrap();
    let cache_path = store.path().join("builds/stat/project.json");
    let spec = spec("src", "/app", &[]);

    let mut cache = StatCache::load(&cache_path);
    let first = scan(root, &spec, &mut cache).unwrap();
    cache.save(&cache_path).unwrap();

    // Forge the cached digest of a.txt: a hit must return it unread.
    let mut json: serde_json::Value =
        serde_json::from_slice(&fs::read(&cache_path).unwrap()).unwrap();
    let files = json["files"].as_object_mut().unwrap();
    assert!(files.contains_key("src/a.txt"));
    assert!(
        !files.contains_key("src/fresh"),
        "modified just now: not cached"
    );
    files.get_mut("src/a.txt").unwrap()[1] = "00".repeat(32).into();
    fs::write(&cache_path, serde_json::to_vec(&json).unwrap()).unwrap();

    let mut cache = StatCache::load(&cache_path);
    let forged = scan(root, &spec, &mut cache).unwrap();
    assert_eq!(forged.entries[0].kind, EntryKind::File { sha256: [0; 32] });
    assert_ne!(forged.digest(), first.digest());

    // A changed file misses the cache.
    fs::write(root.join("src/a.txt"), "alpha\n").unwrap();
    assert_eq!(
        scan(root, &spec, &mut cache).unwrap().digest(),
        first.digest()
    );

    fs::write(&cache_path, "{not json").unwrap();
    assert_eq!(
        scan(root, &spec, &mut StatCache::load(&cache_path))
            .unwrap()
            .digest(),
        first.digest(),
        "a corrupt cache is an empty one"
    );
}

#[test]
fn unchanged_notices_touched_added_and_removed_files() {
    let project = project();
    let root = project.path();
    let spec = spec("src", "/app", &[]);
    let rescan = || scan_fresh(root, &spec).watched;

    let watched = rescan();
    assert!(unchanged(root, &watched));
    let json = serde_json::to_string(&watched).unwrap();
    let back: Vec<Watched> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, watched);
    assert!(json.starts_with(r#"[["src",["#), "compact rows: {json}");

    set_mtime(&root.join("src/b/c.txt"), 1_700_000_000);
    assert!(!unchanged(root, &watched), "touched");

    let watched = rescan();
    fs::write(root.join("src/b/added"), "").unwrap();
    assert!(!unchanged(root, &watched), "added to a directory");

    let watched = rescan();
    fs::remove_file(root.join("src/link")).unwrap();
    assert!(!unchanged(root, &watched), "removed");
    assert!(!unchanged(Path::new("/nonexistent/project"), &watched));
}

/// A container root: merged /usr with an absolute `/bin` link.
fn container_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("usr/bin")).unwrap();
    fs::create_dir_all(dir.path().join("opt")).unwrap();
    symlink("/usr/bin", dir.path().join("bin")).unwrap();
    dir
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn apply_writes_a_directory_with_modes_links_and_mtimes() {
    let project = project();
    let src = project.path();
    fs::set_permissions(src.join("src/b"), fs::Permissions::from_mode(0o555)).unwrap();
    let inputs = scan_fresh(src, &spec("src", "/srv/app", &[]));
    let root = container_root();
    let root = root.path();
    fs::create_dir_all(root.join("srv/app")).unwrap();
    fs::write(
        root.join("srv/app/a.txt"),
        "old content, longer than the new",
    )
    .unwrap();

    apply_under(root, src, &inputs, "/srv/app").unwrap();

    let app = root.join("srv/app");
    assert_eq!(fs::read_to_string(app.join("a.txt")).unwrap(), "alpha\n");
    assert_eq!(fs::read_to_string(app.join("b/c.txt")).unwrap(), "gamma\n");
    assert_eq!(fs::read_link(app.join("link")).unwrap(), Path::new("a.txt"));
    assert_eq!(mode(&app.join("run.sh")), 0o755);
    assert_eq!(mode(&app.join("b/c.txt")), 0o600);
    assert_eq!(mode(&app.join("b")), 0o555, "set after it was filled");
    let mtime = |path: &Path| fs::symlink_metadata(path).unwrap().mtime();
    assert_eq!(mtime(&app.join("a.txt")), 1_600_000_000);
    assert_eq!(mtime(&app.join("b")), mtime(&src.join("src/b")));
    fs::set_permissions(src.join("src/b"), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn apply_places_a_single_file_like_docker() {
    let project = project();
    let src = project.path();
    let inputs = scan_fresh(src, &spec("src/run.sh", "/x", &[]));
    let root = container_root();
    let root = root.path();

    apply_under(root, src, &inputs, "/bin/").unwrap();
    assert_eq!(
        mode(&root.join("usr/bin/run.sh")),
        0o755,
        "through /bin → /usr/bin"
    );
    apply_under(root, src, &inputs, "/opt").unwrap();
    assert!(
        root.join("opt/run.sh").is_file(),
        "into an existing directory"
    );
    apply_under(root, src, &inputs, "/etc/den/start").unwrap();
    assert_eq!(mode(&root.join("etc/den")), 0o755);
    assert_eq!(
        fs::read_to_string(root.join("etc/den/start")).unwrap(),
        "#!/bin/sh\n"
    );

    let err = apply_under(root, src, &inputs, "relative").unwrap_err();
    assert!(format!("{err}").contains("absolute"), "{err}");
}

#[test]
fn apply_fails_when_a_file_changed_since_the_scan() {
    let project = project();
    let src = project.path();
    let inputs = scan_fresh(src, &spec("src", "/app", &[]));
    fs::write(src.join("src/b/c.txt"), "edited\n").unwrap();
    let root = container_root();
    let err = apply_under(root.path(), src, &inputs, "/app").unwrap_err();
    assert!(
        format!("{err:#}").contains("`src/b/c.txt` changed during the build; run it again"),
        "{err:#}"
    );
}
