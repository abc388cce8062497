//! The JSON documents of OCI image layouts (and their Docker v2 schema 2
//! equivalents), reduced to the fields den reads.

use std::collections::BTreeMap;

use serde::Deserialize;

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
/// Layer media types start with one of these (tar, tar+gzip, tar+zstd,
/// nondistributable and foreign variants).
const LAYER_PREFIXES: &[&str] = &[
    "application/vnd.oci.image.layer.",
    "application/vnd.docker.image.rootfs.",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: Option<String>,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

impl Descriptor {
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations.get(REF_NAME).map(String::as_str)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(variant) => write!(f, "/{variant}"),
            None => Ok(()),
        }
    }
}

/// index.json, or an image index blob (multi-platform image).
#[derive(Debug, Deserialize)]
pub struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub architecture: Option<String>,
    pub rootfs: RootFs,
}

/// Null and missing fields both read as empty.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    pub env: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Index,
    Manifest,
}

/// What a descriptor points at, by media type.
pub fn kind_of(media_type: &str) -> Option<Kind> {
    if INDEX_TYPES.contains(&media_type) {
        Some(Kind::Index)
    } else if MANIFEST_TYPES.contains(&media_type) {
        Some(Kind::Manifest)
    } else {
        None
    }
}

/// What a blob is when its descriptor has no media type: an index lists
/// `manifests`, a manifest has a `config`.
pub fn sniff_kind(bytes: &[u8]) -> Option<Kind> {
    #[derive(Deserialize)]
    struct Probe {
        manifests: Option<serde::de::IgnoredAny>,
        config: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_slice::<Probe>(bytes).ok()? {
        Probe {
            manifests: Some(_), ..
        } => Some(Kind::Index),
        Probe {
            config: Some(_), ..
        } => Some(Kind::Manifest),
        _ => None,
    }
}

pub fn is_config(media_type: &str) -> bool {
    CONFIG_TYPES.contains(&media_type)
}

pub fn is_layer(media_type: &str) -> bool {
    LAYER_PREFIXES
        .iter()
        .any(|prefix| media_type.starts_with(prefix))
}

/// The host platform as OCI names it (GOARCH spelling).
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}
