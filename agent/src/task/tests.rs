//! Supervisor + posix containerizer with real processes (DESIGN.md
//! "Containers": SIGTERM, grace period, then the whole group is killed).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1::{self, StatusReason};
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::mpsc;

use super::StatusReport;
use super::supervisor::{self, SupervisorHandle, SupervisorSpec};
use crate::containerizer::{Container, ContainerError, ContainerSpec, Containerizer, PosixContainerizer, Recovery};
use crate::key::TaskKey;
use crate::metrics::Metrics;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Records the process group of every container, and SIGKILLs them all
/// when dropped, so a failing test leaves no process behind.
#[derive(Clone, Default)]
struct Recording {
    inner: Arc<PosixContainerizer>,
    pgids: Arc<Mutex<Vec<u32>>>,
}

impl Recording {
    fn pgids(&self) -> Vec<u32> {
        self.pgids.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

impl Containerizer for Recording {
    fn launch(&self, spec: ContainerSpec) -> BoxFuture<'_, Result<Box<dyn Container>, ContainerError>> {
        async move {
            let c = self.inner.launch(spec).await?;
            if let Ok(mut p) = self.pgids.lock() {
                p.push(c.pid());
            }
            Ok(c)
        }
        .boxed()
    }

    fn recover(&self, id: String, run_dir: PathBuf) -> BoxFuture<'_, Result<Recovery, ContainerError>> {
        self.inner.recover(id, run_dir)
    }
}

struct KillGuard(Recording);

impl Drop for KillGuard {
    fn drop(&mut self) {
        for pgid in self.0.pgids() {
            let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
        }
    }
}

struct Run {
    sandbox: PathBuf,
    handle: SupervisorHandle,
    reports: mpsc::Receiver<StatusReport>,
    containerizer: Recording,
    _guard: KillGuard,
    _dir: tempfile::TempDir,
}

fn command(value: &str, shell: bool, args: &[&str]) -> v1::CommandInfo {
    v1::CommandInfo {
        value: value.to_owned(),
        arguments: args.iter().map(|a| a.to_string()).collect(),
        shell,
        ..Default::default()
    }
}

fn launch(cmd: v1::CommandInfo, grace_ms: Option<u64>) -> Result<Run, Box<dyn std::error::Error>> {
    let task = v1::TaskInfo {
        command: Some(cmd),
        kill_grace_period_ms: grace_ms,
        ..Default::default()
    };
    launch_task(task, |_| Ok(()))
}

/// Launches `task` as `fw-1/task-1`, on a work dir `prepare` was given.
fn launch_task(
    mut task: v1::TaskInfo,
    prepare: impl FnOnce(&Path) -> TestResult,
) -> Result<Run, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    prepare(dir.path())?;
    let key = TaskKey::parse("fw-1", "task-1")?;
    let sandbox = crate::paths::sandbox_dir(dir.path(), &key.framework_id, &key.task_id);
    task.task_id = "task-1".into();
    // As the table does with a task it is sent.
    let secrets = supervisor::take_secrets(&mut task);
    let spec = SupervisorSpec {
        key,
        task,
        secrets,
        agent_id: "agent-1".into(),
        sandbox: sandbox.clone(),
        run_dir: dir.path().join("run"),
        default_kill_grace: Duration::from_secs(3),
        launched_at: 0.0,
        fetcher: Arc::new(crate::fetch::Fetcher::new(
            Default::default(),
            dir.path(),
            Metrics::new(),
        )?),
        volumes: Arc::new(crate::volumes::Volumes::open(dir.path(), vec![])?),
        busy_volume: None,
        container_id: None,
    };
    let containerizer = Recording::default();
    let (tx, reports) = mpsc::channel(16);
    let handle = supervisor::spawn(spec, Arc::new(containerizer.clone()), tx, Metrics::new(), None);
    Ok(Run {
        sandbox,
        handle,
        reports,
        _guard: KillGuard(containerizer.clone()),
        containerizer,
        _dir: dir,
    })
}

impl Run {
    async fn next(&mut self) -> v1::TaskStatus {
        let r = tokio::time::timeout(Duration::from_secs(10), self.reports.recv())
            .await
            .expect("a report within 10s")
            .expect("supervisor alive");
        r.status
    }

    /// Reports up to and including the terminal one.
    async fn until_terminal(&mut self) -> Vec<v1::TaskStatus> {
        let mut out = Vec::new();
        loop {
            let s = self.next().await;
            let terminal = state(&s).is_terminal();
            out.push(s);
            if terminal {
                return out;
            }
        }
    }

