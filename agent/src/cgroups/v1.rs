//! cgroup v1: one hierarchy per controller, mounted at `<root>/<controller>`.
//!
//! We use the cpu, cpuacct, memory, pids and freezer hierarchies; where
//! two are co-mounted (`cpu,cpuacct` with `cpu` and `cpuacct` symlinks)
//! the cgroup is created once in the shared hierarchy. Limits, the
//! freezer, joining and `pids.current` go through cgroups-rs's controllers
//! (over [`Layout::V1`]); what stays by hand says why where it is.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cgroups_rs::CgroupPid;
use cgroups_rs::FreezerState;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{self as lib, Controller, MaxValue};

use super::devices;
use super::layout::{Layout, Mounts, Writer, controller, saturating_i64};
use super::loopback::{self, LoopbackFilter};
use super::{
    CPU_PERIOD_US, Cgroup, CgroupBackend, CgroupError, CgroupVersion, Freezer, Limits, Usage, cgroup_path, child_dirs,
    keyed, keyed_required, kill_all_with, mkdir_all, mkdir_leaf, read_file, read_procs, read_u64, rmdir_retry,
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

/// cgroup v1, with each controller's hierarchy under one root.
#[derive(Debug, Clone)]
pub struct V1Backend {
    layout: Layout,
    mounts: Mounts,
    /// One per distinct hierarchy.
    hierarchies: Vec<PathBuf>,
    /// For the limits, written on the launch path.
    writer: Writer,
    /// The devices hierarchy, if mounted: containers join the agent's
    /// parent there, which allows only [`devices::ALLOWED`] (one cgroup for
    /// all, so no per-container mkdir).
    devices: Option<PathBuf>,
    /// The parent's device list was checked (and written if it differed).
    devices_ready: Arc<AtomicBool>,
    /// The unified (v2) hierarchy of a hybrid host, `<root>/unified`, once
    /// [`CgroupBackend::filter_loopback`] found it: cgroup eBPF programs
    /// attach there only.
    unified: Option<PathBuf>,
    /// What containers may reach on loopback; `Some`: containers join the
    /// agent's parent in `unified`, which holds the filter.
    loopback: Option<Arc<LoopbackFilter>>,
    /// The filter was put on (or taken off) the parent in `unified`.
    loopback_ready: Arc<AtomicBool>,
    root: PathBuf,
}

impl V1Backend {
    /// A backend if `root/<controller>` is a cgroup hierarchy for every
    /// controller we need; otherwise the missing ones. By hand: cgroups-rs
    /// finds v1 hierarchies only through `/proc/self/mountinfo`.
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
        let mounts = Mounts::under(root);
        let devices = root.join("devices");
        V1Backend {
            layout: Layout::V1(mounts.clone()),
            hierarchies: mounts.unique(),
            writer: Writer::for_mount(&mounts.cpu),
            mounts,
            devices: devices.join("devices.allow").is_file().then_some(devices),
            devices_ready: Arc::new(AtomicBool::new(false)),
            unified: None,
            loopback: None,
            loopback_ready: Arc::new(AtomicBool::new(false)),
            root: root.to_owned(),
        }
    }

    /// A handle on `<parent>/<name>`; both are validated here.
    fn cgroup(&self, parent: &str, name: &str) -> Result<V1Cgroup, CgroupError> {
        let at = |m: &Path| cgroup_path(m, parent, Some(name));
        let dirs = self.hierarchies.iter().map(|h| at(h)).collect::<Result<_, _>>()?;
        Ok(V1Cgroup {
            cpuacct: at(&self.mounts.cpuacct)?,
            memory: at(&self.mounts.memory)?,
            pids: at(&self.mounts.pids)?,
            freezer: at(&self.mounts.freezer)?,
            dirs,
            devices: self
                .devices
                .as_ref()
                .map(|d| cgroup_path(d, parent, None).map(|p| p.join("cgroup.procs")))
                .transpose()?,
            unified: match (&self.unified, &self.loopback) {
                (Some(u), Some(_)) => Some(cgroup_path(u, parent, None)?.join("cgroup.procs")),
                _ => None,
            },
            handle: self.layout.load(&format!("{parent}/{name}")),
            writer: self.writer,
        })
    }

    /// Makes `parent` in every hierarchy if missing. By hand, as it runs on
    /// every launch: cgroups-rs's `create` is a `create_dir_all` per
    /// controller, a `mkdir` and a `stat` each, where one `mkdir` per
    /// hierarchy will do.
    fn create_parent(&self, parent: &str) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            mkdir_all(h, &cgroup_path(h, parent, None)?, |_| Ok(()))?;
        }
        if let Some(devices) = &self.devices
            && !self.devices_ready.load(Ordering::Acquire)
        {
            let dir = cgroup_path(devices, parent, None)?;
            mkdir_all(devices, &dir, |_| Ok(()))?;
            restrict_devices(&dir)?;
            self.devices_ready.store(true, Ordering::Release);
        }
        if let Some(unified) = &self.unified
            && !self.loopback_ready.load(Ordering::Acquire)
        {
            let dir = cgroup_path(unified, parent, None)?;
            match &self.loopback {
                Some(filter) => {
                    mkdir_all(unified, &dir, |_| Ok(()))?;
                    filter.attach(&dir)?;
                }
                None if dir.is_dir() => loopback::detach(&dir)?,
                None => {}
            }
            self.loopback_ready.store(true, Ordering::Release);
        }
        Ok(())
    }
}

