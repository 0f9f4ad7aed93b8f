//! cgroup v2: one unified hierarchy. Controllers must be enabled in the
//! `cgroup.subtree_control` of every ancestor of a cgroup that uses them,
//! so `create` enables cpu, memory and pids from the root down to the
//! parent. Limits, freezing, joining, `pids.current` and `cgroup.kill` go
//! through cgroups-rs's controllers (over [`Layout::V2`]); what stays by
//! hand says why where it is. v2 has no devices controller: the agent's
//! parent cgroup gets an eBPF device filter instead (`devices.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cgroups_rs::CgroupPid;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::error::ErrorKind as LibErrorKind;
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{self as lib, MaxValue};

use super::devices;
use super::layout::{Layout, Writer, controller, saturating_i64};
use super::loopback::{self, LoopbackFilter};
use super::{
    CPU_PERIOD_US, Cgroup, CgroupBackend, CgroupError, CgroupVersion, Freezer, Limits, Usage, cgroup_path, child_dirs,
    keyed, keyed_required, kill_all_with, mkdir_all, mkdir_leaf, read_file, read_procs, rmdir_retry, wait_empty,
    write_file,
};

/// Controllers a container cgroup needs (the freezer is built in).
const REQUIRED: [&str; 3] = ["cpu", "memory", "pids"];

/// cgroup v2, rooted at the unified mount.
#[derive(Debug, Clone)]
pub struct V2Backend {
    root: PathBuf,
    /// For the limits, written on the launch path.
    writer: Writer,
    /// The device filter (and the loopback filter) are attached to the
    /// parent (once per agent: the containers below it all share them, as
    /// v1's devices cgroup).
    devices_ready: Arc<AtomicBool>,
    /// What containers may reach on loopback; `None`: anything.
    loopback: Option<Arc<LoopbackFilter>>,
}

impl V2Backend {
    /// A backend if `root` offers every controller we need; otherwise the
    /// missing ones. By hand: cgroups-rs reads the controllers of
    /// `/sys/fs/cgroup` only.
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
        V2Backend {
            root: root.to_owned(),
            writer: Writer::for_mount(root),
            devices_ready: Arc::new(AtomicBool::new(false)),
            loopback: None,
        }
    }

    /// Attaches the device filter and the loopback filter to `parent_dir`
    /// (or takes an earlier agent's loopback filter off) unless this
    /// backend has (`made`: the directory is new, so whatever was attached
    /// before went with the old one). Before any container is made below
    /// it, so none runs unfiltered. A directory that is not on a cgroup2
    /// file system (the unit tests' fake hierarchies) cannot hold one, nor
    /// contain anything: the agent logs it.
    pub(super) fn restrict_parent(&self, parent_dir: &Path, made: bool) -> Result<(), CgroupError> {
        if made || !self.devices_ready.load(Ordering::Acquire) {
            let fs =
                nix::sys::statfs::statfs(parent_dir).map_err(|e| CgroupError::io("statfs", parent_dir)(e.into()))?;
            if fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC {
                devices::restrict_v2(parent_dir)?;
                match &self.loopback {
                    Some(filter) => filter.attach(parent_dir)?,
                    None => loopback::detach(parent_dir)?,
                }
            } else {
                tracing::warn!(dir = %parent_dir.display(), "not a cgroup2 directory: no device filter attached");
            }
            self.devices_ready.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Enables cpu, memory and pids for the children of `dir`.
    ///
    /// By hand: cgroups-rs enables the controllers that `/sys/fs/cgroup`
    /// lists (whatever the root), one write each, and ignores failures, so
    /// a missing controller would only show later as a missing file.
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
        let mut made = false;
        mkdir_all(&self.root, &parent_dir, |dir| {
            made |= dir == parent_dir;
            Ok(())
        })?;
        self.restrict_parent(&parent_dir, made)?;
        // Enable from the root down on every create, not only for new
        // directories: an agent restarted on a half-set-up parent heals it.
        let mut cur = self.root.clone();
        Self::enable_controllers(&cur)?;
        for c in parent_dir.strip_prefix(&self.root).unwrap_or(&parent_dir).components() {
            cur.push(c);
            Self::enable_controllers(&cur)?;
        }
        // By hand: cgroups-rs's create is `create_dir_all`, which cannot
        // tell a new cgroup from one already there.
        mkdir_leaf(&dir)?;
        let cg = V2Cgroup::new(&self.root, &format!("{parent}/{name}"), self.writer);
        if let Err(e) = cg.apply(limits) {
            let _ = std::fs::remove_dir(&cg.dir);
            return Err(e);
        }
        Ok(Box::new(cg))
    }

    fn open(&self, parent: &str, name: &str) -> Result<Option<Box<dyn Cgroup>>, CgroupError> {
        cgroup_path(&self.root, parent, Some(name))?;
        let cg = V2Cgroup::new(&self.root, &format!("{parent}/{name}"), self.writer);
        Ok(cg.handle.exists().then(|| Box::new(cg) as Box<dyn Cgroup>))
    }

    /// By hand: cgroups-rs has no listing of child cgroups.
    fn list(&self, parent: &str) -> Result<Vec<String>, CgroupError> {
        let mut names = child_dirs(&cgroup_path(&self.root, parent, None)?)?;
        names.sort();
        Ok(names)
    }

    /// By hand: see [`rmdir_retry`].
    fn remove_parent(&self, parent: &str) -> Result<(), CgroupError> {
        rmdir_retry(&cgroup_path(&self.root, parent, None)?)
    }

    fn filter_loopback(&mut self, filter: Option<LoopbackFilter>) -> Option<String> {
        self.loopback = filter.map(Arc::new);
        None
    }
}

