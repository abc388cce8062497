//! Store-level tests: importing layouts and archives, what ends up in
//! the layer directories, rejection of bad layers, concurrency, reuse.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::json;
use tempfile::TempDir;

use super::digest::Digest;
use super::meta::{self, EntryKind};
use super::testutil::{self, Compression, Layer, OciDir, TarBuilder, layer, simple_layout};
use super::{Image, Source, Store};

struct Fixture {
    dir: TempDir,
    store: Store,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store"), Default::default()).unwrap();
        Fixture { dir, store }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a one-image layout of `layers` and resolves it.
    fn import(&self, layers: &[Layer]) -> anyhow::Result<Image> {
        simple_layout(&self.path("layout"), None, layers);
        self.store.resolve(&self.source("layout"))
    }

    fn source(&self, name: &str) -> Source {
        Source::OciLayout {
            path: self.path(name),
            tag: None,
        }
    }

    fn unpacked(&self) -> usize {
        testutil::count("unpack", self.store.root())
    }

    /// Names in a store subdirectory (empty if it does not exist).
    fn listing(&self, sub: &str) -> Vec<String> {
        match fs::read_dir(self.store.root().join(sub)) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn tar(build: impl FnOnce(&mut TarBuilder)) -> Vec<u8> {
    let mut builder = TarBuilder::new();
    build(&mut builder);
    builder.finish()
}

fn error_text(err: &anyhow::Error) -> String {
    format!("{err:#}")
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 64];
    let n = rustix::fs::lgetxattr(path, name, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn is_whiteout(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

fn meta_entries(layer: &Path) -> Vec<meta::MetaEntry> {
    let file = fs::File::open(layer.parent().unwrap().join("meta")).unwrap();
    meta::read(std::io::BufReader::new(file)).unwrap()
}

#[test]
fn imports_layers_and_turns_whiteouts_into_overlay_ones() {
    let fx = Fixture::new();
    let base = tar(|t| {
        t.dir("etc", 0o755)
            .file("etc/a", b"a", 0o644)
            .file("etc/b", b"b", 0o644);
        t.dir("opt", 0o755).file("opt/old", b"old", 0o644);
    });
    let top = tar(|t| {
        t.file("etc/.wh.a", b"", 0o644);
        t.file("opt/.wh..wh..opq", b"", 0o644)
            .file("opt/new", b"new", 0o644);
    });
    let image = fx
        .import(&[
            layer(&base, Compression::Gzip),
            layer(&top, Compression::Gzip),
        ])
        .unwrap();

    assert!(image.id.starts_with("sha256:"));
    assert_eq!(image.layers.len(), 2);
    let layers_dir = fx.store.root().join("layers");
    for path in &image.layers {
        assert_eq!(path.parent().unwrap().parent().unwrap(), layers_dir);
    }
    let [lower, upper] = &image.layers[..] else {
        unreachable!()
    };
    assert_eq!(fs::read(lower.join("etc/a")).unwrap(), b"a");
    assert!(
        is_whiteout(&upper.join("etc/a")),
        "whiteout must be a 0:0 char device"
    );
    assert!(!upper.join("etc/b").exists());
    assert_eq!(
        xattr(&upper.join("opt"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(fs::read(upper.join("opt/new")).unwrap(), b"new");
    assert_eq!(xattr(&lower.join("opt"), "user.overlay.opaque"), None);

    assert_eq!(image.config.env, ["PATH=/usr/bin:/bin"]);
    assert_eq!(image.config.cmd, ["/bin/sh"]);
    assert_eq!(image.config.working_dir, None);
    let kinds: Vec<EntryKind> = meta_entries(upper).into_iter().map(|e| e.kind).collect();
    assert!(
        kinds.contains(&EntryKind::Whiteout) && kinds.contains(&EntryKind::Opaque),
        "{kinds:?}"
    );
}

#[test]
fn reads_gzip_zstd_and_plain_layers() {
    for compression in [Compression::Plain, Compression::Gzip, Compression::Zstd] {
        let fx = Fixture::new();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let tar = tar(|t| {
            t.file("big", &big, 0o644);
        });
        let image = fx.import(&[layer(&tar, compression)]).unwrap();
        assert_eq!(
            fs::read(image.layers[0].join("big")).unwrap(),
            big,
            "{compression:?}"
        );
    }
}

#[test]
fn keeps_hard_links_and_symlinks_without_following_them() {
    let fx = Fixture::new();
    let tar = tar(|t| {
        t.file("bin/busybox", b"bb", 0o755)
            .hardlink("bin/sh", "bin/busybox");
        t.symlink("bin/ls", "busybox")
            .symlink("passwd", "/etc/passwd")
            .symlink("dangling", "../../nowhere");
        t.hardlink("bin/ls-hard", "./bin/ls");
    });
    let image = fx.import(&[layer(&tar, Compression::Plain)]).unwrap();
    let root = &image.layers[0];
    let busybox = fs::metadata(root.join("bin/busybox")).unwrap();
    assert_eq!(
        fs::metadata(root.join("bin/sh")).unwrap().ino(),
        busybox.ino()
    );
    assert_eq!(
        fs::read_link(root.join("bin/ls")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        fs::read_link(root.join("passwd")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        fs::read_link(root.join("dangling")).unwrap(),
        Path::new("../../nowhere")
    );
    // A hard link to a symlink links the symlink itself.
    assert_eq!(
        fs::read_link(root.join("bin/ls-hard")).unwrap(),
        Path::new("busybox")
    );
}

#[test]
fn applies_modes_and_mtimes_and_records_owners() {
    let fx = Fixture::new();
    let tar = tar(|t| {
        t.mtime(1_500_000_000).dir("ro", 0o555).dir("ro/sub", 0o500);
        t.file("ro/sub/f", b"x", 0o444).file("ro/g", b"y", 0o640);
        t.owner(1000, 50)
            .file("suid", b"s", 0o4755)
            .dir("tmp", 0o1777);
        t.owner(0, 0).file("deep/er/file", b"z", 0o600);
    });
    let image = fx.import(&[layer(&tar, Compression::Gzip)]).unwrap();
    let root = &image.layers[0];
    let mode = |p: &str| {
        fs::symlink_metadata(root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    let mtime = |p: &str| fs::symlink_metadata(root.join(p)).unwrap().mtime();
    assert_eq!(mode("ro"), 0o555);
    assert_eq!(mode("ro/sub"), 0o500);
    assert_eq!(mode("ro/sub/f"), 0o444);
    assert_eq!(mode("ro/g"), 0o640);
    assert_eq!(mode("suid"), 0o755, "setuid must not reach the host");
    assert_eq!(mode("tmp"), 0o1777);
    assert_eq!(mode("deep"), 0o755);
    assert_eq!(mode("deep/er"), 0o755);
    // Directory mtimes survive their contents being written.
    assert_eq!(mtime("ro"), 1_500_000_000);
    assert_eq!(mtime("ro/sub"), 1_500_000_000);
    assert_eq!(mtime("ro/sub/f"), 1_500_000_000);
    assert_eq!(mtime("suid"), 1_500_000_000);

    let entries = meta_entries(root);
    let suid = entries
        .iter()
        .find(|e| e.path == Path::new("suid"))
        .unwrap();
    assert_eq!(
        (suid.kind.clone(), suid.mode, suid.uid, suid.gid),
        (EntryKind::File, 0o4755, 1000, 50)
    );
    let implicit = entries
        .iter()
        .find(|e| e.path == Path::new("deep/er"))
        .unwrap();
    assert_eq!(
        (implicit.kind.clone(), implicit.mode),
        (EntryKind::ImplicitDir, 0o755)
    );
}

#[test]
fn directories_lose_a_setgid_bit_inherited_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fs");
    fs::create_dir(&out).unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o2755)).unwrap();
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    if mode(&out) != 0o2755 {
        return; // not in the directory's group: the kernel dropped the bit
    }
    let tar = tar(|t| {
        t.dir("d", 0o755).file("d/f", b"x", 0o644);
    });
    super::unpack::unpack(&tar[..], &out, &mut Vec::new()).unwrap();
    assert_eq!(mode(&out.join("d")), 0o755);
}

#[test]
fn reads_pax_long_names_and_skips_devices() {
    let fx = Fixture::new();
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
    let tar = tar(|t| {
        t.file(&long, b"long", 0o644);
        t.pax(&[("mtime", b"1600000000.25")])
            .file("precise", b"p", 0o644);
        t.entry(tar::EntryType::Char, b"dev/null", b"", b"", 0o666);
        t.entry(tar::EntryType::Fifo, b"fifo", b"", b"", 0o644);
    });
    let image = fx.import(&[layer(&tar, Compression::Zstd)]).unwrap();
    let root = &image.layers[0];
    assert_eq!(fs::read(root.join(&long)).unwrap(), b"long");
    let precise = fs::metadata(root.join("precise")).unwrap();
    assert_eq!(
        (precise.mtime(), precise.mtime_nsec()),
        (1_600_000_000, 250_000_000)
    );
    assert!(!root.join("dev/null").exists() && !root.join("fifo").exists());
    let kinds: Vec<EntryKind> = meta_entries(root).into_iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&EntryKind::CharDevice(0, 0)) && kinds.contains(&EntryKind::Fifo));
}

#[test]
fn later_entries_replace_earlier_ones_and_directories_merge() {
    let fx = Fixture::new();
    let tar = tar(|t| {
        t.dir("./", 0o751).file(".wh..wh..opq", b"", 0o644);
        t.file("x", b"1", 0o644).file("x", b"2", 0o644);
        t.dir("d", 0o755)
            .file("d/inner", b"", 0o644)
            .file("d", b"now a file", 0o644);
        t.file("e", b"", 0o644).dir("e", 0o700);
        t.dir("m", 0o755)
            .file("m/a", b"a", 0o644)
            .dir("m", 0o750)
            .file("m/b", b"b", 0o644);
        t.symlink("s", "/x").file("s", b"file", 0o644);
        t.file("w/.wh.gone", b"", 0o644).dir("w/gone", 0o755);
        t.file("old-style-dir/", b"", 0o755);
    });
    let image = fx.import(&[layer(&tar, Compression::Plain)]).unwrap();
    let root = &image.layers[0];
    assert_eq!(fs::read(root.join("x")).unwrap(), b"2");
    assert_eq!(fs::read(root.join("d")).unwrap(), b"now a file");
    assert!(root.join("e").is_dir());
    assert!(root.join("m/a").is_file() && root.join("m/b").is_file());
    assert_eq!(
        fs::metadata(root.join("m")).unwrap().permissions().mode() & 0o777,
        0o750
    );
    assert_eq!(fs::read(root.join("s")).unwrap(), b"file");
    assert!(root.join("old-style-dir").is_dir());
    assert_eq!(
        fs::metadata(root).unwrap().permissions().mode() & 0o777,
        0o751
    );
    let root_entries: Vec<_> = meta_entries(root)
        .into_iter()
        .filter(|e| e.path == Path::new("."))
        .collect();
    assert_eq!(root_entries.len(), 2, "{root_entries:?}");
    // A directory over this layer's whiteout still hides the lower one.
    assert_eq!(
        xattr(&root.join("w/gone"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
}

#[test]
fn files_made_in_parallel_keep_tar_order() {
    let fx = Fixture::new();
    let big = vec![7u8; 300 << 10];
    let mut order = Vec::new();
    let tar = tar(|t| {
        for d in 0..10 {
            for f in 0..30 {
                let path = format!("d{d}/f{f}");
                t.file(&path, path.as_bytes(), 0o640);
                order.push(path);
            }
        }
        // Over names still being written: a small and a big file, a
        // hard link, a file over a directory and a directory over a file.
        t.file("d3/f5", b"again", 0o600).file("d9/f28", &big, 0o644);
        t.hardlink("d0/link", "d9/f29")
            .file("d8", b"was a dir", 0o644);
        t.dir("d9/f27", 0o755).file("d9/f27/inner", b"in", 0o644);
        order.extend(
            ["d3/f5", "d9/f28", "d0/link", "d8", "d9/f27", "d9/f27/inner"].map(String::from),
        );
    });
    let image = fx.import(&[layer(&tar, Compression::Plain)]).unwrap();
    let root = &image.layers[0];
    assert_eq!(fs::read(root.join("d0/f0")).unwrap(), b"d0/f0");
    assert_eq!(fs::read(root.join("d3/f5")).unwrap(), b"again");
    assert_eq!(fs::read(root.join("d9/f28")).unwrap(), big);
    let linked = fs::metadata(root.join("d9/f29")).unwrap();
    assert_eq!(
        fs::metadata(root.join("d0/link")).unwrap().ino(),
        linked.ino()
    );
    assert_eq!(linked.permissions().mode() & 0o777, 0o640);
    assert_eq!(fs::read(root.join("d8")).unwrap(), b"was a dir");
    assert_eq!(fs::read(root.join("d9/f27/inner")).unwrap(), b"in");
    let recorded: Vec<String> = meta_entries(root)
        .into_iter()
        .filter(|e| e.kind != EntryKind::ImplicitDir)
        .map(|e| e.path.display().to_string())
        .collect();
    assert_eq!(recorded, order);
}

#[test]
fn a_file_the_writers_cannot_make_fails_the_layer() {
    let long = format!("d/{}", "n".repeat(300));
    assert_rejected(
        |t, _| {
            t.file("d/a", b"a", 0o644).file(&long, b"x", 0o644);
            for i in 0..100 {
                t.file(&format!("e/f{i}"), b"later", 0o644);
            }
        },
        // Capped as every layer path in a message is.
        &format!("entry `d/{}…{}`", "n".repeat(32), "n".repeat(32)),
    );
}

/// Imports a bad layer and checks the store kept nothing and nothing
/// outside changed.
fn assert_rejected(build: impl FnOnce(&mut TarBuilder, &Path), needle: &str) {
    let fx = Fixture::new();
    let outside = fx.path("outside");
    fs::create_dir(&outside).unwrap();
    let mut builder = TarBuilder::new();
    build(&mut builder, &outside);
    let err = fx
        .import(&[layer(&builder.finish(), Compression::Gzip)])
        .unwrap_err();
    let text = error_text(&err);
    assert!(text.contains(needle), "expected `{needle}` in: {text}");
    assert!(text.contains("rejected"), "{text}");
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "something was written outside"
    );
    assert!(
        !fx.path("escape").exists() && !fx.dir.path().parent().unwrap().join("escape").exists()
    );
    for sub in ["layers", "images", "tmp", "blobs/sha256"] {
        assert_eq!(fx.listing(sub), Vec::<String>::new(), "{sub} is not empty");
    }
}

#[test]
fn rejects_dot_dot_paths() {
    assert_rejected(
        |t, _| {
            t.file("../escape", b"x", 0o644);
        },
        "`..`",
    );
    assert_rejected(
        |t, _| {
            t.file("/abs/../../escape", b"x", 0o644);
        },
        "`..`",
    );
    assert_rejected(
        |t, _| {
            t.dir("a", 0o755).file("a/../../escape", b"x", 0o644);
        },
        "`..`",
    );
}

#[test]
fn rejects_writes_through_symlinks() {
    assert_rejected(
        |t, outside| {
            t.symlink("evil", outside.to_str().unwrap())
                .file("evil/file", b"x", 0o644);
        },
        "symlink",
    );
    assert_rejected(
        |t, _| {
            t.symlink("up", "..").file("up/escape", b"x", 0o644);
        },
        "symlink",
    );
    assert_rejected(
        |t, outside| {
            t.symlink("evil", outside.to_str().unwrap())
                .dir("evil/sub", 0o755);
        },
        "symlink",
    );
    assert_rejected(
        |t, outside| {
            t.symlink("evil", outside.to_str().unwrap())
                .file("evil/.wh.x", b"", 0o644);
        },
        "symlink",
    );
}

#[test]
fn rejects_hard_links_out_of_the_layer() {
    assert_rejected(
        |t, _| {
            t.hardlink("passwd", "/etc/passwd");
        },
        "not in this layer",
    );
    assert_rejected(
        |t, _| {
            t.hardlink("h", "../outside");
        },
        "`..`",
    );
    assert_rejected(
        |t, _| {
            t.symlink("etc", "/etc").hardlink("h", "etc/passwd");
        },
        "symlink",
    );
    assert_rejected(
        |t, _| {
            t.dir("d", 0o755).hardlink("h", "d");
        },
        "not in this layer",
    );
}

#[test]
fn rejects_digest_and_diff_id_mismatches_keeping_nothing() {
    // The config claims a different diff ID.
    let fx = Fixture::new();
    let mut bad = layer(
        &tar(|t| {
            t.file("f", b"x", 0o644);
        }),
        Compression::Gzip,
    );
    bad.diff_id = layer(b"other", Compression::Plain).diff_id;
    let err = fx.import(&[bad]).unwrap_err();
    assert!(
        error_text(&err).contains("uncompressed content hashes to"),
        "{err:#}"
    );
    for sub in ["layers", "images", "tmp", "blobs/sha256"] {
        assert!(fx.listing(sub).is_empty(), "{sub}");
    }

    // The blob on disk does not match the manifest's digest.
    let fx = Fixture::new();
    let good = layer(
        &tar(|t| {
            t.file("f", b"x", 0o644);
        }),
        Compression::Plain,
    );
    simple_layout(&fx.path("layout"), None, std::slice::from_ref(&good));
    let blob = fx
        .path("layout/blobs/sha256")
        .join(Digest::of(&good.blob).hex());
    let mut bytes = fs::read(&blob).unwrap();
    bytes[512] = b'y';
    fs::write(&blob, bytes).unwrap();
    let err = fx.store.resolve(&fx.source("layout")).unwrap_err();
    assert!(error_text(&err).contains("blob is corrupt"), "{err:#}");
    assert!(fx.listing("layers").is_empty() && fx.listing("images").is_empty());
}

#[test]
fn long_paths_are_capped_in_messages() {
    use super::unpack::shown_path;
    let deep = format!("{}f", "a/".repeat(10_000));
    assert_eq!(shown_path(Path::new(&deep)), "a/a/a/…/a/a/f");
    assert_eq!(shown_path(Path::new("/a/b/c/d/e/f/g")), "/a/b/…/e/f/g");
    assert_eq!(shown_path(Path::new("a/b/c/d/e/f/g")), "a/b/c/d/e/f/g");
    let long = format!("{}{}", "x".repeat(1000), "yz");
    let shown = shown_path(Path::new(&long));
    assert_eq!(shown, format!("{}…{}yz", "x".repeat(32), "x".repeat(30)));
    assert_eq!(shown_path(Path::new("bad\x1b[31m/name")), "bad?[31m/name");
}

#[test]
fn a_layer_10000_levels_deep_gives_a_short_message() {
    let fx = Fixture::new();
    let deep = format!("{}file", "level/".repeat(10_000));
    let tar = tar(|t| {
        t.file(&deep, b"x", 0o644);
    });
    let err = error_text(&fx.import(&[layer(&tar, Compression::Gzip)]).unwrap_err());
    assert!(err.len() < 2000, "{} bytes: {err}", err.len());
    assert!(
        err.contains("entry `level/level/level/…/level/level/file`"),
        "{err}"
    );
    for sub in ["layers", "images", "tmp", "blobs/sha256"] {
        assert!(fx.listing(sub).is_empty(), "{sub}");
    }
}

/// A one-layer layout whose layer blob `spoil` then replaces; the import
/// must fail saying `needle`, quickly, and leave the store empty.
fn assert_blob_refused(spoil: impl FnOnce(&Path), needle: &str) {
    let fx = Fixture::new();
    let good = layer(
        &tar(|t| {
            t.file("f", b"x", 0o644);
        }),
        Compression::Gzip,
    );
    simple_layout(&fx.path("layout"), None, std::slice::from_ref(&good));
    let blob = fx
        .path("layout/blobs/sha256")
        .join(Digest::of(&good.blob).hex());
    fs::remove_file(&blob).unwrap();
    spoil(&blob);
    let started = std::time::Instant::now();
    let err = error_text(&fx.store.resolve(&fx.source("layout")).unwrap_err());
    assert!(
        started.elapsed().as_secs() < 10,
        "took {:?}",
        started.elapsed()
    );
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
    assert!(err.contains(&Digest::of(&good.blob).to_string()), "{err}");
    for sub in ["layers", "images", "tmp", "blobs/sha256"] {
        assert!(fx.listing(sub).is_empty(), "{sub}");
    }
}

#[test]
fn layout_blobs_must_be_regular_files_of_their_descriptors_size() {
    let symlink =
        |target: &'static str| move |blob: &Path| std::os::unix::fs::symlink(target, blob).unwrap();
    assert_blob_refused(
        symlink("/dev/zero"),
        "it is a character device, not a regular file",
    );
    assert_blob_refused(symlink("/"), "it is a directory, not a regular file");
    assert_blob_refused(
        |blob| {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                blob,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
                0,
            )
            .unwrap()
        },
        "it is a fifo, not a regular file",
    );
    assert_blob_refused(
        |blob| fs::write(blob, vec![0u8; 1 << 20]).unwrap(),
        "bytes, longer than the",
    );
    assert_blob_refused(
        |blob| fs::write(blob, b"short").unwrap(),
        "is 5 bytes, shorter than the",
    );
}

#[test]
fn archive_members_must_have_their_descriptors_size() {
    let fx = Fixture::new();
    let good = layer(
        &tar(|t| {
            t.file("f", b"x", 0o644);
        }),
        Compression::Gzip,
    );
    let dir = simple_layout(&fx.path("layout"), None, std::slice::from_ref(&good));
    let blob = fx
        .path("layout/blobs/sha256")
        .join(Digest::of(&good.blob).hex());
    let mut longer = good.blob.clone();
    longer.extend_from_slice(&[0; 4096]);
    fs::write(&blob, longer).unwrap();
    dir.archive(&fx.path("image.tar"));
    let source = Source::OciArchive {
        path: fx.path("image.tar"),
        tag: None,
    };
    let err = error_text(&fx.store.resolve(&source).unwrap_err());
    let expected = format!(
        "blob {} of OCI archive `{}` is {} bytes, longer than the {} bytes its descriptor gives",
        Digest::of(&good.blob),
        fx.path("image.tar").display(),
        good.blob.len() + 4096,
        good.blob.len()
    );
    assert!(err.contains(&expected), "{err}");
    for sub in ["layers", "images", "tmp"] {
        assert!(fx.listing(sub).is_empty(), "{sub}");
    }
}

#[test]
fn resolves_again_without_unpacking() {
    let fx = Fixture::new();
    let layers = [
        layer(
            &tar(|t| {
                t.file("a", b"a", 0o644);
            }),
            Compression::Gzip,
        ),
        layer(
            &tar(|t| {
                t.file("b", b"b", 0o644);
            }),
            Compression::Zstd,
        ),
    ];
    let first = fx.import(&layers).unwrap();
    assert_eq!(fx.unpacked(), 2);
    let inode = fs::metadata(&first.layers[0]).unwrap().ino();

    let start = std::time::Instant::now();
    let second = fx.store.resolve(&fx.source("layout")).unwrap();
    let elapsed = start.elapsed();
    eprintln!("fast path: {elapsed:?}");
    assert_eq!(
        (second.id.as_str(), &second.layers),
        (first.id.as_str(), &first.layers)
    );
    assert_eq!(fs::metadata(&second.layers[0]).unwrap().ino(), inode);
    assert_eq!(fx.unpacked(), 2);
    assert!(
        elapsed < std::time::Duration::from_millis(20),
        "fast path took {elapsed:?}"
    );
    assert!(
        fx.store
            .root()
            .join("images")
            .join(format!("{}.used", &first.id[7..]))
            .is_file()
    );

    // index.json rewritten: the slow path finds the same manifest and
    // reuses everything.
    let index = fx.path("layout/index.json");
    fs::write(&index, fs::read(&index).unwrap()).unwrap();
    assert_eq!(fx.store.resolve(&fx.source("layout")).unwrap().id, first.id);
    assert_eq!(fx.unpacked(), 2);

    // A layer directory removed by hand is unpacked again.
    fs::remove_dir_all(first.layers[1].parent().unwrap()).unwrap();
    assert_eq!(
        fx.store.resolve(&fx.source("layout")).unwrap().layers,
        first.layers
    );
    assert_eq!(fx.unpacked(), 3);
}

#[test]
fn shares_layers_between_images_and_reads_archives_once() {
    let fx = Fixture::new();
    let shared = layer(
        &tar(|t| {
            t.file("shared", b"s", 0o644);
        }),
        Compression::Gzip,
    );
    let own = layer(
        &tar(|t| {
            t.file("own", b"o", 0o644);
        }),
        Compression::Gzip,
    );
    let first = fx.import(std::slice::from_ref(&shared)).unwrap();

    let dir = simple_layout(&fx.path("other"), Some("v1"), &[shared, own]);
    let archive = fx.path("other.tar");
    dir.archive(&archive);
    let source = Source::OciArchive {
        path: archive.clone(),
        tag: Some("v1".into()),
    };
    let second = fx.store.resolve(&source).unwrap();
    assert_eq!(second.layers[0], first.layers[0]);
    assert_eq!(fs::read(second.layers[1].join("own")).unwrap(), b"o");
    assert_eq!(fx.unpacked(), 2);
    assert_eq!(fx.store.resolve(&source).unwrap().id, second.id);
    assert_eq!(
        testutil::count("scan", &archive),
        1,
        "an unchanged archive must not be read again"
    );
}

#[test]
fn picks_images_by_tag_and_platform() {
    let fx = Fixture::new();
    let mut dir = OciDir::create(&fx.path("layout"));
    let l1 = layer(
        &tar(|t| {
            t.file("one", b"", 0o644);
        }),
        Compression::Gzip,
    );
    let l2 = layer(
        &tar(|t| {
            t.file("two", b"", 0o644);
        }),
        Compression::Gzip,
    );
    let one = dir.image(
        std::slice::from_ref(&l1),
        json!({ "WorkingDir": "/w", "User": "1000" }),
    );
    let two = dir.image(std::slice::from_ref(&l2), json!(null));
    dir.add(one.clone(), Some("one"));
    let host = format!("linux/{}", super::spec::host_architecture());
    let multi = dir.index(&[(one.clone(), "linux/s390x-not"), (two.clone(), &host)]);
    dir.add(multi, Some("multi"));
    let foreign = dir.index(&[(one, "linux/mips"), (two, "windows/amd64")]);
    dir.add(foreign, Some("foreign"));

    let resolve = |tag: Option<&str>| {
        let source = Source::OciLayout {
            path: fx.path("layout"),
            tag: tag.map(String::from),
        };
        fx.store.resolve(&source)
    };
    let err = error_text(&resolve(None).unwrap_err());
    assert!(
        err.contains("holds 3 images") && err.contains("one, multi, foreign"),
        "{err}"
    );
    let err = error_text(&resolve(Some("nope")).unwrap_err());
    assert!(
        err.contains("no image tagged `nope`") && err.contains("one, multi"),
        "{err}"
    );
    let err = error_text(&resolve(Some("foreign")).unwrap_err());
    assert!(err.contains("linux/mips, windows/amd64"), "{err}");

    let image = resolve(Some("one")).unwrap();
    assert_eq!(image.config.working_dir.as_deref(), Some("/w"));
    assert_eq!(image.config.user.as_deref(), Some("1000"));
    assert!(image.layers[0].join("one").exists());
    let image = resolve(Some("multi")).unwrap();
    assert!(image.layers[0].join("two").exists());
    assert_eq!(image.config, super::RuntimeConfig::default());
}

#[test]
fn accepts_docker_media_types() {
    let fx = Fixture::new();
    let mut dir = OciDir::create(&fx.path("layout"));
    let l = layer(
        &tar(|t| {
            t.file("docker", b"d", 0o644);
        }),
        Compression::Gzip,
    );
    let config = json!({ "config": { "Env": null }, "rootfs": { "type": "layers", "diff_ids": [l.diff_id.to_string()] } });
    let config = dir.blob(
        "application/vnd.docker.container.image.v1+json",
        config.to_string().as_bytes(),
    );
    let blob = dir.blob("application/vnd.docker.image.rootfs.diff.tar.gzip", &l.blob);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": config,
        "layers": [blob],
    });
    let manifest = dir.blob(
        "application/vnd.docker.distribution.manifest.v2+json",
        manifest.to_string().as_bytes(),
    );
    dir.add(manifest, None);
    let image = fx.store.resolve(&fx.source("layout")).unwrap();
    assert!(image.layers[0].join("docker").is_file());
}

#[test]
fn cleans_tmp_leftovers_of_killed_imports() {
    let fx = Fixture::new();
    let leftover = fx.store.root().join("tmp/layer-12345-0-0/fs/ro");
    fs::create_dir_all(leftover.join("x")).unwrap();
    fs::set_permissions(&leftover, fs::Permissions::from_mode(0o555)).unwrap();
    fx.import(&[layer(
        &tar(|t| {
            t.file("f", b"", 0o644);
        }),
        Compression::Gzip,
    )])
    .unwrap();
    assert!(fx.listing("tmp").is_empty(), "{:?}", fx.listing("tmp"));
}

#[test]
fn concurrent_resolves_unpack_each_layer_once() {
    let fx = Fixture::new();
    let layers: Vec<Layer> = (0..6)
        .map(|i| {
            let data = vec![i as u8; 200_000];
            layer(
                &tar(|t| {
                    t.file(&format!("f{i}"), &data, 0o644);
                }),
                Compression::Gzip,
            )
        })
        .collect();
    simple_layout(&fx.path("layout"), None, &layers);
    let ids: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    let store =
                        Store::open(fx.store.root().to_path_buf(), Default::default()).unwrap();
                    store.resolve(&fx.source("layout")).unwrap().id
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(fx.unpacked(), 6);
    assert!(fx.listing("tmp").is_empty());
}

const CHILD_LAYOUT: &str = "DEN_TEST_CHILD_LAYOUT";

/// Run by `concurrent_processes_share_the_store` in child processes.
#[test]
#[ignore = "helper run in a child process"]
fn child_resolve() {
    let Some(layout) = std::env::var_os(CHILD_LAYOUT) else {
        return;
    };
    let data = std::env::var_os("DEN_DATA_DIR").expect("DEN_DATA_DIR");
    let store = Store::open(data.into(), Default::default()).unwrap();
    let image = store
        .resolve(&Source::OciLayout {
            path: layout.into(),
            tag: None,
        })
        .unwrap();
    println!(
        "RESULT {} {}",
        image.id,
        testutil::count("unpack", store.root())
    );
}

#[test]
fn concurrent_processes_share_the_store() {
    let fx = Fixture::new();
    let layers: Vec<Layer> = (0..4)
        .map(|i| {
            let data: Vec<u8> = (0..400_000u32).map(|n| (n * (i + 1) % 253) as u8).collect();
            layer(
                &tar(|t| {
                    t.file(&format!("f{i}"), &data, 0o644);
                }),
                Compression::Gzip,
            )
        })
        .collect();
    simple_layout(&fx.path("layout"), None, &layers);
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "image::tests::child_resolve",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("DEN_DATA_DIR", fx.store.root())
                .env(CHILD_LAYOUT, fx.path("layout"))
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids = Vec::new();
    let mut unpacked = 0;
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}");
        // libtest prints the result on the line of the test's name.
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("RESULT ").map(|(_, rest)| rest))
            .expect("child printed no result");
        let (id, count) = line.split_once(' ').unwrap();
        ids.push(id.to_string());
        unpacked += count.parse::<usize>().unwrap();
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    assert_eq!(
        unpacked, 4,
        "each layer must be unpacked by exactly one process"
    );
    assert_eq!(fx.listing("layers").len(), 4);
    assert!(fx.listing("tmp").is_empty());
}

#[test]
fn scratch_dir_is_an_empty_directory() {
    let fx = Fixture::new();
    let scratch = fx.store.scratch_dir().unwrap();
    assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0);
    assert_eq!(fx.store.scratch_dir().unwrap(), scratch);
}

#[test]
fn explains_missing_sources() {
    let fx = Fixture::new();
    let err = fx.store.resolve(&fx.source("nowhere")).unwrap_err();
    assert!(error_text(&err).contains("cannot find"), "{err:#}");
    fs::create_dir(fx.path("empty")).unwrap();
    let err = fx.store.resolve(&fx.source("empty")).unwrap_err();
    assert!(error_text(&err).contains("no index.json"), "{err:#}");
}

/// Mounts the layers with overlayfs in a user namespace, as the runtime
/// does, and checks whiteouts and opaque directories work. Skipped where
/// user namespaces are unavailable.
#[test]
fn overlay_honours_whiteouts_and_opaque_dirs() {
    let fx = Fixture::new();
    let lower = tar(|t| {
        t.file("gone", b"", 0o644).file("kept", b"", 0o644);
        t.dir("opq", 0o755).file("opq/lower", b"", 0o644);
    });
    let upper = tar(|t| {
        t.file(".wh.gone", b"", 0o644)
            .file("opq/.wh..wh..opq", b"", 0o644)
            .file("opq/upper", b"", 0o644);
    });
    let image = fx
        .import(&[
            layer(&lower, Compression::Gzip),
            layer(&upper, Compression::Zstd),
        ])
        .unwrap();
    let mnt = fx.path("mnt");
    fs::create_dir(&mnt).unwrap();
    let options = format!(
        "lowerdir={}:{},userxattr",
        image.layers[1].display(),
        image.layers[0].display()
    );
    let script = format!(
        "mount -t overlay overlay -o {options} {mnt} && ls -A {mnt} && echo -- && ls -A {mnt}/opq",
        mnt = mnt.display()
    );
    let output = std::process::Command::new("unshare")
        .args(["-Urm", "sh", "-c", &script])
        .output();
    let Some(output) = output.ok().filter(|o| o.status.success()) else {
        eprintln!("skipped: cannot mount overlayfs in a user namespace here");
        return;
    };
    let listing = String::from_utf8(output.stdout).unwrap();
    eprintln!("overlay view:\n{listing}");
    assert_eq!(listing, "kept\nopq\n--\nupper\n");
}

/// Writes a one-image layout `name` of `tars` (bottom first, gzip) and
/// resolves it.
fn import_tars(fx: &Fixture, name: &str, tars: &[Vec<u8>]) -> anyhow::Result<Image> {
    let layers: Vec<Layer> = tars
        .iter()
        .map(|tar| layer(tar, Compression::Gzip))
        .collect();
    simple_layout(&fx.path(name), None, &layers);
    fx.store.resolve(&fx.source(name))
}

fn blob_digest(tar: &[u8]) -> String {
    Digest::of(&layer(tar, Compression::Gzip).blob).to_string()
}

#[test]
fn refuses_implicit_parents_over_a_symlink_planted_below() {
    let fx = Fixture::new();
    let outside = fx.path("outside");
    fs::create_dir(&outside).unwrap();
    let base = tar(|t| {
        t.dir("etc", 0o755).file("etc/passwd", b"root", 0o644);
    });
    let planted = tar(|t| {
        t.symlink("evil", outside.to_str().unwrap());
    });
    let writer = tar(|t| {
        t.file("evil/pwned", b"x", 0o644);
    });
    let tars = [base, planted.clone(), writer.clone()];
    let err = error_text(&import_tars(&fx, "bad", &tars).unwrap_err());
    eprintln!("{err}");
    for needle in [
        &format!("layer 3 ({})", blob_digest(&writer)),
        "`evil/pwned`",
        &format!("symlink `evil` -> `{}`", outside.display()),
        &format!("planted by layer 2 ({})", blob_digest(&planted)),
        "it has no directory entry for `evil` of its own",
        "refusing the image",
    ] {
        assert!(err.contains(needle), "expected `{needle}` in: {err}");
    }
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    // The layers are valid and stay; the image is not recorded.
    assert_eq!(fx.listing("layers").len(), 3);
    for sub in ["images", "tmp", "blobs/sha256", "sources"] {
        assert_eq!(fx.listing(sub), Vec::<String>::new(), "{sub} is not empty");
    }
    // Again, with every layer already in the store: refused again.
    let unpacked = fx.unpacked();
    let err = error_text(&import_tars(&fx, "bad", &tars).unwrap_err());
    assert!(err.contains("symlink `evil`"), "{err}");
    assert_eq!(fx.unpacked(), unpacked);
    assert!(fx.listing("images").is_empty());

    // Other shapes: (layers, what the error must say).
    let cases: Vec<(Vec<Vec<u8>>, &[&str])> = vec![
        // A symlink at an ancestor of the implicit directory.
        (
            vec![
                tar(|t| {
                    t.dir("d", 0o755).symlink("d/link", "/");
                }),
                tar(|t| {
                    t.file("d/link/deep/f", b"x", 0o644);
                }),
            ],
            &["`d/link/deep/f`", "symlink `d/link` -> `/`", "layer 1 ("],
        ),
        // Planted two layers down, an unrelated layer in between.
        (
            vec![
                tar(|t| {
                    t.symlink("evil", "/etc");
                }),
                tar(|t| {
                    t.file("other", b"", 0o644);
                }),
                tar(|t| {
                    t.file("evil/x", b"x", 0o644);
                }),
            ],
            &["layer 3 (", "`evil/x`", "planted by layer 1 ("],
        ),
        // A symlink over a lower directory decides, not the directory.
        (
            vec![
                tar(|t| {
                    t.dir("evil", 0o755).file("evil/a", b"", 0o644);
                }),
                tar(|t| {
                    t.symlink("evil", "/etc");
                }),
                tar(|t| {
                    t.file("evil/x", b"x", 0o644);
                }),
            ],
            &["symlink `evil`", "planted by layer 2 ("],
        ),
        // Whiteouts and opaque markers need their parent too.
        (
            vec![
                tar(|t| {
                    t.symlink("evil", "/etc");
                }),
                tar(|t| {
                    t.file("evil/.wh.passwd", b"", 0o644);
                }),
            ],
            &["`evil/.wh.passwd`", "symlink `evil`"],
        ),
        (
            vec![
                tar(|t| {
                    t.symlink("evil", "/etc");
                }),
                tar(|t| {
                    t.file("evil/.wh..wh..opq", b"", 0o644);
                }),
            ],
            &["`evil/.wh..wh..opq`", "symlink `evil`"],
        ),
        // Not a symlink, but not a directory either.
        (
            vec![
                tar(|t| {
                    t.file("f", b"file", 0o644);
                }),
                tar(|t| {
                    t.file("f/x", b"x", 0o644);
                }),
            ],
            &["puts `f/x` under `f`", "made a regular file"],
        ),
    ];
    for (n, (tars, needles)) in cases.iter().enumerate() {
        let name = format!("case{n}");
        let err = error_text(&import_tars(&fx, &name, tars).unwrap_err());
        for needle in *needles {
            assert!(
                err.contains(needle),
                "case {n}: expected `{needle}` in: {err}"
            );
        }
        assert!(fx.listing("images").is_empty(), "case {n}");
    }
    assert!(fx.listing("tmp").is_empty());
}

#[test]
fn accepts_implicit_parents_over_lower_directories_and_new_paths() {
    let fx = Fixture::new();
    let accepted: Vec<Vec<Vec<u8>>> = vec![
        // Over a lower directory, and where nothing below has anything.
        vec![
            tar(|t| {
                t.dir("etc", 0o755).file("etc/a", b"a", 0o644);
                t.symlink("bin", "usr/bin");
            }),
            tar(|t| {
                t.file("etc/b", b"b", 0o644).file("new/sub/f", b"f", 0o644);
            }),
        ],
        // A whiteout of the symlink decides.
        vec![
            tar(|t| {
                t.symlink("evil", "/etc");
            }),
            tar(|t| {
                t.file(".wh.evil", b"", 0o644);
            }),
            tar(|t| {
                t.file("evil/x", b"x", 0o644);
            }),
        ],
        // An opaque directory hides the symlink in it.
        vec![
            tar(|t| {
                t.dir("d", 0o755).symlink("d/evil", "/etc");
            }),
            tar(|t| {
                t.dir("d", 0o755).file("d/.wh..wh..opq", b"", 0o644);
            }),
            tar(|t| {
                t.file("d/evil/x", b"x", 0o644);
            }),
        ],
        // A directory of a middle layer over the symlink decides.
        vec![
            tar(|t| {
                t.symlink("evil", "/etc");
            }),
            tar(|t| {
                t.dir("evil", 0o755);
            }),
            tar(|t| {
                t.file("evil/x", b"x", 0o644);
            }),
        ],
        // The layer's own directory entry replaces the symlink.
        vec![
            tar(|t| {
                t.symlink("evil", "/etc");
            }),
            tar(|t| {
                t.dir("evil", 0o755).file("evil/sub/x", b"x", 0o644);
            }),
        ],
    ];
    for (n, tars) in accepted.iter().enumerate() {
        let image = import_tars(&fx, &format!("case{n}"), tars)
            .unwrap_or_else(|err| panic!("case {n}: {err:#}"));
        assert_eq!(image.layers.len(), tars.len(), "case {n}");
    }
    assert_eq!(fx.listing("images").len(), 2 * accepted.len());
}

/// Layers without implicit directories cost one read of their meta
/// footer; a meta file without a footer (an older den) is scanned.
#[test]
fn implicit_directories_are_found_by_the_meta_footer() {
    let fx = Fixture::new();
    let scans = || testutil::count("scan meta", fx.store.root());
    // The bottom layer has implicit directories, but nothing is below it.
    let bottom = tar(|t| {
        t.file("deep/er/file", b"", 0o644);
        t.dir("evil", 0o755);
    });
    let listed = tar(|t| {
        t.dir("etc", 0o755).file("etc/a", b"a", 0o644);
    });
    let image = import_tars(&fx, "plain", &[bottom.clone(), listed]).unwrap();
    assert_eq!(scans(), 0);
    let meta_path = image.layers[0].parent().unwrap().join("meta");
    let text = fs::read_to_string(&meta_path).unwrap();
    assert!(text.ends_with("\n# implicit directories: 2\n"), "{text}");

    // A layer with one is checked in every image it is part of.
    let writer = tar(|t| {
        t.file("evil/pwned", b"x", 0o644);
    });
    let image = import_tars(&fx, "over-dir", &[bottom, writer.clone()]).unwrap();
    assert_eq!(scans(), 1);
    let writer_meta = image.layers[1].parent().unwrap().join("meta");
    let text = fs::read_to_string(&writer_meta).unwrap();
    assert!(text.ends_with("\n# implicit directories: 1\n"), "{text}");

    // Without its footer, as an older den wrote it, it is scanned and
    // still checked.
    let old = text.strip_suffix("# implicit directories: 1\n").unwrap();
    fs::write(&writer_meta, old).unwrap();
    let planted = tar(|t| {
        t.symlink("evil", "/etc");
    });
    let err = import_tars(&fx, "over-link", &[planted, writer]).unwrap_err();
    assert!(error_text(&err).contains("symlink `evil`"), "{err:#}");
    assert_eq!(scans(), 2);
}

/// Times unpacking `$UNPACK_BENCH_TAR` into the new directory
/// `$UNPACK_BENCH_OUT`: `cargo test --release --lib unpack_bench -- --ignored --nocapture`.
#[test]
#[ignore]
fn unpack_bench() {
    let (Some(tar), Some(out)) = (
        std::env::var_os("UNPACK_BENCH_TAR"),
        std::env::var_os("UNPACK_BENCH_OUT"),
    ) else {
        return;
    };
    let out = PathBuf::from(out);
    fs::create_dir(&out).unwrap();
    let file = std::io::BufReader::with_capacity(256 << 10, fs::File::open(tar).unwrap());
    let mut meta = Vec::new();
    let started = std::time::Instant::now();
    super::unpack::unpack(file, &out, &mut meta).unwrap();
    println!("unpack {:.3} s", started.elapsed().as_secs_f64());
}
