//! Directories mounted into tasks (docs/frameworks.md, "Volumes"): the
//! persistent volumes the master keeps for this agent, whose data lives in
//! `WORK_DIR/volumes/ID` ([`crate::paths`]), and the host volumes the
//! operator shares by name (`mezzo agent --host-volumes NAME=PATH[:ro]`).
//!
//! The master sends the complete list of this agent's volumes after every
//! (re-)registration and whenever one is created or destroyed; the task
//! table applies it with [`Volumes::sync`], which makes what is missing and
//! removes what is no longer listed, unless a live task mounts it. The
//! sandbox collector ([`crate::gc`]) only ever looks under `sandboxes/`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mezzo_proto::ids::{IdError, VolumeId};
use mezzo_proto::volume::{self, Source};

use crate::paths;

/// A host directory mounted into a task, resolved by [`Volumes::resolve`]
/// (here, not in the containerizer that binds it: that one needs this
/// module, not the other way round).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskMount {
    /// A persistent volume's directory or a host volume's; no symlinks.
    pub source: PathBuf,
    /// Relative: beneath the task's sandbox; absolute: in its image's root.
    pub target: PathBuf,
    pub writable: bool,
    /// A persistent volume: its top directory is given to the task's user
    /// before the launch, as the sandbox is.
    #[serde(default)]
    pub owned_by_task: bool,
    /// A persistent volume's size in MiB, which the Linux containerizer
    /// holds it to as it holds the sandbox to the task's disk (0: none).
    #[serde(default)]
    pub limit_mib: u64,
}

/// A host directory the operator shares under a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVolume {
    pub name: String,
    /// Absolute, without symlinks once [`Volumes::open`] resolved it.
    pub path: PathBuf,
    /// Read-only for every task, whatever it asks.
    pub read_only: bool,
}

impl HostVolume {
    /// One item of `--host-volumes`: `NAME=PATH` or `NAME=PATH:ro`.
    pub fn parse(item: &str) -> Result<HostVolume, VolumeError> {
        let bad = || VolumeError::Syntax(item.to_owned());
        let (name, rest) = item.split_once('=').ok_or_else(bad)?;
        let (path, read_only) = match rest.strip_suffix(":ro") {
            Some(path) => (path, true),
            None => (rest, false),
        };
        VolumeId::parse(name).map_err(|source| VolumeError::Name {
            name: name.to_owned(),
            source,
        })?;
        if !path.starts_with('/') {
            return Err(bad());
        }
        Ok(HostVolume {
            name: name.to_owned(),
            path: path.into(),
            read_only,
        })
    }
}

/// Why the volume store or a host volume cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("--host-volumes: {0:?} is not NAME=PATH or NAME=PATH:ro with an absolute PATH")]
    Syntax(String),
    #[error("--host-volumes: name {name:?}: {source}")]
    Name { name: String, source: IdError },
    #[error("--host-volumes: {0} is shared twice")]
    Twice(String),
    #[error("--host-volumes: {name}={}: not an existing directory ({source})", path.display())]
    NotADirectory {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError {
    let path = path.to_owned();
    move |source| VolumeError::Io { op, path, source }
}

/// Why a task's mounts cannot be made on this agent.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{0}")]
    Invalid(#[from] volume::MountError),
    #[error("volume {0} is not on this agent")]
    NoVolume(VolumeId),
    #[error("host volume {0:?} is not shared by this agent (mezzo agent --host-volumes NAME=PATH)")]
    NoHostVolume(String),
}

/// What one [`Volumes::sync`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Synced {
    pub created: Vec<VolumeId>,
    pub removed: Vec<VolumeId>,
    /// Removed while a live task still mounts them: the task goes on
    /// writing into the removed copy until it ends.
    pub removed_in_use: Vec<VolumeId>,
}

/// This agent's volumes: where their data is, and the host volumes.
#[derive(Debug)]
pub struct Volumes {
    work_dir: PathBuf,
    host: BTreeMap<String, HostVolume>,
    /// How long removed volumes' data is kept.
    retention: Duration,
    /// Each listed volume's size in MiB, from the master's latest list.
    sizes: std::sync::Mutex<BTreeMap<VolumeId, u64>>,
}

impl Volumes {
    /// Makes the store's directory and resolves each host volume's path
    /// (which must be an existing directory). Blocking.
    pub fn open(work_dir: &Path, host: Vec<HostVolume>) -> Result<Volumes, VolumeError> {
        let root = paths::volumes_root(work_dir);
        std::fs::create_dir_all(&root).map_err(io("create", &root))?;
        let mut shared = BTreeMap::new();
        for h in host {
            let path = std::fs::canonicalize(&h.path)
                .and_then(|p| match p.is_dir() {
                    true => Ok(p),
                    false => Err(std::io::ErrorKind::NotADirectory.into()),
                })
                .map_err(|source| VolumeError::NotADirectory {
                    name: h.name.clone(),
                    path: h.path.clone(),
                    source,
                })?;
            let name = h.name.clone();
            if shared.insert(name.clone(), HostVolume { path, ..h }).is_some() {
                return Err(VolumeError::Twice(name));
            }
        }
        Ok(Volumes {
            work_dir: work_dir.to_owned(),
            host: shared,
            retention: Duration::ZERO,
            sizes: Default::default(),
        })
    }

