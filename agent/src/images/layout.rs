//! Reading a local OCI image layout
//! (<https://github.com/opencontainers/image-spec/blob/main/image-layout.md>):
//! `oci-layout`, `index.json`, then the manifest for a tag or digest (one
//! level of image index followed for this host's platform) and its
//! config. Every JSON blob is checked against its descriptor's digest and
//! size, and capped, before it is parsed. Docker's schema 2 manifests and
//! manifest lists are read the same way.
//!
//! Reading a manifest and its config is shared with registry pulls
//! (`pull.rs`) through [`JsonSource`]: a layout and a registry differ only
//! in where the verified JSON blobs come from.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::ImageError;
use super::digest::{Digest, DigestReader};
use super::unpack::Compression;

/// Manifests, indexes and configs are small; a bigger one is an attack on
/// the agent's memory.
pub const MAX_JSON_BLOB: u64 = 4 << 20;

pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Which image of a layout: a tag (the `org.opencontainers.image.ref.name`
/// annotation in `index.json`) or a manifest (or index) digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    /// `sha256:<hex>` is a digest; other digest algorithms are refused;
    /// anything else is a tag (which may hold a `:`, as in
    /// `docker.io/library/busybox:1.36`).
    pub fn parse(s: &str) -> Result<Reference, ImageError> {
        match s.split_once(':') {
            Some(("sha256" | "sha384" | "sha512" | "blake3", _)) => Digest::parse(s).map(Reference::Digest),
            _ if s.is_empty() => Err(ImageError::Layout {
                path: PathBuf::new(),
                reason: "empty image reference".to_owned(),
            }),
            _ => Ok(Reference::Tag(s.to_owned())),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// What the image's config says about how to run it, and the digests of
/// its uncompressed layers, bottom first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub user: String,
    pub working_dir: String,
    pub diff_ids: Vec<Digest>,
}

/// One layer of a manifest: the compressed blob to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerDescriptor {
    pub media_type: String,
    pub compression: Compression,
    pub digest: Digest,
    pub size: u64,
}

/// A verified JSON blob, kept to be stored as is.
#[derive(Clone, Debug)]
pub struct JsonBlob {
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

/// An image found in a layout, its manifest and config verified.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    pub manifest: JsonBlob,
    pub config_blob: JsonBlob,
    pub config: ImageConfig,
    /// Bottom layer first, as `config.diff_ids`.
    pub layers: Vec<LayerDescriptor>,
}

/// An OCI image layout directory.
#[derive(Debug)]
pub struct Layout {
    dir: PathBuf,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciLayoutFile {
    image_layout_version: String,
}

/// A content descriptor of an index or manifest.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub(crate) media_type: String,
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Clone, Debug, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ExecConfig>,
    rootfs: RootFs,
}

/// Docker's field names, kept by the OCI config; any of them may be
/// missing or null.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ExecConfig {
    env: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    user: Option<String>,
    working_dir: Option<String>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<Digest>,
}

impl Descriptor {
    /// A descriptor of a blob fetched by name (a registry's manifest for a
    /// tag): no annotations, no platform.
    pub(crate) fn new(media_type: String, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type,
            digest,
            size,
            annotations: HashMap::new(),
            platform: None,
        }
    }
}

/// What a JSON blob is: a registry serves indexes and manifests and
/// configs at different URLs; errors name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JsonKind {
    Index,
    Manifest,
    Config,
}

impl JsonKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JsonKind::Index => "image index",
            JsonKind::Manifest => "manifest",
            JsonKind::Config => "config",
        }
    }
}

/// Where an image's JSON blobs come from: a layout's files or a registry.
pub(crate) trait JsonSource {
    /// The blob `desc` names, checked against its digest and size and
    /// capped at [`MAX_JSON_BLOB`].
    fn json_blob(&self, desc: &Descriptor, kind: JsonKind) -> Result<JsonBlob, ImageError>;
    /// An error about a malformed image of this source.
    fn invalid(&self, reason: String) -> ImageError;
    /// An error for a platform missing from an index.
    fn not_found(&self, reference: String) -> ImageError;
}

/// Whether `media_type` is an image index (or Docker manifest list).
pub(crate) fn is_index(media_type: &str) -> bool {
    matches!(media_type, OCI_INDEX | DOCKER_LIST)
}

