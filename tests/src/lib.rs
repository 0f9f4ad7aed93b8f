//! A cluster test harness: real `mezzo` processes on loopback.
//!
//! [`Cluster::start`] runs M masters (a Raft group) and N agents, each a child process of
//! the test with its own work dir under one temp dir, on ephemeral ports.
//! Security is on, as by default: the processes share a `MEZZO_HOME` in the
//! cluster's temp dir, where the first master creates the cluster's CA and
//! the administrator's client configuration, and the agents join with the
//! agent join token in it. The harness talks to the daemons as that
//! administrator, over TLS ([`Cluster::http`], [`Cluster::url`],
//! [`Cluster::sdk_config`], [`Cluster::command`]).
//! Everything is killed when the `Cluster` is dropped — also when the test
//! panics — including task processes that outlived a SIGKILLed agent
//! (found by their working directory inside the cluster's temp dir).

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use mezzo_proto::security::principal::MASTER_DNS_NAME;
use mezzo_proto::security::{ClientConfig, Credentials, Identity, Transport};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub mod batch;
pub mod browser;
pub mod mesos;
pub mod netcluster;
pub mod netns;
pub mod oci;
pub mod registry;
pub mod sim;
pub mod soak;

/// Where a framework daemon finds its cluster: the environment of the
/// cluster's processes (its `MEZZO_HOME`), the masters, a dir for files.
pub trait Site {
    fn env(&self) -> Vec<(String, String)>;
    fn masters(&self) -> Vec<String>;
    fn dir(&self) -> &Path;
}

