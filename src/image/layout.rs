//! Reading OCI image layouts: a directory (`oci:`) or a plain tar of one
//! (`oci-archive:`), and choosing the image manifest a source names
//! (by tag, then by platform for multi-platform images).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use rustix::fs::{FileType, Mode, OFlags};

use super::digest::Digest;
use super::fsx;
use super::spec::{self, Descriptor, Index, Kind};

/// Largest JSON document (index, manifest, config) read into memory.
const MAX_JSON: u64 = 64 << 20;

pub enum Layout {
    Dir {
        root: PathBuf,
    },
    /// member path → (offset of its data in the tar, size)
    Archive {
        file: PathBuf,
        members: HashMap<String, (u64, u64)>,
    },
}

impl Layout {
    pub fn open_dir(root: &Path) -> anyhow::Result<Layout> {
        if root.is_file() {
            bail!(
                "`{}` is a file, not an OCI layout directory; for a tar of a layout use `oci-archive:`",
                root.display()
            );
        }
        if !root.join("index.json").is_file() {
            bail!(
                "`{}` is not an OCI image layout: it has no index.json (create one with e.g. \
                 `skopeo copy docker://IMAGE oci:DIR:TAG`)",
                root.display()
            );
        }
        Ok(Layout::Dir {
            root: root.to_path_buf(),
        })
    }

    /// Indexes the members of a tar once, seeking over their data.
    pub fn open_archive(file: &Path) -> anyhow::Result<Layout> {
        #[cfg(test)]
        super::testutil::note("scan", file);
        if file.is_dir() {
            bail!(
                "`{}` is a directory, not an OCI archive; for a layout directory use `oci:`",
                file.display()
            );
        }
        let members = scan_archive(file)
            .with_context(|| format!("cannot read OCI archive `{}`", file.display()))?;
        if !members.contains_key("index.json") {
            bail!(
                "`{}` is not an OCI archive: it has no index.json (create one with e.g. \
                 `skopeo copy docker://IMAGE oci-archive:FILE.tar:TAG`)",
                file.display()
            );
        }
        Ok(Layout::Archive {
            file: file.to_path_buf(),
            members,
        })
    }

    fn open_member(&self, name: &str) -> io::Result<(Box<dyn Read + Send>, u64)> {
        match self {
            Layout::Dir { root } => {
                let (file, len) = open_regular(&root.join(name))?;
                Ok((Box::new(file), len))
            }
            Layout::Archive { file, members } => {
                let &(offset, len) = members.get(name).ok_or(io::ErrorKind::NotFound)?;
                let (mut file, _) = open_regular(file)?;
                file.seek(SeekFrom::Start(offset))?;
                Ok((Box::new(file.take(len)), len))
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Layout::Dir { root } => format!("OCI layout `{}`", root.display()),
            Layout::Archive { file, .. } => format!("OCI archive `{}`", file.display()),
        }
    }

    pub fn read_index(&self) -> anyhow::Result<Index> {
        let (reader, len) = self
            .open_member("index.json")
            .with_context(|| format!("cannot read index.json of {}", self.describe()))?;
        let bytes = read_capped(reader, len)?;
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "index.json of {} is not a valid image index",
                self.describe()
            )
        })
    }

    /// Opens a blob for streaming, refusing one whose size is not the
    /// `size` its descriptor gives: a longer one could be endless.
    pub fn open_blob(&self, digest: &Digest, size: u64) -> anyhow::Result<Box<dyn Read + Send>> {
        let name = format!("blobs/sha256/{}", digest.hex());
        let (blob, actual) = self.open_member(&name).map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => anyhow::anyhow!(
                "blob {digest} is missing from {}: the layout is incomplete, export the image again",
                self.describe()
            ),
            _ => anyhow::Error::new(err).context(format!("cannot read blob {digest} of {}", self.describe())),
        })?;
        if actual != size {
            bail!(
                "blob {digest} of {} is {actual} bytes, {} than the {size} bytes its descriptor \
                 gives; the layout is damaged or tampered with, export the image again",
                self.describe(),
                if actual > size { "longer" } else { "shorter" }
            );
        }
        Ok(blob)
    }

    /// Reads a small blob (JSON) and checks its size and digest.
    pub fn read_blob(&self, desc: &Descriptor) -> anyhow::Result<(Digest, Vec<u8>)> {
        let digest = Digest::parse(&desc.digest)?;
        if desc.size > MAX_JSON {
            bail!(
                "blob {digest} is {} bytes, too large for an image document",
                desc.size
            );
        }
        let reader = self.open_blob(&digest, desc.size)?;
        let bytes = read_capped(reader, desc.size)?;
        let actual = Digest::of(&bytes);
        if actual != digest || bytes.len() as u64 != desc.size {
            bail!(
                "blob {digest} of {} is corrupt: it hashes to {actual} ({} bytes, expected {}); \
                 export the image again",
                self.describe(),
                bytes.len(),
                desc.size
            );
        }
        Ok((digest, bytes))
    }
}

