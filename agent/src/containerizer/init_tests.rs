//! Contract tests for the container init (DESIGN.md, "Containers" and
//! "Agent recovery"). They need root and build real namespaces.
//!
//! How the supervisor is started: exactly as in production, as a fresh
//! single-threaded process. The test binary re-executes itself with
//! `MEZZO_TEST_CONTAINER_INIT=<spec>`; a constructor in `.init_array` sees
//! the variable and runs [`super::main`] before libtest's `main` starts any
//! thread. (A test thread cannot be the entry point: libtest runs tests on
//! spawned threads, and `unshare(CLONE_NEWNS)` refuses a multi-threaded
//! process; forking the multi-threaded test process is what STYLE.md item 8
//! forbids.)

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Gid, Pid, Uid};
use tempfile::TempDir;

use super::*;

const ENTRY_ENV: &str = "MEZZO_TEST_CONTAINER_INIT";

// SAFETY: `.init_array` holds plain `extern "C" fn()` pointers the loader
// calls once before `main`, single-threaded; `entry` has that type, and it
// does nothing unless the variable is set (only in the re-executed binary).
#[used]
#[unsafe(link_section = ".init_array")]
static ENTRY: extern "C" fn() = entry;

extern "C" fn entry() {
    if let Some(spec) = std::env::var_os(ENTRY_ENV) {
        super::main(Path::new(&spec));
    }
}

const TIMEOUT: Duration = Duration::from_secs(20);

/// One container under test. Dropping it kills whatever is left (SIGKILL
/// to the init ends its pid namespace; the supervisor follows) and removes
/// the temp dir.
struct Container {
    _dir: TempDir,
    spec: InitSpec,
    supervisor: Option<Child>,
    cgroup: Option<PathBuf>,
}

impl Container {
    /// Pid, mount, uts and ipc namespaces; runs as root.
    fn new(argv: &[&str]) -> Container {
        let dir = tempfile::tempdir().expect("temp dir");
        // Let an unprivileged task reach its sandbox.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod temp dir");
        let sandbox = dir.path().join("sandbox");
        let run_dir = dir.path().join("run");
        std::fs::create_dir(&sandbox).expect("sandbox");
        std::fs::create_dir(&run_dir).expect("run dir");
        let spec = InitSpec {
            id: "test/task".into(),
            stdout: sandbox.join("stdout"),
            stderr: sandbox.join("stderr"),
            run_dir,
            sandbox,
            argv: argv.iter().map(|a| a.to_string()).collect(),
            env: vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into())],
            uid: 0,
            gid: 0,
            groups: vec![],
            hostname: None,
            namespaces: Namespaces {
                pid: true,
                mount: true,
                uts: true,
                ipc: true,
                net: false,
            },
            cgroup_procs: vec![],
            cgroup_leave: vec![],
            confinement: Default::default(),
            view: None,
            cwd: None,
            userns: None,
        };
        Container {
            _dir: dir,
            spec,
            supervisor: None,
            cgroup: None,
        }
    }

    fn start(&mut self) {
        let spec_path = self.spec.run_dir.join("spec.json");
        write_spec(&spec_path, &self.spec).expect("write spec");
        let exe = std::env::current_exe().expect("test binary");
        let child = Command::new(exe)
            .env(ENTRY_ENV, &spec_path)
            // Harmless should the constructor not take over: list no tests.
            .args(["--list", "--exact", "no such test"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn supervisor");
        self.supervisor = Some(child);
    }

    /// Starts, waits for the supervisor and returns the record.
    fn run(&mut self) -> ExitRecord {
        self.start();
        self.wait()
    }

    fn wait(&mut self) -> ExitRecord {
        let child = self.supervisor.as_mut().expect("started");
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "supervisor still running after {TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(10));
        };
        self.supervisor = None;
        let record = read_exit(&self.spec.run_dir).expect("exit record");
        let expected = if matches!(record, ExitRecord::Error(_)) { 1 } else { 0 };
        assert_eq!(status.code(), Some(expected), "supervisor status for {record:?}");
        record
    }

    fn supervisor_running(&mut self) -> bool {
        matches!(self.supervisor.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn init_pid(&self) -> Pid {
        let pid = wait_until(|| read_init_pid(&self.spec.run_dir)).expect("init.pid");
        Pid::from_raw(pid)
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.spec.stdout).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.spec.stderr).unwrap_or_default()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(mut child) = self.supervisor.take() {
            if let Some(pid) = read_init_pid(&self.spec.run_dir) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(cgroup) = &self.cgroup {
            let _ = wait_until(|| std::fs::remove_dir(cgroup).ok());
        }
    }
}

/// Polls `f` every 10 ms until it returns `Some`, for at most [`TIMEOUT`].
fn wait_until<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = f() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: container init tests need root");
    }
    root
}

/// A `sleep` duration nobody else uses, to find the process in /proc.
fn marker() -> String {
    format!("300.{}", uuid::Uuid::new_v4().as_u128() % 1_000_000_000)
}

