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
//! - **processes**: a namespace comes back only once the container's init
//!   has exited, and with it every process of the container's pid namespace
//!   (a pid namespace is a condition of lending; the launcher clones the
//!   init and keeps a pidfd of it); `mezzo exec` and
//!   command checks enter that pid namespace too;
//! - **sockets**, TIME_WAIT ones and abstract unix names included: it comes
//!   back only when its `sockstat` counts no socket and no TIME_WAIT, checked
//!   again when it is lent; otherwise it is dropped and the kernel tears it
//!   down, as before;
//! - **configuration** (addresses, routes, netfilter): changing it needs
//!   `CAP_NET_ADMIN` over the namespace, that is in the host's user
//!   namespace, which no task has; **network sysctls**, which a task running
//!   as uid 0 could write without a capability, are read-only in the
//!   container's view, so only containers with a view get a lent namespace;
//!   tasks in a user namespace of their own, which would own their network
//!   namespace, never do;
//! - **the TCP metrics and Fast Open caches** (round-trip times and cookies
//!   of past peers): off in lent namespaces (`tcp_no_metrics_save`,
//!   `tcp_fastopen`).
//!
//! What stays: the namespace's cumulative counters (`/proc/net/snmp`,
//! `netstat`, `lo`'s statistics) and IPv6 flow labels a task leased in the
//! last minute; the namespace's identity (inode, cookie) is shared by the
//! containers that had it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns, unshare};

/// Idle namespaces kept at most; more are dropped.
const MAX_FREE: usize = 64;
/// How long a namespace whose sockets are still closing (freed after an
/// RCU grace period) may wait for them before it is dropped.
const SETTLE: Duration = Duration::from_secs(2);

/// The launcher's namespaces: idle ones, and those lent to a container.
#[derive(Debug)]
pub(super) struct NetnsPool {
    /// The launcher's own network namespace, to come back to.
    host: File,
    free: Vec<OwnedFd>,
    lent: Vec<Lent>,
}

#[derive(Debug)]
struct Lent {
    /// A pidfd of the container's init: readable once it has exited.
    init: OwnedFd,
    netns: OwnedFd,
    /// When the init was first seen gone.
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

    /// A namespace for a container: an idle one if it is still clean, else
    /// a new one with `lo` up.
    pub(super) fn take(&mut self) -> io::Result<OwnedFd> {
        // Those taken back just now were checked just now, and are on top.
        let mut fresh = self.reclaim();
        while let Some(ns) = self.free.pop() {
            if fresh > 0 || matches!(self.sockets(&ns), Ok(Sockets { used: 0, time_wait: 0 })) {
                return Ok(ns);
            }
            fresh = fresh.saturating_sub(1);
        }
        self.make()
    }

    /// Records `netns` as lent to the container whose init `init` is (a
    /// pidfd).
    pub(super) fn lend(&mut self, init: OwnedFd, netns: OwnedFd) {
        self.lent.push(Lent {
            init,
            netns,
            ended: None,
        });
    }

    /// Takes back the namespaces of containers whose init has exited, if
    /// clean; how many it put on the idle stack.
    fn reclaim(&mut self) -> usize {
        let now = Instant::now();
        let mut taken = 0;
        let mut i = 0;
        while i < self.lent.len() {
            let lent = &mut self.lent[i];
            if lent.ended.is_none() && exited(&lent.init) {
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
                        taken += 1;
                    }
                }
                // Sockets still being freed: look again at the next launch.
                Ok(Sockets { time_wait: 0, .. }) if now.duration_since(ended) <= SETTLE => i += 1,
                // Dropped: the kernel tears it down once nothing holds it.
                _ => drop(self.lent.swap_remove(i)),
            }
        }
        taken
    }

    /// Runs `f` in the namespace `ns` and comes back. Coming back cannot
    /// fail short of a broken kernel; if it does, the launcher must not go
    /// on in a container's namespace, so it exits (the agent starts a new
    /// one).
    fn inside<T>(&self, ns: &impl AsFd, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        setns(ns, CloneFlags::CLONE_NEWNET)?;
        let r = f();
        self.go_home();
        r
    }

    /// Back to the launcher's own namespace (see [`Self::inside`]).
    fn go_home(&self) {
        if let Err(e) = setns(&self.host, CloneFlags::CLONE_NEWNET) {
            eprintln!("mezzo container launcher: cannot return to its network namespace: {e}");
            std::process::exit(1);
        }
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
            for (sysctl, value) in [("tcp_no_metrics_save", b"1"), ("tcp_fastopen", b"0")] {
                let path = format!("/proc/sys/net/ipv4/{sysctl}");
                OpenOptions::new().write(true).open(path)?.write_all(value)?;
            }
            Ok(ns)
        })();
        self.go_home();
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
