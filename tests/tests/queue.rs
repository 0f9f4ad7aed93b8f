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

/// The SDK's tutorial, word for word (`framework-sdk/examples/twenty.rs`,
/// shown in the crate's rustdoc).
#[allow(dead_code)] // its `main`, for `cargo run --example twenty`
mod tutorial {
    include!("../../framework-sdk/examples/twenty.rs");

    pub(crate) async fn run(config: SchedulerConfig) -> Result<(), String> {
        twenty(config).await.map_err(|e| e.to_string())
    }
}

/// The tutorial against a real cluster of two agents: twenty tasks end
/// (task 7 failed once and succeeded on its retry), its teardown returns
/// once the master has removed the framework, and nothing of it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorial_runs_its_twenty_tasks_and_tears_down() -> Result<()> {
    let c = Cluster::start(ClusterSpec::default()).await?;
    let result = async {
        tokio::time::timeout(Duration::from_secs(120), tutorial::run(c.sdk_config("twenty")))
            .await
            .context("the tutorial did not end")?
            .map_err(anyhow::Error::msg)?;
        let page = c.get(&c.masters[0].addr, "/api/v1/frameworks?limit=100").await?;
        let fw = page["items"]
            .as_array()
            .context("items")?
            .iter()
            .find(|f| f["name"] == "twenty")
            .cloned()
            .with_context(|| format!("no framework twenty: {page}"))?;
        ensure!(fw["removed_at"].as_f64().is_some(), "not removed at teardown: {fw}");
        let id = fw["id"].as_str().context("id")?;
        let tasks = c
            .get(&c.masters[0].addr, &format!("/api/v1/tasks?framework={id}&limit=100"))
            .await?;
        let mut ends: Vec<(String, String)> = tasks["items"]
            .as_array()
            .context("items")?
            .iter()
            .map(|t| {
                (
                    t["id"].as_str().unwrap_or_default().to_owned(),
                    t["state"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        ends.sort();
        let finished = ends.iter().filter(|(_, s)| s == "TASK_FINISHED").count();
        ensure!(finished == 20, "{ends:?}");
        ensure!(
            ends.contains(&("twenty-7-1".to_owned(), "TASK_FAILED".to_owned()))
                && ends.contains(&("twenty-7-2".to_owned(), "TASK_FINISHED".to_owned())),
            "{ends:?}"
        );
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}
