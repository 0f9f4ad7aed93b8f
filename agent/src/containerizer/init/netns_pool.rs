//! Network namespaces the launcher lends to containers and takes back.
//!
//! Making a network namespace (loopback's registration, IPv6 set-up) and
//! tearing it down (one kernel worker, `cleanup_net`, serialized behind
//! RTNL) cost an isolated launch about a fifth of its rate two and eight at
//! a time (BENCHMARKS.md, issue 15). The launcher keeps the namespaces of
//! ended containers and lends them to the next ones, which join them with
//! `setns` instead of making their own.
//!
//! What a namespace could carry from one task to the next, and why it
//! does not:
//! - **processes**: a namespace comes back only once the supervisor it was
//!   lent to has exited; the container's processes die with its init (a
//!   pid namespace is a condition of lending);
//! - **sockets**, TIME_WAIT ones and abstract unix names included: it comes
//!   back only when its `sockstat` counts no socket and no TIME_WAIT;
//!   otherwise it is dropped and the kernel tears it down, as before;
//! - **configuration** (addresses, routes, netfilter, network sysctls):
//!   changing it needs `CAP_NET_ADMIN` over the namespace, that is in the
//!   host's user namespace, which no task has (and `/proc/sys` is
//!   read-only in the view); tasks in a user namespace of their own, which
//!   would own their network namespace, never get a lent one;
//! - **the TCP metrics cache** (round-trip times of past peers): off in
//!   lent namespaces (`tcp_no_metrics_save`).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::Pid;

/// Idle namespaces kept at most; more are dropped.
const MAX_FREE: usize = 64;
/// How long a namespace whose sockets are still closing (freed after an
/// RCU grace period) may wait for them before it is dropped.
const SETTLE: Duration = Duration::from_secs(2);

/// The launcher's namespaces: idle ones, and those lent to a supervisor.
#[derive(Debug)]
pub(super) struct NetnsPool {
    /// The launcher's own network namespace, to come back to.
    host: File,
    free: Vec<OwnedFd>,
    lent: Vec<Lent>,
}

#[derive(Debug)]
struct Lent {
    /// A pidfd of the supervisor: readable once it has exited.
    supervisor: OwnedFd,
    netns: OwnedFd,
    /// When its supervisor was first seen gone.
    ended: Option<Instant>,
}

/// A namespace's sockets, from its `/proc/net/sockstat`.
#[derive(Debug, PartialEq, Eq)]
struct Sockets {
    used: u64,
    time_wait: u64,
}

impl NetnsPool {
    pub(super) fn new() -> io::Result<NetnsPool> {
        Ok(NetnsPool {
            host: File::open("/proc/thread-self/ns/net")?,
            free: Vec::new(),
            lent: Vec::new(),
        })
    }

    /// A namespace for a container: an idle one if any is clean, else a new
    /// one with `lo` up.
    pub(super) fn take(&mut self) -> io::Result<OwnedFd> {
        self.reclaim();
        match self.free.pop() {
            Some(ns) => Ok(ns),
            None => self.make(),
        }
    }

    /// Records `netns` as lent to the supervisor `pid`. Without a pidfd it
    /// could never come back: it is dropped.
    pub(super) fn lend(&mut self, pid: Pid, netns: OwnedFd) {
        // SAFETY: pidfd_open takes a pid and flags and returns a new file
        // descriptor (close-on-exec) or -1; it touches no memory of ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
        if fd >= 0 {
            self.lent.push(Lent {
                // SAFETY: the syscall returned a new descriptor nothing else owns.
                supervisor: unsafe { OwnedFd::from_raw_fd(fd as i32) },
                netns,
                ended: None,
            });
        }
    }

    /// Takes back the namespaces of supervisors that have exited, if clean.
    fn reclaim(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.lent.len() {
            let lent = &mut self.lent[i];
            if lent.ended.is_none() && exited(&lent.supervisor) {
                lent.ended = Some(now);
            }
            let Some(ended) = lent.ended else {
                i += 1;
                continue;
            };
            match self.sockets(&self.lent[i].netns) {
                Ok(Sockets { used: 0, time_wait: 0 }) => {
                    let lent = self.lent.swap_remove(i);
                    if self.free.len() < MAX_FREE {
                        self.free.push(lent.netns);
                    }
                }
                // Sockets still being freed: look again at the next launch.
                Ok(Sockets { time_wait: 0, .. }) if now.duration_since(ended) <= SETTLE => i += 1,
                // Dropped: the kernel tears it down once nothing holds it.
                _ => drop(self.lent.swap_remove(i)),
            }
        }
    }

    /// Runs `f` in the namespace `ns` and comes back. Coming back cannot
    /// fail short of a broken kernel; if it does, the launcher must not go
    /// on in a container's namespace, so it exits (the agent starts a new
    /// one).
    fn inside<T>(&self, ns: &impl AsFd, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        setns(ns, CloneFlags::CLONE_NEWNET)?;
        let r = f();
        if let Err(e) = setns(&self.host, CloneFlags::CLONE_NEWNET) {
            eprintln!("mezzo container launcher: cannot return to its network namespace: {e}");
            std::process::exit(1);
        }
        r
    }

    fn sockets(&self, ns: &OwnedFd) -> io::Result<Sockets> {
        let text = self.inside(ns, || {
            let mut s = String::new();
            File::open("/proc/thread-self/net/sockstat")?.read_to_string(&mut s)?;
            Ok(s)
        })?;
        parse_sockstat(&text).ok_or_else(|| io::Error::other(format!("unexpected sockstat: {text:?}")))
    }

    fn make(&self) -> io::Result<OwnedFd> {
        unshare(CloneFlags::CLONE_NEWNET)?;
        let made = (|| {
            let ns = OwnedFd::from(File::open("/proc/thread-self/ns/net")?);
            super::loopback_up()?;
            OpenOptions::new()
                .write(true)
                .open("/proc/sys/net/ipv4/tcp_no_metrics_save")?
                .write_all(b"1")?;
            Ok(ns)
        })();
        if let Err(e) = setns(&self.host, CloneFlags::CLONE_NEWNET) {
            eprintln!("mezzo container launcher: cannot return to its network namespace: {e}");
            std::process::exit(1);
        }
        made
    }
}

/// Whether the process behind `pidfd` has exited (without waiting).
fn exited(pidfd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call, no timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & libc::POLLIN != 0
}

/// `sockets: used N` and the `tw N` of the `TCP:` line (TIME_WAIT of
/// IPv4 and IPv6 alike; both counts are the namespace's own).
fn parse_sockstat(text: &str) -> Option<Sockets> {
    let field = |line: &str, key: &str| -> Option<u64> {
        let mut words = line.split_whitespace();
        words.find(|w| *w == key)?;
        words.next()?.parse().ok()
    };
    let used = text
        .lines()
        .find(|l| l.starts_with("sockets:"))
        .and_then(|l| field(l, "used"))?;
    let time_wait = text
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| field(l, "tw"))?;
    Some(Sockets { used, time_wait })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockstat_is_read_as_the_kernel_writes_it() {
        let text = "sockets: used 3\nTCP: inuse 0 orphan 0 tw 2 alloc 1 mem 135\nUDP: inuse 0 mem 0\n";
        assert_eq!(parse_sockstat(text), Some(Sockets { used: 3, time_wait: 2 }));
        assert_eq!(parse_sockstat("sockets: used 0\n"), None);
        assert_eq!(parse_sockstat("sockets: used x\nTCP: tw 0\n"), None);
    }
}
