//! The soak's cluster and what runs on it: masters in network namespaces,
//! agents with Linux isolation, the batch and service frameworks, and the
//! driver that injects the faults while submitting batch waves.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mezzo_batch::job::JobState;

use super::SoakSpec;
use super::leftovers::Footprint;
use super::records::{self, now_ns};
use super::report::{Applied, JobEnd};
use super::schedule::{Fault, Planned, Rng};
use super::service::{self, Service};
use crate::batch::{Batch, shared_dir};
use crate::netcluster::NetCluster;
use crate::netns::Net;

/// Masters in the soak (a Raft group that survives one loss).
const MASTERS: usize = 3;
/// Every wait for a leader.
const LEADER_LIMIT: Duration = Duration::from_secs(20);

/// The running soak. Fields drop in order: frameworks, the cluster (its
/// daemons, orphaned tasks and cgroups), the records dir, then the
/// network namespaces.
#[derive(Debug)]
pub struct World {
    pub batch: Batch,
    pub service: Service,
    pub cluster: NetCluster,
    pub shared: tempfile::TempDir,
    pub net: Net,
    /// Jobs submitted: name and task count.
    pub jobs: Vec<(String, u32)>,
    pub applied: Vec<Applied>,
    waves: Rng,
    next_wave: Instant,
    /// Failed tries of the wave due (said once per wave).
    submit_failures: u32,
    start: Instant,
    spec: SoakSpec,
}

impl World {
    /// Starts everything and waits until the service is healthy.
    pub async fn start(spec: &SoakSpec) -> Result<World> {
        let net = Net::new(MASTERS)?;
        let master_args: Vec<String> = vec![
            "--agent-timeout".into(),
            format!("{}ms", spec.agent_timeout.as_millis()),
            "--agent-reregister-timeout".into(),
            format!("{}ms", spec.agent_timeout.as_millis()),
            "--heartbeat-interval".into(),
            "500ms".into(),
        ];
        let mut cluster = NetCluster::start(&net, MASTERS, &master_args).await?;
        cluster
            .wait_leader(LEADER_LIMIT)
            .await
            .with_context(|| cluster.logs())?;
        let agent_args: Vec<String> = ["--isolation", "linux", "--hostname", "127.0.{i}.1"]
            .map(String::from)
            .to_vec();
        for _ in 0..spec.agents {
            cluster.add_agent(&net, &agent_resources(), &agent_args).await?;
        }
        wait_agents(&cluster, spec.agents).await?;
        let batch = Batch::start(&cluster).await?;
        let service = Service::start(&cluster).await?;
        service
            .deploy(service::file(spec.service_instances, spec.service_max_unavailable))
            .await?;
        service
            .wait_healthy(spec.service_instances, Duration::from_secs(60))
            .await
            .with_context(|| cluster.logs())?;
        Ok(World {
            batch,
            service,
            cluster,
            shared: shared_dir()?,
            net,
            jobs: Vec::new(),
            applied: Vec::new(),
            waves: Rng::new(spec.seed ^ 0x05ee_d0f3_a7e5),
            next_wave: Instant::now(),
            submit_failures: 0,
            start: Instant::now(),
            spec: spec.clone(),
        })
    }

    /// The loopback ports the agents offer (where the service listens).
    pub fn service_ports(&self) -> Vec<u16> {
        (0..self.spec.agents)
            .flat_map(|i| PORTS.0 + 1000 * i as u16..=PORTS.1 + 1000 * i as u16)
            .collect()
    }

    /// The masters' `/state` URLs.
    pub fn state_urls(&self) -> Vec<String> {
        (0..MASTERS).map(|i| self.cluster.url(i, "/state")).collect()
    }

    /// What belongs to this soak, for the leftover checks.
    pub fn footprint(&self) -> Footprint {
        Footprint {
            dirs: vec![
                self.cluster.dir.path().to_owned(),
                self.cluster.runtime.path().to_owned(),
                self.shared.path().to_owned(),
            ],
            cgroups: (0..self.spec.agents).map(|i| self.cluster.cgroup_parent(i)).collect(),
            netns: (0..MASTERS).map(|i| self.net.ns(i).to_owned()).collect(),
        }
    }

    fn say(&self, what: &str) {
        println!("[{:>7.1} s] {what}", self.start.elapsed().as_secs_f64());
    }

