//! cgroup v2 against the real kernel: a cgroup2 hierarchy mounted in a
//! temp dir (`mount -t cgroup2 none DIR`).
//!
//! On this host (cgroup v1, "hybrid") the cgroup2 hierarchy exists but v1
//! binds cpu, memory and pids, so they cannot be enabled in it: what needs
//! them (limits, usage, OOM) is skipped with a printed reason, and what the
//! v2 code does without controllers is tested for real: creating and
//! removing cgroups, `cgroup.procs`, freezing with `cgroup.freeze`, killing
//! with `cgroup.kill` and with the freeze-and-signal fallback, listing, the
//! parent's removal, and a clear error when controllers are missing. On a
//! host with the controllers available in cgroup2, the full backend is
//! exercised too. Every test skips (saying why) when not root or when
//! cgroup2 cannot be mounted, and a guard kills what is left, removes the
//! test's cgroups and unmounts, even when the test panics.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::layout::Writer;
use super::v2::{V2Backend, V2Cgroup};
use super::*;

/// A cgroup2 mount in a temp dir with one parent cgroup for this test.
struct Mounted {
    dir: tempfile::TempDir,
    parent: String,
    children: Vec<Child>,
}

impl Mounted {
    fn new() -> Option<Mounted> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: cgroup2 tests need root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        if let Err(e) = mount(
            Some("none"),
            dir.path(),
            Some("cgroup2"),
            MsFlags::empty(),
            None::<&str>,
        ) {
            eprintln!("skipped: cannot mount cgroup2 at {}: {e}", dir.path().display());
            return None;
        }
        static N: AtomicUsize = AtomicUsize::new(0);
        let parent = format!(
            "mezzo-v2test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        Some(Mounted {
            dir,
            parent,
            children: Vec::new(),
        })
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn parent_dir(&self) -> PathBuf {
        self.root().join(&self.parent)
    }

    fn controllers(&self) -> Vec<String> {
        fs::read_to_string(self.root().join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// A leaf made with a plain mkdir (as `create` does), without limits.
    fn leaf(&self, name: &str) -> V2Cgroup {
        let dir = self.parent_dir().join(name);
        fs::create_dir_all(&dir).unwrap();
        V2Cgroup::new(self.root(), &format!("{}/{name}", self.parent), Writer::CHECKED)
    }

    /// A `sleep` child moved into `cg`.
    fn sleeper_in(&mut self, cg: &V2Cgroup) -> u32 {
        let child = Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.children.push(child);
        cg.add_pid(pid).unwrap();
        pid
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Deepest first: leaves, then the parent.
        let parent = self.parent_dir();
        let mut dirs: Vec<PathBuf> = fs::read_dir(&parent)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.push(parent);
        for d in dirs {
            let _ = fs::write(d.join("cgroup.freeze"), "0");
            if let Ok(procs) = fs::read_to_string(d.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while d.exists() && fs::remove_dir(&d).is_err() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
        }
        if umount2(self.dir.path(), MntFlags::empty()).is_err() {
            let _ = umount2(self.dir.path(), MntFlags::MNT_DETACH);
        }
    }
}

fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.split_whitespace().next()?.chars().next()
}

#[test]
fn real_v2_procs_freeze_kill_and_removal() {
    let Some(mut m) = Mounted::new() else { return };
    let backend = V2Backend::at(m.root());
    let cg = m.leaf("a");
    assert!(backend.open(&m.parent, "a").unwrap().is_some());
    assert_eq!(backend.list(&m.parent).unwrap(), vec!["a".to_owned()]);
    let pid = m.sleeper_in(&cg);
    assert_eq!(cg.pids().unwrap(), vec![pid]);
    assert_eq!(cg.procs_files(), vec![cg.dir.join("cgroup.procs")]);

    // Freezing is built into v2 (no controller needed).
    let events = cg.dir.join("cgroup.events");
    fs::write(cg.dir.join("cgroup.freeze"), "1").unwrap();
    wait_until("frozen", Duration::from_secs(5), || {
        fs::read_to_string(&events).unwrap().contains("frozen 1")
    });
    fs::write(cg.dir.join("cgroup.freeze"), "0").unwrap();
    wait_until("thawed", Duration::from_secs(5), || {
        fs::read_to_string(&events).unwrap().contains("frozen 0")
    });

    // kill_all empties it (cgroup.kill on Linux 5.14+, else freeze + SIGKILL).
    cg.kill_all().unwrap();
    assert!(cg.pids().unwrap().is_empty());
    wait_until("the sleeper reaped", Duration::from_secs(5), || {
        m.children.iter_mut().all(|c| c.try_wait().unwrap().is_some())
    });
    assert_eq!(proc_state(pid), None, "process {pid} survived");

    // remove_parent refuses while a child exists; destroy, then it works.
    assert!(backend.remove_parent(&m.parent).is_err());
    cg.destroy().unwrap();
    assert!(!cg.dir.exists());
    assert!(backend.open(&m.parent, "a").unwrap().is_none());
    backend.remove_parent(&m.parent).unwrap();
    assert!(!m.parent_dir().exists());
}

#[test]
fn real_v2_freeze_and_signal_fallback_kills_everything() {
    let Some(mut m) = Mounted::new() else { return };
    let cg = m.leaf("b");
    // A shell that keeps forking, so a kill that does not freeze first
    // could miss the newest child.
    let child = Command::new("sh")
        .arg("-c")
        .arg("while :; do sleep 60 & sleep 0.01; done")
        .stdin(Stdio::null())
        // Not the test's own pipes: a straggler would hold them open.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    cg.add_pid(child.id()).unwrap();
    m.children.push(child);
    wait_until("a few forks", Duration::from_secs(5), || cg.pids().unwrap().len() >= 4);
    // The fallback path (kernels without cgroup.kill), on the real kernel.
    kill_all_with(&cg.dir, &super::v2::V2Freezer(&cg.dir), &|| cg.pids()).unwrap();
    assert!(cg.pids().unwrap().is_empty());
    assert_eq!(
        fs::read_to_string(cg.dir.join("cgroup.freeze")).unwrap().trim(),
        "0",
        "left frozen"
    );
}

#[test]
fn real_v2_create_with_or_without_controllers() {
    let Some(mut m) = Mounted::new() else { return };
    let backend = V2Backend::at(m.root());
    let limits = Limits {
        cpu_shares: 512,
        cpu_quota: Some(Duration::from_millis(50)),
        memory_bytes: Some(64 << 20),
        pids_max: Some(16),
    };
    let have = m.controllers();
    let missing: Vec<&str> = ["cpu", "memory", "pids"]
        .into_iter()
        .filter(|c| !have.iter().any(|h| h == c))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "skipped: limits, usage and OOM on cgroup2 (controllers {missing:?} are bound to cgroup v1 on this host; cgroup2 offers {have:?})"
        );
        // What create does there: a clear error naming the file, and no
        // half-made leaf left behind.
        let err = backend.create(&m.parent, "c", &limits).unwrap_err().to_string();
        assert!(err.contains("cgroup.subtree_control"), "{err}");
        assert!(!m.parent_dir().join("c").exists());
        return;
    }
    let cg = backend.create(&m.parent, "c", &limits).unwrap();
    let dir = m.parent_dir().join("c");
    assert_eq!(fs::read_to_string(dir.join("cpu.max")).unwrap().trim(), "50000 100000");
    assert_eq!(
        fs::read_to_string(dir.join("memory.max")).unwrap().trim(),
        (64u64 << 20).to_string()
    );
    assert_eq!(fs::read_to_string(dir.join("pids.max")).unwrap().trim(), "16");
    let leaf = V2Cgroup::new(m.root(), &format!("{}/c", m.parent), Writer::CHECKED);
    let pid = m.sleeper_in(&leaf);
    assert_eq!(cg.pids().unwrap(), vec![pid]);
    let u = cg.usage().unwrap();
    assert_eq!(u.pids, 1);
    assert!(!cg.oom_killed().unwrap());
    cg.destroy().unwrap();
    assert!(!dir.exists());
}

