//! cgroup v1: one hierarchy per controller, mounted at `<root>/<controller>`.
//!
//! We use the cpu, cpuacct, memory, pids and freezer hierarchies; where
//! two are co-mounted (`cpu,cpuacct` with `cpu` and `cpuacct` symlinks)
//! the cgroup is created once in the shared hierarchy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    CPU_PERIOD, Cgroup, CgroupBackend, CgroupError, CgroupVersion, Freezer, Limits, Usage, cgroup_path, child_dirs,
    keyed, keyed_required, kill_all_with, mkdir_all, mkdir_leaf, read_file, read_procs, read_u64, rmdir_retry,
    write_file,
};

/// Controllers we need, each with a file its hierarchy root has (pids and
/// freezer have none at the root, so only `cgroup.procs` is checked).
const REQUIRED: [(&str, Option<&str>); 5] = [
    ("cpu", Some("cpu.shares")),
    ("cpuacct", Some("cpuacct.usage")),
    ("memory", Some("memory.limit_in_bytes")),
    ("pids", None),
    ("freezer", None),
];

/// `memory.limit_in_bytes` reads back as this (page-rounded i64::MAX) when
/// unlimited; anything that large is no limit.
const UNLIMITED: u64 = 1 << 62;

/// The mount point of each controller we use.
#[derive(Debug, Clone)]
struct Mounts {
    cpu: PathBuf,
    cpuacct: PathBuf,
    memory: PathBuf,
    pids: PathBuf,
    freezer: PathBuf,
}

impl Mounts {
    fn all(&self) -> [&PathBuf; 5] {
        [&self.cpu, &self.cpuacct, &self.memory, &self.pids, &self.freezer]
    }

    /// The distinct hierarchies, so co-mounted controllers get one dir.
    fn unique(&self) -> Vec<PathBuf> {
        let mut seen: Vec<(PathBuf, PathBuf)> = Vec::new();
        for m in self.all() {
            let canon = m.canonicalize().unwrap_or_else(|_| m.clone());
            if !seen.iter().any(|(c, _)| *c == canon) {
                seen.push((canon, m.clone()));
            }
        }
        seen.into_iter().map(|(_, m)| m).collect()
    }
}

/// cgroup v1, with each controller's hierarchy under one root.
#[derive(Debug, Clone)]
pub struct V1Backend {
    mounts: Mounts,
    hierarchies: Vec<PathBuf>,
}

impl V1Backend {
    /// A backend if `root/<controller>` is a cgroup hierarchy for every
    /// controller we need; otherwise the missing ones.
    pub(super) fn probe(root: &Path) -> Result<Result<Self, String>, CgroupError> {
        let missing: Vec<&str> = REQUIRED
            .iter()
            .filter(|(name, marker)| {
                let dir = root.join(name);
                !dir.join("cgroup.procs").is_file() || marker.is_some_and(|m| !dir.join(m).is_file())
            })
            .map(|(name, _)| *name)
            .collect();
        if !missing.is_empty() {
            return Ok(Err(format!("controllers {}", missing.join(", "))));
        }
        Ok(Ok(Self::at(root)))
    }

    /// A backend over `root/<controller>` without checking them.
    pub fn at(root: &Path) -> Self {
        let mounts = Mounts {
            cpu: root.join("cpu"),
            cpuacct: root.join("cpuacct"),
            memory: root.join("memory"),
            pids: root.join("pids"),
            freezer: root.join("freezer"),
        };
        let hierarchies = mounts.unique();
        V1Backend { mounts, hierarchies }
    }

    fn cgroup(&self, parent: &str, name: &str) -> Result<V1Cgroup, CgroupError> {
        let at = |m: &Path| cgroup_path(m, parent, Some(name));
        Ok(V1Cgroup {
            cpu: at(&self.mounts.cpu)?,
            cpuacct: at(&self.mounts.cpuacct)?,
            memory: at(&self.mounts.memory)?,
            pids: at(&self.mounts.pids)?,
            freezer: at(&self.mounts.freezer)?,
            dirs: self.hierarchies.iter().map(|h| at(h)).collect::<Result<_, _>>()?,
        })
    }
}

impl CgroupBackend for V1Backend {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn create(&self, parent: &str, name: &str, limits: &Limits) -> Result<Box<dyn Cgroup>, CgroupError> {
        let cg = self.cgroup(parent, name)?;
        limits.validate(&cg.memory)?;
        let mut created = Vec::new();
        let made = (|| {
            for (h, dir) in self.hierarchies.iter().zip(&cg.dirs) {
                let parent_dir = cgroup_path(h, parent, None)?;
                mkdir_all(h, &parent_dir, |_| Ok(()))?;
                mkdir_leaf(dir)?;
                created.push(dir.clone());
            }
            cg.apply(limits)
        })();
        if let Err(e) = made {
            // Leave nothing half-made behind; nothing has joined it yet.
            for dir in created.iter().rev() {
                let _ = std::fs::remove_dir(dir);
            }
            return Err(e);
        }
        Ok(Box::new(cg))
    }

    fn open(&self, parent: &str, name: &str) -> Result<Option<Box<dyn Cgroup>>, CgroupError> {
        let cg = self.cgroup(parent, name)?;
        if cg.dirs.iter().any(|d| d.is_dir()) {
            Ok(Some(Box::new(cg)))
        } else {
            Ok(None)
        }
    }

