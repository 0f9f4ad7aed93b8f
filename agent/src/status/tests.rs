//! DESIGN.md "Status updates": written before sent, in order per task,
//! resent until acknowledged, forgotten only after the acknowledgement,
//! and surviving an agent restart.

use std::path::Path;
use std::time::Duration;

use mezzo_proto::state::TaskState;
use mezzo_proto::v1::{self, StatusReason};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::journal::{Record, decode_all};
use super::{Recovered, StatusConfig, StatusHandle, start};
use crate::key::TaskKey;
use crate::metrics::Metrics;
use crate::task::agent_status;
use crate::{AgentError, paths};

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Running {
    handle: StatusHandle,
    recovered: Vec<Recovered>,
    join: JoinHandle<Result<(), AgentError>>,
    forget: mpsc::UnboundedReceiver<TaskKey>,
}

async fn manager(dir: &Path, retry_initial: Duration) -> Result<Running, AgentError> {
    let config = StatusConfig {
        work_dir: dir.to_owned(),
        retry_initial,
        retry_max: retry_initial * 2,
    };
    let (forget_tx, forget) = mpsc::unbounded_channel();
    let (handle, recovered, join) = start(config, Metrics::new(), forget_tx).await?;
    Ok(Running {
        handle,
        recovered,
        join,
        forget,
    })
}

impl Running {
    /// Drops the handle and waits for the actor to finish its work.
    async fn stop(self) -> Result<(), Box<dyn std::error::Error>> {
        drop(self.handle);
        self.join.await??;
        Ok(())
    }
}

fn key(task: &str) -> TaskKey {
    TaskKey::parse("fw-1", task).expect("valid test ids")
}

fn status(task: &str, state: TaskState) -> v1::TaskStatus {
    agent_status(&key(task), "agent-1", state, StatusReason::ReasonUnspecified, "")
}

async fn next_update(rx: &mut mpsc::Receiver<v1::AgentMessage>) -> v1::StatusUpdate {
    let msg = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an update within 5s")
        .expect("outbound open");
    match msg.message {
        Some(v1::agent_message::Message::StatusUpdate(u)) => u,
        other => panic!("expected a status update, got {other:?}"),
    }
}

async fn assert_silent(rx: &mut mpsc::Receiver<v1::AgentMessage>, for_: Duration) {
    if let Ok(Some(msg)) = tokio::time::timeout(for_, rx.recv()).await {
        panic!("expected nothing, got {msg:?}");
    }
}

fn state_of(u: &v1::StatusUpdate) -> Option<TaskState> {
    TaskState::from_proto(u.status.as_ref()?.state)
}

fn uuid(u: &v1::StatusUpdate) -> Vec<u8> {
    u.status.as_ref().map(|s| s.uuid.clone()).unwrap_or_default()
}

fn ack(task: &str, uuid: Vec<u8>) -> v1::AcknowledgeUpdate {
    v1::AcknowledgeUpdate {
        framework_id: "fw-1".into(),
        task_id: task.into(),
        uuid,
    }
}

fn journal_records(dir: &Path) -> Vec<Record> {
    let bytes = std::fs::read(paths::status_journal(dir)).unwrap_or_default();
    decode_all(&bytes).0
}

#[tokio::test]
async fn an_update_is_on_disk_before_it_is_sent() -> TestResult {
    let dir = tempfile::tempdir()?;
    let m = manager(dir.path(), Duration::from_secs(10)).await?;
    let (tx, mut rx) = mpsc::channel(16);
    m.handle.connected(tx).await?;
    m.handle.update(key("t1"), status("t1", TaskState::Starting)).await?;
    let sent = next_update(&mut rx).await;
    assert_eq!(uuid(&sent).len(), 16);
    let on_disk = journal_records(dir.path());
    assert!(
        on_disk
            .iter()
            .any(|r| matches!(r, Record::Update(u) if uuid(u) == uuid(&sent))),
        "sent update not in the journal: {on_disk:?}"
    );
    m.stop().await
}

