//! cgroup v2: one unified hierarchy. Controllers must be enabled in the
//! `cgroup.subtree_control` of every ancestor of a cgroup that uses them,
//! so `create` enables cpu, memory and pids from the root down to the
//! parent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    CPU_PERIOD, Cgroup, CgroupBackend, CgroupError, CgroupVersion, Freezer, Limits, Usage, cgroup_path, child_dirs,
    keyed, keyed_required, kill_all_with, mkdir_all, mkdir_leaf, read_file, read_procs, read_u64, rmdir_retry,
    wait_empty, write_file,
};

/// Controllers a container cgroup needs (the freezer is built in).
const REQUIRED: [&str; 3] = ["cpu", "memory", "pids"];

/// cgroup v2, rooted at the unified mount.
#[derive(Debug, Clone)]
pub struct V2Backend {
    root: PathBuf,
}

impl V2Backend {
    /// A backend if `root` offers every controller we need; otherwise the
    /// missing ones.
    pub(super) fn probe(root: &Path) -> Result<Result<Self, String>, CgroupError> {
        let available = read_file(&root.join("cgroup.controllers"))?;
        let have: Vec<&str> = available.split_whitespace().collect();
        let missing: Vec<&str> = REQUIRED.iter().copied().filter(|c| !have.contains(c)).collect();
        if !missing.is_empty() {
            return Ok(Err(format!("controllers {}", missing.join(", "))));
        }
        Ok(Ok(Self::at(root)))
    }

    /// A backend over the unified hierarchy at `root` without checking it.
    pub fn at(root: &Path) -> Self {
        V2Backend { root: root.to_owned() }
    }

    /// Enables cpu, memory and pids for the children of `dir`.
    pub(super) fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
        let path = dir.join("cgroup.subtree_control");
        let enabled = read_file(&path)?;
        let enabled: Vec<&str> = enabled.split_whitespace().collect();
        let wanted: Vec<String> = REQUIRED
            .iter()
            .filter(|c| !enabled.contains(c))
            .map(|c| format!("+{c}"))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        write_file(&path, &wanted.join(" "))
    }
}

impl CgroupBackend for V2Backend {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn create(&self, parent: &str, name: &str, limits: &Limits) -> Result<Box<dyn Cgroup>, CgroupError> {
        let dir = cgroup_path(&self.root, parent, Some(name))?;
        limits.validate(&dir)?;
        let parent_dir = cgroup_path(&self.root, parent, None)?;
        mkdir_all(&self.root, &parent_dir, |_| Ok(()))?;
        // Enable from the root down on every create, not only for new
        // directories: an agent restarted on a half-set-up parent heals it.
        let mut cur = self.root.clone();
        Self::enable_controllers(&cur)?;
        for c in parent_dir.strip_prefix(&self.root).unwrap_or(&parent_dir).components() {
            cur.push(c);
            Self::enable_controllers(&cur)?;
        }
        mkdir_leaf(&dir)?;
        let cg = V2Cgroup { dir };
        if let Err(e) = cg.apply(limits) {
            let _ = std::fs::remove_dir(&cg.dir);
            return Err(e);
        }
        Ok(Box::new(cg))
    }

    fn open(&self, parent: &str, name: &str) -> Result<Option<Box<dyn Cgroup>>, CgroupError> {
        let dir = cgroup_path(&self.root, parent, Some(name))?;
        Ok(dir.is_dir().then(|| Box::new(V2Cgroup { dir }) as Box<dyn Cgroup>))
    }

    fn list(&self, parent: &str) -> Result<Vec<String>, CgroupError> {
        let mut names = child_dirs(&cgroup_path(&self.root, parent, None)?)?;
        names.sort();
        Ok(names)
    }

    fn remove_parent(&self, parent: &str) -> Result<(), CgroupError> {
        rmdir_retry(&cgroup_path(&self.root, parent, None)?)
    }
}

/// One v2 cgroup directory.
#[derive(Debug, Clone)]
pub(super) struct V2Cgroup {
    pub(super) dir: PathBuf,
}

/// v1 `cpu.shares` (2..=262144) to v2 `cpu.weight` (1..=10000), the
/// mapping runc and youki use.
pub(super) fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

impl V2Cgroup {
    pub(super) fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        write_file(
            &self.dir.join("cpu.weight"),
            &shares_to_weight(limits.shares()).to_string(),
        )?;
        let quota = limits.quota_us().map_or_else(|| "max".to_owned(), |q| q.to_string());
        write_file(
            &self.dir.join("cpu.max"),
            &format!("{quota} {}", CPU_PERIOD.as_micros()),
        )?;
        match limits.memory_bytes {
            Some(bytes) => {
                write_file(&self.dir.join("memory.max"), &bytes.to_string())?;
                // No swapping past the limit (as v1's memsw limit).
                let swap = self.dir.join("memory.swap.max");
                if swap.exists() {
                    write_file(&swap, "0")?;
                }
            }
            None => write_file(&self.dir.join("memory.max"), "max")?,
        }
        let pids = limits.pids_max.map_or_else(|| "max".to_owned(), |n| n.to_string());
        write_file(&self.dir.join("pids.max"), &pids)
    }

    fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

pub(super) struct V2Freezer<'a>(pub(super) &'a Path);

impl Freezer for V2Freezer<'_> {
    fn request(&self, frozen: bool) -> Result<(), CgroupError> {
        write_file(&self.0.join("cgroup.freeze"), if frozen { "1" } else { "0" })
    }

    fn is_frozen(&self) -> Result<bool, CgroupError> {
        let path = self.0.join("cgroup.events");
        Ok(keyed(&path, &read_file(&path)?, "frozen")? == Some(1))
    }
}

impl Cgroup for V2Cgroup {
    fn procs_files(&self) -> Vec<PathBuf> {
        vec![self.procs()]
    }

    fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        write_file(&self.procs(), &pid.to_string())
    }

    fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let mut pids = read_procs(&self.procs())?;
        pids.sort_unstable();
        Ok(pids)
    }

    fn usage(&self) -> Result<Usage, CgroupError> {
        let cpu_path = self.dir.join("cpu.stat");
        let usec = keyed_required(&cpu_path, &read_file(&cpu_path)?, "usage_usec")?;
        let mem_path = self.dir.join("memory.stat");
        let mem = read_file(&mem_path)?;
        Ok(Usage {
            cpu_time: Duration::from_micros(usec),
            memory_rss: keyed_required(&mem_path, &mem, "anon")?,
            memory_cache: keyed_required(&mem_path, &mem, "file")?,
            pids: read_u64(&self.dir.join("pids.current"))?,
        })
    }

    fn oom_killed(&self) -> Result<bool, CgroupError> {
        let path = self.dir.join("memory.events");
        Ok(keyed_required(&path, &read_file(&path)?, "oom_kill")? > 0)
    }

    fn kill_all(&self) -> Result<(), CgroupError> {
        let list = || self.pids();
        let kill = self.dir.join("cgroup.kill");
        if kill.exists() {
            // Linux 5.14+: the kernel kills everything, forks included.
            if list()?.is_empty() {
                return Ok(());
            }
            write_file(&kill, "1")?;
            return wait_empty(&self.dir, &list);
        }
        kill_all_with(&self.dir, &V2Freezer(&self.dir), &list)
    }

    fn destroy(&self) -> Result<(), CgroupError> {
        if !self.dir.is_dir() {
            return Ok(());
        }
        self.kill_all()?;
        rmdir_retry(&self.dir)
    }
}
