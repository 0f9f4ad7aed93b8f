//! The kernel's floor for an isolated launch on this machine, for
//! `scripts/bench --isolation-floor`: what the cgroup and namespace work
//! of one container costs when nothing else is done, as machine CPU time
//! per launch (from `/proc/stat`, so kernel threads and RCU work count).
//!
//! Each launch starts `/bin/true` and waits for it, in one of these ways:
//!
//! - `plain`: fork + exec;
//! - `cgroups`: a new cgroup in every hierarchy (mkdir, cpu weight, memory
//!   and pids limits), joined by the child, removed after;
//! - `namespaces`: clone into new pid, mount, UTS and IPC namespaces, make
//!   `/` private, mount `/proc`, set the hostname, fork the task (the
//!   namespace's init waits for it);
//! - `both`: the two together, as every Mezzo container (and crun) does;
//! - `both, cgroups reused`: one cgroup per hierarchy made once and joined
//!   by every launch, to show what creating and removing cgroups costs;
//! - `both + view + confinement`: `both`, and what Mezzo's default
//!   container adds, with the agent's own functions: the task's file
//!   system view (the host's root read-only, a private `/dev`, `/tmp` and
//!   `/proc`, masked paths, the sandbox bound writable, `pivot_root`:
//!   `rootfs::enter`), and the task confined (capabilities dropped, no new
//!   privileges, Landlock's scope, the seccomp filter: `harden::Prepared`)
//!   and running as `nobody`. No launcher, agent or record: the kernel
//!   work of the isolation the agent gives every task, with nothing of
//!   Mezzo's own around it.
//!
//! It is a single-threaded process without an async runtime, so forking
//! is safe anywhere.

// fork and clone are `unsafe fn`s; this process has one thread (no
// runtime), so the children are exact copies that may do any work.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use nix::mount::{MsFlags, mount};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, execv, fork};

#[derive(Debug, Parser)]
#[command(about = "The kernel's floor for an isolated launch: machine CPU per launch")]
struct Args {
    /// Measured launches per way.
    #[arg(long, default_value_t = 2000)]
    launches: usize,
    /// The cgroup filesystem.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
    /// Parent cgroup of the launches (removed at the end).
    #[arg(long, default_value = "mezzo-isofloor")]
    parent: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Way {
    Plain,
    Cgroups,
    Namespaces,
    Both,
    BothReused,
    Hardened,
}

/// What the `Hardened` way's containers get: a view of the host's root
/// and a sandbox in it, and the task's confinement, made once.
struct Hardening {
    view: mezzo_agent::containerizer::rootfs::View,
    sandbox: PathBuf,
    confinement: mezzo_agent::containerizer::harden::Prepared,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Plain => "plain",
            Way::Cgroups => "cgroups",
            Way::Namespaces => "namespaces",
            Way::Both => "both",
            Way::BothReused => "both, cgroups reused",
            Way::Hardened => "both + view + confinement",
        }
    }
    fn cgroups(self) -> bool {
        self != Way::Plain && self != Way::Namespaces
    }
    fn namespaces(self) -> bool {
        matches!(self, Way::Namespaces | Way::Both | Way::BothReused | Way::Hardened)
    }
}

