//! Listing, removing and garbage-collecting what the store holds:
//! `den images`, `den rmi` and `den gc`.
//!
//! Names (`refs/` for registry tags, `sources/` for local layouts and
//! archives) point at image records; records list layers and blobs.
//! `rmi` removes names and records only; `gc` removes, under the
//! exclusive store lock, records nothing names and nobody used for 24
//! hours, then layers and blobs no remaining record or name needs, and
//! `tmp/` leftovers.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::digest::Digest;
use super::fsx;
use super::spec;
use super::store::{ImageRecord, RefRecord, SourceRecord, Store, read_json, tree_size};

/// How long an image no name points at is kept after its last use.
const GRACE_SECONDS: u64 = 24 * 60 * 60;

/// One line of `den images`.
#[derive(Debug, Clone)]
pub struct Listed {
    /// `host/repo` for registry images, the source otherwise.
    pub repository: String,
    /// The tag, or `-`.
    pub tag: String,
    /// `sha256:<hex>` of the manifest.
    pub id: String,
    /// Unpacked size of its layers, if recorded at import.
    pub size: Option<u64>,
    /// When it was last used (seconds since the epoch).
    pub used: Option<u64>,
}

/// What `gc` removed (or would remove).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub images: usize,
    /// Build steps (see `build`) no project's current build uses.
    pub builds: usize,
    pub layers: usize,
    pub blobs: usize,
    pub tmp: usize,
    /// Bytes of the removed files.
    pub bytes: u64,
}

/// Everything the store names and records, read once.
struct Inventory {
    refs: Vec<(PathBuf, RefRecord)>,
    sources: Vec<(PathBuf, SourceRecord)>,
    records: BTreeMap<String, ImageRecord>,
}

impl Store {
    /// The images in the store, one line per name (a record no name
    /// points at shows as `<none>`), sorted by repository and tag.
    pub fn list_images(&self) -> anyhow::Result<Vec<Listed>> {
        let inventory = self.inventory()?;
        let mut named = BTreeSet::new();
        let mut lines = Vec::new();
        let mut add = |repository: String, tag: String, manifest: &Digest| {
            let record = inventory.records.get(manifest.hex());
            if record.is_none() {
                return;
            }
            named.insert(manifest.hex().to_string());
            lines.push(Listed {
                repository,
                tag,
                id: manifest.to_string(),
                size: record.and_then(|r| r.size),
                used: self.used_time(manifest),
            });
        };
        for (_, record) in &inventory.refs {
            add(record.name.clone(), record.tag.clone(), &record.manifest);
        }
        for (_, record) in &inventory.sources {
            add(record.source.clone(), "-".into(), &record.image);
        }
        for record in inventory.records.values() {
            if !named.contains(record.manifest.hex()) {
                lines.push(Listed {
                    repository: "<none>".into(),
                    tag: "<none>".into(),
                    id: record.manifest.to_string(),
                    size: record.size,
                    used: self.used_time(&record.manifest),
                });
            }
        }
        lines.sort_by(|a, b| (&a.repository, &a.tag, &a.id).cmp(&(&b.repository, &b.tag, &b.id)));
        lines.dedup_by(|a, b| a.repository == b.repository && a.tag == b.tag && a.id == b.id);
        Ok(lines)
    }

    /// Removes an image by reference (`name:tag`, as pulled or written
    /// in den.yaml) or by a prefix of its ID: the name(s) and the image
    /// record. Layers stay until `gc`. Returns the manifest digest.
    pub fn remove_image(&self, what: &str) -> anyhow::Result<String> {
        let inventory = self.inventory()?;
        let manifest = self.find_image(&inventory, what)?;
        let mut removed_name = false;
        // By reference: only that name goes; the record goes when no
        // other name is left for it.
        if let Ok(reference) = super::registry::Reference::parse(what)
            && let Some(tag) = &reference.tag
        {
            let path = self.ref_path(&reference, tag);
            if inventory.refs.iter().any(|(p, _)| *p == path) {
                remove_file(&path)?;
                removed_name = true;
            }
        }
        if !removed_name {
            for (path, record) in &inventory.refs {
                if record.manifest == manifest {
                    remove_file(path)?;
                }
            }
        }
        for (path, record) in &inventory.sources {
            if record.image == manifest {
                remove_file(path)?;
            }
        }
        remove_file(&self.record_path(&manifest, "json"))?;
        remove_file(&self.record_path(&manifest, "used"))?;
        Ok(manifest.to_string())
    }

