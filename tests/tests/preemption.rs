//! Issue 19: priority and preemption on a real cluster. A low-priority
//! batch job fills the only agent; a framework of another role reports a
//! task of a higher priority it cannot place; the leader preempts one
//! low-priority task for it; the batch framework launches the preempted
//! index again without spending an attempt, and every index finishes
//! exactly once.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mezzo_batch::job::JobState;
use mezzo_sdk::{Event, Resources, Scheduler, TaskBuilder, TaskState, pending_task, task_state};
use mezzo_tests::batch::{Batch, lines, shared_dir};
use mezzo_tests::{Cluster, ClusterSpec, fw};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_high_priority_task_preempts_a_low_priority_one_which_still_runs_once() -> Result<()> {
    let mut spec = ClusterSpec {
        agents: 1,
        agent_resources: "cpus:2;mem:2048;disk:2048;ports:[31000-31099]".into(),
        ..Default::default()
    };
    spec.master_args
        .extend(["--preemption-delay", "1s", "--preemption-grace", "1s"].map(String::from));
    let c = Cluster::start(spec).await?;
    let b = Batch::start(&c).await?;
    let shared = shared_dir()?;
    let result = async {
        let d = shared.path().display();
        let job = format!(
            "[[job]]\nname = \"low\"\ncount = 4\ncpus = 1\nmem = 32\n\
             command = \"echo run >> {d}/runs-$MEZZO_TASK_INDEX; sleep 4; echo done >> {d}/done-$MEZZO_TASK_INDEX\"\n"
        );
        let out = b.submit(shared.path(), &job, false).await?;
        ensure!(out.status.success(), "submit: {out:?}");
        b.wait_job("low", "2 running", |s| s.summary.counts.running == 2)
            .await?;

        // A framework of another role, with a task of priority 10 that
        // finds no room: it says so, with its needs.
        let mut cfg = c.sdk_config("urgent");
        cfg.framework.roles = vec!["high".into()];
        let (s, events) = Scheduler::start(cfg);
        let mut ev = fw::Inbox::new(events);
        ev.next(Duration::from_secs(10), |e| {
            matches!(e, Event::Subscribed { .. }).then_some(())
        })
        .await?;
        let res = Resources::parse("cpus:1;mem:32")?;
        let mut waiting = pending_task("urgent", "the cluster is full", Some(&res));
        waiting.priority = 10;
        s.report_pending(vec![waiting]).await?;
        // Offers of what is left (memory, no cpu) are declined until the
        // preempted task's cpu comes.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let o = loop {
            ensure!(tokio::time::Instant::now() < deadline, "no offer with a cpu");
            let o = ev.offer().await?;
            let cpus: f64 = o.resources.iter().filter(|r| r.name == "cpus").map(|r| r.scalar).sum();
            if cpus >= 1.0 {
                break o;
            }
            s.decline(vec![o.offer_id], Some(0.5)).await?;
        };
        let task = TaskBuilder::new("urgent")
            .resources(&res)
            .shell("echo urgent")
            .priority(10)
            .build();
        s.accept(vec![o.offer_id], vec![task], None).await?;
        s.report_pending(Vec::new()).await?;
        let st = ev
            .update("urgent", Duration::from_secs(20), TaskState::is_terminal)
            .await?;
        ensure!(task_state(&st) == Some(TaskState::Finished), "{st:?}");
        // Done: an idle framework that held its offers would keep the batch
        // framework waiting for them to time out.
        s.teardown().await?;

        // One low-priority task was preempted, and said so. It moves to
        // the completed tasks once the batch framework acknowledges its
        // TASK_KILLED, which may come after the urgent task finished.
        let preempted_of = |state: &serde_json::Value| -> Vec<serde_json::Value> {
            state["completed_tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["reason"] == "REASON_PREEMPTED")
                .cloned()
                .collect()
        };
        let state = c
            .wait_master("the preempted task completed", |s| !preempted_of(s).is_empty())
            .await?;
        let preempted = preempted_of(&state);
        ensure!(
            preempted.len() == 1
                && preempted[0]["state"] == "TASK_KILLED"
                && preempted[0]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("preempted for task urgent")),
            "{preempted:?}"
        );

        // The low job ends with every index done once, no attempt spent.
        b.wait_job("low", "succeeded", |s| s.summary.state == JobState::Succeeded)
            .await?;
        for i in 0..4 {
            let done = lines(&shared.path().join(format!("done-{i}")));
            ensure!(done == 1, "index {i} finished {done} times");
        }
        let restarted = (0..4)
            .filter(|i| lines(&shared.path().join(format!("runs-{i}"))) == 2)
            .count();
        ensure!(restarted == 1, "{restarted} indexes started twice");
        let st = b.client().status("low", false, None).await?;
        ensure!(st.summary.counts.retried == 0, "{st:?}");
        Ok(())
    }
    .await;
    result.with_context(|| format!("{}\n--- batch ---\n{}", c.logs(), b.logs()))
}
