//! Custom executors end to end inside the agent: the task table, the
//! status update manager and the executor API with a real executor (a
//! Python script using the standard library only) in a real process.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::FutureExt;
use futures::future::BoxFuture;
use mezzo_proto::ids::AgentId;
use mezzo_proto::v1::{self, agent_message::Message};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::{mpsc, watch};

use crate::containerizer::{Container, ContainerError, ContainerSpec, Containerizer, PosixContainerizer, Recovery};
use crate::metrics::Metrics;
use crate::status::{self, StatusConfig, StatusHandle};
use crate::task::table::{self, ExecutorDeps, TableDeps, TableHandle};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A Mesos executor: subscribes, runs each task it is given until told
/// to finish it (a framework message `finish <task>`) or kill it, and
/// logs every event it receives to `events.log` in its sandbox.
const EXECUTOR: &str = r#"
import base64, http.client, json, os, sys, time, uuid

host, port = os.environ["MESOS_AGENT_ENDPOINT"].rsplit(":", 1)
fid, eid = os.environ["MESOS_FRAMEWORK_ID"], os.environ["MESOS_EXECUTOR_ID"]
token = os.environ["MESOS_EXECUTOR_AUTHENTICATION_TOKEN"]
headers = {"Content-Type": "application/json", "Accept": "application/json",
           "Authorization": "Bearer " + token}
log = open(os.path.join(os.environ["MESOS_SANDBOX"], "events.log"), "a", buffering=1)

def call(kind, **body):
    msg = {"framework_id": {"value": fid}, "executor_id": {"value": eid}, "type": kind}
    msg.update(body)
    try:
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        c.request("POST", "/api/v1/executor", json.dumps(msg), headers)
        r = c.getresponse()
        r.read()
        c.close()
        return r.status
    except OSError:
        # The agent restarts: an update is sent again on resubscribing.
        return 0

unacked = {}

def update(task, state):
    status = {"task_id": {"value": task}, "state": state, "source": "SOURCE_EXECUTOR",
              "uuid": base64.b64encode(uuid.uuid4().bytes).decode()}
    unacked[status["uuid"]] = status
    log.write("sent %s %s %d\n" % (task, state, call("UPDATE", update={"status": status})))

def message(text):
    call("MESSAGE", message={"data": base64.b64encode(text.encode()).decode()})

log.write("env %s %s %s\n" % (os.environ.get("MESOS_CHECKPOINT"), os.environ.get("MESOS_SLAVE_PID"),
                              os.environ.get("MESOS_DIRECTORY") == os.getcwd()))
def subscribe():
    # Retried while the agent restarts, with what it may have missed.
    while True:
        try:
            c = http.client.HTTPConnection(host, int(port))
            sub = {"unacknowledged_updates": [{"status": s} for s in unacked.values()]}
            c.request("POST", "/api/v1/executor",
                      json.dumps({"framework_id": {"value": fid}, "executor_id": {"value": eid},
                                  "type": "SUBSCRIBE", "subscribe": sub}), headers)
            r = c.getresponse()
        except OSError:
            time.sleep(0.1)
            continue
        if r.status != 200:
            log.write("subscribe %d\n" % r.status)
            sys.exit(3)
        return r

r = subscribe()
while True:
    try:
        line = r.readline()
    except OSError:
        line = b""
    if not line:
        log.write("disconnected\n")
        r = subscribe()
        continue
    event = json.loads(r.read(int(line)))
    kind = event["type"]
    if kind == "SUBSCRIBED":
        log.write("SUBSCRIBED %s\n" % event["subscribed"]["agent_info"]["id"]["value"])
    elif kind == "LAUNCH":
        task = event["launch"]["task"]
        tid = task["task_id"]["value"]
        log.write("LAUNCH %s\n" % tid)
        update(tid, "TASK_RUNNING")
        message("launched %s %s" % (tid, base64.b64decode(task.get("data", "")).decode()))
    elif kind == "ACKNOWLEDGED":
        log.write("ACKNOWLEDGED %s %s\n" % (event["acknowledged"]["task_id"]["value"],
                                            event["acknowledged"]["uuid"]))
        unacked.pop(event["acknowledged"]["uuid"], None)
    elif kind == "MESSAGE":
        text = base64.b64decode(event["message"]["data"]).decode()
        log.write("MESSAGE %s\n" % text)
        if text.startswith("finish "):
            update(text.split(" ", 1)[1], "TASK_FINISHED")
    elif kind == "KILL":
        tid = event["kill"]["task_id"]["value"]
        log.write("KILL %s\n" % tid)
        update(tid, "TASK_KILLED")
    elif kind == "SHUTDOWN":
        log.write("SHUTDOWN\n")
        sys.exit(0)
"#;

/// Records the process group of every container and SIGKILLs them all
/// when dropped, so that a failing test leaves no process behind.
#[derive(Clone, Default)]
struct Recording {
    inner: Arc<PosixContainerizer>,
    pgids: Arc<Mutex<Vec<u32>>>,
    /// Finds a live process group again after a restart, as the Linux
    /// containerizer does (the posix one cannot).
    adopt: bool,
}

/// A process group found again: watched until it is gone.
struct Adopted {
    id: String,
    pgid: i32,
}

impl Container for Adopted {
    fn pid(&self) -> u32 {
        self.pgid as u32
    }

    fn signal(&self, signal: crate::containerizer::Signal) -> Result<(), ContainerError> {
        match killpg(Pid::from_raw(self.pgid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(source) => Err(ContainerError::Signal {
                id: self.id.clone(),
                source,
            }),
        }
    }

    fn wait(&mut self) -> BoxFuture<'_, Result<crate::containerizer::ExitStatus, ContainerError>> {
        async move {
            while killpg(Pid::from_raw(self.pgid), None).is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(crate::containerizer::ExitStatus::Code(0))
        }
        .boxed()
    }

