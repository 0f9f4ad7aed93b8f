//! Issue 19: health checks run by the agent, from inside the task's
//! container (real agent, cgroups and namespaces).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mezzo_proto::v1;
use mezzo_sdk::{HealthCheck, Resources, TaskBuilder, TaskState, task_state};
use mezzo_tests::{Cluster, ClusterSpec, fw};

/// The next health update of `task` saying `healthy`.
async fn health(ev: &mut fw::Inbox, task: &str, healthy: bool) -> Result<v1::TaskStatus> {
    ev.next(Duration::from_secs(20), |e| match e {
        mezzo_sdk::Event::Update(s) if s.task_id == task && s.healthy == Some(healthy) => Some(s.clone()),
        _ => None,
    })
    .await
    .with_context(|| format!("{task}: no update with healthy = {healthy}"))
}

/// A port nothing on the host listens on, so that a check that passes
/// reached the task's own network namespace.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// An HTTP check of a task with a network of its own passes while its
/// server answers and fails once it stops; a command check runs in the
/// task's namespaces and sandbox, as its user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_run_inside_the_task_and_report_changes() -> Result<()> {
    checks_inside(&[]).await
}

/// The same in user namespaces: the command check joins the task's first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_run_inside_a_task_in_a_user_namespace() -> Result<()> {
    checks_inside(&["--user-namespaces", "--user-namespace-ids", "400000:65536"]).await
}

async fn checks_inside(agent_args: &[&str]) -> Result<()> {
    let mut spec = ClusterSpec {
        agents: 1,
        ..Default::default()
    };
    spec.agent_args.extend(agent_args.iter().map(|a| a.to_string()));
    let c = Cluster::start(spec).await?;
    let result = async {
        let (s, mut ev, _fid) = fw::subscribe(&c, "health", None).await?;
        let res = Resources::parse("cpus:0.1;mem:32")?;
        let port = free_port()?;
        ensure!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "something listens on {port} on the host"
        );
        let fast = |check: HealthCheck| {
            check
                .interval(Duration::from_millis(200))
                .timeout(Duration::from_secs(2))
                .failures(2)
        };
        // Serves for about 3 s, then stops answering but keeps running.
        let web = TaskBuilder::new("web")
            .resources(&res)
            .shell(format!(
                "echo ok > index.html; busybox httpd -f -p {port} -h . & pid=$!; sleep 3; kill $pid; exec sleep 600"
            ))
            .label("mezzo.network", "isolated")
            .health_check(fast(HealthCheck::http(port, "/index.html")))
            .build();
        let cmd = TaskBuilder::new("cmd")
            .resources(&res)
            .shell("touch ready; exec sleep 600")
            .health_check(fast(HealthCheck::shell(
                "h=$(hostname); u=$(id -u); n=$(ls /proc | grep -c '^[0-9]'); echo \"$h $u $n\"; \
                 test \"$h\" = cmd && test -f ready && test \"$u\" = 65534 && test \"$n\" -lt 10",
            )))
            .build();
        let o = ev.offer().await?;
        s.accept(vec![o.offer_id], vec![web, cmd], None).await?;

        let up = health(&mut ev, "web", true).await?;
        ensure!(
            task_state(&up) == Some(TaskState::Running)
                && up.reason == v1::StatusReason::ReasonTaskHealthCheckStatusUpdated as i32
                && up.message.contains("answered 200"),
            "{up:?}"
        );
        let ok = health(&mut ev, "cmd", true).await?;
        ensure!(ok.message.contains("exited 0: cmd 65534 "), "{ok:?}");
        let down = health(&mut ev, "web", false).await?;
        ensure!(task_state(&down) == Some(TaskState::Running), "{down:?}");
        ensure!(down.message.contains("cannot connect"), "{down:?}");

        // The leader keeps the latest verdict: in /state and in answers
        // to reconciliation.
        let state = c.master_state().await?;
        let tasks = state["tasks"].as_array().context("tasks")?;
        let healthy_of = |id: &str| tasks.iter().find(|t| t["id"] == id).map(|t| t["healthy"].clone());
        ensure!(
            healthy_of("web") == Some(false.into()) && healthy_of("cmd") == Some(true.into()),
            "{tasks:?}"
        );
        s.reconcile(vec![]).await?;
        let answer = ev
            .next(Duration::from_secs(10), |e| match e {
                mezzo_sdk::Event::Update(s)
                    if s.task_id == "web" && s.reason == v1::StatusReason::ReasonReconciliation as i32 =>
                {
                    Some(s.clone())
                }
                _ => None,
            })
            .await?;
        ensure!(answer.healthy == Some(false), "{answer:?}");

        // Killing a checked task ends its checks with it.
        for t in ["web", "cmd"] {
            s.kill(t, Some(Duration::from_millis(200))).await?;
            let st = ev.update(t, Duration::from_secs(10), TaskState::is_terminal).await?;
            ensure!(task_state(&st) == Some(TaskState::Killed), "{st:?}");
        }
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}
