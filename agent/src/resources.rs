//! What this machine can offer.

use std::path::Path;

use mezzo_proto::resources::Resources;
use mezzo_proto::v1;

use crate::AgentError;

const MIB: u64 = 1024 * 1024;

/// Detects the agent's resources: every cpu, total RAM less 10% (at least
/// 256 MiB kept for the system), 90% of the free space of the work dir's
/// filesystem, and ports 31000-32000.
pub fn detect_resources(work_dir: &Path) -> Result<Resources, AgentError> {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;

    let info = nix::sys::sysinfo::sysinfo().map_err(|source| AgentError::System {
        what: "sysinfo",
        path: work_dir.to_owned(),
        source,
    })?;
    let total_mem = info.ram_total() / MIB;
    let kept = (total_mem / 10).max(256);
    let mem = if total_mem > kept {
        total_mem - kept
    } else {
        total_mem / 2
    };

    // The work dir may not exist yet: measure the nearest existing ancestor.
    let probe = work_dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    let fs = nix::sys::statvfs::statvfs(probe).map_err(|source| AgentError::System {
        what: "filesystem statistics",
        path: probe.to_owned(),
        source,
    })?;
    let free = fs.blocks_available() as u64 * fs.fragment_size() as u64 / MIB;
    let disk = free - free / 10;

    let scalar = |name: &str, value: f64| v1::Resource {
        name: name.to_owned(),
        scalar: value,
        ..Default::default()
    };
    let mut list = vec![scalar("cpus", cpus)];
    // A zero-sized resource is refused by the validation; leave it out.
    if mem > 0 {
        list.push(scalar("mem", mem as f64));
    }
    if disk > 0 {
        list.push(scalar("disk", disk as f64));
    }
    list.push(v1::Resource {
        name: "ports".to_owned(),
        ranges: vec![v1::Range {
            begin: 31000,
            end: 32000,
        }],
        ..Default::default()
    });
    Ok(Resources::from_proto(&list)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_positive_cpus_mem_disk() -> Result<(), AgentError> {
        let dir = tempfile::tempdir().map_err(AgentError::io("create", "tempdir"))?;
        let r = detect_resources(&dir.path().join("not-yet-created"))?;
        assert!(r.cpus.0 >= 1000, "{r}");
        assert!(r.mem.0 > 0, "{r}");
        assert!(r.disk.0 > 0, "{r}");
        assert_eq!(r.port_count(), 1001);
        Ok(())
    }
}