/// Runs a root shell script with `nodes` (a dir of device nodes made by
/// the test), in `cg` when given (moved in before it starts), and returns
/// its output.
fn device_probe(m: &mut Mounted, cg: Option<&V2Cgroup>, nodes: &Path) -> String {
    let script = r#"read go
        try() { if "$@" 2>/dev/null; then echo "$* ok"; else echo "$* denied"; fi; }
        # Not `:`, a special builtin: a failed redirection would end the shell.
        opens() { true < "$1"; }
        try opens /dev/null
        try opens /dev/urandom
        try opens "$N/kmsg"
        try opens "$N/loop"
        try mknod "$N/null2" c 1 3
        try mknod "$N/kmsg2" c 1 11
        try mknod "$N/disk2" b 8 0
        rm -f "$N/null2" "$N/kmsg2" "$N/disk2""#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).env("N", nodes).stderr(Stdio::null());
    probe(m, cg, cmd)
}

/// Runs `cmd`, which waits for a line on stdin before it does anything,
/// in `cg` when given (moved in before the line is sent), and returns its
/// output.
fn probe(m: &mut Mounted, cg: Option<&V2Cgroup>, mut cmd: Command) -> String {
    use std::io::{Read, Write};
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    if let Some(cg) = cg {
        cg.add_pid(child.id()).unwrap();
    }
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    m.children.push(child);
    out
}

