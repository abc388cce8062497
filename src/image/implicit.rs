//! Implicit parent directories checked against the layers below them.
//!
//! A layer tar may name `evil/pwned` without an entry for `evil`; the
//! unpacker then makes `evil` a 0755 directory in that layer's own
//! directory and records it as implicit (`i`) in `meta`. Tools that apply
//! layers in order onto one tree resolve such a parent through whatever
//! the lower layers left there: if a lower layer planted a symlink
//! `evil -> /somewhere`, the entry lands in `/somewhere`. den stacks
//! layers separately, so nothing would be written through the link, but
//! an image that only works by writing through a symlink of its own lower
//! layer is malformed or hostile, so den refuses it.
//!
//! Once all layers of an image are in the store, and before its record is
//! written, every implicit directory of every layer but the bottom one is
//! resolved in the merged view of the layers below it, as overlayfs shows
//! them: component by component, the topmost layer with an entry decides
//! (a whiteout or an opaque directory hides what is further down, and a
//! directory of the layer itself replaces a lower non-directory). If an
//! implicit directory or one of its implicit ancestors resolves to a
//! symlink or any other non-directory, the image is refused. Lookups go
//! through the layer directories with openat2 and `AT_SYMLINK_NOFOLLOW`
//! and never follow a link.
//!
//! Images whose tars list every parent (docker, buildah and umoci always
//! do) cost one small read per layer: the footer of its `meta` file says
//! it has no implicit directories.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::BufReader;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rustix::fs::FileType;
use rustix::io::Errno;

use super::fsx;
use super::layer::LayerBlob;
use super::meta::{self, EntryKind};
use super::store::Store;
use super::unpack::shown_path;

const OPAQUE_XATTR: &str = "user.overlay.opaque";

/// Refuses the image whose layers (bottom first, all in the store) are
/// `layers` if a layer's implicit directory stands where the layers below
/// it have a symlink or other non-directory.
pub fn check_image(store: &Store, layers: &[LayerBlob]) -> anyhow::Result<()> {
    let mut roots: Vec<Option<OwnedFd>> = layers.iter().map(|_| None).collect();
    for (index, layer) in layers.iter().enumerate().skip(1) {
        let meta_path = store.layer_path(&layer.diff_id).join("meta");
        let dirs = implicit_dirs(&meta_path)
            .with_context(|| format!("cannot read `{}`", meta_path.display()))?;
        if dirs.is_empty() {
            continue;
        }
        for (slot, lower) in roots.iter_mut().zip(layers).take(index + 1) {
            if slot.is_none() {
                let path = store.layer_path(&lower.diff_id).join("fs");
                let fd = fsx::open_dir(&path)
                    .with_context(|| format!("cannot open `{}`", path.display()))?;
                *slot = Some(fd);
            }
        }
        let roots: Vec<BorrowedFd<'_>> = roots[..=index]
            .iter()
            .map(|fd| fd.as_ref().expect("opened above").as_fd())
            .collect();
        let (own, lower) = roots.split_last().expect("at least two layers");
        let implicit: HashSet<&Path> = dirs.iter().map(|d| d.path.as_path()).collect();
        let mut below = Below {
            own: *own,
            lower,
            implicit: &implicit,
            known: HashMap::new(),
        };
        for dir in &dirs {
            let Some(conflict) = below.check(&dir.path).with_context(|| {
                format!(
                    "cannot check layer {} ({}) against the layers below it",
                    index + 1,
                    layer.digest
                )
            })?
            else {
                continue;
            };
            let entry = match &dir.entry {
                Some(entry) => format!("`{}`", shown_path(entry)),
                None => format!("an entry under `{}`", shown_path(&dir.path)),
            };
            let at = shown_path(&conflict.path);
            let planter = conflict.layer + 1;
            let planter_digest = &layers[conflict.layer].digest;
            let this = format!("layer {} ({})", index + 1, layer.digest);
            match conflict.symlink_target {
                Some(target) => bail!(
                    "{this} would write {entry} through the symlink `{at}` -> `{target}` \
                     planted by layer {planter} ({planter_digest}): it has no directory entry \
                     for `{at}` of its own, so tools that apply layers in order follow that \
                     link; refusing the image"
                ),
                None => bail!(
                    "{this} puts {entry} under `{at}`, which layer {planter} ({planter_digest}) \
                     made {}: it has no directory entry for `{at}` of its own; refusing the image",
                    conflict.what
                ),
            }
        }
    }
    Ok(())
}

