//! Images: where they come from (`Source`), the on-disk store, and
//! unpacking layers into it.

mod source;

pub use source::Source;