impl Site for Cluster {
    fn env(&self) -> Vec<(String, String)> {
        Cluster::env(self)
    }
    fn masters(&self) -> Vec<String> {
        Cluster::masters(self)
    }
    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Waits (10 s at most) until the masters at `addrs` have applied the same
/// Raft index, then returns their `/raft/registry`, read with `get`.
pub async fn registries(addrs: &[String], get: impl AsyncFn(&str, &str) -> Result<Value>) -> Result<Vec<Value>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let applied = async || {
        let mut applied = std::collections::HashSet::new();
        for a in addrs {
            applied.insert(get(a, "/raft").await.ok().and_then(|r| r["applied"].as_u64()));
        }
        applied
    };
    loop {
        let before = applied().await;
        if before.len() == 1 && !before.contains(&None) {
            let mut out = Vec::new();
            for a in addrs {
                out.push(get(a, "/raft/registry").await?);
            }
            // Applied indexes only grow: unchanged after the reads means
            // every registry was read at that one index (the leader may
            // have committed more meanwhile, e.g. a batch of task ends).
            if applied().await == before {
                return Ok(out);
            }
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "masters did not converge: {before:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Path of the `mezzo` binary: `$MEZZO_BIN`, else beside the running
/// executable (a driver such as `target/release/soak`), else next to the
/// test executable's `deps/` folder (where `cargo build` puts it).
/// How the master refuses an agent registration `first`: Attach is
/// answered at once, so the refusal ends the stream (a credential of the
/// wrong kind is refused at Attach itself). Errors if it is admitted.
pub async fn attach_refusal(
    channel: tonic::transport::Channel,
    first: mezzo_proto::v1::AgentMessage,
) -> Result<tonic::Status> {
    let mut client = mezzo_proto::v1::agent_api_client::AgentApiClient::new(channel);
    let mut inbound = match client.attach(tokio_stream::iter(vec![first])).await {
        Err(status) => return Ok(status),
        Ok(answer) => answer.into_inner(),
    };
    match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
        Err(_) => bail!("no answer to the registration within 10 s"),
        Ok(Err(status)) => Ok(status),
        Ok(Ok(m)) => bail!("the registration was not refused: {m:?}"),
    }
}

pub fn mezzo_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MEZZO_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    if let Some(beside) = exe.parent().map(|d| d.join("mezzo"))
        && beside.is_file()
    {
        return beside;
    }
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("mezzo");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p mezzo-cli` first (scripts/test does)",
        bin.display()
    );
    bin
}

/// The daemons' log filter: debug for Mezzo's crates (the tests read
/// the logs when they fail), or `MEZZO_TEST_LOG` (the scale benchmarks
/// run the daemons at their default, info: debug lines for 40,000 agents
/// are a cost no cluster pays).
fn daemon_log_filter() -> String {
    std::env::var("MEZZO_TEST_LOG")
        .unwrap_or_else(|_| "info,mezzo_master=debug,mezzo_agent=debug,mezzo_batch=debug,mezzo_sdk=debug".to_owned())
}

/// A log file in `dir` for a restart of `name` not used yet:
/// `NAME.restart-K.log`, so that every restart keeps its own.
pub fn restart_log(dir: &Path, name: &str) -> PathBuf {
    (1..)
        .map(|k| dir.join(format!("{name}.restart-{k}.log")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| dir.join(format!("{name}.restart.log")))
}

/// One running daemon.
#[derive(Debug)]
pub struct Daemon {
    pub name: String,
    pub addr: String,
    pub args: Vec<String>,
    /// Environment variables it was started with (kept for restarts).
    pub env: Vec<(String, String)>,
    /// The command prefix it was started through (kept for restarts).
    prefix: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `mezzo ARGS` and waits for its "listening on ADDR" line.
    pub async fn spawn(name: &str, args: &[String], log: PathBuf) -> Result<Daemon> {
        Daemon::spawn_via(&[], name, args, log).await
    }

    /// Like [`Daemon::spawn`], with environment variables.
    pub async fn spawn_env(env: &[(String, String)], name: &str, args: &[String], log: PathBuf) -> Result<Daemon> {
        Daemon::spawn_full(&[], env, name, args, log).await
    }

    /// Like [`Daemon::spawn`], through a command prefix that ends by
    /// exec'ing `mezzo` (e.g. `ip netns exec NS`), so the pid is mezzo's.
    pub async fn spawn_via(prefix: &[String], name: &str, args: &[String], log: PathBuf) -> Result<Daemon> {
        Daemon::spawn_full(prefix, &[], name, args, log).await
    }

    /// Spawns through a prefix, with environment variables.
    pub async fn spawn_full(
        prefix: &[String],
        env: &[(String, String)],
        name: &str,
        args: &[String],
        log: PathBuf,
    ) -> Result<Daemon> {
        let stderr = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut cmd = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(mezzo_bin());
                c
            }
            None => Command::new(mezzo_bin()),
        };
        let mut child = cmd
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("MEZZO_LOG", daemon_log_filter())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .context("spawn mezzo")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await? {
                if let Some((_, addr)) = line.split_once(" listening on ") {
                    return Ok::<_, anyhow::Error>(addr.trim().to_owned());
                }
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("{name} exited before listening; its log ends:\n{}", tail(&text))
        })
        .await
        .with_context(|| format!("{name} did not start in 20 s"))??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Daemon {
            name: name.to_owned(),
            addr,
            args: args.to_vec(),
            env: env.to_vec(),
            prefix: prefix.to_vec(),
            child: Some(child),
            log,
        })
    }

    /// Starts the same daemon again (same prefix, environment and
    /// arguments), logging to `log`: a restart after [`Daemon::kill`].
    pub async fn respawn(&self, log: PathBuf) -> Result<Daemon> {
        Daemon::spawn_full(&self.prefix, &self.env, &self.name, &self.args, log).await
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| c.id()).map(|p| p as i32)
    }

    /// How the daemon ended, if it did and the harness has not reaped it:
    /// a zombie's exit status is the last field of `/proc/PID/stat`. (A
    /// daemon gone without a word in its log was killed: this says by
    /// which signal.)
    pub fn how_it_ended(&self) -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        if fields.first() != Some(&"Z") {
            return None;
        }
        let code: i32 = fields.last()?.parse().ok()?;
        Some(match code & 0x7f {
            0 => format!("exited with status {}", code >> 8),
            signal => format!("killed by signal {signal}"),
        })
    }

    /// SIGKILLs the daemon and waits for it.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// SIGTERMs the daemon (a clean stop) and waits up to `limit` for it
    /// to exit; SIGKILLs it after that. Returns whether it exited by itself.
    pub async fn stop(&mut self, limit: Duration) -> bool {
        let Some(mut c) = self.child.take() else { return true };
        if let Some(pid) = c.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        if tokio::time::timeout(limit, c.wait()).await.is_ok() {
            return true;
        }
        let _ = c.kill().await;
        false
    }

    /// The daemon's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The host directory every test agent shares with its tasks, read-write
/// (`--host-paths`): tasks see the host's `/tmp` no more.
pub const SHARED_ROOT: &str = "/var/tmp/mezzo-tests-shared";

/// The `--host-paths` argument of a test agent (making [`SHARED_ROOT`]).
pub fn shared_root_arg() -> Result<String> {
    std::fs::create_dir_all(SHARED_ROOT)?;
    Ok(format!("{SHARED_ROOT}:rw"))
}

/// A directory outside the cluster that every task user may write to
/// (tasks run as nobody), for records tasks keep of themselves.
pub fn shared_dir(prefix: &str) -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(SHARED_ROOT)?;
    let d = tempfile::Builder::new().prefix(prefix).tempdir_in(SHARED_ROOT)?;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777))?;
    Ok(d)
}

/// How to build a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// 1, 3 or 5 masters (a Raft group).
    pub masters: usize,
    pub agents: usize,
    pub agent_resources: String,
    pub master_args: Vec<String>,
    pub agent_args: Vec<String>,
    /// Each master also serves Mesos' API in plain HTTP on a port of its
    /// own (`--mesos-listen`, see [`Cluster::mesos_addr`]).
    pub mesos_listen: bool,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            masters: 1,
            agents: 2,
            agent_resources: "cpus:8;mem:8192;disk:8192;ports:[31000-31099]".into(),
            master_args: vec![
                "--agent-timeout".into(),
                "3s".into(),
                "--agent-reregister-timeout".into(),
                "3s".into(),
                "--heartbeat-interval".into(),
                "500ms".into(),
            ],
            agent_args: vec![
                "--status-retry".into(),
                "300ms".into(),
                "--status-retry-max".into(),
                "2s".into(),
            ],
            mesos_listen: false,
        }
    }
}

/// Seconds of CPU (user + system) process `pid` has used, with those of
/// the children it waited for when `children` (for the benchmarks).
pub fn cpu_seconds(pid: i32, children: bool) -> Result<f64> {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"), children)
}

/// The calling thread's CPU time so far (user and system), in seconds.
pub fn thread_cpu_seconds() -> Result<f64> {
    stat_cpu_seconds("/proc/thread-self/stat", false)
}

fn stat_cpu_seconds(path: &str, children: bool) -> Result<f64> {
    let stat = std::fs::read_to_string(path)?;
    // After the command's closing parenthesis: fields 3.. of proc(5).
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // utime, stime, cutime, cstime are fields 14-17, here 11-14 (0-based).
    let field = |i: usize| f.get(i).copied().unwrap_or(0);
    let mut ticks = field(11) + field(12);
    if children {
        ticks += field(13) + field(14);
    }
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    Ok(ticks as f64 / hz)
}

/// Free loopback ports, found by binding port 0 and letting go.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}

/// Masters and agents.
#[derive(Debug)]
pub struct Cluster {
    pub masters: Vec<Daemon>,
    pub agents: Vec<Daemon>,
    pub dir: tempfile::TempDir,
    /// The agents' runtime dirs (task checkpoints), on a tmpfs as in a
    /// real deployment; removed with the cluster.
    pub runtime: tempfile::TempDir,
    /// How the harness reaches the cluster: as `user:admin`, over TLS.
    transport: Transport,
    /// An HTTP client of the masters with that credential.
    http: reqwest::Client,
    /// Each master's `--mesos-listen` address, when the spec asked.
    mesos: Vec<String>,
}

impl Cluster {
    pub async fn start(spec: ClusterSpec) -> Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("mezzo-test-").tempdir()?;
        let runtime = tempfile::Builder::new()
            .prefix("mezzo-test-run-")
            .tempdir_in("/dev/shm")
            .or_else(|_| tempfile::Builder::new().prefix("mezzo-test-run-").tempdir())?;
        let insecure = spec.master_args.iter().any(|a| a == "--insecure");
        let mut cluster = Cluster {
            masters: Vec::new(),
            agents: Vec::new(),
            dir,
            runtime,
            transport: Transport::Plain,
            http: http_client(&Transport::Plain, MASTER_DNS_NAME)?,
            mesos: Vec::new(),
        };
        if spec.mesos_listen {
            cluster.mesos = free_ports(spec.masters)?
                .into_iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect();
        }
        let addrs: Vec<String> = if spec.masters == 1 {
            vec!["127.0.0.1:0".into()]
        } else {
            free_ports(spec.masters)?
                .into_iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect()
        };
        for (i, addr) in addrs.iter().enumerate() {
            let mut args: Vec<String> = vec!["master".into(), "--listen".into(), addr.clone(), "--work-dir".into()];
            args.push(cluster.dir.path().join(format!("master{i}")).display().to_string());
            if spec.masters > 1 {
                args.push("--peers".into());
                args.push(addrs.join(","));
            }
            args.extend(spec.master_args.iter().cloned());
            if let Some(m) = cluster.mesos.get(i) {
                args.extend(["--mesos-listen".to_owned(), m.clone()]);
            }
            let log = cluster.dir.path().join(format!("master{i}.log"));
            let env = cluster.env();
            cluster
                .masters
                .push(Daemon::spawn_env(&env, &format!("master{i}"), &args, log).await?);
            if i == 0 && !insecure {
                cluster.load_credentials()?;
            }
        }
        cluster.wait_leader().await?;
        for i in 0..spec.agents {
            cluster.add_agent(i, &spec).await?;
        }
        let n = spec.agents;
        cluster
            .wait_master("all agents registered", |s| {
                s["agents"].as_array().map(|a| a.len()) == Some(n)
            })
            .await?;
        Ok(cluster)
    }

    /// `MEZZO_HOME` of every process of this cluster: its CA and the
    /// administrator's client configuration.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The administrator's client configuration file.
    pub fn client_config(&self) -> PathBuf {
        self.home().join("config.toml")
    }

    /// The environment of every process of this cluster.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("MEZZO_HOME".into(), self.home().display().to_string())]
    }

    /// Reads the client configuration the first master wrote.
    fn load_credentials(&mut self) -> Result<()> {
        let path = self.client_config();
        let cfg = ClientConfig::load(&path).with_context(|| format!("the first master wrote no {}", path.display()))?;
        self.transport = cfg.transport(&path)?;
        self.http = http_client(&self.transport, MASTER_DNS_NAME)?;
        Ok(())
    }

    /// How the harness reaches the cluster (TLS as `user:admin`).
    pub fn transport(&self) -> Transport {
        self.transport.clone()
    }

    /// An HTTP client of the masters as `user:admin` (it follows a
    /// follower's redirect to the leader).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `https://ADDR/PATH` (or `http://` on an `--insecure` cluster).
    pub fn url(&self, addr: &str, path: &str) -> String {
        mezzo_proto::security::https::url(&self.transport, addr, path)
    }

    /// A framework's config for this cluster, as `user:admin`.
    pub fn sdk_config(&self, name: &str) -> mezzo_sdk::SchedulerConfig {
        mezzo_sdk::SchedulerConfig::new(self.masters(), name).with_transport(self.transport())
    }

    /// A gRPC channel to `addr` as `user:admin`.
    pub async fn channel(&self, addr: &str) -> Result<tonic::transport::Channel> {
        mezzo_proto::security::grpc::connect(addr, &self.transport)
            .await
            .map_err(anyhow::Error::msg)
    }

    /// `mezzo ARGS` as a CLI user of this cluster (its MEZZO_HOME).
    pub fn command(&self) -> Command {
        let mut c = Command::new(mezzo_bin());
        c.envs(self.env()).env("MEZZO_MASTER", self.masters().join(","));
        c
    }

    async fn add_agent(&mut self, i: usize, spec: &ClusterSpec) -> Result<()> {
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--master".into(),
            self.masters().join(","),
            "--listen".into(),
        ];
        args.push("127.0.0.1:0".into());
        args.push("--work-dir".into());
        args.push(self.dir.path().join(format!("agent{i}")).display().to_string());
        args.push("--runtime-dir".into());
        args.push(self.runtime_dir(i).display().to_string());
        // `{i}` in the resources or arguments becomes the agent's index
        // (e.g. a port range of its own when agents share loopback).
        let per_agent = |s: &String| s.replace("{i}", &i.to_string());
        args.push("--resources".into());
        args.push(per_agent(&spec.agent_resources));
        if !spec.agent_args.iter().any(|a| a == "--hostname") {
            args.push("--hostname".into());
            args.push(format!("agent{i}"));
        }
        args.push("--cgroup-parent".into());
        args.push(self.cgroup_parent(i));
        if !spec.agent_args.iter().any(|a| a == "--host-paths") {
            args.push("--host-paths".into());
            args.push(shared_root_arg()?);
        }
        args.extend(spec.agent_args.iter().map(per_agent));
        let d = Daemon::spawn_env(
            &self.env(),
            &format!("agent{i}"),
            &args,
            self.dir.path().join(format!("agent{i}.log")),
        )
        .await?;
        self.agents.push(d);
        Ok(())
    }

