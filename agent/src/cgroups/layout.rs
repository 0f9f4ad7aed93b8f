//! cgroups-rs over a hierarchy root of our choosing.
//!
//! cgroups-rs's own hierarchies (`hierarchies::V1`, `V2`, `auto()`) find
//! their controllers in `/proc/self/mountinfo` and under `/sys/fs/cgroup`.
//! Its [`Hierarchy`] trait is public, so [`Layout`] describes ours instead
//! and every cgroups-rs controller then works under the root the agent was
//! given (a temp dir in tests). Only our controllers are in it: cgroups-rs's
//! `V1` would create each cgroup in every mounted hierarchy (cpuset, blkio,
//! devices and `name=systemd` too), which would change the agent's cgroup
//! layout.
//!
//! The rest of this file is the glue every backend uses: [`controller`]
//! picks a typed controller out of a cgroups-rs handle, a [`Writer`] runs
//! one cgroups-rs setter on one control file, and [`CgroupError::lib`]
//! puts the path back into cgroups-rs's errors.

use std::fmt::Display;
use std::io;
use std::path::{Path, PathBuf};

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuacct::CpuAcctController;
use cgroups_rs::fs::error::{Error as LibError, ErrorKind as LibErrorKind};
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{self as lib, ControllIdentifier, Controller, Hierarchy, Subsystem};

use super::CgroupError;

/// Where each v1 controller we use is mounted.
#[derive(Debug, Clone)]
pub(super) struct Mounts {
    pub(super) root: PathBuf,
    pub(super) cpu: PathBuf,
    pub(super) cpuacct: PathBuf,
    pub(super) memory: PathBuf,
    pub(super) pids: PathBuf,
    pub(super) freezer: PathBuf,
}

impl Mounts {
    /// The cpu, cpuacct, memory, pids and freezer hierarchies at
    /// `<root>/<controller>`.
    pub(super) fn under(root: &Path) -> Mounts {
        Mounts {
            root: root.to_owned(),
            cpu: root.join("cpu"),
            cpuacct: root.join("cpuacct"),
            memory: root.join("memory"),
            pids: root.join("pids"),
            freezer: root.join("freezer"),
        }
    }

    /// The distinct hierarchies, so co-mounted controllers (`cpu,cpuacct`
    /// with `cpu` and `cpuacct` symlinks) get one directory.
    pub(super) fn unique(&self) -> Vec<PathBuf> {
        let mut seen: Vec<(PathBuf, PathBuf)> = Vec::new();
        for m in [&self.cpu, &self.cpuacct, &self.memory, &self.pids, &self.freezer] {
            let canon = m.canonicalize().unwrap_or_else(|_| m.clone());
            if !seen.iter().any(|(c, _)| *c == canon) {
                seen.push((canon, m.clone()));
            }
        }
        seen.into_iter().map(|(_, m)| m).collect()
    }
}

/// The hierarchy a backend works in, as cgroups-rs sees it.
#[derive(Debug, Clone)]
pub(super) enum Layout {
    /// One hierarchy per controller.
    V1(Mounts),
    /// The unified hierarchy at `root` (the freezer is built in).
    V2 { root: PathBuf },
}

impl Layout {
    /// A cgroups-rs handle on `<hierarchy>/<rel>` (nothing is created).
    /// `rel` is a validated relative path, so cgroups-rs's `to_str().unwrap()`
    /// on it cannot fail.
    pub(super) fn load(&self, rel: &str) -> lib::Cgroup {
        lib::Cgroup::load(Box::new(self.clone()), rel)
    }
}

impl Hierarchy for Layout {
    fn subsystems(&self) -> Vec<Subsystem> {
        match self {
            // The mount root inside each hierarchy is "/", as mountinfo says.
            Layout::V1(m) => {
                let base = || PathBuf::from("/");
                vec![
                    Subsystem::Cpu(CpuController::new(m.cpu.clone(), base(), false)),
                    Subsystem::CpuAcct(CpuAcctController::new(m.cpuacct.clone(), base())),
                    Subsystem::Mem(MemController::new(m.memory.clone(), base(), false)),
                    Subsystem::Pid(PidController::new(m.pids.clone(), base(), false)),
                    Subsystem::Freezer(FreezerController::new(m.freezer.clone(), base(), false)),
                ]
            }
            Layout::V2 { root } => vec![
                Subsystem::Cpu(CpuController::new(root.clone(), PathBuf::new(), true)),
                Subsystem::Mem(MemController::new(root.clone(), PathBuf::new(), true)),
                Subsystem::Pid(PidController::new(root.clone(), PathBuf::new(), true)),
                Subsystem::Freezer(FreezerController::new(root.clone(), PathBuf::new(), true)),
            ],
        }
    }

    fn root(&self) -> PathBuf {
        match self {
            Layout::V1(m) => m.root.clone(),
            Layout::V2 { root } => root.clone(),
        }
    }

    fn root_control_group(&self) -> lib::Cgroup {
        self.load("")
    }

    fn parent_control_group(&self, path: &str) -> lib::Cgroup {
        let parent = Path::new(path).parent().and_then(Path::to_str).unwrap_or("");
        self.load(parent)
    }

    fn v2(&self) -> bool {
        matches!(self, Layout::V2 { .. })
    }
}

