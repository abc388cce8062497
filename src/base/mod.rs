//! Which image a container starts from, and den.lock, the file that pins
//! it. The only reader and writer of den.lock: `den run` and `den build`
//! (through `build::image`), bootstraps and `den update` all come here.
//!
//! - A registry tag without a digest (`from: python:3.12`) is resolved
//!   through den.lock: the digest pinned there is used, with no network
//!   when the store has it; an unpinned tag is resolved and pinned.
//! - A registry digest or an OCI layout is what it names.
//! - A bootstrap's package set is pinned by `build::bootstrap`, which
//!   makes the system, through `Pins`.
//! - `container:` bases are other containers' builds (`build::image`).

mod lockfile;

use anyhow::Result;

pub use lockfile::{BootstrapEntry, Entry, LOCK_FILE_NAME};

use self::lockfile::LockFile;
use crate::config::Project;
use crate::image::registry::Reference;
use crate::image::{Image, Platform, Source, Store};

/// The image of an image source (`from:` other than `container:`).
pub fn image(store: &Store, project: &Project, container: &str, source: &Source) -> Result<Image> {
    let Some(reference) = pinnable(source) else {
        return store.resolve(source);
    };
    let mut pins = Pins::load(project)?;
    let pinned = pins
        .registry(container, reference)
        .map(|entry| entry.digest.clone());
    let (image, top) = store.resolve_locked(reference, pinned.as_deref())?;
    // Only a changed pin is written: the manifest differs per platform,
    // and den.lock must not flip between teammates' machines.
    if pinned.as_deref() != Some(top.as_str()) {
        pins.pin_registry(
            container,
            Entry {
                from: reference.to_string(),
                digest: top,
                manifest: image.id.clone(),
            },
        );
        pins.save_or_warn();
    }
    Ok(image)
}

/// The registry tag den.lock pins for `source`: a tag without a digest.
pub fn pinnable(source: &Source) -> Option<&Reference> {
    match source {
        Source::Registry(reference) if reference.tag.is_some() && reference.digest.is_none() => {
            Some(reference)
        }
        _ => None,
    }
}

/// `den update` of a registry tag: pulls what it names now and pins it;
/// returns the entries before and after.
pub fn update_registry(
    store: &Store,
    pins: &mut Pins,
    container: &str,
    reference: &Reference,
) -> Result<(Option<Entry>, Entry)> {
    let pulled = store.pull(reference, &Platform::host(), &|_| {})?;
    let entry = Entry {
        from: reference.to_string(),
        digest: pulled.top.to_string(),
        manifest: pulled.manifest.to_string(),
    };
    let old = pins.lock.get_any(container).cloned();
    pins.pin_registry(container, entry.clone());
    Ok((old, entry))
}

/// A project's den.lock while a command resolves its containers' bases;
/// written back by `save`, and only if something changed.
pub struct Pins {
    lock: LockFile,
    /// den.yaml's containers: entries of any other are dropped at `save`.
    containers: Vec<String>,
}

impl Pins {
    pub fn load(project: &Project) -> Result<Pins> {
        Ok(Pins {
            lock: LockFile::load(&project.root)?,
            containers: project.config.containers.keys().cloned().collect(),
        })
    }

    /// The container's pin for this very tag (a changed `from:` is stale).
    fn registry(&self, container: &str, reference: &Reference) -> Option<&Entry> {
        self.lock.get(container, &reference.to_string())
    }

    fn pin_registry(&mut self, container: &str, entry: Entry) {
        self.lock.set(container, entry);
    }

    /// The container's bootstrap pin, whatever it was made from.
    pub fn bootstrap(&self, container: &str) -> Option<&BootstrapEntry> {
        self.lock.bootstrap(container)
    }

    pub fn pin_bootstrap(&mut self, container: &str, entry: BootstrapEntry) {
        self.lock.set_bootstrap(container, entry);
    }

    /// Writes den.lock if it changed; returns whether it did.
    pub fn save(&mut self) -> Result<bool> {
        let containers = &self.containers;
        self.lock
            .retain(|name| containers.iter().any(|known| known == name));
        self.lock.save()
    }

    /// `save` for commands that must go on without it: a read-only
    /// checkout still runs, with a warning.
    pub fn save_or_warn(&mut self) {
        if let Err(err) = self.save() {
            eprintln!("den: warning: {err:#}");
        }
    }
}