    /// Agent `i`'s runtime dir (its task checkpoints).
    pub fn runtime_dir(&self, i: usize) -> PathBuf {
        self.runtime.path().join(format!("agent{i}"))
    }

    /// The parent cgroup of agent `i`'s containers ([`cgroup_parent`]).
    pub fn cgroup_parent(&self, i: usize) -> String {
        cgroup_parent(self.dir.path(), i)
    }

    /// Every master's address.
    pub fn masters(&self) -> Vec<String> {
        self.masters.iter().map(|m| m.addr.clone()).collect()
    }

    /// Where master `i` serves Mesos' API in plain HTTP (the spec's
    /// `mesos_listen`).
    pub fn mesos_addr(&self, i: usize) -> Result<&str> {
        self.mesos
            .get(i)
            .map(String::as_str)
            .context("the cluster was started without mesos_listen")
    }

    /// The first master's address (the only one in a one-master cluster).
    pub fn master_addr(&self) -> &str {
        &self.masters[0].addr
    }

    /// Restarts master `i` (after [`Daemon::kill`]) with its work dir.
    pub async fn restart_master(&mut self, i: usize) -> Result<()> {
        let old = &self.masters[i];
        let log = self.dir.path().join(format!("master{i}.restart.log"));
        let d = Daemon::spawn_env(&old.env.clone(), &old.name, &old.args.clone(), log).await?;
        self.masters[i] = d;
        Ok(())
    }

