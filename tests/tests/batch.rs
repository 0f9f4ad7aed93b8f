//! The batch framework (`mezzo batch`) through real masters, agents and
//! the `mezzo` binary: a DAG with a flaky task, cancellation, a restart of
//! the framework mid-job, and bad input.

use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use mezzo_batch::job::JobState;
use mezzo_tests::batch::{Batch, shared_dir};
use mezzo_tests::{Cluster, ClusterSpec};

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Issue 21: a job whose dependency failed is `skipped` with the reason,
/// its tasks too (they read `pending` before), and so is a job after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_after_a_failed_dependency_are_skipped_with_the_reason() -> Result<()> {
    let c = Cluster::start(ClusterSpec::default()).await?;
    let shared = shared_dir()?;
    let result = async {
        let b = Batch::start(&c).await?;
        let file = r#"
[[job]]
name = "a"
command = "exit 4"

[[job]]
name = "b"
command = "true"
count = 2
depends_on = ["a"]

[[job]]
name = "c"
command = "true"
depends_on = ["b"]
"#;
        let out = b.submit(shared.path(), file, true).await?;
        ensure!(!out.status.success(), "submit --wait fails: {}", text(&out));
        let statuses: serde_json::Value = serde_json::from_slice(&out.stdout).context(text(&out))?;
        let by_name = |n: &str| {
            statuses
                .as_array()
                .and_then(|a| a.iter().find(|s| s["name"] == n))
                .cloned()
        };
        let a = by_name("a").context("a")?;
        ensure!(a["state"] == "failed", "a: {a}");
        let bs = by_name("b").context("b")?;
        ensure!(
            bs["state"] == "skipped"
                && bs["abandoned"] == "dependency \"a\" failed"
                && bs["counts"]["skipped"] == 2
                && bs["counts"]["pending"] == 0,
            "b: {bs}"
        );
        ensure!(
            bs["tasks"]
                .as_array()
                .is_some_and(|t| t.len() == 2 && t.iter().all(|t| t["state"] == "skipped")),
            "b's tasks: {bs}"
        );
        let cs = by_name("c").context("c")?;
        ensure!(
            cs["state"] == "skipped" && cs["abandoned"] == "dependency \"b\" was skipped",
            "c: {cs}"
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// A DAG of three jobs: `c` needs `a` and `b`; `b` has a task that fails
/// its first attempt with exit 3 and succeeds on its retry. `submit --wait`
/// exits 0 and reports the retry exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dag_of_three_jobs_with_a_flaky_task() -> Result<()> {
    let c = Cluster::start(ClusterSpec::default()).await?;
    let shared = shared_dir()?;
    let d = shared.path().display().to_string();
    let result = async {
        let b = Batch::start(&c).await?;
        let file = format!(
            r#"
[[job]]
name = "a"
command = "touch {d}/a-$MEZZO_TASK_INDEX"
count = 3

[[job]]
name = "b"
command = "test -e {d}/a-0 -a -e {d}/a-1 -a -e {d}/a-2 || exit 9; if [ $MEZZO_TASK_INDEX = 0 ] && [ ! -e {d}/flaky ]; then touch {d}/flaky; echo first-try; exit 3; fi; echo later-try; touch {d}/b-$MEZZO_TASK_INDEX"
count = 2
retries = 2
backoff = "200ms"
depends_on = ["a"]

[[job]]
name = "c"
command = "test -e {d}/b-0 -a -e {d}/b-1 && touch {d}/c && echo c-done"
depends_on = ["a", "b"]
"#
        );
        let out = b.submit(shared.path(), &file, true).await?;
        ensure!(out.status.success(), "submit --wait: {}", text(&out));
        let statuses: serde_json::Value = serde_json::from_slice(&out.stdout).context(text(&out))?;
        let by_name = |n: &str| statuses.as_array().and_then(|a| a.iter().find(|s| s["name"] == n)).cloned();
        for n in ["a", "b", "c"] {
            let s = by_name(n).context("job in output")?;
            ensure!(s["state"] == "succeeded", "{n}: {s}");
        }
        let bs = by_name("b").context("b")?;
        ensure!(bs["counts"]["retried"] == 1, "one task retried: {bs}");
        let flaky = &bs["tasks"][0];
        ensure!(
            flaky["index"] == 0 && flaky["attempts"] == 2 && flaky["exit_code"] == 3,
            "the flaky task's first failure is reported: {bs}"
        );
        ensure!(shared.path().join("c").exists(), "c ran after b");
        // `logs` reads the task's stdout through its agent's files API.
        let out = b.cli(&["logs", "c", "--index", "0"]).await?;
        ensure!(out.status.success() && text(&out).contains("c-done"), "logs: {}", text(&out));
        // Each attempt's output, and each run with its task id, host and
        // times (issue 21: `logs` showed only the last attempt, `status`
        // no task ids, agents or elapsed times).
        for (attempt, want) in [("1", "first-try"), ("2", "later-try")] {
            let out = b.cli(&["logs", "b", "--index", "0", "--attempt", attempt]).await?;
            ensure!(out.status.success() && text(&out).contains(want), "attempt {attempt}: {}", text(&out));
        }
        let out = b.cli(&["logs", "b", "--index", "0", "--attempt", "3"]).await?;
        ensure!(!out.status.success() && text(&out).contains("attempt 3"), "{}", text(&out));
        let out = b.cli(&["status", "b", "--index", "0"]).await?;
        let shown = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(out.status.success(), "status --index: {}", text(&out));
        for want in ["b.0.1.", "b.0.2.", "agent", "failed", "finished", "ELAPSED", "last failure: exited with status 3"] {
            ensure!(shown.contains(want), "status --index lacks {want:?}: {shown}");
        }
        let out = b.cli(&["status", "b", "--index", "2"]).await?;
        ensure!(!out.status.success() && text(&out).contains("index 2"), "{}", text(&out));
        let out = b.cli(&["status", "b", "--all"]).await?;
        let shown = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(shown.contains("HOST") && shown.contains("b.0.2."), "status --all: {shown}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// Cancelling a job midway kills its running tasks and starts no more:
/// nothing of it runs on any agent afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_leaves_nothing_running() -> Result<()> {
    let c = Cluster::start(ClusterSpec::default()).await?;
    let result = async {
        let b = Batch::start(&c).await?;
        let shared = shared_dir()?;
        let file = "[[job]]\nname = \"long\"\ncommand = \"exec sleep 120\"\ncount = 20\nmax_parallel = 4\n";
        let out = b.submit(shared.path(), file, false).await?;
        ensure!(out.status.success(), "{}", text(&out));
        b.wait_job("long", "4 running", |s| s.summary.counts.running == 4)
            .await?;
        let out = b.cli(&["cancel", "long"]).await?;
        ensure!(out.status.success(), "{}", text(&out));
        b.wait_job("long", "cancelled", |s| s.summary.state == JobState::Cancelled)
            .await?;
        let st = b.client().status("long", false, None).await?;
        ensure!(st.summary.counts.cancelled == 20, "{st:?}");
        let fid = b.framework_id()?;
        c.wait_master("no task of the batch framework left", |s| {
            s["tasks"]
                .as_array()
                .is_some_and(|t| t.iter().all(|t| t["framework_id"] != fid.as_str()))
        })
        .await?;
        for i in 0..c.agents.len() {
            let st = c.agent_state(i).await?;
            let live = st["tasks"].as_array().map_or(0, |t| {
                t.iter()
                    .filter(|t| t["framework_id"] == fid.as_str() && t["state"] == "TASK_RUNNING")
                    .count()
            });
            ensure!(live == 0, "agent {i} still runs {live} task(s): {st}");
        }
        // And nothing starts later.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let st = b.client().status("long", false, None).await?;
        ensure!(
            st.summary.counts.running == 0 && st.summary.state == JobState::Cancelled,
            "{st:?}"
        );
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// SIGKILL the batch framework while half of a job has finished and the
/// other half runs; after a restart, finished tasks are not rerun, running
/// ones are adopted (not started again), and the job succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_framework_mid_job_reruns_nothing() -> Result<()> {
    let c = Cluster::start(ClusterSpec::default()).await?;
    let shared = shared_dir()?;
    let d = shared.path().display().to_string();
    let result = async {
        let mut b = Batch::start(&c).await?;
        let file = format!(
            "[[job]]\nname = \"half\"\ncount = 8\ncommand = \"echo run >> {d}/runs-$MEZZO_TASK_INDEX; if [ $MEZZO_TASK_INDEX -ge 4 ]; then sleep 6; fi\"\n"
        );
        let out = b.submit(shared.path(), &file, false).await?;
        ensure!(out.status.success(), "{}", text(&out));
        b.wait_job("half", "4 succeeded, 4 running", |s| {
            s.summary.counts.succeeded == 4 && s.summary.counts.running == 4
        })
        .await?;
        b.daemon.kill().await;
        b.restart().await?;
        b.each_ran_once("half", 8, shared.path()).await
    }
    .await;
    result.with_context(|| format!("{}\n--- batch framework ---\n{}", c.logs(), batch_logs(&c)))
}

fn batch_logs(c: &Cluster) -> String {
    mezzo_tests::batch::logs_in(c.dir.path())
}

/// Bad input: each refused with a clear error naming the field, line or
/// job, exit status 2, and nothing submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_job_files_are_refused_and_nothing_is_half_submitted() -> Result<()> {
    let c = Cluster::start(ClusterSpec::default()).await?;
    let result = async {
        let b = Batch::start(&c).await?;
        let shared = shared_dir()?;
        // Let the framework learn the agents' sizes.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let cases: &[(&str, &str)] = &[
            ("[[job]]\nname = \"a\"\ncommand = \"true\"\ncuont = 3\n", "unknown field `cuont`"),
            ("[[job]]\nname = \"a\"\ncommand = \"true\"\ncount = \"x\"\n", "line 4"),
            ("[[job]\nname = \"a\"\n", "line 1"),
            (
                "[[job]]\nname = \"a\"\ncommand = \"true\"\ndepends_on = [\"b\"]\n[[job]]\nname = \"b\"\ncommand = \"true\"\ndepends_on = [\"a\"]\n",
                "cycle",
            ),
            (
                "[[job]]\nname = \"ok\"\ncommand = \"true\"\n[[job]]\nname = \"huge\"\ncommand = \"true\"\ncpus = 64\n",
                "no agent could ever run",
            ),
            ("[[job]]\nname = \"a\"\ncommand = \"true\"\ndepends_on = [\"ghost\"]\n", "unknown job \"ghost\""),
            ("[[job]]\nname = \"a\"\ncommand = \"true\"\ncount = 0\n", "field `count`"),
        ];
        for (file, want) in cases {
            let out = b.submit(shared.path(), file, false).await?;
            let err = String::from_utf8_lossy(&out.stderr);
            ensure!(out.status.code() == Some(2), "{file:?}: {}", text(&out));
            ensure!(err.contains(want), "{file:?}: error lacks {want:?}: {err}");
        }
        let list = b.client().list().await?;
        ensure!(list.is_empty(), "nothing submitted: {list:?}");
        for args in [["status", "nope"], ["cancel", "nope"], ["logs", "nope"]] {
            let out = b.cli(&args).await?;
            ensure!(out.status.code() == Some(2), "{args:?}: {}", text(&out));
            ensure!(
                String::from_utf8_lossy(&out.stderr).contains("unknown job \"nope\""),
                "{args:?}: {}",
                text(&out)
            );
        }
        // Without the framework's API token (a task on this machine can
        // reach the port, not the 0600 file): 401 and nothing submitted;
        // `/health` stays open.
        let token_file = mezzo_sdk::api_token::path_in(&b.state_dir);
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&token_file)?.permissions());
        ensure!(mode & 0o777 == 0o600, "api-token mode {mode:o}");
        let http = reqwest::Client::new();
        let url = |p: &str| format!("http://{}{p}", b.daemon.addr);
        let job = "[[job]]\nname = \"sneaky\"\ncommand = \"true\"\n";
        for (req, what) in [
            (http.get(url("/v1/jobs")), "list, no token"),
            (http.post(url("/v1/jobs")).body(job), "submit, no token"),
            (http.post(url("/v1/jobs")).bearer_auth("0".repeat(64)).body(job), "submit, a wrong token"),
            (http.post(url("/v1/jobs/fine/cancel")).bearer_auth(""), "cancel, an empty token"),
        ] {
            let r = req.send().await?;
            ensure!(r.status() == reqwest::StatusCode::UNAUTHORIZED, "{what}: {}", r.status());
            ensure!(r.text().await?.contains("API token"), "{what}: the answer names the token");
        }
        ensure!(http.get(url("/health")).send().await?.status().is_success(), "/health needs no token");
        ensure!(b.client().list().await?.is_empty(), "nothing submitted without the token");
        let out = tokio::process::Command::new(mezzo_tests::mezzo_bin())
            .args(["batch", "--addr", &b.daemon.addr, "--token-file"])
            .arg(shared.path().join("no-such-token"))
            .arg("list")
            .output()
            .await?;
        ensure!(!out.status.success(), "the CLI without a token: {}", text(&out));
        ensure!(String::from_utf8_lossy(&out.stderr).contains("API token"), "{}", text(&out));
        // The framework still works after all that.
        let out = b.submit(shared.path(), "[[job]]\nname = \"fine\"\ncommand = \"echo fine\"\n", true).await?;
        ensure!(out.status.success(), "{}", text(&out));
        let logs = b.cli(&["logs", "fine"]).await?;
        ensure!(String::from_utf8_lossy(&logs.stdout).contains("fine"), "{}", text(&logs));
        Ok(())
    }
    .await;
    if result.is_err() {
        bail!("{:?}\n{}", result.err(), c.logs());
    }
    Ok(())
}

