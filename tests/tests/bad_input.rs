//! DESIGN.md "Bad input": every malformed or impossible request over the
//! real gRPC API gets a clear error, and nothing is launched or lost.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use mezzo_proto::v1;
use mezzo_proto::v1::agent_api_client::AgentApiClient;
use mezzo_proto::v1::scheduler_client::SchedulerClient;
use mezzo_sdk::{Event, SdkError, TaskState, task_state};
use mezzo_tests::{Cluster, ClusterSpec, fw};
use tonic::Code;

fn with_cpus(id: &str, cpus: f64) -> v1::TaskInfo {
    let mut t = fw::shell_task(id, "true");
    t.resources = vec![v1::Resource {
        name: "cpus".into(),
        scalar: cpus,
        ..Default::default()
    }];
    t
}

fn rejected(r: Result<(), SdkError>, code: Code, text: &str) -> Result<()> {
    match r {
        Err(SdkError::Rejected { code: c, message }) if c == code && message.contains(text) => Ok(()),
        other => bail!("expected {code:?} containing {text:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_nothing_is_launched() -> Result<()> {
    let c = Cluster::start(ClusterSpec {
        agents: 1,
        ..Default::default()
    })
    .await?;
    let result = async {
        let mut raw = SchedulerClient::new(c.channel(c.master_addr()).await?);

        // A call before subscribing.
        let req = v1::AcceptRequest {
            framework_id: "nobody".into(),
            offer_ids: vec!["x".into()],
            ..Default::default()
        };
        let err = raw.accept(req).await.expect_err("not subscribed");
        ensure!(
            err.code() == Code::FailedPrecondition && err.message().contains("not subscribed"),
            "{err:?}"
        );
        // A subscription without a name, and one with a NaN failover timeout.
        let info = v1::FrameworkInfo {
            name: String::new(),
            ..Default::default()
        };
        let err = raw
            .subscribe(v1::SubscribeRequest {
                framework: Some(info),
                framework_id: String::new(),
                suppressed_roles: Vec::new(),
            })
            .await
            .expect_err("no name");
        ensure!(err.code() == Code::InvalidArgument, "{err:?}");
        let info = v1::FrameworkInfo {
            name: "x".into(),
            failover_timeout_secs: f64::NAN,
            ..Default::default()
        };
        let err = raw
            .subscribe(v1::SubscribeRequest {
                framework: Some(info),
                framework_id: String::new(),
                suppressed_roles: Vec::new(),
            })
            .await
            .expect_err("nan");
        ensure!(
            err.code() == Code::InvalidArgument && err.message().contains("failover"),
            "{err:?}"
        );
        // Subscribing suppressed in a role that is not the framework's.
        let info = v1::FrameworkInfo {
            name: "x".into(),
            roles: vec!["a".into()],
            ..Default::default()
        };
        let err = raw
            .subscribe(v1::SubscribeRequest {
                framework: Some(info),
                framework_id: String::new(),
                suppressed_roles: vec!["b".into()],
            })
            .await
            .expect_err("a role not its own");
        ensure!(
            err.code() == Code::InvalidArgument && err.message().contains("role b is not one of the framework's roles"),
            "{err:?}"
        );
        // Resuming an unknown framework id.
        let info = v1::FrameworkInfo {
            name: "x".into(),
            ..Default::default()
        };
        let err = raw
            .subscribe(v1::SubscribeRequest {
                framework: Some(info),
                framework_id: "ghost".into(),
                suppressed_roles: Vec::new(),
            })
            .await
            .expect_err("ghost");
        ensure!(err.code() == Code::NotFound, "{err:?}");

        let (s, mut ev, fid) = fw::subscribe(&c, "bad-input", None).await?;
        let o = ev.offer().await?;
        let id = || vec![o.offer_id.clone()];

        rejected(
            s.accept(vec!["no-such-offer".into()], vec![fw::shell_task("a", "true")], None)
                .await,
            Code::NotFound,
            "unknown offer",
        )?;
        rejected(
            s.accept(id(), vec![with_cpus("a", 1000.0)], None).await,
            Code::InvalidArgument,
            "asks for",
        )?;
        rejected(
            s.accept(id(), vec![with_cpus("a", -1.0)], None).await,
            Code::InvalidArgument,
            "negative",
        )?;
        rejected(
            s.accept(id(), vec![with_cpus("a", 0.0)], None).await,
            Code::InvalidArgument,
            "greater than zero",
        )?;
        rejected(
            s.accept(id(), vec![with_cpus("a", f64::NAN)], None).await,
            Code::InvalidArgument,
            "not a finite number",
        )?;
        rejected(
            s.accept(id(), vec![fw::shell_task("a", "   ")], None).await,
            Code::InvalidArgument,
            "empty command",
        )?;
        rejected(
            s.accept(id(), vec![fw::shell_task("../a", "true")], None).await,
            Code::InvalidArgument,
            "may hold only",
        )?;
        let twins = vec![fw::shell_task("twin", "true"), fw::shell_task("twin", "true")];
        rejected(s.accept(id(), twins, None).await, Code::AlreadyExists, "already exists")?;
        rejected(s.kill("never-launched", None).await, Code::NotFound, "unknown task")?;
        rejected(
            s.acknowledge(&v1::TaskStatus {
                task_id: "a".into(),
                agent_id: "nope".into(),
                uuid: vec![1; 16],
                ..Default::default()
            })
            .await,
            Code::NotFound,
            "unknown agent",
        )?;
        // Batched acknowledgements are checked whole: one bad entry refuses
        // the call, and naming both forms is refused.
        let ack = |agent: &str, uuid: Vec<u8>| v1::Acknowledgement {
            agent_id: agent.into(),
            task_id: "a".into(),
            uuid,
        };
        let batch = |acks: Vec<v1::Acknowledgement>, single: &str| v1::AcknowledgeRequest {
            framework_id: fid.clone(),
            agent_id: single.into(),
            acks,
            ..Default::default()
        };
        let agent = o.agent_id.clone();
        for (req, code, words) in [
            (
                batch(vec![ack(&agent, vec![1; 16]), ack(&agent, vec![1; 3])], ""),
                Code::InvalidArgument,
                "16 bytes",
            ),
            (
                batch(vec![ack(&agent, vec![1; 16]), ack("nope", vec![1; 16])], ""),
                Code::NotFound,
                "unknown agent",
            ),
            (
                batch(vec![ack(&agent, vec![1; 16])], &agent),
                Code::InvalidArgument,
                "not both",
            ),
            (
                batch((0..10_001).map(|_| ack(&agent, vec![1; 16])).collect(), ""),
                Code::InvalidArgument,
                "at most",
            ),
        ] {
            let err = raw.acknowledge(req).await.expect_err(words);
            ensure!(err.code() == code && err.message().contains(words), "{words}: {err:?}");
        }

        // An oversized message is refused before it is decoded.
        let mut huge = fw::shell_task("huge", "true");
        huge.name = "x".repeat(5 * 1024 * 1024);
        let req = v1::AcceptRequest {
            framework_id: fid.clone(),
            offer_ids: id(),
            operations: vec![v1::Operation {
                operation: Some(v1::operation::Operation::Launch(v1::Launch {
                    tasks: vec![huge],
                    group: false,
                })),
            }],
            filters: None,
        };
        let err = raw.accept(req).await.expect_err("oversized");
        ensure!(
            matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
            "{err:?}"
        );
        ensure!(err.message().contains("too large"), "{err:?}");

        // None of that touched the offer: it still launches, exactly once.
        s.accept(id(), vec![fw::shell_task("good", "true")], None).await?;
        rejected(
            s.accept(id(), vec![fw::shell_task("again", "true")], None).await,
            Code::NotFound,
            "unknown offer",
        )?;
        let fin = ev
            .update("good", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        ensure!(task_state(&fin) == Some(TaskState::Finished), "{fin:?}");
        // A task id is never reused, even after the task ended.
        let o2 = ev
            .next(Duration::from_secs(10), |e| match e {
                Event::Offers(o) => o.first().cloned(),
                _ => None,
            })
            .await?;
        rejected(
            s.accept(vec![o2.offer_id], vec![fw::shell_task("good", "true")], None)
                .await,
            Code::AlreadyExists,
            "already exists",
        )?;

        let st = c.master_state().await?;
        ensure!(st["counters"]["tasks_launched"] == 1, "launched: {}", st["counters"]);
        ensure!(
            st["counters"]["invalid_calls"].as_u64().unwrap_or(0) >= 4,
            "{}",
            st["counters"]
        );
        c.get(c.master_addr(), "/health").await.ok(); // still serving
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// An agent stream that does not start with a registration is refused, and
/// so is a registration with impossible resources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_agent_registrations_are_refused() -> Result<()> {
    let c = Cluster::start(ClusterSpec {
        agents: 0,
        ..Default::default()
    })
    .await?;
    // Only agents attach.
    let mut admin = AgentApiClient::new(c.channel(c.master_addr()).await?);
    let hello = v1::AgentMessage {
        message: Some(v1::agent_message::Message::Heartbeat(v1::AgentHeartbeat {})),
    };
    let err = admin
        .attach(tokio_stream::iter(vec![hello]))
        .await
        .expect_err("admin attach");
    ensure!(
        err.code() == Code::PermissionDenied && err.message().contains("only agent principals"),
        "{err:?}"
    );
    let agent = c.join_as_agent("bad-agent").await?;
    let channel = mezzo_proto::security::grpc::connect(c.master_addr(), &agent)
        .await
        .map_err(anyhow::Error::msg)?;
    let cases: Vec<(v1::agent_message::Message, &str)> = vec![
        (
            v1::agent_message::Message::Heartbeat(v1::AgentHeartbeat {}),
            "must be register",
        ),
        (
            v1::agent_message::Message::Register(v1::Register {
                agent: Some(v1::AgentInfo {
                    hostname: "h".into(),
                    resources: vec![v1::Resource {
                        name: "mem".into(),
                        scalar: -5.0,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                registration: String::new(),
            }),
            "negative",
        ),
        (
            v1::agent_message::Message::Register(v1::Register {
                agent: None,
                registration: String::new(),
            }),
            "no agent info",
        ),
        (
            v1::agent_message::Message::Register(v1::Register {
                agent: Some(v1::AgentInfo {
                    hostname: "h".into(),
                    resources: fw::shell_task("x", "true").resources,
                    ..Default::default()
                }),
                registration: "../etc/passwd".into(),
            }),
            "registration id",
        ),
    ];
    for (first, want) in cases {
        let msg = v1::AgentMessage { message: Some(first) };
        let err = mezzo_tests::attach_refusal(channel.clone(), msg).await?;
        ensure!(
            err.code() == Code::InvalidArgument && err.message().contains(want),
            "{want}: {err:?}"
        );
    }
    let st = c.master_state().await?;
    ensure!(st["agents"].as_array().is_some_and(|a| a.is_empty()), "{st}");
    Ok(())
}

/// DESIGN.md "Trust": an agent reports only on the tasks placed on it. An
/// agent with a credential of its own sends updates for another agent's
/// task and for a task never launched: neither reaches the framework, and
/// the task's state does not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_report_on_tasks_it_does_not_run() -> Result<()> {
    let c = Cluster::start(ClusterSpec {
        agents: 1,
        ..Default::default()
    })
    .await?;
    let result = async {
        let (s, mut ev, fid) = fw::subscribe(&c, "victim", None).await?;
        let o = ev.offer().await?;
        s.accept(vec![o.offer_id], vec![fw::shell_task("victim", "sleep 60")], None)
            .await?;
        ev.update("victim", Duration::from_secs(10), |st| st == TaskState::Running)
            .await?;

        // An impostor joins as an agent of its own and registers.
        let impostor = c.join_as_agent("impostor").await?;
        let channel = mezzo_proto::security::grpc::connect(c.master_addr(), &impostor)
            .await
            .map_err(anyhow::Error::msg)?;
        let (tx, _from_master, own_id) = register_on(channel, "impostor", Duration::from_secs(10)).await?;
        for task in ["victim", "never-launched"] {
            let status = v1::TaskStatus {
                task_id: task.into(),
                state: v1::TaskState::TaskFinished as i32,
                agent_id: own_id.clone(),
                uuid: vec![7; 16],
                framework_id: fid.clone(),
                ..Default::default()
            };
            let update = v1::StatusUpdate {
                framework_id: fid.clone(),
                status: Some(status),
                latest_state: v1::TaskState::TaskFinished as i32,
            };
            let msg = v1::AgentMessage {
                message: Some(v1::agent_message::Message::StatusUpdate(update)),
            };
            // The master may close the impostor's stream on the first one.
            if tx.send(msg).await.is_err() {
                break;
            }
        }
        // Nothing reaches the framework; the task still runs.
        let forged = ev
            .next(Duration::from_secs(2), |e| match e {
                Event::Update(st) if st.agent_id == own_id || task_state(st).is_some_and(|s| s.is_terminal()) => {
                    Some(st.clone())
                }
                _ => None,
            })
            .await;
        ensure!(forged.is_err(), "a forged update reached the framework: {forged:?}");
        let st = c.master_state().await?;
        let victim = st["tasks"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["id"] == "victim"))
            .context("victim in /state")?;
        ensure!(victim["state"] == "TASK_RUNNING", "{victim}");
        ensure!(
            st["tasks"]
                .as_array()
                .is_some_and(|t| t.iter().all(|t| t["id"] != "never-launched")),
            "{st}"
        );
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// `mezzo run` runs one task and exits with its exit status; paced
/// copies take turns across the agents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mezzo_run_reports_the_task_and_its_exit_code() -> Result<()> {
    let c = Cluster::start(ClusterSpec {
        agents: 2,
        ..Default::default()
    })
    .await?;
    let run = |args: &[&str]| {
        let mut cmd = c.command();
        cmd.args(["run", "--master", c.master_addr()]).args(args);
        async move { cmd.output().await }
    };
    // The task's output is on stdout, its outcome on stderr.
    let ok = run(&["--", "echo", "hi"]).await?;
    let out = String::from_utf8_lossy(&ok.stderr);
    ensure!(ok.status.code() == Some(0) && out.contains("TASK_FINISHED"), "{ok:?}");
    let three = run(&["--shell", "--", "exit 3"]).await?;
    ensure!(
        three.status.code() == Some(3) && String::from_utf8_lossy(&three.stderr).contains("TASK_FAILED"),
        "{three:?}"
    );
    let dir = tempfile::tempdir()?;
    let timeline = dir.path().join("timeline.jsonl");
    let timeline_arg = timeline.to_str().context("utf-8 temp path")?;
    let many = run(&[
        "--instances",
        "20",
        "--rate",
        "100",
        "--json",
        "--timeline",
        timeline_arg,
        "--",
        "true",
    ])
    .await?;
    let summary: serde_json::Value = serde_json::from_slice(&many.stdout).with_context(|| format!("{many:?}"))?;
    ensure!(summary["finished"] == 20 && many.status.success(), "{summary}");
    // One line per task; each update stamped by the agent after the Accept
    // and arriving after it was stamped (one host, one clock).
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&timeline)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(lines.len() == 20, "{lines:?}");
    let agents: HashSet<&str> = lines.iter().filter_map(|l| l["agent_id"].as_str()).collect();
    ensure!(agents.len() == 2, "all on one agent: {lines:?}");
    for l in &lines {
        let accepted = l["accepted"].as_f64().context("accepted")?;
        let updates = l["updates"].as_array().context("updates")?;
        let states: Vec<&str> = updates.iter().filter_map(|u| u[0].as_str()).collect();
        ensure!(states == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"], "{l}");
        for u in updates {
            let (stamped, arrived) = (u[1].as_f64().context("stamp")?, u[2].as_f64().context("arrival")?);
            ensure!(accepted <= stamped && stamped <= arrived, "{l}");
        }
    }
    let status = c
        .command()
        .args(["status", "--master", c.master_addr()])
        .output()
        .await?;
    ensure!(
        status.status.success() && String::from_utf8_lossy(&status.stdout).contains("agent0"),
        "{status:?}"
    );
    Ok(())
}

/// DESIGN.md "Observability": every daemon serves /health, /state and
/// /metrics in Prometheus text (as OpenMetrics, its successor).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_serve_health_state_and_metrics() -> Result<()> {
    let c = Cluster::start(ClusterSpec {
        agents: 1,
        ..Default::default()
    })
    .await?;
    for (addr, http) in [
        (c.master_addr(), c.http().clone()),
        (&c.agents[0].addr, c.agent_http(0)?),
    ] {
        ensure!(c.text(addr, "/health").await?.trim() == "ok", "{addr} /health");
        let m = c.text(addr, "/metrics").await?;
        ensure!(m.contains("# TYPE") && m.contains("mezzo_"), "{addr} /metrics: {m}");
        let r = http.get(c.url(addr, "/metrics")).send().await?;
        let kind = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        ensure!(
            kind.starts_with("application/openmetrics-text"),
            "{addr} /metrics: {kind}"
        );
    }
    let m = c.text(c.master_addr(), "/metrics").await?;
    ensure!(m.contains("mezzo_master_agents{status=\"active\"} 1"), "{m}");
    let a = c.agent_state(0).await?;
    ensure!(a["agent_id"] == c.master_state().await?["agents"][0]["id"], "{a}");
    Ok(())
}

/// Agent streams that never send their registration do not hold up the
/// agents that do (each stream is read on its own: a cap on the
/// registrations read at once, tried against a failover's 40,000, stalled
/// the streams multiplexed on one connection behind the unread ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_agent_streams_do_not_hold_up_registrations() -> Result<()> {
    let c = Cluster::start(ClusterSpec {
        agents: 0,
        ..Default::default()
    })
    .await?;
    let result = async {
        let agent = c.join_as_agent("patient").await?;
        let channel = mezzo_proto::security::grpc::connect(c.master_addr(), &agent)
            .await
            .map_err(anyhow::Error::msg)?;
        let mut silent = Vec::new();
        for _ in 0..8 {
            let (tx, rx) = tokio::sync::mpsc::channel::<v1::AgentMessage>(1);
            let answer = AgentApiClient::new(channel.clone())
                .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?;
            silent.push((tx, answer));
        }
        let started = std::time::Instant::now();
        // Each silent stream waits 10 s for its registration.
        register_on(channel, "patient", Duration::from_secs(6)).await?;
        println!("registered {:?} after it was sent", started.elapsed());
        drop(silent);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// Registers an agent named `host` on `channel`; answers the open stream
/// (its sender and what the master sends) and the agent's id.
async fn register_on(
    channel: tonic::transport::Channel,
    host: &str,
    within: Duration,
) -> Result<(
    tokio::sync::mpsc::Sender<v1::AgentMessage>,
    tonic::Streaming<v1::MasterMessage>,
    String,
)> {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let register = v1::agent_message::Message::Register(v1::Register {
        agent: Some(v1::AgentInfo {
            hostname: host.into(),
            resources: fw::shell_task("x", "true").resources,
            http_address: "127.0.0.1:1".into(),
            ..Default::default()
        }),
        registration: String::new(),
    });
    tx.send(v1::AgentMessage {
        message: Some(register),
    })
    .await?;
    let mut from_master = AgentApiClient::new(channel)
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let registered = tokio::time::timeout(within, from_master.message())
        .await
        .with_context(|| format!("no answer to the registration within {within:?}"))??;
    match registered.and_then(|m| m.message) {
        Some(v1::master_message::Message::Registered(r)) => Ok((tx, from_master, r.agent_id)),
        other => bail!("expected Registered, got {other:?}"),
    }
}
