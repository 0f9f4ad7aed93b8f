//! Persistent volumes and host volumes (issue 19) against a real master
//! and a real agent with Linux isolation: a volume made of reserved disk
//! keeps its data across tasks and an agent's SIGKILL and restart, is
//! offered only while free, cannot be destroyed while a task uses it, and
//! is gone with its data once destroyed; an operator's host volume is
//! mounted read-only when shared so, and only with the ACL.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use mezzo_sdk::operations::{create_volume, destroy_volumes, reserve};
use mezzo_sdk::{Event, Resources, Role, Scheduler, SdkError, TaskBuilder, TaskState, v1};
use mezzo_tests::fw::Inbox;
use mezzo_tests::{Cluster, ClusterSpec, mezzo_bin};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn one_agent(extra: &[&str]) -> ClusterSpec {
    let mut s = ClusterSpec {
        agents: 1,
        agent_resources: "cpus:4;mem:2048;disk:2048".into(),
        ..Default::default()
    };
    s.agent_args.extend(extra.iter().map(|a| a.to_string()));
    s
}

/// A framework in role `eng`, subscribed.
async fn framework(c: &Cluster, name: &str) -> Result<(Scheduler, Inbox)> {
    let mut cfg = c.sdk_config(name);
    cfg.framework.roles = vec!["eng".into()];
    cfg.framework.failover_timeout_secs = 60.0;
    let (s, ev) = Scheduler::start(cfg);
    let mut inbox = Inbox::new(ev);
    inbox
        .next(WAIT, |e| matches!(e, Event::Subscribed { .. }).then_some(()))
        .await?;
    Ok((s, inbox))
}