    fn cleanup(&mut self) -> BoxFuture<'_, Result<(), ContainerError>> {
        async { Ok(()) }.boxed()
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
        let pgid = std::fs::read_to_string(run_dir.join("posix.pgid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .filter(|p| *p > 1 && self.adopt && killpg(Pid::from_raw(*p), None).is_ok());
        match pgid {
            Some(pgid) => async move { Ok(Recovery::Adopted(Box::new(Adopted { id, pgid }))) }.boxed(),
            None => self.inner.recover(id, run_dir),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
        for a in &self.actors {
            a.abort();
        }
        if self._dir.is_none() {
            // Handed to the restarted agent.
            return;
        }
        let pgids = self.containers.pgids.lock().map(|p| p.clone()).unwrap_or_default();
        for pgid in pgids {
            let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
        }
    }
}

struct Harness {
    table: TableHandle,
    status: StatusHandle,
    /// What the agent sends its master.
    outbound: mpsc::Receiver<v1::AgentMessage>,
    out_tx: mpsc::Sender<v1::AgentMessage>,
    /// The executors' view of the master connection.
    master: watch::Sender<Option<mpsc::Sender<v1::AgentMessage>>>,
    /// The executor API.
    url: String,
    work_dir: PathBuf,
    runtime_dir: PathBuf,
    containers: Recording,
    /// Messages to the master not yet looked at.
    seen: Vec<Message>,
    server: tokio::task::JoinHandle<Result<(), crate::AgentError>>,
    /// The table's and the status manager's tasks: aborted, as if the
    /// agent died, on a restart.
    actors: [tokio::task::JoinHandle<Result<(), crate::AgentError>>; 2],
    _dir: Option<tempfile::TempDir>,
}

const FW: &str = "fw-1";

async fn harness(registration_timeout: Duration) -> Result<Harness, Box<dyn std::error::Error>> {
    harness_in(tempfile::tempdir()?, registration_timeout, Recording::default()).await
}

/// An agent on `dir`, recovering what an earlier one left there.
async fn harness_in(
    dir: tempfile::TempDir,
    registration_timeout: Duration,
    containers: Recording,
) -> Result<Harness, Box<dyn std::error::Error>> {
    let (work_dir, runtime_dir) = (dir.path().join("work"), dir.path().join("run"));
    std::fs::create_dir_all(&work_dir)?;
    let metrics = Metrics::new();
    let (forget_tx, forget_rx) = mpsc::unbounded_channel();
    let config = StatusConfig {
        work_dir: work_dir.clone(),
        retry_initial: Duration::from_secs(30),
        retry_max: Duration::from_secs(30),
    };
    let (status, recovered, status_join) = status::start(config, metrics.clone(), forget_tx).await?;
    let sandboxes = crate::paths::sandboxes_root(&work_dir);
    let (writeback, _) = crate::writeback::start(&sandboxes, None)?;
    let (gc, _gc_actor) = crate::gc::start(sandboxes, Default::default(), metrics.clone())?;
    let (_id_tx, agent_id) = watch::channel(Some(AgentId::parse("agent-1")?));
    let fetcher = Arc::new(crate::fetch::Fetcher::new(
        Default::default(),
        &work_dir,
        metrics.clone(),
    )?);
    let volumes = Arc::new(crate::volumes::Volumes::open(&work_dir, vec![])?);
    let bound = crate::executor_api::bind("127.0.0.1:0".parse()?, &work_dir).await?;
    let listener = bound.listener;
    let endpoint = listener.local_addr()?;
    let (out_tx, outbound) = mpsc::channel(256);
    let (master, master_rx) = watch::channel(Some(out_tx.clone()));
    let deps = TableDeps {
        work_dir: work_dir.clone(),
        runtime_dir: runtime_dir.clone(),
        default_kill_grace: Duration::from_secs(1),
        containerizer: Arc::new(containers.clone()),
        fetcher,
        volumes,
        status: status.clone(),
        forget: forget_rx,
        agent_id,
        metrics,
        writeback,
        gc,
        checkpoints_intact: true,
        executors: ExecutorDeps {
            endpoint,
            registration_timeout,
            agent_info: v1::AgentInfo {
                hostname: "localhost".into(),
                ..Default::default()
            },
            outbound: master_rx,
            rotate_tokens: bound.former_port_lost,
        },
    };
    let (table, table_join) = table::start(deps, recovered).await?;
    status.connected(out_tx.clone()).await?;
    let server = tokio::spawn(crate::executor_api::serve(listener, table.clone(), status.clone()));
    Ok(Harness {
        table,
        status,
        outbound,
        out_tx,
        master,
        url: format!("http://{endpoint}/api/v1/executor"),
        work_dir,
        runtime_dir,
        containers,
        seen: Vec::new(),
        server,
        actors: [table_join, status_join],
        _dir: Some(dir),
    })
}

fn executor(eid: &str, command: v1::CommandInfo) -> v1::ExecutorInfo {
    v1::ExecutorInfo {
        executor_id: eid.into(),
        name: "test executor".into(),
        command: Some(command),
        shutdown_grace_period_ms: Some(2000),
        ..Default::default()
    }
}

fn python_executor(dir: &Path, eid: &str) -> Result<v1::ExecutorInfo, std::io::Error> {
    let script = dir.join("executor.py");
    std::fs::write(&script, EXECUTOR)?;
    Ok(executor(
        eid,
        v1::CommandInfo {
            value: "python3".into(),
            arguments: vec![script.display().to_string()],
            shell: false,
            ..Default::default()
        },
    ))
}

fn sleeping_executor(eid: &str) -> v1::ExecutorInfo {
    executor(
        eid,
        v1::CommandInfo {
            value: "sleep 30".into(),
            shell: true,
            ..Default::default()
        },
    )
}

fn run(task_id: &str, exec: &v1::ExecutorInfo, data: &[u8]) -> v1::RunTask {
    v1::RunTask {
        framework_id: FW.into(),
        framework: Some(v1::FrameworkInfo {
            name: "test".into(),
            user: "me".into(),
            ..Default::default()
        }),
        task: Some(v1::TaskInfo {
            task_id: task_id.into(),
            name: task_id.into(),
            executor: Some(Box::new(exec.clone())),
            data: data.to_vec(),
            ..Default::default()
        }),
        launched_at: 1.0,
    }
}

impl Harness {
    /// Stops this agent, leaving its processes and files, and starts
    /// another on the same dirs.
    async fn restart(self) -> Result<Harness, Box<dyn std::error::Error>> {
        self.restart_with(async {}).await
    }

    /// [`Harness::restart`], doing `meanwhile` while no agent runs.
    async fn restart_with(
        mut self,
        meanwhile: impl std::future::Future<Output = ()>,
    ) -> Result<Harness, Box<dyn std::error::Error>> {
        let dir = self._dir.take().ok_or("restarted twice")?;
        let containers = self.containers.clone();
        drop(self);
        // The old table and status manager stop once their handles are gone.
        tokio::time::sleep(Duration::from_millis(200)).await;
        meanwhile.await;
        harness_in(dir, Duration::from_secs(30), containers).await
    }

    /// The first message to the master that `pick` takes; the others are
    /// kept for later looks (updates and executor messages race).
    async fn next<T>(&mut self, what: &str, mut pick: impl FnMut(&Message) -> Option<T>) -> Result<T, String> {
        if let Some(i) = self.seen.iter().position(|m| pick(m).is_some()) {
            return pick(&self.seen.remove(i)).ok_or_else(|| "picked".to_owned());
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let msg = tokio::time::timeout_at(deadline, self.outbound.recv())
                .await
                .map_err(|_| format!("no {what} within 20 s"))?
                .ok_or("outbound closed")?;
            let Some(msg) = msg.message else { continue };
            match pick(&msg) {
                Some(t) => return Ok(t),
                None => self.seen.push(msg),
            }
        }
    }

    /// Acknowledges an update as the master passes on the framework's.
    async fn ack(&self, status: &v1::TaskStatus) -> Result<(), crate::AgentError> {
        let ack = v1::AcknowledgeUpdate {
            framework_id: FW.into(),
            task_id: status.task_id.clone(),
            uuid: status.uuid.clone(),
        };
        self.status.acknowledge(ack).await
    }

    /// The next status update of `task` in `state`.
    async fn update(&mut self, task: &str, state: v1::TaskState) -> Result<v1::TaskStatus, String> {
        self.next(&format!("{task} {state:?}"), |m| match m {
            Message::StatusUpdate(u) => u
                .status
                .clone()
                .filter(|s| s.task_id == task && s.state == state as i32),
            _ => None,
        })
        .await
    }

    fn sandbox(&self, eid: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
        Ok(crate::paths::executor_sandbox_dir(
            &self.work_dir,
            &mezzo_proto::ids::FrameworkId::parse(FW)?,
            &mezzo_proto::ids::ExecutorId::parse(eid)?,
        ))
    }

    fn token(&self, eid: &str) -> Result<String, Box<dyn std::error::Error>> {
        let dir = crate::paths::executor_meta_dir(
            &self.runtime_dir,
            &mezzo_proto::ids::FrameworkId::parse(FW)?,
            &mezzo_proto::ids::ExecutorId::parse(eid)?,
        );
        let path = dir.join(crate::paths::EXECUTOR_TOKEN);
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path)?.permissions());
        assert_eq!(mode & 0o777, 0o600, "the token is root's only");
        Ok(std::fs::read_to_string(path)?)
    }

