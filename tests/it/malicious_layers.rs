//! Layouts built to hurt den, through the real `den` binary as the test
//! user: layer blobs that never end (a symlink to /dev/zero) or never
//! start (a fifo), blobs longer than their descriptor, a gzip bomb over
//! `max-unpacked-size`, a 10,000-level-deep path and a YAML alias bomb.
//! Each is refused quickly with exit 125 and a clear message, and the
//! store stays consistent: no image record, nothing in `tmp/`, the bad
//! layer not kept, and a good image still runs from the same store.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::oci::{self, Compression, Layer, TarBuilder, busybox};
use crate::harness::{Project, Runner, bounded, refused, run_bounded, success, text};

/// Far more than any refusal here takes; a blob den reads forever or
/// waits on forever fails the test at this point.
const QUICKLY: Duration = Duration::from_secs(30);

/// A project with an image `bad` (busybox and one more layer, whose blob
/// the test then spoils) and an image `good` (busybox alone).
struct Case {
    project: Project,
    /// The extra layer's blob in the `bad` layout.
    blob: PathBuf,
    digest: String,
    diff_id: String,
}

impl Case {
    fn new(tar: Vec<u8>, compression: Compression) -> Case {
        let yaml = "containers:\n  bad:\n    from: oci:bad\n  good:\n    from: oci:good\n";
        let project = Project::new(yaml);
        let diff_id = oci::sha256_hex(&tar);
        let write = |name: &str, layers: &[Layer]| {
            let dir = project.root.join(name);
            oci::write_layout(&dir, "latest", layers, &["PATH=/bin"], &["sh"]);
        };
        write("bad", &[busybox(), Layer { tar, compression }]);
        write("good", &[busybox()]);
        let layout = project.root.join("bad");
        let digest = oci::manifest(&layout)["layers"][1]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let blob = oci::blob_path(&layout, &digest);
        project.hand_over();
        Case {
            project,
            blob,
            digest,
            diff_id,
        }
    }

    /// A case whose extra layer is a small plain file.
    fn plain() -> Case {
        let tar = TarBuilder::new().file("payload", 0o644, b"x").finish();
        Case::new(tar, Compression::Gzip)
    }

    /// Replaces the extra layer's blob by what `make` puts at its path.
    fn spoil(&self, make: impl FnOnce(&Path)) {
        fs::remove_file(&self.blob).unwrap();
        make(&self.blob);
        self.project.hand_over();
    }

    fn den(&self, args: &[&str]) -> Command {
        self.project.den(Runner::User, args)
    }

    /// den refuses `bad` quickly, with exit 125 and `needles` in its
    /// message; the store is left consistent and `good` still runs.
    /// Returns den's stderr.
    #[track_caller]
    fn assert_refused(&self, mut den: Command, needles: &[&str]) -> String {
        den.args(["exec", "bad", "--", "sh", "-c", "echo ran"]);
        let output = run_bounded(den, QUICKLY);
        let stderr = refused(&output, needles);
        assert!(!text(&output.stdout).contains("ran"), "the image ran");
        assert_eq!(self.project.image_records(), Vec::<String>::new());
        assert_eq!(self.project.store_names("tmp"), Vec::<String>::new());
        assert!(
            !self.project.store_names("layers").contains(&self.diff_id),
            "the bad layer was kept"
        );

        let good = self.den(&["exec", "good", "--", "sh", "-c", "echo still works"]);
        assert_eq!(success(&bounded(good)), "still works\n");
        assert_eq!(self.project.image_records().len(), 1);
        stderr
    }
}

#[test]
fn a_blob_symlinked_to_dev_zero_is_refused_at_once() {
    let case = Case::plain();
    case.spoil(|blob| std::os::unix::fs::symlink("/dev/zero", blob).unwrap());
    case.assert_refused(
        case.den(&[]),
        &[
            &format!("cannot read blob {}", case.digest),
            "it is a character device, not a regular file",
        ],
    );
}

#[test]
fn a_fifo_blob_is_refused_without_waiting_for_a_writer() {
    let case = Case::plain();
    case.spoil(|blob| {
        let status = Command::new("mkfifo").arg(blob).status().unwrap();
        assert!(status.success(), "mkfifo");
    });
    case.assert_refused(
        case.den(&[]),
        &[
            &format!("cannot read blob {}", case.digest),
            "it is a fifo, not a regular file",
        ],
    );
}

