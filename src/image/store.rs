//! The image store: resolving a source to an unpacked image, importing it
//! on first use. See the module comment of `image` for the layout.

use std::fs::{self, DirBuilder};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::implicit;
use super::layer::{self, BlobSource, LayerBlob, Progress};
use super::layout::{self, Layout, Wanted};
use super::lock::{self, TempEntry};
use super::paths::{SUBDIRS, StorePaths};
use super::registry::{self, Client, Reference, RegistryBlobs};
use super::spec::{self, Descriptor, ImageConfig, Manifest};
use super::{Environment, Source};

/// The on-disk image store (see the `image` module comment).
#[derive(Debug, Clone)]
pub struct Store {
    paths: StorePaths,
    env: Arc<Environment>,
}

/// An image ready to run.
#[derive(Debug, Clone)]
pub struct Image {
    /// `sha256:<hex>` of the manifest.
    pub id: String,
    /// Unpacked layer directories, bottom first; all are
    /// `<store>/layers/<diff-id hex>/fs`.
    pub layers: Vec<PathBuf>,
    pub config: RuntimeConfig,
}

/// The parts of the OCI image config's `config` object den runs with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// `images/<manifest hex>.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ImageRecord {
    pub(super) manifest: Digest,
    pub(super) config: Digest,
    pub(super) diff_ids: Vec<Digest>,
    pub(super) runtime: RuntimeConfig,
    /// Where it was first imported from (informational).
    pub(super) source: String,
    /// Bytes of its layers' unpacked files, taken at import (`den images`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) size: Option<u64>,
}

/// `sources/<sha256 of kind, path, tag>.json`: what a source resolved to
/// when its stamp was taken.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SourceRecord {
    pub(super) source: String,
    stamp: Stamp,
    pub(super) image: Digest,
}

/// Identity and version of index.json (layouts) or the tar (archives);
/// ctime changes on every write and cannot be set back by tools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// `refs/<sha256 of "name:tag">.json`: what a tag resolved to when it was
/// last pulled. `den run` uses it without asking the registry again.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RefRecord {
    /// `host/repository`.
    pub(super) name: String,
    pub(super) tag: String,
    /// What the tag named: an index, or the manifest itself.
    pub(super) digest: Digest,
    /// The manifest pulled for the platform asked for.
    pub(super) manifest: Digest,
    /// Seconds since the epoch.
    pub(super) pulled: u64,
}

/// A hold on `locks/store.lock`: shared by imports, pulls and running
/// containers, exclusive for `den gc`. The file is opened close-on-exec,
/// so no program den starts inherits it.
#[derive(Debug)]
pub struct StoreLock {
    _file: fs::File,
}

/// The outcome of `Store::pull`.
#[derive(Debug)]
pub struct Pulled {
    pub image: Image,
    /// The manifest pulled (the image's ID).
    pub manifest: Digest,
    /// What the reference named: the index for multi-platform images.
    pub top: Digest,
}

/// A source with its path made canonical.
struct Located {
    canonical: PathBuf,
    tag: Option<String>,
    is_archive: bool,
    stamp: Option<Stamp>,
}

impl Store {
    /// The store at `root` (made if missing), reaching out as `env` says.
    pub fn open(root: PathBuf, env: Environment) -> anyhow::Result<Store> {
        let root = std::path::absolute(&root)
            .with_context(|| format!("bad store path `{}`", root.display()))?;
        // Private: layers hold world-writable directories such as /tmp.
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .with_context(|| {
                format!(
                    "cannot create the image store `{}`; set DEN_DATA_DIR to a writable directory",
                    root.display()
                )
            })?;
        Ok(Store {
            paths: StorePaths::new(root),
            env: Arc::new(env),
        })
    }

    pub fn root(&self) -> &Path {
        self.paths.root()
    }

    /// Every path in the store.
    pub fn paths(&self) -> &StorePaths {
        &self.paths
    }

    pub fn environment(&self) -> &Environment {
        &self.env
    }

    /// Returns the image for a source, importing it into the store first
    /// if needed. An unchanged, already imported source costs a few stats
    /// and two small reads.
    pub fn resolve(&self, source: &Source) -> anyhow::Result<Image> {
        if let Source::Registry(reference) = source {
            return self.resolve_registry(reference);
        }
        let located = locate(source)?;
        if let Some(image) = self.cached(&located) {
            return Ok(image);
        }
        self.resolve_slow(source, &located)
            .with_context(|| format!("cannot use image `{source}`"))
    }