/// An implicit directory of a layer and the entry that made it.
#[derive(Debug)]
struct ImplicitDir {
    path: PathBuf,
    /// The tar entry (as recorded) whose parent it is.
    entry: Option<PathBuf>,
}

/// The directories of a layer that are still implicit at the end of its
/// tar (a later directory entry for the same path makes it explicit), in
/// tar order. Reads only the footer unless the layer has some.
fn implicit_dirs(meta_path: &Path) -> anyhow::Result<Vec<ImplicitDir>> {
    let file = File::open(meta_path)?;
    if meta::read_footer(&file)? == Some(0) {
        return Ok(Vec::new());
    }
    #[cfg(test)]
    super::testutil::note("scan meta", meta_path);
    let mut found: Vec<ImplicitDir> = Vec::new();
    let mut explicit: HashSet<usize> = HashSet::new();
    let mut by_path: HashMap<PathBuf, usize> = HashMap::new();
    let mut waiting: Vec<usize> = Vec::new();
    for entry in meta::read(BufReader::new(file))? {
        if entry.kind == EntryKind::ImplicitDir {
            by_path.insert(entry.path.clone(), found.len());
            waiting.push(found.len());
            found.push(ImplicitDir {
                path: entry.path,
                entry: None,
            });
            continue;
        }
        // Parents are made, and recorded, just before their entry.
        let name = tar_name(&entry.kind, &entry.path);
        for index in waiting.drain(..) {
            if name.starts_with(&found[index].path) && name != found[index].path {
                found[index].entry = Some(name.clone());
            }
        }
        // Whiteouts and opaque markers leave a directory as it is; device
        // entries are not created. Anything else for the same path
        // replaced the implicit directory.
        if matches!(
            entry.kind,
            EntryKind::Dir | EntryKind::File | EntryKind::Symlink | EntryKind::HardLink
        ) && let Some(index) = by_path.remove(&entry.path)
        {
            explicit.insert(index);
        }
    }
    Ok(found
        .into_iter()
        .enumerate()
        .filter(|(index, _)| !explicit.contains(index))
        .map(|(_, dir)| dir)
        .collect())
}

/// The name an entry had in the tar, as far as `meta` tells.
fn tar_name(kind: &EntryKind, path: &Path) -> PathBuf {
    match kind {
        EntryKind::Whiteout => {
            let name = path.file_name().unwrap_or_default();
            let mut hidden = b".wh.".to_vec();
            hidden.extend_from_slice(name.as_bytes());
            path.with_file_name(OsStr::from_bytes(&hidden))
        }
        EntryKind::Opaque => path.join(".wh..wh..opq"),
        _ => path.to_path_buf(),
    }
}

/// What the layers below have where an implicit directory needs a
/// directory.
#[derive(Debug)]
struct Conflict {
    path: PathBuf,
    /// Index of the layer that has it.
    layer: usize,
    what: &'static str,
    symlink_target: Option<String>,
}

/// The merged view of the layers below one layer, as far as looked at.
struct Below<'a> {
    /// The layer whose implicit directories are checked.
    own: BorrowedFd<'a>,
    /// The layers below it, bottom first.
    lower: &'a [BorrowedFd<'a>],
    implicit: &'a HashSet<&'a Path>,
    /// Per path already resolved: the lower layers (top first) whose
    /// directory there shows in the merged view, or `None` if nothing
    /// below can show there any more.
    known: HashMap<PathBuf, Option<Vec<usize>>>,
}