    async fn wait_running(&mut self) {
        assert_eq!(state(&self.next().await), TaskState::Starting);
        assert_eq!(state(&self.next().await), TaskState::Running);
    }
}

fn state(s: &v1::TaskStatus) -> TaskState {
    TaskState::from_proto(s.state).expect("a known state")
}

fn states(list: &[v1::TaskStatus]) -> Vec<TaskState> {
    list.iter().map(state).collect()
}

/// Polls until no process of the group is left.
async fn assert_group_gone(pgid: u32) {
    let pgid = Pid::from_raw(pgid as i32);
    for _ in 0..300 {
        if killpg(pgid, None) == Err(Errno::ESRCH) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("process group {pgid} survives");
}

#[tokio::test]
async fn true_finishes() -> TestResult {
    let mut run = launch(command("true", false, &[]), None)?;
    let reports = run.until_terminal().await;
    assert_eq!(
        states(&reports),
        [TaskState::Starting, TaskState::Running, TaskState::Finished]
    );
    let last = &reports[2];
    assert_eq!(last.reason, StatusReason::ReasonCommandExited as i32);
    assert_eq!(last.exit_code, Some(0));
    assert_eq!(last.task_id, "task-1");
    assert_eq!(last.agent_id, "agent-1");
    Ok(())
}

#[tokio::test]
async fn a_non_zero_exit_fails_with_its_code() -> TestResult {
    let mut run = launch(command("exit 3", true, &[]), None)?;
    let reports = run.until_terminal().await;
    let last = reports.last().expect("a terminal report");
    assert_eq!(state(last), TaskState::Failed);
    assert_eq!(last.exit_code, Some(3));
    assert_eq!(last.message, "exited with status 3");
    Ok(())
}

#[tokio::test]
async fn an_unrequested_signal_fails_with_the_negated_signal() -> TestResult {
    let mut run = launch(command("kill -9 $$", true, &[]), None)?;
    let last = run.until_terminal().await.pop().expect("a terminal report");
    assert_eq!(state(&last), TaskState::Failed);
    assert_eq!(last.exit_code, Some(-9));
    Ok(())
}

#[tokio::test]
async fn kill_of_sleep_is_quick() -> TestResult {
    let mut run = launch(command("sleep", false, &["60"]), None)?;
    run.wait_running().await;
    let t0 = std::time::Instant::now();
    run.handle.kill(None);
    let last = run.next().await;
    assert_eq!(state(&last), TaskState::Killed);
    assert_eq!(last.reason, StatusReason::ReasonTaskKilled as i32);
    assert!(t0.elapsed() < Duration::from_secs(2), "took {:?}", t0.elapsed());
    assert_group_gone(run.containerizer.pgids()[0]).await;
    Ok(())
}

/// A kill for an operator or a drain is reported with its own reason and
/// message (the master's `KillTask.reason`), not as "killed on request".
#[tokio::test]
async fn a_kill_with_a_reason_reports_it() -> TestResult {
    let mut run = launch(command("sleep", false, &["60"]), None)?;
    run.wait_running().await;
    let kill = super::supervisor::Kill::from_proto(&v1::KillTask {
        reason: StatusReason::ReasonAgentDraining as i32,
        message: "drained".into(),
        ..Default::default()
    });
    run.handle.kill_with(kill);
    let last = run.next().await;
    assert_eq!(state(&last), TaskState::Killed);
    assert_eq!(last.reason, StatusReason::ReasonAgentDraining as i32);
    assert_eq!(last.message, "drained");
    // An unspecified reason is the framework's own request.
    let plain = super::supervisor::Kill::from_proto(&v1::KillTask::default());
    assert_eq!(plain, super::supervisor::Kill::default());
    Ok(())
}

#[tokio::test]
async fn a_task_ignoring_sigterm_is_killed_after_the_grace_period() -> TestResult {
    let mut run = launch(command("trap '' TERM; sleep 60 & sleep 60; wait", true, &[]), Some(300))?;
    run.wait_running().await;
    // Let the shell install its trap and start both sleeps.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = std::time::Instant::now();
    run.handle.kill(None);
    let last = run.next().await;
    let took = t0.elapsed();
    assert_eq!(state(&last), TaskState::Killed);
    assert!(
        took >= Duration::from_millis(300),
        "killed before the grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_group_gone(run.containerizer.pgids()[0]).await;
    Ok(())
}

#[tokio::test]
async fn a_kill_while_starting_launches_nothing() -> TestResult {
    let mut run = launch(command("sleep", false, &["60"]), None)?;
    run.handle.kill(Some(Duration::from_millis(100)));
    let reports = run.until_terminal().await;
    assert_eq!(states(&reports), [TaskState::Starting, TaskState::Killed]);
    assert!(run.containerizer.pgids().is_empty(), "a container was launched");
    Ok(())
}

/// A program that does not exist cannot run however often it is launched:
/// an ERROR, never FAILED (which is for a process that ran).
#[tokio::test]
async fn a_missing_program_is_an_error() -> TestResult {
    let mut run = launch(command("/nonexistent/mezzo-test-program", false, &[]), None)?;
    let reports = run.until_terminal().await;
    let last = reports.last().expect("a terminal report");
    assert_eq!(states(&reports), [TaskState::Starting, TaskState::Error]);
    assert_eq!(last.reason, StatusReason::ReasonTaskInvalid as i32);
    assert!(last.message.contains("nonexistent"), "{}", last.message);
    Ok(())
}

#[tokio::test]
async fn an_empty_command_is_invalid() -> TestResult {
    let mut run = launch(command("  ", true, &[]), None)?;
    let reports = run.until_terminal().await;
    assert_eq!(states(&reports), [TaskState::Error]);
    assert_eq!(reports[0].reason, StatusReason::ReasonTaskInvalid as i32);
    Ok(())
}

/// Which launch errors say the task never started (DROPPED, launch it
/// again), which say it cannot run as given (ERROR), and which that a
/// directory it mounts cannot be mounted here (FAILED).
#[test]
fn launch_outcome_table() {
    use crate::containerizer::ContainerError as E;
    use std::io::{Error, ErrorKind};
    let dropped = (TaskState::Dropped, StatusReason::ReasonContainerLaunchFailed);
    let invalid = (TaskState::Error, StatusReason::ReasonTaskInvalid);
    let cases = [
        (
            E::User {
                user: "root".into(),
                agent_user: "nobody".into(),
            },
            invalid,
        ),
        (
            E::Spawn {
                program: "x".into(),
                source: Error::from(ErrorKind::NotFound),
            },
            invalid,
        ),
        (
            E::Spawn {
                program: "x".into(),
                source: Error::from(ErrorKind::OutOfMemory),
            },
            dropped,
        ),
        (
            E::Sandbox {
                path: "/s".into(),
                source: Error::from(ErrorKind::StorageFull),
            },
            dropped,
        ),
        (E::Isolation("cannot create cgroup".into()), dropped),
        (E::NeverStarted("dropped by the agent's recovery".into()), dropped),
        (
            E::Mount {
                target: "data".into(),
                why: "read-only".into(),
            },
            (TaskState::Failed, StatusReason::ReasonContainerLaunchFailed),
        ),
    ];
    for (e, want) in cases {
        assert_eq!(supervisor::launch_outcome(&e), want, "{e}");
    }
}

/// The claim taken, the posix containerizer starts nothing: a task that
/// recovery dropped never runs.
#[tokio::test]
async fn a_dropped_claim_starts_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir)?;
    let c = PosixContainerizer::new();
    assert!(matches!(
        c.recover("fw/t".into(), run_dir.clone()).await?,
        Recovery::NeverStarted
    ));
    let spec = ContainerSpec {
        id: "fw/t".into(),
        sandbox: dir.path().join("sandbox"),
        command: crate::containerizer::CommandSpec::Shell(format!("touch {}/ran", dir.path().display())),
        env: vec![],
        resources: Default::default(),
        user: None,
        run_dir: run_dir.clone(),
        isolated_network: false,
        image: None,
        image_credentials: None,
        progress: None,
        unconfined: false,
        secret_files: vec![],
        secret_env: vec![],
        mounts: vec![],
    };
    let err = c.launch(spec).await.err().expect("refused");
    assert!(matches!(err, ContainerError::NeverStarted(_)), "{err}");
    assert!(!dir.path().join("ran").exists());
    // A claim taken by a launch makes recovery answer "may have run".
    let other = dir.path().join("run2");
    std::fs::create_dir_all(&other)?;
    crate::containerizer::claim::take(&other, crate::containerizer::claim::Claim::Started)?;
    assert!(matches!(c.recover("fw/u".into(), other).await?, Recovery::Gone));
    Ok(())
}

