//! Fixture images written by the tests themselves: layers as tar
//! streams, assembled into an OCI image layout.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// One layer: its uncompressed tar and how to store it.
pub struct Layer {
    pub tar: Vec<u8>,
    pub compression: Compression,
}

/// A tar built entry by entry (paths are written as given, so tests can
/// also build malicious layers).
#[derive(Default)]
pub struct TarBuilder {
    bytes: Vec<u8>,
}

impl TarBuilder {
    pub fn new() -> TarBuilder {
        TarBuilder::default()
    }

    pub fn dir(self, path: &str, mode: u32) -> TarBuilder {
        self.entry(path, tar::EntryType::Directory, mode, b"", None)
    }

    pub fn file(self, path: &str, mode: u32, contents: &[u8]) -> TarBuilder {
        self.entry(path, tar::EntryType::Regular, mode, contents, None)
    }

    pub fn symlink(self, path: &str, target: &str) -> TarBuilder {
        self.entry(path, tar::EntryType::Symlink, 0o777, b"", Some(target))
    }

    pub fn hard_link(self, path: &str, target: &str) -> TarBuilder {
        self.entry(path, tar::EntryType::Link, 0o644, b"", Some(target))
    }

    /// An entry with raw path bytes, bypassing the tar crate's checks.
    pub fn entry(
        mut self,
        path: &str,
        kind: tar::EntryType,
        mode: u32,
        contents: &[u8],
        link: Option<&str>,
    ) -> TarBuilder {
        let mut header = tar::Header::new_ustar();
        {
            let raw = header.as_old_mut();
            assert!(path.len() < raw.name.len(), "fixture path too long: {path}");
            raw.name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(link) = link {
                raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
        }
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(contents.len() as u64);
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        header.set_cksum();
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(contents);
        let padding = (512 - contents.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, padding));
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.extend([0u8; 1024]);
        self.bytes
    }
}

/// A layer with a static busybox at /bin/busybox and the applets tests
/// use as symlinks; busybox comes from the host (Debian: busybox-static).
pub fn busybox_layer() -> Vec<u8> {
    let busybox =
        fs::read("/bin/busybox").expect("/bin/busybox missing: install busybox-static (.ci/setup)");
    let mut tar = TarBuilder::new()
        .dir("bin/", 0o755)
        .file("bin/busybox", 0o755, &busybox)
        .dir("etc/", 0o755)
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
        )
        .file("etc/group", 0o644, b"root:x:0:\nuser:x:1000:\n")
        .dir("root/", 0o700)
        .dir("tmp/", 0o1777);
    for applet in APPLETS {
        tar = tar.symlink(&format!("bin/{applet}"), "busybox");
    }
    tar.finish()
}

const APPLETS: &[&str] = &[
    "sh",
    "ls",
    "cat",
    "echo",
    "id",
    "env",
    "sleep",
    "ps",
    "true",
    "false",
    "pwd",
    "touch",
    "mkdir",
    "rm",
    "kill",
    "stat",
    "test",
    "wc",
    "head",
    "tr",
    "sha256sum",
    "dd",
    "hostname",
    "mount",
    "grep",
    "ln",
    "readlink",
    "stty",
    "tty",
    "trap",
    "wait",
    "seq",
    "printf",
    "nproc",
    "uname",
];

/// Writes an OCI image layout at `dir` with these layers (bottom first),
/// tagged `tag`, with `env` and `cmd` in its config.
pub fn write_layout(dir: &Path, tag: &str, layers: &[Layer], env: &[&str], cmd: &[&str]) {
    fs::create_dir_all(dir.join("blobs/sha256")).expect("create layout");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in layers {
        diff_ids.push(format!("sha256:{}", sha256_hex(&layer.tar)));
        let (blob, media_type) = compress(layer);
        descriptors.push(serde_json::json!({
            "mediaType": media_type,
            "digest": put_blob(dir, &blob),
            "size": blob.len(),
        }));
    }
    let config = serde_json::json!({
        "architecture": host_architecture(),
        "os": "linux",
        "config": { "Env": env, "Cmd": cmd },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": put_blob(dir, &config),
            "size": config.len(),
        },
        "layers": descriptors,
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": put_blob(dir, &manifest),
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap())
        .expect("write index.json");
}

/// The usual fixture: a busybox image with PATH set.
pub fn write_busybox(dir: &Path) {
    write_layout(dir, "latest", &[busybox()], &["PATH=/bin"], &["sh"]);
}

/// The busybox layer, gzip (its tar built once per test process).
pub fn busybox() -> Layer {
    static TAR: OnceLock<Vec<u8>> = OnceLock::new();
    Layer {
        tar: TAR.get_or_init(busybox_layer).clone(),
        compression: Compression::Gzip,
    }
}

fn compress(layer: &Layer) -> (Vec<u8>, &'static str) {
    match layer.compression {
        Compression::None => (layer.tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&layer.tar).unwrap();
            (
                encoder.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        }
        Compression::Zstd => (
            zstd::encode_all(&layer.tar[..], 3).unwrap(),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    }
}

fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let hex = sha256_hex(bytes);
    fs::write(dir.join("blobs/sha256").join(&hex), bytes).expect("write blob");
    format!("sha256:{hex}")
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// Where `layout` keeps the blob `digest` (`sha256:…`).
pub fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    layout.join("blobs/sha256").join(hex)
}

/// The manifest of the only image in `layout`.
pub fn manifest(layout: &Path) -> serde_json::Value {
    let index = read_json(&layout.join("index.json"));
    read_json(&blob_path(
        layout,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
