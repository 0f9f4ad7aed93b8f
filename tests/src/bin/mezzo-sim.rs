//! The scale simulator's driver (`scripts/bench-scale`, issue 17): real
//! `mezzo master` processes (1 or 3, Raft with fsync, security on, the
//! daemons' default timings) and [`mezzo_tests::sim`]'s agents and
//! frameworks against them, in phases:
//!
//! 1. storm: every agent registers at once; timed until all are admitted
//!    and until a probe framework has been offered every one of them;
//! 2. load: frameworks launch the tasks, which keep running: half of
//!    them with nobody reading, the other half (by as many new
//!    frameworks) while `--pollers` clients read `/state` in a loop;
//! 3. reads: once the leader has worked through the load's updates
//!    (how long that took is printed), `/state` and the paged operator
//!    reads fetched from it, timed;
//! 4. framework failover (`--framework-failover N`): one more framework
//!    runs N tasks, its scheduler stops and another resumes it; timed
//!    until it is subscribed again and until the implicit reconciliation
//!    has reported every task running;
//! 5. partition: every tenth agent is cut off (a rack); timed until the
//!    leader marks them unreachable, then until they are back;
//! 6. failover (3 masters): the leader is SIGKILLed; timed until every
//!    agent has re-registered with the new one and a new probe has been
//!    offered every agent again, and no task was lost.
//!
//! Prints one line per phase, with the masters' memory and CPU time.
//! `MEZZO_SIM_LOG` (a `tracing` filter, e.g. `mezzo_sdk=info`) logs the
//! simulator's own frameworks and agents to stderr.
//!
//!     mezzo-sim --agents 10000 --per-conn 100 --frameworks 10 --tasks 100000 --masters 3

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use clap::Parser;
use mezzo_proto::resources::Resources;
use mezzo_sdk::{Event, Scheduler};
use mezzo_tests::sim::{Agents, AgentsSpec, Stats, frameworks, until, until_unreachable};
use mezzo_tests::{Cluster, ClusterSpec};
use tokio::time::Instant;