/// Pids (host namespace) of processes with `arg` among their arguments.
fn processes_with_arg(arg: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn echo_runs_and_exits_zero() {
    if !is_root() {
        return;
    }
    let mut c = Container::new(&["/bin/sh", "-c", "echo hi"]);
    assert_eq!(c.run(), ExitRecord::Code(0));
    assert_eq!(c.stdout(), "hi\n");
    assert!(read_init_pid(&c.spec.run_dir).is_some(), "init.pid written");
}

/// DESIGN.md "Tasks": DROPPED means the process never started. An init
/// that finds the launch claim taken by recovery starts nothing.
#[test]
fn an_init_that_loses_the_claim_never_execs() {
    if !is_root() {
        return;
    }
    let mut c = Container::new(&["/bin/sh", "-c", "echo ran"]);
    let run_dir = c.spec.run_dir.clone();
    assert_eq!(
        super::super::claim::take(&run_dir, super::super::claim::Claim::Dropped).expect("claim"),
        super::super::claim::Claim::Dropped
    );
    assert_eq!(c.run(), ExitRecord::Error(DROPPED_BY_RECOVERY.into()));
    assert_eq!(c.stdout(), "", "the task never ran");
    // And one that wins it says so.
    let mut won = Container::new(&["/bin/true"]);
    assert_eq!(won.run(), ExitRecord::Code(0));
    assert_eq!(
        super::super::claim::read(&won.spec.run_dir),
        Some(super::super::claim::Claim::Started)
    );
}

#[test]
fn exit_code_is_recorded_without_namespaces() {
    if !is_root() {
        return;
    }
    let mut c = Container::new(&["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]);
    c.spec.namespaces = Namespaces::default();
    assert_eq!(c.run(), ExitRecord::Code(3));
    assert_eq!(c.stdout(), "out\n");
    assert_eq!(c.stderr(), "err\n");
}

#[test]
fn pid_namespace_has_a_private_proc() {
    if !is_root() {
        return;
    }
    let mut c = Container::new(&["/bin/sh", "-c", "echo $$; ls /proc | grep -c '^[0-9]'"]);
    assert_eq!(c.run(), ExitRecord::Code(0));
    let out = c.stdout();
    let numbers: Vec<u32> = out.lines().map(|l| l.trim().parse().expect("number")).collect();
    // init = 1, the shell = 2; /proc shows init, sh, ls and grep at most.
    assert_eq!(numbers[0], 2, "the task's shell pid: {out}");
    assert!((2..=5).contains(&numbers[1]), "processes in /proc: {out}");
}

#[test]
fn hostname_is_set_in_a_new_uts_namespace() {
    if !is_root() {
        return;
    }
    let host = nix::unistd::gethostname().expect("hostname");
    let mut c = Container::new(&["/bin/cat", "/proc/sys/kernel/hostname"]);
    c.spec.hostname = Some("mezzo-test-box".into());
    assert_eq!(c.run(), ExitRecord::Code(0));
    assert_eq!(c.stdout(), "mezzo-test-box\n");
    assert_eq!(nix::unistd::gethostname().expect("hostname"), host, "host unchanged");
}

#[test]
fn sigterm_to_the_init_is_forwarded_to_the_task() {
    if !is_root() {
        return;
    }
    let marker = marker();
    let mut c = Container::new(&["/bin/sleep", &marker]);
    c.start();
    let init = c.init_pid();
    wait_until(|| (!processes_with_arg(&marker).is_empty()).then_some(())).expect("task started");
    kill(init, Signal::SIGTERM).expect("kill");
    assert_eq!(c.wait(), ExitRecord::Signal(Signal::SIGTERM as i32));
    assert!(processes_with_arg(&marker).is_empty());
}

#[test]
fn task_ignoring_sigterm_survives_it_and_sigkill_ends_everything() {
    if !is_root() {
        return;
    }
    let marker = marker();
    let script = format!("trap '' TERM; sleep {marker}; echo not reached");
    let mut c = Container::new(&["/bin/sh", "-c", &script]);
    c.start();
    let init = c.init_pid();
    wait_until(|| (!processes_with_arg(&marker).is_empty()).then_some(())).expect("task started");

    // The supervisor leads its own session and shrugs off TERM/INT/HUP.
    let supervisor = Pid::from_raw(c.supervisor.as_ref().expect("started").id() as i32);
    assert_eq!(nix::unistd::getsid(Some(supervisor)).expect("getsid"), supervisor);
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        kill(supervisor, signal).expect("signal supervisor");
    }
    kill(init, Signal::SIGTERM).expect("SIGTERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(c.supervisor_running(), "container survives SIGTERM");
    assert!(!processes_with_arg(&marker).is_empty(), "sleep survives SIGTERM");

    kill(init, Signal::SIGKILL).expect("SIGKILL");
    assert_eq!(c.wait(), ExitRecord::Signal(Signal::SIGKILL as i32));
    let gone = wait_until(|| processes_with_arg(&marker).is_empty().then_some(()));
    assert!(gone.is_some(), "processes left: {:?}", processes_with_arg(&marker));
    assert_eq!(c.stdout(), "");
}

#[test]
fn task_runs_as_nobody() {
    if !is_root() {
        return;
    }
    let mut c = Container::new(&["/bin/sh", "-c", "id -u; id -g; touch mine"]);
    nix::unistd::chown(&c.spec.sandbox, Some(Uid::from_raw(65534)), Some(Gid::from_raw(65534))).expect("chown");
    c.spec.uid = 65534;
    c.spec.gid = 65534;
    assert_eq!(c.run(), ExitRecord::Code(0), "stderr: {}", c.stderr());
    assert_eq!(c.stdout(), "65534\n65534\n");
    let meta = std::fs::metadata(c.spec.sandbox.join("mine")).expect("file made by the task");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534);
}

#[test]
fn missing_program_exits_127_with_the_error_in_stderr() {
    if !is_root() {
        return;
    }
    let mut c = Container::new(&["/nonexistent/program", "arg"]);
    assert_eq!(c.run(), ExitRecord::Code(127));
    let stderr = c.stderr();
    assert!(
        stderr.contains("cannot execute /nonexistent/program"),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("No such file or directory"), "stderr: {stderr}");
}

#[test]
fn setup_failure_is_recorded_as_an_error() {
    if !is_root() {
        return;
    }
    let mut c = Container::new(&["/bin/true"]);
    c.spec.cgroup_procs = vec!["/nonexistent/cgroup.procs".into()];
    let ExitRecord::Error(message) = c.run() else {
        panic!("expected an error record")
    };
    assert!(message.contains("/nonexistent/cgroup.procs"), "{message}");
    assert!(c.stderr().contains(&message), "stderr: {}", c.stderr());
}

/// A step of the task process that fails after the clone (here: entering
/// the sandbox) comes back to the init with its errno, and nothing runs.
#[test]
fn failure_in_the_task_process_is_recorded_with_its_step() {
    if !is_root() {
        return;
    }
    let mut c = Container::new(&["/bin/true"]);
    c.spec.sandbox = "/nonexistent/sandbox".into();
    let ExitRecord::Error(message) = c.run() else {
        panic!("expected an error record")
    };
    assert!(
        message.contains("cannot enter sandbox /nonexistent/sandbox"),
        "{message}"
    );
    assert!(message.contains("No such file or directory"), "{message}");
    assert!(c.stderr().contains(&message), "stderr: {}", c.stderr());
}

#[test]
fn bad_spec_is_recorded_next_to_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, b"{not json").expect("write");
    let status = Command::new(std::env::current_exe().expect("test binary"))
        .env(ENTRY_ENV, &spec_path)
        .args(["--list", "--exact", "no such test"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run supervisor");
    assert_eq!(status.code(), Some(1));
    assert!(matches!(read_exit(dir.path()), Some(ExitRecord::Error(m)) if m.contains("invalid init spec")));
}

/// The v1 pids hierarchy's root, when this machine has one (and we are root).
fn pids_root() -> Option<&'static Path> {
    if !is_root() {
        return None;
    }
    let root = Path::new("/sys/fs/cgroup/pids");
    if !root.join("cgroup.procs").exists() {
        eprintln!("skipped: no cgroup v1 pids hierarchy");
        return None;
    }
    Some(root)
}

impl Container {
    /// Puts the task in a new pids cgroup under `root`, removed on drop;
    /// returns its name.
    fn join_new_cgroup(&mut self, root: &Path) -> String {
        let name = format!("mezzo-init-test-{}", uuid::Uuid::new_v4().simple());
        let cgroup = root.join(&name);
        std::fs::create_dir(&cgroup).expect("create cgroup");
        self.cgroup = Some(cgroup.clone());
        self.spec.cgroup_procs = vec![cgroup.join("cgroup.procs")];
        name
    }
}

#[test]
fn task_joins_the_cgroup_but_the_supervisor_does_not() {
    let Some(root) = pids_root() else { return };
    let marker = marker();
    let script = format!("grep pids /proc/self/cgroup; exec sleep {marker}");
    let mut c = Container::new(&["/bin/sh", "-c", &script]);
    let name = c.join_new_cgroup(root);
    let cgroup = root.join(&name);
    c.start();
    let init = c.init_pid();
    let task = wait_until(|| processes_with_arg(&marker).first().copied()).expect("task started");

    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).expect("read cgroup.procs");
    let mut pids: Vec<i32> = procs.lines().map(|l| l.parse().expect("pid")).collect();
    pids.sort();
    let mut expected = vec![init.as_raw(), task];
    expected.sort();
    assert_eq!(pids, expected, "only the init and the task");

    kill(init, Signal::SIGTERM).expect("kill");
    assert_eq!(c.wait(), ExitRecord::Signal(Signal::SIGTERM as i32));
    assert!(
        c.stdout().trim_end().ends_with(&format!(":pids:/{name}")),
        "stdout: {}",
        c.stdout()
    );
}