    fn list(&self, parent: &str) -> Result<Vec<String>, CgroupError> {
        let mut names = Vec::new();
        for h in &self.hierarchies {
            names.extend(child_dirs(&cgroup_path(h, parent, None)?)?);
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn remove_parent(&self, parent: &str) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            rmdir_retry(&cgroup_path(h, parent, None)?)?;
        }
        Ok(())
    }
}

/// A cgroup in each v1 hierarchy.
#[derive(Debug, Clone)]
struct V1Cgroup {
    cpu: PathBuf,
    cpuacct: PathBuf,
    memory: PathBuf,
    pids: PathBuf,
    freezer: PathBuf,
    /// One per distinct hierarchy.
    dirs: Vec<PathBuf>,
}

impl V1Cgroup {
    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        write_file(&self.cpu.join("cpu.shares"), &limits.shares().to_string())?;
        // Only called on a fresh cgroup, whose CFS period is already 100 ms
        // and quota -1 (none): without a quota there is nothing to write
        // (two control-file writes less per launch).
        if let Some(quota) = limits.quota_us() {
            write_file(&self.cpu.join("cpu.cfs_period_us"), &CPU_PERIOD.as_micros().to_string())?;
            write_file(&self.cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        if let Some(bytes) = limits.memory_bytes {
            let value = bytes.to_string();
            write_file(&self.memory.join("memory.limit_in_bytes"), &value)?;
            // With swap accounting, cap memory+swap at the same value so
            // the limit cannot be escaped by swapping.
            let memsw = self.memory.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write_file(&memsw, &value)?;
            }
        }
        let pids = limits.pids_max.map_or_else(|| "max".to_owned(), |n| n.to_string());
        write_file(&self.pids.join("pids.max"), &pids)
    }

    fn list(&self) -> Result<Vec<u32>, CgroupError> {
        let mut pids = Vec::new();
        for dir in &self.dirs {
            let file = dir.join("cgroup.procs");
            if dir.is_dir() {
                pids.extend(read_procs(&file)?);
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }
}

struct V1Freezer<'a>(&'a Path);

impl Freezer for V1Freezer<'_> {
    fn request(&self, frozen: bool) -> Result<(), CgroupError> {
        let state = if frozen { "FROZEN" } else { "THAWED" };
        write_file(&self.0.join("freezer.state"), state)
    }

    fn is_frozen(&self) -> Result<bool, CgroupError> {
        Ok(read_file(&self.0.join("freezer.state"))?.trim() == "FROZEN")
    }
}

impl Cgroup for V1Cgroup {
    fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        for file in self.procs_files() {
            write_file(&file, &pid.to_string())?;
        }
        Ok(())
    }

    fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        self.list()
    }

    fn usage(&self) -> Result<Usage, CgroupError> {
        let cpu_ns = read_u64(&self.cpuacct.join("cpuacct.usage"))?;
        let stat_path = self.memory.join("memory.stat");
        let stat = read_file(&stat_path)?;
        // total_* include descendants; plain rss/cache are this level only.
        let rss = match keyed(&stat_path, &stat, "total_rss")? {
            Some(v) => v,
            None => keyed_required(&stat_path, &stat, "rss")?,
        };
        let cache = match keyed(&stat_path, &stat, "total_cache")? {
            Some(v) => v,
            None => keyed_required(&stat_path, &stat, "cache")?,
        };
        Ok(Usage {
            cpu_time: Duration::from_nanos(cpu_ns),
            memory_rss: rss,
            memory_cache: cache,
            pids: read_u64(&self.pids.join("pids.current"))?,
        })
    }

    fn oom_killed(&self) -> Result<bool, CgroupError> {
        let path = self.memory.join("memory.oom_control");
        let contents = read_file(&path)?;
        if let Some(kills) = keyed(&path, &contents, "oom_kill")? {
            return Ok(kills > 0);
        }
        // Kernels before 4.13 have no counter: infer an OOM kill from the
        // limit having been hit with usage peaking at (near) the limit.
        let failcnt = read_u64(&self.memory.join("memory.failcnt"))?;
        let limit = read_u64(&self.memory.join("memory.limit_in_bytes"))?;
        let peak = read_u64(&self.memory.join("memory.max_usage_in_bytes"))?;
        Ok(failcnt > 0 && limit < UNLIMITED && peak >= limit - limit / 100)
    }

    fn kill_all(&self) -> Result<(), CgroupError> {
        if !self.freezer.is_dir() {
            // Only possible for a half-present cgroup found by `open`.
            return kill_all_with(&self.freezer, &NoFreezer, &|| self.list());
        }
        kill_all_with(&self.freezer, &V1Freezer(&self.freezer), &|| self.list())
    }

    fn destroy(&self) -> Result<(), CgroupError> {
        self.kill_all()?;
        for dir in &self.dirs {
            rmdir_retry(dir)?;
        }
        Ok(())
    }
}

/// Stands in when the freezer directory is gone: signal without freezing.
struct NoFreezer;

impl Freezer for NoFreezer {
    fn request(&self, _frozen: bool) -> Result<(), CgroupError> {
        Ok(())
    }

    fn is_frozen(&self) -> Result<bool, CgroupError> {
        Ok(true)
    }
}
