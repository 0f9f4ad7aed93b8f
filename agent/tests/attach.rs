//! The agent against a scripted fake master over real gRPC: register,
//! run a task, acknowledge its updates, reconnect and re-register, and
//! follow a `mezzo-leader` redirect.

use std::net::SocketAddr;
use std::time::Duration;

use mezzo_agent::{AgentConfig, AgentHandle, start};
use mezzo_proto::resources::Resources;
use mezzo_proto::v1::agent_api_server::{AgentApi, AgentApiServer};
use mezzo_proto::v1::{self, agent_message::Message as In, master_message::Message as Out};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Outbound = mpsc::Sender<Result<v1::MasterMessage, Status>>;

struct FakeMaster {
    sessions: mpsc::Sender<(Streaming<v1::AgentMessage>, Outbound)>,
    /// When set, every Attach is refused with UNAVAILABLE naming this leader.
    redirect_to: Option<String>,
    /// When set, Attach is answered only after this long, and whether a
    /// message came before the answer is reported.
    hold: Option<(Duration, mpsc::Sender<bool>)>,
}

#[tonic::async_trait]
impl AgentApi for FakeMaster {
    type AttachStream = ReceiverStream<Result<v1::MasterMessage, Status>>;

    async fn attach(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        if let Some(leader) = &self.redirect_to {
            let mut status = Status::unavailable("not the leader");
            status.metadata_mut().insert(
                "mezzo-leader",
                leader.parse().map_err(|_| Status::internal("bad leader"))?,
            );
            return Err(status);
        }
        let mut inbound = request.into_inner();
        if let Some((wait, report)) = &self.hold {
            let early = tokio::time::timeout(*wait, inbound.next()).await.is_ok();
            let _ = report.send(early).await;
        }
        let (tx, rx) = mpsc::channel(64);
        self.sessions
            .send((inbound, tx))
            .await
            .map_err(|_| Status::internal("test gone"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

type Sessions = mpsc::Receiver<(Streaming<v1::AgentMessage>, Outbound)>;

async fn fake_master(redirect_to: Option<String>) -> Result<(SocketAddr, Sessions), std::io::Error> {
    fake_master_holding(redirect_to, None).await
}

async fn fake_master_holding(
    redirect_to: Option<String>,
    hold: Option<(Duration, mpsc::Sender<bool>)>,
) -> Result<(SocketAddr, Sessions), std::io::Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(4);
    let svc = AgentApiServer::new(FakeMaster {
        sessions: tx,
        redirect_to,
        hold,
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Ok((addr, rx))
}

async fn agent(master: SocketAddr, dir: &std::path::Path) -> Result<AgentHandle, Box<dyn std::error::Error>> {
    let mut config = AgentConfig::new(vec![master.to_string()], "127.0.0.1:0".parse()?, dir.to_owned());
    config.resources = Some(Resources::parse("cpus:1;mem:128;disk:100;ports:[31000-31010]")?);
    config.status_retry_initial = Duration::from_millis(500);
    config.runtime_dir = Some(dir.join("run"));
    // The fake master speaks plain text.
    config.security.insecure = true;
    Ok(start(config).await?)
}

async fn next_session(sessions: &mut Sessions) -> (Streaming<v1::AgentMessage>, Outbound) {
    tokio::time::timeout(Duration::from_secs(10), sessions.recv())
        .await
        .expect("the agent attaches within 10s")
        .expect("fake master running")
}

/// The next agent message that is not a heartbeat.
async fn next_message(inbound: &mut Streaming<v1::AgentMessage>) -> In {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), inbound.next())
            .await
            .expect("a message within 10s")
            .expect("stream open")
            .expect("no error");
        match msg.message {
            Some(In::Heartbeat(_)) => continue,
            Some(m) => return m,
            None => panic!("empty agent message"),
        }
    }
}

async fn send(tx: &Outbound, msg: Out) {
    tx.send(Ok(v1::MasterMessage { message: Some(msg) }))
        .await
        .expect("agent stream open");
}

async fn http_get(addr: SocketAddr, path: &str) -> Result<(String, String), std::io::Error> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    Ok((head.lines().next().unwrap_or_default().to_owned(), body.to_owned()))
}

#[tokio::test]
async fn registers_runs_a_task_and_reregisters_after_a_reconnect() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (master, mut sessions) = fake_master(None).await?;
    let agent = agent(master, dir.path()).await?;
    assert_eq!(http_get(agent.http_addr, "/health").await?.1, "ok");

