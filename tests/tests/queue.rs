//! The SDK's work queue against a real cluster (issue 20): 1,000 items
//! whose tasks fail at random, retried within their policy, while an agent
//! is SIGKILLed and restarted midway. Every item gets exactly one outcome,
//! none takes more attempts than allowed, and nothing of the queue is left
//! running.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mezzo_sdk::offers::{Constraint, TaskRequest};
use mezzo_sdk::{Change, Event, Resources, RetryPolicy, WorkQueue};
use mezzo_tests::{Cluster, ClusterSpec, fw};
use tokio::time::Instant;

const ITEMS: u64 = 1000;
const ATTEMPTS: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_items_with_failures_and_a_lost_agent_end_exactly_once() -> Result<()> {
    let mut c = Cluster::start(ClusterSpec::default()).await?;
    let result = async {
        let (s, mut ev, _fid) = fw::subscribe(&c, "queue", None).await?;
        let policy = RetryPolicy {
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            ..RetryPolicy::attempts(ATTEMPTS)
        };
        let mut q = WorkQueue::new("w", policy).constraints(vec![Constraint::max_per_agent(40)?]);
        let need = TaskRequest::new(&Resources::parse("cpus:0.05;mem:8")?);
        for i in 0..ITEMS {
            q.submit(i, need.clone());
        }
        // About one attempt in four fails.
        let script = "r=$(od -An -N1 -tu1 /dev/urandom); [ $r -ge 64 ]";
        let mut outcomes: BTreeMap<u64, mezzo_sdk::Outcome<u64>> = BTreeMap::new();
        let mut killed = false;
        let deadline = Instant::now() + Duration::from_secs(240);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        while !q.is_empty() {
            ensure!(Instant::now() < deadline, "{} items without an outcome", q.len());
            tokio::select! {
                e = ev.any(Duration::from_secs(30)) => match e? {
                    Event::Offers(offers) => {
                        q.offers(&s, offers, |_, t| t.shell(script), Instant::now()).await;
                    }
                    Event::Update(status) => {
                        if let Some(o) = q.update(&status, Instant::now()).and_then(Change::ended) {
                            ensure!(o.attempts <= ATTEMPTS, "{o:?}");
                            ensure!(outcomes.insert(o.id, o).is_none(), "a second outcome");
                        }
                    }
                    _ => {}
                },
                _ = tick.tick() => q.tick(&s, Instant::now()).await,
            }
            // Midway, an agent dies with its tasks and comes back.
            if !killed && outcomes.len() as u64 >= ITEMS / 3 {
                killed = true;
                c.agents[0].kill().await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                c.restart_agent(0).await?;
            }
        }
        ensure!(killed, "the agent was never killed");
        ensure!(outcomes.len() as u64 == ITEMS, "{} outcomes", outcomes.len());
        ensure!(outcomes.keys().copied().eq(0..ITEMS), "an item without its outcome");
        let ok = outcomes.values().filter(|o| o.succeeded()).count();
        let retried = outcomes.values().filter(|o| o.attempts > 1).count();
        ensure!(ok > (ITEMS as usize) * 9 / 10, "{ok} succeeded");
        ensure!(retried > 0, "nothing was retried");
        println!("{ok} of {ITEMS} succeeded, {retried} retried");
        // Nothing of the queue runs any more.
        let st = c.master_state().await?;
        let live = st["tasks"]
            .as_array()
            .context("tasks")?
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING" || t["state"] == "TASK_STAGING")
            .count();
        ensure!(live == 0, "{live} tasks still live");
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}
