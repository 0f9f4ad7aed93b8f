//! Third-party Mesos frameworks against Mezzo's Mesos v1 scheduler API
//! (docs/mesos-api.md): the PyPI client libraries `mesoshttp` and
//! `avmesos`, installed unmodified into a virtualenv by
//! `scripts/mesos-clients`, each run a framework (tests/clients/mesos/)
//! that launches 50 command tasks on a 3-master cluster and sees every one
//! reach TASK_FINISHED, while the leader is SIGKILLed in the middle: the
//! library finds the stream broken, subscribes again through the masters
//! it was given (a follower answers 307 to the new leader) with its
//! framework id, and the program reconciles and relaunches what failed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use mezzo_tests::{Cluster, ClusterSpec};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::task::JoinHandle;

const TASKS: usize = 50;
/// Tasks finished when the leader is killed.
const KILL_AFTER: usize = 15;
/// The framework's principal: nothing but what a framework needs.
const PRINCIPAL: &str = "user:pyfw";
/// The Unix user its tasks run as.
const TASK_USER: &str = "nobody";

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The virtualenv's python, where `scripts/mesos-clients` puts it
/// (`$MEZZO_MESOS_VENV`, else target/mesos-clients/venv).
fn venv_python() -> Result<PathBuf> {
    let venv =
        std::env::var_os("MEZZO_MESOS_VENV").map_or_else(|| repo().join("target/mesos-clients/venv"), PathBuf::from);
    let python = venv.join("bin/python");
    ensure!(
        python.is_file(),
        "{} is missing: run scripts/mesos-clients (scripts/test does) to create the virtualenv \
         with the PyPI Mesos clients mesoshttp and avmesos",
        python.display()
    );
    Ok(python)
}

/// Appends every line of `from` to `out`, until its end.
fn collect(from: impl AsyncRead + Unpin + Send + 'static, out: Arc<Mutex<String>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(from).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut o = out.lock().unwrap_or_else(PoisonError::into_inner);
            o.push_str(&line);
            o.push('\n');
        }
    })
}

/// Each logical task's ends ("ID STATE") among `tasks`, finished-task
/// records of one framework.
fn ends_by_logical_task(tasks: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut ends: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in tasks {
        let id = t["id"].as_str().unwrap_or_default();
        // task-07, or task-07.2 for its second launch.
        let logical = id.split('.').next().unwrap_or(id).to_owned();
        ends.entry(logical)
            .or_default()
            .push(format!("{id} {}", t["state"].as_str().unwrap_or_default()));
    }
    ends
}

fn finished_once(ends: &[String]) -> bool {
    ends.iter().filter(|e| e.ends_with(" TASK_FINISHED")).count() == 1
}