/// Reads at most `limit` bytes plus one, so an oversized member shows up
/// as a size mismatch instead of filling memory.
fn read_capped(reader: impl Read, limit: u64) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(limit.min(MAX_JSON) + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Opens `path` for reading if it is a regular file, with its size. A
/// symlink to one is followed (the layout is the user's own, and tools
/// may link blobs from a cache); a device, fifo or directory is refused
/// before it is opened, and again after (it may have been swapped): a
/// symlink to `/dev/zero` would never end, a fifo would never begin.
fn open_regular(path: &Path) -> io::Result<(File, u64)> {
    regular_size(&rustix::fs::stat(path)?)?;
    // NONBLOCK: a fifo swapped in since the stat must not hang the open.
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let file = File::from(rustix::fs::open(path, flags, Mode::empty())?);
    let size = regular_size(&rustix::fs::fstat(&file)?)?;
    Ok((file, size))
}

fn regular_size(stat: &rustix::fs::Stat) -> io::Result<u64> {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => Ok(u64::try_from(stat.st_size).unwrap_or(0)),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {}, not a regular file", fsx::describe(other)),
        )),
    }
}

fn scan_archive(path: &Path) -> anyhow::Result<HashMap<String, (u64, u64)>> {
    let (mut file, _) = open_regular(path)?;
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic)?;
    if magic[..n].starts_with(&[0x1f, 0x8b]) || magic[..n] == [0x28, 0xb5, 0x2f, 0xfd] {
        bail!("it is compressed; den reads plain tar archives, decompress it first");
    }
    file.rewind()?;
    let mut archive = tar::Archive::new(file);
    let mut members = HashMap::new();
    let mut links = Vec::new();
    for entry in archive.entries_with_seek()? {
        let entry = entry?;
        let Some(name) = member_name(&entry.path()?) else {
            continue;
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                members.insert(name, (entry.raw_file_position(), entry.size()));
            }
            tar::EntryType::Link => {
                if let Some(target) = entry.link_name()?.as_deref().and_then(member_name) {
                    links.push((name, target));
                }
            }
            _ => {}
        }
    }
    for (name, target) in links {
        if let Some(&found) = members.get(&target) {
            members.insert(name, found);
        }
    }
    Ok(members)
}