/// One v2 cgroup directory.
#[derive(Debug)]
pub(super) struct V2Cgroup {
    pub(super) dir: PathBuf,
    /// cgroups-rs's handle on it, over [`Layout::V2`].
    handle: lib::Cgroup,
    writer: Writer,
}

/// v1 `cpu.shares` (2..=262144) to v2 `cpu.weight` (1..=10000), the
/// mapping runc and youki use.
pub(super) fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

impl V2Cgroup {
    /// A handle on `<root>/<rel>`, with `rel` already validated, whose
    /// limits go through `writer`.
    pub(super) fn new(root: &Path, rel: &str, writer: Writer) -> V2Cgroup {
        V2Cgroup {
            dir: root.join(rel),
            handle: Layout::V2 { root: root.to_owned() }.load(rel),
            writer,
        }
    }

    pub(super) fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        let dir = &self.dir;
        let cpu: &CpuController = controller(&self.handle, dir)?;
        let weight = shares_to_weight(limits.shares());
        self.writer.set(dir, "cpu.weight", &weight, || cpu.set_shares(weight))?;
        // cgroups-rs writes "max" for a quota that is not positive.
        let quota = limits.quota_us().unwrap_or(-1);
        let shown = if quota > 0 { quota.to_string() } else { "max".to_owned() };
        self.writer
            .set(dir, "cpu.max", &format!("{shown} {CPU_PERIOD_US}"), || {
                cpu.set_cfs_quota_and_period(Some(quota), Some(CPU_PERIOD_US))
            })?;
        let mem: &MemController = controller(&self.handle, dir)?;
        match limits.memory_bytes {
            Some(bytes) => {
                let bytes = saturating_i64(bytes);
                self.writer.set(dir, "memory.max", &bytes, || mem.set_limit(bytes))?;
                // No swapping past the limit (as v1's memsw limit).
                let swap = "memory.swap.max";
                if dir.join(swap).exists() {
                    self.writer.set(dir, swap, &0, || mem.set_memswap_limit(0))?;
                }
            }
            // cgroups-rs writes "max" for -1 on v2.
            None => self.writer.set(dir, "memory.max", &"max", || mem.set_limit(-1))?,
        }
        let pids: &PidController = controller(&self.handle, dir)?;
        let max = limits
            .pids_max
            .map_or(MaxValue::Max, |n| MaxValue::Value(saturating_i64(n)));
        self.writer.set(dir, "pids.max", &max, || pids.set_pid_max(max))
    }

    fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

