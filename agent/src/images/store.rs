//! The content-addressed image store. On disk, under its root:
//!
//! ```text
//! <root>/store.lock              shared by imports, exclusive by the GC
//!       /blobs/sha256/<hex>      manifests and configs, verified (0600)
//!       /layers/<diff_id hex>/   one unpacked layer in overlay lower-dir format
//!       /layers/<diff_id hex>.json  {"size": bytes}, written before the layer is renamed in
//!       /layers/<diff_id hex>.lock  flock'ed while the layer is unpacked
//!       /layers/<hex>.tmp-<id>/  a layer being unpacked
//!       /images/<manifest hex>.json  an [`Image`]: config essentials, layers, last use
//!       /tmp/                    files being written, layers being deleted
//! ```
//!
//! A layer directory exists only once complete and verified (it is
//! renamed in); a second import of the same `diff_id` skips it. Concurrent
//! importers of one layer take its lock in turn, so it is unpacked once.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
#[cfg(test)]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::ImageError;
use super::digest::{Digest, DigestReader};
use super::layout::{ImageConfig, JsonBlob, LayerDescriptor, Layout, Reference, ResolvedImage};
use super::unpack::{Limits, unpack_layer};

/// An image in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub config: ImageConfig,
    /// The layers' diff_ids, bottom first: [`Store::layer_dir`] of each is
    /// an overlay lower dir.
    pub layers: Vec<Digest>,
    /// Milliseconds since the epoch; the GC removes the oldest first.
    pub last_used_ms: u64,
}

/// What a [`Store::gc`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub images_removed: Vec<Digest>,
    pub layers_removed: usize,
    pub blobs_removed: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

#[derive(Serialize, Deserialize)]
struct LayerRecord {
    size: u64,
}

/// The image store; see the module doc for its files.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    limits: Limits,
    /// Layers this store unpacked, for the tests' "once" checks.
    #[cfg(test)]
    pub(super) unpacks: AtomicUsize,
}