/// How many tasks of the framework named `name` the master saw finish.
fn finished_count(state: &Value, name: &str) -> usize {
    state["completed_tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["framework_name"] == name && t["state"] == "TASK_FINISHED")
        .count()
}

/// Runs `program` (tests/clients/mesos/) with the virtualenv's python
/// against a 3-master cluster, and SIGKILLs the leader once KILL_AFTER of
/// its tasks finished. `name`: the framework's name in the program.
async fn fifty_tasks_across_a_leader_kill(program: &str, name: &str) -> Result<()> {
    let python = venv_python()?;
    let script = repo().join("tests/clients/mesos").join(program);
    let mut c = Cluster::start(ClusterSpec {
        masters: 3,
        agents: 2,
        mesos_listen: true,
        // Ten tasks at a time (0.1 cpus each): the launches go on across
        // the failover.
        agent_resources: "cpus:0.5;mem:1024;disk:1024;ports:[31000-31099]".into(),
        ..Default::default()
    })
    .await?;
    let output = Arc::new(Mutex::new(String::new()));
    let result = async {
        let leader = c.wait_leader().await?;
        c.allow(PRINCIPAL, &["register_framework"], "*").await?;
        c.allow(PRINCIPAL, &["run_as"], TASK_USER).await?;
        let token = c.issue_token(PRINCIPAL).await?;
        // The followers first: the first subscription goes through a 307.
        let mut masters = Vec::new();
        for k in 1..=3 {
            masters.push(format!("http://{}", c.mesos_addr((leader + k) % 3)?));
        }
        let started = Instant::now();
        let mut child = Command::new(&python)
            .arg(&script)
            .env("MESOS_MASTER", masters.join(","))
            .env("MESOS_PRINCIPAL", PRINCIPAL.trim_start_matches("user:"))
            .env("MESOS_SECRET", &token)
            .env("MESOS_USER", TASK_USER)
            .env("TASKS", TASKS.to_string())
            .env("TIMEOUT", "75")
            // The stream carries a heartbeat every 500 ms.
            .env("MESOS_READ_TIMEOUT", "10")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("run {} {}", python.display(), script.display()))?;
        let readers = [
            collect(child.stdout.take().context("stdout")?, output.clone()),
            collect(child.stderr.take().context("stderr")?, output.clone()),
        ];

        // The leader dies once some tasks finished and others are to come.
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("{program} exited before the leader was killed: {status}");
            }
            let done = c.master_state().await.map(|s| finished_count(&s, name)).unwrap_or(0);
            if done >= KILL_AFTER {
                ensure!(done < TASKS, "all {done} tasks finished before the leader was killed");
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(45),
                "only {done} tasks finished in 45 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c.masters[leader].kill().await;
        let killed_at = started.elapsed();

        let status = tokio::time::timeout(Duration::from_secs(80), child.wait())
            .await
            .context("the program did not exit in 80 s")??;
        // Its last lines.
        for r in readers {
            tokio::time::timeout(Duration::from_secs(5), r)
                .await
                .context("the program's output did not end")??;
        }
        let out = output.lock().unwrap_or_else(PoisonError::into_inner).clone();
        ensure!(status.success(), "{program} failed: {status}");
        ensure!(
            out.lines().any(|l| l == format!("finished {TASKS}/{TASKS}")),
            "no 'finished {TASKS}/{TASKS}' line"
        );
        let subscribed: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split_once(" SUBSCRIBED framework_id=").map(|(_, r)| r))
            .filter_map(|r| r.split_whitespace().next())
            .collect();
        ensure!(
            subscribed.len() >= 2 && subscribed.windows(2).all(|w| w[0] == w[1]),
            "expected a re-subscription with the same framework id: {subscribed:?}"
        );
        ensure!(
            !out.contains("finished more than once"),
            "a logical task finished twice"
        );
        let framework = subscribed[0].to_owned();
        // Shown with --nocapture.
        eprintln!(
            "{out}{program}: leader killed at {killed_at:?}, {TASKS} tasks finished at {:?}",
            started.elapsed()
        );

        // The framework tore itself down: its finished tasks are in the
        // replicated history (the registry), the same on every live master
        // (recorded a second at a time).
        let deadline = Instant::now() + Duration::from_secs(10);
        let ends = loop {
            let regs = c.registries().await?;
            let tasks = regs[0]["history"]["tasks"][&framework]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ends = ends_by_logical_task(&tasks);
            if ends.values().filter(|e| finished_once(e)).count() >= TASKS || Instant::now() >= deadline {
                break ends;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let expected: Vec<String> = (0..TASKS).map(|i| format!("task-{i:02}")).collect();
        ensure!(
            ends.keys().eq(expected.iter()),
            "logical tasks in the history: {:?}",
            ends.keys().collect::<Vec<_>>()
        );
        let wrong: Vec<_> = ends.iter().filter(|(_, e)| !finished_once(e)).collect();
        ensure!(wrong.is_empty(), "not finished exactly once: {wrong:?}");
        Ok(())
    }
    .await;
    result.with_context(|| {
        let out = output.lock().unwrap_or_else(PoisonError::into_inner).clone();
        format!("--- {program} output ---\n{out}{}", c.logs())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesoshttp_runs_fifty_tasks_across_a_leader_kill() -> Result<()> {
    fifty_tasks_across_a_leader_kill("mesoshttp_50.py", "mesoshttp-50").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avmesos_runs_fifty_tasks_across_a_leader_kill() -> Result<()> {
    fifty_tasks_across_a_leader_kill("avmesos_50.py", "avmesos-50").await
}

/// `pymesos` (the driver `scripts/bench --mesos-api` measures) runs its
/// tasks to TASK_FINISHED through the leader's Mesos listener with one
/// connection for its calls, acknowledging each update itself, and tears
/// its framework down when done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymesos_runs_its_tasks_and_tears_down() -> Result<()> {
    const N: usize = 20;
    let python = venv_python()?;
    let c = Cluster::start(ClusterSpec {
        agents: 1,
        mesos_listen: true,
        ..Default::default()
    })
    .await?;
    let result = async {
        c.allow(PRINCIPAL, &["register_framework"], "*").await?;
        c.allow(PRINCIPAL, &["run_as"], TASK_USER).await?;
        let token = c.issue_token(PRINCIPAL).await?;
        let out = Command::new(&python)
            .arg(repo().join("tests/clients/mesos/pymesos_tasks.py"))
            .env("MESOS_MASTER", c.mesos_addr(0)?)
            .env("MESOS_PRINCIPAL", PRINCIPAL.trim_start_matches("user:"))
            .env("MESOS_SECRET", &token)
            .env("MESOS_USER", TASK_USER)
            .env("TASKS", N.to_string())
            .env("TIMEOUT", "60")
            .kill_on_drop(true)
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success() && stdout.contains(&format!("finished {N}/{N}")),
            "pymesos_tasks.py: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // Torn down, every update acknowledged by the driver (staging is
        // not sent: starting, running, finished), nothing left running. An
        // update whose acknowledgement took longer than the agent's first
        // resend (1 s, under the suite's load) is sent and acknowledged
        // again, or held by the master (counted as an update the framework
        // acknowledges once): at least three each, and every update
        // acknowledged or held.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let state = c.master_state().await?;
            let counters = &state["counters"];
            let gone = state["frameworks"].as_array().is_some_and(Vec::is_empty);
            if gone
                && state["tasks"].as_array().is_some_and(Vec::is_empty)
                && counters["tasks_launched"] == N
                && counters["acknowledgements"].as_u64().is_some_and(|a| a >= 3 * N as u64)
                && counters["acknowledgements"]
                    .as_u64()
                    .zip(counters["resends_held"].as_u64())
                    .map(|(a, h)| a + h)
                    == counters["status_updates"].as_u64()
            {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "not torn down with {N} tasks acknowledged: {state}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    .await;
    result.with_context(|| c.logs())
}
