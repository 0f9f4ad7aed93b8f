//! Issue 16, DESIGN.md "Tasks": a task never started is reported
//! TASK_DROPPED, and never starts later. An agent is SIGKILLed in each
//! window of a launch, held open by a failpoint (debug builds), and
//! restarted: the framework gets DROPPED, and by the task's own record
//! (a file outside the cluster) it never ran.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mezzo_sdk::{TaskState, task_state, v1};
use mezzo_tests::{Cluster, ClusterSpec, fw};

/// How long each failpoint holds a launch.
const HOLD_MS: u64 = 2500;

fn shared_dir() -> Result<tempfile::TempDir> {
    mezzo_tests::shared_dir("mezzo-exactly-once-")
}

/// Starts a one-agent cluster whose agent holds launches at `failpoint`,
/// launches a task that records its run in `shared`, SIGKILLs the agent
/// once the task has reached `kill_at`, restarts it, and returns the
/// task's terminal update. Checks that the task never ran, even after the
/// hold is over.
async fn killed_in_window(failpoint: &str, kill_at: TaskState) -> Result<v1::TaskStatus> {
    let mut c = Cluster::start(ClusterSpec {
        agents: 1,
        ..Default::default()
    })
    .await?;
    let shared = shared_dir()?;
    let result = async {
        c.agents[0]
            .env
            .push(("MEZZO_FAILPOINT".into(), format!("{failpoint}:{HOLD_MS}")));
        c.agents[0].kill().await;
        c.restart_agent(0).await?;
        c.wait_agent(0, "registered again", |s| s["master"].is_string()).await?;
        let (s, mut ev, _) = fw::subscribe(&c, "exactly-once", None).await?;
        let o = ev.offer().await?;
        let runs = shared.path().join("runs");
        let task = fw::shell_task("t", &format!("echo ran >> {}", runs.display()));
        s.accept(vec![o.offer_id], vec![task], None).await?;
        ev.update("t", Duration::from_secs(10), |st| st == kill_at).await?;
        // Well inside the hold: past the step just before it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.agents[0].kill().await;
        c.restart_agent(0).await?;
        let end = ev.update("t", Duration::from_secs(20), TaskState::is_terminal).await?;
        // Whatever was held resumes by now; it must not start the task.
        tokio::time::sleep(Duration::from_millis(HOLD_MS + 500)).await;
        ensure!(!ran(&runs), "the task ran after it was reported {end:?}");
        c.wait_agent(0, "no pending updates", |s| s["pending_updates"] == 0)
            .await?;
        Ok(end)
    }
    .await;
    let restarted = std::fs::read_to_string(c.dir.path().join("agent0.restart.log")).unwrap_or_default();
    result.with_context(|| format!("{}\n--- agent0 restarted ---\n{restarted}", c.logs()))
}

fn ran(runs: &Path) -> bool {
    std::fs::read_to_string(runs).is_ok_and(|s| !s.is_empty())
}

/// DROPPED for `reason`, said in words.
fn check_dropped(st: &v1::TaskStatus, reason: v1::StatusReason, words: &str) -> Result<()> {
    ensure!(task_state(st) == Some(TaskState::Dropped), "{st:?}");
    ensure!(st.reason == reason as i32, "{st:?}");
    ensure!(st.message.contains(words), "{st:?}");
    Ok(())
}

/// STARTING sent (and acknowledged, so the agent's journal has nothing of
/// the task), the agent dies before the task's checkpoint: the restarted
/// agent does not know the task, and the master, told the agent's list is
/// complete, drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_dropped_before_its_checkpoint_is_reported_dropped() -> Result<()> {
    let st = killed_in_window("before_checkpoint", TaskState::Starting).await?;
    check_dropped(&st, v1::StatusReason::ReasonAgentReregistered, "never started")
}

/// Checkpointed, the agent dies before it makes the container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_dropped_after_its_checkpoint_is_reported_dropped() -> Result<()> {
    let st = killed_in_window("before_launch", TaskState::Starting).await?;
    check_dropped(&st, v1::StatusReason::ReasonAgentRestarted, "before the task started")
}

/// The container is made and its init is about to start the task when
/// the agent dies: the restarted agent takes the launch claim first, so
/// the init, resuming, never starts the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_paused_before_exec_loses_the_claim_to_recovery() -> Result<()> {
    let st = killed_in_window("before_claim", TaskState::Running).await?;
    check_dropped(&st, v1::StatusReason::ReasonAgentRestarted, "before the task started")
}
