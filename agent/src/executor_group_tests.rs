//! Task groups in the agent (`TaskInfo.group`, Mesos' LAUNCH_GROUP): a
//! custom executor is handed a group in one LAUNCH_GROUP once every task
//! of it has come, again whole when it resubscribes without it (also
//! after a restart), and a group still waiting for it (or still gathered)
//! is killed whole; a group cut short by a crash is dropped after the
//! restart; a group of commands has its running tasks killed when one
//! fails, also when the failure is found after a restart.

use super::*;

/// `run`, as a task of the group of `ids`.
fn in_group(mut r: v1::RunTask, ids: &[&str]) -> v1::RunTask {
    if let Some(t) = r.task.as_mut() {
        t.group = Some(v1::TaskGroup {
            task_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        });
    }
    r
}

/// The tasks t-1 and t-2 of one group for executor ex-1, sent one after
/// the other as the master sends them.
async fn run_group(h: &Harness) -> TestResult {
    let exec = sleeping_executor("ex-1");
    let ids = ["t-1", "t-2"];
    h.table.run_task(in_group(run("t-1", &exec, b""), &ids)).await?;
    // Half a group starts nothing.
    assert!(h.table.executors().await?.is_empty(), "no executor for half a group");
    assert!(h.table.snapshot().await?.is_empty(), "half a group waits");
    h.table.run_task(in_group(run("t-2", &exec, b""), &ids)).await?;
    Ok(())
}

/// Subscribes ex-1 with `subscribe`: it is handed no task.
async fn subscribed_without_launch(h: &Harness, token: &str, subscribe: serde_json::Value) -> TestResult {
    let mut events = subscribe_as(h, token, subscribe).await?;
    assert!(
        !events.until("LAUNCH", 1, Duration::from_millis(500)).await,
        "{}",
        events.text
    );
    Ok(())
}

#[tokio::test]
async fn a_task_group_reaches_its_executor_in_one_launch_group_and_again_whole() -> TestResult {
    let h = harness(Duration::from_secs(30)).await?;
    run_group(&h).await?;
    let token = wait_token(&h, "ex-1").await?;
    let mut first = subscribe_as(&h, &token, serde_json::json!({})).await?;
    assert!(
        first.until("\"LAUNCH_GROUP\"", 1, Duration::from_secs(5)).await,
        "{}",
        first.text
    );
    let _ = first.until("\"t-2\"", 1, Duration::from_secs(1)).await;
    assert!(
        first.text.contains("\"task_group\":{\"tasks\":[") && first.text.contains("\"t-1\""),
        "{}",
        first.text
    );
    assert!(!first.text.contains("\"LAUNCH\""), "no single LAUNCH: {}", first.text);
    // It lost the group (no update, none listed): the group again, whole.
    let mut again = subscribe_as(&h, &token, serde_json::json!({})).await?;
    assert!(
        again.until("\"LAUNCH_GROUP\"", 1, Duration::from_secs(5)).await,
        "{}",
        again.text
    );
    assert!(!again.text.contains("\"LAUNCH\""), "{}", again.text);
    // It holds a task of the group: it has the group, nothing is sent.
    let held = serde_json::json!({"unacknowledged_tasks": [unacknowledged_task("t-2")]});
    subscribed_without_launch(&h, &token, held).await
}

#[tokio::test]
async fn a_group_its_executor_never_took_is_launched_again_whole_after_a_restart() -> TestResult {
    let containers = Recording {
        adopt: true,
        ..Default::default()
    };
    let h = harness_in(tempfile::tempdir()?, Duration::from_secs(30), containers).await?;
    run_group(&h).await?;
    wait_running(&h).await?;
    let h = h.restart().await?;
    assert_eq!(h.table.snapshot().await?.len(), 2);
    let token = wait_token(&h, "ex-1").await?;
    let mut events = subscribe_as(&h, &token, serde_json::json!({})).await?;
    assert!(
        events.until("\"LAUNCH_GROUP\"", 1, Duration::from_secs(5)).await,
        "{}",
        events.text
    );
    assert!(!events.text.contains("\"LAUNCH\""), "{}", events.text);
    Ok(())
}