/// The controller of type `T` in `handle`. Every [`Layout`] has each one
/// the backends ask for, so this fails only if the two drift apart.
pub(super) fn controller<'a, T>(handle: &'a lib::Cgroup, cgroup: &Path) -> Result<&'a T, CgroupError>
where
    &'a T: From<&'a Subsystem>,
    T: Controller + ControllIdentifier,
{
    handle.controller_of::<T>().ok_or_else(|| CgroupError::NoController {
        path: cgroup.to_owned(),
        controller: T::controller_type().to_string(),
    })
}

/// How control files are written through cgroups-rs's setters.
///
/// They open the file with `File::create`. On a cgroupfs the kernel
/// refuses to create a missing control file (EACCES), but under a root
/// that is not one (a test's temp dir) it would make a plain file and
/// report the value as set. So a writer checks that the file exists
/// first, except where its root is a cgroupfs: the launch path writes
/// through its backend's writer, which saves a `stat` per control file.
#[derive(Debug, Clone, Copy)]
pub(super) struct Writer {
    pub(super) check_exists: bool,
}

impl Writer {
    /// Checks every file: for calls off the launch path.
    pub(super) const CHECKED: Writer = Writer { check_exists: true };

    /// The writer for a hierarchy mounted at `mount`: checking unless it
    /// is a cgroupfs (v1 or v2).
    pub(super) fn for_mount(mount: &Path) -> Writer {
        use nix::sys::statfs::{CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, statfs};
        let kernel =
            statfs(mount).is_ok_and(|fs| [CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC].contains(&fs.filesystem_type()));
        Writer { check_exists: !kernel }
    }

    /// Runs a cgroups-rs setter that writes `value` to the control file
    /// `file` in `dir`; errors carry the file's path.
    pub(super) fn set(
        self,
        dir: &Path,
        file: &str,
        value: &dyn Display,
        setter: impl FnOnce() -> Result<(), LibError>,
    ) -> Result<(), CgroupError> {
        let path = dir.join(file);
        let op = format!("write {:?} to", value.to_string());
        if self.check_exists && !path.is_file() {
            return Err(CgroupError::io(op, &path)(io::ErrorKind::NotFound.into()));
        }
        setter().map_err(CgroupError::lib(op, &path))
    }
}

/// Saturates a count for cgroups-rs's `i64` setters. Anything past
/// `i64::MAX` was already past what the kernel accepts or limits.
pub(super) fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl CgroupError {
    /// Maps an error of cgroups-rs, which names at most the control file
    /// and never the cgroup, onto `path`: an I/O cause keeps its errno (as
    /// [`CgroupError::Io`]), a parse failure becomes [`CgroupError::Parse`].
    pub(super) fn lib(op: impl Into<String>, path: &Path) -> impl FnOnce(LibError) -> CgroupError {
        let op = op.into();
        let path = path.to_owned();
        move |e| {
            let cause = std::error::Error::source(&e);
            if let Some(io) = cause.and_then(|c| c.downcast_ref::<io::Error>()) {
                let source = match io.raw_os_error() {
                    Some(errno) => io::Error::from_raw_os_error(errno),
                    None => io::Error::new(io.kind(), io.to_string()),
                };
                return CgroupError::Io { op, path, source };
            }
            if *e.kind() == LibErrorKind::ParseError {
                return CgroupError::Parse {
                    path,
                    reason: e.to_string(),
                };
            }
            CgroupError::Controller { op, path, source: e }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_layout_holds_only_our_controllers_under_its_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let paths = |layout: Layout| -> Vec<PathBuf> {
            let handle = layout.load("mezzo-a/t1");
            handle
                .subsystems()
                .iter()
                .map(|s| s.to_controller().path().to_owned())
                .collect()
        };
        let v1 = paths(Layout::V1(Mounts::under(root)));
        let expected: Vec<PathBuf> = ["cpu", "cpuacct", "memory", "pids", "freezer"]
            .iter()
            .map(|c| root.join(c).join("mezzo-a/t1"))
            .collect();
        assert_eq!(v1, expected);
        let v2 = paths(Layout::V2 { root: root.to_owned() });
        assert_eq!(v2, vec![root.join("mezzo-a/t1"); 4]);
    }

    #[test]
    fn a_missing_control_file_is_refused_not_created() {
        let tmp = tempfile::tempdir().unwrap();
        let cpu = CpuController::new(tmp.path().to_owned(), PathBuf::new(), true);
        let writer = Writer::for_mount(tmp.path());
        let err = writer
            .set(tmp.path(), "cpu.weight", &39, || cpu.set_shares(39))
            .unwrap_err();
        let CgroupError::Io { op, path, source } = &err else {
            panic!("{err:?}")
        };
        assert_eq!((op.as_str(), path), ("write \"39\" to", &tmp.path().join("cpu.weight")));
        assert_eq!(source.kind(), io::ErrorKind::NotFound);
        assert!(!tmp.path().join("cpu.weight").exists());
    }

    #[test]
    fn library_errors_get_the_path_back() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("pids.current");
        let pids = PidController::new(tmp.path().to_owned(), PathBuf::new(), true);

        let missing = pids
            .get_pid_current()
            .map_err(CgroupError::lib("read", &file))
            .unwrap_err();
        assert!(
            matches!(&missing, CgroupError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{missing:?}"
        );
        assert!(
            missing.to_string().starts_with(&format!("read {}: ", file.display())),
            "{missing}"
        );

        std::fs::write(&file, "three\n").unwrap();
        let bad = pids
            .get_pid_current()
            .map_err(CgroupError::lib("read", &file))
            .unwrap_err();
        assert!(
            matches!(&bad, CgroupError::Parse { path, .. } if *path == file),
            "{bad:?}"
        );
    }
}