/// Makes `dir`'s device list exactly [`devices::ALLOWED`], unless it is
/// already (a restarted agent: containers of the previous one are in it,
/// and a rewrite would deny them every device for a moment). By hand:
/// cgroups-rs's devices controller only adds and removes single rules.
fn restrict_devices(dir: &Path) -> Result<(), CgroupError> {
    let mut current: Vec<String> = read_file(&dir.join("devices.list"))?
        .lines()
        .map(str::to_owned)
        .collect();
    current.sort();
    let mut wanted: Vec<String> = devices::ALLOWED.iter().map(devices::v1_rule).collect();
    wanted.sort();
    if current == wanted {
        return Ok(());
    }
    let write = |file: &str, rule: &str| {
        let path = dir.join(file);
        std::fs::write(&path, rule).map_err(CgroupError::io("write", &path))
    };
    write("devices.deny", "a")?;
    for rule in &wanted {
        write("devices.allow", rule)?;
    }
    Ok(())
}

impl CgroupBackend for V1Backend {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn create(&self, parent: &str, name: &str, limits: &Limits) -> Result<Box<dyn Cgroup>, CgroupError> {
        let cg = self.cgroup(parent, name)?;
        limits.validate(&cg.memory)?;
        self.create_parent(parent)?;
        let mut created = Vec::new();
        let made = (|| {
            // By hand: cgroups-rs's create is `create_dir_all`, which cannot
            // tell a new cgroup from one already there.
            for dir in &cg.dirs {
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
        Ok(cg.handle.exists().then(|| Box::new(cg) as Box<dyn Cgroup>))
    }

    /// By hand: cgroups-rs has no listing of child cgroups.
    fn list(&self, parent: &str) -> Result<Vec<String>, CgroupError> {
        let mut names = Vec::new();
        for h in &self.hierarchies {
            names.extend(child_dirs(&cgroup_path(h, parent, None)?)?);
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// By hand: see [`rmdir_retry`].
    fn remove_parent(&self, parent: &str) -> Result<(), CgroupError> {
        for h in self.hierarchies.iter().chain(&self.devices).chain(&self.unified) {
            rmdir_retry(&cgroup_path(h, parent, None)?)?;
        }
        // A parent made again starts with every device allowed, and no filter.
        self.devices_ready.store(false, Ordering::Release);
        self.loopback_ready.store(false, Ordering::Release);
        Ok(())
    }

    fn filter_loopback(&mut self, filter: Option<LoopbackFilter>) -> Option<String> {
        let unified = self.root.join("unified");
        let is_v2 = nix::sys::statfs::statfs(&unified)
            .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
        self.unified = is_v2.then_some(unified);
        self.loopback = filter.map(Arc::new);
        (self.loopback.is_some() && !is_v2).then(|| {
            format!(
                "no cgroup2 hierarchy at {}/unified (a cgroup v1 host without one) to hold the loopback filter",
                self.root.display()
            )
        })
    }
}

/// A cgroup in each v1 hierarchy.
#[derive(Debug)]
struct V1Cgroup {
    /// cgroups-rs's handle on it, over [`Layout::V1`].
    handle: lib::Cgroup,
    cpuacct: PathBuf,
    memory: PathBuf,
    pids: PathBuf,
    freezer: PathBuf,
    /// One per distinct hierarchy.
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` of the agent's parent in the devices hierarchy.
    devices: Option<PathBuf>,
    /// `cgroup.procs` of the agent's parent in the unified hierarchy (the
    /// loopback filter's).
    unified: Option<PathBuf>,
    writer: Writer,
}

impl V1Cgroup {
    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        let cpu: &CpuController = controller(&self.handle, &self.memory)?;
        let shares = limits.shares();
        self.writer
            .set(cpu.path(), "cpu.shares", &shares, || cpu.set_shares(shares))?;
        // Only called on a fresh cgroup, whose CFS period is already 100 ms
        // and quota -1 (none): without a quota there is nothing to write
        // (two control-file writes less per launch).
        if let Some(quota) = limits.quota_us() {
            self.writer.set(cpu.path(), "cpu.cfs_period_us", &CPU_PERIOD_US, || {
                cpu.set_cfs_period(CPU_PERIOD_US)
            })?;
            self.writer
                .set(cpu.path(), "cpu.cfs_quota_us", &quota, || cpu.set_cfs_quota(quota))?;
        }
        if let Some(bytes) = limits.memory_bytes {
            let mem: &MemController = controller(&self.handle, &self.memory)?;
            let bytes = saturating_i64(bytes);
            self.writer
                .set(mem.path(), "memory.limit_in_bytes", &bytes, || mem.set_limit(bytes))?;
            // With swap accounting, cap memory+swap at the same value so
            // the limit cannot be escaped by swapping.
            let memsw = "memory.memsw.limit_in_bytes";
            if mem.path().join(memsw).exists() {
                self.writer
                    .set(mem.path(), memsw, &bytes, || mem.set_memswap_limit(bytes))?;
            }
        }
        let pids: &PidController = controller(&self.handle, &self.memory)?;
        let max = limits
            .pids_max
            .map_or(MaxValue::Max, |n| MaxValue::Value(saturating_i64(n)));
        self.writer.set(pids.path(), "pids.max", &max, || pids.set_pid_max(max))
    }

    /// By hand: cgroups-rs's `procs()` reads an unreadable `cgroup.procs`
    /// as empty and a bad line as pid 0, and `kill_all` must never take a
    /// cgroup it cannot read for an empty one.
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

/// The v1 freezer (`freezer.state`), through cgroups-rs.
struct V1Freezer<'a>(&'a FreezerController);

impl Freezer for V1Freezer<'_> {
    fn request(&self, frozen: bool) -> Result<(), CgroupError> {
        let dir = self.0.path();
        if frozen {
            Writer::CHECKED.set(dir, "freezer.state", &"FROZEN", || self.0.freeze())
        } else {
            Writer::CHECKED.set(dir, "freezer.state", &"THAWED", || self.0.thaw())
        }
    }

    fn is_frozen(&self) -> Result<bool, CgroupError> {
        let state = self
            .0
            .state()
            .map_err(CgroupError::lib("read", &self.0.path().join("freezer.state")))?;
        Ok(matches!(state, FreezerState::Frozen))
    }
}

impl Cgroup for V1Cgroup {
    fn procs_files(&self) -> Vec<PathBuf> {
        let dirs = self.dirs.iter().map(|d| d.join("cgroup.procs"));
        dirs.chain(self.devices.clone()).chain(self.unified.clone()).collect()
    }

    fn leave_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .filter_map(|d| d.parent())
            .map(|p| p.join("cgroup.procs"))
            .collect()
    }

    /// Joins every hierarchy (co-mounted ones twice, which is harmless).
    fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        let tgid = CgroupPid::from(u64::from(pid));
        for sub in self.handle.subsystems() {
            let c = sub.to_controller();
            Writer::CHECKED.set(c.path(), "cgroup.procs", &pid, || c.add_task_by_tgid(&tgid))?;
        }
        // By hand: the devices and unified parents are not among the
        // handle's subsystems.
        for procs in self.devices.iter().chain(&self.unified) {
            std::fs::write(procs, pid.to_string()).map_err(CgroupError::io("write", procs))?;
        }
        Ok(())
    }

    fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        self.list()
    }

    /// By hand but `pids.current`: cgroups-rs's `cpuacct()` and
    /// `memory_stat()` read 8 and 12 files for the 2 we need, every second
    /// per container, and turn a file they cannot read into a zero.
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
        let pids: &PidController = controller(&self.handle, &self.memory)?;
        Ok(Usage {
            cpu_time: Duration::from_nanos(cpu_ns),
            memory_rss: rss,
            memory_cache: cache,
            pids: pids
                .get_pid_current()
                .map_err(CgroupError::lib("read", &self.pids.join("pids.current")))?,
        })
    }

    /// By hand: cgroups-rs's `memory.oom_control` parser `unwrap`s its
    /// numbers (a panic in the agent on unexpected contents), and its
    /// `memory_stat()` reads a missing file as 0, which here would hide an
    /// OOM kill.
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

    /// The freeze-and-kill protocol is ours ([`kill_all_with`]); cgroups-rs
    /// only kills on v2. Its freezer does the freezing.
    fn kill_all(&self) -> Result<(), CgroupError> {
        if !self.freezer.is_dir() {
            // Only possible for a half-present cgroup found by `open`.
            return kill_all_with(&self.freezer, &NoFreezer, &|| self.list());
        }
        let freezer: &FreezerController = controller(&self.handle, &self.freezer)?;
        kill_all_with(&self.freezer, &V1Freezer(freezer), &|| self.list())
    }

    /// By hand: see [`rmdir_retry`]. A container's cgroups are usually
    /// empty by now (its init leaves them before it reports the exit), so
    /// they are removed straight away, freezer last; only if one is still
    /// in use are its processes killed first. (Listing them reads every
    /// hierarchy's `cgroup.procs`, and v1 builds a pid list for each read
    /// that a workqueue frees later.)
    fn destroy(&self) -> Result<(), CgroupError> {
        let freezer_last = self
            .dirs
            .iter()
            .filter(|d| **d != self.freezer)
            .chain(self.dirs.iter().filter(|d| **d == self.freezer));
        let mut busy = false;
        for dir in freezer_last {
            match std::fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => {
                    busy = true;
                    break;
                }
            }
        }
        if !busy {
            return Ok(());
        }
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