/// The simulator allocates and frees for every message it builds (an
/// agent's re-registration clones all its tasks at each attempt): glibc's
/// allocator took 45 % of its CPU during a failover at 40,000 agents, CPU
/// the masters on the same cores then lacked. The masters keep the
/// system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(about = "Mezzo's scale simulator: simulated agents and frameworks against real masters")]
struct Args {
    /// Masters (1, or 3 for the failover phase).
    #[arg(long, default_value_t = 1)]
    masters: usize,
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Agents per HTTP/2 connection (one joined credential each; at most 200).
    #[arg(long, default_value_t = 100)]
    per_conn: usize,
    /// Frameworks sharing the tasks.
    #[arg(long, default_value_t = 10)]
    frameworks: usize,
    /// Tasks launched in all (they run until the end).
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// Each agent's resources.
    #[arg(long, default_value = "cpus:64;mem:262144;disk:65536")]
    agent_resources: String,
    /// Each task's resources.
    #[arg(long, default_value = "cpus:0.01;mem:1")]
    task_resources: String,
    /// `/state` reads timed.
    #[arg(long, default_value_t = 10)]
    state_reads: usize,
    /// Clients reading `/state` in a loop during the second half of the load.
    #[arg(long, default_value_t = 10)]
    pollers: usize,
    /// Read `/state` plain (by default the readers ask for it gzipped, as
    /// `curl --compressed` does; the timed reads decompress it, the
    /// pollers read it to its end as it is sent).
    #[arg(long)]
    plain_state: bool,
    /// Cut every n-th agent off for the partition phase (0: no partition).
    #[arg(long, default_value_t = 10)]
    partition_every: usize,
    /// Tasks of one more framework that then fails over (its scheduler
    /// stopped and resumed; 0: no such phase). Its tasks keep running.
    #[arg(long, default_value_t = 0)]
    framework_failover: usize,
    /// The masters' `--standby-heap-mib` (heap made resident at start).
    #[arg(long, default_value_t = 0)]
    standby_heap_mib: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Ok(filter) = std::env::var("MEZZO_SIM_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    ensure!(args.per_conn > 0 && args.per_conn <= 200, "--per-conn must be 1 to 200");
    ensure!(args.frameworks > 0, "--frameworks must be at least 1");
    let mut c = Cluster::start(ClusterSpec {
        masters: args.masters,
        agents: 0,
        // The daemons' own timings: 1 s heartbeats, 10 s agent timeout.
        master_args: vec!["--standby-heap-mib".into(), args.standby_heap_mib.to_string()],
        ..Default::default()
    })
    .await?;
    let result = run(&mut c, &args).await;
    if result.is_err() {
        eprintln!("{}", c.logs());
    }
    result
}

async fn run(c: &mut Cluster, args: &Args) -> Result<()> {
    println!(
        "mezzo-sim: {} master(s) (TLS, fsync), {} agents over {} connections, {} frameworks, {} tasks",
        args.masters,
        args.agents,
        args.agents.div_ceil(args.per_conn),
        args.frameworks,
        args.tasks
    );
    let started = Instant::now();
    let mut creds = Vec::new();
    for g in 0..args.agents.div_ceil(args.per_conn) {
        creds.push(c.join_as_agent(&format!("sim-{g}")).await?);
    }
    println!(
        "joins     {} agent credentials in {:.1?}",
        creds.len(),
        started.elapsed()
    );

    // 1. The storm, watched by a framework that is offered every agent.
    let probe = Probe::start(c, "sim-probe-1").await?;
    let mut spec = AgentsSpec {
        agents: args.agents,
        resources: Resources::parse(&args.agent_resources)?,
        ..AgentsSpec::default()
    };
    spec.behaviour.task_time = None;
    let storm = Instant::now();
    let agents = Agents::start(c.masters(), creds, &spec);
    let stats = agents.stats().clone();
    let admitted = until("every agent admitted", Duration::from_secs(600), || {
        Stats::get(&stats.registrations) == args.agents
    })
    .await?;
    let offered = probe.all_offered(args.agents, storm).await?;
    let (p50, p99, max, _) = stats.latency();
    println!(
        "storm     {} admitted in {admitted:.2?} (attach->registered p50 {p50:.0?} p99 {p99:.0?} max {max:.0?}; {} failed attaches, {} timed out, {} redirected); all offered in {offered:.2?}  {}",
        args.agents,
        Stats::get(&stats.failures),
        Stats::get(&stats.timeouts),
        Stats::get(&stats.redirects),
        masters_usage(c)
    );

    // 2. The tasks: half with nobody reading, half under `/state` polling.
    let need = Resources::parse(&args.task_resources)?;
    let half = args.tasks / 2;
    let mut fws = Vec::new();
    let mut rates = Vec::new();
    for (round, readers) in [(0, 0), (1, args.pollers)] {
        let polling = Pollers::start(c, readers, !args.plain_state).await?;
        let watch = Watch::start(c, stats.clone()).await?;
        let from = Stats::get(&stats.launched);
        fws.extend((0..args.frameworks).map(|f| {
            let config = c.sdk_config(&format!("sim-fw-{round}-{f}"));
            let (need, n) = (need.clone(), half / args.frameworks);
            frameworks::runtime()
                .spawn(async move { frameworks::run(config, n, &need, Duration::from_secs(86_400)).await })
        }));
        let target = from + half / args.frameworks * args.frameworks;
        let launched = until("every task launched", Duration::from_secs(1200), || {
            Stats::get(&stats.launched) >= target
        })
        .await?;
        let rate = (target - from) as f64 / launched.as_secs_f64();
        rates.push(rate);
        let reads = polling.stop().await;
        let watched = watch.stop().await;
        println!(
            "load      {} tasks launched in {launched:.2?} ({rate:.0}/s) with {readers} /state pollers{reads}  {}",
            target - from,
            masters_usage(c)
        );
        println!("          {watched}");
    }
    // The halves differ in more than the pollers (the second starts with
    // half the tasks placed and twice the frameworks): the pollers' own
    // effect is the second half against a run with `--pollers 0`.
    println!(
        "          second half at {:.0}% of the first's rate (with {} pollers; compare a run with --pollers 0)",
        100.0 * rates[1] / rates[0],
        args.pollers
    );

    // 3. Operator reads, once the leader has worked through the load.
    settle(c).await?;
    read_state(c, args.state_reads, !args.plain_state).await?;
    read_pages(c).await?;
    println!("alloc     {}", allocation(c).await?);

    // 4. A framework with many tasks failing over.
    if args.framework_failover > 0 {
        let config = c.sdk_config("sim-fw-failover");
        let watch = Watch::start(c, stats.clone()).await?;
        let (n, need) = (args.framework_failover, need.clone());
        let f = frameworks::runtime()
            .spawn(async move { frameworks::failover(config, n, &need, Duration::from_secs(1200)).await })
            .await??;
        let watched = watch.stop().await;
        println!(
            "fw-fail   {} tasks of one framework running in {:.2?}; resumed: subscribed in {:.2?}, every task reconciled in {:.2?} ({} running, {} otherwise)  {}",
            args.framework_failover,
            f.launched_in,
            f.subscribed_in,
            f.reconciled_in,
            f.running,
            f.other,
            masters_usage(c)
        );
        println!("          {watched}");
        ensure!(
            f.running == args.framework_failover,
            "the failed-over framework's reconciliation reported {} of {} tasks running",
            f.running,
            args.framework_failover
        );
    }

    // 5. A rack cut off.
    if args.partition_every > 0 {
        partition(c, &agents, args.agents, args.partition_every).await?;
    }

    // 6. A leader failover.
    if args.masters >= 3 {
        let before = stats.masters();
        let (failed, timeouts, unanswered, redirected) = (
            Stats::get(&stats.failures),
            Stats::get(&stats.timeouts),
            Stats::get(&stats.unanswered),
            Stats::get(&stats.redirects),
        );
        let leader = c.wait_leader_within(LEADER_WAIT).await?;
        c.masters[leader].kill().await;
        let killed = Instant::now();
        let probe = Probe::start(c, "sim-probe-2").await?;
        let mut next_note = killed + Duration::from_secs(30);
        let mut back_marks = Marks::new(args.agents);
        let back = until("every agent re-registered", Duration::from_secs(600), || {
            let now = stats.masters();
            let connected = Stats::get(&stats.connected);
            let with_new: usize = now.iter().filter(|(m, _)| !before.contains_key(*m)).map(|(_, n)| n).sum();
            back_marks.note(killed.elapsed(), with_new);
            if Instant::now() >= next_note {
                // Say what is still missing, should it take this long.
                next_note += Duration::from_secs(30);
                let by_master: Vec<usize> = now.values().copied().collect();
                println!(
                    "          ({:.0?} after the kill: {connected} sessions registered; agents by master {by_master:?})",
                    killed.elapsed()
                );
            }
            now.len() == 1 && now.keys().next() != before.keys().next() && connected == args.agents
        })
        .await?;
        let (offered, offer_marks) = probe.all_offered_marked(args.agents, killed).await?;
        println!(
            "          (after the kill: agents back {}; the probe offered {})",
            back_marks.show(),
            offer_marks.show()
        );
        println!(
            "failover  {} agents / {} tasks: all re-registered {back:.2?} after the kill, all offered {offered:.2?} after it ({} sessions failed, {} of them waiting for Registered, {} of those unanswered; {} redirected)  {}",
            args.agents,
            Stats::get(&stats.launched),
            Stats::get(&stats.failures) - failed,
            Stats::get(&stats.timeouts) - timeouts,
            Stats::get(&stats.unanswered) - unanswered,
            Stats::get(&stats.redirects) - redirected,
            masters_usage(c)
        );
        let st = c.master_state().await?;
        let troubled = st["tasks"]
            .as_array()
            .map(|t| t.iter().filter(|t| t["state"] != "TASK_RUNNING").count())
            .unwrap_or_default();
        println!("          tasks not running after the failover: {troubled}");
        println!("          attaches after the kill: {}", stats.attaches_since(killed));
        read_state(c, args.state_reads, !args.plain_state).await?;
    }
    for f in fws {
        f.abort();
    }
    agents.stop();
    Ok(())
}

/// A framework that declines every offer for an hour and notes each
/// agent it was offered.
struct Probe {
    scheduler: Scheduler,
    seen: tokio::sync::watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
    /// When each batch of offers came, and the agents offered by then.
    marks: std::sync::Arc<std::sync::Mutex<Vec<(Instant, usize)>>>,
}

/// When a count first passed 0 and first reached 10 %, half, 90 % and
/// 99 % of its goal.
struct Marks {
    goal: usize,
    at: [Option<Duration>; 5],
}

impl Marks {
    /// Shares of the goal; 0: the first one counted.
    const SHARES: [f64; 5] = [0.0, 0.1, 0.5, 0.9, 0.99];