    /// An empty directory the runtime mounts a private tmpfs over.
    pub fn scratch_dir(&self) -> anyhow::Result<PathBuf> {
        let dir = self.paths.scratch();
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => Ok(dir),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(dir),
            Err(err) => Err(err).with_context(|| format!("cannot create `{}`", dir.display())),
        }
    }

    /// Removes leftovers of interrupted imports; returns how many.
    pub fn clean_tmp(&self) -> anyhow::Result<usize> {
        lock::clean_tmp(&self.tmp_path())
    }

    pub(crate) fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.paths.layer(diff_id.hex())
    }

    pub(crate) fn lock_path(&self, name: &str) -> PathBuf {
        self.paths.lock(name)
    }

    pub(crate) fn tmp_path(&self) -> PathBuf {
        self.paths.tmp()
    }

    pub(super) fn record_path(&self, manifest: &Digest, extension: &str) -> PathBuf {
        self.paths.image_record(manifest, extension)
    }

    fn source_path(&self, located: &Located) -> PathBuf {
        let mut key = Vec::from(if located.is_archive {
            &b"oci-archive\0"[..]
        } else {
            b"oci\0"
        });
        key.extend_from_slice(located.canonical.as_os_str().as_encoded_bytes());
        if let Some(tag) = &located.tag {
            key.push(0);
            key.extend_from_slice(tag.as_bytes());
        }
        self.paths.source(&key)
    }

    /// The fast path: an unchanged source that was resolved before.
    fn cached(&self, located: &Located) -> Option<Image> {
        let stamp = located.stamp.as_ref()?;
        let record: SourceRecord = read_json(&self.source_path(located)).ok()?;
        if &record.stamp != stamp {
            return None;
        }
        self.load_image(&record.image)
    }

    /// An image already in the store, if its record and layers are there.
    fn load_image(&self, manifest: &Digest) -> Option<Image> {
        let record: ImageRecord = read_json(&self.record_path(manifest, "json")).ok()?;
        let layers: Vec<PathBuf> = record
            .diff_ids
            .iter()
            .map(|d| self.layer_path(d).join("fs"))
            .collect();
        if !layers.iter().all(|layer| layer.is_dir()) {
            return None;
        }
        self.touch_used(manifest);
        Some(Image {
            id: manifest.to_string(),
            layers,
            config: record.runtime,
        })
    }

    fn resolve_slow(&self, source: &Source, located: &Located) -> anyhow::Result<Image> {
        self.prepare()?;
        let _shared = self.lock_shared()?;
        let layout = if located.is_archive {
            Layout::open_archive(&located.canonical)?
        } else {
            Layout::open_dir(&located.canonical)?
        };
        let label = source.to_string();
        let desc = layout::select_manifest(&layout, located.tag.as_deref())?;
        let manifest = Digest::parse(&desc.digest)?;
        let image = match self.load_image(&manifest) {
            Some(image) => image,
            None => self.import(&layout, &desc, &label)?,
        };
        if let Some(stamp) = &located.stamp {
            let record = SourceRecord {
                source: label,
                stamp: stamp.clone(),
                image: manifest,
            };
            self.write_json(&self.source_path(located), &record)?;
        }
        Ok(image)
    }

    /// A registry image: from the store if the digest, or the tag as last
    /// pulled, is there (no network); else pulled for this host.
    fn resolve_registry(&self, reference: &Reference) -> anyhow::Result<Image> {
        if let Some(image) = self.stored(reference, &Wanted::host()) {
            return Ok(image);
        }
        self.pull_implicitly(reference, &Wanted::host())
            .map(|pulled| pulled.image)
            .with_context(|| format!("cannot pull image `{reference}`"))
    }

    /// The image `reference` names for `wanted`, if the store has it.
    fn stored(&self, reference: &Reference, wanted: &Wanted) -> Option<Image> {
        let top = match (&reference.digest, &reference.tag) {
            (Some(digest), _) => digest.clone(),
            (None, Some(tag)) => {
                let record: RefRecord = read_json(&self.ref_path(reference, tag)).ok()?;
                record.digest
            }
            (None, None) => return None,
        };
        if let Some(image) = self.load_image(&top) {
            return Some(image);
        }
        // An index pulled before: choose the platform offline.
        let mut digest = top;
        for _ in 0..4 {
            let bytes = fs::read(self.blob_path(&digest)).ok()?;
            if Digest::of(&bytes) != digest || spec::sniff_kind(&bytes)? != spec::Kind::Index {
                return None;
            }
            let index: spec::Index = serde_json::from_slice(&bytes).ok()?;
            let entry = layout::pick_platform_for(&index.manifests, wanted).ok()?;
            digest = Digest::parse(&entry.digest).ok()?;
            if let Some(image) = self.load_image(&digest) {
                return Some(image);
            }
        }
        None
    }

    /// Pulls `reference` for `wanted` from its registry (always asking it
    /// what a tag names now) and records the tag in `refs/`. Layers
    /// already in the store are not fetched.
    pub fn pull(
        &self,
        reference: &Reference,
        wanted: &Wanted,
        progress: Progress<'_>,
    ) -> anyhow::Result<Pulled> {
        self.prepare()?;
        let _shared = self.lock_shared()?;
        let client = Client::new(reference, &self.env)?;
        let resolved = registry::resolve(&client, reference, wanted)?;
        let manifest_digest = resolved.manifest.digest.clone();
        let manifest: Manifest = serde_json::from_slice(&resolved.manifest.bytes)
            .with_context(|| format!("{manifest_digest} is not a valid image manifest"))?;
        check_media_types(&manifest, &manifest_digest)?;
        let config_digest = Digest::parse(&manifest.config.digest)?;
        let config_bytes = match fs::read(self.blob_path(&config_digest)) {
            Ok(bytes) if Digest::of(&bytes) == config_digest => bytes,
            _ => client.small_blob(&config_digest, manifest.config.size)?,
        };
        if resolved.indexes.is_empty() && *wanted != Wanted::host() {
            // A single-platform image: it has to be the one asked for.
            let config: ImageConfig = serde_json::from_slice(&config_bytes)
                .with_context(|| format!("{config_digest} is not a valid image config"))?;
            if let (Some(os), Some(arch)) = (&config.os, &config.architecture)
                && (os != &wanted.os || arch != &wanted.architecture)
            {
                bail!("{reference} is a single-platform image for {os}/{arch}, not {wanted}");
            }
        }
        let image = match self.load_image(&manifest_digest) {
            Some(image) => {
                if let Ok(config) = serde_json::from_slice::<ImageConfig>(&config_bytes)
                    && let Ok(layers) = layer_blobs(&manifest, &config)
                {
                    layers
                        .iter()
                        .for_each(|layer| progress(layer::Event::Present { layer }));
                }
                image
            }
            None => self.import_parts(
                &RegistryBlobs { client: &client },
                (&manifest_digest, &resolved.manifest.bytes),
                (&config_digest, &config_bytes),
                &manifest,
                &reference.to_string(),
                progress,
            )?,
        };
        for index in &resolved.indexes {
            self.write_blob(&index.digest, &index.bytes)?;
        }
        if let (Some(tag), None) = (&reference.tag, &reference.digest) {
            let record = RefRecord {
                name: reference.name(),
                tag: tag.clone(),
                digest: resolved.top.clone(),
                manifest: manifest_digest.clone(),
                pulled: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            };
            self.write_json(&self.ref_path(reference, tag), &record)?;
        }
        Ok(Pulled {
            image,
            manifest: manifest_digest,
            top: resolved.top,
        })
    }

    /// Takes `locks/store.lock` shared, waiting while a `den gc` runs.
    pub fn lock_shared(&self) -> anyhow::Result<StoreLock> {
        let file = self.open_store_lock()?;
        file.lock_shared()
            .with_context(|| format!("cannot lock `{}`", self.lock_path("store").display()))?;
        Ok(StoreLock { _file: file })
    }

    /// Takes `locks/store.lock` exclusively, or returns None when
    /// another den holds it (a pull, an import or a running container).
    pub fn try_lock_exclusive(&self) -> anyhow::Result<Option<StoreLock>> {
        let file = self.open_store_lock()?;
        match file.try_lock() {
            Ok(()) => Ok(Some(StoreLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(err)) => Err(err)
                .with_context(|| format!("cannot lock `{}`", self.lock_path("store").display())),
        }
    }

    fn open_store_lock(&self) -> anyhow::Result<fs::File> {
        let path = self.lock_path("store");
        if let Some(dir) = path.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
        }
        // std opens with O_CLOEXEC.
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open lock file `{}`", path.display()))
    }

    /// A registry reference with a tag, for den.lock: with `pin` (the
    /// digest den.lock recorded) that digest is used, from the store or
    /// pulled by digest, whatever the tag names now; without, the tag as
    /// last pulled, or pulled now. Returns the image and the digest the
    /// tag stands for (index or manifest).
    pub fn resolve_locked(
        &self,
        reference: &Reference,
        pin: Option<&str>,
    ) -> anyhow::Result<(Image, String)> {
        let wanted = Wanted::host();
        if let Some(pin) = pin {
            let mut pinned = reference.clone();
            pinned.digest = Some(Digest::parse(pin)?);
            if let Some(image) = self.stored(&pinned, &wanted) {
                return Ok((image, pin.to_string()));
            }
            let pulled = self
                .pull_implicitly(&pinned, &wanted)
                .with_context(|| format!("cannot pull image `{reference}` at {pin} (den.lock)"))?;
            return Ok((pulled.image, pin.to_string()));
        }
        if let Some(tag) = &reference.tag
            && let Ok(record) = read_json::<RefRecord>(&self.ref_path(reference, tag))
            && let Some(image) = self.stored(reference, &wanted)
        {
            return Ok((image, record.digest.to_string()));
        }
        let pulled = self
            .pull_implicitly(reference, &wanted)
            .with_context(|| format!("cannot pull image `{reference}`"))?;
        Ok((pulled.image, pulled.top.to_string()))
    }

    pub(super) fn ref_path(&self, reference: &Reference, tag: &str) -> PathBuf {
        self.paths.reference(&format!("{}:{tag}", reference.name()))
    }

    pub(super) fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.paths.blob(digest)
    }

    /// Makes the store's directories and clears what killed dens left in
    /// its tmp.
    pub(crate) fn prepare(&self) -> anyhow::Result<()> {
        for dir in SUBDIRS {
            let path = self.paths.subdir(dir);
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&path)
                .with_context(|| format!("cannot create `{}`", path.display()))?;
        }
        self.clean_tmp()?;
        Ok(())
    }

    fn import(&self, layout: &Layout, desc: &Descriptor, label: &str) -> anyhow::Result<Image> {
        let (manifest_digest, manifest_bytes) = layout.read_blob(desc)?;
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .with_context(|| format!("{manifest_digest} is not a valid image manifest"))?;
        check_media_types(&manifest, &manifest_digest)?;
        let (config_digest, config_bytes) = layout.read_blob(&manifest.config)?;
        self.import_parts(
            layout,
            (&manifest_digest, &manifest_bytes),
            (&config_digest, &config_bytes),
            &manifest,
            label,
            &layer::quiet,
        )
    }

    /// Unpacks the layers a verified manifest and config name, then
    /// records the image.
    fn import_parts(
        &self,
        blobs: &dyn BlobSource,
        (manifest_digest, manifest_bytes): (&Digest, &[u8]),
        (config_digest, config_bytes): (&Digest, &[u8]),
        manifest: &Manifest,
        label: &str,
        progress: Progress<'_>,
    ) -> anyhow::Result<Image> {
        let config: ImageConfig = serde_json::from_slice(config_bytes)
            .with_context(|| format!("{config_digest} is not a valid image config"))?;
        let layers = layer_blobs(manifest, &config)?;

        let unpacked = layer::ensure_all(self, blobs, &layers, progress)?;
        implicit::check_image(self, &layers)?;
        // Blobs and the record only once every layer is in and the image
        // passed: a rejected image leaves nothing behind but verified
        // layers.
        self.write_blob(manifest_digest, manifest_bytes)?;
        self.write_blob(config_digest, config_bytes)?;
        let record = ImageRecord {
            manifest: manifest_digest.clone(),
            config: config_digest.clone(),
            diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
            runtime: runtime_config(config),
            source: label.to_string(),
            // Layers unpacked just now counted their bytes: walking them
            // would stat every file again.
            size: Some(
                layers
                    .iter()
                    .map(|l| match unpacked.get(&l.diff_id) {
                        Some(&size) => size,
                        None => tree_size(&self.layer_path(&l.diff_id)),
                    })
                    .sum(),
            ),
        };
        self.write_json(&self.record_path(manifest_digest, "json"), &record)?;
        self.load_image(manifest_digest)
            .context("the image vanished from the store right after its import")
    }

    fn write_blob(&self, digest: &Digest, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self.paths.blob(digest);
        if path.is_file() {
            return Ok(());
        }
        self.write_atomic(&path, bytes)
    }

    fn write_json(&self, path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
        self.write_atomic(path, &serde_json::to_vec_pretty(value)?)
    }

    /// Writes `bytes` to `path` through a temporary file and a rename.
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
        let mut tmp = TempEntry::file(&self.tmp_path(), "file")?;
        tmp.handle()
            .write_all(bytes)
            .with_context(|| format!("cannot write `{}`", tmp.path().display()))?;
        tmp.persist(path)
    }

    /// The mtime of `images/<hex>.used` is when the image was last used
    /// (for a future garbage collection). Best effort: a read-only store
    /// still works.
    fn touch_used(&self, manifest: &Digest) {
        use rustix::fs::{CWD, Timespec, Timestamps, UTIME_NOW};
        let path = self.record_path(manifest, "used");
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_NOW,
        };
        let times = Timestamps {
            last_access: now,
            last_modification: now,
        };
        if rustix::fs::utimensat(CWD, &path, &times, rustix::fs::AtFlags::empty()).is_err() {
            let _ = fs::File::create(&path);
        }
    }
}