/// `./blobs/sha256/x` → `blobs/sha256/x`; None for paths with `..`.
fn member_name(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

/// Finds the image manifest that `tag` (or the only image) names. Errors
/// do not repeat the source: the caller names it.
pub fn select_manifest(layout: &Layout, tag: Option<&str>) -> anyhow::Result<Descriptor> {
    let index = layout.read_index()?;
    let mut desc = pick_by_tag(&index.manifests, tag)?.clone();
    // Nested indexes are legal; a few levels is plenty.
    for _ in 0..4 {
        match kind_of(layout, &desc)? {
            Kind::Manifest => return Ok(desc),
            Kind::Index => {
                let (_, bytes) = layout.read_blob(&desc)?;
                let nested: Index = serde_json::from_slice(&bytes)
                    .with_context(|| format!("image index {} is not valid JSON", desc.digest))?;
                desc = pick_platform(&nested.manifests)?.clone();
            }
        }
    }
    bail!("its image indexes nest too deeply")
}

fn kind_of(layout: &Layout, desc: &Descriptor) -> anyhow::Result<Kind> {
    if let Some(kind) = desc.media_type.as_deref().and_then(spec::kind_of) {
        return Ok(kind);
    }
    if let Some(media_type) = &desc.media_type {
        bail!(
            "{} has media type `{media_type}`, which is not an image manifest or index",
            desc.digest
        );
    }
    let (_, bytes) = layout.read_blob(desc)?;
    spec::sniff_kind(&bytes).with_context(|| {
        format!(
            "{} is neither an image manifest nor an image index",
            desc.digest
        )
    })
}

fn pick_by_tag<'a>(entries: &'a [Descriptor], tag: Option<&str>) -> anyhow::Result<&'a Descriptor> {
    let Some(tag) = tag else {
        return match entries {
            [only] => Ok(only),
            [] => bail!("the layout holds no images (its index.json lists none)"),
            _ => bail!(
                "the layout holds {} images; name one with `:<tag>`. Tags: {}",
                entries.len(),
                list_tags(entries)
            ),
        };
    };
    let suffix = format!(":{tag}");
    let exact = entries.iter().find(|d| d.ref_name() == Some(tag));
    // Some tools store a full reference (`localhost/app:1.0`) as the name.
    let mut by_suffix = entries
        .iter()
        .filter(|d| d.ref_name().is_some_and(|r| r.ends_with(&suffix)));
    match (exact, by_suffix.next(), by_suffix.next()) {
        (Some(found), _, _) | (None, Some(found), None) => Ok(found),
        _ => bail!(
            "the layout has no image tagged `{tag}`. Tags: {}",
            list_tags(entries)
        ),
    }
}

fn list_tags(entries: &[Descriptor]) -> String {
    let tags: Vec<String> = entries
        .iter()
        .map(|d| match d.ref_name() {
            Some(name) => name.to_string(),
            None => format!("(untagged {})", d.digest),
        })
        .collect();
    if tags.is_empty() {
        "none".to_string()
    } else {
        tags.join(", ")
    }
}

/// The platform to pick from a multi-platform image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub os: String,
    pub architecture: String,
    /// None: any variant, preferring the host's defaults.
    pub variant: Option<String>,
}

impl Wanted {
    /// linux/<host architecture>.
    pub fn host() -> Wanted {
        Wanted {
            os: "linux".into(),
            architecture: spec::host_architecture().into(),
            variant: None,
        }
    }

    /// `os/arch[/variant]`, e.g. `linux/arm64/v8`.
    pub fn parse(text: &str) -> Result<Wanted, String> {
        let parts: Vec<&str> = text.split('/').collect();
        let ok =
            |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match parts[..] {
            [os, arch] | [os, arch, _] if parts.iter().all(ok) => Ok(Wanted {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: parts.get(2).map(|v| v.to_string()),
            }),
            _ => Err(format!(
                "`{text}` is not a platform; expected `os/arch[/variant]`, \
                 e.g. `linux/amd64` or `linux/arm64/v8`"
            )),
        }
    }

    /// How well `p` fits: None if not at all, lower is better.
    fn rank(&self, p: &spec::Platform) -> Option<usize> {
        if p.os != self.os || p.architecture != self.architecture {
            return None;
        }
        // arm64 images often omit their only variant, v8.
        let normal = |v: Option<&'_ str>| -> Option<String> {
            match (self.architecture.as_str(), v.filter(|v| !v.is_empty())) {
                ("arm64", Some("v8")) | (_, None) => None,
                (_, Some(v)) => Some(v.to_string()),
            }
        };
        let variant = normal(p.variant.as_deref());
        if let Some(wanted) = &self.variant {
            return (normal(Some(wanted)) == variant).then_some(0);
        }
        let preference: &[Option<&str>] = match self.architecture.as_str() {
            "arm" => &[Some("v7"), Some("v6"), Some("v5"), None],
            "amd64" => &[None, Some("v1"), Some("v2")],
            _ => &[None],
        };
        preference
            .iter()
            .position(|v| v.map(str::to_string) == variant)
    }
}