    /// Keeps the data of removed volumes this long before [`Self::purge`]
    /// deletes it (`mezzo agent --volume-retention`): a master whose
    /// registry lost volumes (restored from an old backup, say) makes its
    /// agents remove them, and their data can then still be recovered.
    pub fn with_retention(mut self, retention: Duration) -> Volumes {
        self.retention = retention;
        self
    }

    /// The volumes' sizes in MiB, from the master's list.
    pub fn set_sizes(&self, sizes: BTreeMap<VolumeId, u64>) {
        *self.sizes.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = sizes;
    }

    /// The host directories `mounts` (checked by [`volume::check`]) name,
    /// a volume's only if its directory is here.
    pub fn resolve(&self, mounts: &[volume::Mount]) -> Result<Vec<TaskMount>, ResolveError> {
        mounts
            .iter()
            .map(|m| {
                let mut limit_mib = 0;
                let (source, writable, owned_by_task) = match &m.source {
                    Source::Volume(id) => {
                        let dir = paths::volume_dir(&self.work_dir, id);
                        // Not followed if a link: the store makes directories only.
                        if !dir.symlink_metadata().is_ok_and(|d| d.is_dir()) {
                            return Err(ResolveError::NoVolume(id.clone()));
                        }
                        let sizes = self.sizes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        limit_mib = sizes.get(id).copied().unwrap_or(0);
                        (dir, !m.read_only, true)
                    }
                    Source::Host(name) => {
                        let h = self
                            .host
                            .get(name)
                            .ok_or_else(|| ResolveError::NoHostVolume(name.clone()))?;
                        (h.path.clone(), !m.read_only && !h.read_only, false)
                    }
                };
                Ok(TaskMount {
                    source,
                    target: m.container_path.clone(),
                    writable,
                    owned_by_task,
                    limit_mib,
                })
            })
            .collect()
    }

    /// Makes the directories of the `listed` volumes that are missing
    /// (root's, 0700, durable) and moves those of unlisted ones out of the
    /// store, for [`Self::purge`] to delete once their retention is over:
    /// a volume created again under the same id starts empty. One that a
    /// live task mounts (`in_use`: a task of a removed framework still
    /// ending) is moved too; the task writes into the moved copy. Names
    /// that are no volume id are left alone. Blocking.
    pub fn sync(&self, listed: &[VolumeId], in_use: &HashSet<VolumeId>) -> Result<Synced, VolumeError> {
        use std::os::unix::fs::DirBuilderExt;
        let root = paths::volumes_root(&self.work_dir);
        let mut synced = Synced::default();
        for id in listed {
            let dir = paths::volume_dir(&self.work_dir, id);
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => synced.created.push(id.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io("create", &dir)(e)),
            }
        }
        if !synced.created.is_empty() {
            // The master counts on a created volume surviving a crash.
            paths::sync_dir(&root).map_err(io("fsync", &root))?;
        }
        let listed: HashSet<&VolumeId> = listed.iter().collect();
        let on_disk = std::fs::read_dir(&root).map_err(io("list", &root))?;
        let unlisted = on_disk
            .flatten()
            .filter_map(|e| VolumeId::parse(&e.file_name().to_string_lossy()).ok())
            .filter(|id| !listed.contains(id));
        let now = mezzo_proto::clock::unix_now() as u64;
        for id in unlisted {
            let removed = paths::volumes_removed(&self.work_dir);
            let _ = std::fs::create_dir(&removed);
            let from = paths::volume_dir(&self.work_dir, &id);
            // When it was removed leads the name: what purge goes by.
            let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
            let grave = removed.join(format!("{now}-{id}-{tag}"));
            std::fs::rename(&from, &grave).map_err(io("move out of the store", &from))?;
            if in_use.contains(&id) {
                synced.removed_in_use.push(id.clone());
            }
            synced.removed.push(id);
        }
        Ok(synced)
    }

    /// Deletes the data of removed volumes whose retention is over (and
    /// what a crash left behind), leaving their directory for the next
    /// [`Self::sync`] to move into. Blocking, and slow for a large volume.
    pub fn purge(&self) {
        let removed = paths::volumes_removed(&self.work_dir);
        let now = mezzo_proto::clock::unix_now() as u64;
        let due = |name: &str| {
            let at = name.split('-').next().and_then(|s| s.parse::<u64>().ok());
            // A name without a time (a crash's leftovers) is due at once.
            at.is_none_or(|at| at.saturating_add(self.retention.as_secs()) <= now)
        };
        let graves = std::fs::read_dir(&removed).into_iter().flatten().flatten();
        for grave in graves.filter(|g| due(&g.file_name().to_string_lossy())) {
            if let Err(e) = std::fs::remove_dir_all(grave.path())
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %grave.path().display(), "cannot delete a removed volume: {e}");
            }
        }
    }
}

#[cfg(test)]
#[path = "volumes_tests.rs"]
pub(crate) mod tests;
