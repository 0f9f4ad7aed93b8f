//! The spine, end to end: real master and agent processes, an SDK
//! framework, real tasks. Each test names the DESIGN.md contract it checks.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use mezzo_sdk::{Event, Resources, TaskBuilder, TaskState, task_state};
use mezzo_tests::{Cluster, ClusterSpec, fw};

/// DESIGN.md "The flow of one task" and "Status updates": 200 tasks on two
/// agents all finish, every update is acknowledged, and nothing is left
/// pending on the agents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tasks_finish_and_every_update_is_acknowledged() -> Result<()> {
    let c = Cluster::start(ClusterSpec::default()).await?;
    let result = async {
        let (s, mut ev, _) = fw::subscribe(&c, "two-hundred", None).await?;
        let need = Resources::parse("cpus:0.1;mem:16")?;
        let total = 200;
        let (mut launched, mut done) = (0, 0);
        let mut finals: HashMap<String, TaskState> = HashMap::new();
        let mut agents_used = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while done < total {
            ensure!(Instant::now() < deadline, "only {done} of {total} tasks ended");
            match ev.any(Duration::from_secs(20)).await? {
                Event::Offers(offers) => {
                    for o in offers {
                        let mut left = Resources::from_proto(&o.resources)?;
                        let mut tasks = Vec::new();
                        while launched < total && left.contains(&need) {
                            left = left.checked_sub(&need).context("fits")?;
                            tasks.push(
                                TaskBuilder::new(format!("t{launched}"))
                                    .resources(&need)
                                    .command("true", Vec::<String>::new())
                                    .build(),
                            );
                            launched += 1;
                        }
                        if tasks.is_empty() {
                            let refuse = if launched < total { 0.2 } else { 60.0 };
                            s.decline(vec![o.offer_id], Some(refuse)).await?;
                        } else {
                            agents_used.insert(o.agent_id.clone());
                            s.accept(vec![o.offer_id], tasks, None).await?;
                        }
                    }
                }
                Event::Update(st) => {
                    let state = task_state(&st).context("state")?;
                    if state.is_terminal() && finals.insert(st.task_id.clone(), state).is_none() {
                        done += 1;
                    }
                }
                _ => {}
            }
        }
        ensure!(
            finals.values().all(|s| *s == TaskState::Finished),
            "not all finished: {finals:?}"
        );
        ensure!(agents_used.len() == 2, "tasks ran on {} agents", agents_used.len());
        // Acknowledgements flow back: the agents forget every update.
        for i in 0..2 {
            c.wait_agent(i, "no pending updates", |s| s["pending_updates"] == 0)
                .await?;
        }
        let st = c
            .wait_master("all tasks completed", |s| {
                s["tasks"].as_array().is_some_and(|t| t.is_empty())
            })
            .await?;
        let completed = st["completed_tasks"].as_array().context("completed")?;
        let ids: HashSet<&str> = completed.iter().filter_map(|t| t["id"].as_str()).collect();
        ensure!(
            ids.len() == total && completed.len() == total,
            "{} completed, {} distinct",
            completed.len(),
            ids.len()
        );
        let launched_count = st["counters"]["tasks_launched"].as_u64();
        ensure!(
            launched_count == Some(total as u64),
            "master launched {launched_count:?}"
        );
        s.teardown().await?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// DESIGN.md "Tasks" and "Containers": exit status, kill, and the grace
/// period for a task that ignores SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_kill_and_grace_period() -> Result<()> {
    let c = Cluster::start(ClusterSpec {
        agents: 1,
        ..Default::default()
    })
    .await?;
    let result = async {
        let (s, mut ev, _) = fw::subscribe(&c, "kills", None).await?;
        let o = ev.offer().await?;
        let stubborn = TaskBuilder::new("stubborn")
            .resources(&Resources::parse("cpus:0.1;mem:16")?)
            .shell("trap '' TERM; echo ready; while true; do sleep 0.1; done")
            .kill_grace(Duration::from_millis(700))
            .build();
        let tasks = vec![
            fw::shell_task("three", "exit 3"),
            fw::shell_task("sleeper", "exec sleep 60"),
            stubborn,
        ];
        s.accept(vec![o.offer_id], tasks, None).await?;

        // Updates of the three tasks interleave: follow them all.
        let mut three = None;
        let mut running = HashSet::new();
        while three.is_none() || running.len() < 2 {
            let st = ev
                .next(Duration::from_secs(10), |e| match e {
                    Event::Update(st) => Some(st.clone()),
                    _ => None,
                })
                .await?;
            match (st.task_id.as_str(), task_state(&st)) {
                ("three", Some(s)) if s.is_terminal() => three = Some(st),
                (id, Some(TaskState::Running)) if id != "three" => {
                    running.insert(id.to_owned());
                }
                _ => {}
            }
        }
        let three = three.context("three")?;
        ensure!(task_state(&three) == Some(TaskState::Failed), "exit 3 gave {three:?}");
        ensure!(three.exit_code == Some(3), "exit code {:?}", three.exit_code);
        s.kill("sleeper", None).await?;
        let k = ev
            .update("sleeper", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        ensure!(task_state(&k) == Some(TaskState::Killed), "sleeper ended {k:?}");

        tokio::time::sleep(Duration::from_millis(300)).await; // let the trap be installed
        let t0 = Instant::now();
        s.kill("stubborn", None).await?;
        let k = ev
            .update("stubborn", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        let took = t0.elapsed();
        ensure!(task_state(&k) == Some(TaskState::Killed), "stubborn ended {k:?}");
        ensure!(
            took >= Duration::from_millis(600),
            "killed after {took:?}, before the grace period"
        );
        ensure!(took < Duration::from_secs(5), "kill took {took:?}");

        // Killing a finished task is refused with the reason.
        let err = s.kill("three", None).await.expect_err("kill of a failed task");
        ensure!(err.to_string().contains("already TASK_FAILED"), "{err}");
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// DESIGN.md "Offers" and "Leadership": an agent killed with SIGKILL loses
/// its offers at once and its tasks become UNREACHABLE within the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_rescinds_offers_and_tasks_become_unreachable() -> Result<()> {
    let mut c = Cluster::start(ClusterSpec {
        agents: 1,
        ..Default::default()
    })
    .await?;
    let result = async {
        let (s, mut ev, _) = fw::subscribe(&c, "lost-agent", None).await?;
        let o = ev.offer().await?;
        s.accept(vec![o.offer_id], vec![fw::shell_task("long", "exec sleep 120")], None)
            .await?;
        // The task runs, and the rest of the agent comes back as a new offer.
        let (mut running, mut o2) = (false, None);
        while !running || o2.is_none() {
            match ev.any(Duration::from_secs(10)).await? {
                Event::Update(st) if task_state(&st) == Some(TaskState::Running) => running = true,
                Event::Offers(o) => o2 = o.into_iter().next().or(o2),
                _ => {}
            }
        }
        let o2 = o2.context("offer")?;
        let t0 = Instant::now();
        c.agents[0].kill().await;
        let rescinded = ev
            .next(Duration::from_secs(5), |e| match e {
                Event::Rescind { offer_id } => Some(offer_id.clone()),
                _ => None,
            })
            .await?;
        ensure!(
            rescinded == o2.offer_id,
            "rescinded {rescinded}, expected {}",
            o2.offer_id
        );
        let st = ev
            .update("long", Duration::from_secs(10), |s| {
                matches!(s, TaskState::Unreachable | TaskState::Lost)
            })
            .await?;
        let took = t0.elapsed();
        ensure!(
            took < Duration::from_secs(6),
            "unreachable after {took:?} (timeout 3 s)"
        );
        ensure!(st.uuid.is_empty(), "a master-made update needs no ack");
        c.wait_master("agent unreachable", |s| s["agents"][0]["status"] == "unreachable")
            .await?;
        let err = s
            .accept(vec![o2.offer_id], vec![fw::shell_task("x", "true")], None)
            .await
            .expect_err("rescinded offer");
        ensure!(err.to_string().contains("unknown offer"), "{err}");
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// DESIGN.md "Status updates": a framework that disconnects and resumes
/// with its id keeps its task and receives the updates it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribed_framework_keeps_tasks_and_gets_missed_updates() -> Result<()> {
    let c = Cluster::start(ClusterSpec {
        agents: 1,
        ..Default::default()
    })
    .await?;
    let result = async {
        let (s, mut ev, fid) = fw::subscribe(&c, "failover", None).await?;
        let o = ev.offer().await?;
        s.accept(
            vec![o.offer_id],
            vec![fw::shell_task("brief", "sleep 1.5; exit 0")],
            None,
        )
        .await?;
        ev.update("brief", Duration::from_secs(10), |s| s == TaskState::Running)
            .await?;
        s.stop().await;
        drop(ev);
        c.wait_master("framework disconnected", |s| s["frameworks"][0]["connected"] == false)
            .await?;
        // The task ends while the framework is away.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let st = c.master_state().await?;
        ensure!(st["frameworks"][0]["id"] == fid.as_str(), "framework kept: {st}");

        let (s2, mut ev2, fid2) = fw::subscribe(&c, "failover", Some(fid.clone())).await?;
        ensure!(fid2 == fid, "resumed as {fid2}");
        // Reconciliation may answer first (without a uuid); the agent's own
        // updates, which need acknowledging, must arrive too.
        let fin = ev2
            .next(Duration::from_secs(10), |e| match e {
                Event::Update(st)
                    if st.task_id == "brief" && !st.uuid.is_empty() && task_state(st) == Some(TaskState::Finished) =>
                {
                    Some(st.clone())
                }
                _ => None,
            })
            .await?;
        ensure!(fin.exit_code == Some(0), "{fin:?}");
        c.wait_agent(0, "no pending updates", |s| s["pending_updates"] == 0)
            .await?;
        s2.teardown().await?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// Sandbox garbage collection (as Mesos's `--gc_delay`): a done task's
/// sandbox is removed once old enough; a running task's never is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_sandboxes_are_garbage_collected_and_live_ones_kept() -> Result<()> {
    let mut spec = ClusterSpec {
        agents: 1,
        ..Default::default()
    };
    spec.agent_args.extend(
        [
            "--sandbox-gc-delay",
            "1s",
            "--sandbox-gc-interval",
            "100ms",
            "--sandbox-gc-disk-headroom",
            "0",
        ]
        .map(String::from),
    );
    let c = Cluster::start(spec).await?;
    let result = async {
        let (s, mut ev, fid) = fw::subscribe(&c, "gc", None).await?;
        let o = ev.offer().await?;
        let tasks = vec![
            fw::shell_task("brief", "echo bye"),
            fw::shell_task("long", "exec sleep 60"),
        ];
        s.accept(vec![o.offer_id], tasks, None).await?;
        let fin = ev
            .update("brief", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        ensure!(task_state(&fin) == Some(TaskState::Finished), "{fin:?}");
        ev.update("long", Duration::from_secs(10), |s| s == TaskState::Running)
            .await?;
        let root = c.dir.path().join("agent0").join("sandboxes").join(&fid);
        let (brief, long) = (root.join("brief"), root.join("long"));
        ensure!(brief.join("stdout").exists() && long.is_dir(), "sandboxes made");
        let t0 = Instant::now();
        while brief.exists() {
            ensure!(
                t0.elapsed() < Duration::from_secs(15),
                "the done sandbox was never removed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Well past the delay, the running task's sandbox is still there.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        ensure!(long.is_dir(), "a running task's sandbox was removed");
        let m = c.text(&c.agents[0].addr, "/metrics").await?;
        ensure!(m.contains("mezzo_agent_sandboxes_removed_total 1"), "{m}");
        s.kill("long", None).await?;
        ev.update("long", Duration::from_secs(10), TaskState::is_terminal)
            .await?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}