#[tokio::test]
async fn only_the_head_is_in_flight_and_its_ack_releases_the_next() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut m = manager(dir.path(), Duration::from_secs(10)).await?;
    let (tx, mut rx) = mpsc::channel(16);
    m.handle.connected(tx).await?;
    for s in [TaskState::Starting, TaskState::Running, TaskState::Finished] {
        m.handle.update(key("t1"), status("t1", s)).await?;
    }
    let first = next_update(&mut rx).await;
    assert_eq!(state_of(&first), Some(TaskState::Starting));
    assert_eq!(first.latest_state, v1::TaskState::TaskFinished as i32);
    assert_silent(&mut rx, Duration::from_millis(200)).await;

    m.handle.acknowledge(ack("t1", vec![0; 16])).await?;
    assert_silent(&mut rx, Duration::from_millis(100)).await;

    m.handle.acknowledge(ack("t1", uuid(&first))).await?;
    let second = next_update(&mut rx).await;
    assert_eq!(state_of(&second), Some(TaskState::Running));
    m.handle.acknowledge(ack("t1", uuid(&second))).await?;
    let third = next_update(&mut rx).await;
    assert_eq!(state_of(&third), Some(TaskState::Finished));
    assert!(m.forget.try_recv().is_err(), "forgotten before the terminal ack");

    m.handle.acknowledge(ack("t1", uuid(&third))).await?;
    assert_eq!(m.handle.pending().await?, 0);
    assert_eq!(m.forget.recv().await, Some(key("t1")));
    m.stop().await
}

#[tokio::test]
async fn an_unacknowledged_head_is_resent_with_backoff() -> TestResult {
    let dir = tempfile::tempdir()?;
    let m = manager(dir.path(), Duration::from_millis(50)).await?;
    let (tx, mut rx) = mpsc::channel(16);
    m.handle.connected(tx).await?;
    m.handle.update(key("t1"), status("t1", TaskState::Running)).await?;
    let first = next_update(&mut rx).await;
    let t0 = tokio::time::Instant::now();
    let again = next_update(&mut rx).await;
    let third = next_update(&mut rx).await;
    assert_eq!(uuid(&again), uuid(&first));
    assert_eq!(uuid(&third), uuid(&first));
    assert!(
        t0.elapsed() >= Duration::from_millis(100),
        "resent too fast: {:?}",
        t0.elapsed()
    );
    m.stop().await
}

#[tokio::test]
async fn a_new_connection_resends_every_head() -> TestResult {
    let dir = tempfile::tempdir()?;
    let m = manager(dir.path(), Duration::from_secs(10)).await?;
    m.handle.update(key("a"), status("a", TaskState::Running)).await?;
    m.handle.update(key("b"), status("b", TaskState::Running)).await?;
    let (tx, mut rx) = mpsc::channel(16);
    m.handle.connected(tx).await?;
    let mut tasks = vec![
        next_update(&mut rx).await.status.map(|s| s.task_id),
        next_update(&mut rx).await.status.map(|s| s.task_id),
    ];
    tasks.sort();
    assert_eq!(tasks, vec![Some("a".to_owned()), Some("b".to_owned())]);
    m.handle.disconnected().await?;
    let (tx2, mut rx2) = mpsc::channel(16);
    m.handle.connected(tx2).await?;
    next_update(&mut rx2).await;
    next_update(&mut rx2).await;
    m.stop().await
}