impl Store {
    /// Opens the store at `root`, creating its directories.
    pub fn open(root: &Path) -> Result<Store, ImageError> {
        for dir in ["blobs/sha256", "layers", "images", "tmp"] {
            let dir = root.join(dir);
            std::fs::create_dir_all(&dir).map_err(ImageError::io("create", &dir))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
            limits: Limits::default(),
            #[cfg(test)]
            unpacks: AtomicUsize::new(0),
        })
    }

    /// The same store, unpacking each layer within `limits`.
    pub fn with_limits(self, limits: Limits) -> Store {
        Store { limits, ..self }
    }

    /// The directory the layers are unpacked in.
    pub fn layers_root(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// Where the layer `diff_id` is unpacked.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    /// Imports the image `reference` of the OCI layout at `layout_dir`:
    /// verifies its manifest and config, unpacks the layers not yet here
    /// (each checked against its blob digest, size and diff_id) and
    /// records the image. On error no image is recorded.
    pub fn import_layout(&self, layout_dir: &Path, reference: &Reference) -> Result<Image, ImageError> {
        let layout = Layout::open(layout_dir)?;
        let resolved = layout.resolve(reference)?;
        self.import_resolved(resolved, |desc| {
            let blob_path = layout.blob_path(&desc.digest);
            let blob = File::open(&blob_path).map_err(ImageError::io("open", &blob_path))?;
            Ok(Box::new(blob))
        })
    }

    /// Imports an image whose manifest and config are verified already
    /// (`resolved`), opening a layer's blob with `open_layer` only if the
    /// layer is not here yet: a registry pull streams each missing layer
    /// straight into the unpacker, once even for concurrent pulls (the
    /// layer lock). On error no image is recorded.
    pub(crate) fn import_resolved<'a>(
        &self,
        resolved: ResolvedImage,
        open_layer: impl Fn(&LayerDescriptor) -> Result<Box<dyn Read + 'a>, ImageError>,
    ) -> Result<Image, ImageError> {
        let _shared = self.lock(FlockArg::LockShared)?;
        // The warm path of every launch but the first: nothing to unpack
        // or write (and no fsync) when the image and its layers are here.
        if let Some(image) = self.image(&resolved.manifest.digest)?
            && image.layers.iter().all(|d| self.layer_dir(d).is_dir())
        {
            return Ok(image);
        }
        let bytes = resolved.layers.iter().map(|l| l.size).fold(0u64, u64::saturating_add);
        if bytes > self.limits.max_image_bytes {
            return Err(ImageError::ImageTooLarge {
                bytes,
                limit: self.limits.max_image_bytes,
            });
        }
        for (desc, diff_id) in resolved.layers.iter().zip(&resolved.config.diff_ids) {
            self.ensure_layer(desc, diff_id, &open_layer)?;
        }
        self.write_blob(&resolved.manifest)?;
        self.write_blob(&resolved.config_blob)?;
        let image = Image {
            manifest_digest: resolved.manifest.digest,
            config_digest: resolved.config_blob.digest,
            layers: resolved.config.diff_ids.clone(),
            config: resolved.config,
            last_used_ms: now_ms(),
        };
        self.write_image(&image)?;
        Ok(image)
    }

    /// The image recorded for `manifest`, if any.
    pub fn image(&self, manifest: &Digest) -> Result<Option<Image>, ImageError> {
        let path = self.image_path(manifest);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| ImageError::Json {
                    what: path.display().to_string(),
                    source,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::io("read", &path)(e)),
        }
    }

    /// Every image recorded, least recently used first.
    pub fn images(&self) -> Result<Vec<Image>, ImageError> {
        let mut images = Vec::new();
        for name in list(&self.root.join("images"))? {
            if let Some(digest) = name.strip_suffix(".json").and_then(Digest::from_hex)
                && let Some(image) = self.image(&digest)?
            {
                images.push(image);
            }
        }
        images.sort_by_key(|i| (i.last_used_ms, i.manifest_digest.clone()));
        Ok(images)
    }

    /// Records that `manifest` was just used (by a container), for the GC.
    pub fn mark_used(&self, manifest: &Digest) -> Result<(), ImageError> {
        let _shared = self.lock(FlockArg::LockShared)?;
        match self.image(manifest)? {
            Some(mut image) => {
                image.last_used_ms = now_ms();
                self.write_image(&image)
            }
            None => Ok(()),
        }
    }

    /// Unpacks the layer `desc` as `diff_id`, unless it is here already;
    /// holds the layer's lock meanwhile.
    fn ensure_layer<'a>(
        &self,
        desc: &LayerDescriptor,
        diff_id: &Digest,
        open_layer: &impl Fn(&LayerDescriptor) -> Result<Box<dyn Read + 'a>, ImageError>,
    ) -> Result<(), ImageError> {
        let dest = self.layer_dir(diff_id);
        let _lock = flock(&dest.with_extension("lock"), FlockArg::LockExclusive)?;
        if dest.is_dir() {
            return Ok(());
        }
        let blob = open_layer(desc)?;
        // One byte past the descriptor's size, to see a longer blob.
        let mut reader = DigestReader::new(blob.take(desc.size + 1));
        let staged = unpack_layer(&mut reader, desc.compression, &dest, &self.limits)?;
        let (digest, len) = reader.finish();
        desc.digest.verify(desc.size, &digest, len, "layer blob")?;
        if staged.diff_id() != diff_id {
            return Err(ImageError::DigestMismatch {
                what: format!("diff_id of layer {}", desc.digest),
                expected: diff_id.clone(),
                actual: staged.diff_id().clone(),
            });
        }
        let record = serde_json::to_vec(&LayerRecord { size: staged.size() }).map_err(|source| ImageError::Json {
            what: "layer record".to_owned(),
            source,
        })?;
        self.write_atomic(&dest.with_extension("json"), &record)?;
        staged.commit()?;
        #[cfg(test)]
        self.unpacks.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn write_blob(&self, blob: &JsonBlob) -> Result<(), ImageError> {
        let path = self.blob_path(&blob.digest);
        if path.exists() {
            return Ok(());
        }
        self.write_atomic(&path, &blob.bytes)
    }

    fn write_image(&self, image: &Image) -> Result<(), ImageError> {
        let bytes = serde_json::to_vec_pretty(image).map_err(|source| ImageError::Json {
            what: format!("image {}", image.manifest_digest),
            source,
        })?;
        self.write_atomic(&self.image_path(&image.manifest_digest), &bytes)
    }

    /// Writes `path` whole or not at all: a temp file, fsync, rename,
    /// fsync of the directory.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
        let tmp = self.root.join("tmp").join(uuid::Uuid::new_v4().simple().to_string());
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(ImageError::io("create", &tmp))?;
            file.write_all(bytes).map_err(ImageError::io("write", &tmp))?;
            file.sync_all().map_err(ImageError::io("fsync", &tmp))?;
            std::fs::rename(&tmp, path).map_err(ImageError::io("rename into place", path))?;
            let dir = path.parent().unwrap_or(&self.root);
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(ImageError::io("fsync", dir))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Removes least recently used images not `in_use` (manifest
    /// digests), and every layer and blob no remaining image refers to,
    /// until the store holds at most `max_bytes`. Leftovers of
    /// interrupted work go too.
    pub fn gc(&self, max_bytes: u64, in_use: &HashSet<Digest>) -> Result<GcReport, ImageError> {
        let _exclusive = self.lock(FlockArg::LockExclusive)?;
        self.remove_leftovers()?;
        let mut report = GcReport {
            bytes_before: self.usage()?,
            ..GcReport::default()
        };
        let mut images = self.images()?;
        loop {
            self.sweep(&images, &mut report)?;
            report.bytes_after = self.usage()?;
            if report.bytes_after <= max_bytes {
                break;
            }
            let Some(pos) = images.iter().position(|i| !in_use.contains(&i.manifest_digest)) else {
                break;
            };
            let image = images.remove(pos);
            let path = self.image_path(&image.manifest_digest);
            std::fs::remove_file(&path).map_err(ImageError::io("remove", &path))?;
            tracing::info!(image = %image.manifest_digest, "image store: removed the least recently used image");
            report.images_removed.push(image.manifest_digest);
        }
        Ok(report)
    }

    /// Removes the layers and blobs `images` do not refer to.
    fn sweep(&self, images: &[Image], report: &mut GcReport) -> Result<(), ImageError> {
        let used_layers: HashSet<&Digest> = images.iter().flat_map(|i| &i.layers).collect();
        let used_blobs: HashSet<&Digest> = images
            .iter()
            .flat_map(|i| [&i.manifest_digest, &i.config_digest])
            .collect();
        for diff_id in self.layer_ids()? {
            if !used_layers.contains(&diff_id) {
                self.remove_layer(&diff_id)?;
                report.layers_removed += 1;
            }
        }
        for digest in self.blob_ids()? {
            if !used_blobs.contains(&digest) {
                let path = self.blob_path(&digest);
                std::fs::remove_file(&path).map_err(ImageError::io("remove", &path))?;
                report.blobs_removed += 1;
            }
        }
        Ok(())
    }

    /// The bytes the layers and blobs take.
    fn usage(&self) -> Result<u64, ImageError> {
        let layers: u64 = self.layer_ids()?.iter().map(|d| self.layer_size(d)).sum();
        let blobs: u64 = self
            .blob_ids()?
            .iter()
            .map(|d| std::fs::metadata(self.blob_path(d)).map_or(0, |m| m.len()))
            .sum();
        Ok(layers + blobs)
    }

    /// The layers present (complete: renamed in).
    fn layer_ids(&self) -> Result<Vec<Digest>, ImageError> {
        let dir = self.root.join("layers");
        Ok(list(&dir)?
            .iter()
            .filter_map(|n| Digest::from_hex(n))
            .filter(|d| self.layer_dir(d).is_dir())
            .collect())
    }

    fn blob_ids(&self) -> Result<Vec<Digest>, ImageError> {
        Ok(list(&self.root.join("blobs/sha256"))?
            .iter()
            .filter_map(|n| Digest::from_hex(n))
            .collect())
    }

    /// A layer's size from its record; 0 if the record is lost.
    fn layer_size(&self, diff_id: &Digest) -> u64 {
        std::fs::read(self.layer_dir(diff_id).with_extension("json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<LayerRecord>(&b).ok())
            .map_or(0, |r| r.size)
    }

    /// Renames the layer away first, so that no half-deleted layer is
    /// ever taken for a complete one, then deletes it. Only under the
    /// exclusive lock: no import waits on its lock file.
    fn remove_layer(&self, diff_id: &Digest) -> Result<(), ImageError> {
        let dir = self.layer_dir(diff_id);
        let doomed = self
            .root
            .join("tmp")
            .join(format!("gc-{}", uuid::Uuid::new_v4().simple()));
        std::fs::rename(&dir, &doomed).map_err(ImageError::io("rename away", &dir))?;
        for ext in ["json", "lock"] {
            let path = dir.with_extension(ext);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(ImageError::io("remove", &path)(e)),
                _ => {}
            }
        }
        std::fs::remove_dir_all(&doomed).map_err(ImageError::io("remove", &doomed))?;
        tracing::info!(layer = %diff_id, "image store: removed an unused layer");
        Ok(())
    }

    /// Removes what interrupted imports and GCs left: `tmp/*`, layers
    /// being unpacked, records and locks of layers not present.
    fn remove_leftovers(&self) -> Result<(), ImageError> {
        let tmp = self.root.join("tmp");
        for name in list(&tmp)? {
            remove_any(&tmp.join(name))?;
        }
        let layers = self.root.join("layers");
        for name in list(&layers)? {
            let stale = match name.split_once('.') {
                Some((hex, rest)) => rest.starts_with("tmp-") || !layers.join(hex).is_dir(),
                None => false,
            };
            if stale {
                remove_any(&layers.join(name))?;
            }
        }
        Ok(())
    }

    fn lock(&self, arg: FlockArg) -> Result<Flock<File>, ImageError> {
        flock(&self.root.join("store.lock"), arg)
    }

    fn image_path(&self, manifest: &Digest) -> PathBuf {
        self.root.join("images").join(format!("{}.json", manifest.hex()))
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }
}

/// Locks the file `path`, creating it; blocks until it gets the lock.
fn flock(path: &Path, arg: FlockArg) -> Result<Flock<File>, ImageError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(ImageError::io("open", path))?;
    Flock::lock(file, arg).map_err(|(_, e)| ImageError::sys("lock", path)(e))
}

/// The names in `dir` (UTF-8 ones: ours all are).
fn list(dir: &Path) -> Result<Vec<String>, ImageError> {
    let entries = std::fs::read_dir(dir).map_err(ImageError::io("list", dir))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(ImageError::io("list", dir))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// Removes a file or a directory tree (not following symlinks).
fn remove_any(path: &Path) -> Result<(), ImageError> {
    let meta = std::fs::symlink_metadata(path).map_err(ImageError::io("stat", path))?;
    if meta.is_dir() {
        std::fs::remove_dir_all(path).map_err(ImageError::io("remove", path))
    } else {
        std::fs::remove_file(path).map_err(ImageError::io("remove", path))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