#[tokio::test]
async fn a_kill_of_a_task_of_a_group_still_waiting_for_its_executor_kills_the_group() -> TestResult {
    let mut h = harness(Duration::from_secs(30)).await?;
    run_group(&h).await?;
    wait_token(&h, "ex-1").await?;
    let kill = crate::task::supervisor::Kill::default();
    h.table.kill(FW.into(), "t-1".into(), kill).await?;
    let killed = h.update("t-1", v1::TaskState::TaskKilled).await?;
    assert_eq!(killed.reason, v1::StatusReason::ReasonTaskKilledDuringLaunch as i32);
    let sibling = h.update("t-2", v1::TaskState::TaskKilled).await?;
    assert!(sibling.message.contains("task group: task t-1"), "{}", sibling.message);
    Ok(())
}

/// A task of the group `ids` that runs `script` as a command.
fn command_in_group(task_id: &str, script: &str, ids: &[&str]) -> v1::RunTask {
    let mut r = run(task_id, &sleeping_executor("unused"), b"");
    if let Some(t) = r.task.as_mut() {
        t.executor = None;
        t.command = Some(v1::CommandInfo {
            value: script.into(),
            shell: true,
            ..Default::default()
        });
    }
    in_group(r, ids)
}

/// Acknowledges `task`'s updates (each is sent once the one before it is
/// acknowledged) until one in `state`, which it returns.
async fn reach(
    h: &mut Harness,
    task: &str,
    state: v1::TaskState,
) -> Result<v1::TaskStatus, Box<dyn std::error::Error>> {
    loop {
        let s = h
            .next(&format!("{task} {state:?}"), |m| match m {
                Message::StatusUpdate(u) => u.status.clone().filter(|s| s.task_id == task),
                _ => None,
            })
            .await?;
        h.ack(&s).await?;
        if s.state == state as i32 {
            return Ok(s);
        }
    }
}

#[tokio::test]
async fn when_a_command_of_a_group_fails_the_others_are_killed_not_when_one_finishes() -> TestResult {
    let mut h = harness(Duration::from_secs(30)).await?;
    let ids = ["ok", "fails", "sleeps", "late"];
    h.table.run_task(command_in_group("ok", "exit 0", &ids)).await?;
    h.table.run_task(command_in_group("sleeps", "sleep 60", &ids)).await?;
    reach(&mut h, "ok", v1::TaskState::TaskFinished).await?;
    reach(&mut h, "sleeps", v1::TaskState::TaskRunning).await?;
    // A finish ends nothing else: the sleeper still runs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sleeps = h
        .table
        .snapshot()
        .await?
        .into_iter()
        .find(|v| v.key.task_id.as_str() == "sleeps");
    assert_eq!(sleeps.map(|v| v.state), Some(mezzo_proto::state::TaskState::Running));
    let started = std::time::Instant::now();
    h.table.run_task(command_in_group("fails", "exit 1", &ids)).await?;
    reach(&mut h, "fails", v1::TaskState::TaskFailed).await?;
    let killed = reach(&mut h, "sleeps", v1::TaskState::TaskKilled).await?;
    assert!(
        killed.message.contains("task fails ended TASK_FAILED"),
        "{}",
        killed.message
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "killed at once, not after its sleep"
    );
    Ok(())
}

#[tokio::test]
async fn half_a_group_is_dropped_when_a_master_registers_the_agent_again() -> TestResult {
    let h = harness(Duration::from_secs(30)).await?;
    let exec = sleeping_executor("ex-1");
    let ids = ["t-1", "t-2"];
    h.table.run_task(in_group(run("t-1", &exec, b""), &ids)).await?;
    // The connection that carried t-1 ended before t-2: the master,
    // not finding t-1 in the re-registration, reports it never received.
    h.table.master_registered().await?;
    h.table.run_task(in_group(run("t-2", &exec, b""), &ids)).await?;
    assert!(h.table.executors().await?.is_empty(), "no executor for half a group");
    assert!(h.table.snapshot().await?.is_empty(), "nothing launched");
    Ok(())
}