#[tokio::test]
async fn output_and_environment_land_in_the_sandbox() -> TestResult {
    let cmd = v1::CommandInfo {
        environment: vec![v1::EnvVar {
            name: "GREETING".into(),
            value: "hello".into(),
            ..Default::default()
        }],
        // As the master sends it: the secret's value filled in.
        secret_files: vec![v1::SecretFile {
            path: "conf/db.pw".into(),
            secret: "db".into(),
            value: b"hunter2".to_vec(),
        }],
        ..command(
            "echo $GREETING $MEZZO_TASK_ID $MEZZO_FRAMEWORK_ID $MEZZO_AGENT_ID; pwd; echo oops >&2",
            true,
            &[],
        )
    };
    let mut run = launch(cmd, None)?;
    assert_eq!(
        state(run.until_terminal().await.last().expect("terminal")),
        TaskState::Finished
    );
    let stdout = std::fs::read_to_string(run.sandbox.join("stdout"))?;
    let cwd = std::fs::canonicalize(&run.sandbox)?;
    assert_eq!(
        stdout,
        format!("hello task-1 fw-1 agent-1\n{}\n", cwd.display()),
        "sandbox {}",
        Path::new(&run.sandbox).display()
    );
    assert_eq!(std::fs::read_to_string(run.sandbox.join("stderr"))?, "oops\n");
    let secret = run.sandbox.join("conf/db.pw");
    assert_eq!(std::fs::read(&secret)?, b"hunter2");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&secret)?.permissions().mode() & 0o777, 0o400);
    Ok(())
}