#[tokio::test]
async fn pending_updates_survive_a_restart_in_order() -> TestResult {
    let dir = tempfile::tempdir()?;
    let m = manager(dir.path(), Duration::from_secs(10)).await?;
    let (tx, mut rx) = mpsc::channel(16);
    m.handle.connected(tx).await?;
    for s in [TaskState::Starting, TaskState::Running, TaskState::Finished] {
        m.handle.update(key("t1"), status("t1", s)).await?;
    }
    m.handle.update(key("t2"), status("t2", TaskState::Starting)).await?;
    let mut heads = [next_update(&mut rx).await, next_update(&mut rx).await];
    heads.sort_by_key(|u| u.status.as_ref().map(|s| s.task_id.clone()));
    m.handle.acknowledge(ack("t1", uuid(&heads[0]))).await?;
    let second = next_update(&mut rx).await;
    m.stop().await?;

    let m = manager(dir.path(), Duration::from_secs(10)).await?;
    assert_eq!(
        m.recovered,
        vec![
            Recovered {
                key: key("t1"),
                latest_state: TaskState::Finished,
                latest_reason: m.recovered[0].latest_reason,
                uuids: m.recovered[0].uuids.clone(),
            },
            Recovered {
                key: key("t2"),
                latest_state: TaskState::Starting,
                latest_reason: m.recovered[1].latest_reason,
                uuids: vec![uuid(&heads[1])],
            },
        ]
    );
    assert_eq!(m.recovered[0].uuids.len(), 2, "t1's two updates still pending");
    assert_eq!(m.recovered[0].uuids[0], uuid(&second));
    assert_eq!(m.handle.pending().await?, 3);
    let (tx, mut rx) = mpsc::channel(16);
    m.handle.connected(tx).await?;
    let mut resent = [next_update(&mut rx).await, next_update(&mut rx).await];
    resent.sort_by_key(|u| u.status.as_ref().map(|s| s.task_id.clone()));
    assert_eq!(uuid(&resent[0]), uuid(&second), "t1 resumes at its second update");
    assert_eq!(uuid(&resent[1]), uuid(&heads[1]));
    m.handle.acknowledge(ack("t1", uuid(&second))).await?;
    assert_eq!(state_of(&next_update(&mut rx).await), Some(TaskState::Finished));
    m.stop().await
}

#[tokio::test]
async fn a_truncated_tail_is_dropped_and_appends_continue() -> TestResult {
    let dir = tempfile::tempdir()?;
    let m = manager(dir.path(), Duration::from_secs(10)).await?;
    m.handle.update(key("t1"), status("t1", TaskState::Starting)).await?;
    m.handle.update(key("t1"), status("t1", TaskState::Running)).await?;
    assert_eq!(m.handle.pending().await?, 2);
    m.stop().await?;

    let path = paths::status_journal(dir.path());
    let len = std::fs::metadata(&path)?.len();
    std::fs::OpenOptions::new().write(true).open(&path)?.set_len(len - 3)?;

    let m = manager(dir.path(), Duration::from_secs(10)).await?;
    assert_eq!(m.handle.pending().await?, 1);
    assert_eq!(m.recovered[0].latest_state, TaskState::Starting);
    m.handle.update(key("t1"), status("t1", TaskState::Failed)).await?;
    assert_eq!(m.handle.pending().await?, 2);
    m.stop().await?;

    let m = manager(dir.path(), Duration::from_secs(10)).await?;
    assert_eq!(m.handle.pending().await?, 2);
    assert_eq!(m.recovered[0].latest_state, TaskState::Failed);
    m.stop().await
}

#[tokio::test]
async fn the_journal_is_compacted_once_acknowledged_updates_pile_up() -> TestResult {
    let dir = tempfile::tempdir()?;
    let m = manager(dir.path(), Duration::from_secs(10)).await?;
    let (tx, mut rx) = mpsc::channel(8192);
    m.handle.connected(tx).await?;
    for i in 0..2100 {
        let t = format!("t{i}");
        m.handle.update(key(&t), status(&t, TaskState::Finished)).await?;
        let u = next_update(&mut rx).await;
        m.handle.acknowledge(ack(&t, uuid(&u))).await?;
    }
    m.handle.update(key("last"), status("last", TaskState::Running)).await?;
    assert_eq!(m.handle.pending().await?, 1);
    let records = journal_records(dir.path());
    assert!(records.len() < 200, "journal not compacted: {} records", records.len());
    m.stop().await?;
    let m = manager(dir.path(), Duration::from_secs(10)).await?;
    assert_eq!(m.recovered.len(), 1);
    assert_eq!(m.recovered[0].key, key("last"));
    m.stop().await
}