/// Three masters; the leader is SIGKILLed while a job runs. The batch
/// framework follows the new leader: no task runs twice, none is lost,
/// and the job succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_failover_mid_job_loses_and_reruns_nothing() -> Result<()> {
    let mut c = Cluster::start(ClusterSpec {
        masters: 3,
        ..Default::default()
    })
    .await?;
    let shared = shared_dir()?;
    let d = shared.path().display().to_string();
    let result = async {
        let b = Batch::start(&c).await?;
        let file = format!(
            "[[job]]\nname = \"steady\"\ncount = 6\ncommand = \"echo run >> {d}/runs-$MEZZO_TASK_INDEX; if [ $MEZZO_TASK_INDEX -ge 2 ]; then sleep 5; fi\"\n"
        );
        let out = b.submit(shared.path(), &file, false).await?;
        ensure!(out.status.success(), "{}", text(&out));
        b.wait_job("steady", "2 succeeded, 4 running", |s| {
            s.summary.counts.succeeded == 2 && s.summary.counts.running == 4
        })
        .await?;
        let leader = c.wait_leader().await?;
        c.masters[leader].kill().await;
        c.wait_leader().await.context("no new leader")?;
        c.restart_master(leader).await?;
        b.each_ran_once("steady", 6, shared.path()).await
    }
    .await;
    result.with_context(|| format!("{}\n--- batch framework ---\n{}", c.logs(), batch_logs(&c)))
}