    let (mut inbound, tx) = next_session(&mut sessions).await;
    let In::Register(register) = next_message(&mut inbound).await else {
        panic!("expected Register first")
    };
    let info = register.agent.expect("agent info");
    assert_eq!(info.http_address, agent.http_addr.to_string());
    assert_eq!(
        Resources::from_proto(&info.resources)?.to_string(),
        "cpus:1;mem:128;disk:100;ports:[31000-31010]"
    );
    send(
        &tx,
        Out::Registered(v1::Registered {
            agent_id: "agent-42".into(),
            master_id: "m1".into(),
            heartbeat_interval_secs: 0.2,
        }),
    )
    .await;

    let run = v1::RunTask {
        framework_id: "fw-1".into(),
        framework: None,
        launched_at: 0.0,
        task: Some(v1::TaskInfo {
            task_id: "t1".into(),
            name: "hello".into(),
            command: Some(v1::CommandInfo {
                value: "echo hi".into(),
                shell: true,
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    send(&tx, Out::RunTask(Box::new(run.clone()))).await;
    send(&tx, Out::RunTask(Box::new(run))).await; // a duplicate launches nothing

    let mut seen = Vec::new();
    for _ in 0..3 {
        let In::StatusUpdate(update) = next_message(&mut inbound).await else {
            panic!("expected a status update")
        };
        let status = update.status.expect("status");
        assert_eq!(status.agent_id, "agent-42");
        seen.push(v1::TaskState::try_from(status.state)?);
        send(
            &tx,
            Out::Acknowledge(v1::AcknowledgeUpdate {
                framework_id: "fw-1".into(),
                task_id: "t1".into(),
                uuid: status.uuid,
            }),
        )
        .await;
    }
    use v1::TaskState::*;
    assert_eq!(seen, [TaskStarting, TaskRunning, TaskFinished]);
    assert_eq!(std::fs::read_to_string(dir.path().join("agent_id"))?, "agent-42");
    let stdout = dir.path().join("sandboxes/fw-1/t1/stdout");
    assert_eq!(std::fs::read_to_string(stdout)?, "hi\n");

    // Once the terminal update is acknowledged the task is forgotten.
    let mut state = serde_json::Value::Null;
    for _ in 0..100 {
        state = serde_json::from_str(&http_get(agent.http_addr, "/state").await?.1)?;
        if state["tasks"].as_array().is_some_and(|t| t.is_empty()) && state["pending_updates"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state["agent_id"], "agent-42");
    assert_eq!(state["master"], master.to_string());
    assert_eq!(state["tasks"], serde_json::json!([]), "{state}");
    assert_eq!(state["pending_updates"], 0);
    let (_, metrics) = http_get(agent.http_addr, "/metrics").await?;
    assert!(metrics.contains("mezzo_agent_tasks_launched_total 1"), "{metrics}");
    assert!(metrics.contains("mezzo_agent_connected 1"), "{metrics}");

    // The master goes away: the agent comes back with its id.
    drop(tx);
    drop(inbound);
    let (mut inbound, _tx) = next_session(&mut sessions).await;
    let In::Reregister(rereg) = next_message(&mut inbound).await else {
        panic!("expected Reregister after a reconnect")
    };
    assert_eq!(rereg.agent_id, "agent-42");
    // Only the finished task is reported, as recently completed.
    assert!(
        rereg
            .tasks
            .iter()
            .all(|t| t.state == v1::TaskState::TaskFinished as i32),
        "{:?}",
        rereg.tasks
    );
    Ok(())
}

#[tokio::test]
async fn follows_the_leader_named_by_a_non_leader() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (leader, mut sessions) = fake_master(None).await?;
    let (follower, _unused) = fake_master(Some(leader.to_string())).await?;
    let _agent = agent(follower, dir.path()).await?;
    let (mut inbound, _tx) = next_session(&mut sessions).await;
    assert!(matches!(next_message(&mut inbound).await, In::Register(_)));
    Ok(())
}

/// A master that has not answered Attach (a follower about to refuse it,
/// or a leader) gets nothing: the registration, a task list after a
/// failover, goes only on a stream the master took.
#[tokio::test]
async fn sends_its_registration_only_once_the_attach_is_answered() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (report, mut reports) = mpsc::channel(4);
    let (master, mut sessions) = fake_master_holding(None, Some((Duration::from_millis(500), report))).await?;
    let _agent = agent(master, dir.path()).await?;
    let early = tokio::time::timeout(Duration::from_secs(10), reports.recv()).await?;
    assert_eq!(early, Some(false), "a message came before Attach was answered");
    let (mut inbound, _tx) = next_session(&mut sessions).await;
    assert!(matches!(next_message(&mut inbound).await, In::Register(_)));
    Ok(())
}
