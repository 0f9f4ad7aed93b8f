//! The agent's artifact cache, shared by its tasks. On disk:
//!
//! ```text
//! <work_dir>/artifacts/
//! ├── <key>        one artifact as fetched and verified (0600); its mtime is its last use
//! └── tmp/<id>     downloads in progress (0600; emptied when the agent starts)
//! ```
//!
//! Both directories are 0700: entries are other frameworks' private
//! artifacts. An entry is fsynced before it is renamed into place, so a
//! power loss never leaves a torn file under a key that claims "verified".
//!
//! The key is the SHA-256 of the URI and the expected checksum
//! ([`Cache::key`]), so a task that pins another checksum never gets the
//! bytes another task fetched. One fetch of one key runs at a time (the
//! others wait for it and then find the entry), and an entry is never
//! evicted while a fetch holds its key ([`Locked`]). Beyond the size
//! limit, the least recently used entries not in use are removed.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use tokio::sync::{Mutex, OwnedMutexGuard};

/// The cache's directory and the keys being fetched.
#[derive(Debug)]
pub struct Cache {
    root: PathBuf,
    max_bytes: u64,
    /// A lock per key in use; dead ones are pruned as new ones are made.
    locks: std::sync::Mutex<HashMap<String, Weak<Mutex<()>>>>,
    /// One eviction at a time.
    evicting: std::sync::Mutex<()>,
}

/// A key held by one fetch: its entry is neither fetched by another nor
/// evicted until this is dropped.
#[derive(Debug)]
pub struct Locked {
    path: PathBuf,
    _guard: OwnedMutexGuard<()>,
}

impl Locked {
    /// The cached file, if there is one (its last use is now).
    pub fn hit(&self) -> Option<&Path> {
        let file = std::fs::File::open(&self.path).ok()?;
        // A failed touch only makes the entry look older to the eviction.
        let _ = file.set_modified(SystemTime::now());
        Some(&self.path)
    }

    /// Where the entry is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Cache {
    /// The cache at `root`, at most `max_bytes`; leftovers of downloads
    /// that an agent stopped in the middle are removed.
    pub fn open(root: &Path, max_bytes: u64) -> std::io::Result<Cache> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&tmp)?;
        // Also when made by an agent that left them open to all.
        for dir in [root, &tmp] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Cache {
            root: root.to_path_buf(),
            max_bytes,
            locks: Default::default(),
            evicting: Default::default(),
        })
    }

    /// The key of `uri` expected to have `sha256` (64 lowercase hex digits).
    pub fn key(uri: &str, sha256: Option<&str>) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(uri.as_bytes());
        ctx.update(b"\0");
        ctx.update(sha256.unwrap_or("").as_bytes());
        crate::images::Digest::from_ring(ctx.finish()).hex().to_owned()
    }

    /// A fresh path for a download in progress.
    pub fn tmp_path(&self) -> PathBuf {
        self.root.join("tmp").join(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Waits for the key to be free, and holds it.
    pub async fn lock(&self, key: &str) -> Locked {
        Locked {
            path: self.root.join(key),
            _guard: self.lock_of(key).lock_owned().await,
        }
    }

    fn lock_of(&self, key: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = locks.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        locks.retain(|_, l| l.strong_count() > 0);
        let lock = Arc::new(Mutex::new(()));
        locks.insert(key.to_owned(), Arc::downgrade(&lock));
        lock
    }

    /// Moves the verified download `tmp` of `size` bytes into the entry
    /// `locked`, durably (fsync before the rename, and of the directory
    /// after); false (and `tmp` stays) when it alone is larger than the
    /// cache.
    pub fn insert(&self, locked: &Locked, tmp: &Path, size: u64) -> std::io::Result<bool> {
        if size > self.max_bytes {
            return Ok(false);
        }
        std::fs::File::open(tmp)?.sync_all()?;
        std::fs::rename(tmp, &locked.path)?;
        std::fs::File::open(&self.root)?.sync_all()?;
        Ok(true)
    }

    /// Removes the least recently used entries, except `keep` and those in
    /// use, until the cache fits its limit; returns how many it removed.
    /// One runs at a time; an entry that vanished meanwhile is skipped,
    /// and a failure is logged (the fetch that called it has its bytes).
    pub fn evict(&self, keep: &Path) -> u64 {
        let _one = self.evicting.lock().unwrap_or_else(|e| e.into_inner());
        match self.evict_now(keep) {
            Ok(removed) => removed,
            Err(e) => {
                tracing::warn!(cache = %self.root.display(), "artifact cache: eviction failed: {e}");
                0
            }
        }
    }

    fn evict_now(&self, keep: &Path) -> std::io::Result<u64> {
        let mut entries = Vec::new();
        for e in std::fs::read_dir(&self.root)? {
            let e = e?;
            let meta = match e.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_file() && e.path() != keep {
                entries.push((meta.modified()?, meta.len(), e.file_name()));
            }
        }
        let kept = match std::fs::metadata(keep) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let mut total = kept + entries.iter().map(|(_, len, _)| len).sum::<u64>();
        entries.sort();
        let mut removed = 0;
        for (_, len, name) in entries {
            if total <= self.max_bytes {
                break;
            }
            let Some(key) = name.to_str() else { continue };
            // Held: a task is fetching or copying it.
            let Ok(_held) = self.lock_of(key).try_lock_owned() else {
                continue;
            };
            match std::fs::remove_file(self.root.join(key)) {
                Ok(()) => {
                    tracing::info!(
                        key,
                        bytes = len,
                        "artifact cache: removed the least recently used entry"
                    );
                    removed += 1;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            total -= len;
        }
        Ok(removed)
    }
}