/// The v2 freezer: cgroups-rs writes `cgroup.freeze`; whether the kernel
/// is done freezing is read by hand from `cgroup.events`, since
/// cgroups-rs's `state()` reads back `cgroup.freeze`, the request.
pub(super) struct V2Freezer<'a>(pub(super) &'a Path);

impl Freezer for V2Freezer<'_> {
    fn request(&self, frozen: bool) -> Result<(), CgroupError> {
        let freezer = FreezerController::new(self.0.to_owned(), PathBuf::new(), true);
        if frozen {
            Writer::CHECKED.set(self.0, "cgroup.freeze", &1, || freezer.freeze())
        } else {
            Writer::CHECKED.set(self.0, "cgroup.freeze", &0, || freezer.thaw())
        }
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
        let tgid = CgroupPid::from(u64::from(pid));
        Writer::CHECKED.set(&self.dir, "cgroup.procs", &pid, || self.handle.add_task_by_tgid(tgid))
    }

    /// By hand: cgroups-rs's `procs()` reads an unreadable `cgroup.procs`
    /// as empty and a bad line as pid 0, and `kill_all` must never take a
    /// cgroup it cannot read for an empty one.
    fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let mut pids = read_procs(&self.procs())?;
        pids.sort_unstable();
        Ok(pids)
    }

    /// By hand but `pids.current`: cgroups-rs's `cpu()` and
    /// `memory_stat()` turn a file they cannot read into empty text or
    /// zeros, and the latter reads 5 files for the 1 we need, every second
    /// per container.
    fn usage(&self) -> Result<Usage, CgroupError> {
        let cpu_path = self.dir.join("cpu.stat");
        let usec = keyed_required(&cpu_path, &read_file(&cpu_path)?, "usage_usec")?;
        let mem_path = self.dir.join("memory.stat");
        let mem = read_file(&mem_path)?;
        let pids: &PidController = controller(&self.handle, &self.dir)?;
        Ok(Usage {
            cpu_time: Duration::from_micros(usec),
            memory_rss: keyed_required(&mem_path, &mem, "anon")?,
            memory_cache: keyed_required(&mem_path, &mem, "file")?,
            pids: pids
                .get_pid_current()
                .map_err(CgroupError::lib("read", &self.dir.join("pids.current")))?,
        })
    }

    /// By hand: cgroups-rs has no reader for `memory.events`.
    fn oom_killed(&self) -> Result<bool, CgroupError> {
        let path = self.dir.join("memory.events");
        Ok(keyed_required(&path, &read_file(&path)?, "oom_kill")? > 0)
    }

    /// cgroups-rs writes `cgroup.kill` (Linux 5.14+: the kernel kills
    /// everything, forks included); waiting until the cgroup is empty, and
    /// freeze-and-kill on older kernels, are ours.
    fn kill_all(&self) -> Result<(), CgroupError> {
        let list = || self.pids();
        if list()?.is_empty() {
            return Ok(());
        }
        match self.handle.kill() {
            Ok(()) => wait_empty(&self.dir, &list),
            // No `cgroup.kill`: an older kernel.
            Err(e) if *e.kind() == LibErrorKind::InvalidOperation => {
                kill_all_with(&self.dir, &V2Freezer(&self.dir), &list)
            }
            Err(e) => Err(CgroupError::lib("write \"1\" to", &self.dir.join("cgroup.kill"))(e)),
        }
    }

    /// By hand: see [`rmdir_retry`].
    fn destroy(&self) -> Result<(), CgroupError> {
        if !self.dir.is_dir() {
            return Ok(());
        }
        self.kill_all()?;
        rmdir_retry(&self.dir)
    }
}
