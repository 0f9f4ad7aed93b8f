//! DESIGN.md "Trust": each attack seen against a cluster without
//! security, replayed against one with it (the default), over real TLS
//! between real processes. Each must be refused with a clear error and
//! leave the cluster's state as it was.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use mezzo_master::pki::{Authority, LEAF_VALIDITY};
use mezzo_proto::security::join::{self, Joined};
use mezzo_proto::security::{Credentials, Identity, Principal, Transport, grpc};
use mezzo_proto::v1;
use mezzo_proto::v1::agent_api_client::AgentApiClient;
use mezzo_proto::v1::raft_transport_client::RaftTransportClient;
use mezzo_proto::v1::scheduler_client::SchedulerClient;
use mezzo_sdk::{Event, SdkError, TaskState};
use mezzo_tests::{Cluster, ClusterSpec, files_holding, fw, http_client};
use serde_json::{Value, json};
use tonic::Code;

const MASTER: &str = "master.mezzo";

fn one_agent() -> ClusterSpec {
    ClusterSpec {
        agents: 1,
        ..Default::default()
    }
}

/// POSTs JSON as the administrator; the answer's status and body.
async fn admin_post(c: &Cluster, path: &str, body: Value) -> Result<(u16, Value)> {
    let r = c.http().post(c.url(c.master_addr(), path)).json(&body).send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// A bearer token of `user:NAME`, issued by the administrator.
async fn token(c: &Cluster, name: &str) -> Result<String> {
    let (status, v) = admin_post(c, "/api/v1/credentials", json!({ "principal": name, "token": true })).await?;
    ensure!(status == 200, "issue a token for {name}: {status} {v}");
    Ok(v["token"].as_str().context("token")?.to_owned())
}

/// The transport of a user with a bearer token.
fn with_token(c: &Cluster, t: &str) -> Result<Transport> {
    let ca = std::fs::read_to_string(c.home().join("pki/ca.crt"))?;
    Ok(Transport::Tls(Credentials::new(&ca)?.with_token(t)))
}

/// Allows `principal` `action` on `object` (an ACL rule, added by the
/// administrator).
async fn allow(c: &Cluster, principal: &str, actions: &[&str], object: &str) -> Result<()> {
    c.allow(principal, actions, object).await
}

/// The registry as a master applied it, for before/after comparisons
/// (the applied count aside: refusals do not change it, but a heartbeat
/// of time does nothing to it either).
async fn registry(c: &Cluster) -> Result<Value> {
    let mut r = c.get(c.master_addr(), "/raft/registry").await?;
    r["applied"] = Value::Null;
    Ok(r)
}

/// A join token for an agent, from the administrator.
async fn agent_join_token(c: &Cluster) -> Result<String> {
    let (status, v) = admin_post(c, "/api/v1/tokens", json!({ "kind": "agent", "ttl_secs": 600 })).await?;
    ensure!(status == 200, "join token: {status} {v}");
    Ok(v["token"].as_str().context("token")?.to_owned())
}

/// A second "agent" credential, joined the legitimate way.
async fn joined_agent(c: &Cluster, host: &str) -> Result<Joined> {
    let t = agent_join_token(c).await?;
    Ok(join::join(&c.masters(), &t, host, "127.0.0.1:1").await?)
}

/// Subscribes framework `name` and runs `task` (id `t1`) until RUNNING.
async fn run_t1(c: &Cluster, name: &str, task: v1::TaskInfo) -> Result<(mezzo_sdk::Scheduler, fw::Inbox, String)> {
    let (s, mut ev, fid) = fw::subscribe(c, name, None).await?;
    let o = ev.offer().await?;
    s.accept(vec![o.offer_id], vec![task], None).await?;
    ev.update("t1", Duration::from_secs(10), |st| st == TaskState::Running)
        .await?;
    Ok((s, ev, fid))
}

/// `script` as task `t1`, with a secret-looking PASSWORD in its environment.
fn with_password(script: &str) -> Result<v1::TaskInfo> {
    let mut t = fw::shell_task("t1", script);
    t.command.as_mut().context("cmd")?.environment.push(v1::EnvVar {
        name: "PASSWORD".into(),
        value: "hunter2".into(),
        ..Default::default()
    });
    Ok(t)
}

/// Fails if the framework hears a forged update of `t1` within `wait`.
async fn no_forged_update(ev: &mut fw::Inbox, wait: Duration) -> Result<()> {
    let heard = ev
        .next(wait, |e| match e {
            Event::Update(st) if st.task_id == "t1" && forged(st) => Some(st.clone()),
            _ => None,
        })
        .await;
    ensure!(heard.is_err(), "the forged update reached the framework: {heard:?}");
    Ok(())
}

/// An update the task's own agent never sends while it runs.
fn forged(st: &v1::TaskStatus) -> bool {
    !matches!(
        mezzo_sdk::task_state(st),
        Some(TaskState::Staging | TaskState::Starting | TaskState::Running)
    )
}

fn register(hostname: &str, http_address: &str) -> v1::AgentMessage {
    v1::AgentMessage {
        message: Some(v1::agent_message::Message::Register(v1::Register {
            agent: Some(v1::AgentInfo {
                hostname: hostname.into(),
                http_address: http_address.into(),
                resources: vec![v1::Resource {
                    name: "cpus".into(),
                    scalar: 1000.0,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            registration: String::new(),
        })),
    }
}

/// A plain-text client, one of another CA, an expired and a revoked
/// credential: each is refused on the master's port and on the agent's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_foreign_expired_and_revoked_clients_are_refused() -> Result<()> {
    let c = Cluster::start(one_agent()).await?;
    let result = async {
        let (master, agent) = (c.master_addr().to_owned(), c.agents[0].addr.clone());
        // Plain text: no answer but a failed connection, on both ports.
        for addr in [&master, &agent] {
            let plain = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
            ensure!(
                plain.get(format!("http://{addr}/state")).send().await.is_err(),
                "{addr} answered plain HTTP"
            );
            let grpc = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?;
            let refused = match grpc.connect().await {
                Err(_) => true,
                Ok(ch) => SchedulerClient::new(ch)
                    .revive(v1::ReviveRequest {
                        framework_id: "x".into(),
                        roles: Vec::new(),
                    })
                    .await
                    .is_err(),
            };
            ensure!(refused, "{addr} served plain gRPC");
        }
        // Another cluster's CA: its certificate is refused in the handshake.
        let ca = std::fs::read_to_string(c.home().join("pki/ca.crt"))?;
        let other = Authority::generate()?;
        let (issued, key) = other.issue_with_key(&"user:admin".parse()?, &[], LEAF_VALIDITY)?;
        let forged = Credentials::new(&ca)?.with_identity(Identity::from_pem(&issued.cert_pem, &key)?);
        let forged = Transport::Tls(forged);
        ensure!(
            http_client(&forged, MASTER)?
                .get(c.url(&master, "/state"))
                .send()
                .await
                .is_err(),
            "a certificate of another CA was accepted"
        );
        // A credential that expired, and a revoked one.
        let (status, v) = admin_post(
            &c,
            "/api/v1/credentials",
            json!({ "principal": "ci", "token": true, "ttl_secs": 1 }),
        )
        .await?;
        ensure!(status == 200, "{v}");
        let short = v["token"].as_str().context("token")?.to_owned();
        let long = token(&c, "ci").await?;
        allow(&c, "user:ci", &["read"], "cluster").await?;
        let read = |t: String| {
            let c = &c;
            async move {
                let tr = with_token(c, &t)?;
                let r = http_client(&tr, MASTER)?
                    .get(c.url(c.master_addr(), "/state"))
                    .send()
                    .await?;
                Ok::<_, anyhow::Error>((r.status().as_u16(), r.text().await?))
            }
        };
        ensure!(read(long.clone()).await?.0 == 200, "a valid token reads");
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let (code, body) = read(short).await?;
        ensure!(code == 401 && body.contains("expired"), "{code} {body}");
        let nonce = long.split('.').nth(3).context("nonce")?;
        let (status, v) = admin_post(&c, "/api/v1/credentials/revoke", json!({ "id": nonce })).await?;
        ensure!(status == 200, "{v}");
        let (code, body) = read(long).await?;
        ensure!(code == 401 && body.contains("revoked"), "{code} {body}");
        // The agent answers its masters and the administrator only.
        let user = with_token(&c, &token(&c, "ci2").await?)?;
        let agent_name = {
            let pem = std::fs::read_to_string(c.dir.path().join("agent0/tls/agent.crt"))?;
            let der = mezzo_proto::security::tls::certs_from_pem("agent", &pem)?;
            Principal::from_certificate(&der[0])?.dns_name().context("dns")?
        };
        let r = http_client(&user, &agent_name)?
            .get(c.url(&agent, "/state"))
            .send()
            .await?;
        ensure!(r.status().as_u16() == 403, "a user read the agent: {}", r.status());
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// "One unauthenticated POST /raft/members with a made-up address made a
/// single master lose quorum for good", and "a hand-built RaftTransport/Send
/// claiming to come from member 1 was accepted".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_and_raft_messages_need_a_master_or_the_right() -> Result<()> {
    let c = Cluster::start(ClusterSpec {
        agents: 0,
        ..Default::default()
    })
    .await?;
    let result = async {
        let before = registry(&c).await?;
        let master = c.master_addr().to_owned();
        let ca = std::fs::read_to_string(c.home().join("pki/ca.crt"))?;
        // Without a credential, and with a user's.
        let anon = Transport::Tls(Credentials::new(&ca)?);
        let r = http_client(&anon, MASTER)?
            .post(c.url(&master, "/raft/members"))
            .json(&json!({ "address": "10.9.9.9:5050" }))
            .send()
            .await?;
        ensure!(r.status().as_u16() == 401, "anonymous: {}", r.status());
        let user = with_token(&c, &token(&c, "mallory").await?)?;
        let r = http_client(&user, MASTER)?
            .post(c.url(&master, "/raft/members"))
            .json(&json!({ "address": "10.9.9.9:5050" }))
            .send()
            .await?;
        let status = r.status().as_u16();
        let body = r.text().await?;
        ensure!(
            status == 403 && body.contains("manage_masters"),
            "user: {status} {body}"
        );
        // A Raft batch from member 1, sent by a user and by an agent.
        let joined = joined_agent(&c, "fake").await?;
        for (who, tr) in [
            ("user", user.clone()),
            ("agent", Transport::Tls(joined.credentials.clone())),
        ] {
            let ch = grpc::connect(&master, &tr).await.map_err(anyhow::Error::msg)?;
            let mut raft = RaftTransportClient::new(ch);
            let batch = v1::RaftBatch {
                from: 1,
                to: 1,
                messages: vec![],
            };
            let err = raft.send(batch).await.expect_err("refused");
            ensure!(
                matches!(err.code(), Code::PermissionDenied | Code::Unauthenticated),
                "{who}: {err:?}"
            );
        }
        // The group is intact and nothing changed.
        let raft = c.get(&master, "/raft").await?;
        ensure!(raft["members"].as_object().is_some_and(|m| m.len() == 1), "{raft}");
        let after = registry(&c).await?;
        ensure!(
            before["masters"] == after["masters"],
            "members changed: {before} -> {after}"
        );
        // The administrator still changes weights (the cluster commits).
        let r = c
            .http()
            .put(c.url(&master, "/weights"))
            .json(&json!({ "eng": 2 }))
            .send()
            .await?;
        ensure!(r.status().is_success(), "admin weights: {}", r.text().await?);
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// "A process that sent Register claiming 1,000 cpus was admitted as an
/// agent"; "another that sent Reregister with a real agent's id took its
/// place, and the framework was told its running task was LOST"; "an agent
/// http_address of 127.0.0.1:PORT/any? made the master's files proxy fetch
/// an arbitrary URL".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_are_bound_to_their_credentials() -> Result<()> {
    let c = Cluster::start(one_agent()).await?;
    let result = async {
        let master = c.master_addr().to_owned();
        let (s, mut ev, _fid) = run_t1(&c, "victim", fw::shell_task("t1", "exec sleep 60")).await?;
        let state = c.master_state().await?;
        let agent0 = state["agents"][0]["id"].as_str().context("agent id")?.to_owned();
        let before = registry(&c).await?;

        // A user's credential may not open an agent stream at all.
        let user = with_token(&c, &token(&c, "mallory").await?)?;
        let ch = grpc::connect(&master, &user).await.map_err(anyhow::Error::msg)?;
        let err = AgentApiClient::with_interceptor(ch, grpc::BearerAuth::new(&user))
            .attach(tokio_stream::iter(vec![register("evil", "127.0.0.1:1")]))
            .await
            .expect_err("a user is no agent");
        ensure!(err.code() == Code::PermissionDenied, "{err:?}");

        // Another agent's credential may not take agent0's id.
        let other = joined_agent(&c, "impostor").await?;
        let tr = Transport::Tls(other.credentials.clone());
        let ch = grpc::connect(&master, &tr).await.map_err(anyhow::Error::msg)?;
        let rereg = v1::AgentMessage {
            message: Some(v1::agent_message::Message::Reregister(v1::Reregister {
                agent_id: agent0.clone(),
                agent: register("impostor", "127.0.0.1:1").message.and_then(|m| match m {
                    v1::agent_message::Message::Register(r) => r.agent,
                    _ => None,
                }),
                tasks: vec![],
                tasks_complete: true,
                executors: vec![],
            })),
        };
        let err = mezzo_tests::attach_refusal(ch.clone(), rereg).await?;
        ensure!(
            err.code() == Code::PermissionDenied && err.message().contains("belongs to"),
            "{err:?}"
        );
        // An HTTP address that is more than host:port.
        let err = mezzo_tests::attach_refusal(ch.clone(), register("impostor", "127.0.0.1:1/any?")).await?;
        ensure!(
            err.code() == Code::InvalidArgument && err.message().contains("host:port"),
            "{err:?}"
        );
        // The task still runs, unaware; the registry's agent is the same.
        tokio::time::sleep(Duration::from_millis(500)).await;
        no_forged_update(&mut ev, Duration::from_millis(300)).await?;
        let after = registry(&c).await?;
        ensure!(before["agents"] == after["agents"], "agents changed");
        let st = c.master_state().await?;
        let t = &st["tasks"][0];
        ensure!(t["state"] == "TASK_RUNNING", "{t}");
        s.kill("t1", None).await?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// An agent may report only on the tasks placed on it: an update from
/// another, properly joined and registered agent is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_speaks_only_for_its_own_tasks() -> Result<()> {
    let c = Cluster::start(one_agent()).await?;
    let result = async {
        let master = c.master_addr().to_owned();
        let (s, mut ev, fid) = run_t1(&c, "victim", fw::shell_task("t1", "exec sleep 60")).await?;
        let other = joined_agent(&c, "rogue").await?;
        let tr = Transport::Tls(other.credentials.clone());
        let ch = grpc::connect(&master, &tr).await.map_err(anyhow::Error::msg)?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.send(register("rogue", "127.0.0.1:1")).await?;
        let mut inbound = AgentApiClient::new(ch)
            .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let first = inbound.message().await?.context("registered")?;
        let rogue_id = match first.message {
            Some(v1::master_message::Message::Registered(r)) => r.agent_id,
            other => bail!("expected Registered, got {other:?}"),
        };
        let lost = v1::StatusUpdate {
            status: Some(v1::TaskStatus {
                task_id: "t1".into(),
                framework_id: fid.clone(),
                agent_id: rogue_id,
                state: v1::TaskState::TaskLost as i32,
                message: "forged".into(),
                uuid: vec![7; 16],
                ..Default::default()
            }),
            latest_state: v1::TaskState::TaskLost as i32,
            framework_id: fid.clone(),
        };
        tx.send(v1::AgentMessage {
            message: Some(v1::agent_message::Message::StatusUpdate(lost)),
        })
        .await?;
        no_forged_update(&mut ev, Duration::from_secs(2)).await?;
        let st = c.master_state().await?;
        ensure!(st["tasks"][0]["state"] == "TASK_RUNNING", "{}", st["tasks"]);
        s.kill("t1", None).await?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// "A connection that knew only a framework's id (public in /state)
/// killed its task, tore it down, overwrote its KV secret, and took over
/// its subscription."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_belongs_to_its_principal() -> Result<()> {
    let c = Cluster::start(one_agent()).await?;
    let result = async {
        let master = c.master_addr().to_owned();
        let task = with_password("echo private-output; exec sleep 60")?;
        let (s, _ev, fid) = run_t1(&c, "owner", task).await?;
        s.kv().put("db", b"s3cret".to_vec()).await?;

        // Bob may register frameworks and read the cluster, nothing of Alice's.
        let bob_token = token(&c, "bob").await?;
        allow(&c, "user:bob", &["register_framework"], "*").await?;
        allow(&c, "user:bob", &["read"], "cluster").await?;
        let bob = with_token(&c, &bob_token)?;
        let ch = grpc::connect(&master, &bob).await.map_err(anyhow::Error::msg)?;
        let mut raw = SchedulerClient::with_interceptor(ch, grpc::BearerAuth::new(&bob));
        let err = raw
            .kill(v1::KillRequest {
                framework_id: fid.clone(),
                task_id: "t1".into(),
                ..Default::default()
            })
            .await
            .expect_err("kill");
        ensure!(err.code() == Code::PermissionDenied, "kill: {err:?}");
        let err = raw
            .teardown(v1::TeardownRequest {
                framework_id: fid.clone(),
            })
            .await
            .expect_err("teardown");
        ensure!(err.code() == Code::PermissionDenied, "teardown: {err:?}");
        let err = raw
            .kv_put(v1::KvPutRequest {
                framework_id: fid.clone(),
                key: "db".into(),
                value: b"pwned".to_vec(),
                ..Default::default()
            })
            .await
            .expect_err("kv");
        ensure!(err.code() == Code::PermissionDenied, "kv: {err:?}");
        let err = raw
            .kv_get(v1::KvGetRequest {
                framework_id: fid.clone(),
                key: "db".into(),
            })
            .await
            .expect_err("kv get");
        ensure!(err.code() == Code::PermissionDenied, "kv get: {err:?}");
        // Nor message or shut down its executors; nobody without a
        // credential may either.
        let agent = c.get(&master, "/state").await?["agents"][0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let message = v1::MessageRequest {
            framework_id: fid.clone(),
            agent_id: agent.clone(),
            executor_id: "e1".into(),
            data: b"hi".to_vec(),
        };
        let err = raw.message(message.clone()).await.expect_err("message");
        ensure!(err.code() == Code::PermissionDenied, "message: {err:?}");
        let shutdown = v1::ShutdownExecutorRequest {
            framework_id: fid.clone(),
            agent_id: agent,
            executor_id: "e1".into(),
        };
        let err = raw.shutdown_executor(shutdown.clone()).await.expect_err("shutdown");
        ensure!(err.code() == Code::PermissionDenied, "shutdown executor: {err:?}");
        let ca = std::fs::read_to_string(c.home().join("pki/ca.crt"))?;
        let anon = Transport::Tls(Credentials::new(&ca)?);
        let ch = grpc::connect(&master, &anon).await.map_err(anyhow::Error::msg)?;
        let mut nobody = SchedulerClient::new(ch);
        let err = nobody.message(message).await.expect_err("anonymous message");
        ensure!(err.code() == Code::Unauthenticated, "anonymous message: {err:?}");
        let err = nobody
            .shutdown_executor(shutdown)
            .await
            .expect_err("anonymous shutdown");
        ensure!(err.code() == Code::Unauthenticated, "anonymous shutdown: {err:?}");
        // Taking over the subscription, through the SDK.
        let mut cfg = mezzo_sdk::SchedulerConfig::new(c.masters(), "owner").with_transport(bob.clone());
        cfg.framework_id = Some(fid.clone());
        let (thief, mut thief_ev) = mezzo_sdk::Scheduler::start(cfg);
        let e = thief_ev.next().await;
        ensure!(
            matches!(&e, Some(Event::Error { message }) if message.contains("take_over_framework")),
            "the take-over was not refused: {e:?}"
        );
        thief.stop().await;
        // Alice's sandbox and environment stay hers.
        let http = http_client(&bob, MASTER)?;
        let r = http
            .get(c.url(&master, &format!("/api/v1/tasks/{fid}/t1/files/read?path=stdout")))
            .send()
            .await?;
        ensure!(r.status().as_u16() == 403, "sandbox: {}", r.status());
        let detail: Value = http
            .get(c.url(&master, &format!("/api/v1/tasks/{fid}/t1")))
            .send()
            .await?
            .json()
            .await?;
        ensure!(detail["environment"].is_null(), "bob saw the environment: {detail}");
        // Nothing happened to Alice.
        ensure!(s.kv().get("db").await?.map(|e| e.value) == Some(b"s3cret".to_vec()));
        let st = c.master_state().await?;
        ensure!(st["tasks"][0]["state"] == "TASK_RUNNING", "{}", st["tasks"]);
        s.kill("t1", None).await?;
        s.teardown().await?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// Deny is the default: roles, root and reads each need a rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_decide_roles_root_and_reads() -> Result<()> {
    let c = Cluster::start(one_agent()).await?;
    let result = async {
        let carol = with_token(&c, &token(&c, "carol").await?)?;
        let start = |role: &str| {
            let mut cfg = mezzo_sdk::SchedulerConfig::new(c.masters(), "carol").with_transport(carol.clone());
            cfg.framework.roles = vec![role.to_owned()];
            mezzo_sdk::Scheduler::start(cfg)
        };
        let refused = |e: Option<Event>, what: &str| match e {
            Some(Event::Error { message }) if message.contains(what) => Ok(()),
            other => Err(anyhow::anyhow!("expected a refusal naming {what}, got {other:?}")),
        };
        let (s, mut ev) = start("eng");
        refused(ev.next().await, "register_framework")?;
        s.stop().await;
        allow(&c, "user:carol", &["register_framework"], "eng/*").await?;
        allow(&c, "user:carol", &["register_framework"], "eng").await?;
        let (s, mut ev) = start("ops");
        refused(ev.next().await, "register_framework")?;
        s.stop().await;
        let (s, ev) = start("eng");
        let mut inbox = fw::Inbox::new(ev);
        inbox
            .next(Duration::from_secs(10), |e| {
                matches!(e, Event::Subscribed { .. }).then_some(())
            })
            .await?;
        let o = inbox.offer().await?;
        let mut t = fw::shell_task("as-root", "id");
        t.command.as_mut().context("cmd")?.user = "root".into();
        match s.accept(vec![o.offer_id.clone()], vec![t], None).await {
            Err(SdkError::Rejected { code, message })
                if code == Code::PermissionDenied && message.contains("run_as") => {}
            other => bail!("root without a rule: {other:?}"),
        }
        // `*` never covers root.
        allow(&c, "user:carol", &["run_as"], "*").await?;
        let mut t = fw::shell_task("as-root-2", "id");
        t.command.as_mut().context("cmd")?.user = "root".into();
        // The refused accept used nothing: the same offer is still good.
        match s.accept(vec![o.offer_id], vec![t], None).await {
            Err(SdkError::Rejected { message, .. }) if message.contains("run_as") => {}
            other => bail!("root by `*`: {other:?}"),
        }
        s.stop().await;
        // Reads: none without a rule; anonymous never.
        let r = http_client(&carol, MASTER)?
            .get(c.url(c.master_addr(), "/state"))
            .send()
            .await?;
        ensure!(r.status().as_u16() == 403, "carol read /state: {}", r.status());
        let ca = std::fs::read_to_string(c.home().join("pki/ca.crt"))?;
        let anon = Transport::Tls(Credentials::new(&ca)?);
        for path in [
            "/state",
            "/api/v1/tasks",
            "/api/v1/events",
            "/raft/registry",
            "/metrics",
            "/api/v1/acl",
            "/api/v1/volumes",
        ] {
            let r = http_client(&anon, MASTER)?
                .get(c.url(c.master_addr(), path))
                .send()
                .await?;
            ensure!(r.status().as_u16() == 401, "anonymous {path}: {}", r.status());
        }
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// The allocation policy is the operator's: without their actions a
/// principal changes no weight, quota, reservation or volume, and a rule
/// on one role grants nothing on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_need_their_action_on_each_role() -> Result<()> {
    use reqwest::Method;
    let c = Cluster::start(one_agent()).await?;
    let result = async {
        let carol = http_client(&with_token(&c, &token(&c, "carol").await?)?, MASTER)?;
        let agents = c.get(c.master_addr(), "/api/v1/agents").await?;
        let agent = agents["items"][0]["id"].as_str().context("an agent")?.to_owned();
        let before = registry(&c).await?;
        let calls = [
            (Method::PUT, "/weights", json!({ "eng": 2 }), "set_weights"),
            (
                Method::PUT,
                "/quota",
                json!({ "role": "eng", "guarantee": "cpus:1" }),
                "set_quota",
            ),
            (Method::DELETE, "/quota/eng", Value::Null, "set_quota"),
            (
                Method::POST,
                "/reserve",
                json!({ "agent": agent, "resources": "cpus(eng):1" }),
                "reserve",
            ),
            (
                Method::POST,
                "/unreserve",
                json!({ "agent": agent, "resources": "cpus(eng):1" }),
                "unreserve",
            ),
            (
                Method::POST,
                "/api/v1/volumes/destroy",
                json!({ "agent": agent, "volume": "v" }),
                "read",
            ),
        ];
        let ca = std::fs::read_to_string(c.home().join("pki/ca.crt"))?;
        let anon = http_client(&Transport::Tls(Credentials::new(&ca)?), MASTER)?;
        for (method, path, body, action) in calls {
            let url = c.url(c.master_addr(), path);
            let r = carol.request(method.clone(), &url).json(&body).send().await?;
            let status = r.status().as_u16();
            let text = r.text().await?;
            ensure!(
                status == 403 && text.contains(action),
                "carol {method} {path}: {status} {text}"
            );
            let r = anon.request(method.clone(), &url).json(&body).send().await?;
            ensure!(r.status().as_u16() == 401, "anonymous {method} {path}: {}", r.status());
        }
        ensure!(registry(&c).await? == before, "a refused change changed the registry");
        allow(&c, "user:carol", &["set_weights"], "eng").await?;
        let put = |body: Value| carol.put(c.url(c.master_addr(), "/weights")).json(&body).send();
        let r = put(json!({ "eng": 2, "ops": 2 })).await?;
        ensure!(
            r.status().as_u16() == 403,
            "weights of ops with a rule on eng only: {}",
            r.status()
        );
        let r = put(json!({ "eng": 2 })).await?;
        ensure!(r.status().is_success(), "weights of eng with the rule: {}", r.status());
        // Reading the volumes needs `read`, like every read.
        let r = carol.get(c.url(c.master_addr(), "/api/v1/volumes")).send().await?;
        ensure!(r.status().as_u16() == 403, "carol read the volumes: {}", r.status());
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// A secret's value reaches its task and nothing else: no read endpoint,
/// event, log line, registry dump or file of the masters holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_value_appears_anywhere() -> Result<()> {
    const VALUE: &str = "TOPSECRET-7f3a9";
    let c = Cluster::start(one_agent()).await?;
    let result = async {
        let master = c.master_addr().to_owned();
        let r = c
            .http()
            .put(c.url(&master, "/api/v1/secrets"))
            .json(&json!({ "role": "*", "name": "db", "value": VALUE }))
            .send()
            .await?;
        ensure!(r.status().is_success(), "put: {}", r.text().await?);
        // Someone follows the event stream meanwhile.
        let events = c.http().get(c.url(&master, "/api/v1/events")).send().await?;
        let collect = tokio::spawn(async move {
            let mut events = events;
            let mut all = Vec::new();
            while let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_secs(6), events.chunk()).await {
                all.extend_from_slice(&chunk);
            }
            String::from_utf8_lossy(&all).into_owned()
        });
        let (s, mut ev, fid) = fw::subscribe(&c, "secretive", None).await?;
        let o = ev.offer().await?;
        let task = mezzo_sdk::TaskBuilder::new("reader")
            .resources(&mezzo_sdk::Resources::parse("cpus:0.1;mem:16")?)
            .shell("echo \"$DB\" > seen-env; cp conf/db seen-file")
            .secret_env("DB", "db")
            .secret_file("conf/db", "db")
            .build();
        s.accept(vec![o.offer_id], vec![task], None).await?;
        let done = ev
            .update("reader", Duration::from_secs(15), TaskState::is_terminal)
            .await?;
        ensure!(mezzo_sdk::task_state(&done) == Some(TaskState::Finished), "{done:?}");
        // The task had it.
        let sandbox = c.dir.path().join("agent0/sandboxes").join(&fid).join("reader");
        ensure!(std::fs::read_to_string(sandbox.join("seen-env"))?.trim() == VALUE);
        ensure!(std::fs::read_to_string(sandbox.join("seen-file"))?.trim() == VALUE);
        // A task naming a secret its role lacks is refused.
        let o = ev.offer().await?;
        let bad = mezzo_sdk::TaskBuilder::new("nope")
            .resources(&mezzo_sdk::Resources::parse("cpus:0.1;mem:16")?)
            .shell("true")
            .secret_env("X", "missing")
            .build();
        match s.accept(vec![o.offer_id], vec![bad], None).await {
            Err(SdkError::Rejected { message, .. }) if message.contains("missing") => {}
            other => bail!("a missing secret: {other:?}"),
        }
        // Everything an operator or a dump can see.
        let mut seen = String::new();
        for path in [
            "/state".to_owned(),
            "/api/v1/tasks?state=terminal".to_owned(),
            format!("/api/v1/tasks/{fid}/reader"),
            "/raft/registry".to_owned(),
            "/api/v1/secrets".to_owned(),
            "/metrics".to_owned(),
            "/api/v1/overview".to_owned(),
        ] {
            seen += &c.text(&master, &path).await?;
        }
        seen += &c.text(&c.agents[0].addr.clone(), "/state").await?;
        seen += &collect.await?;
        seen += &c.logs();
        for d in c.masters.iter().chain(&c.agents) {
            seen += &d.log();
        }
        ensure!(!seen.contains(VALUE), "the secret's value showed up");
        ensure!(seen.contains("secret:db"), "the detail names the secret");
        // Nor does the agent keep it anywhere but in the task's own sandbox
        // and environment: not in a running task's checkpoint.
        let o = ev.offer().await?;
        let holder = mezzo_sdk::TaskBuilder::new("holder")
            .resources(&mezzo_sdk::Resources::parse("cpus:0.1;mem:16")?)
            .shell("echo started > started; exec sleep 60")
            .secret_env("DB", "db")
            .secret_file("conf/db", "db")
            .build();
        s.accept(vec![o.offer_id], vec![holder], None).await?;
        let started = c.dir.path().join("agent0/sandboxes").join(&fid).join("holder/started");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !started.exists() {
            ensure!(std::time::Instant::now() < deadline, "holder never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let checkpoint = c.runtime_dir(0).join("tasks").join(&fid).join("holder/task.pb");
        ensure!(checkpoint.exists(), "no checkpoint at {}", checkpoint.display());
        let mut found = files_holding(&c.runtime_dir(0), VALUE);
        for entry in std::fs::read_dir(c.dir.path().join("agent0"))? {
            let path = entry?.path();
            if !path.ends_with("sandboxes") {
                found.extend(files_holding(&path, VALUE));
            }
        }
        ensure!(found.is_empty(), "agent files holding the secret: {found:?}");
        // Nor does any file of the masters (Raft log, snapshots, marks).
        for entry in walk(&c.dir.path().join("master0"))? {
            let bytes = std::fs::read(&entry).unwrap_or_default();
            ensure!(
                !bytes.windows(VALUE.len()).any(|w| w == VALUE.as_bytes()),
                "{} holds the secret",
                entry.display()
            );
        }
        s.teardown().await?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

fn walk(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

/// "12,000 bogus framework registrations were all accepted": one
/// principal is cut off at its limits (frameworks, calls per second) while
/// a legitimate framework keeps launching tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_principal_is_cut_off_and_others_keep_working() -> Result<()> {
    let mut spec = one_agent();
    spec.master_args
        .extend(["--max-frameworks-per-principal", "5", "--max-calls-per-second", "20"].map(String::from));
    let c = Cluster::start(spec).await?;
    let result = async {
        let master = c.master_addr().to_owned();
        allow(&c, "user:flood", &["register_framework", "read"], "*").await?;
        let flood = with_token(&c, &token(&c, "flood").await?)?;
        // Registrations: five pass, the rest are refused with the limit named.
        let ch = grpc::connect(&master, &flood).await.map_err(anyhow::Error::msg)?;
        let mut raw = SchedulerClient::with_interceptor(ch, grpc::BearerAuth::new(&flood));
        let mut streams = Vec::new();
        let mut refused = 0;
        for i in 0..12 {
            let req = v1::SubscribeRequest {
                framework: Some(v1::FrameworkInfo {
                    name: format!("bogus-{i}"),
                    failover_timeout_secs: 600.0,
                    ..Default::default()
                }),
                framework_id: String::new(),
                suppressed_roles: Vec::new(),
            };
            match raw.subscribe(req).await {
                Ok(s) => streams.push(s.into_inner()),
                Err(e) if e.code() == Code::ResourceExhausted && e.message().contains("per principal") => refused += 1,
                Err(e) => bail!("registration {i}: {e:?}"),
            }
        }
        ensure!(
            refused == 7 && streams.len() == 5,
            "{} admitted, {refused} refused",
            streams.len()
        );
        // They would hold the agent's offers; their streams close.
        drop(streams);
        // Calls: a tight loop is held to its rate with 429s (20/s, a burst
        // of 40: 800 calls would have to take 38 s to pass unlimited, so a
        // slow, loaded machine still sees the limit).
        let http = http_client(&flood, MASTER)?;
        let mut limited = 0;
        for _ in 0..800 {
            let r = http.get(c.url(&master, "/api/v1/frameworks")).send().await?;
            if r.status().as_u16() == 429 {
                limited += 1;
            }
        }
        ensure!(limited > 0, "800 calls in a burst were never limited");
        // Meanwhile the administrator's framework launches as usual.
        let (s, mut ev, _) = fw::subscribe(&c, "legit", None).await?;
        for i in 0..5 {
            let o = ev.offer().await?;
            let id = format!("ok-{i}");
            s.accept(vec![o.offer_id], vec![fw::shell_task(&id, "true")], None)
                .await?;
            let st = ev.update(&id, Duration::from_secs(10), TaskState::is_terminal).await?;
            ensure!(mezzo_sdk::task_state(&st) == Some(TaskState::Finished), "{st:?}");
        }
        s.teardown().await?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// `--anonymous-read` lets a client without a credential read the
/// cluster, and nothing more: no action, no environment, no sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_read_is_an_explicit_opt_in_for_reads_only() -> Result<()> {
    let mut spec = one_agent();
    spec.master_args.push("--anonymous-read".into());
    let c = Cluster::start(spec).await?;
    let result = async {
        let master = c.master_addr().to_owned();
        let (s, _ev, fid) = run_t1(&c, "open", with_password("exec sleep 60")?).await?;
        let ca = std::fs::read_to_string(c.home().join("pki/ca.crt"))?;
        let anon = http_client(&Transport::Tls(Credentials::new(&ca)?), MASTER)?;
        let r = anon.get(c.url(&master, "/state")).send().await?;
        ensure!(r.status().as_u16() == 200, "read: {}", r.status());
        let detail: Value = anon
            .get(c.url(&master, &format!("/api/v1/tasks/{fid}/t1")))
            .send()
            .await?
            .json()
            .await?;
        ensure!(detail["environment"].is_null(), "{detail}");
        let r = anon
            .get(c.url(&master, &format!("/api/v1/tasks/{fid}/t1/files/read?path=stdout")))
            .send()
            .await?;
        ensure!(r.status().as_u16() == 401, "sandbox: {}", r.status());
        let r = anon
            .post(c.url(&master, &format!("/api/v1/tasks/{fid}/t1/kill")))
            .send()
            .await?;
        ensure!(r.status().as_u16() == 401, "kill: {}", r.status());
        s.kill("t1", None).await?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// `fw::shell_task` without the seccomp filter.
fn unconfined(id: &str, script: &str) -> v1::TaskInfo {
    let mut t = fw::shell_task(id, script);
    t.container = Some(Box::new(v1::ContainerInfo {
        seccomp: "unconfined".into(),
        ..Default::default()
    }));
    t
}

/// Issue 15: a task without the seccomp filter needs both the ACL
/// (`relax_isolation` on `seccomp:unconfined`) and an agent started with
/// `--allow-unconfined`; an unknown profile is bad input. Control: with
/// both, the task runs with no filter while a default task has one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfined_task_needs_the_acl_and_the_agent() -> Result<()> {
    let c = Cluster::start(one_agent()).await?;
    let result = async {
        let carol = with_token(&c, &token(&c, "carol").await?)?;
        allow(&c, "user:carol", &["register_framework"], "eng").await?;
        let mut cfg = mezzo_sdk::SchedulerConfig::new(c.masters(), "carol").with_transport(carol);
        cfg.framework.roles = vec!["eng".to_owned()];
        let (s, ev) = mezzo_sdk::Scheduler::start(cfg);
        let mut inbox = fw::Inbox::new(ev);
        let o = inbox.offer().await?;
        match s
            .accept(vec![o.offer_id.clone()], vec![unconfined("u1", "true")], None)
            .await
        {
            Err(SdkError::Rejected { code, message })
                if code == Code::PermissionDenied && message.contains("relax_isolation") => {}
            other => bail!("unconfined without a rule: {other:?}"),
        }
        let mut bogus = unconfined("u1", "true");
        if let Some(container) = bogus.container.as_mut() {
            container.seccomp = "bogus".into();
        }
        match s.accept(vec![o.offer_id.clone()], vec![bogus], None).await {
            Err(SdkError::Rejected { code, message })
                if code == Code::InvalidArgument && message.contains("seccomp profile") => {}
            other => bail!("an unknown profile: {other:?}"),
        }
        allow(&c, "user:carol", &["relax_isolation"], "seccomp:unconfined").await?;
        s.accept(vec![o.offer_id], vec![unconfined("u1", "true")], None).await?;
        let st = inbox
            .update("u1", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        ensure!(
            mezzo_sdk::task_state(&st) == Some(TaskState::Error) && st.message.contains("--allow-unconfined"),
            "an agent without --allow-unconfined: {st:?}"
        );
        s.stop().await;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())?;

    let mut spec = one_agent();
    spec.agent_args.push("--allow-unconfined".into());
    let c = Cluster::start(spec).await?;
    let result = async {
        let (s, mut ev, fid) = fw::subscribe(&c, "unconfined", None).await?;
        let probe = "grep Seccomp: /proc/self/status";
        for t in [unconfined("u2", probe), fw::shell_task("d2", probe)] {
            let id = t.task_id.clone();
            let o = ev.offer().await?;
            s.accept(vec![o.offer_id], vec![t], None).await?;
            let st = ev.update(&id, Duration::from_secs(10), TaskState::is_terminal).await?;
            ensure!(mezzo_sdk::task_state(&st) == Some(TaskState::Finished), "{st:?}");
        }
        let seccomp = |id: &str| {
            std::fs::read_to_string(c.dir.path().join("agent0/sandboxes").join(&fid).join(id).join("stdout"))
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        };
        ensure!(seccomp("u2")? == "Seccomp: 0", "unconfined: {:?}", seccomp("u2"));
        ensure!(seccomp("d2")? == "Seccomp: 2", "default: {:?}", seccomp("d2"));
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}