/// The manifest for this host's platform in the image index `index`.
pub(crate) fn platform_manifest(src: &impl JsonSource, index: &Descriptor) -> Result<Descriptor, ImageError> {
    let blob = src.json_blob(index, JsonKind::Index)?;
    let nested: Index = parse_json(&blob.bytes, &format!("image index {}", index.digest))?;
    let arch = host_architecture();
    nested
        .manifests
        .into_iter()
        .find(|d| {
            let is_manifest = matches!(d.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST);
            is_manifest
                && d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .ok_or_else(|| src.not_found(format!("linux/{arch} in {}", index.digest)))
}

/// Reads the manifest `desc` and its config from `src`.
pub(crate) fn read_image(src: &impl JsonSource, desc: &Descriptor) -> Result<ResolvedImage, ImageError> {
    if !matches!(desc.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST) {
        return Err(ImageError::UnsupportedMediaType(desc.media_type.clone()));
    }
    let manifest_blob = src.json_blob(desc, JsonKind::Manifest)?;
    let manifest: Manifest = parse_json(&manifest_blob.bytes, &format!("manifest {}", desc.digest))?;
    if !matches!(manifest.config.media_type.as_str(), OCI_CONFIG | DOCKER_CONFIG) {
        return Err(ImageError::UnsupportedMediaType(manifest.config.media_type));
    }
    let config_blob = src.json_blob(&manifest.config, JsonKind::Config)?;
    let file: ConfigFile = parse_json(&config_blob.bytes, &format!("config {}", manifest.config.digest))?;
    if file.rootfs.kind != "layers" {
        return Err(src.invalid(format!(
            "config {}: rootfs type {:?}",
            manifest.config.digest, file.rootfs.kind
        )));
    }
    if file.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(src.invalid(format!(
            "manifest {} has {} layers, its config {} diff_ids",
            desc.digest,
            manifest.layers.len(),
            file.rootfs.diff_ids.len()
        )));
    }
    let layers = manifest
        .layers
        .into_iter()
        .map(layer_descriptor)
        .collect::<Result<_, _>>()?;
    let exec = file.config.unwrap_or_default();
    let config = ImageConfig {
        env: exec.env.unwrap_or_default(),
        entrypoint: exec.entrypoint.unwrap_or_default(),
        cmd: exec.cmd.unwrap_or_default(),
        user: exec.user.unwrap_or_default(),
        working_dir: exec.working_dir.unwrap_or_default(),
        diff_ids: file.rootfs.diff_ids,
    };
    Ok(ResolvedImage {
        manifest: manifest_blob,
        config_blob,
        config,
        layers,
    })
}

impl JsonSource for Layout {
    /// Reads a JSON blob, refusing it past [`MAX_JSON_BLOB`] or when its
    /// digest or size differs from the descriptor's.
    fn json_blob(&self, desc: &Descriptor, kind: JsonKind) -> Result<JsonBlob, ImageError> {
        let what = kind.as_str();
        check_json_size(desc, what)?;
        let path = self.blob_path(&desc.digest);
        let file = File::open(&path).map_err(ImageError::io("open", &path))?;
        // One byte more than the descriptor says, to see a longer blob.
        let mut reader = DigestReader::new(file.take(desc.size + 1));
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).map_err(ImageError::io("read", &path))?;
        let (actual, len) = reader.finish();
        desc.digest.verify(desc.size, &actual, len, what)?;
        Ok(JsonBlob { digest: actual, bytes })
    }

    fn invalid(&self, reason: String) -> ImageError {
        ImageError::Layout {
            path: self.dir.clone(),
            reason,
        }
    }

    fn not_found(&self, reference: String) -> ImageError {
        ImageError::NotFound {
            path: self.dir.clone(),
            reference,
        }
    }
}

/// Refuses a JSON blob whose descriptor says it is over [`MAX_JSON_BLOB`].
pub(crate) fn check_json_size(desc: &Descriptor, what: &'static str) -> Result<(), ImageError> {
    if desc.size > MAX_JSON_BLOB {
        return Err(ImageError::TooLarge {
            what,
            digest: desc.digest.clone(),
            size: desc.size,
            limit: MAX_JSON_BLOB,
        });
    }
    Ok(())
}

impl Layout {
    /// Opens the layout at `dir`, checking its `oci-layout` version.
    pub fn open(dir: &Path) -> Result<Layout, ImageError> {
        let layout = Layout { dir: dir.to_path_buf() };
        let path = dir.join("oci-layout");
        let bytes = read_capped(&path)?;
        let file: OciLayoutFile = parse_json(&bytes, "oci-layout")?;
        if file.image_layout_version != "1.0.0" {
            return Err(layout.invalid(format!("imageLayoutVersion {:?}, not 1.0.0", file.image_layout_version)));
        }
        Ok(layout)
    }

    /// Finds the image `reference` names and reads its manifest and config.
    pub fn resolve(&self, reference: &Reference) -> Result<ResolvedImage, ImageError> {
        let bytes = read_capped(&self.dir.join("index.json"))?;
        let index: Index = parse_json(&bytes, "index.json")?;
        let entry = index
            .manifests
            .into_iter()
            .find(|d| match reference {
                Reference::Tag(tag) => d.annotations.get(REF_NAME) == Some(tag),
                Reference::Digest(digest) => &d.digest == digest,
            })
            .ok_or_else(|| ImageError::NotFound {
                path: self.dir.clone(),
                reference: reference.to_string(),
            })?;
        let entry = if is_index(&entry.media_type) {
            platform_manifest(self, &entry)?
        } else {
            entry
        };
        read_image(self, &entry)
    }

    /// Where the blob `digest` is in this layout.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }
}

/// A manifest's layer, if its media type is one we can unpack.
fn layer_descriptor(d: Descriptor) -> Result<LayerDescriptor, ImageError> {
    let compression = match d.media_type.as_str() {
        "application/vnd.oci.image.layer.v1.tar" => Compression::None,
        "application/vnd.oci.image.layer.v1.tar+gzip" | "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            Compression::Gzip
        }
        "application/vnd.oci.image.layer.v1.tar+zstd" => Compression::Zstd,
        _ => return Err(ImageError::UnsupportedMediaType(d.media_type)),
    };
    Ok(LayerDescriptor {
        media_type: d.media_type,
        compression,
        digest: d.digest,
        size: d.size,
    })
}

/// This host's architecture as OCI platforms name it.
pub(crate) fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Reads a small layout file (`oci-layout`, `index.json`), capped.
fn read_capped(path: &Path) -> Result<Vec<u8>, ImageError> {
    let file = File::open(path).map_err(ImageError::io("open", path))?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON_BLOB + 1)
        .read_to_end(&mut bytes)
        .map_err(ImageError::io("read", path))?;
    if bytes.len() as u64 > MAX_JSON_BLOB {
        return Err(ImageError::Layout {
            path: path.to_path_buf(),
            reason: format!("over {MAX_JSON_BLOB} bytes"),
        });
    }
    Ok(bytes)
}

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|source| ImageError::Json {
        what: what.to_owned(),
        source,
    })
}
