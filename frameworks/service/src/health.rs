//! Health checks, run by the framework against each instance's host and
//! ports: one small task per running instance probes it every interval
//! and reports each result to the owner, which alone decides (grace
//! period, consecutive failures) what a result means.
//!
//! Why from the framework and not inside the task: the checks see the
//! instance the way its clients do (through the network, by host:port),
//! cost no offers or extra tasks, and their results reach the owner
//! directly; a command check gets the instance's `HOST` and ports in its
//! environment and typically probes it (`curl -f http://$HOST:$PORT0/`).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::spec::Probe;

/// One probe's result, for the owner.
#[derive(Debug, Clone)]
pub struct Report {
    /// The instance's task id.
    pub task_id: String,
    /// Passed?
    pub ok: bool,
    /// Why it failed, for the events.
    pub detail: String,
}

/// Where and how to probe one instance.
#[derive(Debug, Clone)]
pub struct Target {
    /// Task id.
    pub task_id: String,
    /// Agent host name.
    pub host: String,
    /// Port names and numbers, in the spec's order.
    pub ports: Vec<(String, u64)>,
    /// The probe.
    pub probe: Probe,
    /// Between probes.
    pub interval: Duration,
    /// A probe longer than this fails.
    pub timeout: Duration,
}

/// Starts probing `target` until the returned handle is aborted (or the
/// owner's receiver is gone).
pub fn spawn(target: Target, http: reqwest::Client, reports: mpsc::Sender<Report>) -> AbortHandle {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(target.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let result = tokio::time::timeout(target.timeout, probe(&target, &http)).await;
            let (ok, detail) = match result {
                Ok(Ok(())) => (true, String::new()),
                Ok(Err(why)) => (false, why),
                Err(_) => (false, format!("no answer within {:?}", target.timeout)),
            };
            let report = Report {
                task_id: target.task_id.clone(),
                ok,
                detail,
            };
            if reports.send(report).await.is_err() {
                return;
            }
        }
    })
    .abort_handle()
}

/// An error with every cause it wraps (a client's "error sending request"
/// alone hid a name that does not resolve, issue 21), and what to do when
/// the agent's host name is the problem.
fn cause(e: &(dyn std::error::Error + 'static), host: &str) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    let text = parts.join(": ");
    let unresolved = ["dns error", "failed to lookup address", "Name or service not known"];
    if unresolved.iter().any(|u| text.contains(u)) {
        format!(
            "{text} (the agent's host name {host:?} does not resolve here: give the agent a --hostname this machine can resolve)"
        )
    } else {
        text
    }
}

async fn probe(t: &Target, http: &reqwest::Client) -> Result<(), String> {
    let port = |i: usize| t.ports.get(i).map(|p| p.1).ok_or_else(|| format!("no port {i}"));
    match &t.probe {
        Probe::Tcp { port: i } => {
            let addr = format!("{}:{}", t.host, port(*i)?);
            tokio::net::TcpStream::connect(&addr)
                .await
                .map(drop)
                .map_err(|e| format!("tcp {addr}: {}", cause(&e, &t.host)))
        }
        Probe::Http { port: i, path } => {
            let url = format!("http://{}:{}{path}", t.host, port(*i)?);
            let resp = http
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {}", cause(&e, &t.host)))?;
            let code = resp.status();
            if code.is_success() || code.is_redirection() {
                Ok(())
            } else {
                Err(format!("GET {url}: {code}"))
            }
        }
        Probe::Command(cmd) => {
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c").arg(cmd).env("HOST", &t.host).kill_on_drop(true);
            c.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            for (k, (name, p)) in t.ports.iter().enumerate() {
                c.env(format!("PORT{k}"), p.to_string());
                c.env(format!("MEZZO_PORT_{}", name.to_ascii_uppercase()), p.to_string());
            }
            let status = c.status().await.map_err(|e| format!("cannot run the check: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("check command: {status}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe of an agent whose host name does not resolve says so.
    #[tokio::test]
    async fn an_unresolvable_host_is_named_as_the_cause() {
        let target = |probe| Target {
            host: "no-such-host.invalid".into(),
            ..target(probe, 80)
        };
        mezzo_sdk::ensure_tls_provider();
        let http = reqwest::Client::new();
        for probe in [
            Probe::Http {
                port: 0,
                path: "/".into(),
            },
            Probe::Tcp { port: 0 },
        ] {
            let err = super::probe(&target(probe), &http).await.expect_err("no such host");
            assert!(err.contains("\"no-such-host.invalid\" does not resolve here"), "{err}");
        }
    }

    fn target(probe: Probe, port: u64) -> Target {
        Target {
            task_id: "web.1.x".into(),
            host: "127.0.0.1".into(),
            ports: vec![("http".into(), port)],
            probe,
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn tcp_and_command_probes_pass_and_fail() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let open = u64::from(listener.local_addr().expect("addr").port());
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            u64::from(l.local_addr().expect("addr").port())
        };
        mezzo_sdk::ensure_tls_provider();
        let http = reqwest::Client::new();
        assert!(probe(&target(Probe::Tcp { port: 0 }, open), &http).await.is_ok());
        let err = probe(&target(Probe::Tcp { port: 0 }, closed), &http)
            .await
            .expect_err("closed");
        assert!(err.contains(&format!("127.0.0.1:{closed}")), "{err}");
        // The command sees the instance's host and ports.
        let cmd = format!("test \"$HOST:$PORT0:$MEZZO_PORT_HTTP\" = 127.0.0.1:{open}:{open}");
        assert!(probe(&target(Probe::Command(cmd), open), &http).await.is_ok());
        assert!(
            probe(&target(Probe::Command("exit 3".into()), open), &http)
                .await
                .is_err()
        );
        let err = probe(&target(Probe::Tcp { port: 1 }, open), &http)
            .await
            .expect_err("no port 1");
        assert!(err.contains("no port 1"), "{err}");
    }

    #[tokio::test]
    async fn a_checker_reports_until_aborted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = u64::from(listener.local_addr().expect("addr").port());
        let (tx, mut rx) = mpsc::channel(4);
        mezzo_sdk::ensure_tls_provider();
        let handle = spawn(target(Probe::Tcp { port: 0 }, port), reqwest::Client::new(), tx);
        for _ in 0..2 {
            let r = rx.recv().await.expect("a report");
            assert!(r.ok && r.task_id == "web.1.x", "{r:?}");
        }
        handle.abort();
        while rx.recv().await.is_some() {}
    }
}
