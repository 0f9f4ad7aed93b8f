//! Mesos' persistent volumes as Mezzo's (docs/mesos-api.md, "Persistent
//! volumes"): a `disk` resource whose `disk.persistence.id` names a volume
//! and whose `disk.volume` says where a task mounts it. Only the root disk
//! (no `disk.source`), unshared, read-write or read-only. The resource's
//! amount and reservation are read by [`convert`](super::convert), which
//! uses this module for the disk's details.

use crate::v1;

use super::types as m;

/// A persistent volume named by a Mesos resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistentDisk {
    pub id: String,
    /// Where a task mounts it; empty when the resource has no `volume`.
    pub container_path: String,
    pub read_only: bool,
}

impl PersistentDisk {
    /// The mount of a task's resource: at its `container_path` (relative:
    /// beneath the sandbox, as on Mesos).
    pub fn mount(self) -> Result<v1::Mount, String> {
        if self.container_path.is_empty() {
            return Err(format!(
                "persistent volume {}: `disk.volume.container_path` says where to mount it",
                self.id
            ));
        }
        Ok(v1::Mount {
            container_path: self.container_path,
            read_only: self.read_only,
            volume_id: self.id,
            host_volume: String::new(),
        })
    }
}

/// The persistent volume `r` names, `None` for a resource without
/// `disk.persistence` (plain disk). Refuses what Mezzo has no volume for:
/// disk sources, shared resources, a disk volume that is not persistent
/// (Mesos' ephemeral disk volumes), disk details on another resource.
pub fn persistent_disk(r: &m::Resource) -> Result<Option<PersistentDisk>, String> {
    let name = &r.name;
    if r.shared.is_some() {
        return Err(format!(
            "resource {name}: shared resources (shared persistent volumes) are not supported by Mezzo"
        ));
    }
    let Some(disk) = &r.disk else { return Ok(None) };
    if name != "disk" {
        return Err(format!("resource {name}: only `disk` resources have disk information"));
    }
    if let Some(source) = &disk.source {
        let kind = source.kind.as_deref().unwrap_or("UNKNOWN");
        return Err(format!(
            "resource disk: disk source {kind} is not supported by Mezzo (only the agent's root disk, no `source`)"
        ));
    }
    let Some(persistence) = &disk.persistence else {
        if disk.volume.is_some() {
            return Err(
                "resource disk: a disk volume without `persistence` (an ephemeral volume) \
                        is not supported by Mezzo: give `disk.persistence.id`"
                    .into(),
            );
        }
        return Ok(None);
    };
    let id = persistence.id.clone();
    if id.is_empty() {
        return Err("resource disk: `disk.persistence.id` is empty".into());
    }
    let (container_path, read_only) = match &disk.volume {
        None => (String::new(), false),
        Some(v) => {
            if v.image.is_some() || v.source.is_some() {
                return Err(format!(
                    "persistent volume {id}: `disk.volume` with an image or a source is not supported by Mezzo"
                ));
            }
            let read_only = match v.mode.as_deref() {
                None | Some("RW") => false,
                Some("RO") => true,
                Some(other) => return Err(format!("persistent volume {id}: unknown mode {other:?} (RW or RO)")),
            };
            (v.container_path.clone(), read_only)
        }
    };
    Ok(Some(PersistentDisk {
        id,
        container_path,
        read_only,
    }))
}

/// The disk details of a Mezzo volume in an offer. Mezzo keeps no mount
/// path with a volume: its id is the `container_path` (relative, so
/// beneath the sandbox), read-write.
pub fn disk_out(v: &v1::Volume) -> m::DiskInfo {
    m::DiskInfo {
        persistence: Some(m::Persistence {
            id: v.id.clone(),
            principal: (!v.principal.is_empty()).then(|| v.principal.clone()),
        }),
        volume: Some(m::Volume {
            mode: Some("RW".into()),
            container_path: v.id.clone(),
            ..Default::default()
        }),
        source: None,
    }
}

#[cfg(test)]
#[path = "volumes_tests.rs"]
mod tests;