/// The exit fast path: under the launcher the supervisor records the exit
/// from the init's report, before the init (and its namespaces, here with
/// the task's whole view) are gone, and by then the init has left the
/// container's cgroups, so the agent removes them at once. The init moves
/// itself out through files it opened before it entered the view, which
/// hides the cgroup file systems.
#[test]
fn the_init_has_left_the_cgroups_when_the_exit_is_recorded() {
    let Some(root) = pids_root() else { return };
    let (mut c, _) = with_view(&["/bin/sh", "-c", "grep pids /proc/self/cgroup"]);
    let name = c.join_new_cgroup(root);
    let cgroup = root.join(&name);
    c.spec.cgroup_leave = vec![root.join("cgroup.procs")];

    // A launcher, as the agent runs it: it forks the supervisor, which
    // does not wait for the init once it has the init's report.
    let mut launcher = TestLauncher::start();
    launcher.send(&c.spec);

    let deadline = Instant::now() + TIMEOUT;
    let record = loop {
        if let Some(record) = read_exit(&c.spec.run_dir) {
            break record;
        }
        assert!(Instant::now() < deadline, "no exit record after {TIMEOUT:?}");
        std::thread::sleep(Duration::from_micros(200));
    };
    let left = std::fs::read_to_string(cgroup.join("cgroup.procs")).expect("read cgroup.procs");
    drop(launcher);
    assert_eq!(record, ExitRecord::Code(0), "stderr: {}", c.stderr());
    assert!(
        c.stdout().trim_end().ends_with(&format!(":pids:/{name}")),
        "the task ran in the cgroup: {}",
        c.stdout()
    );
    assert_eq!(left, "", "processes still in the cgroup when the exit was recorded");
}