    /// Collects garbage under the exclusive store lock; fails when any
    /// other den uses the store. `dry_run` only reports. `builds` runs
    /// under the lock first: it removes the build records it no longer
    /// needs (adding them to the report) and returns the layers the
    /// remaining ones use.
    pub fn gc(
        &self,
        dry_run: bool,
        builds: &dyn Fn(&Store, &mut GcReport) -> anyhow::Result<BTreeSet<String>>,
    ) -> anyhow::Result<GcReport> {
        let Some(_exclusive) = self.try_lock_exclusive()? else {
            bail!(
                "den is running elsewhere (a container, a pull or an import uses the store); try again"
            );
        };
        let inventory = self.inventory()?;
        let mut report = GcReport::default();
        let built_layers = builds(self, &mut report)?;

        // Records no name points at.
        let mut named: BTreeSet<String> = BTreeSet::new();
        for (_, record) in &inventory.refs {
            named.insert(record.manifest.hex().to_string());
            named.insert(record.digest.hex().to_string());
        }
        for (_, record) in &inventory.sources {
            named.insert(record.image.hex().to_string());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut kept_layers = built_layers;
        let mut kept_blobs = BTreeSet::new();
        for (hex, record) in &inventory.records {
            // Unnamed but used lately: an image a den.lock pins by digest
            // (pulled by digest, so no tag names it), or one a tag named
            // until `den update` moved it.
            let recent = self
                .used_time(&record.manifest)
                .is_some_and(|used| now.saturating_sub(used) < GRACE_SECONDS);
            if named.contains(hex) || recent {
                kept_layers.extend(record.diff_ids.iter().map(|d| d.hex().to_string()));
                kept_blobs.insert(record.manifest.hex().to_string());
                kept_blobs.insert(record.config.hex().to_string());
                continue;
            }
            report.images += 1;
            for extension in ["json", "used"] {
                let path = self.record_path(&record.manifest, extension);
                report.bytes += tree_size(&path);
                if !dry_run {
                    remove_file(&path)?;
                }
            }
        }
        // Indexes a tag names, and the indexes below them.
        let mut pending: Vec<Digest> = inventory
            .refs
            .iter()
            .map(|(_, r)| r.digest.clone())
            .collect();
        while let Some(digest) = pending.pop() {
            if !kept_blobs.insert(digest.hex().to_string()) {
                continue;
            }
            if let Ok(bytes) = fs::read(self.blob_path(&digest))
                && spec::sniff_kind(&bytes) == Some(spec::Kind::Index)
                && let Ok(index) = serde_json::from_slice::<spec::Index>(&bytes)
            {
                pending.extend(
                    index
                        .manifests
                        .iter()
                        .filter_map(|m| Digest::parse(&m.digest).ok()),
                );
            }
        }

        for (dir, kept, count) in [
            (self.paths().layers(), &kept_layers, &mut report.layers),
            (self.paths().blobs(), &kept_blobs, &mut report.blobs),
        ] {
            let names = match fs::read_dir(&dir) {
                Ok(entries) => entries.flatten().map(|e| e.file_name()).collect::<Vec<_>>(),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(err) => {
                    return Err(err).with_context(|| format!("cannot read `{}`", dir.display()));
                }
            };
            for name in names {
                let Some(text) = name.to_str() else { continue };
                if kept.contains(text) {
                    continue;
                }
                let path = dir.join(&name);
                *count += 1;
                report.bytes += tree_size(&path);
                if !dry_run {
                    self.remove_tree(&path)?;
                }
            }
        }
        if dry_run {
            report.tmp = fs::read_dir(self.tmp_path()).map_or(0, |e| e.count());
        } else {
            report.tmp = self.clean_tmp()?;
        }
        Ok(report)
    }

    /// Moves a tree into `tmp/` first, so no reader ever sees a half
    /// removed layer, then removes it.
    fn remove_tree(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = self.tmp_path();
        fs::create_dir_all(&tmp).with_context(|| format!("cannot create `{}`", tmp.display()))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let doomed = tmp.join(format!(
            "gc-{}-{}",
            std::process::id(),
            name.unwrap_or_default()
        ));
        fs::rename(path, &doomed).with_context(|| format!("cannot move `{}`", path.display()))?;
        fsx::remove_path(&doomed).with_context(|| format!("cannot remove `{}`", doomed.display()))
    }

    fn find_image(&self, inventory: &Inventory, what: &str) -> anyhow::Result<Digest> {
        if let Ok(reference) = super::registry::Reference::parse(what)
            && let Some(tag) = &reference.tag
            && reference.digest.is_none()
        {
            let path = self.ref_path(&reference, tag);
            if let Some((_, record)) = inventory.refs.iter().find(|(p, _)| *p == path) {
                return Ok(record.manifest.clone());
            }
        }
        if let Some((_, record)) = inventory.sources.iter().find(|(_, r)| r.source == what) {
            return Ok(record.image.clone());
        }
        let prefix = what.strip_prefix("sha256:").unwrap_or(what);
        if !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            let prefix = prefix.to_ascii_lowercase();
            let matches: Vec<&String> = inventory
                .records
                .keys()
                .filter(|hex| hex.starts_with(&prefix))
                .collect();
            match matches.as_slice() {
                [hex] => return Digest::parse(&format!("sha256:{hex}")),
                [] => {}
                several => bail!(
                    "`{what}` matches {} images; give more of the ID",
                    several.len()
                ),
            }
        }
        bail!("no image `{what}` in the store (see `den images`)")
    }

    fn inventory(&self) -> anyhow::Result<Inventory> {
        let refs = read_records::<RefRecord>(&self.paths().refs())?;
        let sources = read_records::<SourceRecord>(&self.paths().sources())?;
        let records = read_records::<ImageRecord>(&self.paths().images())?
            .into_iter()
            .map(|(_, record)| (record.manifest.hex().to_string(), record))
            .collect();
        Ok(Inventory {
            refs,
            sources,
            records,
        })
    }

    fn used_time(&self, manifest: &Digest) -> Option<u64> {
        let modified = fs::metadata(self.record_path(manifest, "used"))
            .ok()?
            .modified()
            .ok()?;
        Some(
            modified
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_secs(),
        )
    }
}

/// The `*.json` records of a directory; unreadable ones are skipped.
fn read_records<T: serde::de::DeserializeOwned>(dir: &Path) -> anyhow::Result<Vec<(PathBuf, T)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("cannot read `{}`", dir.display())),
    };
    let mut records = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json")
            && let Ok(record) = read_json::<T>(&path)
        {
            records.push((path, record));
        }
    }
    records.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(records)
}

/// Removes a file; one already gone is fine.
pub(crate) fn remove_file(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("cannot remove `{}`", path.display())),
    }
}