fn locate(source: &Source) -> anyhow::Result<Located> {
    let (path, tag, is_archive) = match source {
        Source::OciLayout { path, tag } => (path, tag, false),
        Source::OciArchive { path, tag } => (path, tag, true),
        Source::Registry(_) => bail!("`{source}` is a registry image, not a local one"),
    };
    let canonical = fs::canonicalize(path)
        .with_context(|| format!("image source `{source}`: cannot find `{}`", path.display()))?;
    let stamped = if is_archive {
        canonical.clone()
    } else {
        canonical.join("index.json")
    };
    // No stamp (e.g. index.json missing): the slow path explains.
    let stamp = fs::metadata(stamped).ok().map(|m| Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    });
    Ok(Located {
        canonical,
        tag: tag.clone(),
        is_archive,
        stamp,
    })
}

/// Bytes of the files under `path` (lstat sizes; a tree we cannot read
/// counts what we could).
pub(super) fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    let Ok(entries) = fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| tree_size(&entry.path()))
        .sum()
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    Ok(serde_json::from_slice(&fs::read(path)?)?)
}

fn check_media_types(manifest: &Manifest, digest: &Digest) -> anyhow::Result<()> {
    if let Some(media_type) = &manifest.media_type
        && spec::kind_of(media_type) != Some(spec::Kind::Manifest)
    {
        bail!("{digest} has media type `{media_type}`, not an image manifest");
    }
    if let Some(media_type) = &manifest.config.media_type
        && !spec::is_config(media_type)
    {
        bail!("{digest} is not a container image: its config has media type `{media_type}`");
    }
    for layer in &manifest.layers {
        if let Some(media_type) = &layer.media_type
            && !spec::is_layer(media_type)
        {
            bail!(
                "layer {} has media type `{media_type}`, which is not a layer tar",
                layer.digest
            );
        }
    }
    Ok(())
}

fn layer_blobs(manifest: &Manifest, config: &ImageConfig) -> anyhow::Result<Vec<LayerBlob>> {
    if config.rootfs.kind != "layers" {
        bail!(
            "the image config's rootfs type is `{}`, expected `layers`",
            config.rootfs.kind
        );
    }
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        bail!(
            "the manifest lists {} layers but the config has {} diff IDs; the image is corrupt",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        );
    }
    manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(layer, diff_id)| {
            Ok(LayerBlob {
                digest: Digest::parse(&layer.digest)?,
                size: layer.size,
                diff_id: Digest::parse(diff_id)?,
            })
        })
        .collect()
}

fn runtime_config(config: ImageConfig) -> RuntimeConfig {
    let c = config.config.unwrap_or_default();
    RuntimeConfig {
        env: c.env.unwrap_or_default(),
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        working_dir: c.working_dir.filter(|dir| !dir.is_empty()),
        user: c.user.filter(|user| !user.is_empty()),
    }
}