impl std::fmt::Display for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(variant) => write!(f, "/{variant}"),
            None => Ok(()),
        }
    }
}

fn pick_platform(entries: &[Descriptor]) -> anyhow::Result<&Descriptor> {
    pick_platform_for(entries, &Wanted::host())
}

/// The entry of an image index that best fits `wanted`; the error lists
/// what the index offers.
pub fn pick_platform_for<'a>(
    entries: &'a [Descriptor],
    wanted: &Wanted,
) -> anyhow::Result<&'a Descriptor> {
    let found = entries
        .iter()
        .filter_map(|d| Some((wanted.rank(d.platform.as_ref()?)?, d)))
        .min_by_key(|(rank, _)| *rank);
    if let Some((_, found)) = found {
        return Ok(found);
    }
    let offered: Vec<String> = entries
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(ToString::to_string)
        .collect();
    let what = if *wanted == Wanted::host() {
        format!("a {wanted} variant for this host")
    } else {
        format!("a {wanted} variant")
    };
    bail!(
        "it is a multi-platform image without {what}; it offers: {}",
        if offered.is_empty() {
            "nothing usable".to_string()
        } else {
            offered.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_are_normalised() {
        assert_eq!(
            member_name(Path::new("./blobs/sha256/ab")).as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(
            member_name(Path::new("/index.json")).as_deref(),
            Some("index.json")
        );
        assert_eq!(member_name(Path::new("../index.json")), None);
    }

    fn entry(platform: &str) -> Descriptor {
        let parts: Vec<&str> = platform.split('/').collect();
        Descriptor {
            media_type: None,
            digest: platform.to_string(),
            size: 1,
            annotations: Default::default(),
            platform: Some(spec::Platform {
                os: parts[0].into(),
                architecture: parts[1].into(),
                variant: parts.get(2).map(|v| v.to_string()),
            }),
        }
    }

    #[test]
    fn platform_choice() {
        let entries: Vec<Descriptor> = [
            "linux/amd64",
            "linux/arm64/v8",
            "linux/arm/v6",
            "linux/arm/v7",
            "unknown/unknown",
        ]
        .iter()
        .map(|p| entry(p))
        .collect();
        let pick = |w: &str| {
            pick_platform_for(&entries, &Wanted::parse(w).unwrap()).map(|d| d.digest.clone())
        };
        assert_eq!(pick("linux/amd64").unwrap(), "linux/amd64");
        assert_eq!(pick("linux/arm64").unwrap(), "linux/arm64/v8");
        assert_eq!(pick("linux/arm64/v8").unwrap(), "linux/arm64/v8");
        assert_eq!(pick("linux/arm").unwrap(), "linux/arm/v7");
        assert_eq!(pick("linux/arm/v6").unwrap(), "linux/arm/v6");
        let err = pick("linux/s390x").unwrap_err().to_string();
        assert!(err.contains("without a linux/s390x variant"), "{err}");
        assert!(
            err.contains("linux/amd64, linux/arm64/v8, linux/arm/v6, linux/arm/v7"),
            "{err}"
        );
        assert!(!err.contains("unknown"), "{err}");
        assert!(pick("linux/arm/v5").is_err());
        // arm64 without a variant matches a wanted v8.
        let bare = [entry("linux/arm64")];
        assert!(pick_platform_for(&bare, &Wanted::parse("linux/arm64/v8").unwrap()).is_ok());
        assert_eq!(Wanted::host().os, "linux");
        assert!(Wanted::parse("linux").is_err());
        assert!(Wanted::parse("linux/amd64/v2/x").is_err());
        assert!(Wanted::parse("linux//v2").is_err());
    }
}
