//! Tests of DESIGN.md "Containers" (cpu shares and quota, memory limit
//! with OOM reported, pids limit, killing the whole cgroup).
//!
//! `real_*` tests use this host's cgroup v1 hierarchies under
//! /sys/fs/cgroup, each under its own parent `mezzo-test-<pid>-<n>` that a
//! guard removes (killing whatever is left) even when the test panics.
//! They skip, saying so, when not root or the host has no v1 cgroups.
//! `v2_*` and `detect_*` tests run on a temp dir laid out like a hierarchy.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::layout::Writer;
use super::v2::{V2Backend, V2Cgroup, shares_to_weight};
use super::*;

const ROOT: &str = "/sys/fs/cgroup";
const V1_HIERARCHIES: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "freezer"];

fn limits() -> Limits {
    Limits {
        cpu_shares: 1024,
        cpu_quota: None,
        memory_bytes: None,
        pids_max: None,
    }
}

// ---------------------------------------------------------------------------
// Real cgroups on this host.

/// A unique parent that is torn down on drop, panic or not.
struct TestParent {
    backend: Box<dyn CgroupBackend>,
    parent: String,
}

impl TestParent {
    /// None (test skipped) when this host cannot run real cgroup tests.
    fn new() -> Option<TestParent> {
        static N: AtomicUsize = AtomicUsize::new(0);
        if !nix::unistd::geteuid().is_root() || !Path::new(ROOT).join("cpu/cpu.shares").exists() {
            eprintln!("skipped: needs root and cgroup v1 at {ROOT}");
            return None;
        }
        let backend = detect(Path::new(ROOT)).unwrap();
        let n = N.fetch_add(1, Ordering::SeqCst);
        let parent = format!("mezzo-test-{}-{n}", std::process::id());
        Some(TestParent { backend, parent })
    }

    fn create(&self, name: &str, limits: &Limits) -> Box<dyn Cgroup> {
        self.backend.create(&self.parent, name, limits).unwrap()
    }

    fn dir(&self, hierarchy: &str, name: &str) -> PathBuf {
        Path::new(ROOT).join(hierarchy).join(&self.parent).join(name)
    }

    fn read(&self, hierarchy: &str, name: &str, file: &str) -> String {
        let path = self.dir(hierarchy, name).join(file);
        fs::read_to_string(&path).unwrap().trim().to_owned()
    }
}

impl Drop for TestParent {
    fn drop(&mut self) {
        let tidy = || -> Result<(), CgroupError> {
            for name in self.backend.list(&self.parent)? {
                if let Some(cg) = self.backend.open(&self.parent, &name)? {
                    cg.destroy()?;
                }
            }
            self.backend.remove_parent(&self.parent)
        };
        if let Err(e) = tidy() {
            eprintln!("cleanup through the API failed ({e}); removing by hand");
        }
        // Whatever the API left (or if it failed), removed file by file.
        for h in V1_HIERARCHIES {
            raw_remove(&Path::new(ROOT).join(h).join(&self.parent));
        }
    }
}

