//! The build side of `den gc`: which build steps are still needed.
//!
//! A head (one per project and container) is live while its project's
//! den.yaml exists, or for 24 hours after it was written. The steps a
//! live head's chain of parents reaches are kept with their layers;
//! other step records go, as do dead heads and their projects' stat
//! caches.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::record::{self, Head, Record};
use crate::image::{GcReport, Store};

const GRACE_SECONDS: u64 = 24 * 60 * 60;

/// Removes unneeded build records (unless `dry_run`) and returns the
/// layers the kept ones use.
pub fn collect_garbage(
    store: &Store,
    dry_run: bool,
    report: &mut GcReport,
) -> Result<BTreeSet<String>> {
    let paths = store.paths();
    let mut kept_records = BTreeSet::new();
    let mut live_projects = BTreeSet::new();
    for path in json_files(&paths.heads())? {
        let head: Option<Head> = record::read_json(&path);
        let live = head.as_ref().is_some_and(|head| {
            head.project.join(crate::config::FILE_NAME).is_file() || recent(&path)
        });
        match (head, live) {
            (Some(head), true) => {
                live_projects.insert(store.paths().stat_cache(&head.project));
                let mut key = head.key;
                while kept_records.insert(key.clone()) {
                    match record::read_json::<Record>(&paths.build_record(&key)) {
                        Some(step) => key = step.parent,
                        None => break,
                    }
                }
            }
            _ => remove(&path, dry_run, report)?,
        }
    }
    let mut kept_layers = BTreeSet::new();
    for path in json_files(&paths.builds())? {
        let key = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if kept_records.contains(&key) {
            if let Some(step) = record::read_json::<Record>(&path) {
                kept_layers.extend(step.layers);
            }
            continue;
        }
        report.builds += 1;
        remove(&path, dry_run, report)?;
    }
    for path in json_files(&paths.stat_caches())? {
        if !live_projects.contains(&path) {
            remove(&path, dry_run, report)?;
        }
    }
    Ok(kept_layers)
}

fn json_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("cannot read `{}`", dir.display())),
    };
    Ok(entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect())
}

fn recent(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|modified| modified.elapsed().ok())
        .is_some_and(|age| age.as_secs() < GRACE_SECONDS)
}

fn remove(path: &Path, dry_run: bool, report: &mut GcReport) -> Result<()> {
    report.bytes += std::fs::metadata(path).map_or(0, |meta| meta.len());
    match dry_run {
        true => Ok(()),
        false => crate::image::remove_file(path),
    }
}
