//! What a soak may leave behind, looked for from outside: task cgroups,
//! mounts, network namespaces and processes. Run twice — once after an
//! orderly stop, to find what Mezzo left, and once after the harness's
//! forced cleanup, to prove the soak itself leaves nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to look for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Task containers only (cgroups, mounts under the soak's dirs): what
    /// must be gone once every task ended, with the daemons still up.
    Containers,
    /// Also processes and network namespaces: what must be gone once the
    /// soak is over.
    All,
}

/// What belongs to one soak.
#[derive(Debug, Clone)]
pub struct Footprint {
    /// Directories the soak's processes work in (cluster dir, runtime dir,
    /// shared records dir).
    pub dirs: Vec<PathBuf>,
    /// The agents' parent cgroups.
    pub cgroups: Vec<String>,
    /// The masters' network namespaces.
    pub netns: Vec<String>,
}

impl Footprint {
    /// Everything of the soak still present, as readable lines (empty if
    /// nothing). Cgroups are given `grace` to be released by the kernel.
    pub fn find(&self, grace: Duration, scope: Scope) -> Vec<String> {
        let deadline = Instant::now() + grace;
        loop {
            let mut left = self.cgroups_left(scope);
            left.extend(self.mounts_left(scope));
            if scope == Scope::All {
                left.extend(self.netns_left());
                left.extend(self.processes_left());
            }
            if left.is_empty() || Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Task containers: cgroups under an agent's parent, in any
    /// hierarchy; with [`Scope::All`], the parents themselves too (an
    /// agent keeps its parent while it runs).
    fn cgroups_left(&self, scope: Scope) -> Vec<String> {
        let mut left = Vec::new();
        for h in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            for parent in &self.cgroups {
                let dir = h.path().join(parent);
                if !dir.is_dir() {
                    continue;
                }
                let children: Vec<String> = std::fs::read_dir(&dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                if !children.is_empty() || scope == Scope::All {
                    left.push(format!("cgroup {} (containers: {children:?})", dir.display()));
                }
            }
        }
        left
    }

    /// Mount points under a soak dir or on a soak namespace's file.
    fn mounts_left(&self, scope: Scope) -> Vec<String> {
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        table
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|point| {
                self.dirs.iter().any(|d| Path::new(point).starts_with(d))
                    || (scope == Scope::All && self.netns.iter().any(|ns| point.ends_with(&format!("/netns/{ns}"))))
            })
            .map(|point| format!("mount {point}"))
            .collect()
    }

    fn netns_left(&self) -> Vec<String> {
        let out = std::process::Command::new("ip").args(["netns", "list"]).output();
        let list = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        list.lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|ns| self.netns.iter().any(|n| n == ns))
            .map(|ns| format!("network namespace {ns}"))
            .collect()
    }

    /// Processes working in a soak dir or naming one in their arguments
    /// (daemons, tasks, their supervisors).
    fn processes_left(&self) -> Vec<String> {
        let me = std::process::id().to_string();
        let mut left = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let pid = e.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
                continue;
            }
            let cwd = std::fs::read_link(e.path().join("cwd")).unwrap_or_default();
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let ours = self.dirs.iter().any(|d| {
                let d = d.display().to_string();
                cwd.display().to_string().starts_with(&d) || cmdline.contains(&d)
            });
            if ours {
                left.push(format!("process {pid} ({}) in {}", cmdline.trim(), cwd.display()));
            }
        }
        left
    }
}