#[test]
fn a_blob_longer_than_its_descriptor_is_refused_naming_both_sizes() {
    let case = Case::plain();
    let original = fs::read(&case.blob).unwrap();
    let mut longer = original.clone();
    longer.extend_from_slice(&[0; 1000]);
    case.spoil(|blob| fs::write(blob, &longer).unwrap());
    case.assert_refused(
        case.den(&[]),
        &[&format!(
            "blob {} of OCI layout `{}` is {} bytes, longer than the {} bytes its descriptor gives",
            case.digest,
            fs::canonicalize(case.project.root.join("bad"))
                .unwrap()
                .display(),
            longer.len(),
            original.len()
        )],
    );
}

/// 64 MiB of zeros in a blob of a few hundred KiB, refused at
/// `max-unpacked-size: 8M` long before it is all unpacked.
#[test]
fn a_gzip_bomb_stops_at_max_unpacked_size() {
    let zeros = vec![0; 64 << 20];
    let bomb = TarBuilder::new().file("bomb", 0o644, &zeros).finish();
    let case = Case::new(bomb, Compression::Gzip);
    assert!(fs::metadata(&case.blob).unwrap().len() < 1 << 20);
    let settings = case.project.home.join("den-config.yaml");
    fs::write(&settings, "max-unpacked-size: 8M\n").unwrap();
    case.project.hand_over();
    let mut den = case.den(&[]);
    den.env("DEN_CONFIG", &settings);
    case.assert_refused(
        den,
        &[&format!(
            "the image unpacks to more than 8388608 bytes, the `max-unpacked-size` set in `{}`",
            settings.display()
        )],
    );
}

#[test]
fn a_bad_max_unpacked_size_is_an_error_at_its_place() {
    let case = Case::plain();
    let settings = case.project.home.join("den-config.yaml");
    fs::write(&settings, "# limits\nmax-unpacked-size: lots\n").unwrap();
    case.project.hand_over();
    let mut den = case.den(&["exec", "good", "--", "true"]);
    den.env("DEN_CONFIG", &settings);
    refused(
        &run_bounded(den, QUICKLY),
        &[&format!(
            "{}:2:20: `max-unpacked-size` is `lots`; expected a size above zero such as `10G`",
            settings.display()
        )],
    );
}

#[test]
fn a_layer_10000_levels_deep_gives_a_short_message() {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(1);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    let deep = format!("{}file", "level/".repeat(10_000));
    builder.append_data(&mut header, &deep, &b"x"[..]).unwrap();
    let case = Case::new(builder.into_inner().unwrap(), Compression::Gzip);
    let stderr = case.assert_refused(
        case.den(&[]),
        &[
            &format!("layer {} was rejected", case.digest),
            "entry `level/level/level/…/level/level/file`: \
             cannot open `level/level/level/…/level/level/level`",
        ],
    );
    assert!(stderr.len() < 2048, "{} bytes:\n{stderr}", stderr.len());
}

#[test]
fn a_yaml_alias_bomb_is_refused_naming_the_limit() {
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..9 {
        let aliases = vec![format!("*a{}", level - 1); 10].join(", ");
        bomb.push_str(&format!("a{level}: &a{level} [{aliases}]\n"));
    }
    let project = Project::new(&bomb);
    let output = run_bounded(project.den(Runner::User, &["list"]), QUICKLY);
    let stderr = refused(
        &output,
        &["the YAML is too large or too complex: more than 250000 nodes (an alias bomb?)"],
    );
    let den_yaml = project.root.join("den.yaml");
    assert!(
        stderr.contains(&format!("{}:", den_yaml.display())),
        "{stderr}"
    );
    assert!(stderr.len() < 1024, "{stderr}");
}

#[test]
fn an_oci_archive_that_is_a_fifo_is_refused_without_waiting() {
    let project = Project::new("containers:\n  bad:\n    from: oci-archive:image.tar\n");
    let status = Command::new("mkfifo")
        .arg(project.root.join("image.tar"))
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo");
    project.hand_over();
    let output = run_bounded(
        project.den(Runner::User, &["exec", "bad", "--", "true"]),
        QUICKLY,
    );
    refused(
        &output,
        &[
            "cannot read OCI archive",
            "it is a fifo, not a regular file",
        ],
    );
    let left: Vec<_> = fs::read_dir(project.data.join("tmp")).map_or(Vec::new(), |d| d.collect());
    assert!(left.is_empty(), "{left:?}");
}
