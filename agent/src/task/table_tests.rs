//! The task table with a fake containerizer: what a restarted agent
//! reports for each task it finds (`Table::recover`; DESIGN.md "Tasks":
//! DROPPED means the process never started, LOST that it may have run),
//! and that every launch it receives ends in a status ("An agent never
//! silently forgets a launch it received").

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;
use tokio::sync::{mpsc, watch};

use super::table::{self, TableDeps, TableHandle};
use crate::containerizer::{
    Container, ContainerError, ContainerSpec, Containerizer, EndedContainer, ExitStatus, Recovery,
};
use crate::key::TaskKey;
use crate::metrics::Metrics;
use crate::status::{self, Recovered, StatusConfig};
use crate::{AgentError, paths};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The launch time in every checkpoint `restart` writes.
const CHECKPOINTED_AT: f64 = 1_700_000_000.0;

/// What the fake finds of each container, by task id.
#[derive(Debug, Clone, Copy)]
enum Found {
    NeverStarted,
    Gone,
    Ended(ExitStatus),
}

#[derive(Default)]
struct Fake {
    found: Mutex<BTreeMap<String, Found>>,
}

impl Containerizer for Fake {
    /// Fails, but for a task named `hang`, whose launch never ends: it
    /// stays live.
    fn launch(&self, spec: ContainerSpec) -> BoxFuture<'_, Result<Box<dyn Container>, ContainerError>> {
        if spec.id.ends_with("/hang") {
            return futures::future::pending().boxed();
        }
        async { Err(ContainerError::Isolation("the fake launches nothing".into())) }.boxed()
    }

    fn recover(&self, id: String, _run_dir: PathBuf) -> BoxFuture<'_, Result<Recovery, ContainerError>> {
        let task = id.rsplit('/').next().unwrap_or_default().to_owned();
        let found = self.found.lock().ok().and_then(|f| f.get(&task).copied());
        async move {
            Ok(match found {
                Some(Found::NeverStarted) => Recovery::NeverStarted,
                Some(Found::Ended(status)) => Recovery::Adopted(Box::new(EndedContainer::new(id, Ok(status)))),
                Some(Found::Gone) | None => Recovery::Gone,
            })
        }
        .boxed()
    }
}

struct Agent {
    table: TableHandle,
    status: status::StatusHandle,
    _dir: tempfile::TempDir,
}

/// A restarted agent with a checkpoint for each of `checkpointed`, the
/// journal's pending states `journal`, and the fake's answers `found`.
async fn restart(
    checkpointed: &[&str],
    journal: &[(&str, TaskState)],
    found: &[(&str, Found)],
    checkpoints_intact: bool,
) -> Result<Agent, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (work_dir, runtime_dir) = (dir.path().join("work"), dir.path().join("run"));
    for t in checkpointed {
        let key = TaskKey::parse("fw", t)?;
        let meta = paths::task_meta_dir(&runtime_dir, &key.framework_id, &key.task_id);
        std::fs::create_dir_all(&meta)?;
        let run = v1::RunTask {
            framework_id: "fw".into(),
            framework: None,
            launched_at: CHECKPOINTED_AT,
            task: Some(v1::TaskInfo {
                task_id: t.to_string(),
                ..Default::default()
            }),
        };
        std::fs::write(meta.join(paths::TASK_CHECKPOINT), prost::Message::encode_to_vec(&run))?;
    }
    let fake = Fake::default();
    if let Ok(mut f) = fake.found.lock() {
        f.extend(found.iter().map(|(t, x)| (t.to_string(), *x)));
    }
    let metrics = Metrics::new();
    let (forget_tx, forget_rx) = mpsc::unbounded_channel();
    let config = StatusConfig {
        work_dir: work_dir.clone(),
        retry_initial: std::time::Duration::from_millis(100),
        retry_max: std::time::Duration::from_secs(1),
    };
    let (status, _, _status_join) = status::start(config, metrics.clone(), forget_tx).await?;
    let sandboxes = paths::sandboxes_root(&work_dir);
    let (writeback, _) = crate::writeback::start(&sandboxes, None)?;
    let (gc, _gc_actor) = crate::gc::start(sandboxes, Default::default(), metrics.clone())?;
    let (_id_tx, agent_id) = watch::channel(None);
    let fetcher = Arc::new(crate::fetch::Fetcher::new(
        Default::default(),
        &work_dir,
        metrics.clone(),
    )?);
    let volumes = Arc::new(crate::volumes::Volumes::open(&work_dir, vec![])?);
    let deps = TableDeps {
        work_dir,
        runtime_dir,
        default_kill_grace: std::time::Duration::from_secs(1),
        containerizer: Arc::new(fake),
        fetcher,
        volumes,
        status: status.clone(),
        forget: forget_rx,
        agent_id,
        metrics,
        writeback,
        gc,
        checkpoints_intact,
        executors: Default::default(),
    };
    let mut recovered = Vec::new();
    for (t, s) in journal {
        recovered.push(Recovered {
            key: TaskKey::parse("fw", t)?,
            latest_state: *s,
            latest_reason: mezzo_proto::v1::StatusReason::ReasonUnspecified,
            uuids: Vec::new(),
        });
    }
    let (table, _join) = table::start(deps, recovered).await?;
    Ok(Agent {
        table,
        status,
        _dir: dir,
    })
}

