//! Health checks the agent runs for a task (`TaskInfo.health_check`), as
//! Mesos' checkers, Kubernetes' probes and Nomad's checks do: a command in
//! the task's container, or an HTTP or TCP connection from inside its
//! network namespace (so a task with a network of its own is checked too).
//!
//! One checker task per checked task, started when it runs and dropped
//! when it ends or is killed. It sends its supervisor a [`Change`] only
//! when the verdict changes ([`Verdict`]), which the supervisor reports
//! as a RUNNING update with `healthy` set. The agent does not kill an
//! unhealthy task: its framework decides (the service framework replaces
//! it).

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;

use mezzo_proto::v1;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::containerizer::Entry;
use crate::metrics::Metrics;

/// Output of a command check kept for the update's message.
const OUTPUT_KEPT: usize = 512;

pub use mezzo_proto::health::{HealthCheck, Probe, Timing};

/// A change of a task's health, for its supervisor to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub healthy: bool,
    /// What the deciding check saw.
    pub message: String,
}

/// The check a task asks for, or why it is not one: the master's own
/// check (`mezzo_proto::health`), as an agent never trusts it.
pub fn parse(c: &v1::HealthCheck) -> Result<HealthCheck, String> {
    mezzo_proto::health::parse(c).map_err(|e| e.to_string())
}

/// Consecutive results into a verdict. Undecided until the first success
/// or until the failures count: failures within the grace period do not,
/// until a first success ends it. An unhealthy task needs `successes`
/// passes in a row to be healthy again.
#[derive(Debug)]
pub struct Verdict {
    timing: Timing,
    grace_until: Instant,
    healthy: Option<bool>,
    passed_once: bool,
    fails: u32,
    passes: u32,
}

impl Verdict {
    pub fn new(timing: Timing, started: Instant) -> Verdict {
        Verdict {
            timing,
            grace_until: started + timing.grace,
            healthy: None,
            passed_once: false,
            fails: 0,
            passes: 0,
        }
    }

    /// Records one result; returns the new verdict when it changed.
    pub fn record(&mut self, ok: bool, now: Instant) -> Option<bool> {
        let next = if ok {
            self.passed_once = true;
            self.fails = 0;
            self.passes += 1;
            match self.healthy {
                Some(false) if self.passes < self.timing.successes => return None,
                _ => true,
            }
        } else {
            self.passes = 0;
            if !self.passed_once && now < self.grace_until {
                return None;
            }
            self.fails += 1;
            if self.fails < self.timing.failures {
                return None;
            }
            false
        };
        (self.healthy != Some(next)).then(|| {
            self.healthy = Some(next);
            next
        })
    }
}

/// Drops the checker with its owner.
#[derive(Debug)]
pub struct Checker(tokio::task::AbortHandle);