/// Thaws, kills and removes a cgroup tree without the code under test.
fn raw_remove(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    let _ = fs::write(dir.join("freezer.state"), "THAWED");
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                raw_remove(&e.path());
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A child that is killed and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "child {} did not exit in {within:?}",
                self.pid()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn spawn(program: &str, args: &[&str]) -> Proc {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

/// Runs `body` in a shell that first writes its own pid into every procs
/// file, as a container's init does after fork, so nothing it forks can
/// escape the cgroup.
fn spawn_inside(cg: &dyn Cgroup, body: &str) -> Proc {
    let files: Vec<String> = cg.procs_files().iter().map(|p| p.display().to_string()).collect();
    let script = format!(
        "for f in {}; do echo $$ > \"$f\" || exit 97; done; {body}",
        files.join(" ")
    );
    spawn("sh", &["-c", &script])
}

fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn real_detect_is_v1_on_this_host() {
    let Some(t) = TestParent::new() else { return };
    assert_eq!(t.backend.version(), CgroupVersion::V1);
}

#[test]
fn real_create_applies_limits() {
    let Some(t) = TestParent::new() else { return };
    let capped = Limits {
        cpu_shares: 1536,
        cpu_quota: Some(Duration::from_millis(50)),
        memory_bytes: Some(64 << 20),
        pids_max: Some(100),
    };
    let _cg = t.create("capped", &capped);
    assert_eq!(t.read("cpu", "capped", "cpu.shares"), "1536");
    assert_eq!(t.read("cpu", "capped", "cpu.cfs_period_us"), "100000");
    assert_eq!(t.read("cpu", "capped", "cpu.cfs_quota_us"), "50000");
    assert_eq!(
        t.read("memory", "capped", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(t.read("pids", "capped", "pids.max"), "100");
    for h in V1_HIERARCHIES {
        assert!(t.dir(h, "capped").is_dir(), "{h} hierarchy has the cgroup");
    }

    let _open = t.create(
        "open",
        &Limits {
            cpu_shares: 0,
            ..limits()
        },
    );
    assert_eq!(t.read("cpu", "open", "cpu.shares"), "2", "shares clamp to 2");
    assert_eq!(t.read("cpu", "open", "cpu.cfs_quota_us"), "-1");
    assert_eq!(t.read("pids", "open", "pids.max"), "max");

    let again = t.backend.create(&t.parent, "capped", &capped).unwrap_err();
    assert!(matches!(again, CgroupError::Exists { .. }), "{again}");
    assert!(again.to_string().contains(&t.parent), "{again}");

    let tiny = Limits {
        cpu_quota: Some(Duration::from_micros(500)),
        ..limits()
    };
    let err = t.backend.create(&t.parent, "tiny", &tiny).unwrap_err();
    assert!(matches!(err, CgroupError::InvalidLimit { .. }), "{err}");
    assert!(t.backend.open(&t.parent, "tiny").unwrap().is_none());

    let err = t.backend.create(&t.parent, "../escape", &limits()).unwrap_err();
    assert!(matches!(err, CgroupError::InvalidName { .. }), "{err}");
}

#[test]
fn real_added_pid_is_listed_and_kill_all_empties_it() {
    let Some(t) = TestParent::new() else { return };
    let cg = t.create("sleeper", &limits());
    let mut child = spawn("sleep", &["30"]);
    cg.add_pid(child.pid()).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![child.pid()]);
    assert_eq!(cg.usage().unwrap().pids, 1);
    for file in cg.procs_files() {
        let listed = fs::read_to_string(&file).unwrap();
        assert_eq!(listed.trim(), child.pid().to_string(), "{}", file.display());
    }

    cg.kill_all().unwrap();
    assert!(cg.pids().unwrap().is_empty());
    assert_eq!(t.read("freezer", "sleeper", "freezer.state"), "THAWED");
    let status = child.wait_exit(Duration::from_secs(5));
    assert!(!status.success());
    assert!(!cg.oom_killed().unwrap());

    let reopened = t.backend.open(&t.parent, "sleeper").unwrap().unwrap();
    reopened.destroy().unwrap();
    for h in V1_HIERARCHIES {
        assert!(!t.dir(h, "sleeper").exists(), "{h} dir removed");
    }
    assert!(t.backend.open(&t.parent, "sleeper").unwrap().is_none());
}

#[test]
fn real_usage_counts_cpu_and_memory() {
    let Some(t) = TestParent::new() else { return };
    let cg = t.create("busy", &limits());
    // v1 does not move charges with a process, so it allocates after joining.
    let _child = spawn_inside(
        &*cg,
        "x=$(head -c 4000000 /dev/zero | tr '\\0' a); i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 30",
    );
    wait_for("some cpu time", Duration::from_secs(20), || {
        cg.usage().unwrap().cpu_time >= Duration::from_millis(50)
    });
    let usage = cg.usage().unwrap();
    assert!(usage.memory_rss + usage.memory_cache > 0, "{usage:?}");
    assert!(usage.pids >= 1, "{usage:?}");
    cg.destroy().unwrap();
}

#[test]
fn real_memory_hog_is_oom_killed() {
    let Some(t) = TestParent::new() else { return };
    let cg = t.create(
        "hog",
        &Limits {
            memory_bytes: Some(20 << 20),
            ..limits()
        },
    );
    assert!(!cg.oom_killed().unwrap());
    let mut child = spawn_inside(&*cg, "x=$(head -c 50000000 /dev/zero | tr '\\0' a); sleep 1");
    let status = child.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "{status:?}");
    assert!(cg.oom_killed().unwrap());
    cg.destroy().unwrap();
}

#[test]
fn real_fork_loop_stops_at_pids_max() {
    let Some(t) = TestParent::new() else { return };
    let cg = t.create(
        "forker",
        &Limits {
            pids_max: Some(5),
            ..limits()
        },
    );
    let _child = spawn_inside(&*cg, "for i in 1 2 3 4 5 6 7 8; do sleep 30 & done; wait");
    // The limit was hit: the kernel counts refused forks in pids.events.
    wait_for("a refused fork", Duration::from_secs(10), || {
        t.read("pids", "forker", "pids.events").starts_with("max ")
            && t.read("pids", "forker", "pids.events") != "max 0"
    });
    let pids = cg.pids().unwrap();
    assert!(!pids.is_empty() && pids.len() <= 5, "{pids:?}");
    assert!(cg.usage().unwrap().pids <= 5);
    cg.kill_all().unwrap();
    assert!(cg.pids().unwrap().is_empty());
    cg.destroy().unwrap();
}

/// `destroy` of a cgroup still in use: removing the empty ones straight
/// away fails on the first busy one, and it kills and removes the rest.
#[test]
fn real_destroy_kills_what_is_still_inside() {
    let Some(t) = TestParent::new() else { return };
    let cg = t.create("busy", &limits());
    let _child = spawn_inside(&*cg, "sleep 30 & sleep 30; wait");
    wait_for("both sleeps", Duration::from_secs(10), || {
        cg.pids().map(|p| p.len() >= 2).unwrap_or(false)
    });
    cg.destroy().unwrap();
    for hierarchy in V1_HIERARCHIES {
        assert!(!t.dir(hierarchy, "busy").exists(), "{hierarchy}/busy is still there");
    }
}

#[test]
fn real_guard_cleans_up_after_a_panic() {
    let Some(probe) = TestParent::new() else { return };
    drop(probe);
    let mut child = spawn("sleep", &["30"]);
    let pid = child.pid();
    let parent = thread::spawn(move || {
        let t = TestParent::new().unwrap();
        let parent = t.parent.clone();
        t.create("left", &limits()).add_pid(pid).unwrap();
        std::panic::panic_any(parent);
    })
    .join()
    .unwrap_err();
    let parent = parent.downcast_ref::<String>().unwrap();
    assert!(
        child.wait_exit(Duration::from_secs(10)).code().is_none(),
        "killed by a signal"
    );
    for h in V1_HIERARCHIES {
        assert!(!Path::new(ROOT).join(h).join(parent).exists(), "{h}");
    }
}

#[test]
fn real_list_and_remove_parent() {
    let Some(t) = TestParent::new() else { return };
    assert!(t.backend.list(&t.parent).unwrap().is_empty(), "no parent yet");
    let a = t.create("a", &limits());
    let b = t.create("b", &limits());
    assert_eq!(t.backend.list(&t.parent).unwrap(), vec!["a", "b"]);

    let busy = t.backend.remove_parent(&t.parent).unwrap_err();
    assert!(busy.to_string().contains(&t.parent), "{busy}");

    a.destroy().unwrap();
    b.destroy().unwrap();
    b.destroy().unwrap(); // already gone: fine
    assert!(t.backend.list(&t.parent).unwrap().is_empty());
    t.backend.remove_parent(&t.parent).unwrap();
    for h in V1_HIERARCHIES {
        assert!(!Path::new(ROOT).join(h).join(&t.parent).exists(), "{h}");
    }
    t.backend.remove_parent(&t.parent).unwrap(); // already gone: fine
}

/// Why the launch path may skip the existence check of `Writer` on a
/// cgroupfs: the kernel refuses to make a control file, which is what
/// cgroups-rs's `File::create` would otherwise do.
#[test]
fn real_kernel_refuses_to_make_a_control_file() {
    let Some(t) = TestParent::new() else { return };
    let _cg = t.create("k", &limits());
    for h in V1_HIERARCHIES {
        let err = fs::File::create(t.dir(h, "k").join("no.such.file")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{h}");
        assert!(!Writer::for_mount(&Path::new(ROOT).join(h)).check_exists, "{h}");
    }
}

// ---------------------------------------------------------------------------
// Fake hierarchies in a temp dir.

fn put(path: &Path, contents: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
}

fn get(path: &Path) -> String {
    fs::read_to_string(path).unwrap()
}

#[test]
fn detect_lists_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let err = detect(tmp.path()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
    assert!(
        msg.contains("v1 lacks controllers cpu, cpuacct, memory, pids, freezer"),
        "{msg}"
    );

    put(&tmp.path().join("unified/cgroup.controllers"), "cpu io\n");
    let msg = detect(tmp.path()).unwrap_err().to_string();
    assert!(msg.contains("unified lacks controllers memory, pids"), "{msg}");
}

#[test]
fn detect_prefers_v2_at_root_then_v1() {
    let v2 = tempfile::tempdir().unwrap();
    put(&v2.path().join("cgroup.controllers"), "cpuset cpu io memory pids\n");
    assert_eq!(detect(v2.path()).unwrap().version(), CgroupVersion::V2);

    let v1 = tempfile::tempdir().unwrap();
    for (h, marker) in [
        ("cpu", Some("cpu.shares")),
        ("cpuacct", Some("cpuacct.usage")),
        ("memory", Some("memory.limit_in_bytes")),
        ("pids", None),
        ("freezer", None),
    ] {
        put(&v1.path().join(h).join("cgroup.procs"), "");
        if let Some(m) = marker {
            put(&v1.path().join(h).join(m), "0\n");
        }
    }
    // A hybrid host's empty unified hierarchy does not win over v1.
    put(&v1.path().join("unified/cgroup.controllers"), "\n");
    assert_eq!(detect(v1.path()).unwrap().version(), CgroupVersion::V1);

    fs::remove_file(v1.path().join("pids/cgroup.procs")).unwrap();
    let msg = detect(v1.path()).unwrap_err().to_string();
    assert!(msg.contains("v1 lacks controllers pids"), "{msg}");
}

#[test]
fn v2_enables_controllers_once() {
    let tmp = tempfile::tempdir().unwrap();
    put(&tmp.path().join("cgroup.subtree_control"), "memory\n");
    V2Backend::enable_controllers(tmp.path()).unwrap();
    assert_eq!(get(&tmp.path().join("cgroup.subtree_control")), "+cpu +pids");
    put(&tmp.path().join("cgroup.subtree_control"), "cpu memory pids\n");
    V2Backend::enable_controllers(tmp.path()).unwrap();
    assert_eq!(get(&tmp.path().join("cgroup.subtree_control")), "cpu memory pids\n");
}

/// A leaf laid out as the kernel would make it.
fn v2_leaf(dir: &Path) -> V2Cgroup {
    for (file, contents) in [
        ("cgroup.procs", ""),
        ("cgroup.freeze", "0\n"),
        ("cgroup.events", "populated 0\nfrozen 0\n"),
        ("cpu.weight", "100\n"),
        ("cpu.max", "max 100000\n"),
        ("memory.max", "max\n"),
        ("memory.swap.max", "max\n"),
        ("pids.max", "max\n"),
    ] {
        put(&dir.join(file), contents);
    }
    let name = dir.file_name().unwrap().to_str().unwrap();
    let root = dir.parent().unwrap();
    V2Cgroup::new(root, name, Writer::for_mount(root))
}

#[test]
fn v2_writes_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = v2_leaf(&tmp.path().join("mezzo-a/t1"));
    cg.apply(&Limits {
        cpu_shares: 2048,
        cpu_quota: Some(Duration::from_millis(150)),
        memory_bytes: Some(64 << 20),
        pids_max: Some(10),
    })
    .unwrap();
    assert_eq!(get(&cg.dir.join("cpu.weight")), shares_to_weight(2048).to_string());
    assert_eq!(get(&cg.dir.join("cpu.max")), "150000 100000");
    assert_eq!(get(&cg.dir.join("memory.max")), (64u64 << 20).to_string());
    assert_eq!(get(&cg.dir.join("memory.swap.max")), "0");
    assert_eq!(get(&cg.dir.join("pids.max")), "10");

    cg.apply(&limits()).unwrap();
    assert_eq!(get(&cg.dir.join("cpu.max")), "max 100000");
    assert_eq!(get(&cg.dir.join("memory.max")), "max");
    assert_eq!(get(&cg.dir.join("pids.max")), "max");
}

#[test]
fn v2_shares_map_to_weight() {
    assert_eq!(shares_to_weight(2), 1);
    assert_eq!(shares_to_weight(1024), 39);
    assert_eq!(shares_to_weight(262_144), 10_000);
}

#[test]
fn v2_reads_usage_oom_and_pids() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = v2_leaf(&tmp.path().join("p/t"));
    put(
        &cg.dir.join("cpu.stat"),
        "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n",
    );
    put(&cg.dir.join("memory.stat"), "anon 4096\nfile 8192\nkernel 100\n");
    put(&cg.dir.join("pids.current"), "3\n");
    put(
        &cg.dir.join("memory.events"),
        "low 0\nhigh 0\nmax 4\noom 1\noom_kill 0\n",
    );
    put(&cg.dir.join("cgroup.procs"), "12\n7\n");
    assert_eq!(
        cg.usage().unwrap(),
        Usage {
            cpu_time: Duration::from_millis(1500),
            memory_rss: 4096,
            memory_cache: 8192,
            pids: 3,
        }
    );
    assert!(!cg.oom_killed().unwrap());
    put(
        &cg.dir.join("memory.events"),
        "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
    );
    assert!(cg.oom_killed().unwrap());
    assert_eq!(cg.pids().unwrap(), vec![7, 12]);
    assert_eq!(cg.procs_files(), vec![cg.dir.join("cgroup.procs")]);

    put(&cg.dir.join("pids.current"), "three\n");
    let err = cg.usage().unwrap_err();
    assert!(matches!(err, CgroupError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("pids.current"), "{err}");
}

#[test]
fn v2_backend_on_a_temp_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    put(&root.join("cgroup.controllers"), "cpu memory pids\n");
    put(&root.join("cgroup.subtree_control"), "\n");
    let backend = detect(root).unwrap();
    assert!(backend.list("mezzo-a").unwrap().is_empty());
    assert!(backend.open("mezzo-a", "t1").unwrap().is_none());

    // A plain directory has no control files: the error names the file
    // the kernel would have provided, and nothing is left half-made.
    let err = backend.create("mezzo-a", "t1", &limits()).unwrap_err();
    assert!(err.to_string().contains("mezzo-a/cgroup.subtree_control"), "{err}");
    assert_eq!(get(&root.join("cgroup.subtree_control")), "+cpu +memory +pids");
    put(&root.join("mezzo-a/cgroup.subtree_control"), "\n");
    let err = backend.create("mezzo-a", "t1", &limits()).unwrap_err();
    assert!(err.to_string().contains("mezzo-a/t1/cpu.weight"), "{err}");
    assert!(!root.join("mezzo-a/t1").exists());
    assert_eq!(get(&root.join("mezzo-a/cgroup.subtree_control")), "+cpu +memory +pids");

    v2_leaf(&root.join("mezzo-a/t1"));
    v2_leaf(&root.join("mezzo-a/t2"));
    assert_eq!(backend.list("mezzo-a").unwrap(), vec!["t1", "t2"]);
    let cg = backend.open("mezzo-a", "t1").unwrap().unwrap();
    cg.kill_all().unwrap(); // nobody inside: nothing to do
    let err = backend.create("mezzo-a", "t2", &limits()).unwrap_err();
    assert!(matches!(err, CgroupError::Exists { .. }), "{err}");
}

#[test]
fn names_must_be_plain_relative_paths() {
    let root = Path::new("/r");
    assert_eq!(
        cgroup_path(root, "mezzo-a", Some("t")).unwrap(),
        Path::new("/r/mezzo-a/t")
    );
    assert_eq!(cgroup_path(root, "a/b", None).unwrap(), Path::new("/r/a/b"));
    for (parent, name) in [
        ("", Some("t")),
        ("/abs", Some("t")),
        ("../up", Some("t")),
        ("a/./b", None),
        ("a//b", None),
        ("a", Some("x/y")),
        ("a", Some("..")),
        ("a", Some("")),
    ] {
        let err = cgroup_path(root, parent, name).unwrap_err();
        assert!(matches!(err, CgroupError::InvalidName { .. }), "{parent:?} {name:?}");
    }
}
