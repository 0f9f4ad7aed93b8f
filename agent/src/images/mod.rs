//! The agent's image store: local OCI image layouts, verified blob by
//! blob, and their layers unpacked once each in overlayfs lower-dir
//! format, safely against hostile archives.
//!
//! ```no_run
//! # fn run() -> Result<(), mezzo_agent::images::ImageError> {
//! use mezzo_agent::images::{Reference, Store};
//!
//! let store = Store::open("/var/lib/mezzo/images".as_ref())?;
//! let image = store.import_layout("/srv/busybox-oci".as_ref(), &Reference::parse("latest")?)?;
//! // The overlay lower dirs, top layer first.
//! let lower: Vec<_> = image.layers.iter().rev().map(|d| store.layer_dir(d)).collect();
//! # let _ = lower;
//! # Ok(())
//! # }
//! ```
//!
//! Everything here blocks: the caller runs it in `spawn_blocking`.
//!
//! | file | what |
//! |---|---|
//! | `digest.rs` | `sha256:<hex>` digests and streaming verification |
//! | `layout.rs` | reading an OCI image layout: index, manifest, config |
//! | `unpack.rs` | one layer tar into a fresh directory, overlay format |
//! | `store.rs` | the content-addressed store: blobs, layers, images, GC |
//! | `pull.rs` | pulling from registries into the store, streaming and verified |

mod digest;
mod error;
mod layout;
mod pull;
mod store;
mod unpack;
mod zstd;

pub use digest::Digest;
pub(crate) use digest::DigestReader;
pub use error::ImageError;
pub use layout::{ImageConfig, JsonBlob, LayerDescriptor, Layout, MAX_JSON_BLOB, Reference, ResolvedImage};
pub(crate) use pull::tls_config;
pub use pull::{Credentials, Puller, RegistryConfig, RemoteImage};
pub use store::{GcReport, Image, Store};
pub use unpack::{Compression, Limits, OPAQUE_XATTRS, StagedLayer, unpack_artifact, unpack_layer};
pub(crate) use unpack::{open_beneath, open_beneath_with};

#[cfg(test)]
pub(crate) mod tests;