    /// Runs the schedule while submitting waves, until the soak's duration
    /// is over and the last fault has been repaired.
    pub async fn drive(&mut self, schedule: &[Planned]) -> Result<()> {
        self.start = Instant::now();
        self.next_wave = self.start;
        for p in schedule {
            self.idle_until(self.start + p.at).await;
            self.say(&format!("fault: {}", p.fault));
            self.apply(&p.fault)
                .await
                .with_context(|| format!("applying {}", p.fault))?;
        }
        self.idle_until(self.start + self.spec.duration).await;
        self.say(&format!("{} waves submitted; faults over", self.jobs.len()));
        Ok(())
    }

    /// Submits waves as they fall due until `until`.
    async fn idle_until(&mut self, until: Instant) {
        while Instant::now() < until {
            self.submit_due_wave().await;
            let left = until.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(200))).await;
        }
    }

    fn record(&mut self, kind: &'static str, target: String) {
        self.applied.push(Applied {
            at_ns: now_ns(),
            kind,
            target,
        });
    }

    async fn apply(&mut self, fault: &Fault) -> Result<()> {
        let down = fault.length();
        match fault {
            Fault::KillLeader { .. } | Fault::KillFollower { .. } => {
                let leader = self.cluster.wait_leader(LEADER_LIMIT).await?;
                let i = match fault {
                    Fault::KillLeader { .. } => leader,
                    _ => (leader + 1) % MASTERS,
                };
                self.record(fault.kind(), format!("master{i}"));
                self.cluster.masters[i].kill().await;
                self.idle_until(Instant::now() + down).await;
                self.cluster.restart_master(i).await?;
            }
            Fault::KillAgent { agent, .. } => {
                self.record(fault.kind(), format!("agent{agent}"));
                self.cluster.agents[*agent].kill().await;
                self.idle_until(Instant::now() + down).await;
                self.cluster.restart_agent(*agent).await?;
            }
            Fault::KillBatch { .. } => {
                self.record(fault.kind(), "batch".into());
                self.batch.daemon.kill().await;
                self.idle_until(Instant::now() + down).await;
                self.batch.restart().await?;
            }
            Fault::KillService { .. } => {
                self.record(fault.kind(), "service".into());
                self.service.daemon.kill().await;
                self.idle_until(Instant::now() + down).await;
                self.service.restart().await?;
            }
            Fault::PartitionLeader { .. } => {
                let leader = self.cluster.wait_leader(LEADER_LIMIT).await?;
                self.record(fault.kind(), format!("master{leader}"));
                self.net.partition(leader)?;
                self.idle_until(Instant::now() + down).await;
                self.net.heal(leader)?;
            }
        }
        Ok(())
    }

    /// Submits the next wave if it is due and the batch framework answers;
    /// otherwise it is tried again on the next tick.
    async fn submit_due_wave(&mut self) {
        let now = Instant::now();
        if now < self.next_wave || now >= self.start + self.spec.duration || self.batch.daemon.pid().is_none() {
            return;
        }
        let name = format!("wave-{}", self.jobs.len());
        // Drawn once per wave, and not redrawn on a retry.
        let secs = self.waves.range(self.spec.task_secs.0, self.spec.task_secs.1);
        let toml = format!(
            "[[job]]\nname = \"{name}\"\ncommand = \"{}; sleep {secs}\"\ncount = {}\ncpus = 0.1\nmem = 16\nretries = 0\nmax_parallel = {}\n",
            records::record_command(self.shared.path(), &name),
            self.spec.wave_size,
            self.spec.wave_parallel,
        );
        let client = self.batch.client();
        let sent = tokio::time::timeout(Duration::from_secs(5), client.submit(toml)).await;
        // A lost answer may hide an accepted submission: ask.
        let accepted = matches!(sent, Ok(Ok(_))) || client.status(&name, false, None).await.is_ok();
        if accepted {
            self.say(&format!("submitted {name} ({} tasks of {secs} s)", self.spec.wave_size));
            self.jobs.push((name, self.spec.wave_size));
            // No catching up after an outage: waves stay `wave_every` apart.
            self.next_wave = (self.next_wave + self.spec.wave_every).max(Instant::now());
            self.submit_failures = 0;
        } else {
            if self.submit_failures == 0 {
                let why = match sent {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer in 5 s".to_owned(),
                };
                self.say(&format!("{name}: the batch framework refused it ({why}); retrying"));
            }
            self.submit_failures += 1;
        }
    }

    /// Waits until every submitted job has ended (`limit` at most) and
    /// returns how each ended.
    pub async fn settle(&self, limit: Duration) -> Vec<JobEnd> {
        let deadline = Instant::now() + limit;
        loop {
            let mut ends = Vec::new();
            let client = self.batch.client();
            for (name, count) in &self.jobs {
                let end = match client.status(name, false, None).await {
                    Ok(s) if s.summary.state.is_final() => JobEnd {
                        name: name.clone(),
                        count: *count,
                        state: job_state(s.summary.state),
                        failures: s
                            .tasks
                            .iter()
                            .filter(|t| t.state == "failed")
                            .take(5)
                            .map(|t| {
                                format!(
                                    "[{}] exit {:?}: {}",
                                    t.index,
                                    t.exit_code,
                                    t.reason.clone().unwrap_or_default()
                                )
                            })
                            .collect(),
                        dropped_relaunched: 0,
                        requeued: 0,
                    },
                    _ => JobEnd {
                        name: name.clone(),
                        count: *count,
                        state: "unfinished".into(),
                        failures: Vec::new(),
                        dropped_relaunched: 0,
                        requeued: 0,
                    },
                };
                ends.push(end);
            }
            if ends.iter().all(|e| e.state != "unfinished") || Instant::now() > deadline {
                for e in &mut ends {
                    (e.dropped_relaunched, e.requeued) = self.relaunches(&e.name).await;
                }
                return ends;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The job's launches dropped and made again, and its tasks requeued
    /// after being lost, as the batch framework counts them (issue 16
    /// parts A and B add these counts; 0 on a framework without them).
    /// Read as plain JSON, so that this harness reads them either way.
    async fn relaunches(&self, job: &str) -> (u64, u64) {
        let url = format!("http://{}/v1/jobs/{job}", self.batch.daemon.addr);
        let http = crate::framework_http(&self.batch.state_dir, Duration::from_secs(5));
        let v: serde_json::Value = match http.map(|c| c.get(&url).send()) {
            Ok(sent) => match sent.await {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => return (0, 0),
            },
            Err(_) => return (0, 0),
        };
        let count = |k: &str| v["counts"][k].as_u64().unwrap_or(0);
        (count("dropped_relaunched"), count("requeued"))
    }

    /// The masters' registries, equal or the first difference. Retried a
    /// few times: a write may land between two reads.
    pub async fn registries_identical(&self) -> (bool, String) {
        let mut note = String::new();
        for _ in 0..5 {
            match self.cluster.registries().await {
                Ok(r) if r.windows(2).all(|w| w[0] == w[1]) => return (true, format!("{} masters agree", r.len())),
                Ok(r) => note = format!("{r:?}"),
                Err(e) => note = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        (false, note)
    }

    /// Stops the frameworks and daemons the ordinary way (SIGTERM).
    pub async fn stop_daemons(&mut self) {
        let limit = Duration::from_secs(5);
        self.batch.daemon.stop(limit).await;
        self.service.daemon.stop(limit).await;
        for d in self.cluster.agents.iter_mut().chain(self.cluster.masters.iter_mut()) {
            d.stop(limit).await;
        }
    }

    /// Logs of the daemons and the frameworks, for a failure.
    pub fn logs(&self) -> String {
        format!(
            "{}\n--- batch ---\n{}\n--- service ---\n{}",
            self.cluster.logs(),
            crate::tail(&self.batch.logs()),
            crate::tail(&self.service.daemon.log())
        )
    }

    /// Where the records and logs are (kept only while the soak runs).
    pub fn dirs(&self) -> (PathBuf, PathBuf) {
        (self.cluster.dir.path().to_owned(), self.shared.path().to_owned())
    }
}

/// Agent `i` offers ports 3i500-3i599 (`{i}` is replaced per agent).
const PORTS: (u16, u16) = (30500, 30599);

fn agent_resources() -> String {
    "cpus:4;mem:4096;disk:8192;ports:[3{i}500-3{i}599]".to_owned()
}

async fn wait_agents(c: &NetCluster, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = c.wait_leader(LEADER_LIMIT).await?;
        if let Ok((200, s)) = c.get(leader, "/state").await
            && s["agents"].as_array().map(Vec::len) == Some(n)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{n} agents did not register in 30 s{}", c.logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn job_state(s: JobState) -> String {
    match s {
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
        JobState::Cancelling => "cancelling",
        JobState::Running => "running",
        JobState::Waiting => "waiting",
        JobState::Skipped => "skipped",
    }
    .to_owned()
}