impl Drop for Checker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts checking a task that just started running (or was found again
/// running after an agent restart).
pub fn spawn(check: HealthCheck, entry: Entry, changes: mpsc::Sender<Change>, metrics: Metrics) -> Checker {
    Checker(tokio::spawn(run(check, entry, changes, metrics)).abort_handle())
}

async fn run(check: HealthCheck, entry: Entry, changes: mpsc::Sender<Change>, metrics: Metrics) {
    let t = check.timing;
    let started = Instant::now();
    let mut verdict = Verdict::new(t, started);
    let mut tick = tokio::time::interval_at(started + t.delay, t.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = tokio::time::timeout(t.timeout, probe(&check.probe, &entry)).await;
        let (ok, message) = match result {
            Ok(Ok(detail)) => (true, detail),
            Ok(Err(why)) => (false, why),
            Err(_) => (false, format!("no answer within {:?}", t.timeout)),
        };
        metrics.health_check(ok);
        if let Some(healthy) = verdict.record(ok, Instant::now())
            && changes.send(Change { healthy, message }).await.is_err()
        {
            return;
        }
    }
}

/// One check: what it saw, as `Ok` when it passed.
async fn probe(probe: &Probe, entry: &Entry) -> Result<String, String> {
    match probe {
        Probe::Command(argv) => command(entry, argv).await,
        Probe::Http { port, path } => {
            let stream = connect(entry, *port).await?;
            http_get(stream, *port, path).await
        }
        Probe::Tcp { port } => {
            connect(entry, *port).await?;
            Ok(format!("TCP port {port} accepted a connection"))
        }
    }
}

/// Runs a command check in the container; passes on exit status 0. Of
/// its output only the last [`OUTPUT_KEPT`] bytes are kept (a check may
/// write without end); a check cut short by its timeout is killed with
/// what it started (its process group, or its enter process, whose death
/// kills it).
async fn command(entry: &Entry, argv: &[String]) -> Result<String, String> {
    let mut cmd = entry.command(argv);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the check command: {e}"))?;
    let _group = matches!(entry, Entry::Host { .. })
        .then(|| child.id())
        .flatten()
        .map(KillGroup);
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let (out, err, status) = tokio::join!(tail(out), tail(err), child.wait());
    let status = status.map_err(|e| format!("cannot wait for the check command: {e}"))?;
    let mut text = out;
    text.extend_from_slice(&err);
    let start = text.len().saturating_sub(OUTPUT_KEPT);
    let tail = String::from_utf8_lossy(&text[start..]).trim().to_owned();
    let tail = if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    };
    match status.code() {
        Some(0) => Ok(format!("the check command exited 0{tail}")),
        Some(code) => Err(format!("the check command exited {code}{tail}")),
        None => Err(format!("the check command was killed{tail}")),
    }
}

/// The last [`OUTPUT_KEPT`] bytes of a stream, read to its end.
async fn tail(stream: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let Some(mut stream) = stream else { return Vec::new() };
    let mut kept = Vec::with_capacity(2 * OUTPUT_KEPT);
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = stream.read(&mut buf).await {
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > OUTPUT_KEPT {
            kept.drain(..kept.len() - OUTPUT_KEPT);
        }
    }
    kept
}

/// Kills a process group when dropped (a check of a task run without
/// isolation: what its shell started too).
struct KillGroup(u32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0 as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// A TCP connection to 127.0.0.1:`port` in the task's network namespace.
/// The namespace is opened through the task's init for every check, never
/// kept: once the task has ended the launcher may lend its namespace to
/// another container (`containerizer/init/netns_pool.rs`).
async fn connect(entry: &Entry, port: u16) -> Result<tokio::net::TcpStream, String> {
    let net = entry.open_net_ns().map_err(|e| e.to_string())?;
    let socket = match &net {
        None => tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?,
        Some(ns) => socket_in(ns).await?,
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    socket
        .connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr} in the task's network: {e}"))
}

/// A TCP socket made in the network namespace `ns` (a socket stays in the
/// namespace it was made in). Made on a thread of its own, which ends
/// afterwards: a thread that joined a namespace must not run anything else.
async fn socket_in(ns: &File) -> Result<tokio::net::TcpSocket, String> {
    let ns = ns.try_clone().map_err(|e| e.to_string())?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("health-netns".into())
        .spawn(move || {
            // Makes the socket only (no runtime needed): it is connected,
            // and registered with the runtime, by the caller.
            let made = nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("cannot enter the task's network namespace: {e}"))
                .and_then(|()| tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string()));
            let _ = tx.send(made);
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    rx.await.map_err(|_| "the namespace thread died".to_owned())?
}

/// `GET path` over `stream`; passes on a status from 200 to 399.
async fn http_get(stream: tokio::net::TcpStream, port: u16, path: &str) -> Result<String, String> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    // Drives the connection until the answer's head is in; dropped with
    // the sender.
    let conn = tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
        .header(hyper::header::USER_AGENT, "mezzo-health-check")
        .header(hyper::header::CONNECTION, "close")
        .body(String::new())
        .map_err(|e| format!("GET {url}: {e}"))?;
    let answer = sender.send_request(request).await;
    conn.abort();
    let status = answer.map_err(|e| format!("GET {url}: {e}"))?.status();
    match status.as_u16() {
        200..=399 => Ok(format!("GET {url} answered {status}")),
        _ => Err(format!("GET {url} answered {status}")),
    }
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