    /// Waits until the executor's log has a line starting with `line`.
    async fn logged(&self, eid: &str, line: &str) -> Result<String, Box<dyn std::error::Error>> {
        let log = self.sandbox(eid)?.join("events.log");
        for _ in 0..200 {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(l) = text.lines().find(|l| l.starts_with(line)) {
                return Ok(l.to_owned());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "the executor never logged {line:?}: {:?}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
        .into())
    }
}

#[tokio::test]
async fn a_python_executor_runs_tasks_over_the_executor_api() -> TestResult {
    let mut h = harness(Duration::from_secs(30)).await?;
    let exec = python_executor(&h.work_dir, "ex-1")?;
    h.table.run_task(run("t-1", &exec, b"payload")).await?;

    // Its update carries its own uuid, source and id.
    let running = h.update("t-1", v1::TaskState::TaskRunning).await?;
    assert_eq!(running.source, v1::StatusSource::SourceExecutor as i32);
    assert_eq!(running.executor_id, "ex-1");
    assert_eq!(
        (running.agent_id.as_str(), running.framework_id.as_str()),
        ("agent-1", FW)
    );
    assert_eq!(running.uuid.len(), 16);
    let sent = h
        .next("an executor message", |m| match m {
            Message::ExecutorMessage(x) => Some(x.clone()),
            _ => None,
        })
        .await?;
    assert_eq!((sent.framework_id.as_str(), sent.executor_id.as_str()), (FW, "ex-1"));
    assert_eq!(sent.data, b"launched t-1 payload");
    let env = h.logged("ex-1", "env ").await?;
    assert!(
        env.starts_with("env 1 slave(1)@127.0.0.1:") && env.ends_with("True"),
        "{env}"
    );
    assert_eq!(h.logged("ex-1", "SUBSCRIBED").await?, "SUBSCRIBED agent-1");

    // The agent acknowledges the update to the executor once journaled,
    // before the framework does.
    let acked = h.logged("ex-1", "ACKNOWLEDGED").await?;
    assert_eq!(acked, format!("ACKNOWLEDGED t-1 {}", B64.encode(&running.uuid)));
    h.ack(&running).await?;

    // A framework message reaches it; it finishes the task.
    h.table
        .framework_message(v1::FrameworkMessage {
            framework_id: FW.into(),
            executor_id: "ex-1".into(),
            data: b"finish t-1".to_vec(),
        })
        .await?;
    let finished = h.update("t-1", v1::TaskState::TaskFinished).await?;
    assert_eq!(finished.uuid.len(), 16);
    assert_ne!(finished.uuid, running.uuid);

    // A second task goes to the running executor, whose sandbox it shares;
    // a kill is passed on.
    h.table.run_task(run("t-2", &exec, b"")).await?;
    let running = h.update("t-2", v1::TaskState::TaskRunning).await?;
    h.ack(&running).await?;
    h.table
        .kill(FW.into(), "t-2".into(), crate::task::supervisor::Kill::default())
        .await?;
    assert_eq!(h.logged("ex-1", "KILL").await?, "KILL t-2");
    h.update("t-2", v1::TaskState::TaskKilled).await?;
    let views = h.table.executors().await?;
    assert_eq!(views.len(), 1);
    assert_eq!(
        (views[0].info.executor_id.as_str(), views[0].state),
        ("ex-1", "subscribed")
    );

    // Another executor id with another command for a task: refused.
    let mut other = exec.clone();
    other.command = Some(v1::CommandInfo {
        value: "true".into(),
        shell: true,
        ..Default::default()
    });
    h.table.run_task(run("t-bad", &other, b"")).await?;
    let refused = h.update("t-bad", v1::TaskState::TaskFailed).await?;
    assert_eq!(refused.reason, v1::StatusReason::ReasonTaskInvalid as i32);

    // Shut down with a task running: SHUTDOWN, it exits, its task fails.
    h.table.run_task(run("t-3", &exec, b"")).await?;
    let running = h.update("t-3", v1::TaskState::TaskRunning).await?;
    h.ack(&running).await?;
    h.table
        .shutdown_executor(v1::ShutdownExecutor {
            framework_id: FW.into(),
            executor_id: "ex-1".into(),
        })
        .await?;
    let failed = h.update("t-3", v1::TaskState::TaskFailed).await?;
    assert_eq!(failed.reason, v1::StatusReason::ReasonExecutorTerminated as i32);
    assert_eq!(failed.source, v1::StatusSource::SourceAgent as i32);
    let exited = h
        .next("ExecutorExited", |m| match m {
            Message::ExecutorExited(x) => Some(x.clone()),
            _ => None,
        })
        .await?;
    assert_eq!((exited.executor_id.as_str(), exited.status), ("ex-1", Some(0)));
    h.logged("ex-1", "SHUTDOWN").await?;
    assert!(h.table.executors().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn an_executor_that_never_subscribes_is_killed_and_its_tasks_fail() -> TestResult {
    let mut h = harness(Duration::from_millis(500)).await?;
    h.table.run_task(run("t-1", &sleeping_executor("ex-1"), b"")).await?;
    let failed = h.update("t-1", v1::TaskState::TaskFailed).await?;
    assert_eq!(
        failed.reason,
        v1::StatusReason::ReasonExecutorRegistrationTimeout as i32
    );
    let exited = h
        .next("ExecutorExited", |m| match m {
            Message::ExecutorExited(x) => Some(x.clone()),
            _ => None,
        })
        .await?;
    assert_eq!(exited.executor_id, "ex-1");
    Ok(())
}

#[tokio::test]
async fn an_executor_asking_for_an_isolated_network_is_refused() -> TestResult {
    let mut h = harness(Duration::from_secs(30)).await?;
    let mut exec = sleeping_executor("ex-1");
    exec.labels.push(v1::Attribute {
        name: crate::containerizer::NETWORK_LABEL.into(),
        value: "isolated".into(),
    });
    h.table.run_task(run("t-1", &exec, b"")).await?;
    let failed = h.update("t-1", v1::TaskState::TaskFailed).await?;
    assert!(failed.message.contains("127.0.0.1"), "{}", failed.message);
    assert!(h.table.executors().await?.is_empty());
    // The master booked it with the task: it hears that it never ran.
    let exited = h
        .next("ExecutorExited", |m| match m {
            Message::ExecutorExited(x) => Some(x.clone()),
            _ => None,
        })
        .await?;
    assert_eq!((exited.executor_id.as_str(), exited.status), ("ex-1", None));
    Ok(())
}

fn call_json(eid: &str, kind: &str, extra: serde_json::Value) -> String {
    let mut v = serde_json::json!({
        "framework_id": {"value": FW},
        "executor_id": {"value": eid},
        "type": kind,
    });
    if let (Some(obj), serde_json::Value::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    v.to_string()
}

#[tokio::test]
async fn the_executor_api_refuses_bad_calls_as_mesos_does() -> TestResult {
    let mut h = harness(Duration::from_secs(30)).await?;
    h.table.run_task(run("t-1", &sleeping_executor("ex-1"), b"")).await?;
    // The token is written before the launch.
    let mut token = Err::<String, _>("no token".into());
    for _ in 0..100 {
        token = h.token("ex-1");
        if token.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token = token?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let url = h.url.clone();
    let post = |body: String, auth: Option<&str>, ctype: &str| {
        let mut r = client.post(&url).header("Content-Type", ctype.to_owned()).body(body);
        if let Some(a) = auth {
            r = r.header("Authorization", format!("Bearer {a}"));
        }
        r.send()
    };
    let subscribe = call_json("ex-1", "SUBSCRIBE", serde_json::json!({}));
    let code = |r: reqwest::Response| r.status().as_u16();

    let r = post(subscribe.clone(), None, "application/json").await?;
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(
        code(post(subscribe.clone(), Some("0123"), "application/json").await?),
        403
    );
    assert_eq!(code(post(subscribe.clone(), Some(&token), "text/plain").await?), 415);
    assert_eq!(
        code(post("{not json".into(), Some(&token), "application/json").await?),
        400
    );
    // An executor that is not here: the wrong token's answer.
    let unknown = call_json("ex-2", "SUBSCRIBE", serde_json::json!({}));
    assert_eq!(code(post(unknown, Some(&token), "application/json").await?), 403);
    assert_eq!(code(client.get(&url).send().await?), 405);
    let good_uuid = B64.encode([9u8; 16]);
    let update = |uuid: &str| {
        call_json(
            "ex-1",
            "UPDATE",
            serde_json::json!({"update": {"status": {"task_id": {"value": "t-1"}, "state": "TASK_RUNNING",
                "source": "SOURCE_EXECUTOR", "uuid": uuid}}}),
        )
    };
    assert_eq!(
        code(post(update(&good_uuid), Some(&token), "application/json").await?),
        403,
        "an update before SUBSCRIBE"
    );

    // Subscribed (the stream stays open), the same calls are taken.
    let stream = post(subscribe.clone(), Some(&token), "application/json").await?;
    assert_eq!(stream.status().as_u16(), 200);
    let mut stream = stream;
    let first = stream.chunk().await?.ok_or("no SUBSCRIBED")?;
    let text = String::from_utf8_lossy(&first);
    assert!(text.contains("\"SUBSCRIBED\""), "{text}");
    let bad_uuid = B64.encode([1u8; 15]);
    let r = post(update(&bad_uuid), Some(&token), "application/json").await?;
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await?.contains("16 bytes"));
    assert_eq!(
        code(post(update(&good_uuid), Some(&token), "application/json").await?),
        202
    );
    let running = h.update("t-1", v1::TaskState::TaskRunning).await?;
    assert_eq!(running.uuid, vec![9u8; 16]);
    // The same update again is taken once.
    assert_eq!(
        code(post(update(&good_uuid), Some(&token), "application/json").await?),
        202
    );
    let not_its = call_json(
        "ex-1",
        "UPDATE",
        serde_json::json!({"update": {"status": {"task_id": {"value": "t-9"}, "state": "TASK_RUNNING",
            "source": "SOURCE_EXECUTOR", "uuid": B64.encode([3u8; 16])}}}),
    );
    assert_eq!(code(post(not_its, Some(&token), "application/json").await?), 400);
    let heartbeat = call_json("ex-1", "HEARTBEAT", serde_json::json!({}));
    assert_eq!(code(post(heartbeat, Some(&token), "application/json").await?), 202);
    assert_eq!(h.status.pending().await?, 1, "one RUNNING, not two");

    // A newer subscription ends the older stream; of the updates it says
    // are unacknowledged, the agent takes those it has not seen.
    let again = B64.encode([10u8; 16]);
    let resubscribe = call_json(
        "ex-1",
        "SUBSCRIBE",
        serde_json::json!({"subscribe": {"unacknowledged_updates": [
            {"status": {"task_id": {"value": "t-1"}, "state": "TASK_RUNNING", "source": "SOURCE_EXECUTOR",
                "uuid": good_uuid}},
            {"status": {"task_id": {"value": "t-1"}, "state": "TASK_FINISHED", "source": "SOURCE_EXECUTOR",
                "uuid": again}}]}}),
    );
    let newer = post(resubscribe, Some(&token), "application/json").await?;
    assert_eq!(newer.status().as_u16(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the older stream ended");
    assert_eq!(h.status.pending().await?, 2, "RUNNING once, then FINISHED");
    let states = h.table.snapshot().await?;
    assert_eq!(states[0].state, mezzo_proto::state::TaskState::Finished);
    Ok(())
}

#[tokio::test]
async fn a_restarted_agent_fails_the_tasks_of_an_executor_that_is_gone_and_keeps_its_port() -> TestResult {
    let h = harness(Duration::from_secs(30)).await?;
    h.table.run_task(run("t-1", &sleeping_executor("ex-1"), b"")).await?;
    for _ in 0..100 {
        if h.table.executors().await?.first().is_some_and(|e| e.state == "running") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = h.url.clone();
    h.token("ex-1")?;
    let run_dir = crate::paths::executor_meta_dir(
        &h.runtime_dir,
        &mezzo_proto::ids::FrameworkId::parse(FW)?,
        &mezzo_proto::ids::ExecutorId::parse("ex-1")?,
    );
    assert!(
        run_dir.join(crate::paths::TASK_CHECKPOINT).exists(),
        "the executor is checkpointed"
    );

    // Without isolation its process cannot be adopted: it is gone.
    let mut h = h.restart().await?;
    assert_eq!(h.url, url, "the executor API listens where executors reconnect");
    let failed = h.update("t-1", v1::TaskState::TaskFailed).await?;
    assert_eq!(failed.reason, v1::StatusReason::ReasonExecutorTerminated as i32);
    assert!(h.table.executors().await?.is_empty());
    assert!(!run_dir.exists(), "its checkpoint is removed");
    let views = h.table.snapshot().await?;
    assert_eq!(views.len(), 1);
    assert!(views[0].info.executor.is_some(), "the task still names its executor");
    Ok(())
}

#[tokio::test]
async fn an_executor_found_again_after_a_restart_resubscribes_and_goes_on() -> TestResult {
    let containers = Recording {
        adopt: true,
        ..Default::default()
    };
    let mut h = harness_in(tempfile::tempdir()?, Duration::from_secs(30), containers).await?;
    let exec = python_executor(&h.work_dir, "ex-1")?;
    h.table.run_task(run("t-1", &exec, b"")).await?;
    let running = h.update("t-1", v1::TaskState::TaskRunning).await?;
    h.next("its message", |m| {
        matches!(m, Message::ExecutorMessage(_)).then_some(())
    })
    .await?;

    // The agent dies before the framework acknowledges; the executor lives.
    let mut h = h.restart().await?;
    h.logged("ex-1", "disconnected").await?;
    let views = h.table.executors().await?;
    assert_eq!(views.len(), 1, "the executor is found again");
    // The pending update is resent as it was, not queued twice when the
    // executor lists it again on resubscribing.
    let resent = h.update("t-1", v1::TaskState::TaskRunning).await?;
    assert_eq!(resent.uuid, running.uuid);
    for _ in 0..100 {
        if h.table
            .executors()
            .await?
            .first()
            .is_some_and(|e| e.state == "subscribed")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.table.executors().await?[0].state, "subscribed");
    assert_eq!(h.status.pending().await?, 1);
    h.ack(&resent).await?;
    let acked = h.logged("ex-1", "ACKNOWLEDGED").await?;
    assert_eq!(acked, format!("ACKNOWLEDGED t-1 {}", B64.encode(&running.uuid)));
    h.table
        .framework_message(v1::FrameworkMessage {
            framework_id: FW.into(),
            executor_id: "ex-1".into(),
            data: b"finish t-1".to_vec(),
        })
        .await?;
    h.update("t-1", v1::TaskState::TaskFinished).await?;
    Ok(())
}

/// Waits for the executor's token (written before its launch).
async fn wait_token(h: &Harness, eid: &str) -> Result<String, Box<dyn std::error::Error>> {
    for _ in 0..100 {
        if let Ok(t) = h.token(eid) {
            return Ok(t);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.token(eid)
}

/// Waits until the executor's process runs.
async fn wait_running(h: &Harness) -> TestResult {
    for _ in 0..100 {
        if h.table.executors().await?.first().is_some_and(|e| e.state == "running") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("the executor never ran".into())
}

/// A call as the executor `eid` makes it with `token`.
async fn post(h: &Harness, token: &str, body: String) -> Result<reqwest::Response, reqwest::Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
        .post(&h.url)
        .header("Content-Type", "application/json")
        .header("Authorization", format!("Bearer {token}"))
        .body(body)
        .send()
        .await
}

/// A subscription's events as text, read as they come.
struct Events {
    stream: reqwest::Response,
    text: String,
}

impl Events {
    /// Reads until `want` occurs `count` times; false if the stream ends
    /// or `within` passes first.
    async fn until(&mut self, want: &str, count: usize, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.text.matches(want).count() < count {
            match tokio::time::timeout_at(deadline, self.stream.chunk()).await {
                Ok(Ok(Some(c))) => self.text.push_str(&String::from_utf8_lossy(&c)),
                _ => return false,
            }
        }
        true
    }
}

async fn subscribe_as(
    h: &Harness,
    token: &str,
    subscribe: serde_json::Value,
) -> Result<Events, Box<dyn std::error::Error>> {
    let body = call_json("ex-1", "SUBSCRIBE", serde_json::json!({ "subscribe": subscribe }));
    let stream = post(h, token, body).await?;
    assert_eq!(stream.status().as_u16(), 200);
    let mut events = Events {
        stream,
        text: String::new(),
    };
    assert!(
        events.until("\"SUBSCRIBED\"", 1, Duration::from_secs(5)).await,
        "no SUBSCRIBED"
    );
    Ok(events)
}

fn unacknowledged_task(task_id: &str) -> serde_json::Value {
    serde_json::json!({"name": task_id, "task_id": {"value": task_id}, "agent_id": {"value": "agent-1"}})
}

#[tokio::test]
async fn every_subscription_is_sent_the_tasks_its_executor_never_took() -> TestResult {
    let h = harness(Duration::from_secs(30)).await?;
    h.table.run_task(run("t-1", &sleeping_executor("ex-1"), b"")).await?;
    let token = wait_token(&h, "ex-1").await?;
    let mut first = subscribe_as(&h, &token, serde_json::json!({})).await?;
    assert!(
        first.until("\"LAUNCH\"", 1, Duration::from_secs(5)).await,
        "{}",
        first.text
    );
    // It holds the task: not sent again.
    let held = serde_json::json!({"unacknowledged_tasks": [unacknowledged_task("t-1")]});
    let mut second = subscribe_as(&h, &token, held).await?;
    assert!(
        !second.until("\"LAUNCH\"", 1, Duration::from_millis(500)).await,
        "{}",
        second.text
    );
    // It lost the LAUNCH (no update, not listed): sent again.
    let mut third = subscribe_as(&h, &token, serde_json::json!({})).await?;
    assert!(
        third.until("\"LAUNCH\"", 1, Duration::from_secs(5)).await,
        "{}",
        third.text
    );
    Ok(())
}

#[tokio::test]
async fn a_task_its_executor_never_took_is_staging_after_a_restart_and_launched_again() -> TestResult {
    let containers = Recording {
        adopt: true,
        ..Default::default()
    };
    let h = harness_in(tempfile::tempdir()?, Duration::from_secs(30), containers).await?;
    h.table.run_task(run("t-1", &sleeping_executor("ex-1"), b"")).await?;
    wait_running(&h).await?;
    let h = h.restart().await?;
    let views = h.table.snapshot().await?;
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].state, mezzo_proto::state::TaskState::Staging);
    let token = wait_token(&h, "ex-1").await?;
    let mut events = subscribe_as(&h, &token, serde_json::json!({})).await?;
    assert!(
        events.until("\"LAUNCH\"", 1, Duration::from_secs(5)).await,
        "{}",
        events.text
    );
    Ok(())
}

fn running_update(uuid: &str) -> serde_json::Value {
    serde_json::json!({"status": {"task_id": {"value": "t-1"}, "state": "TASK_RUNNING",
        "source": "SOURCE_EXECUTOR", "uuid": uuid}})
}

#[tokio::test]
async fn an_update_is_acknowledged_to_its_executor_once_journaled_and_again_after_a_restart() -> TestResult {
    let containers = Recording {
        adopt: true,
        ..Default::default()
    };
    let mut h = harness_in(tempfile::tempdir()?, Duration::from_secs(30), containers).await?;
    h.table.run_task(run("t-1", &sleeping_executor("ex-1"), b"")).await?;
    let token = wait_token(&h, "ex-1").await?;
    let mut events = subscribe_as(&h, &token, serde_json::json!({})).await?;
    let uuid = B64.encode([7u8; 16]);
    let update = call_json("ex-1", "UPDATE", serde_json::json!({ "update": running_update(&uuid) }));
    assert_eq!(post(&h, &token, update).await?.status().as_u16(), 202);
    // Before the framework acknowledges.
    assert!(
        events.until("\"ACKNOWLEDGED\"", 1, Duration::from_secs(5)).await,
        "{}",
        events.text
    );
    assert!(events.text.contains(&uuid), "{}", events.text);
    let running = h.update("t-1", v1::TaskState::TaskRunning).await?;
    h.ack(&running).await?;
    assert_eq!(h.status.pending().await?, 0);
    drop(events);

    // After a restart the agent knows no acknowledged uuid: the executor
    // that lists it again is acknowledged again, and nothing is queued.
    let h = h.restart().await?;
    let views = h.table.snapshot().await?;
    assert_eq!(
        views[0].state,
        mezzo_proto::state::TaskState::Running,
        "the executor took it"
    );
    let listed = serde_json::json!({ "unacknowledged_updates": [running_update(&uuid)] });
    let mut events = subscribe_as(&h, &token, listed).await?;
    assert!(
        events.until("\"ACKNOWLEDGED\"", 1, Duration::from_secs(5)).await,
        "{}",
        events.text
    );
    assert!(!events.text.contains("\"LAUNCH\""), "{}", events.text);
    assert_eq!(h.status.pending().await?, 0, "not journaled twice");
    Ok(())
}

#[tokio::test]
async fn an_update_of_a_task_forgotten_after_its_end_is_acknowledged_again_not_queued() -> TestResult {
    let mut h = harness(Duration::from_secs(30)).await?;
    h.table.run_task(run("t-1", &sleeping_executor("ex-1"), b"")).await?;
    let token = wait_token(&h, "ex-1").await?;
    let mut events = subscribe_as(&h, &token, serde_json::json!({})).await?;
    let finished = |uuid: &str| {
        serde_json::json!({"status": {"task_id": {"value": "t-1"}, "state": "TASK_FINISHED",
            "source": "SOURCE_EXECUTOR", "uuid": uuid}})
    };
    let (r, f) = (B64.encode([1u8; 16]), B64.encode([2u8; 16]));
    for update in [running_update(&r), finished(&f)] {
        let call = call_json("ex-1", "UPDATE", serde_json::json!({ "update": update }));
        assert_eq!(post(&h, &token, call).await?.status().as_u16(), 202);
    }
    for state in [v1::TaskState::TaskRunning, v1::TaskState::TaskFinished] {
        let status = h.update("t-1", state).await?;
        h.ack(&status).await?;
    }
    assert!(
        events.until("\"ACKNOWLEDGED\"", 2, Duration::from_secs(5)).await,
        "{}",
        events.text
    );
    // Forgotten once its end is acknowledged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !h.table.snapshot().await?.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "t-1 never forgotten");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(events);
    // An executor that missed the acknowledgement lists it again: it is
    // acknowledged again, and nothing is queued for the master.
    let listed = serde_json::json!({ "unacknowledged_updates": [finished(&f)] });
    let mut events = subscribe_as(&h, &token, listed).await?;
    assert!(
        events.until("\"ACKNOWLEDGED\"", 1, Duration::from_secs(5)).await,
        "{}",
        events.text
    );
    assert!(events.text.contains(&f), "{}", events.text);
    assert_eq!(h.status.pending().await?, 0);
    Ok(())
}

#[tokio::test]
async fn an_executor_exit_while_disconnected_is_sent_once_a_master_registers_the_agent() -> TestResult {
    let mut h = harness(Duration::from_millis(500)).await?;
    h.master.send_replace(None);
    h.table.run_task(run("t-1", &sleeping_executor("ex-1"), b"")).await?;
    h.update("t-1", v1::TaskState::TaskFailed).await?;
    for _ in 0..100 {
        if h.table.executors().await?.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(h.table.executors().await?.is_empty());
    let run_dir = crate::paths::executor_meta_dir(
        &h.runtime_dir,
        &mezzo_proto::ids::FrameworkId::parse(FW)?,
        &mezzo_proto::ids::ExecutorId::parse("ex-1")?,
    );
    assert!(!run_dir.exists(), "its run dir is gone once it is");
    h.master.send_replace(Some(h.out_tx.clone()));
    h.table.master_registered().await?;
    let exited = h
        .next("ExecutorExited", |m| match m {
            Message::ExecutorExited(x) => Some(x.clone()),
            _ => None,
        })
        .await?;
    assert_eq!(exited.executor_id, "ex-1");
    Ok(())
}

#[tokio::test]
async fn an_executor_that_cannot_be_started_is_reported_exited() -> TestResult {
    let mut h = harness(Duration::from_secs(30)).await?;
    // Its run dir cannot be made: no token.
    let root = crate::paths::executors_meta_root(&h.runtime_dir);
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join(FW), b"not a dir")?;
    h.table.run_task(run("t-1", &sleeping_executor("ex-1"), b"")).await?;
    let failed = h.update("t-1", v1::TaskState::TaskFailed).await?;
    assert_eq!(failed.reason, v1::StatusReason::ReasonContainerLaunchFailed as i32);
    let exited = h
        .next("ExecutorExited", |m| match m {
            Message::ExecutorExited(x) => Some(x.clone()),
            _ => None,
        })
        .await?;
    assert_eq!((exited.executor_id.as_str(), exited.status), ("ex-1", None));
    assert!(h.table.executors().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn an_executor_started_for_a_task_that_cannot_be_checkpointed_is_shut_down() -> TestResult {
    let mut h = harness(Duration::from_secs(30)).await?;
    let root = crate::paths::tasks_meta_root(&h.runtime_dir);
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join(FW), b"not a dir")?;
    h.table.run_task(run("t-1", &sleeping_executor("ex-1"), b"")).await?;
    h.update("t-1", v1::TaskState::TaskDropped).await?;
    let exited = h
        .next("ExecutorExited", |m| match m {
            Message::ExecutorExited(x) => Some(x.clone()),
            _ => None,
        })
        .await?;
    assert_eq!(exited.executor_id, "ex-1");
    assert!(h.table.executors().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_live_executor_with_a_partial_checkpoint_is_killed_after_a_restart() -> TestResult {
    let containers = Recording {
        adopt: true,
        ..Default::default()
    };
    let h = harness_in(tempfile::tempdir()?, Duration::from_secs(30), containers).await?;
    h.table.run_task(run("t-1", &sleeping_executor("ex-1"), b"")).await?;
    wait_running(&h).await?;
    let run_dir = crate::paths::executor_meta_dir(
        &h.runtime_dir,
        &mezzo_proto::ids::FrameworkId::parse(FW)?,
        &mezzo_proto::ids::ExecutorId::parse("ex-1")?,
    );
    std::fs::remove_file(run_dir.join(crate::paths::EXECUTOR_TOKEN))?;
    let pgids = h.containers.pgids.lock().map(|p| p.clone()).unwrap_or_default();
    assert_eq!(pgids.len(), 1);
    let mut h = h.restart().await?;
    let mut alive = true;
    for _ in 0..250 {
        alive = killpg(Pid::from_raw(pgids[0] as i32), None).is_ok();
        if !alive {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive, "the untracked executor is killed");
    h.update("t-1", v1::TaskState::TaskFailed).await?;
    Ok(())
}

#[tokio::test]
async fn executors_get_new_tokens_when_their_port_is_taken_across_a_restart() -> TestResult {
    let containers = Recording {
        adopt: true,
        ..Default::default()
    };
    let mut h = harness_in(tempfile::tempdir()?, Duration::from_secs(30), containers).await?;
    h.table.run_task(run("t-1", &sleeping_executor("ex-1"), b"")).await?;
    wait_running(&h).await?;
    let old = wait_token(&h, "ex-1").await?;
    let addr: std::net::SocketAddr = h
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/api/v1/executor")
        .parse()?;
    let dir = h._dir.take().ok_or("no dir")?;
    let containers = h.containers.clone();
    drop(h);
    let mut squatter = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(l) = std::net::TcpListener::bind(addr) {
            squatter = Some(l);
            break;
        }
    }
    let squatter = squatter.ok_or("the old port never freed")?;
    let h = harness_in(dir, Duration::from_secs(30), containers).await?;
    assert_ne!(h.url, format!("http://{addr}/api/v1/executor"));
    let new = h.token("ex-1")?;
    assert_ne!(new, old);
    let body = call_json("ex-1", "SUBSCRIBE", serde_json::json!({}));
    assert_eq!(
        post(&h, &old, body).await?.status().as_u16(),
        403,
        "the old token is useless"
    );
    drop(squatter);
    Ok(())
}

#[tokio::test]
async fn the_executor_api_bounds_what_it_holds() -> TestResult {
    let mut h = harness(Duration::from_secs(30)).await?;
    h.table.run_task(run("t-1", &sleeping_executor("ex-1"), b"")).await?;
    let token = wait_token(&h, "ex-1").await?;
    let heartbeat = call_json("ex-1", "HEARTBEAT", serde_json::json!({}));
    assert_eq!(post(&h, "0123", heartbeat.clone()).await?.status().as_u16(), 403);
    assert_eq!(post(&h, &token, heartbeat).await?.status().as_u16(), 202);
    let mut events = subscribe_as(&h, &token, serde_json::json!({})).await?;
    events.until("\"LAUNCH\"", 1, Duration::from_secs(5)).await;

    // Data beyond 1 MiB is refused, in a message and in an update.
    let big = B64.encode(vec![0u8; crate::task::table::MAX_EXECUTOR_DATA + 1]);
    let message = call_json("ex-1", "MESSAGE", serde_json::json!({"message": {"data": big}}));
    assert_eq!(post(&h, &token, message).await?.status().as_u16(), 400);
    let mut update = running_update(&B64.encode([5u8; 16]));
    update["status"]["data"] = serde_json::Value::String(big);
    let update = call_json("ex-1", "UPDATE", serde_json::json!({ "update": update }));
    assert_eq!(post(&h, &token, update).await?.status().as_u16(), 400);

    // A master stream more than half full takes no executor message.
    let filler = || v1::AgentMessage {
        message: Some(Message::Heartbeat(v1::AgentHeartbeat {})),
    };
    for _ in 0..200 {
        h.out_tx.try_send(filler())?;
    }
    let message = call_json(
        "ex-1",
        "MESSAGE",
        serde_json::json!({"message": {"data": B64.encode(b"hi")}}),
    );
    assert_eq!(post(&h, &token, message).await?.status().as_u16(), 202);
    while let Ok(m) = h.outbound.try_recv() {
        assert!(!matches!(m.message, Some(Message::ExecutorMessage(_))), "dropped");
    }

    // An executor that does not read its stream has it ended.
    let chunk = vec![b'x'; 32 << 10];
    for _ in 0..1500 {
        h.table
            .framework_message(v1::FrameworkMessage {
                framework_id: FW.into(),
                executor_id: "ex-1".into(),
                data: chunk.clone(),
            })
            .await?;
    }
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(_)) = events.stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream ended");
    Ok(())
}

#[path = "executor_group_tests.rs"]
mod groups;