/// Issue 16, DESIGN.md "Tasks" (DROPPED means the process never started)
/// and "Agent recovery": an agent SIGKILLed while tasks are being launched
/// to it, and started again. What it had not started is reported DROPPED
/// (by its recovery, or by the master for launches it never received) and
/// launched again without spending an attempt: a job with `retries = 0`
/// succeeds, and by the tasks' own records every index ran exactly once.
/// A failpoint (debug builds) holds each launch on agent 0 for 300 ms
/// between its checkpoint and its container, so the kill lands there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_launch_drops_and_relaunches_never_fails() -> Result<()> {
    let mut c = Cluster::start(ClusterSpec::default()).await?;
    let shared = shared_dir()?;
    let d = shared.path().display().to_string();
    let result = async {
        c.agents[0]
            .env
            .push(("MEZZO_FAILPOINT".into(), "before_launch:300".into()));
        c.agents[0].kill().await;
        c.restart_agent(0).await?;
        c.wait_agent(0, "registered again", |s| s["master"].is_string()).await?;
        let b = Batch::start(&c).await?;
        let n = 200;
        let file = format!(
            "[[job]]\nname = \"array\"\ncount = {n}\nretries = 0\ncommand = \"echo run >> {d}/runs-$MEZZO_TASK_INDEX; sleep 1\"\n"
        );
        let out = b.submit(shared.path(), &file, false).await?;
        ensure!(out.status.success(), "{}", text(&out));
        let launching = |s: &serde_json::Value| {
            s["tasks"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["state"] == "TASK_STARTING"))
        };
        c.wait_agent(0, "a task being launched", launching).await?;
        c.agents[0].kill().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.restart_agent(0).await?;
        b.each_ran_once("array", n, shared.path()).await?;
        let st = b.client().status("array", false, None).await?;
        eprintln!("counts after the agent's restart: {:?}", st.summary.counts);
        ensure!(
            st.summary.counts.dropped_relaunched > 0,
            "no launch was dropped, so the test proved nothing: {st:?}"
        );
        Ok(())
    }
    .await;
    let agent0 = std::fs::read_to_string(c.dir.path().join("agent0.restart.log")).unwrap_or_default();
    result.with_context(|| {
        format!(
            "{}\n--- agent0 restarted ---\n{agent0}\n--- batch framework ---\n{}",
            c.logs(),
            batch_logs(&c)
        )
    })
}