/// A shell task mounting `mounts`, on a work dir holding the `volumes`.
fn with_mounts(script: &str, mounts: Vec<v1::Mount>, volumes: &[&str]) -> Result<Run, Box<dyn std::error::Error>> {
    let task = v1::TaskInfo {
        command: Some(command(script, true, &[])),
        container: Some(Box::new(v1::ContainerInfo {
            mounts,
            ..Default::default()
        })),
        ..Default::default()
    };
    let ids = volumes
        .iter()
        .map(|v| mezzo_proto::ids::VolumeId::parse(v))
        .collect::<Result<Vec<_>, _>>()?;
    launch_task(task, |work| {
        crate::volumes::Volumes::open(work, vec![])?.sync(&ids, &Default::default())?;
        Ok(())
    })
}

fn volume_mount(id: &str, path: &str, read_only: bool) -> v1::Mount {
    crate::volumes::tests::mount(id, "", path, read_only)
}

/// docs/frameworks.md "Volumes": without isolation a volume is a symlink
/// in the sandbox, and what the task writes there is the volume's.
#[tokio::test]
async fn without_isolation_a_volume_is_a_link_in_the_sandbox() -> TestResult {
    let mounts = vec![volume_mount("db-0", "data/db", false)];
    let mut run = with_mounts("echo hi > data/db/file", mounts, &["db-0"])?;
    let last = run.until_terminal().await.pop().expect("terminal");
    assert_eq!(state(&last), TaskState::Finished, "{}", last.message);
    let volume = crate::paths::volumes_root(run._dir.path()).join("db-0");
    assert_eq!(std::fs::read_to_string(volume.join("file"))?, "hi\n");
    assert_eq!(std::fs::read_link(run.sandbox.join("data/db"))?, volume);
    Ok(())
}

/// A volume the master believed was here fails the launch, naming it;
/// a read-only mount, which nothing enforces without isolation, too.
#[tokio::test]
async fn a_missing_volume_or_a_read_only_mount_without_isolation_fails_the_launch() -> TestResult {
    let cases = [
        (volume_mount("db-1", "data", false), "volume db-1 is not on this agent"),
        (
            volume_mount("db-0", "data", true),
            "mount at data: a task without isolation (--isolation none) cannot be given a read-only mount",
        ),
    ];
    for (mount, want) in cases {
        let mut run = with_mounts("touch ran", vec![mount], &["db-0"])?;
        let reports = run.until_terminal().await;
        assert_eq!(states(&reports), [TaskState::Starting, TaskState::Failed]);
        let last = reports.last().expect("terminal");
        assert_eq!(last.reason, StatusReason::ReasonContainerLaunchFailed as i32);
        assert_eq!(last.message, want);
        assert!(!run.sandbox.join("ran").exists());
    }
    Ok(())
}

/// The agent checks the mounts again: a bad one is the task's error.
#[tokio::test]
async fn an_invalid_mount_is_a_task_error() -> TestResult {
    let mut run = with_mounts("touch ran", vec![volume_mount("db-0", "/data", false)], &["db-0"])?;
    let reports = run.until_terminal().await;
    assert_eq!(states(&reports), [TaskState::Error]);
    assert!(
        reports[0].message.contains("needs a task with an image"),
        "{}",
        reports[0].message
    );
    Ok(())
}
