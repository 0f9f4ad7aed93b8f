//! The one error type of the image store; each message names the blob,
//! digest or path it is about.

use std::path::PathBuf;

use super::digest::Digest;

/// Why an image could not be read, verified, unpacked or stored.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest { digest: String, reason: &'static str },
    #[error("unsupported digest algorithm in {0:?}: only sha256 is accepted")]
    UnsupportedAlgorithm(String),
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("size mismatch for {digest}: the descriptor says {expected} bytes, the blob has {actual}")]
    SizeMismatch { digest: Digest, expected: u64, actual: u64 },
    #[error("{what} {digest} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        what: &'static str,
        digest: Digest,
        size: u64,
        limit: u64,
    },
    #[error(
        "its layers are {} MiB, more than this agent's image store may hold ({} MiB, --image-store-max-mib)",
        bytes.div_ceil(1 << 20),
        limit >> 20
    )]
    ImageTooLarge { bytes: u64, limit: u64 },
    #[error("layer over its limit of {limit} {what}")]
    LayerTooLarge { what: &'static str, limit: u64 },
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("invalid image layout {path}: {reason}")]
    Layout { path: PathBuf, reason: String },
    #[error("registry {registry}: {reason}")]
    Registry { registry: String, reason: String },
    #[error("no image {reference} in the layout {path}")]
    NotFound { path: PathBuf, reference: String },
    #[error("invalid JSON in {what}: {source}")]
    Json { what: String, source: serde_json::Error },
    #[error("refused layer entry {path:?}: {reason}")]
    Hostile { path: String, reason: &'static str },
    #[error("reading the layer archive: {0}")]
    Archive(std::io::Error),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ImageError {
    /// For `map_err`: an I/O error while doing `op` on `path`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { op, path, source }
    }

    /// For `map_err`: a failed system call (nix) doing `op` on `path`.
    pub(crate) fn sys(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(nix::errno::Errno) -> ImageError {
        let path = path.into();
        move |errno| ImageError::Io {
            op,
            path,
            source: errno.into(),
        }
    }

    /// A layer entry refused for `reason`.
    pub(crate) fn hostile(path: &[u8], reason: &'static str) -> ImageError {
        ImageError::Hostile {
            path: String::from_utf8_lossy(path).into_owned(),
            reason,
        }
    }
}