#[test]
fn network_namespace_has_only_loopback_and_it_is_up() {
    if !is_root() {
        return;
    }
    let ip = "/usr/sbin/ip";
    if !Path::new(ip).exists() {
        eprintln!("skipped: no {ip}");
        return;
    }
    let mut c = Container::new(&[ip, "-o", "link", "show"]);
    c.spec.namespaces.net = true;
    assert_eq!(c.run(), ExitRecord::Code(0), "stderr: {}", c.stderr());
    let out = c.stdout();
    assert_eq!(out.lines().count(), 1, "only lo: {out}");
    assert!(out.contains(": lo: <LOOPBACK,UP"), "lo up: {out}");
}

/// A launcher as the agent runs it, for the tests that go through one.
struct TestLauncher {
    child: Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl TestLauncher {
    fn start() -> TestLauncher {
        let exe = std::env::current_exe().expect("test binary");
        let mut child = Command::new(exe)
            .env(ENTRY_ENV, LAUNCHER_ARG)
            .args(["--list", "--exact", "no such test"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn launcher");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        TestLauncher { child, stdout }
    }

    /// Has `spec` launched and returns the pid to wait for (its init's, or
    /// with a user namespace its supervisor's).
    fn send(&mut self, spec: &InitSpec) -> u32 {
        let mut line = serde_json::to_vec(spec).expect("spec");
        line.push(b'\n');
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(&line).expect("send spec");
        let mut reply = String::new();
        std::io::BufRead::read_line(&mut self.stdout, &mut reply).expect("reply");
        match serde_json::from_str::<LaunchReply>(&reply) {
            Ok(LaunchReply::Pid(pid)) => pid,
            _ => panic!("launcher: {reply}"),
        }
    }

    /// Launches `c`, waits for its exit record and for its supervisor to be
    /// gone, and returns the task's stdout.
    fn run(&mut self, c: &Container) -> String {
        let pid = self.send(&c.spec);
        assert_eq!(ended(c, pid), ExitRecord::Code(0), "stderr: {}", c.stderr());
        c.stdout()
    }
}

/// Waits for `c`'s exit record and for `pid` (its init or supervisor) to
/// be gone, and returns the record.
fn ended(c: &Container, pid: u32) -> ExitRecord {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match read_exit(&c.spec.run_dir) {
            Some(record) if kill(Pid::from_raw(pid as i32), None).is_err() => return record,
            _ => assert!(Instant::now() < deadline, "container still there after {TIMEOUT:?}"),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for TestLauncher {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The launcher clones a container's init itself, with no supervisor in
/// between: the pid it answers is the init's (its own child, in a session
/// of its own, pid 1 of the container), and the init records the task's
/// exit before it ends (also through a view: the network namespace test
/// below runs its containers with one). Killed with SIGKILL, it ends
/// without a record (the agent reads that as the kill it was).
#[test]
fn the_launcher_starts_inits_that_record_their_own_exit() {
    if !is_root() {
        return;
    }
    let mut launcher = TestLauncher::start();
    let launcher_pid = launcher.child.id();
    let status_of = |pid: u32, key: &str| -> Option<String> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with(key))?;
        Some(line[key.len()..].trim().to_owned())
    };

    // The task waits on a fifo, so that the init is seen while it runs.
    let mut c = Container::new(&["/bin/sh", "-c", ""]);
    let fifo = c.spec.run_dir.join("go");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
    c.spec.argv[2] = format!("read line < {}; echo \"got $line\"; exit 3", fifo.display());
    let pid = launcher.send(&c.spec);
    assert_eq!(
        wait_until(|| read_init_pid(&c.spec.run_dir)),
        Some(pid as i32),
        "init.pid"
    );
    assert_eq!(
        status_of(pid, "PPid:"),
        Some(launcher_pid.to_string()),
        "the launcher's child"
    );
    assert_eq!(
        status_of(pid, "NSpid:").and_then(|ns| ns.split_whitespace().last().map(str::to_owned)),
        Some("1".into())
    );
    assert_eq!(
        nix::unistd::getsid(Some(Pid::from_raw(pid as i32))),
        Ok(Pid::from_raw(pid as i32))
    );
    std::fs::write(&fifo, "go\n").expect("release the task");
    assert_eq!(ended(&c, pid), ExitRecord::Code(3), "stderr: {}", c.stderr());
    assert_eq!(c.stdout(), "got go\n");

    // A signal sent the moment the pid is known is not lost: the init
    // starts with it blocked, and passes it on once the task runs.
    let early = Container::new(&["/bin/sleep", "600"]);
    let pid = launcher.send(&early.spec);
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("SIGTERM");
    assert_eq!(ended(&early, pid), ExitRecord::Signal(Signal::SIGTERM as i32));

    let killed = Container::new(&["/bin/sleep", "600"]);
    let pid = launcher.send(&killed.spec);
    let children = format!("/proc/{pid}/task/{pid}/children");
    wait_until(|| std::fs::read_to_string(&children).ok().filter(|c| !c.trim().is_empty())).expect("task started");
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("SIGKILL");
    let gone = wait_until(|| kill(Pid::from_raw(pid as i32), None).is_err().then_some(()));
    assert!(gone.is_some(), "init still there");
    assert_eq!(read_exit(&killed.spec.run_dir), None, "no record from a killed init");

    // An init that cannot write its record (here `exit` is a directory in
    // the way) exits with the task's code, which the kernel keeps for any
    // holder of its pidfd (the agent reads it there, `linux.rs`).
    let blocked = Container::new(&["/bin/sh", "-c", ""]);
    let fifo = blocked.spec.run_dir.join("go");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
    let blocked = {
        let mut c = blocked;
        c.spec.argv[2] = format!("read line < {}; exit 3", fifo.display());
        c
    };
    let pid = launcher.send(&blocked.spec);
    let pidfd = pidfd_open(pid as i32).expect("the init's pidfd");
    std::fs::create_dir_all(blocked.spec.run_dir.join(EXIT_FILE).join("in-the-way")).expect("exit as a directory");
    std::fs::write(&fifo, "go\n").expect("release the task");
    let status = wait_until(|| super::super::launcher::exit_status(pidfd.as_fd()));
    let ws = status.expect("the init's end, on Linux 6.15+");
    assert!(nix::libc::WIFEXITED(ws) && nix::libc::WEXITSTATUS(ws) == 3, "{ws:#x}");
    assert_eq!(read_exit(&blocked.spec.run_dir), None, "no record");
}

/// The launcher lends the network namespace of an ended container to the
/// next one (`init/netns_pool.rs`) with `lo` up, and never one that still
/// holds a socket: a TIME_WAIT left by a task ends its namespace's reuse.
/// Namespaces are told apart by their cookie (`SO_NETNS_COOKIE`, never
/// reused while the machine runs, unlike their inode numbers).
#[test]
fn the_launcher_lends_clean_network_namespaces_only() {
    if !is_root() {
        return;
    }
    let (ip, python) = ("/usr/sbin/ip", "/usr/bin/python3");
    if !Path::new(ip).exists() || !Path::new(python).exists() {
        eprintln!("skipped: needs {ip} and {python}");
        return;
    }
    let probe = r#"
import socket, sys
tcp = [l for l in open('/proc/net/sockstat') if l.startswith('TCP:')][0].split()
s = socket.socket(socket.AF_UNIX)
cookie = int.from_bytes(s.getsockopt(socket.SOL_SOCKET, 71, 8), 'little')
s.close()
print('cookie', cookie, 'tw', tcp[tcp.index('tw') + 1])
if sys.argv[1:] == ['linger']:
    l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen()
    a = socket.create_connection(l.getsockname()); b, _ = l.accept()
    a.close(); b.close(); l.close()
"#;
    // Lent only to containers with a view (where network sysctls are
    // read-only), as the agent runs every isolated task.
    let container = |arg: &str, view: bool| {
        let script = format!("{ip} -o link show; exec {python} -c \"$0\" {arg}");
        let argv = ["/bin/sh", "-c", &script, probe];
        let mut c = if view {
            with_view(&argv).0
        } else {
            Container::new(&argv)
        };
        c.spec.namespaces.net = true;
        c
    };
    // (cookie, TIME_WAIT count) of one container's namespace; `lo` is up.
    let mut launcher = TestLauncher::start();
    let mut run_in = |arg: &str, view: bool| {
        let out = launcher.run(&container(arg, view));
        let words: Vec<&str> = out.lines().last().unwrap_or("").split_whitespace().collect();
        assert_eq!(words.first(), Some(&"cookie"), "{out}");
        let links: Vec<&str> = out.lines().filter(|l| !l.starts_with("cookie")).collect();
        assert!(
            links.len() == 1 && links[0].contains(": lo: <LOOPBACK,UP"),
            "only lo, up: {out}"
        );
        (words[1].to_owned(), words[3].to_owned())
    };

    let (first, _) = run_in("", true);
    // The ended container's namespace is lent again (once its init's exit
    // reached the launcher and its socket counts settled: under a loaded
    // test run that took longer than 20 containers, and once over 10 s,
    // so up to 30 s).
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let reused = std::iter::from_fn(|| {
        (std::time::Instant::now() < until).then(|| {
            let again = run_in("", true).0 == first;
            if !again {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            again
        })
    })
    .any(|again| again);
    assert!(reused, "no container got the first one's network namespace again");
    // Without a view a task as uid 0 could change the namespace's sysctls:
    // never lent one (cookies are never reused, so a new one is new).
    let (viewless, _) = run_in("", false);
    assert_ne!(viewless, first, "a container without a view got a lent namespace");

    // A task leaves a TIME_WAIT behind: its namespace is not lent again,
    // and no later container sees a TIME_WAIT.
    let (lingered, _) = run_in("linger", true);
    for _ in 0..5 {
        let (cookie, tw) = run_in("", true);
        assert_ne!(cookie, lingered, "a namespace with a TIME_WAIT was lent again");
        assert_eq!(tw, "0");
    }
}

#[test]
fn exit_record_json_shape() {
    for (record, json) in [
        (ExitRecord::Code(0), r#"{"code":0}"#),
        (ExitRecord::Signal(9), r#"{"signal":9}"#),
        (ExitRecord::Error("boom".into()), r#"{"error":"boom"}"#),
    ] {
        assert_eq!(serde_json::to_string(&record).expect("json"), json);
        assert_eq!(serde_json::from_str::<ExitRecord>(json).expect("parse"), record);
    }
    assert_eq!(ExitRecord::Signal(15).exit_status(), Some(ExitStatus::Signal(15)));
}

/// A sandbox reused by a relaunch may hold a `stdout` the task made a link
/// to a host file: the init (root) refuses to open it instead of
/// appending the new task's output to that file.
#[test]
fn a_planted_link_in_place_of_stdout_is_not_followed() {
    if !is_root() {
        return;
    }
    let mut c = Container::new(&["/bin/echo", "written as root"]);
    let host = c.spec.run_dir.join("host-file");
    std::fs::write(&host, b"host").expect("host file");
    std::os::unix::fs::symlink(&host, &c.spec.stdout).expect("link");
    let ExitRecord::Error(message) = c.run() else {
        panic!("expected an error record")
    };
    assert!(message.contains("stdout"), "{message}");
    assert_eq!(std::fs::read(&host).expect("host file"), b"host");
}

/// The confinement lines of the task's own `/proc/self/status`.
fn confinement_of(c: &mut Container) -> String {
    let script = "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status";
    c.spec.argv = ["/bin/sh", "-c", script].map(String::from).to_vec();
    assert_eq!(c.run(), ExitRecord::Code(0), "stderr: {}", c.stderr());
    c.stdout().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Issue 15: a task as any user but root keeps no capability in any set;
/// root keeps runc's three only; both cannot gain privileges and run under
/// the seccomp filter.
#[test]
fn tasks_keep_only_their_capabilities_no_new_privs_and_a_filter() {
    if !is_root() {
        return;
    }
    for (uid, permitted, bounding) in [
        (65534, "0000000000000000", "0000000000000000"),
        (0, "0000000020000420", "0000000020000420"),
    ] {
        let mut c = Container::new(&["/bin/true"]);
        c.spec.uid = uid;
        c.spec.gid = uid;
        assert_eq!(
            confinement_of(&mut c),
            format!(
                "CapInh: 0000000000000000 CapPrm: {permitted} CapEff: {permitted} \
                 CapBnd: {bounding} CapAmb: 0000000000000000 NoNewPrivs: 1 Seccomp: 2"
            ),
            "uid {uid}"
        );
    }
}

/// Issue 15: without the filter (the opt-out) the status says so: the
/// lines above are the filter's doing, not the kernel's defaults.
#[test]
fn an_unconfined_task_has_no_filter() {
    if !is_root() {
        return;
    }
    let mut c = Container::new(&["/bin/true"]);
    c.spec.confinement.seccomp = false;
    let status = confinement_of(&mut c);
    assert!(status.ends_with("Seccomp: 0"), "{status}");
}

/// Issue 15: a call outside the filter fails with EPERM. Checked on
/// `unshare` of a user namespace, which needs no capability (so nothing
/// but the filter stops it), with the unconfined task as the control.
#[test]
fn calls_outside_the_filter_fail() {
    if !is_root() {
        return;
    }
    // `unshare -U` needs no privilege; only the filter stops it.
    let mut c = Container::new(&["/bin/sh", "-c", "unshare -U true; echo rc=$?"]);
    c.spec.uid = 65534;
    c.spec.gid = 65534;
    assert_eq!(c.run(), ExitRecord::Code(0), "stderr: {}", c.stderr());
    assert_eq!(c.stdout(), "rc=1\n", "stderr: {}", c.stderr());
    assert!(c.stderr().contains("Operation not permitted"), "{}", c.stderr());
    // Control: unconfined, the same call works.
    let mut c = Container::new(&["/bin/sh", "-c", "unshare -U true; echo rc=$?"]);
    c.spec.uid = 65534;
    c.spec.gid = 65534;
    c.spec.confinement.seccomp = false;
    assert_eq!(c.run(), ExitRecord::Code(0), "stderr: {}", c.stderr());
    assert_eq!(c.stdout(), "rc=0\n", "stderr: {}", c.stderr());
}

/// Issue 15: a setuid-root binary gives a task as nobody no privilege
/// (`no_new_privs`). Control: the same file run as nobody outside a task
/// does run as root, so the file is really setuid.
#[test]
fn a_setuid_binary_gains_nothing() {
    if !is_root() {
        return;
    }
    let mut c = Container::new(&["/bin/sh", "-c", "./id -u"]);
    let id = c.spec.sandbox.join("id");
    std::fs::copy("/usr/bin/id", &id).expect("copy id");
    std::fs::set_permissions(&id, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).expect("setuid");
    let control = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(&id)
        .arg("-u")
        .output()
        .expect("setpriv");
    assert_eq!(
        String::from_utf8_lossy(&control.stdout),
        "0\n",
        "the control must run as root"
    );
    c.spec.uid = 65534;
    c.spec.gid = 65534;
    assert_eq!(c.run(), ExitRecord::Code(0), "stderr: {}", c.stderr());
    assert_eq!(c.stdout(), "65534\n");
}

/// Issue 15: what ordinary programs do still works under the filter:
/// threads (glibc tries `clone3` first and falls back on `ENOSYS`),
/// subprocesses, sockets, background jobs, name lookups, archives.
#[test]
fn ordinary_programs_work_under_the_filter() {
    if !is_root() || !Path::new("/usr/bin/python3").exists() {
        return;
    }
    let script = "python3 -c 'import threading, subprocess, socket, os; t=threading.Thread(target=print, args=(\"thread\",)); t.start(); t.join(); print(subprocess.run([\"true\"]).returncode); s=socket.socket(); s.bind((\"127.0.0.1\",0)); print(\"sock\"); print(os.cpu_count()>0)'; sh -c 'sleep 0.01 & wait; echo bg'; ls / >/dev/null && echo ls; getent passwd root >/dev/null && echo getent; date +%s >/dev/null && echo date; tar cf - /etc/hostname 2>/dev/null | tar tf - >/dev/null && echo tar";
    let mut c = Container::new(&["/bin/sh", "-c", script]);
    c.spec.uid = 65534;
    c.spec.gid = 65534;
    assert_eq!(c.run(), ExitRecord::Code(0), "stderr: {}", c.stderr());
    assert_eq!(
        c.stdout(),
        "thread\n0\nsock\nTrue\nbg\nls\ngetent\ndate\ntar\n",
        "stderr: {}",
        c.stderr()
    );
}

/// A container with the task's own file system view (`super::rootfs`):
/// hides `hidden` (made in the temp dir) and mounts its root on `root`.
fn with_view(argv: &[&str]) -> (Container, PathBuf) {
    let mut c = Container::new(argv);
    let base = c.spec.run_dir.parent().expect("temp dir").to_owned();
    let hidden = base.join("hidden");
    let root = base.join("root");
    std::fs::create_dir(&hidden).expect("hidden dir");
    std::fs::write(hidden.join("secret"), b"secret").expect("secret");
    std::fs::create_dir(&root).expect("root mount point");
    c.spec.view = Some(super::super::rootfs::View {
        mountpoint: root,
        hide: vec![hidden.clone()],
        host_paths: vec![],
        image: None,
        mounts: vec![],
    });
    (c, hidden)
}

/// Issue 15: the task sees the host read-only, a private `/tmp`, `/dev`
/// and `/run`, masked and read-only kernel files, and its own sandbox
/// writable; nothing it writes reaches the host but through the sandbox.
#[test]
fn the_task_sees_a_read_only_host_and_private_tmp_and_dev() {
    if !is_root() {
        return;
    }
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let script = format!(
        r#"try() {{ if out=$(sh -c "$2" 2>&1); then echo "$1: ok"; else echo "$1: ${{out##*: }}"; fi; }}
try etc ': > /etc/mezzo-{nonce}'
try tmp ': > /tmp/mezzo-{nonce}'
try shm ': > /dev/shm/mezzo-{nonce}'
try sandbox ': > ./from-task'
try irq ': > /proc/irq/default_smp_affinity'
try procsys ': > /proc/sys/kernel/hostname'
try sys ': > /sys/kernel/mm/ksm/run'
try kmsg 'cat /dev/kmsg'
try mknod 'mknod /tmp/kmsg c 1 11'
echo "dev: $(ls /dev | tr '\n' ' ')"
echo "keys: $(wc -c < /proc/keys)"
echo "hidden: $(ls -A HIDDEN | wc -l)"
echo "run: $(ls -A /run | wc -l)"
echo "cgroup: $(ls -A /sys/fs/cgroup | wc -l)"
"#
    );
    let (mut c, hidden) = with_view(&["/bin/sh", "-c", ""]);
    c.spec.argv[2] = script.replace("HIDDEN", &hidden.display().to_string());
    assert_eq!(c.run(), ExitRecord::Code(0), "stderr: {}", c.stderr());
    let out = c.stdout();
    for expected in [
        "etc: Read-only file system",
        "tmp: ok",
        "shm: ok",
        "sandbox: ok",
        "irq: Read-only file system",
        "procsys: Read-only file system",
        "sys: Read-only file system",
        "kmsg: No such file or directory",
        "mknod: Operation not permitted",
        "dev: fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero ",
        "keys: 0",
        "hidden: 0",
        "run: 0",
        "cgroup: 0",
    ] {
        assert!(out.lines().any(|l| l == expected), "no {expected:?} in:\n{out}");
    }
    // Nothing reached the host but the sandbox file.
    for path in [
        format!("/tmp/mezzo-{nonce}"),
        format!("/dev/shm/mezzo-{nonce}"),
        format!("/etc/mezzo-{nonce}"),
    ] {
        assert!(!Path::new(&path).exists(), "{path} reached the host");
    }
    assert!(c.spec.sandbox.join("from-task").exists());
    // Controls: the host has what the task could not see.
    assert!(Path::new("/dev/kmsg").exists());
    assert!(std::fs::read(hidden.join("secret")).is_ok());
    assert!(!std::fs::read_to_string("/proc/keys").unwrap_or_default().is_empty());
}

/// Two hand-made layers in overlay form: a busybox base (with an
/// `/etc/motd` and `/etc/os-release`) and a layer that replaces
/// `os-release` and deletes `motd` (a whiteout).
fn busybox_layers(base: &Path) -> Vec<PathBuf> {
    let (l1, l2) = (base.join("layer1"), base.join("layer2"));
    for dir in [l1.join("bin"), l1.join("etc"), l2.join("etc")] {
        std::fs::create_dir_all(&dir).expect("layer dir");
    }
    std::fs::copy("/bin/busybox", l1.join("bin/busybox")).expect("busybox");
    for applet in ["sh", "cat", "ls", "tr", "wc", "head", "pwd"] {
        std::os::unix::fs::symlink("busybox", l1.join("bin").join(applet)).expect("applet");
    }
    std::fs::write(l1.join("etc/motd"), "base motd\n").expect("motd");
    std::fs::write(l1.join("etc/os-release"), "ID=base\n").expect("os-release");
    std::fs::write(l2.join("etc/os-release"), "ID=mezzo-test\n").expect("os-release");
    nix::sys::stat::mknod(
        &l2.join("etc/motd"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .expect("whiteout");
    vec![l1, l2]
}

/// Gives a container with a view the root of a busybox image (see
/// [`busybox_layers`]) and its PATH; returns the image's layers and the
/// container's upper dir.
fn with_image(c: &mut Container) -> (Vec<PathBuf>, PathBuf) {
    let base = c.spec.run_dir.parent().expect("temp dir").to_owned();
    let layers = busybox_layers(&base);
    let (upper, work) = (base.join("upper"), base.join("overlay-work"));
    std::fs::create_dir(&upper).expect("upper");
    std::fs::create_dir(&work).expect("work");
    let scaffold = base.join("scaffold");
    super::super::rootfs::build_scaffold(&scaffold, &[]).expect("scaffold");
    if let Some(view) = c.spec.view.as_mut() {
        view.image = Some(super::super::rootfs::ImageRoot {
            layers: layers.iter().cloned().chain([scaffold]).collect(),
            upper: upper.clone(),
            work,
        });
    }
    c.spec.env = vec![("PATH".into(), "/bin".into())];
    (layers, upper)
}

/// Issue 15: a task with an image sees the image's files (its layers in
/// order, a whiteout hiding a base file), none of the host's, a writable
/// root whose changes land in its own upper dir, its sandbox at
/// `/mnt/mezzo/sandbox`, the host's resolv.conf, and the same private
/// `/dev`, `/proc` masks and read-only `/sys` as any task. The program is
/// found in the image's PATH.
#[test]
fn a_task_with_an_image_sees_the_image() {
    if !is_root() {
        return;
    }
    let script = r#"try() { if out=$(sh -c "$2" 2>&1); then echo "$1: ok"; else echo "$1: ${out##*: }"; fi; }
echo "os: $(cat /etc/os-release)"
try motd 'cat /etc/motd'
try host 'ls /etc/debian_version'
echo "pwd: $(pwd)"
try root 'echo hi > /written'
try sandbox 'echo x > ./from-image'
try sys ': > /sys/kernel/mm/ksm/run'
echo "dev: $(ls /dev | tr '\n' ' ')"
echo "keys: $(wc -c < /proc/keys)"
echo "resolv: $(head -n 1 /etc/resolv.conf)"
"#;
    let (mut c, _) = with_view(&["sh", "-c", script]);
    let (layers, upper) = with_image(&mut c);
    assert_eq!(c.run(), ExitRecord::Code(0), "stderr: {}", c.stderr());
    let out = c.stdout();
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    for expected in [
        "os: ID=mezzo-test".to_string(),
        "motd: No such file or directory".into(),
        "host: No such file or directory".into(),
        "pwd: /mnt/mezzo/sandbox".into(),
        "root: ok".into(),
        "sandbox: ok".into(),
        "sys: Read-only file system".into(),
        "dev: fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero ".into(),
        "keys: 0".into(),
        format!("resolv: {}", resolv.lines().next().unwrap_or_default()),
    ] {
        assert!(out.lines().any(|l| l == expected), "no {expected:?} in:\n{out}");
    }
    // Changes went to the container's upper dir, never to the shared layers.
    assert_eq!(
        std::fs::read_to_string(upper.join("written")).ok().as_deref(),
        Some("hi\n")
    );
    assert!(layers.iter().all(|l| !l.join("written").exists()));
    assert!(layers[0].join("etc/motd").exists());
    let in_upper: Vec<_> = std::fs::read_dir(&upper)
        .expect("upper")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(in_upper, ["written"], "only the task's own change is in the upper dir");
    assert!(c.spec.sandbox.join("from-image").exists());
}

#[path = "init_userns_tests.rs"]
mod userns;

#[path = "init_mount_tests.rs"]
mod mounts;