    /// The registries (`/raft/registry`) of the live masters, once they
    /// have applied the same index: equal on every master if Raft holds.
    pub async fn registries(&self) -> Result<Vec<Value>> {
        let live: Vec<String> = self
            .masters
            .iter()
            .filter(|m| m.pid().is_some())
            .map(|m| m.addr.clone())
            .collect();
        registries(&live, async |addr: &str, path: &str| self.get(addr, path).await).await
    }

    /// Restarts agent `i` (after [`Daemon::kill`]) with its work dir.
    pub async fn restart_agent(&mut self, i: usize) -> Result<()> {
        let old = &self.agents[i];
        let log = self.dir.path().join(format!("agent{i}.restart.log"));
        let d = Daemon::spawn_env(&old.env.clone(), &old.name, &old.args.clone(), log).await?;
        self.agents[i] = d;
        Ok(())
    }

    /// The cgroup directory of a task's container in one v1 hierarchy
    /// (e.g. "cpuacct"), from the agent's checkpoint of it.
    pub fn task_cgroup(&self, agent: usize, controller: &str, task_id: &str) -> Option<PathBuf> {
        let root = self.runtime_dir(agent).join("tasks");
        for fw in std::fs::read_dir(root).ok()?.flatten() {
            let rec = fw.path().join(task_id).join("container.json");
            if let Ok(bytes) = std::fs::read(&rec) {
                let v: Value = serde_json::from_slice(&bytes).ok()?;
                let name = v["cgroup"].as_str()?;
                return Some(
                    Path::new("/sys/fs/cgroup")
                        .join(controller)
                        .join(self.cgroup_parent(agent))
                        .join(name),
                );
            }
        }
        None
    }

