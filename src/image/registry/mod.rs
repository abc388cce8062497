//! Pulling from OCI / Docker registries (distribution spec): references,
//! the HTTP client, authentication and credentials, and resolving a
//! reference to the image manifest for one platform.
//!
//! See docs/registry.md for the user-facing rules.

mod auth;
mod client;
mod credentials;
pub mod login;
pub mod reference;

use std::io::Read;

use anyhow::{Context, bail};

pub use client::{Client, INSECURE_ENV, download_agent};
pub use reference::Reference;

use super::digest::Digest;
use super::layer::{BlobSource, LayerBlob};
use super::layout::{self, Wanted};
use super::spec::{self, Index, Kind};

/// Every manifest and index type den reads, as the Accept header.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// A JSON document and its digest.
pub struct Document {
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

/// What a reference resolved to.
pub struct Resolved {
    /// What the tag (or digest) names: the index for multi-platform
    /// images, else the manifest itself.
    pub top: Digest,
    /// Index blobs passed on the way to the manifest.
    pub indexes: Vec<Document>,
    pub manifest: Document,
}

/// Fetches the manifest `reference` names for `wanted`, following image
/// indexes by platform.
pub fn resolve(
    client: &Client,
    reference: &Reference,
    wanted: &Wanted,
) -> anyhow::Result<Resolved> {
    let mut object = reference.object();
    let mut indexes = Vec::new();
    let mut top = None;
    for _ in 0..4 {
        let (bytes, content_type, digest) = client.manifest(&object, ACCEPT)?;
        top.get_or_insert_with(|| digest.clone());
        let kind = match content_type.as_deref() {
            Some(t) if t.starts_with("application/vnd.docker.distribution.manifest.v1") => bail!(
                "{reference} is a Docker schema 1 image, which den does not read; \
                 push it again with a current tool"
            ),
            Some(t) => spec::kind_of(t),
            None => None,
        };
        let kind = match kind.or_else(|| spec::sniff_kind(&bytes)) {
            Some(kind) => kind,
            None => bail!(
                "{digest} from {} is neither an image manifest nor an index",
                reference.registry
            ),
        };
        match kind {
            Kind::Manifest => {
                return Ok(Resolved {
                    top: top.unwrap_or_else(|| digest.clone()),
                    indexes,
                    manifest: Document { digest, bytes },
                });
            }
            Kind::Index => {
                let index: Index = serde_json::from_slice(&bytes)
                    .with_context(|| format!("image index {digest} is not valid JSON"))?;
                let entry = layout::pick_platform_for(&index.manifests, wanted)?;
                object = Digest::parse(&entry.digest)?.to_string();
                indexes.push(Document { digest, bytes });
            }
        }
    }
    bail!("its image indexes nest too deeply")
}

/// Layers streamed from a registry.
pub struct RegistryBlobs<'a> {
    pub client: &'a Client,
}

impl BlobSource for RegistryBlobs<'_> {
    fn open(&self, layer: &LayerBlob) -> anyhow::Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(self.client.blob(&layer.digest)))
    }

    /// They mostly wait on the network: 4 at once, whatever the cores.
    fn workers(&self) -> usize {
        4
    }

    fn remote(&self) -> bool {
        true
    }
}