    fn new(goal: usize) -> Marks {
        Marks { goal, at: [None; 5] }
    }

    fn note(&mut self, at: Duration, count: usize) {
        for (i, share) in Self::SHARES.iter().enumerate() {
            if self.at[i].is_none() && count > 0 && count as f64 >= share * self.goal as f64 {
                self.at[i] = Some(at);
            }
        }
    }

    fn show(&self) -> String {
        let at = |i: usize| self.at[i].map_or("-".to_owned(), |d| format!("{:.2}s", d.as_secs_f64()));
        format!(
            "first {}, 10% {}, half {}, 90% {}, 99% {}",
            at(0),
            at(1),
            at(2),
            at(3),
            at(4)
        )
    }
}

impl Probe {
    async fn start(c: &Cluster, name: &str) -> Result<Probe> {
        let (scheduler, mut events) = {
            let _frameworks = frameworks::runtime().enter();
            Scheduler::start(c.sdk_config(name))
        };
        let (tx, seen) = tokio::sync::watch::channel(0);
        let s = scheduler.clone();
        let marks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let noted = marks.clone();
        let task = frameworks::runtime().spawn(async move {
            // Declined by a task of their own: a decline waits its turn at
            // a leader busy with a failover's registrations, and offers
            // counted only after it were counted seconds late.
            let (decline, mut declines) = tokio::sync::mpsc::unbounded_channel::<Vec<_>>();
            let decliner = tokio::spawn(async move {
                while let Some(ids) = declines.recv().await {
                    let _ = s.decline(ids, Some(3600.0)).await;
                }
            });
            let mut agents = HashSet::new();
            let born = Instant::now();
            while let Some(e) = events.next().await {
                if let Event::Subscribed { .. } = e {
                    println!("          (probe subscribed {:.2?} after it started)", born.elapsed());
                }
                if let Event::Offers(offers) = e {
                    let ids = offers.iter().map(|o| o.offer_id.clone()).collect();
                    agents.extend(offers.into_iter().map(|o| o.agent_id));
                    tx.send_replace(agents.len());
                    if let Ok(mut m) = noted.lock() {
                        m.push((Instant::now(), agents.len()));
                    }
                    let _ = decline.send(ids);
                }
            }
            decliner.abort();
        });
        Ok(Probe {
            scheduler,
            seen,
            task,
            marks,
        })
    }