impl Below<'_> {
    /// Resolves `path` (an implicit directory of the own layer) and every
    /// ancestor in the merged view; the first implicit one that meets a
    /// non-directory is the conflict.
    fn check(&mut self, path: &Path) -> anyhow::Result<Option<Conflict>> {
        // A later entry of the layer replaced it: nothing to check.
        match fsx::open_dir_beneath(self.own, path) {
            Ok(_) => {}
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(None),
            Err(err) => return Err(err).context(format!("cannot open `{}`", shown_path(path))),
        }
        let mut layers: Vec<usize> = (0..self.lower.len()).rev().collect();
        let mut prefix = PathBuf::new();
        for component in path.components() {
            prefix.push(component);
            let known = match self.known.get(&prefix) {
                Some(known) => known.clone(),
                None => {
                    let resolved = self.resolve(&prefix, &layers)?;
                    let known = match resolved {
                        Err(conflict) => return Ok(Some(conflict)),
                        Ok(known) => known,
                    };
                    self.known.insert(prefix.clone(), known.clone());
                    known
                }
            };
            match known {
                Some(next) => layers = next,
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// One step down: `path` in the `layers` (top first) whose parent
    /// directory shows in the merged view.
    fn resolve(
        &self,
        path: &Path,
        layers: &[usize],
    ) -> anyhow::Result<Result<Option<Vec<usize>>, Conflict>> {
        let parent = path.parent().unwrap_or(Path::new(""));
        let name = path.file_name().context("empty path")?;
        let mut shown = Vec::new();
        for &layer in layers {
            let dir = fsx::open_dir_beneath(self.lower[layer], parent).with_context(|| {
                format!("cannot open `{}` in a lower layer", shown_path(parent))
            })?;
            let stat = match fsx::stat_at(dir.as_fd(), name) {
                Ok(stat) => stat,
                Err(Errno::NOENT) => continue,
                Err(err) => {
                    return Err(err).context(format!("cannot stat `{}`", shown_path(path)));
                }
            };
            let file_type = FileType::from_raw_mode(stat.st_mode);
            if file_type == FileType::Directory {
                shown.push(layer);
                let child = fsx::open_dir_beneath(dir.as_fd(), Path::new(name))
                    .with_context(|| format!("cannot open `{}`", shown_path(path)))?;
                if is_opaque(child.as_fd()) {
                    break;
                }
                continue;
            }
            // A whiteout hides the path; a non-directory under a
            // directory of a higher layer is hidden by it.
            if !shown.is_empty() || fsx::is_whiteout(&stat) {
                break;
            }
            if !self.implicit.contains(path) {
                // The layer's own directory replaces it.
                break;
            }
            let symlink_target = (file_type == FileType::Symlink).then(|| {
                rustix::fs::readlinkat(dir.as_fd(), name, Vec::new())
                    .map(|target| shown_path(Path::new(OsStr::from_bytes(target.as_bytes()))))
                    .unwrap_or_else(|_| "?".to_string())
            });
            return Ok(Err(Conflict {
                path: path.to_path_buf(),
                layer,
                what: fsx::describe(file_type),
                symlink_target,
            }));
        }
        // The layer's own opaque directory hides everything below.
        let own = fsx::open_dir_beneath(self.own, path)
            .with_context(|| format!("cannot open `{}`", shown_path(path)))?;
        if shown.is_empty() || is_opaque(own.as_fd()) {
            return Ok(Ok(None));
        }
        Ok(Ok(Some(shown)))
    }
}

/// Whether overlayfs takes the directory as opaque. Unreadable counts as
/// not opaque: the lower layers are then looked at, which can only refuse
/// more.
fn is_opaque(dir: BorrowedFd<'_>) -> bool {
    let mut value = [0u8; 4];
    matches!(
        rustix::fs::fgetxattr(dir, OPAQUE_XATTR, &mut value),
        Ok(1) if value[0] == b'y'
    )
}
