//! Every path in the image store (docs/store.md) comes from here: nothing
//! else joins names onto the store's root.

use std::path::{Path, PathBuf};

use super::digest::Digest;

/// The store's directories, made by `Store::prepare`.
pub const SUBDIRS: &[&str] = &[
    "blobs/sha256",
    "images",
    "layers",
    "locks",
    "refs",
    "sources",
    "tmp",
];

/// The paths of one store.
#[derive(Debug, Clone)]
pub struct StorePaths {
    root: PathBuf,
}

impl StorePaths {
    pub fn new(root: PathBuf) -> StorePaths {
        StorePaths { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<store>/<dir>` for one of `SUBDIRS`.
    pub fn subdir(&self, dir: &str) -> PathBuf {
        self.root.join(dir)
    }

    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    pub fn blob(&self, digest: &Digest) -> PathBuf {
        self.blobs().join(digest.hex())
    }

    pub fn layers(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// A layer's directory: an image layer by diff ID, a built one by key.
    pub fn layer(&self, name: &str) -> PathBuf {
        self.layers().join(name)
    }

    /// A layer's files, the overlay lower directory.
    pub fn layer_fs(&self, name: &str) -> PathBuf {
        self.layer(name).join("fs")
    }

    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    /// An image's record (`json`) or use stamp (`used`), by manifest.
    pub fn image_record(&self, manifest: &Digest, extension: &str) -> PathBuf {
        self.images()
            .join(format!("{}.{extension}", manifest.hex()))
    }

    pub fn refs(&self) -> PathBuf {
        self.root.join("refs")
    }

    /// What `host/repo:tag` named when last pulled.
    pub fn reference(&self, name_and_tag: &str) -> PathBuf {
        self.refs().join(format!(
            "{}.json",
            Digest::of(name_and_tag.as_bytes()).hex()
        ))
    }

    pub fn sources(&self) -> PathBuf {
        self.root.join("sources")
    }

    /// A layout source's cache entry, by its key (kind, path, tag).
    pub fn source(&self, key: &[u8]) -> PathBuf {
        self.sources()
            .join(format!("{}.json", Digest::of(key).hex()))
    }

    /// `locks/<name>.lock`.
    pub fn lock(&self, name: &str) -> PathBuf {
        self.root.join("locks").join(format!("{name}.lock"))
    }

    /// Work in progress, each entry flocked by its creator.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Empty; the runtime mounts a tmpfs over it.
    pub fn scratch(&self) -> PathBuf {
        self.root.join("scratch")
    }

    pub fn builds(&self) -> PathBuf {
        self.root.join("builds")
    }

    /// A build step's (or bootstrap's) record, by key (hex).
    pub fn build_record(&self, key: &str) -> PathBuf {
        self.builds().join(format!("{key}.json"))
    }

    pub fn heads(&self) -> PathBuf {
        self.builds().join("heads")
    }

    /// The head of (project, container): its last build.
    pub fn head(&self, project: &Path, container: &str) -> PathBuf {
        let mut id = project.as_os_str().as_encoded_bytes().to_vec();
        id.push(0);
        id.extend_from_slice(container.as_bytes());
        self.heads().join(format!("{}.json", Digest::of(&id).hex()))
    }

    pub fn stat_caches(&self) -> PathBuf {
        self.builds().join("stat")
    }

    /// A project's stat cache of the files copy steps read.
    pub fn stat_cache(&self, project: &Path) -> PathBuf {
        let id = Digest::of(project.as_os_str().as_encoded_bytes());
        self.stat_caches().join(format!("{}.json", id.hex()))
    }
}