impl Agent {
    /// The state of each task the table knows, by task id.
    async fn states(&self) -> Result<BTreeMap<String, TaskState>, AgentError> {
        Ok(self
            .table
            .snapshot()
            .await?
            .into_iter()
            .map(|v| (v.key.task_id.to_string(), v.state))
            .collect())
    }

    /// Waits until each task of `want` is in its state (supervisors report
    /// asynchronously); returns every state then.
    async fn wait_states(&self, want: &[(&str, TaskState)]) -> Result<BTreeMap<String, TaskState>, AgentError> {
        for _ in 0..100 {
            let states = self.states().await?;
            if want.iter().all(|(t, s)| states.get(*t) == Some(s)) {
                return Ok(states);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("wanted {want:?}, states: {:?}", self.states().await?);
    }
}

#[tokio::test]
async fn recovery_reports_never_started_tasks_dropped() -> TestResult {
    let a = restart(&["t"], &[], &[("t", Found::NeverStarted)], true).await?;
    assert_eq!(a.states().await?.get("t"), Some(&TaskState::Dropped));
    assert_eq!(a.status.pending().await?, 1, "the drop is an update to deliver");
    Ok(())
}

#[tokio::test]
async fn recovery_reports_a_gone_container_lost() -> TestResult {
    let a = restart(&["t"], &[("t", TaskState::Running)], &[("t", Found::Gone)], true).await?;
    assert_eq!(a.states().await?.get("t"), Some(&TaskState::Lost));
    Ok(())
}

#[tokio::test]
async fn a_journalled_task_without_a_checkpoint_is_dropped() -> TestResult {
    // STARTING was journalled, the agent died before the checkpoint.
    let a = restart(&[], &[("t", TaskState::Starting)], &[], true).await?;
    assert_eq!(a.states().await?.get("t"), Some(&TaskState::Dropped));
    Ok(())
}

#[tokio::test]
async fn lost_checkpoints_report_lost() -> TestResult {
    let a = restart(&[], &[("t", TaskState::Running)], &[], false).await?;
    assert_eq!(a.states().await?.get("t"), Some(&TaskState::Lost));
    Ok(())
}

#[tokio::test]
async fn an_ended_container_whose_cgroup_is_gone_reports_its_true_end() -> TestResult {
    let a = restart(&["t"], &[], &[("t", Found::Ended(ExitStatus::Code(3)))], true).await?;
    // Adopted; its supervisor reports the recorded end.
    a.wait_states(&[("t", TaskState::Failed)]).await?;
    Ok(())
}

#[tokio::test]
async fn a_terminal_task_waits_for_its_acknowledgement() -> TestResult {
    let a = restart(&["t"], &[("t", TaskState::Finished)], &[("t", Found::Gone)], true).await?;
    assert_eq!(a.states().await?.get("t"), Some(&TaskState::Finished));
    Ok(())
}

/// DESIGN.md "Tasks": an agent never silently forgets a launch it
/// received. Every RunTask the table can key ends in a status (here the
/// fake containerizer fails every launch: DROPPED, since nothing started;
/// an empty command: ERROR); a second RunTask of a known task launches
/// nothing more.
#[tokio::test]
async fn every_run_task_produces_a_status() -> TestResult {
    let a = restart(&[], &[], &[], true).await?;
    let run = |id: &str, command: &str| v1::RunTask {
        framework_id: "fw".into(),
        framework: None,
        launched_at: 0.0,
        task: Some(v1::TaskInfo {
            task_id: id.into(),
            command: Some(v1::CommandInfo {
                value: command.into(),
                shell: true,
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    a.table.run_task(run("launched", "true")).await?;
    a.table.run_task(run("invalid", " ")).await?;
    a.table.run_task(run("launched", "true")).await?;
    let states = a
        .wait_states(&[("invalid", TaskState::Error), ("launched", TaskState::Dropped)])
        .await?;
    assert_eq!(states.len(), 2, "{states:?}");
    Ok(())
}

/// Issue 21: a re-registration tells a new leader each task's launch time
/// (from its RunTask, kept in its checkpoint across an agent restart) and
/// its status updates, the latest last, with its exit code.
#[tokio::test]
async fn a_reregistration_carries_launch_times_and_statuses() -> TestResult {
    let a = restart(&["old"], &[], &[("old", Found::Ended(ExitStatus::Code(3)))], true).await?;
    a.table
        .run_task(v1::RunTask {
            framework_id: "fw".into(),
            framework: None,
            launched_at: 42.5,
            task: Some(v1::TaskInfo {
                task_id: "new".into(),
                command: Some(v1::CommandInfo {
                    value: "true".into(),
                    shell: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
        .await?;
    a.wait_states(&[("old", TaskState::Failed), ("new", TaskState::Dropped)])
        .await?;
    let views = a.table.reregistration().await?;
    let view = |id: &str| views.iter().find(|v| v.key.task_id.as_str() == id).expect("reported");
    let old = view("old");
    assert_eq!(old.launched_at, CHECKPOINTED_AT);
    let last = old.statuses.last().expect("a status");
    assert_eq!(
        (last.state, last.exit_code),
        (v1::TaskState::TaskFailed as i32, Some(3))
    );
    assert!(old.statuses.iter().all(|s| s.uuid.is_empty()));
    let new = view("new");
    assert_eq!(new.launched_at, 42.5);
    assert_eq!(
        new.statuses.last().map(|s| s.state),
        Some(v1::TaskState::TaskDropped as i32)
    );
    // A snapshot (/state, /metrics) copies no statuses.
    assert!(a.table.snapshot().await?.iter().all(|v| v.statuses.is_empty()));
    Ok(())
}

/// docs/frameworks.md "Volumes": the master's list of volumes is applied
/// before the launch that follows it (which finds its new volume); a
/// second task may not mount a volume a live task mounts (one the master
/// thinks free while a task of a removed framework ends); and a volume no
/// longer listed leaves the store even while mounted.
#[tokio::test]
async fn volumes_follow_the_masters_list_and_one_task_mounts_each() -> TestResult {
    let a = restart(&[], &[], &[], true).await?;
    let volumes = paths::volumes_root(&a._dir.path().join("work"));
    let volume = |id: &str| v1::Volume {
        id: id.into(),
        ..Default::default()
    };
    a.table.volumes(vec![volume("db-0"), volume("old")]).await?;
    let run = v1::RunTask {
        framework_id: "fw".into(),
        framework: None,
        launched_at: 0.0,
        task: Some(v1::TaskInfo {
            task_id: "hang".into(),
            command: Some(v1::CommandInfo {
                value: "true".into(),
                shell: true,
                ..Default::default()
            }),
            container: Some(Box::new(v1::ContainerInfo {
                mounts: vec![v1::Mount {
                    container_path: "data".into(),
                    volume_id: "db-0".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        }),
    };
    a.table.run_task(run.clone()).await?;
    a.wait_states(&[("hang", TaskState::Starting)]).await?;
    let mut second = run.clone();
    if let Some(t) = second.task.as_mut() {
        t.task_id = "second".into();
    }
    a.table.run_task(second).await?;
    a.wait_states(&[("hang", TaskState::Starting), ("second", TaskState::Failed)])
        .await?;
    let views = a.table.reregistration().await?;
    let failed = views.iter().find(|v| v.key.task_id.as_str() == "second");
    let message = failed.and_then(|v| v.statuses.last()).map(|s| s.message.clone());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("still mounted by task fw/hang")),
        "{message:?}"
    );
    a.table.volumes(vec![]).await?;
    a.states().await?; // answered after the list was applied
    assert!(!volumes.join("db-0").exists() && !volumes.join("old").exists());
    Ok(())
}