/// An agent whose containers are found again after a restart.
async fn adopting_harness() -> Result<Harness, Box<dyn std::error::Error>> {
    let containers = Recording {
        adopt: true,
        ..Default::default()
    };
    harness_in(tempfile::tempdir()?, Duration::from_secs(30), containers).await
}

/// Where `task`'s checkpoint and markers are.
fn task_dir(h: &Harness, task: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
    Ok(crate::paths::task_meta_dir(
        &h.runtime_dir,
        &mezzo_proto::ids::FrameworkId::parse(FW)?,
        &mezzo_proto::ids::TaskId::parse(task)?,
    ))
}

#[tokio::test]
async fn a_group_checkpointed_in_part_before_a_crash_is_dropped_after_the_restart() -> TestResult {
    let h = adopting_harness().await?;
    let exec = sleeping_executor("ex-1");
    let ids = ["t-1", "t-2", "t-3"];
    for id in ids {
        h.table.run_task(in_group(run(id, &exec, b""), &ids)).await?;
    }
    wait_running(&h).await?;
    // The agent died after writing t-1's and t-2's checkpoints: nothing
    // of t-3, nor the mark that the group was written whole.
    std::fs::remove_dir_all(task_dir(&h, "t-3")?)?;
    for id in ["t-1", "t-2"] {
        let _ = std::fs::remove_file(task_dir(&h, id)?.join(crate::paths::GROUP_WHOLE));
    }
    let mut h = h.restart().await?;
    for id in ["t-1", "t-2"] {
        let dropped = h.update(id, v1::TaskState::TaskDropped).await?;
        assert!(dropped.message.contains("never arrived whole"), "{}", dropped.message);
    }
    // Its executor is not handed half a group.
    let token = wait_token(&h, "ex-1").await?;
    subscribed_without_launch(&h, &token, serde_json::json!({})).await
}

#[tokio::test]
async fn a_group_written_whole_is_not_dropped_for_a_task_forgotten_since() -> TestResult {
    let h = adopting_harness().await?;
    let exec = sleeping_executor("ex-1");
    let ids = ["t-1", "t-2"];
    for id in ids {
        h.table.run_task(in_group(run(id, &exec, b""), &ids)).await?;
    }
    wait_running(&h).await?;
    // t-2 ended and was forgotten: its checkpoint went, t-1's mark stays.
    std::fs::remove_dir_all(task_dir(&h, "t-2")?)?;
    // Recovered before the agent serves anything: t-1 still waits for
    // its executor, which has the group.
    let h = h.restart().await?;
    let views = h.table.snapshot().await?;
    let states: Vec<_> = views.iter().map(|v| (v.key.task_id.to_string(), v.state)).collect();
    assert_eq!(states, vec![("t-1".to_owned(), mezzo_proto::state::TaskState::Staging)]);
    Ok(())
}

/// The process group of `task`'s container.
fn pgid(h: &Harness, task: &str) -> Result<i32, Box<dyn std::error::Error>> {
    Ok(std::fs::read_to_string(task_dir(h, task)?.join("posix.pgid"))?
        .trim()
        .parse()?)
}

/// Two commands of one group, both running.
async fn two_running_commands(h: &mut Harness) -> TestResult {
    let ids = ["a", "b"];
    h.table.run_task(command_in_group("a", "sleep 60", &ids)).await?;
    h.table.run_task(command_in_group("b", "sleep 60", &ids)).await?;
    reach(h, "a", v1::TaskState::TaskRunning).await?;
    reach(h, "b", v1::TaskState::TaskRunning).await?;
    Ok(())
}

