//! What a build leaves in the store besides layers:
//!
//! ```text
//! builds/<key hex>.json        one per built step: parent key, summary,
//!                              the image's layers and env after it
//! builds/heads/<hex>.json      per (project root, container): the final key
//!                              and what `den run` re-checks to skip building
//! builds/stat/<hex>.json       per project: stat signature → sha256 of the
//!                              files copy steps read
//! locks/build-<key hex>.lock   held while that step builds
//! ```
//!
//! A record is written only after its layer is in place, so a kill or a
//! failing step leaves none, and the previous head stays runnable.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::copy::Watched;
use crate::image::Store;
use crate::image::digest::Digest;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The key below this step's.
    pub parent: String,
    /// What the step did, for listings.
    pub step: String,
    /// Directory names under `layers/` of the whole image so far, bottom
    /// first (the step's own last, unless it made none, like `env`).
    pub layers: Vec<String>,
    /// The image's environment after this step.
    pub env: Vec<String>,
    /// Seconds since the epoch.
    pub created: u64,
}

/// `builds/heads/…`: the no-op check's inputs.
#[derive(Debug, Serialize, Deserialize)]
pub struct Head {
    /// `key::steps` of the container when it was built.
    pub steps: String,
    /// The base image's id.
    pub base: String,
    /// The final step's key.
    pub key: String,
    /// Stat signatures of every project file and directory steps read.
    pub watched: Vec<Watched>,
    /// The project directory, so `den gc` can tell when it is gone.
    pub project: PathBuf,
}

/// The record of `key`, if it exists and all its layers are in place.
pub fn load(store: &Store, key: &Digest) -> Option<Record> {
    let record: Record = read_json(&store.paths().build_record(key.hex()))?;
    record
        .layers
        .iter()
        .all(|layer| store.paths().layer_fs(layer).is_dir())
        .then_some(record)
}

/// The name of a layer directory given its `fs` path.
pub fn layer_name(fs: &Path) -> String {
    fs.parent()
        .and_then(Path::file_name)
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    crate::image::read_json(path).ok()
}

/// Writes `value` to `path` through a temporary file and a rename;
/// compact, as heads are read on every `den run`.
pub fn write_json<T: Serialize>(store: &Store, path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
    }
    store.write_atomic(path, &serde_json::to_vec(value)?)
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
