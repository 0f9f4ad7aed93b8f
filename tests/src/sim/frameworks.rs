//! Frameworks that keep simulated agents busy: each runs a number of
//! tasks through the SDK's `WorkQueue` (one attempt, lost tasks
//! requeued), notes every agent it was offered and every update that
//! says a task was in trouble (lost, unreachable, dropped, gone), then
//! tears down.

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Result, bail};
use mezzo_proto::resources::Resources;
use mezzo_sdk::offers::TaskRequest;
use mezzo_sdk::{Change, Event, RetryPolicy, Scheduler, SchedulerConfig, TaskState, WorkQueue, task_state};
use tokio::time::Instant;

/// A runtime for simulated frameworks, on threads of their own: a real
/// framework is a process of its own. On the simulated agents' runtime, at
/// 40,000 agents, a framework's connection waited seconds for its turn
/// and the SDK took the master for dead (no event for 3 s).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sim-frameworks")
            .enable_all()
            .build()
            .expect("a runtime for the simulated frameworks")
    })
}

/// What one framework saw.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Tasks that finished.
    pub finished: usize,
    /// Tasks that ended any other way.
    pub failed: usize,
    /// Updates that put a current task in trouble (launched again, or
    /// out of touch), by state name.
    pub troubled: BTreeMap<String, usize>,
    /// The first few of them: task, state, message.
    pub notes: Vec<String>,
    /// Every agent it was offered.
    pub offered: HashSet<String>,
}

/// Runs `tasks` tasks of `need` each; gives up after `limit`.
pub async fn run(config: SchedulerConfig, tasks: usize, need: &Resources, limit: Duration) -> Result<Report> {
    let name = config.framework.name.clone();
    let (scheduler, mut events) = Scheduler::start(config);
    let mut queue = WorkQueue::new(name.clone(), RetryPolicy::attempts(1));
    let request = TaskRequest::new(need);
    for i in 0..tasks {
        queue.submit(i, request.clone());
    }
    let mut report = Report::default();
    let deadline = Instant::now() + limit;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while !queue.is_empty() {
        if Instant::now() > deadline {
            bail!(
                "framework {name}: {} of {tasks} tasks without an end after {limit:?}",
                queue.len()
            );
        }
        tokio::select! {
            event = events.next() => match event {
                Some(Event::Offers(offers)) => {
                    report.offered.extend(offers.iter().map(|o| o.agent_id.clone()));
                    queue.offers(&scheduler, offers, |_, t| t.command("true", Vec::<String>::new()), Instant::now()).await;
                }
                Some(Event::Update(status)) => {
                    let current = queue.item_of(&status.task_id).is_some();
                    if let Some(s) = task_state(&status)
                        && current
                        && matches!(s, TaskState::Lost | TaskState::Unreachable | TaskState::Dropped | TaskState::Gone)
                    {
                        *report.troubled.entry(s.name().to_owned()).or_default() += 1;
                        if report.notes.len() < 10 {
                            report.notes.push(format!("{} {}: {}", status.task_id, s.name(), status.message));
                        }
                    }
                    match queue.update(&status, Instant::now()) {
                        Some(Change::Ended(o)) if o.succeeded() => report.finished += 1,
                        Some(Change::Ended(_)) => report.failed += 1,
                        _ => {}
                    }
                }
                Some(Event::Subscribed { .. }) => queue.subscribed(),
                Some(Event::Reconciled) => queue.reconciled(),
                Some(Event::Error { message }) => bail!("framework {name} removed: {message}"),
                Some(_) => {}
                None => bail!("framework {name}: the driver stopped"),
            },
            _ = tick.tick() => queue.tick(&scheduler, Instant::now()).await,
        }
    }
    scheduler.teardown().await?;
    scheduler.stop().await;
    Ok(report)
}

