//! Benchmark driver for `scripts/bench-raft`: the Raft-replicated registry.
//!
//! - `raft-bench writes`: registry write throughput and commit latency of a
//!   running three-master Mezzo group against a running three-member etcd
//!   cluster, the same number of writes of the same size at the same
//!   concurrency. A Mezzo write is a Subscribe of a new framework, timed
//!   until its `Subscribed` event arrives: the master answers only after
//!   the framework's `RegisterFramework` op is committed (replicated and
//!   fsynced by a quorum) and applied. An etcd write is a Put of a fresh key
//!   whose value is as long as that op's JSON.
//! - `raft-bench failover`: three masters, one agent and a framework on the
//!   SDK; the leader is SIGKILLed and the time until a framework call
//!   succeeds again, and until the framework is offered resources again, is
//!   measured; the killed master is restarted and caught up between trials.
//!
//! Mezzo is spoken to as clients do: over TLS with the credential of the
//! client configuration (`--client-config`, else where clients look:
//! `$MEZZO_CLIENT_CONFIG`, `$MEZZO_HOME/config.toml`), or in plain text to
//! masters started with `--insecure` (`--insecure`, for comparison figures).
//!
//! etcd is spoken to over its own gRPC API with hand-written prost messages
//! (only the fields used here), so no `protoc` is needed to build this.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use futures::future::BoxFuture;
use hdrhistogram::Histogram;
use mezzo_master::registry::{FrameworkRecord, RegistryOp};
use mezzo_proto::ids::FrameworkId;
use mezzo_proto::security::principal::MASTER_DNS_NAME;
use mezzo_proto::security::{ClientConfig, Transport, client_config, grpc, https};
use mezzo_proto::v1;
use mezzo_proto::v1::scheduler_client::SchedulerClient;
use mezzo_sdk::{Event, Scheduler};
use mezzo_tests::{Cluster, ClusterSpec};
use tokio::sync::mpsc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

#[derive(Debug, Parser)]
#[command(about = "Benchmarks of Mezzo's Raft-replicated registry (run by scripts/bench-raft)")]
struct Cli {
    /// Plain text to masters started with `--insecure` (`failover` starts
    /// its masters and agent so).
    #[arg(long, global = true)]
    insecure: bool,
    /// The client configuration for the masters of `writes` (default:
    /// $MEZZO_CLIENT_CONFIG, else $MEZZO_HOME/config.toml).
    #[arg(long, global = true)]
    client_config: Option<PathBuf>,
    /// Talk to etcd over TLS with the certificates `etcd-certs` wrote in
    /// this dir (etcd started with client and peer TLS).
    #[arg(long, global = true)]
    etcd_tls: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Prints the size in bytes of one RegisterFramework op as the log stores it (JSON).
    OpSize,
    /// Writes certificates of the cluster's CA ($MEZZO_HOME/pki) for an
    /// etcd group on loopback into DIR: ca.crt, etcd.crt/key (server and
    /// peer, for 127.0.0.1 and localhost) and client.crt/key.
    EtcdCerts { out: PathBuf },
    /// Registry writes: Mezzo (Subscribe of a new framework) vs etcd (Put of a fresh key).
    Writes {
        /// The three masters, comma-separated.
        #[arg(long)]
        mezzo: String,
        /// etcd client URLs, comma-separated (the leader is found and used).
        #[arg(long)]
        etcd: String,
        /// Measured writes per system and concurrency.
        #[arg(long, default_value_t = 5000)]
        writes: u64,
        /// Concurrent clients, each with its own connection.
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// Unmeasured writes before each measured run.
        #[arg(long, default_value_t = 200)]
        warmup: u64,
        /// Measured runs one after the other on the same clusters (the
        /// registry grows by warmup + writes each round).
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Print the description and the column names first.
        #[arg(long)]
        header: bool,
    },
    /// Leader failover: SIGKILL the leader, time the way back.
    Failover {
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// Quiet time after the group is whole again, before the next kill.
        #[arg(long, default_value_t = 500)]
        settle_ms: u64,
        /// No kill sooner than this after the framework's last subscription
        /// (the SDK resets its reconnection backoff after a 10 s session;
        /// 0 measures back-to-back failovers).
        #[arg(long, default_value_t = 10_500)]
        min_session_ms: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        // On a signal the benchmark future is dropped: a failover cluster's
        // processes are killed by its Drop.
        tokio::select! {
            r = run(cli) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = term.recv() => bail!("terminated"),
        }
    })
}

async fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::OpSize => {
            println!("{}", sample_op_json().len());
            Ok(())
        }
        Cmd::EtcdCerts { out } => etcd_certs(&out),
        Cmd::Writes {
            mezzo,
            etcd,
            writes,
            clients,
            warmup,
            rounds,
            header,
        } => {
            let transport = transport(cli.insecure, cli.client_config)?;
            let runs = Runs {
                writes,
                clients,
                warmup,
                rounds,
                header,
            };
            let etcd_tls = cli.etcd_tls.as_deref().map(etcd_tls).transpose()?;
            writes_bench(&list(&mezzo), &list(&etcd), &transport, etcd_tls, runs).await
        }
        Cmd::Failover {
            trials,
            settle_ms,
            min_session_ms,
        } => {
            failover_bench(
                trials,
                Duration::from_millis(settle_ms),
                Duration::from_millis(min_session_ms),
                cli.insecure,
            )
            .await
        }
    }
}

/// How to reach the masters of `writes`.
fn transport(insecure: bool, path: Option<PathBuf>) -> Result<Transport> {
    if insecure {
        return Ok(Transport::Plain);
    }
    let path = path.unwrap_or_else(client_config::default_path);
    let cfg = ClientConfig::load(&path)?;
    Ok(cfg.transport(&path)?)
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------
// What is written

const FAILOVER_TIMEOUT_SECS: f64 = 7.0 * 24.0 * 3600.0;

/// The framework that write `i` of run `run` registers. The failover timeout
/// is a week (the SDK's default), so a framework whose stream the benchmark
/// drops stays registered: one Subscribe is exactly one registry write (with
/// a timeout of 0 its removal would be a second write).
fn framework_info(run: &str, i: u64) -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        name: format!("raft-bench-{run}-{i:07}"),
        user: "bench".into(),
        principal: "raft-bench".into(),
        roles: vec!["*".into()],
        failover_timeout_secs: FAILOVER_TIMEOUT_SECS,
        hostname: "raft-bench-client.localdomain".into(),
    }
}

/// The registry op a Subscribe of `framework_info` proposes, as the Raft
/// log stores it.
fn sample_op_json() -> Vec<u8> {
    let info = framework_info("c32", 1234);
    let op = RegistryOp::RegisterFramework(FrameworkRecord {
        id: FrameworkId::generate(),
        name: info.name,
        user: info.user,
        principal: info.principal,
        roles: info.roles,
        failover_timeout_secs: info.failover_timeout_secs,
        hostname: info.hostname,
        registered_at: 0.0,
    });
    serde_json::to_vec(&op).expect("a registry op serializes")
}

// ---------------------------------------------------------------------------
// Closed-loop clients

trait Writer: Send + 'static {
    fn write(&mut self, i: u64) -> BoxFuture<'_, Result<()>>;
}

#[derive(Debug)]
struct RunResult {
    writes: u64,
    secs: f64,
    /// Latency in microseconds.
    hist: Histogram<u64>,
}

impl RunResult {
    fn rate(&self) -> f64 {
        self.writes as f64 / self.secs
    }
    fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Each writer loops, taking the next index, until `writes` are done.
async fn run_writers<W: Writer>(writers: Vec<W>, first: u64, writes: u64) -> Result<RunResult> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut w in writers {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds");
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= writes {
                    return Ok::<_, anyhow::Error>(hist);
                }
                let t = Instant::now();
                w.write(first + i)
                    .await
                    .with_context(|| format!("write {}", first + i))?;
                hist.saturating_record(t.elapsed().as_micros() as u64);
            }
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    for t in tasks {
        hist.add(t.await??)?;
    }
    Ok(RunResult {
        writes,
        secs: start.elapsed().as_secs_f64(),
        hist,
    })
}

/// A channel to a master, as clients open one (TLS unless insecure).
async fn mezzo_channel(addr: &str, transport: &Transport) -> Result<Channel> {
    grpc::endpoint(addr, transport)
        .map_err(anyhow::Error::msg)?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .with_context(|| format!("connect to {addr}"))
}

/// A plain-text channel (etcd).
async fn channel(uri: &str, tls: Option<&ClientTlsConfig>) -> Result<Channel> {
    let uri = if uri.contains("://") {
        uri.to_owned()
    } else {
        format!("http://{uri}")
    };
    let mut e = Endpoint::from_shared(uri.clone())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2));
    if let Some(tls) = tls {
        e = e.tls_config(tls.clone())?;
    }
    e.connect().await.with_context(|| format!("connect to {uri}"))
}