    /// GETs JSON from a master or an agent of this cluster, as `user:admin`.
    pub async fn get(&self, addr: &str, path: &str) -> Result<Value> {
        Ok(self.fetch(addr, path).await?.json().await?)
    }

    /// GETs text from a master or an agent of this cluster.
    pub async fn text(&self, addr: &str, path: &str) -> Result<String> {
        Ok(self.fetch(addr, path).await?.text().await?)
    }

    /// GETs `path` from the daemon at `addr`; an error unless it succeeds.
    async fn fetch(&self, addr: &str, path: &str) -> Result<reqwest::Response> {
        let url = self.url(addr, path);
        Ok(self.client_for(addr)?.get(&url).send().await?.error_for_status()?)
    }

    /// The client that verifies the daemon at `addr`: an agent's by its
    /// own name, a master's as `master.mezzo`.
    fn client_for(&self, addr: &str) -> Result<reqwest::Client> {
        match self.agents.iter().position(|a| a.addr == addr) {
            Some(i) => self.agent_http(i),
            None => Ok(self.http.clone()),
        }
    }

    /// An HTTP client of agent `i` as `user:admin`, verifying the agent by
    /// the name in the certificate it joined with.
    pub fn agent_http(&self, i: usize) -> Result<reqwest::Client> {
        http_client(&self.transport, &self.agent_name(i)?)
    }

    /// The name agent `i`'s certificate is verified by.
    pub fn agent_name(&self, i: usize) -> Result<String> {
        Ok(match &self.transport {
            Transport::Plain => "agent.mezzo".to_owned(),
            Transport::Tls(_) => {
                let cert = self.dir.path().join(format!("agent{i}")).join("tls/agent.crt");
                let pem = std::fs::read_to_string(&cert).with_context(|| format!("read {}", cert.display()))?;
                let der = mezzo_proto::security::tls::certs_from_pem("agent", &pem)?;
                let p = mezzo_proto::security::Principal::from_certificate(&der[0])?;
                p.dns_name().unwrap_or_default()
            }
        })
    }

    /// Index of the master that leads and serves, if any.
    pub async fn leader(&self) -> Option<usize> {
        for (i, m) in self.masters.iter().enumerate() {
            if m.pid().is_none() {
                continue;
            }
            // A one-row page, not `/state`: at a simulated cluster's size
            // the whole state takes seconds to write.
            if let Ok(r) = self.get(&m.addr, "/raft").await
                && r["role"] == "leader"
                && self.get(&m.addr, "/api/v1/agents?limit=1").await.is_ok()
            {
                return Some(i);
            }
        }
        None
    }

