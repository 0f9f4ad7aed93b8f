//! User namespaces for isolated tasks (`mezzo agent --user-namespaces`,
//! issue 15): each container gets its own user namespace in which
//! container ids `0..count` are host ids `base..base+count`, so root in a
//! task is an unprivileged host uid.
//!
//! The order, as runc, crun and youki do it (youki's intermediate
//! process: cgroups first, then the user namespace, the maps written by
//! the parent, then `setresuid(0)`, then the other namespaces):
//!
//! ```text
//! supervisor (host root)        clone(NEWUSER|NEWPID|NEWUTS|NEWIPC[|NEWNET]) ─▶ init
//!   writes /proc/INIT/uid_map,                                      waits for "go"
//!   gid_map ("0 BASE COUNT"), moves the init into the cgroups,
//!   sends "go" ──────────────────────────────────────────────────▶  opens what needs host
//!                                                                   root (cgroup files);
//!                                                                   unshare(NEWNS); becomes
//!                                                                   0:0 (host BASE), builds
//!                                                                   the view, ...
//!   takes the launch claim  ◀──────────── "claim?" ─────────────    last step before the task
//!   answers started/dropped ─────────────────────────────────────▶  starts it, or not
//! ```
//!
//! One `clone` creates the user namespace first and the others in it, so
//! they belong to it: the init (pid 1) may mount `/proc`, set the hostname
//! and bring `lo` up as root of its own namespace. The supervisor stays in
//! the host's user namespace as host root: it writes the maps (one line
//! of many ids needs `CAP_SETUID` in the parent namespace; `setgroups`
//! stays allowed, as the writer is privileged), moves the init into the
//! container's cgroups and takes the launch claim, whose run dir the
//! init, no longer host root, may not write.

// The init is made with the raw `clone` system call (nix wraps only the
// variant with a new stack). Each `unsafe` block says why it is sound.
#![allow(unsafe_code)]

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::unistd::{Gid, Pid, Uid};
use serde::{Deserialize, Serialize};

/// The highest id every range maps: the tty group, which owns the pts of
/// a task's private `/dev`.
const MIN_ID: u32 = 5;

/// Container ids `0..count` are host ids `base..base + count` (uids and
/// gids alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub base: u32,
    pub count: u32,
}

impl IdRange {
    /// `BASE:COUNT`, e.g. `100000:65536`. Host root (0) may not be in it.
    pub fn parse(s: &str) -> Result<IdRange, String> {
        let bad = || format!("{s:?} is not BASE:COUNT (e.g. 100000:65536)");
        let (base, count) = s.split_once(':').ok_or_else(bad)?;
        let range = IdRange {
            base: base.trim().parse().map_err(|_| bad())?,
            count: count.trim().parse().map_err(|_| bad())?,
        };
        if range.base == 0 {
            return Err(format!("{s:?}: the range must not include host id 0"));
        }
        if range.count <= MIN_ID {
            return Err(format!(
                "{s:?}: COUNT must be more than {MIN_ID}: the tty group ({MIN_ID}) owns a task's pseudo-terminals"
            ));
        }
        // The kernel refuses a map that reaches (uid_t)-1.
        if range.base.checked_add(range.count).is_none_or(|end| end == u32::MAX) {
            return Err(format!("{s:?}: the range goes past the largest id"));
        }
        Ok(range)
    }

    /// The host id of container id `id`, if it is mapped.
    pub fn host(&self, id: u32) -> Option<u32> {
        (id < self.count).then(|| self.base + id)
    }

    /// The line of `uid_map` and `gid_map`.
    fn map_line(&self) -> String {
        format!("0 {} {}\n", self.base, self.count)
    }
}

impl std::fmt::Display for IdRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.base, self.count)
    }
}

/// Why this kernel does not let the agent use user namespaces, if it
/// does not (checked once at start-up).
pub fn unsupported() -> Option<String> {
    if !Path::new("/proc/self/ns/user").exists() {
        return Some("this kernel has no user namespaces (CONFIG_USER_NS)".into());
    }
    match fs::read_to_string("/proc/sys/user/max_user_namespaces") {
        Ok(n) if n.trim() == "0" => {
            Some("user namespaces are disabled (/proc/sys/user/max_user_namespaces is 0)".into())
        }
        _ => None,
    }
}

/// A failure of the supervisor's side of the handshake.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("cannot write {}: {source}", path.display())]
    Map { path: PathBuf, source: std::io::Error },
    #[error("cannot move the init into its cgroup via {}: {source}", path.display())]
    Cgroup { path: PathBuf, source: std::io::Error },
    #[error("user namespace handshake: {0}")]
    Pipe(std::io::Error),
    #[error("the supervisor did not set up the user namespace")]
    NoGo,
    #[error("cannot become root of the user namespace: {0}")]
    Root(Errno),
    #[error("cannot make a user namespace to map the image's layers by: {0}")]
    Template(Errno),
    #[error("cannot map the image's layers: {0}")]
    Layers(#[from] super::rootfs::ViewError),
}

