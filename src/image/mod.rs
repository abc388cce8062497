//! Images: where they come from (`Source`), the on-disk store, and
//! unpacking layers into it.
//!
//! # Store layout
//!
//! ```text
//! <store>/                     $DEN_DATA_DIR or ~/.local/share/den, mode 0700
//!   blobs/sha256/<hex>         manifests, indexes and configs, verified, by digest
//!   images/<hex>.json          image record, by manifest digest: config digest,
//!                              diff IDs (bottom first), runtime config, source
//!   images/<hex>.used          empty; its mtime is when the image was last used
//!   layers/<diff-id hex>/fs/   an unpacked layer (overlayfs lowerdir), shared
//!   layers/<diff-id hex>/meta  original owners and modes of its entries (see `meta`)
//!   sources/<hex>.json         source cache: (kind, canonical path, tag) →
//!                              stamp of index.json / the archive + manifest digest
//!   refs/<hex>.json            registry tags, by sha256("host/repo:tag"): what the
//!                              tag named when last pulled (index or manifest digest)
//!   locks/layer-<hex>.lock     flock held while a layer is being unpacked
//!   locks/store.lock           flock: shared by pulls, imports and running
//!                              containers, exclusive for `den gc`
//!   tmp/                       work in progress, each entry flocked by its creator
//!   scratch/                   empty; the runtime mounts a tmpfs over it
//! ```
//!
//! Everything reaches its final name by a rename from `tmp/`, and a layer
//! only after its blob digest and diff ID were checked, so a reader never
//! sees a partial file or layer; a kill -9 leaves at most an unlocked entry
//! in `tmp/`, removed by the next import. Layers are keyed by diff ID (the
//! sha256 of the uncompressed tar) so images sharing a layer share its
//! directory. `resolve` of an unchanged source reads only its source cache
//! entry and image record, and stats the layer directories.
//!
//! Before an image is recorded, parent directories that a layer's tar did
//! not list are checked against the layers below it: one standing where a
//! lower layer has a symlink (or other non-directory) refuses the image
//! (see `implicit`).
//!
//! Sources may be hostile: a layout blob must be a regular file of the
//! size its descriptor gives, every layer stream is read at most one byte
//! past that size, `max-unpacked-size` in den's settings caps what the
//! layers of one import unpack to, and layer paths in messages are
//! capped (`unpack::shown_path`).
//!
//! See docs/store.md for the details.

mod chunks;
pub(crate) mod digest;
mod environment;
pub(crate) mod fsx;
mod gc;
mod implicit;
mod layer;
mod layout;
pub(crate) mod lock;
pub mod meta;
pub(crate) mod parallel;
pub mod paths;
pub mod progress;
pub mod registry;
mod source;
mod spec;
mod store;
pub(crate) mod unpack;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

pub use environment::{Environment, Proxies, Settings, SettingsLoader};
pub(crate) use gc::remove_file;
pub use gc::{GcReport, Listed};
pub use layer::{Event, LayerBlob};
pub use layout::Wanted as Platform;
pub use source::Source;
pub(crate) use store::read_json;
pub use store::{Image, Pulled, RuntimeConfig, Store, StoreLock};
pub(crate) use unpack::{clean_path, shown_path};