/// Plan A7 of issue 16: the leader and the batch framework are SIGKILLed
/// together, and the agent running the job's tasks is slow to re-register
/// with the new leader (a failpoint holds each of its attempts 4 s, within
/// the agent timeout of 20 s) while another agent has room. The restarted framework must not
/// launch those tasks again there: it launches only once the implicit
/// reconciliation has ended, which waits for the slow agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_restarted_during_a_failover_reruns_nothing() -> Result<()> {
    let mut spec = ClusterSpec {
        masters: 3,
        ..Default::default()
    };
    spec.master_args = vec![
        "--agent-timeout".into(),
        "20s".into(),
        "--heartbeat-interval".into(),
        "500ms".into(),
    ];
    let mut c = Cluster::start(spec).await?;
    let shared = shared_dir()?;
    let d = shared.path().display().to_string();
    let result = async {
        // The tasks all go to agent 1, the slow one: agent 0 is away.
        c.agents[0].kill().await;
        c.agents[1]
            .env
            .push(("MEZZO_FAILPOINT".into(), "before_reregister:4000".into()));
        c.agents[1].kill().await;
        c.restart_agent(1).await?;
        // Slow: a follower tried first costs another hold.
        let registered = |s: &serde_json::Value| s["master"].is_string();
        mezzo_tests::wait_for("agent 1 back", Duration::from_secs(30), || c.agent_state(1), registered).await?;
        let mut b = Batch::start(&c).await?;
        let file = format!(
            "[[job]]\nname = \"long\"\ncount = 2\ncommand = \"echo run >> {d}/runs-$MEZZO_TASK_INDEX; sleep 12\"\n"
        );
        let out = b.submit(shared.path(), &file, false).await?;
        ensure!(out.status.success(), "{}", text(&out));
        b.wait_job("long", "2 running", |s| s.summary.counts.running == 2)
            .await?;
        c.restart_agent(0).await?;
        c.wait_agent(0, "registered again", |s| s["master"].is_string()).await?;
        let leader = c.wait_leader().await?;
        c.masters[leader].kill().await;
        b.daemon.kill().await;
        c.wait_leader().await.context("no new leader")?;
        b.restart().await?;
        c.restart_master(leader).await?;
        b.each_ran_once("long", 2, shared.path()).await
    }
    .await;
    result.with_context(|| format!("{}\n--- batch framework ---\n{}", c.logs(), batch_logs(&c)))
}

