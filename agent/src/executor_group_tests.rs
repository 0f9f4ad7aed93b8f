//! Task groups in the agent (`TaskInfo.group`, Mesos' LAUNCH_GROUP): a
//! custom executor is handed a group in one LAUNCH_GROUP once every task
//! of it has come, again whole when it resubscribes without it (also
//! after a restart), and a group still waiting for it is killed whole; a
//! group of commands has its running tasks killed when one fails.

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
    let mut third = subscribe_as(&h, &token, held).await?;
    assert!(
        !third.until("LAUNCH", 1, Duration::from_millis(500)).await,
        "{}",
        third.text
    );
    Ok(())
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