/// Certificates for a TLS etcd group on loopback, from the cluster's CA:
/// the same CA and the same kind of keys (ECDSA P-256) as Mezzo's, so the
/// two pay the same for TLS.
fn etcd_certs(out: &std::path::Path) -> Result<()> {
    let ca = mezzo_master::pki::Authority::load(&client_config::mezzo_home().join("pki"))?;
    std::fs::create_dir_all(out)?;
    let validity = Duration::from_secs(24 * 3600);
    let hosts = ["127.0.0.1".to_owned()];
    let (server, key) = ca.issue_with_key(&"master:etcd".parse()?, &hosts, validity)?;
    let (client, ckey) = ca.issue_with_key(&"user:bench".parse()?, &[], validity)?;
    for (name, text) in [
        ("ca.crt", ca.cert_pem()),
        ("etcd.crt", server.cert_pem.as_str()),
        ("etcd.key", key.as_str()),
        ("client.crt", client.cert_pem.as_str()),
        ("client.key", ckey.as_str()),
    ] {
        std::fs::write(out.join(name), text)?;
    }
    Ok(())
}

/// The client side of etcd's TLS, from the dir `etcd-certs` wrote.
fn etcd_tls(dir: &std::path::Path) -> Result<ClientTlsConfig> {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).with_context(|| format!("{}/{f}", dir.display()));
    Ok(ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read("ca.crt")?))
        .identity(tonic::transport::Identity::from_pem(
            read("client.crt")?,
            read("client.key")?,
        ))
        .domain_name("localhost"))
}

// ---------------------------------------------------------------------------
// Mezzo

struct MezzoWriter {
    client: SchedulerClient<Channel>,
    run: String,
}

impl Writer for MezzoWriter {
    fn write(&mut self, i: u64) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let req = v1::SubscribeRequest {
                framework: Some(framework_info(&self.run, i)),
                framework_id: String::new(),
                suppressed_roles: Vec::new(),
            };
            let mut stream = self.client.subscribe(req).await?.into_inner();
            match stream.message().await? {
                Some(v1::Event {
                    event: Some(v1::event::Event::Subscribed(s)),
                }) if !s.framework_id.is_empty() => Ok(()),
                other => bail!("first event was not Subscribed: {other:?}"),
            }
            // Dropping the stream disconnects the framework; with its
            // one-week failover timeout it stays registered.
        })
    }
}

/// The master that leads and serves, found through `/raft` and confirmed
/// by one write.
async fn mezzo_leader(masters: &[String], transport: &Transport) -> Result<String> {
    let http = https::client(transport, MASTER_DNS_NAME, Duration::from_secs(2)).map_err(anyhow::Error::msg)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for m in masters {
            let Ok(r) = http.get(https::url(transport, m, "/raft")).send().await else {
                continue;
            };
            let Ok(v) = r.json::<serde_json::Value>().await else {
                continue;
            };
            if v["role"] == "leader" {
                let mut w = MezzoWriter {
                    client: SchedulerClient::new(mezzo_channel(m, transport).await?),
                    run: "probe".into(),
                };
                if w.write(0).await.is_ok() {
                    return Ok(m.clone());
                }
            }
        }
        if Instant::now() > deadline {
            bail!("no Mezzo master leads after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn mezzo_writers(leader: &str, n: usize, run: &str, transport: &Transport) -> Result<Vec<MezzoWriter>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(MezzoWriter {
            client: SchedulerClient::new(mezzo_channel(leader, transport).await?),
            run: run.to_owned(),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// etcd (etcdserverpb, only the fields used)

#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    cluster_id: u64,
    #[prost(uint64, tag = "2")]
    member_id: u64,
    #[prost(int64, tag = "3")]
    revision: i64,
    #[prost(uint64, tag = "4")]
    raft_term: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PutResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StatusRequest {}

#[derive(Clone, PartialEq, prost::Message)]
struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
    #[prost(string, tag = "2")]
    version: String,
    #[prost(uint64, tag = "4")]
    leader: u64,
}

async fn etcd_unary<Req, Resp>(grpc: &mut tonic::client::Grpc<Channel>, path: &'static str, req: Req) -> Result<Resp>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    grpc.ready()
        .await
        .map_err(|e| anyhow::anyhow!("etcd channel not ready: {e}"))?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let resp = grpc
        .unary(tonic::Request::new(req), PathAndQuery::from_static(path), codec)
        .await?;
    Ok(resp.into_inner())
}

struct EtcdWriter {
    grpc: tonic::client::Grpc<Channel>,
    prefix: String,
    value: Vec<u8>,
}

impl Writer for EtcdWriter {
    fn write(&mut self, i: u64) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let req = PutRequest {
                key: format!("{}/{i:07}", self.prefix).into_bytes(),
                value: self.value.clone(),
            };
            let resp: PutResponse = etcd_unary(&mut self.grpc, "/etcdserverpb.KV/Put", req).await?;
            if resp.header.is_none() {
                bail!("etcd Put answered without a header");
            }
            Ok(())
        })
    }
}