/// The parent cgroup in each hierarchy; removed on drop.
struct Parents {
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` (v2) or `tasks` (v1).
    procs: &'static str,
}

impl Parents {
    fn create(root: &Path, name: &str) -> Result<Parents> {
        let (hierarchies, procs) = if root.join("cgroup.controllers").exists() {
            (vec![root.to_path_buf()], "cgroup.procs")
        } else {
            let mut v: Vec<PathBuf> = ["cpu", "cpuacct", "memory", "pids", "freezer"]
                .iter()
                .filter_map(|c| fs::canonicalize(root.join(c)).ok())
                .collect();
            v.sort();
            v.dedup(); // "cpu" and "cpuacct" may be one hierarchy
            (v, "tasks")
        };
        if hierarchies.is_empty() {
            bail!("no cgroup hierarchy under {}", root.display());
        }
        let dirs: Vec<PathBuf> = hierarchies.iter().map(|h| h.join(name)).collect();
        for d in &dirs {
            fs::create_dir_all(d).with_context(|| format!("mkdir {}", d.display()))?;
        }
        Ok(Parents { dirs, procs })
    }

    /// Makes `name` in every hierarchy with the limits a task gets.
    fn make(&self, name: &str) -> Result<Vec<PathBuf>> {
        let mut made = Vec::new();
        for d in &self.dirs {
            let cg = d.join(name);
            fs::create_dir(&cg).with_context(|| format!("mkdir {}", cg.display()))?;
            for (file, value) in [
                ("cpu.shares", "102"),
                ("cpu.weight", "4"),
                ("memory.limit_in_bytes", "67108864"),
                ("memory.max", "67108864"),
                ("pids.max", "4096"),
            ] {
                let f = cg.join(file);
                if f.exists() {
                    fs::write(&f, value).with_context(|| format!("write {}", f.display()))?;
                }
            }
            made.push(cg);
        }
        Ok(made)
    }
}

impl Drop for Parents {
    fn drop(&mut self) {
        for d in &self.dirs {
            if let Ok(children) = fs::read_dir(d) {
                for c in children.flatten().filter(|c| c.path().is_dir()) {
                    let _ = fs::remove_dir(c.path());
                }
            }
            let _ = fs::remove_dir(d);
        }
    }
}

/// Busy time of the whole machine so far, in seconds.
fn machine_busy() -> Result<f64> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let busy = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum::<u64>();
    Ok(busy as f64 / 100.0)
}

fn exec_true() -> ! {
    let prog = CString::new("/bin/true").expect("no NUL");
    let _ = execv(&prog, std::slice::from_ref(&prog));
    std::process::exit(127);
}

/// The child's side: join the cgroups, set up the namespaces, run the task.
fn child(way: Way, cgroups: &[PathBuf], procs: &str, hardening: &Hardening) -> isize {
    for cg in cgroups {
        if fs::write(cg.join(procs), "0").is_err() {
            return 2;
        }
    }
    if !way.namespaces() {
        exec_true();
    }
    let private = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    );
    let proc_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if private.is_err() {
        return 3;
    }
    if way == Way::Hardened {
        use mezzo_agent::containerizer::rootfs;
        let Ok(mountpoint) = rootfs::Mountpoint::open(&hardening.view, None) else {
            return 7;
        };
        if rootfs::enter(&hardening.view, &hardening.sandbox, mountpoint, false).is_err() {
            return 8;
        }
    } else if mount(Some("proc"), "/proc", Some("proc"), proc_flags, None::<&str>).is_err() {
        return 3;
    }
    if nix::unistd::sethostname("task").is_err() {
        return 4;
    }
    // SAFETY: single-threaded (see the crate attribute's comment).
    match unsafe { fork() } {
        Ok(ForkResult::Child) if way == Way::Hardened => {
            let nobody = nix::unistd::Uid::from_raw(65534);
            let c = &hardening.confinement;
            let confined = c.before_user().is_ok()
                && nix::unistd::setgroups(&[]).is_ok()
                && nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).is_ok()
                && nix::unistd::setuid(nobody).is_ok()
                && c.after_user().is_ok();
            if !confined {
                std::process::exit(9);
            }
            exec_true()
        }
        Ok(ForkResult::Child) => exec_true(),
        Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
            Ok(_) => 0,
            Err(_) => 5,
        },
        Err(_) => 6,
    }
}

fn launch(way: Way, i: usize, parents: &Parents, reused: &[PathBuf], hardening: &Hardening) -> Result<()> {
    let cgroups = match way {
        Way::BothReused => reused.to_vec(),
        w if w.cgroups() => parents.make(&format!("c{i}"))?,
        _ => Vec::new(),
    };
    let pid = if way.namespaces() {
        let mut stack = vec![0u8; 256 * 1024];
        let flags =
            CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
        let procs = parents.procs;
        let cg = cgroups.clone();
        // SAFETY: single-threaded; the child runs on its own stack in a
        // copy of this process (no CLONE_VM).
        unsafe {
            nix::sched::clone(
                Box::new(move || child(way, &cg, procs, hardening)),
                &mut stack,
                flags,
                Some(Signal::SIGCHLD as i32),
            )
        }
        .context("clone")?
    } else {
        // SAFETY: single-threaded (see the crate attribute's comment).
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => std::process::exit(child(way, &cgroups, parents.procs, hardening) as i32),
            ForkResult::Parent { child } => child,
        }
    };
    wait_ok(pid)?;
    if way != Way::BothReused {
        for cg in &cgroups {
            // The kernel may take a moment to let go of an emptied cgroup.
            let start = Instant::now();
            while let Err(e) = fs::remove_dir(cg) {
                if start.elapsed().as_secs() > 5 {
                    bail!("rmdir {}: {e}", cg.display());
                }
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
        }
    }
    Ok(())
}

fn wait_ok(pid: Pid) -> Result<()> {
    match waitpid(pid, None).context("waitpid")? {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
        other => bail!("launch failed: {other:?}"),
    }
}

fn main() -> Result<()> {
    let a = Args::parse();
    let parents = Parents::create(&a.cgroup_root, &a.parent)?;
    let reused = parents.make("reused")?;
    let work = tempfile::Builder::new()
        .prefix("mezzo-isofloor-")
        .tempdir_in("/var/tmp")
        .context("work dir")?;
    let hardening = Hardening {
        view: mezzo_agent::containerizer::rootfs::View {
            mountpoint: work.path().join("root"),
            hide: vec![work.path().to_path_buf()],
            ..Default::default()
        },
        sandbox: work.path().join("sandbox"),
        confinement: mezzo_agent::containerizer::harden::Prepared::new(&Default::default(), 65534, true)
            .context("confinement")?,
    };
    fs::create_dir(&hardening.view.mountpoint)?;
    fs::create_dir(&hardening.sandbox)?;
    println!(
        "isolation floor: {} launches of /bin/true per way, {} cgroup hierarchies",
        a.launches,
        parents.dirs.len()
    );
    let mut plain = None;
    for way in [
        Way::Plain,
        Way::Cgroups,
        Way::Namespaces,
        Way::Both,
        Way::BothReused,
        Way::Hardened,
    ] {
        for i in 0..a.launches / 10 {
            launch(way, i, &parents, &reused, &hardening)?;
        }
        let (b0, t0) = (machine_busy()?, Instant::now());
        for i in 0..a.launches {
            launch(way, i, &parents, &reused, &hardening)?;
        }
        let (cpu, wall) = (
            (machine_busy()? - b0) * 1000.0 / a.launches as f64,
            t0.elapsed().as_secs_f64(),
        );
        let base = *plain.get_or_insert(cpu);
        println!(
            "  {:<22} {:6.0} launches/s, machine cpu {:.3} ms per launch ({:+.3} ms over plain)",
            way.name(),
            a.launches as f64 / wall,
            cpu,
            cpu - base
        );
    }
    Ok(())
}