/// The image's `layers` id-mapped for a container whose user namespace
/// maps `range` (`rootfs::idmapped_layers`): the mapping is taken from a
/// user namespace made for it ([`layer_userns`]). Made before the init's
/// `clone`, which hands the init the descriptors.
pub fn idmapped_layers(range: IdRange, layers: &[PathBuf]) -> Result<super::rootfs::IdmappedLayers, UsernsError> {
    match layer_userns(range)? {
        Mapping::Kept(userns) => Ok(super::rootfs::idmapped_layers(layers, userns)?),
        Mapping::Made(userns) => Ok(super::rootfs::idmapped_layers(layers, &userns)?),
    }
}

/// A user namespace mapping a range: the one kept for the process, or one
/// made for another range.
pub enum Mapping {
    Kept(&'static OwnedFd),
    Made(OwnedFd),
}

/// The user namespace layers are mapped by. The first is kept for the
/// process's life: the launcher makes it before it forks a supervisor
/// that needs it, and every supervisor after inherits it (descriptor and
/// memory), rather than each making one (a fork) per launch. Every
/// container of an agent has the same range.
pub fn layer_userns(range: IdRange) -> Result<Mapping, UsernsError> {
    static KEPT: std::sync::OnceLock<(IdRange, OwnedFd)> = std::sync::OnceLock::new();
    if let Some((kept, userns)) = KEPT.get() {
        return Ok(if *kept == range {
            Mapping::Kept(userns)
        } else {
            Mapping::Made(mapped_userns(range)?)
        });
    }
    let userns = mapped_userns(range)?;
    Ok(match KEPT.set((range, userns)) {
        Ok(()) => Mapping::Kept(&KEPT.get().expect("just set").1),
        Err((_, userns)) => Mapping::Made(userns),
    })
}

/// Writes `range` as the uid and gid maps of the process `pid` (a child
/// in a new user namespace).
fn write_maps(pid: Pid, range: IdRange) -> Result<(), UsernsError> {
    for name in ["uid_map", "gid_map"] {
        let path = PathBuf::from(format!("/proc/{pid}/{name}"));
        fs::write(&path, range.map_line()).map_err(|source| UsernsError::Map { path, source })?;
    }
    Ok(())
}

/// A user namespace mapping `range`, kept by a descriptor: a child
/// unshares into it and waits, this process writes its maps and opens it,
/// and the child exits (the namespace lives on with the descriptor).
/// The child makes only async-signal-safe system calls, so the agent (many
/// threads) may call this too, not only a supervisor.
fn mapped_userns(range: IdRange) -> Result<OwnedFd, UsernsError> {
    let (ready_read, ready_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(UsernsError::Template)?;
    let (done_read, done_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(UsernsError::Template)?;
    // SAFETY: the child only makes async-signal-safe system calls
    // (unshare, write, read, _exit) on what was set up before the fork,
    // as fork in a process of many threads requires.
    match unsafe { nix::unistd::fork() }.map_err(UsernsError::Template)? {
        nix::unistd::ForkResult::Child => {
            drop((ready_read, done_write));
            // 0, or the errno of the unshare (all fit a byte).
            let errno = nix::sched::unshare(CloneFlags::CLONE_NEWUSER)
                .err()
                .map_or(0, |e| e as i32);
            let _ = nix::unistd::write(&ready_write, &[errno as u8]);
            // Until the parent is done with the namespace (EOF).
            let mut byte = [0u8; 1];
            let _ = nix::unistd::read(&done_read, &mut byte);
            // SAFETY: leaving the forked child without running anything of the parent's.
            unsafe { nix::libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop((ready_write, done_read));
            let mut byte = [0u8; 1];
            let answer = match nix::unistd::read(&ready_read, &mut byte) {
                Ok(1) => byte[0],
                _ => Errno::ECHILD as u8,
            };
            let userns = if answer == 0 {
                write_maps(child, range).and_then(|()| {
                    nix::fcntl::open(
                        format!("/proc/{child}/ns/user").as_str(),
                        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                        nix::sys::stat::Mode::empty(),
                    )
                    .map_err(UsernsError::Template)
                })
            } else {
                Err(UsernsError::Template(Errno::from_raw(i32::from(answer))))
            };
            drop(done_write);
            let _ = nix::sys::wait::waitpid(child, None);
            userns
        }
    }
}

/// The two pipes between the supervisor and the init, made before the
/// clone; each side keeps its ends ([`Handshake::supervisor`],
/// [`Handshake::init`]).
pub struct Handshake {
    to_init: (OwnedFd, OwnedFd),
    to_supervisor: (OwnedFd, OwnedFd),
}

/// The supervisor's ends.
pub struct SupervisorSide {
    to_init: File,
    from_init: File,
}

/// The init's ends.
pub struct InitSide {
    from_supervisor: File,
    to_supervisor: File,
}

const GO: u8 = b'g';
const ASK_CLAIM: u8 = b'c';
const STARTED: u8 = b's';
const DROPPED: u8 = b'd';

impl Handshake {
    pub fn new() -> Result<Handshake, Errno> {
        Ok(Handshake {
            to_init: nix::unistd::pipe2(OFlag::O_CLOEXEC)?,
            to_supervisor: nix::unistd::pipe2(OFlag::O_CLOEXEC)?,
        })
    }

    pub fn supervisor(self) -> SupervisorSide {
        SupervisorSide {
            to_init: File::from(self.to_init.1),
            from_init: File::from(self.to_supervisor.0),
        }
    }

    pub fn init(self) -> InitSide {
        InitSide {
            from_supervisor: File::from(self.to_init.0),
            to_supervisor: File::from(self.to_supervisor.1),
        }
    }
}

impl SupervisorSide {
    /// Maps the init's user namespace, moves the init into `cgroup_procs`
    /// and lets it go on.
    pub fn release(&mut self, init: Pid, range: IdRange, cgroup_procs: &[PathBuf]) -> Result<(), UsernsError> {
        write_maps(init, range)?;
        // Before the init runs anything of the container: as the init does
        // when it joins them itself, only the init and the task are in them.
        for path in cgroup_procs {
            fs::write(path, init.to_string()).map_err(|source| UsernsError::Cgroup {
                path: path.clone(),
                source,
            })?;
        }
        self.to_init.write_all(&[GO]).map_err(UsernsError::Pipe)
    }

    /// Takes the launch claim for the init if it asks for it; returns
    /// once it did (or will never ask: it ended).
    pub fn serve_claim(&mut self, run_dir: &Path) {
        let mut ask = [0u8; 1];
        if !matches!(self.from_init.read(&mut ask), Ok(1)) || ask[0] != ASK_CLAIM {
            return;
        }
        let answer = match super::claim::take(run_dir, super::claim::Claim::Started) {
            Ok(super::claim::Claim::Started) => STARTED,
            Ok(super::claim::Claim::Dropped) => DROPPED,
            // The init reports it: no answer but EOF.
            Err(_) => return,
        };
        let _ = self.to_init.write_all(&[answer]);
    }
}

impl InitSide {
    /// Waits until the supervisor has mapped the user namespace.
    pub fn wait_go(&mut self) -> Result<(), UsernsError> {
        let mut go = [0u8; 1];
        match self.from_supervisor.read(&mut go) {
            Ok(1) if go[0] == GO => Ok(()),
            Ok(_) => Err(UsernsError::NoGo),
            Err(e) => Err(UsernsError::Pipe(e)),
        }
    }

    /// Becomes root of the user namespace (host `base`): until now the
    /// init was host root, which the namespace does not map, so it could
    /// create no file in a file system mounted inside it.
    pub fn become_root(&self) -> Result<(), UsernsError> {
        let root = Gid::from_raw(0);
        nix::unistd::setgroups(&[])
            .and_then(|()| nix::unistd::setresgid(root, root, root))
            .and_then(|()| nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)))
            .map_err(UsernsError::Root)
    }

    /// Asks the supervisor to take the launch claim; returns the claim
    /// that holds.
    pub fn claim(&mut self) -> Result<super::claim::Claim, UsernsError> {
        self.to_supervisor.write_all(&[ASK_CLAIM]).map_err(UsernsError::Pipe)?;
        let mut answer = [0u8; 1];
        match self.from_supervisor.read(&mut answer) {
            Ok(1) if answer[0] == STARTED => Ok(super::claim::Claim::Started),
            Ok(1) if answer[0] == DROPPED => Ok(super::claim::Claim::Dropped),
            Ok(_) => Err(UsernsError::Pipe(std::io::Error::other(
                "the supervisor could not take the launch claim",
            ))),
            Err(e) => Err(UsernsError::Pipe(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_map() {
        let r = IdRange::parse("100000:65536").expect("range");
        assert_eq!(
            r,
            IdRange {
                base: 100000,
                count: 65536
            }
        );
        assert_eq!(r.host(0), Some(100000));
        assert_eq!(r.host(65534), Some(165534));
        assert_eq!(r.host(65536), None);
        assert_eq!(r.map_line(), "0 100000 65536\n");
        assert_eq!(r.to_string(), "100000:65536");
        assert!(IdRange::parse("100000:6").is_ok());
        for bad in [
            "",
            "1:5",
            "100000",
            "0:65536",
            "1:0",
            "a:b",
            "4294967000:1000",
            "4294901759:65536",
        ] {
            assert!(IdRange::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