/// The leader's client URL and etcd's version.
async fn etcd_leader(endpoints: &[String], tls: Option<&ClientTlsConfig>) -> Result<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for e in endpoints {
            let Ok(ch) = channel(e, tls).await else { continue };
            let mut grpc = tonic::client::Grpc::new(ch);
            let Ok(st) =
                etcd_unary::<_, StatusResponse>(&mut grpc, "/etcdserverpb.Maintenance/Status", StatusRequest {}).await
            else {
                continue;
            };
            if st.leader != 0 && st.header.as_ref().map(|h| h.member_id) == Some(st.leader) {
                return Ok((e.clone(), st.version));
            }
        }
        if Instant::now() > deadline {
            bail!("no etcd member leads after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn etcd_writers(
    leader: &str,
    n: usize,
    prefix: &str,
    value: &[u8],
    tls: Option<&ClientTlsConfig>,
) -> Result<Vec<EtcdWriter>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(EtcdWriter {
            grpc: tonic::client::Grpc::new(channel(leader, tls).await?),
            prefix: prefix.to_owned(),
            value: value.to_vec(),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Benchmark 1: writes

/// The shape of the `writes` benchmark.
#[derive(Debug, Clone, Copy)]
struct Runs {
    writes: u64,
    clients: usize,
    warmup: u64,
    rounds: usize,
    header: bool,
}

async fn writes_bench(
    masters: &[String],
    etcd: &[String],
    transport: &Transport,
    etcd_tls: Option<ClientTlsConfig>,
    runs: Runs,
) -> Result<()> {
    let Runs {
        writes,
        clients,
        warmup,
        rounds,
        header,
    } = runs;
    let value = sample_op_json();
    let mezzo = mezzo_leader(masters, transport).await?;
    let (etcd_leader, version) = etcd_leader(etcd, etcd_tls.as_ref()).await?;
    if header {
        println!(
            "{writes} writes per run, each {} bytes (a RegisterFramework op's JSON; the etcd value is a copy of it); \
             {warmup} unmeasured writes first; each client has its own connection; etcd {version}; \
             Mezzo over {}",
            value.len(),
            match transport {
                Transport::Tls(_) => "mutual TLS (its client configuration's credential)",
                Transport::Plain => "plain text (--insecure masters)",
            }
        );
        println!(
            "  {:<6} {:>7} {:>10} {:>7} {:>8} {:>9} {:>8} {:>8} {:>8}   Mezzo/etcd",
            "system", "clients", "registry", "writes", "seconds", "writes/s", "p50 ms", "p99 ms", "max ms"
        );
    }
    // Frameworks in the registry (the probe write made one).
    let mut registered = 1;
    for round in 0..rounds.max(1) {
        let run = format!("c{clients}r{round}");
        let w = mezzo_writers(&mezzo, clients, &format!("{run}w"), transport).await?;
        run_writers(w, 0, warmup).await.context("Mezzo warm-up")?;
        registered += warmup;
        let w = mezzo_writers(&mezzo, clients, &run, transport).await?;
        let m = run_writers(w, 0, writes).await.context("Mezzo run")?;
        print_row("mezzo", clients, registered, &m, String::new());
        registered += writes;
        let w = etcd_writers(
            &etcd_leader,
            clients,
            &format!("bench/{run}w"),
            &value,
            etcd_tls.as_ref(),
        )
        .await?;
        run_writers(w, 0, warmup).await.context("etcd warm-up")?;
        let w = etcd_writers(
            &etcd_leader,
            clients,
            &format!("bench/{run}"),
            &value,
            etcd_tls.as_ref(),
        )
        .await?;
        let e = run_writers(w, 0, writes).await.context("etcd run")?;
        let ratio = format!(
            "throughput {:.2}x, p50 {:.2}x, p99 {:.2}x",
            m.rate() / e.rate(),
            m.ms(0.5) / e.ms(0.5),
            m.ms(0.99) / e.ms(0.99)
        );
        let keys = 1 + (round as u64) * (warmup + writes) + warmup;
        print_row("etcd", clients, keys, &e, ratio);
    }
    Ok(())
}

/// `registry`: frameworks (Mezzo) or keys (etcd) stored before the run.
fn print_row(system: &str, c: usize, registry: u64, r: &RunResult, ratio: String) {
    println!(
        "  {:<6} {:>7} {:>10} {:>7} {:>8.2} {:>9.0} {:>8.2} {:>8.2} {:>8.2}   {}",
        system,
        c,
        registry,
        r.writes,
        r.secs,
        r.rate(),
        r.ms(0.5),
        r.ms(0.99),
        r.hist.max() as f64 / 1000.0,
        ratio
    );
}

// ---------------------------------------------------------------------------
// Benchmark 2: failover

#[derive(Debug, Clone, Copy, PartialEq)]
enum Seen {
    Subscribed,
    Offers,
    Disconnected,
}

/// Follows the framework's events: offers are declined for an hour so the
/// current leader offers nothing more (a new leader starts without filters
/// and offers again).
fn pump(s: Scheduler, mut events: mezzo_sdk::Events) -> mpsc::UnboundedReceiver<(Instant, Seen)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            let now = Instant::now();
            let seen = match ev {
                Event::Subscribed { .. } => Seen::Subscribed,
                Event::Disconnected { .. } => Seen::Disconnected,
                Event::Offers(offers) => {
                    let ids: Vec<String> = offers.into_iter().map(|o| o.offer_id).collect();
                    let s = s.clone();
                    tokio::spawn(async move {
                        let _ = s.decline(ids, Some(3600.0)).await;
                    });
                    Seen::Offers
                }
                Event::Error { message } => {
                    eprintln!("framework removed: {message}");
                    return;
                }
                _ => continue,
            };
            if tx.send((now, seen)).is_err() {
                return;
            }
        }
    });
    rx
}

