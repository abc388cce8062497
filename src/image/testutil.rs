//! Test helpers: layer tars built byte by byte (so malicious entries that
//! the `tar` crate's builder refuses can be written too), compression,
//! and OCI image layouts in directories or archives.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tar::{EntryType, Header};

use super::digest::Digest;
use super::spec;

pub const MTIME: u64 = 1_600_000_000;

static EVENTS: std::sync::Mutex<Vec<(&str, PathBuf)>> = std::sync::Mutex::new(Vec::new());

/// Records that the code under test did `what` to `path` (tests run in
/// parallel, so they count only events under their own directories).
pub fn note(what: &'static str, path: &Path) {
    EVENTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((what, path.to_path_buf()));
}

pub fn count(what: &str, under: &Path) -> usize {
    let events = EVENTS.lock().unwrap_or_else(|e| e.into_inner());
    events
        .iter()
        .filter(|(w, p)| *w == what && p.starts_with(under))
        .count()
}

/// Writes tar entries with exactly the names given.
pub struct TarBuilder {
    out: Vec<u8>,
    mtime: u64,
    owner: (u64, u64),
}

impl Default for TarBuilder {
    fn default() -> Self {
        TarBuilder {
            out: Vec::new(),
            mtime: MTIME,
            owner: (0, 0),
        }
    }
}

impl TarBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// mtime of the following entries.
    pub fn mtime(&mut self, mtime: u64) -> &mut Self {
        self.mtime = mtime;
        self
    }

    /// uid:gid of the following entries.
    pub fn owner(&mut self, uid: u64, gid: u64) -> &mut Self {
        self.owner = (uid, gid);
        self
    }

    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        self.entry(EntryType::Regular, path.as_bytes(), b"", data, mode)
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.entry(EntryType::Directory, path.as_bytes(), b"", b"", mode)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(
            EntryType::Symlink,
            path.as_bytes(),
            target.as_bytes(),
            b"",
            0o777,
        )
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(
            EntryType::Link,
            path.as_bytes(),
            target.as_bytes(),
            b"",
            0o644,
        )
    }

    /// Any entry; names longer than 100 bytes go into a PAX header.
    pub fn entry(
        &mut self,
        kind: EntryType,
        path: &[u8],
        link: &[u8],
        data: &[u8],
        mode: u32,
    ) -> &mut Self {
        let mut pax = Vec::new();
        if path.len() > 100 {
            pax.push(("path", path));
        }
        if link.len() > 100 {
            pax.push(("linkpath", link));
        }
        if !pax.is_empty() {
            self.pax(&pax);
        }
        let mut header = Header::new_ustar();
        let old = header.as_old_mut();
        let n = path.len().min(100);
        old.name[..n].copy_from_slice(&path[..n]);
        let n = link.len().min(100);
        old.linkname[..n].copy_from_slice(&link[..n]);
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(self.owner.0);
        header.set_gid(self.owner.1);
        header.set_mtime(self.mtime);
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.raw(header.as_bytes(), data);
        self
    }

    /// A PAX extended header for the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (key, value) in records {
            let rest = key.len() + value.len() + 3; // space, '=', newline
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            body.extend_from_slice(format!("{len} {key}=").as_bytes());
            body.extend_from_slice(value);
            body.push(b'\n');
        }
        let mut header = Header::new_ustar();
        header.as_old_mut().name[..9].copy_from_slice(b"PaxHeader");
        header.set_entry_type(EntryType::XHeader);
        header.set_mode(0o644);
        header.set_size(body.len() as u64);
        header.set_cksum();
        self.raw(header.as_bytes(), &body);
        self
    }

    fn raw(&mut self, header: &[u8], data: &[u8]) {
        self.out.extend_from_slice(header);
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0, pad));
    }

    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.out.clone();
        out.extend(std::iter::repeat_n(0, 1024));
        out
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Compression {
    Plain,
    Gzip,
    Zstd,
}

/// A layer blob with what a manifest and config say about it.
#[derive(Debug, Clone)]
pub struct Layer {
    pub blob: Vec<u8>,
    pub media_type: &'static str,
    pub diff_id: Digest,
}

pub fn layer(tar: &[u8], compression: Compression) -> Layer {
    let diff_id = Digest::of(tar);
    let (blob, media_type) = match compression {
        Compression::Plain => (tar.to_vec(), "application/vnd.oci.image.layer.v1.tar"),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(tar).unwrap();
            (
                encoder.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        }
        Compression::Zstd => (
            zstd::encode_all(tar, 3).unwrap(),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    };
    Layer {
        blob,
        media_type,
        diff_id,
    }
}

/// An OCI image layout directory being written.
pub struct OciDir {
    pub root: PathBuf,
    entries: Vec<Value>,
}

impl OciDir {
    pub fn create(root: &Path) -> OciDir {
        std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let dir = OciDir {
            root: root.to_path_buf(),
            entries: Vec::new(),
        };
        dir.write_index();
        dir
    }

    /// Stores a blob; returns a descriptor for it.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let digest = Digest::of(bytes);
        std::fs::write(self.root.join("blobs/sha256").join(digest.hex()), bytes).unwrap();
        json!({ "mediaType": media_type, "digest": digest.to_string(), "size": bytes.len() })
    }

    /// Writes config and manifest for `layers`; `runtime` becomes the
    /// config's `config` object. Returns the manifest descriptor.
    pub fn image(&self, layers: &[Layer], runtime: Value) -> Value {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
        let config = json!({
            "architecture": spec::host_architecture(),
            "os": "linux",
            "config": runtime,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        let config = self.blob(
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(&config).unwrap(),
        );
        let layers: Vec<Value> = layers
            .iter()
            .map(|l| self.blob(l.media_type, &l.blob))
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": layers,
        });
        self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).unwrap(),
        )
    }

    /// Writes an image index of (manifest descriptor, "os/arch") pairs.
    pub fn index(&self, manifests: &[(Value, &str)]) -> Value {
        let manifests: Vec<Value> = manifests
            .iter()
            .map(|(desc, platform)| {
                let (os, architecture) = platform.split_once('/').unwrap();
                let mut desc = desc.clone();
                desc["platform"] = json!({ "os": os, "architecture": architecture });
                desc
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        self.blob(
            "application/vnd.oci.image.index.v1+json",
            &serde_json::to_vec(&index).unwrap(),
        )
    }

    /// Lists a descriptor in index.json, tagged if `tag` is given.
    pub fn add(&mut self, mut desc: Value, tag: Option<&str>) -> &mut Self {
        if let Some(tag) = tag {
            desc["annotations"] = json!({ spec::REF_NAME: tag });
        }
        self.entries.push(desc);
        self.write_index();
        self
    }

    fn write_index(&self) {
        let index = json!({ "schemaVersion": 2, "manifests": self.entries });
        std::fs::write(
            self.root.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }

    /// Writes the layout as a plain tar (an `oci-archive:`).
    pub fn archive(&self, dest: &Path) {
        let mut builder = tar::Builder::new(std::fs::File::create(dest).unwrap());
        builder.append_dir_all(".", &self.root).unwrap();
        builder.into_inner().unwrap().sync_all().unwrap();
    }
}

/// A one-image layout at `root` tagged `tag`.
pub fn simple_layout(root: &Path, tag: Option<&str>, layers: &[Layer]) -> OciDir {
    let mut dir = OciDir::create(root);
    let manifest = dir.image(
        layers,
        json!({ "Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"] }),
    );
    dir.add(manifest, tag);
    dir
}