    /// [`Probe::all_offered`], and when the offers had reached each of
    /// [`Marks`]' shares of the agents.
    async fn all_offered_marked(self, n: usize, from: Instant) -> Result<(Duration, Marks)> {
        let noted = self.marks.clone();
        let took = self.all_offered(n, from).await?;
        let mut marks = Marks::new(n);
        for (at, count) in noted.lock().map(|m| m.clone()).unwrap_or_default() {
            marks.note(at.saturating_duration_since(from), count);
        }
        Ok((took, marks))
    }

    /// Waits until `n` agents were offered; answers how long since `from`.
    async fn all_offered(mut self, n: usize, from: Instant) -> Result<Duration> {
        let waited = tokio::time::timeout(Duration::from_secs(600), self.seen.wait_for(|s| *s >= n))
            .await
            .is_ok_and(|r| r.is_ok());
        // Gone for good: offers it would hold until they time out would
        // be missing from the frameworks measured next.
        self.task.abort();
        if let Err(e) = self.scheduler.teardown().await {
            eprintln!("the probe framework's teardown failed: {e}");
        }
        if !waited {
            bail!("the probe was offered {} of {n} agents", *self.seen.borrow());
        }
        Ok(from.elapsed())
    }
}

/// Clients reading `/state` from the leader in a loop.
struct Pollers {
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<(Vec<Duration>, f64)>>,
}

impl Pollers {
    /// `n` clients reading `/state` in a loop, on a thread of their own:
    /// they stand for clients on other machines, so they read each body
    /// to its end (the master's cost) without decompressing it (a
    /// client's own cost, which here would take the simulated cluster's
    /// cores); the timed reads after the load decompress theirs.
    async fn start(c: &Cluster, n: usize, gzip: bool) -> Result<Pollers> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        if n == 0 {
            return Ok(Pollers { stop, thread: None });
        }
        let url = c.url(&c.masters[c.wait_leader_within(LEADER_WAIT).await?].addr, "/state");
        let clients = (0..n).map(|_| leader_client(c)).collect::<Result<Vec<_>>>()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let thread = std::thread::Builder::new().name("sim-pollers".into()).spawn(move || {
            let pollers = clients.into_iter().map(|http| {
                let (url, stopped) = (url.clone(), stopped.clone());
                async move {
                    let mut times = Vec::new();
                    while !*stopped.borrow() {
                        let t = Instant::now();
                        let read = match state_request(&http, &url, gzip).send().await {
                            Ok(r) if r.status().is_success() => drain(r).await.is_ok(),
                            _ => false,
                        };
                        if read {
                            times.push(t.elapsed());
                        } else {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    times
                }
            });
            let times = runtime.block_on(futures::future::join_all(pollers)).concat();
            (times, mezzo_tests::thread_cpu_seconds().unwrap_or_default())
        })?;
        Ok(Pollers {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops them; says how many reads they made, how long those took and
    /// the CPU the clients took.
    async fn stop(self) -> String {
        self.stop.send_replace(true);
        let Some(thread) = self.thread else {
            return String::new();
        };
        let (mut times, cpu) = tokio::task::spawn_blocking(move || thread.join())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        if times.is_empty() {
            return String::new();
        }
        times.sort();
        format!(
            " ({} reads, p50 {:.2?}, max {:.2?}; the clients {cpu:.1} s cpu)",
            times.len(),
            times[times.len() / 2],
            times[times.len() - 1]
        )
    }
}

/// The leader's queues during a load, from `/metrics` once a second:
/// whether it keeps up with what it is sent.
struct Watch {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<[f64; 5]>>,
}

impl Watch {
    async fn start(c: &Cluster, stats: Arc<Stats>) -> Result<Watch> {
        let url = c.url(&c.masters[c.wait_leader_within(LEADER_WAIT).await?].addr, "/metrics");
        let http = leader_client(c)?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            while !*stopped.borrow() {
                let text = metrics_text(&http, &url).await;
                let value = |name: &str| metric(&text, name);
                seen.push([
                    value("mezzo_master_event_queue_commands"),
                    value("mezzo_master_status_update_queue"),
                    Stats::get(&stats.resends) as f64,
                    value("mezzo_master_framework_events_held"),
                    Stats::get(&stats.launched) as f64,
                ]);
                let _ = tokio::time::timeout(Duration::from_secs(1), stopped.changed()).await;
            }
            seen
        });
        Ok(Watch { stop, task })
    }

    /// Stops it; the queues second by second.
    async fn stop(self) -> String {
        self.stop.send_replace(true);
        let seen = self.task.await.unwrap_or_default();
        let series = |i: usize| {
            seen.iter()
                .map(|s| format!("{:.0}", s[i]))
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!(
            "each second: tasks launched so far {}; commands waiting for the leader {}; updates unacknowledged {}; agents' resends so far {}; events held for frameworks behind {}",
            series(4),
            series(0),
            series(1),
            series(2),
            series(3)
        )
    }
}

/// `/metrics` as text; empty if it cannot be read (every value then reads 0).
async fn metrics_text(http: &reqwest::Client, url: &str) -> String {
    match http.get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The value of the first sample of metric `name` in a `/metrics` text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.split_whitespace().next().is_some_and(|n| n.starts_with(name)))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// An HTTP client for the masters as the cluster's admin.
/// How long the simulator waits for a leader to answer `/raft` and
/// `/state`: at tens of thousands of agents a busy one takes seconds.
const LEADER_WAIT: Duration = Duration::from_secs(120);

fn leader_client(c: &Cluster) -> Result<reqwest::Client> {
    mezzo_tests::http_client_waiting(
        &c.transport(),
        mezzo_proto::security::principal::MASTER_DNS_NAME,
        Duration::from_secs(120),
    )
}

/// The leader's allocator so far, from `/metrics`: passes, their mean
/// time, and how many took longer than 0.1 s.
async fn allocation(c: &Cluster) -> Result<String> {
    let addr = c.masters[c.wait_leader_within(LEADER_WAIT).await?].addr.clone();
    let text = leader_client(c)?
        .get(c.url(&addr, "/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let value = |name: &str| metric(&text, name);
    let runs = value("mezzo_master_allocation_runs");
    let nanos = value("mezzo_master_allocation_nanoseconds");
    let quick = value("mezzo_master_allocation_run_seconds_bucket{le=\"0.1\"}");
    let all = value("mezzo_master_allocation_run_seconds_count");
    // A task's launch brings about two updates and their acknowledgements;
    // the rest are resends.
    let updates = value("mezzo_master_status_updates_total");
    let held = value("mezzo_master_status_update_resends_held_total");
    let acks = value("mezzo_master_acknowledgements_total");
    Ok(format!(
        "{runs:.0} allocator passes on the leader, mean {:.1} ms, {:.0} of {all:.0} timed over 0.1 s; {updates:.0} status updates ({held:.0} resends answered by the master), {acks:.0} acknowledgements",
        nanos / runs.max(1.0) / 1e6,
        all - quick
    ))
}

/// The paged operator reads, 100 of each from the leader: p50 and p99.
async fn read_pages(c: &Cluster) -> Result<()> {
    let addr = c.masters[c.wait_leader_within(LEADER_WAIT).await?].addr.clone();
    let http = leader_client(c)?;
    let mut line = Vec::new();
    for path in [
        "/api/v1/tasks?limit=50",
        "/api/v1/tasks?limit=50&offset=5000",
        "/api/v1/agents?limit=50",
        "/api/v1/frameworks?limit=50",
    ] {
        let url = c.url(&addr, path);
        let mut times = Vec::new();
        for _ in 0..100 {
            let t = Instant::now();
            http.get(&url).send().await?.error_for_status()?.bytes().await?;
            times.push(t.elapsed());
        }
        times.sort();
        line.push(format!("{path} p50 {:.1?} p99 {:.1?}", times[49], times[98]));
    }
    println!("pages     {}", line.join("; "));
    Ok(())
}

/// Cuts every `every`-th agent off; times the leader marking them all
/// unreachable, then their return once healed.
async fn partition(c: &Cluster, agents: &Agents, n: usize, every: usize) -> Result<()> {
    let cut = n.div_ceil(every) as u64;
    let addr = c.masters[c.wait_leader_within(LEADER_WAIT).await?].addr.clone();
    let stats = agents.stats().clone();
    let limit = Duration::from_secs(120);
    agents.partition(every);
    let (o, marked) = until_unreachable(c, &addr, "the cut agents unreachable", limit, |u| u >= cut).await?;
    agents.heal();
    let back = until("the cut agents back", Duration::from_secs(300), || {
        Stats::get(&stats.connected) == n
    })
    .await?;
    let (after, _) = until_unreachable(c, &addr, "no agent unreachable after the heal", limit, |u| u == 0).await?;
    println!(
        "partition {cut} agents cut off: all unreachable {marked:.2?} after the cut (tasks then {}); back {back:.2?} after the heal (tasks {})  {}",
        o["tasks_by_state"],
        after["tasks_by_state"],
        masters_usage(c)
    );
    Ok(())
}

/// `/state` from the leader, `n` times: p50, max and the body's size.
async fn read_state(c: &Cluster, n: usize, gzip: bool) -> Result<()> {
    let leader = c.wait_leader_within(LEADER_WAIT).await?;
    let addr = c.masters[leader].addr.clone();
    let http = leader_client(c)?;
    let url = c.url(&addr, "/state");
    let mut times = Vec::new();
    let (mut size, mut sent) = (0, 0);
    for _ in 0..n.max(1) {
        let t = Instant::now();
        (size, sent) = read_body(state_request(&http, &url, gzip).send().await?.error_for_status()?).await?;
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "state     /state x{}: p50 {:.2?} max {:.2?}, {:.1} MB ({:.1} MB sent)  {}",
        times.len(),
        times[times.len() / 2],
        times[times.len() - 1],
        size as f64 / 1e6,
        sent as f64 / 1e6,
        masters_usage(c)
    );
    Ok(())
}

/// A GET of `/state`, asking for it gzipped if `gzip`.
fn state_request(http: &reqwest::Client, url: &str, gzip: bool) -> reqwest::RequestBuilder {
    let r = http.get(url);
    if gzip { r.header("accept-encoding", "gzip") } else { r }
}

/// Reads a body to its end as it comes, as it is sent (compressed or not).
async fn drain(mut r: reqwest::Response) -> Result<usize> {
    let mut sent = 0;
    while let Some(chunk) = r.chunk().await? {
        sent += chunk.len();
    }
    Ok(sent)
}

/// Reads a body to its end as it comes, decompressed if it is gzipped, as
/// `curl --compressed -o /dev/null` or a streaming parser does (gathering
/// 200 MB into one buffer cost the simulator more than the master took to
/// send it): its size, and the size sent.
async fn read_body(mut r: reqwest::Response) -> Result<(usize, usize)> {
    /// Counts what is written to it.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let gzipped = r.headers().get("content-encoding").is_some_and(|v| v == "gzip");
    let mut sent = 0;
    let mut gz = flate2::write::GzDecoder::new(Count(0));
    let mut plain = 0;
    while let Some(chunk) = r.chunk().await? {
        sent += chunk.len();
        if gzipped {
            std::io::Write::write_all(&mut gz, &chunk)?;
        } else {
            plain += chunk.len();
        }
    }
    let size = if gzipped { gz.finish()?.0 } else { plain };
    Ok((size, sent))
}

/// Each live master's resident memory and CPU time so far.
fn masters_usage(c: &Cluster) -> String {
    let mut out = Vec::new();
    for (i, m) in c.masters.iter().enumerate() {
        let Some(pid) = m.pid() else { continue };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|k| k.parse::<u64>().ok())
            .unwrap_or(0);
        out.push(format!("m{i}: {} MiB, {:.1} s cpu", rss / 1024, cpu_secs(pid)));
    }
    // The simulator's own, which shares the cores.
    out.push(format!("sim: {:.1} s cpu", cpu_secs(std::process::id() as i32)));
    format!("[{}]", out.join("; "))
}

/// A process's CPU time so far (user and system), in seconds; 0 once gone.
fn cpu_secs(pid: i32) -> f64 {
    mezzo_tests::cpu_seconds(pid, false).unwrap_or(0.0)
}

/// Waits until the leader is nearly idle (under a fifth of a core for a
/// second) and holds no unacknowledged update: "launched" counts tasks
/// that reached their agents, and the updates and acknowledgements behind
/// them are still being worked through (an update left unacknowledged is
/// resent later, with the agent's backoff); a read timed then measures that
/// backlog, not the read.
async fn settle(c: &Cluster) -> Result<()> {
    let leader = c.wait_leader_within(LEADER_WAIT).await?;
    let Some(pid) = c.masters[leader].pid() else {
        return Ok(());
    };
    let url = c.url(&c.masters[leader].addr, "/metrics");
    let http = leader_client(c)?;
    let (start, cpu0) = (Instant::now(), cpu_secs(pid));
    let mut last = cpu0;
    let mut unacknowledged = f64::NAN;
    while start.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = cpu_secs(pid);
        // A read that fails tells nothing: the CPU alone decides then.
        unacknowledged = metric(&metrics_text(&http, &url).await, "mezzo_master_status_update_queue");
        if now - last < 0.2 && unacknowledged == 0.0 {
            break;
        }
        last = now;
    }
    println!(
        "settle    the leader was busy {:.1?} after the load ({:.1} s of CPU; {unacknowledged} updates unacknowledged then)",
        start.elapsed(),
        cpu_secs(pid) - cpu0
    );
    Ok(())
}