async fn raft_status(c: &Cluster, i: usize) -> Option<serde_json::Value> {
    c.get(&c.masters[i].addr, "/raft").await.ok()
}

/// Waits until every master has applied what the leader has applied.
async fn wait_caught_up(c: &Cluster, leader: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut applied = Vec::new();
        for i in 0..c.masters.len() {
            applied.push(raft_status(c, i).await.and_then(|v| v["applied"].as_u64()));
        }
        if applied[leader].is_some() && applied.iter().all(|a| *a == applied[leader]) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("masters did not catch up: applied {applied:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of a sorted list.
fn pct(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

async fn failover_bench(trials: usize, settle: Duration, min_session: Duration, insecure: bool) -> Result<()> {
    // TLS as by default, or everything --insecure for comparison.
    let plain: Vec<String> = if insecure { vec!["--insecure".into()] } else { vec![] };
    let spec = ClusterSpec {
        masters: 3,
        agents: 1,
        agent_resources: "cpus:2;mem:2048;disk:2048".into(),
        // The daemons' defaults: 50 ms Raft tick, election after 6-12 ticks,
        // heartbeats every tick; 1 s framework heartbeats.
        master_args: plain.clone(),
        agent_args: plain,
        mesos_listen: false,
    };
    let mut c = Cluster::start(spec).await?;
    let masters = c.masters();
    println!(
        "three masters {}, one agent ({}); {trials} trials, each kill at least {:.1} s after the framework's last subscription",
        masters.join(","),
        if insecure {
            "--insecure: plain text"
        } else {
            "mutual TLS"
        },
        min_session.as_secs_f64()
    );
    let cfg = c.sdk_config("failover-bench");
    let (s, events) = Scheduler::start(cfg);
    let mut rx = pump(s.clone(), events);

    let columns = [
        "new leader elected (/raft)",
        "agent re-registered",
        "framework re-subscribed",
        "framework call (Revive) succeeds",
        "framework receives Offers again",
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); columns.len()];
    println!(
        "  {:>5} {:>6} {:>6} {:>11} {:>10} {:>14} {:>10} {:>10} {:>11}",
        "trial", "killed", "new", "elected ms", "agent ms", "subscribed ms", "call ms", "offers ms", "catch-up ms"
    );
    // Offers received since the framework last (re)subscribed, and when
    // that subscription happened.
    let mut offered = false;
    let mut subscribed_at = Instant::now();
    for trial in 1..=trials {
        // Steady state: one leader, everyone caught up, the framework
        // subscribed to the leader and offered the agent's resources.
        let leader = c.wait_leader().await?;
        wait_caught_up(&c, leader).await?;
        let leader_addr = c.masters[leader].addr.clone();
        let old_term = raft_status(&c, leader)
            .await
            .and_then(|v| v["term"].as_u64())
            .unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            while let Ok((at, seen)) = rx.try_recv() {
                match seen {
                    Seen::Offers => offered = true,
                    Seen::Subscribed => {
                        offered = false;
                        subscribed_at = at;
                    }
                    Seen::Disconnected => offered = false,
                }
            }
            if offered && s.master().as_deref() == Some(leader_addr.as_str()) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "trial {trial}: the framework is not subscribed to {leader_addr} with offers (master {:?}){}",
                    s.master(),
                    c.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The SDK resets its reconnection backoff only after a session of
        // 10 s; kills closer together than that measure a framework whose
        // backoff is still raised from the previous failover.
        tokio::time::sleep(settle).await;
        tokio::time::sleep_until((subscribed_at + min_session).into()).await;
        while let Ok((_, seen)) = rx.try_recv() {
            if seen != Seen::Offers {
                bail!("trial {trial}: the framework lost its subscription while settling ({seen:?})");
            }
        }

        let t0 = Instant::now();
        c.masters[leader].kill().await;
        let survivors: Vec<usize> = (0..c.masters.len()).filter(|i| *i != leader).collect();
        let limit = Duration::from_secs(30);
        let poll = Duration::from_millis(10);
        let elected = async {
            loop {
                for &i in &survivors {
                    if let Some(v) = raft_status(&c, i).await
                        && v["role"] == "leader"
                        && v["term"].as_u64().unwrap_or(0) > old_term
                    {
                        return Some((t0.elapsed(), i));
                    }
                }
                if t0.elapsed() > limit {
                    return None;
                }
                tokio::time::sleep(poll).await;
            }
        };
        let agent_back = async {
            loop {
                if let Ok(v) = c.agent_state(0).await
                    && let Some(m) = v["master"].as_str()
                    && m != leader_addr
                {
                    return Some(t0.elapsed());
                }
                if t0.elapsed() > limit {
                    return None;
                }
                tokio::time::sleep(poll).await;
            }
        };
        let call_ok = async {
            loop {
                if s.revive().await.is_ok() {
                    return Some(t0.elapsed());
                }
                if t0.elapsed() > limit {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let offers_again = async {
            let mut resubscribed = None;
            loop {
                match tokio::time::timeout(limit, rx.recv()).await {
                    Ok(Some((at, Seen::Offers))) => return resubscribed.map(|r| (r, at.duration_since(t0))),
                    Ok(Some((at, Seen::Subscribed))) => resubscribed = Some(at),
                    Ok(Some((_, Seen::Disconnected))) => {}
                    _ => return None,
                }
            }
        };
        let (e, g, a, b) = tokio::join!(elected, agent_back, call_ok, offers_again);
        let (Some((te, new)), Some(tg), Some(ta), Some((sub_at, tb))) = (e, g, a, b) else {
            bail!(
                "trial {trial}: no recovery within {limit:?} (elected {e:?}, agent {g:?}, call {a:?}, offers {b:?}){}",
                c.logs()
            );
        };
        // The Offers event that ended the wait came after the re-subscription.
        offered = true;
        subscribed_at = sub_at;
        let ts = sub_at.duration_since(t0);

        let t1 = Instant::now();
        c.restart_master(leader).await?;
        let now_leader = c.wait_leader().await?;
        wait_caught_up(&c, now_leader).await?;
        let catch_up = t1.elapsed();
        println!(
            "  {trial:>5} {:>6} {:>6} {:>11.0} {:>10.0} {:>14.0} {:>10.0} {:>10.0} {:>11.0}",
            format!("m{}", leader + 1),
            format!("m{}", new + 1),
            ms(te),
            ms(tg),
            ms(ts),
            ms(ta),
            ms(tb),
            ms(catch_up)
        );
        for (v, d) in samples.iter_mut().zip([te, tg, ts, ta, tb]) {
            v.push(ms(d));
        }
    }
    s.stop().await;
    println!("from SIGKILL of the leader, over {trials} trials:");
    for (what, mut v) in columns.iter().zip(samples) {
        v.sort_by(f64::total_cmp);
        println!(
            "  {:<34} p50 {:>6.0} ms  p99 {:>6.0} ms  max {:>6.0} ms",
            what,
            pct(&v, 0.5),
            pct(&v, 0.99),
            v[v.len() - 1]
        );
    }
    Ok(())
}