/// The next offer that does (or does not) list volume `id`; others are declined.
async fn offer_with(s: &Scheduler, inbox: &mut Inbox, id: &str, listed: bool) -> Result<v1::Offer> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let o = inbox
            .next(left, |e| match e {
                Event::Offers(o) => o.first().cloned(),
                _ => None,
            })
            .await
            .with_context(|| {
                format!(
                    "an offer that {} volume {id}",
                    if listed { "lists" } else { "does not list" }
                )
            })?;
        if o.volumes.iter().any(|v| v.id == id) == listed {
            return Ok(o);
        }
        // It may be rescinded already: a new volume rescinds its agent's offers.
        match s.decline(vec![o.offer_id], Some(0.0)).await {
            Ok(())
            | Err(SdkError::Rejected {
                code: mezzo_sdk::Code::NotFound,
                ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn task(id: &str, script: &str) -> TaskBuilder {
    let r = Resources::parse("cpus:0.1;mem:32").expect("static resources");
    TaskBuilder::new(id).resources(&r).shell(script)
}

async fn run_to_end(s: &Scheduler, inbox: &mut Inbox, offer: v1::Offer, t: v1::TaskInfo) -> Result<v1::TaskStatus> {
    let id = t.task_id.clone();
    s.accept(vec![offer.offer_id], vec![t], None).await?;
    inbox.update(&id, WAIT, |st| st.is_terminal()).await
}

fn finished(st: &v1::TaskStatus) -> Result<()> {
    ensure!(
        st.state == v1::TaskState::TaskFinished as i32,
        "task {} ended {:?}: {}",
        st.task_id,
        v1::TaskState::try_from(st.state),
        st.message
    );
    Ok(())
}

/// `mezzo volumes --json` as the administrator.
async fn volumes_cli(c: &Cluster) -> Result<Value> {
    let out = tokio::process::Command::new(mezzo_bin())
        .envs(c.env())
        .args(["volumes", "--json"])
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "mezzo volumes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn volume_dir(c: &Cluster, id: &str) -> PathBuf {
    c.dir.path().join("agent0").join("volumes").join(id)
}

/// The issue's test: a stateful task writes to its volume, is killed, and
/// its successor finds the data on the same agent; an agent SIGKILL and
/// restart keeps the volume; a destroy while a task uses it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_outlives_its_tasks_and_an_agent_restart() -> Result<()> {
    let mut c = Cluster::start(one_agent(&[])).await?;
    let result = async {
        let (s, mut inbox) = framework(&c, "vols").await?;
        let eng = Role::parse("eng")?;
        let o = inbox.offer().await?;
        ensure!(o.allocation_role == "eng", "offer to {}", o.allocation_role);
        // Reserve and create in one accept; a launch on the new volume in
        // that accept would be refused.
        let mount_now = mezzo_sdk::operations::launch(vec![task("early", "true").volume("data-0", "data").build()]);
        let ops = vec![
            reserve(&eng, &Resources::parse("cpus:1;mem:256;disk:128")?),
            create_volume("data-0", 64),
            mount_now,
        ];
        match s.accept_operations(vec![o.offer_id.clone()], ops, None).await {
            Err(SdkError::Rejected { message, .. }) if message.contains("created by this accept") => {}
            other => bail!("a launch on a volume of the same accept: {other:?}"),
        }
        let ops = vec![
            reserve(&eng, &Resources::parse("cpus:1;mem:256;disk:128")?),
            create_volume("data-0", 64),
        ];
        s.accept_operations(vec![o.offer_id], ops, None).await?;

        let o = offer_with(&s, &mut inbox, "data-0", true).await?;
        let v = &o.volumes[0];
        ensure!(v.role == "eng" && v.disk_mib == 64.0, "{v:?}");
        let write = task("t1", "echo first >> data/log && test $(wc -l < data/log) -eq 1").volume("data-0", "data");
        finished(&run_to_end(&s, &mut inbox, o, write.build()).await?)?;
        let on_disk = std::fs::read_to_string(volume_dir(&c, "data-0").join("log"))?;
        ensure!(on_disk == "first\n", "the volume on the agent holds {on_disk:?}");

        // A long-running user: the volume is in no offer and cannot be destroyed.
        let o = offer_with(&s, &mut inbox, "data-0", true).await?;
        let hold = task("t2", "grep -q first data/log && exec sleep 600").volume("data-0", "data");
        s.accept(vec![o.offer_id], vec![hold.build()], None).await?;
        inbox.update("t2", WAIT, |st| st == TaskState::Running).await?;
        let listed = volumes_cli(&c).await?;
        ensure!(
            listed[0]["id"] == "data-0" && listed[0]["used_by"]["task_id"] == "t2",
            "mezzo volumes: {listed}"
        );
        let o = offer_with(&s, &mut inbox, "data-0", false).await?;
        match s
            .accept_operations(vec![o.offer_id.clone()], vec![destroy_volumes(["data-0"])], None)
            .await
        {
            Err(SdkError::Rejected { message, .. }) if message.contains("in use by task t2") => {}
            other => bail!("destroy of a volume in use: {other:?}"),
        }
        s.decline(vec![o.offer_id], Some(0.0)).await?;

        // The agent dies and comes back: its task and the volume survive.
        c.agents[0].kill().await;
        c.restart_agent(0).await?;
        c.wait_master("the agent back", |st| {
            st["agents"][0]["connected"] == true && st["volumes"][0]["used_by"]["task_id"] == "t2"
        })
        .await?;
        s.kill("t2", None).await?;
        inbox.update("t2", WAIT, |st| st.is_terminal()).await?;
        let o = offer_with(&s, &mut inbox, "data-0", true).await?;
        let again = task("t3", "echo second >> data/log && test $(wc -l < data/log) -eq 2").volume("data-0", "data");
        finished(&run_to_end(&s, &mut inbox, o, again.build()).await?)?;

        // Destroyed once free: gone from the registry and the agent's disk,
        // its disk reserved for the role again.
        let o = offer_with(&s, &mut inbox, "data-0", true).await?;
        s.accept_operations(vec![o.offer_id], vec![destroy_volumes(["data-0"])], None)
            .await?;
        c.wait_master("the volume gone", |st| {
            st["volumes"].as_array().is_some_and(Vec::is_empty)
        })
        .await?;
        let dir = volume_dir(&c, "data-0");
        let gone = || async { Ok(Value::Bool(!dir.exists())) };
        mezzo_tests::wait_for("the volume's data removed", WAIT, gone, |v| v == &Value::Bool(true)).await?;
        s.stop().await;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// A host volume the operator shares read-only stays read-only whatever
/// the task asks; it needs `relax_isolation` on `host_volume:NAME`; an
/// agent that does not share a name fails the task with a clear message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_volumes_are_shared_as_the_operator_says_and_only_with_the_acl() -> Result<()> {
    let shared = tempfile::Builder::new().prefix("mezzo-test-hostvol-").tempdir()?;
    std::fs::write(shared.path().join("motd"), "from the host\n")?;
    let arg = format!("certs={}:ro", shared.path().display());
    let c = Cluster::start(one_agent(&["--host-volumes", &arg])).await?;
    let result = async {
        let (s, mut inbox) = framework(&c, "hostvol").await?;
        let o = inbox.offer().await?;
        let read = task(
            "read",
            "grep -q 'from the host' etc/motd && ! touch etc/new 2>/dev/null",
        )
        .host_volume("certs", "etc", false)
        .build();
        finished(&run_to_end(&s, &mut inbox, o, read).await?)?;
        ensure!(
            !shared.path().join("new").exists(),
            "a task wrote into a read-only host volume"
        );

        let o = inbox.offer().await?;
        let unknown = task("unknown", "true").host_volume("nope", "x", true).build();
        let st = run_to_end(&s, &mut inbox, o, unknown).await?;
        ensure!(
            st.state == v1::TaskState::TaskFailed as i32
                && st.message.contains("nope")
                && st.message.contains("--host-volumes"),
            "a host volume the agent does not share: {st:?}"
        );
        s.stop().await;

        // Without the ACL: refused at the accept, nothing launched.
        let token = c.issue_token("carol").await?;
        c.allow("user:carol", &["register_framework"], "eng").await?;
        let mut cfg = c.sdk_config("carol");
        cfg = cfg.with_transport(c.token_transport(&token)?);
        cfg.framework.roles = vec!["eng".into()];
        let (s, ev) = Scheduler::start(cfg);
        let mut inbox = Inbox::new(ev);
        let o = inbox.offer().await?;
        let t = task("c1", "true").host_volume("certs", "etc", true).build();
        match s.accept(vec![o.offer_id.clone()], vec![t.clone()], None).await {
            Err(SdkError::Rejected { code, message })
                if code == mezzo_sdk::Code::PermissionDenied && message.contains("host_volume:certs") => {}
            other => bail!("a host volume without the ACL: {other:?}"),
        }
        c.allow("user:carol", &["relax_isolation"], "host_volume:certs").await?;
        finished(&run_to_end(&s, &mut inbox, o, t).await?)?;
        s.stop().await;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// A volume is held to its size as a sandbox is to the task's disk: a task
/// that writes past it ends FAILED with the disk-limit reason, naming the
/// volume; what it wrote stays (the volume is its role's data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_is_held_to_its_size() -> Result<()> {
    let c = Cluster::start(one_agent(&["--disk-check-interval", "500ms"])).await?;
    let result = async {
        let (s, mut inbox) = framework(&c, "small").await?;
        let eng = Role::parse("eng")?;
        let o = inbox.offer().await?;
        let ops = vec![
            reserve(&eng, &Resources::parse("cpus:1;mem:256;disk:8")?),
            create_volume("small-0", 2),
        ];
        s.accept_operations(vec![o.offer_id], ops, None).await?;
        let o = offer_with(&s, &mut inbox, "small-0", true).await?;
        let fill = task("fill", "head -c 5000000 /dev/zero > data/blob; sleep 30").volume("small-0", "data");
        let st = run_to_end(&s, &mut inbox, o, fill.build()).await?;
        ensure!(
            st.state == v1::TaskState::TaskFailed as i32
                && st.reason == v1::StatusReason::ReasonContainerLimitationDisk as i32
                && st.message.contains("volume small-0 holds 5 MiB, over its 2 MiB"),
            "{st:?}"
        );
        s.stop().await;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}