/// "Why is my work not running?": while tasks of an array wait for room,
/// the batch framework reports them to the masters with the reason; the
/// report is cleared once everything found room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_tasks_are_reported_as_pending_with_their_reason() -> Result<()> {
    let c = Cluster::start(ClusterSpec::default()).await?;
    let b = Batch::start(&c).await?;
    let dir = shared_dir()?;
    // 8 cpus per agent: four 4-cpu tasks run at once, the other two wait.
    let job = "[[job]]\nname = \"big\"\ncommand = \"sleep 2\"\ncount = 6\ncpus = 4\n";
    let out = b.submit(dir.path(), job, false).await?;
    ensure!(out.status.success(), "{}", text(&out));
    let fid = b.framework_id()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let reason = loop {
        let v = c.get(c.master_addr(), &format!("/api/v1/why/framework/{fid}")).await?;
        if let Some(r) = v["pending"]["tasks"][0]["reason"].as_str() {
            break r.to_owned();
        }
        ensure!(Instant::now() < deadline, "no pending report: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(
        reason.contains("job big") && reason.contains("wait for room"),
        "{reason}"
    );
    b.wait_job("big", "succeeded", |s| s.summary.state == JobState::Succeeded)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = c.get(c.master_addr(), &format!("/api/v1/why/framework/{fid}")).await?;
        let n = v["pending"]["tasks"].as_array().map_or(0, Vec::len);
        if n == 0 {
            break;
        }
        ensure!(Instant::now() < deadline, "the pending report was never cleared: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
