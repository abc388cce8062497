//! Looking at an image's merged view from the host, without mounting it:
//! enough to pick a package manager and read /etc/os-release. Paths are
//! resolved beneath each layer without following symlinks, so a layer
//! can never point den at a host file.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};

use crate::image::fsx;

/// What the top-most layer holding `rel` has there: `None` when no
/// layer has it, or the top-most entry is a whiteout.
fn find(layers: &[PathBuf], rel: &str) -> Option<(PathBuf, FileType)> {
    let rel = Path::new(rel);
    let (dir, name) = (rel.parent()?, rel.file_name()?);
    for layer in layers.iter().rev() {
        let Ok(root) = fsx::open_dir(layer) else {
            continue;
        };
        let Ok(parent) = fsx::open_dir_beneath(root.as_fd(), dir) else {
            continue;
        };
        if let Ok(stat) = fsx::stat_at(parent.as_fd(), name) {
            if fsx::is_whiteout(&stat) {
                return None;
            }
            return Some((layer.join(rel), FileType::from_raw_mode(stat.st_mode)));
        }
    }
    None
}

/// Whether the image has a file (or symlink) at `rel`.
pub fn has_file(layers: &[PathBuf], rel: &str) -> bool {
    find(layers, rel).is_some_and(|(_, kind)| kind != FileType::Directory)
}

/// The content of the regular file at `rel`, if the image has one
/// (at most 64 KiB).
pub fn read_small(layers: &[PathBuf], rel: &str) -> Option<Vec<u8>> {
    let (path, kind) = find(layers, rel)?;
    if kind != FileType::RegularFile {
        return None;
    }
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let file = rustix::fs::open(&path, flags, Mode::empty()).ok()?;
    let mut bytes = Vec::new();
    std::fs::File::from(file)
        .take(64 << 10)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

/// The image's os-release fields `ID`, `VERSION_ID` (or
/// `VERSION_CODENAME`) as one name for a package cache, such as
/// `debian-12`; `unknown` without one.
pub fn os_name(layers: &[PathBuf]) -> String {
    let text = read_small(layers, "etc/os-release")
        .or_else(|| read_small(layers, "usr/lib/os-release"))
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
            .map(|value| value.trim().trim_matches('"').to_string())
            .filter(|value| !value.is_empty())
    };
    let id = field("ID").unwrap_or_else(|| "unknown".into());
    let version = field("VERSION_ID")
        .or_else(|| field("VERSION_CODENAME"))
        .unwrap_or_else(|| "rolling".into());
    let name = format!("{id}-{version}");
    name.chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                true => c,
                false => '_',
            },
        )
        .collect()
}