#[test]
fn real_v2_device_filter_allows_only_the_list() {
    let Some(mut m) = Mounted::new() else { return };
    fs::create_dir_all(m.parent_dir()).unwrap();
    V2Backend::at(m.root()).restrict_parent(&m.parent_dir(), true).unwrap();
    // A restarted agent attaches again: the program is replaced, not added.
    V2Backend::at(m.root()).restrict_parent(&m.parent_dir(), false).unwrap();
    assert_eq!(super::devices::attached_v2(&m.parent_dir()).unwrap(), 1);
    let cg = m.leaf("d");

    let nodes = tempfile::tempdir().unwrap();
    let mk = |name: &str, kind: nix::sys::stat::SFlag, major: u64, minor: u64| {
        nix::sys::stat::mknod(
            &nodes.path().join(name),
            kind,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(major, minor),
        )
        .unwrap();
    };
    mk("kmsg", nix::sys::stat::SFlag::S_IFCHR, 1, 11);
    mk("loop", nix::sys::stat::SFlag::S_IFBLK, 7, 0);

    // Outside the cgroup root may do all of it: what the cgroup refuses
    // below is the filter's doing.
    let outside = device_probe(&mut m, None, nodes.path());
    assert!(!outside.contains("denied"), "{outside}");
    let inside = device_probe(&mut m, Some(&cg), nodes.path());
    let n = nodes.path().display();
    for want in [
        "opens /dev/null ok".to_owned(),
        "opens /dev/urandom ok".to_owned(),
        format!("opens {n}/kmsg denied"),
        format!("opens {n}/loop denied"),
        format!("mknod {n}/null2 c 1 3 ok"),
        format!("mknod {n}/kmsg2 c 1 11 denied"),
        format!("mknod {n}/disk2 b 8 0 denied"),
    ] {
        assert!(inside.lines().any(|l| l == want), "want {want:?} in:\n{inside}");
    }
}

/// A host socket of `kind` on 127.0.0.1 with `option` (`SO_REUSEPORT`,
/// `SO_REUSEADDR`) set, listening if a stream; and its port.
fn shared_socket(kind: libc::c_int, option: libc::c_int) -> (std::os::fd::OwnedFd, u16) {
    use std::os::fd::{AsRawFd, FromRawFd};
    #[allow(unsafe_code)]
    // SAFETY: plain socket calls on a descriptor made here, with a valid
    // sockaddr_in and an int option of the sizes passed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, kind, 0);
        assert!(fd >= 0);
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        assert_eq!(
            libc::setsockopt(fd, libc::SOL_SOCKET, option, (&raw const one).cast(), size),
            0
        );
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(libc::bind(fd, (&raw const addr).cast(), len), 0);
        if kind == libc::SOCK_STREAM {
            assert_eq!(libc::listen(fd, 8), 0);
        }
        let mut len = len;
        assert_eq!(
            libc::getsockname(owned.as_raw_fd(), (&raw mut addr).cast(), &mut len),
            0
        );
        (owned, u16::from_be(addr.sin_port))
    }
}