/// What a failover of one framework with many running tasks took.
#[derive(Debug, Clone)]
pub struct Failover {
    /// From the first scheduler's start until every task was running.
    pub launched_in: Duration,
    /// From the second scheduler's start until it was subscribed again.
    pub subscribed_in: Duration,
    /// From the second scheduler's start until the implicit
    /// reconciliation had reported every task ([`Event::Reconciled`]).
    pub reconciled_in: Duration,
    /// Tasks the reconciliation reported running.
    pub running: usize,
    /// Tasks it reported in any other state.
    pub other: usize,
}

/// Runs `tasks` tasks of `need` that keep running, then stops the
/// scheduler (the framework stays registered, as when its process dies)
/// and starts another with the same framework id, which is resumed and
/// has every task reported by the implicit reconciliation. The tasks are
/// left running. Gives up after `limit` in each part.
pub async fn failover(config: SchedulerConfig, tasks: usize, need: &Resources, limit: Duration) -> Result<Failover> {
    let name = config.framework.name.clone();
    let started = Instant::now();
    let (scheduler, mut events) = Scheduler::start(config.clone());
    let mut queue = WorkQueue::new(name.clone(), RetryPolicy::attempts(1));
    let request = TaskRequest::new(need);
    for i in 0..tasks {
        queue.submit(i, request.clone());
    }
    let mut running = HashSet::new();
    let mut framework_id = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while running.len() < tasks {
        if started.elapsed() > limit {
            bail!(
                "framework {name}: {} of {tasks} tasks running after {limit:?}",
                running.len()
            );
        }
        tokio::select! {
            event = events.next() => match event {
                Some(Event::Offers(offers)) => {
                    queue.offers(&scheduler, offers, |_, t| t.command("true", Vec::<String>::new()), Instant::now()).await;
                }
                Some(Event::Update(status)) => {
                    if task_state(&status) == Some(TaskState::Running) {
                        running.insert(status.task_id.clone());
                    }
                    queue.update(&status, Instant::now());
                }
                Some(Event::Subscribed { framework_id: id, .. }) => {
                    framework_id = Some(id);
                    queue.subscribed();
                }
                Some(Event::Reconciled) => queue.reconciled(),
                Some(Event::Error { message }) => bail!("framework {name} removed: {message}"),
                Some(_) => {}
                None => bail!("framework {name}: the driver stopped"),
            },
            _ = tick.tick() => queue.tick(&scheduler, Instant::now()).await,
        }
    }
    let launched_in = started.elapsed();
    scheduler.stop().await;
    drop(events);

    let mut config = config;
    config.framework_id = framework_id;
    let again = Instant::now();
    let (scheduler, mut events) = Scheduler::start(config);
    let (mut subscribed_in, mut reported) = (None, BTreeMap::new());
    loop {
        let event = tokio::time::timeout(limit.saturating_sub(again.elapsed()), events.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "framework {name}: {} of {tasks} tasks reconciled after {limit:?} (subscribed: {subscribed_in:?})",
                    reported.len()
                )
            })?;
        match event {
            Some(Event::Subscribed { resumed, .. }) => {
                if !resumed {
                    bail!("framework {name}: subscribed anew, not resumed");
                }
                subscribed_in = Some(again.elapsed());
            }
            Some(Event::Update(status)) => {
                reported.insert(status.task_id.clone(), task_state(&status));
            }
            Some(Event::Offers(offers)) => {
                let ids = offers.into_iter().map(|o| o.offer_id).collect();
                scheduler.decline(ids, Some(3600.0)).await?;
            }
            Some(Event::Reconciled) => break,
            Some(Event::Error { message }) => bail!("framework {name} removed: {message}"),
            Some(_) => {}
            None => bail!("framework {name}: the driver stopped"),
        }
    }
    let reconciled_in = again.elapsed();
    scheduler.stop().await;
    let running = reported.values().filter(|s| **s == Some(TaskState::Running)).count();
    Ok(Failover {
        launched_in,
        subscribed_in: subscribed_in.unwrap_or(reconciled_in),
        reconciled_in,
        running,
        other: reported.len() - running,
    })
}