    /// Waits (10 s at most) until some master leads and serves.
    pub async fn wait_leader(&self) -> Result<usize> {
        self.wait_leader_within(Duration::from_secs(10)).await
    }

    /// Waits (`limit` at most) until some master leads and serves: a
    /// leader busy with a simulated cluster may take seconds to answer.
    pub async fn wait_leader_within(&self, limit: Duration) -> Result<usize> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(i) = self.leader().await {
                return Ok(i);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("no master leads after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `/state` from whichever live master answers (followers redirect).
    pub async fn master_state(&self) -> Result<Value> {
        let mut last = anyhow::anyhow!("no live master");
        for m in self.masters.iter().filter(|m| m.pid().is_some()) {
            match self.get(&m.addr, "/state").await {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    pub async fn agent_state(&self, i: usize) -> Result<Value> {
        let url = self.url(&self.agents[i].addr, "/state");
        Ok(self
            .agent_http(i)?
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Polls the leader's `/state` until `ok` holds (10 s at most).
    pub async fn wait_master(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Result<Value> {
        wait_for(what, Duration::from_secs(10), || self.master_state(), ok).await
    }

    /// Polls agent `i`'s `/state` until `ok` holds (10 s at most).
    pub async fn wait_agent(&self, i: usize, what: &str, ok: impl Fn(&Value) -> bool) -> Result<Value> {
        wait_for(what, Duration::from_secs(10), || self.agent_state(i), ok).await
    }

    /// Every daemon's log, for a failing test's message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for d in self.masters.iter().chain(&self.agents) {
            let ended = d.how_it_ended().map(|h| format!(" ({h})")).unwrap_or_default();
            out += &format!("\n--- {} log{ended} ---\n{}", d.name, tail(&d.log()));
        }
        out
    }

    // ---- Other credentials: callers that are not the administrator ----

    /// The cluster CA certificate (PEM), from the client configuration.
    pub fn ca_pem(&self) -> Result<String> {
        match &self.transport {
            Transport::Tls(c) => Ok(c.ca_pem().to_owned()),
            Transport::Plain => bail!("an --insecure cluster has no CA"),
        }
    }

    /// A transport that trusts the cluster's CA and proves nothing: an
    /// unauthenticated caller.
    pub fn anonymous_transport(&self) -> Result<Transport> {
        Ok(Transport::Tls(Credentials::new(&self.ca_pem()?)?))
    }

    /// A transport with a bearer token.
    pub fn token_transport(&self, token: &str) -> Result<Transport> {
        Ok(Transport::Tls(Credentials::new(&self.ca_pem()?)?.with_token(token)))
    }

    /// Master `i`'s own credential (its certificate, `master:<address>`),
    /// as a Raft peer presents it.
    pub fn master_transport(&self, i: usize) -> Result<Transport> {
        let dir = self.dir.path().join(format!("master{i}")).join("tls");
        let read =
            |f: &str| std::fs::read_to_string(dir.join(f)).with_context(|| format!("read {}/{f}", dir.display()));
        let id = Identity::from_pem(&read("master.crt")?, &read("master.key")?)?;
        Ok(Transport::Tls(Credentials::new(&self.ca_pem()?)?.with_identity(id)))
    }

    /// Joins the cluster as a new agent named after `hostname`, with the
    /// agent join token of the client configuration, as `mezzo agent`
    /// does: the credential of a fresh `agent:` principal.
    pub async fn join_as_agent(&self, hostname: &str) -> Result<Transport> {
        let cfg = ClientConfig::load(&self.client_config())?;
        let token = cfg
            .agent_join_token
            .context("no agent join token in the client configuration")?;
        let joined = mezzo_proto::security::join::join(&self.masters(), &token, hostname, "127.0.0.1:1").await?;
        Ok(Transport::Tls(joined.credentials))
    }

    /// Adds an ACL rule, as the administrator: `principal` may do
    /// `actions` to `object`.
    pub async fn allow(&self, principal: &str, actions: &[&str], object: &str) -> Result<()> {
        // Read from the leader: a follower may not have applied the last
        // change yet, and writing back its copy would undo it.
        let leader = self.masters[self.wait_leader().await?].addr.clone();
        let mut acl: Value = self.get(&leader, "/api/v1/acl").await?;
        let rules = acl["rules"].as_array_mut().context("rules")?;
        rules.push(serde_json::json!({ "principals": [principal], "actions": actions, "objects": [object] }));
        let r = self
            .http
            .put(self.url(&leader, "/api/v1/acl"))
            .json(&acl)
            .send()
            .await?;
        ensure!(r.status().is_success(), "set the ACL: {}", r.text().await?);
        Ok(())
    }

    /// Issues a bearer token for `principal` (`user:NAME`) as the
    /// administrator (`POST /api/v1/credentials`).
    pub async fn issue_token(&self, principal: &str) -> Result<String> {
        let leader = self.wait_leader().await?;
        let url = self.url(&self.masters[leader].addr, "/api/v1/credentials");
        let body = serde_json::json!({ "principal": principal, "token": true });
        let resp = self.http.post(&url).json(&body).send().await?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        ensure!(status.is_success(), "issuing a token for {principal}: {status} {v}");
        v["token"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no token in {v}"))
    }
}

/// An HTTP client verifying servers as `server`, with the transport's
/// credential (a bearer token goes with every request); it follows redirects (the harness reads through followers).
pub fn http_client(transport: &Transport, server: &str) -> Result<reqwest::Client> {
    http_client_waiting(transport, server, Duration::from_secs(5))
}

/// [`http_client`] with a longer (or shorter) time limit per request.
pub fn http_client_waiting(transport: &Transport, server: &str, limit: Duration) -> Result<reqwest::Client> {
    mezzo_proto::security::tls::ensure_provider();
    let mut b = reqwest::Client::builder().timeout(limit);
    if let Some(c) = transport.credentials() {
        b = b.use_preconfigured_tls(std::sync::Arc::unwrap_or_clone(c.client_config(server)?));
        if let Some(t) = c.token() {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(reqwest::header::AUTHORIZATION, format!("Bearer {t}").parse()?);
            b = b.default_headers(h);
        }
    }
    Ok(b.build()?)
}

fn tail(s: &str) -> &str {
    let start = s.len().saturating_sub(6000);
    let start = (start..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(s.len());
    &s[start..]
}

/// An HTTP client for a framework's own API (batch, service): it sends
/// the framework's API token, read from its work dir `work_dir`.
pub fn framework_http(work_dir: &Path, timeout: Duration) -> Result<reqwest::Client> {
    let path = mezzo_sdk::api_token::path_in(work_dir);
    let token = mezzo_sdk::api_token::read(&path).with_context(|| format!("read {}", path.display()))?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse()?);
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .default_headers(headers)
        .build()?)
}

/// Polls `get` until `ok` holds or `limit` passes.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, get: F, ok: impl Fn(&Value) -> bool) -> Result<Value>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Value>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut last;
    loop {
        match get().await {
            Ok(v) if ok(&v) => return Ok(v),
            Ok(v) => last = v,
            Err(e) => last = Value::String(e.to_string()),
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "timed out waiting for {what}; last seen: {}",
                serde_json::to_string(&last).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills every process whose working directory lies inside `dir`: tasks
/// orphaned by a killed agent.
pub fn kill_processes_under(dir: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(cwd) = std::fs::read_link(e.path().join("cwd"))
            && cwd.starts_with(dir)
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Kills every process in the cgroups named `parent` (and their children)
/// in every hierarchy under /sys/fs/cgroup, then removes them.
pub fn remove_cgroups(parent: &str) {
    // A frozen process dies of SIGKILL only once thawed, and the freezer
    // is another hierarchy: thaw everything first, or a hierarchy visited
    // before the freezer's waits in vain and is left behind.
    let freezer = Path::new("/sys/fs/cgroup/freezer").join(parent);
    for cg in std::fs::read_dir(&freezer)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
    {
        let _ = std::fs::write(cg.join("freezer.state"), "THAWED");
    }
    let _ = std::fs::write(freezer.join("freezer.state"), "THAWED");
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let dir = h.path().join(parent);
        if !dir.is_dir() {
            continue;
        }
        let children: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        for cg in children.iter().chain(std::iter::once(&dir)) {
            // Kill what is inside, then remove it; the kernel releases a
            // cgroup a little after its last process dies (EBUSY meanwhile).
            for _ in 0..300 {
                let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
                let pids: Vec<i32> = procs.lines().filter_map(|l| l.trim().parse().ok()).collect();
                if !pids.is_empty() {
                    // A frozen cgroup would hold its processes: thaw it first.
                    let _ = std::fs::write(cg.join("freezer.state"), "THAWED");
                    for p in pids {
                        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                    }
                } else if std::fs::remove_dir(cg).is_ok() || !cg.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// The parent cgroup of agent `i`'s containers in the cluster whose work
/// dir is `dir`: unique to that cluster, so that dropping it removes
/// exactly what it created.
pub fn cgroup_parent(dir: &Path, i: usize) -> String {
    let tag = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("mezzo-{tag}-agent{i}")
}

/// What a dropped cluster does: SIGKILLs its daemons, then the task
/// processes still working under `dir`, then removes the agents' cgroups.
pub fn kill_cluster<'a>(daemons: impl Iterator<Item = &'a Daemon>, dir: &Path, cgroup_parents: &[String]) {
    for d in daemons {
        if let Some(pid) = d.pid() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    kill_processes_under(dir);
    for parent in cgroup_parents {
        remove_cgroups(parent);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let parents: Vec<String> = (0..self.agents.len()).map(|i| self.cgroup_parent(i)).collect();
        kill_cluster(self.agents.iter().chain(&self.masters), self.dir.path(), &parents);
    }
}

/// Framework-side helpers over the public SDK.
pub mod fw {
    use std::collections::VecDeque;
    use std::time::Duration;

    use anyhow::{Result, bail};
    use mezzo_sdk::{Event, Events, Resources, Scheduler, TaskBuilder, v1};

    /// A framework's events with a backlog: waiting for one kind of event
    /// keeps the others for later waits instead of dropping them.
    #[derive(Debug)]
    pub struct Inbox {
        events: Events,
        backlog: VecDeque<Event>,
    }

    impl Inbox {
        pub fn new(events: Events) -> Inbox {
            Inbox {
                events,
                backlog: VecDeque::new(),
            }
        }

        /// The next event of any kind (backlog first).
        pub async fn any(&mut self, limit: Duration) -> Result<Event> {
            if let Some(e) = self.backlog.pop_front() {
                return Ok(e);
            }
            match tokio::time::timeout(limit, self.events.next()).await {
                Err(_) => bail!("no event within {limit:?}"),
                Ok(None) => bail!("event stream closed"),
                Ok(Some(e)) => Ok(e),
            }
        }

        /// The first event that `pick` accepts; the others stay queued.
        pub async fn next<T>(&mut self, limit: Duration, mut pick: impl FnMut(&Event) -> Option<T>) -> Result<T> {
            if let Some(i) = self.backlog.iter().position(|e| pick(e).is_some())
                && let Some(e) = self.backlog.remove(i)
                && let Some(t) = pick(&e)
            {
                return Ok(t);
            }
            let deadline = tokio::time::Instant::now() + limit;
            loop {
                match tokio::time::timeout_at(deadline, self.events.next()).await {
                    Err(_) => bail!("no matching event within {limit:?}"),
                    Ok(None) => bail!("event stream closed"),
                    Ok(Some(e)) => match pick(&e) {
                        Some(t) => return Ok(t),
                        None => self.backlog.push_back(e),
                    },
                }
            }
        }

        /// Waits for an offer.
        pub async fn offer(&mut self) -> Result<v1::Offer> {
            self.next(Duration::from_secs(10), |e| match e {
                Event::Offers(o) => o.first().cloned(),
                _ => None,
            })
            .await
        }

        /// Waits for an update of `task` whose state satisfies `want`.
        pub async fn update(
            &mut self,
            task: &str,
            limit: Duration,
            want: impl Fn(mezzo_sdk::TaskState) -> bool,
        ) -> Result<v1::TaskStatus> {
            self.next(limit, |e| match e {
                Event::Update(s) if s.task_id == task && mezzo_sdk::task_state(s).is_some_and(&want) => Some(s.clone()),
                _ => None,
            })
            .await
        }
    }

    /// Starts a framework on cluster `c` (as `user:admin`) and waits until
    /// it is subscribed.
    pub async fn subscribe(c: &crate::Cluster, name: &str, id: Option<String>) -> Result<(Scheduler, Inbox, String)> {
        let mut cfg = c.sdk_config(name);
        cfg.framework.failover_timeout_secs = 60.0;
        cfg.framework_id = id;
        let (s, ev) = Scheduler::start(cfg);
        let mut inbox = Inbox::new(ev);
        let fid = inbox
            .next(Duration::from_secs(10), |e| match e {
                Event::Subscribed { framework_id, .. } => Some(framework_id.clone()),
                _ => None,
            })
            .await?;
        Ok((s, inbox, fid))
    }

    /// A shell task with small resources.
    pub fn shell_task(id: &str, script: &str) -> v1::TaskInfo {
        let r = Resources::parse("cpus:0.1;mem:16").expect("static resources");
        TaskBuilder::new(id).resources(&r).shell(script).build()
    }
}

/// Every regular file below `dir` that holds `needle`.
pub fn files_holding(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => found.extend(files_holding(&path, needle)),
            Ok(t) if t.is_file() => {
                let bytes = std::fs::read(&path).unwrap_or_default();
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    found.push(path);
                }
            }
            _ => {}
        }
    }
    found
}