/// a's end in `state` for `reason` is journaled, then the agent dies
/// before it kills b: the restarted agent kills b, told of a's end.
async fn journaled_end_kills_the_group_after_a_restart(
    state: mezzo_proto::state::TaskState,
    reason: v1::StatusReason,
) -> TestResult {
    let mut h = adopting_harness().await?;
    two_running_commands(&mut h).await?;
    let key = crate::key::TaskKey::parse(FW, "a")?;
    let ended = crate::task::agent_status(&key, "agent-1", state, reason, "it ended");
    h.status.update(key, ended).await?;
    // Sent once journaled.
    h.update("a", state.to_proto()).await?;
    let a = pgid(&h, "a")?;
    let mut h = h.restart().await?;
    let _ = killpg(Pid::from_raw(a), Signal::SIGKILL);
    let killed = reach(&mut h, "b", v1::TaskState::TaskKilled).await?;
    let told = format!("task a ended {}", state.name());
    assert!(killed.message.contains(&told), "{}", killed.message);
    Ok(())
}

#[tokio::test]
async fn a_failure_journaled_before_a_crash_kills_its_group_after_the_restart() -> TestResult {
    let failed = mezzo_proto::state::TaskState::Failed;
    journaled_end_kills_the_group_after_a_restart(failed, v1::StatusReason::ReasonCommandExited).await
}

#[tokio::test]
async fn a_limit_kill_journaled_before_a_crash_kills_its_group_after_the_restart() -> TestResult {
    let limit = v1::StatusReason::ReasonContainerLimitationMemory;
    journaled_end_kills_the_group_after_a_restart(mezzo_proto::state::TaskState::Killed, limit).await
}

#[tokio::test]
async fn a_task_of_a_group_lost_while_the_agent_was_down_kills_its_group() -> TestResult {
    let mut h = adopting_harness().await?;
    two_running_commands(&mut h).await?;
    let a = pgid(&h, "a")?;
    // Gone while the agent was down (and reaped: not found again).
    let mut h = h
        .restart_with(async move {
            let _ = killpg(Pid::from_raw(a), Signal::SIGKILL);
            for _ in 0..250 {
                if killpg(Pid::from_raw(a), None).is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await?;
    let killed = reach(&mut h, "b", v1::TaskState::TaskKilled).await?;
    assert!(killed.message.contains("task a ended"), "{}", killed.message);
    Ok(())
}

#[tokio::test]
async fn a_kill_of_a_task_waiting_for_its_group_drops_the_group() -> TestResult {
    let mut h = harness(Duration::from_secs(30)).await?;
    let exec = sleeping_executor("ex-1");
    let ids = ["t-1", "t-2", "t-3"];
    h.table.run_task(in_group(run("t-1", &exec, b""), &ids)).await?;
    h.table.run_task(in_group(run("t-2", &exec, b""), &ids)).await?;
    h.table.kill(FW.into(), "t-2".into(), Default::default()).await?;
    let killed = h.update("t-2", v1::TaskState::TaskKilled).await?;
    assert_eq!(killed.reason, v1::StatusReason::ReasonTaskKilledDuringLaunch as i32);
    let sibling = h.update("t-1", v1::TaskState::TaskKilled).await?;
    assert!(sibling.message.contains("task group: task t-2"), "{}", sibling.message);
    // The rest of the group, coming later, is killed too, never launched.
    h.table.run_task(in_group(run("t-3", &exec, b""), &ids)).await?;
    let late = h.update("t-3", v1::TaskState::TaskKilled).await?;
    assert!(late.message.contains("task group: task t-2"), "{}", late.message);
    assert!(h.table.executors().await?.is_empty(), "no executor for a killed group");
    Ok(())
}

#[tokio::test]
async fn a_group_the_agent_refuses_is_task_error_group_invalid_as_the_master_says() -> TestResult {
    let mut h = harness(Duration::from_secs(30)).await?;
    let exec = sleeping_executor("ex-1");
    // Its group does not list it.
    h.table
        .run_task(in_group(run("t-1", &exec, b""), &["t-2", "t-3"]))
        .await?;
    let refused = h.update("t-1", v1::TaskState::TaskError).await?;
    assert_eq!(refused.reason, v1::StatusReason::ReasonTaskGroupInvalid as i32);
    Ok(())
}