/// Runs a Python probe of loopback (ports in `env`), in `cg` when given
/// (moved in before it makes a socket), and returns its output.
fn loopback_probe(m: &mut Mounted, cg: Option<&V2Cgroup>, env: &[(&str, u16)]) -> String {
    let script = r#"
import ctypes, errno, fcntl, os, socket, struct, sys
sys.stdin.readline()
P = {k: int(v) for k, v in os.environ.items() if k.startswith("P_")}
def res(name, f):
    try:
        f()
        print(f"{name} ok")
    except OSError as e:
        print(f"{name} {errno.errorcode.get(e.errno, e.errno)}")
def tcp(addr, port, fam=socket.AF_INET):
    def f():
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect((addr, port))
    return f
def udp(port, connect=False):
    def f():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            if connect:
                s.connect(("127.0.0.1", port))
            else:
                s.sendto(b"x", ("127.0.0.1", port))
    return f
def fastopen():
    with socket.socket() as s:
        s.sendto(b"x", socket.MSG_FASTOPEN, ("127.0.0.1", P["P_HOST"]))
own = socket.socket()
own.bind(("127.0.0.1", 0))
own.listen()
print("priority", hex(own.getsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY)))
res("own", tcp("127.0.0.1", own.getsockname()[1]))
res("own-any", tcp("0.0.0.0", own.getsockname()[1]))
own_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
own_udp.bind(("127.0.0.1", 0))
res("own-udp", udp(own_udp.getsockname()[1]))
res("host", tcp("127.0.0.1", P["P_HOST"]))
res("host-any", tcp("0.0.0.0", P["P_HOST"]))
res("host-127.0.0.2", tcp("127.0.0.2", P["P_HOST"]))
res("allowed", tcp("127.0.0.1", P["P_ALLOWED"]))
res("dual-v6", tcp("::1", P["P_DUAL"], socket.AF_INET6))
res("dual-mapped", tcp("::ffff:127.0.0.1", P["P_DUAL"], socket.AF_INET6))
res("dual-any6", tcp("::", P["P_DUAL"], socket.AF_INET6))
res("udp-send", udp(P["P_UDP"]))
res("udp-connect", udp(P["P_UDP"], connect=True))
squat = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
squat.bind(("127.0.0.1", P["P_TCPONLY"]))
res("tcp-behind-own-udp", tcp("127.0.0.1", P["P_TCPONLY"]))
res("fastopen", fastopen)
# The unspecified destination from a bound socket: the kernel picks the
# source's address after the hook; the task listens where the filter looks.
def peer(name, fam, bound, dst):
    try:
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.bind((bound, 0))
            s.connect(dst)
            print(name, s.getpeername()[0])
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, e.errno))
decoy4 = socket.socket()
decoy4.bind(("127.0.0.1", P["P_HOST2"]))
decoy4.listen()
peer("unspec-bound4", socket.AF_INET, "127.0.0.2", ("0.0.0.0", P["P_HOST2"]))
decoy6 = socket.socket(socket.AF_INET6)
decoy6.bind(("::1", P["P_TCPONLY"]))
decoy6.listen()
peer("unspec-bound6", socket.AF_INET6, "::ffff:127.0.0.1", ("::", P["P_TCPONLY"]))
def udplite():
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136).close()
res("udplite", udplite)
# Sharing a port: with the host's SO_REUSEPORT listener and SO_REUSEADDR
# datagram socket (same user: root), and among the task's own sockets.
def share(kind, opt, addr, port, fam=socket.AF_INET):
    def f():
        s = socket.socket(fam, kind)
        s.setsockopt(socket.SOL_SOCKET, opt, 1)
        s.bind((addr, port))
        KEEP.append(s)
    return f
KEEP = []
res("reuseport-host", share(socket.SOCK_STREAM, socket.SO_REUSEPORT, "127.0.0.1", P["P_REUSE"]))
res("reuseport-host6", share(socket.SOCK_STREAM, socket.SO_REUSEPORT, "::ffff:127.0.0.1", P["P_REUSE"], socket.AF_INET6))
res("reuseaddr-host-udp", share(socket.SOCK_DGRAM, socket.SO_REUSEADDR, "127.0.0.1", P["P_REUSEUDP"]))
mine = socket.socket()
mine.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
mine.bind(("127.0.0.1", 0))
mine.listen()
res("reuseport-own", share(socket.SOCK_STREAM, socket.SO_REUSEPORT, "127.0.0.1", mine.getsockname()[1]))
res("bind-free", share(socket.SOCK_STREAM, socket.SO_REUSEADDR, "127.0.0.1", 0))
sys.stdout.flush()
# Another network namespace's loopback is its own: no listener there.
if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) == 0:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", 1))
    res("other-netns", tcp("127.0.0.1", P["P_HOST"]))
else:
    print("other-netns unshare failed")
"#;
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script);
    for (k, port) in env {
        cmd.env(k, port.to_string());
    }
    probe(m, cg, cmd)
}

/// Issue 15: from a cgroup under the filter, loopback reaches the cgroup's
/// own listeners (TCP and UDP) and the allowed port, and nothing of the
/// host's: not by 127.0.0.1, 127.0.0.2, 0.0.0.0, `::1`, `::`, IPv4 mapped
/// into IPv6, a datagram, a connected UDP socket, TCP Fast Open, or a UDP
/// socket of its own on a TCP listener's port, nor by the unspecified
/// address from a socket bound to another loopback address (which the
/// kernel would route to); no UDP-Lite socket; no share of a host
/// socket's port (`SO_REUSEPORT`, `SO_REUSEADDR`), where its own sockets
/// share theirs; a network namespace of its own is not filtered. Outside the cgroup all of it connects (the
/// control), and once the filter is detached so does the cgroup.
#[test]
fn real_loopback_filter_reaches_only_tasks_and_allowed_ports() {
    use std::net::{TcpListener, UdpSocket};
    let Some(mut m) = Mounted::new() else { return };
    let parent = m.parent_dir();
    fs::create_dir_all(&parent).unwrap();
    let host = TcpListener::bind("0.0.0.0:0").unwrap();
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dual = TcpListener::bind("[::]:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tcponly = TcpListener::bind("127.0.0.1:0").unwrap();
    let host2 = TcpListener::bind("127.0.0.2:0").unwrap();
    // Host sockets that let a socket of the same user share their port.
    let reuse = shared_socket(libc::SOCK_STREAM, libc::SO_REUSEPORT);
    let reuse_udp = shared_socket(libc::SOCK_DGRAM, libc::SO_REUSEADDR);
    let port = |a: std::io::Result<std::net::SocketAddr>| a.unwrap().port();
    let env = [
        ("P_HOST", port(host.local_addr())),
        ("P_ALLOWED", port(allowed.local_addr())),
        ("P_DUAL", port(dual.local_addr())),
        ("P_UDP", port(udp.local_addr())),
        ("P_TCPONLY", port(tcponly.local_addr())),
        ("P_HOST2", port(host2.local_addr())),
        ("P_REUSE", reuse.1),
        ("P_REUSEUDP", reuse_udp.1),
    ];
    let allowed_port = env[1].1;
    let filter = super::LoopbackFilter::new(&[allowed_port..=allowed_port]).unwrap();
    filter.attach(&parent).unwrap();
    // A restarted agent attaches again: replaced, not added.
    filter.attach(&parent).unwrap();
    assert_eq!(super::loopback::attached(&parent).unwrap(), 7);
    let cg = m.leaf("t");

    let outside = loopback_probe(&mut m, None, &env);
    let special = ["priority", "other-netns", "unspec-bound", "udplite", "reuseport-host6"];
    for line in outside.lines().filter(|l| !special.iter().any(|s| l.starts_with(s))) {
        assert!(line.ends_with(" ok"), "outside: {line:?} in:\n{outside}");
    }
    // What the kernel does without the filter: the host's listeners.
    for want in ["unspec-bound4 127.0.0.2", "unspec-bound6 ::ffff:127.0.0.1"] {
        assert!(
            outside.lines().any(|l| l == want),
            "outside: want {want:?} in:\n{outside}"
        );
    }
    assert!(outside.contains("priority 0x0\n"), "{outside}");

    let inside = loopback_probe(&mut m, Some(&cg), &env);

    let mark = format!("priority {:#x}", super::loopback::TASK_PRIORITY);
    for want in [
        mark.as_str(),
        "own ok",
        "own-any ok",
        "own-udp ok",
        "allowed ok",
        "host EPERM",
        "host-any EPERM",
        "host-127.0.0.2 EPERM",
        "dual-v6 EPERM",
        "dual-mapped EPERM",
        "dual-any6 EPERM",
        "udp-send EPERM",
        "udp-connect EPERM",
        "tcp-behind-own-udp EPERM",
        "fastopen EPERM",
        "other-netns ECONNREFUSED",
        // Sent where the filter looked: the task's own listener.
        "unspec-bound4 127.0.0.1",
        "reuseport-host EPERM",
        "reuseport-host6 EPERM",
        "reuseaddr-host-udp EPERM",
        "reuseport-own ok",
        "bind-free ok",
    ] {
        assert!(inside.lines().any(|l| l == want), "want {want:?} in:\n{inside}");
    }
    assert!(
        inside
            .lines()
            .any(|l| l.starts_with("unspec-bound6 ") && l != "unspec-bound6 ::ffff:127.0.0.1"),
        "{inside}"
    );
    if outside.contains("udplite ok") {
        assert!(inside.contains("udplite EPERM"), "{inside}");
    }

    super::loopback::detach(&parent).unwrap();
    assert_eq!(super::loopback::attached(&parent).unwrap(), 0);
    let after = loopback_probe(&mut m, Some(&cg), &env);
    assert!(after.lines().any(|l| l == "host ok"), "{after}");
}
