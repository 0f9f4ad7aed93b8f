//! A cluster whose masters each run in a network namespace of their own
//! ([`crate::netns::Net`]), so that a test can cut one off the others;
//! agents and frameworks run in the root namespace and reach the masters
//! through the bridge. Needs root and iproute2.
//!
//! Security is on: the masters share one `MEZZO_HOME` (the first creates
//! the CA), the agents join with its agent join token, and the harness
//! reads as the administrator — from the root namespace over HTTPS, or
//! from inside a namespace with curl and the admin's certificate
//! ([`NetCluster::get_in`]).
//!
//! Declare the `Net` before the `NetCluster`: Rust drops the cluster first
//! (its daemons, orphaned tasks and cgroups), then the namespaces.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mezzo_proto::security::principal::MASTER_DNS_NAME;
use mezzo_proto::security::{ClientConfig, Transport};
use serde_json::Value;

use crate::netns::Net;
use crate::{Daemon, Site};

/// Masters in namespaces, agents in the root namespace.
#[derive(Debug)]
pub struct NetCluster {
    pub masters: Vec<Daemon>,
    pub agents: Vec<Daemon>,
    pub dir: tempfile::TempDir,
    /// The agents' runtime dirs, on a tmpfs as in a real deployment.
    pub runtime: tempfile::TempDir,
    /// As `user:admin`; follows no redirect: a follower's `/state` shows
    /// as 307.
    http: reqwest::Client,
    /// curl's TLS arguments: the CA, the admin's certificate and key.
    curl_tls: Vec<String>,
    peers: String,
}

impl NetCluster {
    /// `n` masters, master `i` in namespace `i` on port 5050, with a fast
    /// Raft tick and `extra` arguments.
    pub async fn start(net: &Net, n: usize, extra: &[String]) -> Result<NetCluster> {
        mezzo_proto::security::tls::ensure_provider();
        let addrs: Vec<String> = (0..n).map(|i| format!("{}:5050", net.ip(i))).collect();
        let dir = tempfile::Builder::new().prefix("mezzo-test-").tempdir()?;
        let runtime = tempfile::Builder::new()
            .prefix("mezzo-test-run-")
            .tempdir_in("/dev/shm")
            .or_else(|_| tempfile::Builder::new().prefix("mezzo-test-run-").tempdir())?;
        let mut g = NetCluster {
            masters: Vec::new(),
            agents: Vec::new(),
            dir,
            runtime,
            http: reqwest::Client::new(),
            curl_tls: Vec::new(),
            peers: addrs.join(","),
        };
        for (i, addr) in addrs.iter().enumerate() {
            let work = g.dir.path().join(format!("master{i}"));
            let mut args = strings(&[
                "master",
                "--listen",
                addr,
                "--peers",
                &g.peers,
                "--work-dir",
                &work.display().to_string(),
                "--raft-tick",
                "50ms",
                "--election-ticks",
                "6",
            ]);
            args.extend(extra.iter().cloned());
            let log = g.dir.path().join(format!("master{i}.log"));
            let d = Daemon::spawn_full(&net.prefix(i), &g.env(), &format!("master{i}"), &args, log).await;
            g.masters.push(d.with_context(|| g.logs())?);
            if i == 0 {
                g.load_credentials()?;
            }
        }
        Ok(g)
    }

    /// `MEZZO_HOME` of every daemon of the cluster.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("MEZZO_HOME".into(), self.dir.path().join("home").display().to_string())]
    }

    /// Reads the client configuration the first master wrote: the HTTP
    /// client, and the same credential as files for curl.
    fn load_credentials(&mut self) -> Result<()> {
        let path = self.dir.path().join("home/config.toml");
        let cfg = ClientConfig::load(&path)?;
        let transport = cfg.transport(&path)?;
        let Transport::Tls(creds) = &transport else {
            bail!("the cluster runs with TLS");
        };
        let tls = creds.client_config(MASTER_DNS_NAME)?;
        self.http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .use_preconfigured_tls(std::sync::Arc::unwrap_or_clone(tls))
            .build()?;
        let (cert, key) = cfg
            .cert
            .zip(cfg.key)
            .context("no admin certificate in the client configuration")?;
        for (flag, name, pem) in [
            ("--cacert", "ca.crt", &cfg.ca),
            ("--cert", "admin.crt", &cert),
            ("--key", "admin.key", &key),
        ] {
            let file = self.dir.path().join(name);
            std::fs::write(&file, pem)?;
            self.curl_tls.extend([flag.to_owned(), file.display().to_string()]);
        }
        Ok(())
    }

    /// GET `https://<master i>PATH` from inside namespace `ns` as the
    /// administrator (curl verifies the master by its address, which its
    /// certificate names).
    pub async fn get_in(&self, net: &Net, ns: usize, i: usize, path: &str) -> Result<(u16, String)> {
        let url = format!("https://{}{path}", self.masters[i].addr);
        net.http_get(ns, &url, &self.curl_tls).await
    }

    /// Starts the next agent in the root namespace, on the bridge's
    /// address, with `resources` and `extra` arguments (`{i}` in either
    /// becomes the agent's index). Its containers go under a cgroup parent
    /// of this cluster's own ([`NetCluster::cgroup_parent`]).
    pub async fn add_agent(&mut self, net: &Net, resources: &str, extra: &[String]) -> Result<usize> {
        let i = self.agents.len();
        let per_agent = |s: &str| s.replace("{i}", &i.to_string());
        let work = self.dir.path().join(format!("agent{i}"));
        let mut args = strings(&[
            "agent",
            "--master",
            &self.peers,
            "--listen",
            &format!("{}:0", net.gateway()),
            "--work-dir",
            &work.display().to_string(),
            "--runtime-dir",
            &self.runtime.path().join(format!("agent{i}")).display().to_string(),
            "--resources",
            &per_agent(resources),
            "--cgroup-parent",
            &self.cgroup_parent(i),
            "--status-retry",
            "300ms",
            "--status-retry-max",
            "2s",
            "--host-paths",
            &crate::shared_root_arg()?,
        ]);
        if !extra.iter().any(|a| a == "--hostname") {
            args.extend(["--hostname".to_owned(), format!("agent{i}")]);
        }
        args.extend(extra.iter().map(|a| per_agent(a)));
        let log = self.dir.path().join(format!("agent{i}.log"));
        let d = Daemon::spawn_env(&self.env(), &format!("agent{i}"), &args, log).await;
        self.agents.push(d.with_context(|| self.logs())?);
        Ok(i)
    }

    /// The parent cgroup of agent `i`'s containers ([`crate::cgroup_parent`]).
    pub fn cgroup_parent(&self, i: usize) -> String {
        crate::cgroup_parent(self.dir.path(), i)
    }

    /// Restarts master `i` (after [`Daemon::kill`]) in its namespace, with
    /// its work dir.
    pub async fn restart_master(&mut self, i: usize) -> Result<()> {
        let log = crate::restart_log(self.dir.path(), &format!("master{i}"));
        self.masters[i] = self.masters[i].respawn(log).await?;
        Ok(())
    }

    /// Restarts agent `i` (after [`Daemon::kill`]) with its work dir.
    pub async fn restart_agent(&mut self, i: usize) -> Result<()> {
        let log = crate::restart_log(self.dir.path(), &format!("agent{i}"));
        self.agents[i] = self.agents[i].respawn(log).await?;
        Ok(())
    }

    /// The administrator's HTTP client of the masters (no redirects).
    pub fn http_client(&self) -> reqwest::Client {
        self.http.clone()
    }

    /// `https://<master i>PATH`.
    pub fn url(&self, i: usize, path: &str) -> String {
        format!("https://{}{path}", self.masters[i].addr)
    }

    /// GET from the root namespace: status and JSON body (null if none).
    pub async fn get(&self, i: usize, path: &str) -> Result<(u16, Value)> {
        let r = self.http.get(self.url(i, path)).send().await?;
        let code = r.status().as_u16();
        Ok((code, r.json().await.unwrap_or(Value::Null)))
    }

    /// Among `candidates`, the master whose `/raft` says leader and whose
    /// `/state` answers 200.
    pub async fn serving_leader(&self, candidates: &[usize]) -> Option<(usize, Value)> {
        for &i in candidates {
            if let Ok((200, raft)) = self.get(i, "/raft").await
                && raft["role"] == "leader"
                && matches!(self.get(i, "/state").await, Ok((200, _)))
            {
                return Some((i, raft));
            }
        }
        None
    }

    /// The live master that leads and serves, waiting `limit` at most.
    pub async fn wait_leader(&self, limit: Duration) -> Result<usize> {
        let start = Instant::now();
        loop {
            let live: Vec<usize> = (0..self.masters.len())
                .filter(|i| self.masters[*i].pid().is_some())
                .collect();
            if let Some((i, _)) = self.serving_leader(&live).await {
                return Ok(i);
            }
            if start.elapsed() > limit {
                bail!("no master leads after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The registries of every master once they applied the same index
    /// ([`crate::registries`]).
    pub async fn registries(&self) -> Result<Vec<Value>> {
        let addrs: Vec<String> = self.masters.iter().map(|m| m.addr.clone()).collect();
        crate::registries(&addrs, async |addr: &str, path: &str| {
            let i = addrs.iter().position(|a| a == addr).context("a master's address")?;
            match self.get(i, path).await? {
                (200, v) => Ok(v),
                (code, v) => bail!("master{i} {path}: {code} {v}"),
            }
        })
        .await
    }

    /// Every daemon's log tail, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for d in self.masters.iter().chain(&self.agents) {
            let log = d.log();
            out += &format!("\n--- {} ({}) log ---\n{}", d.name, d.addr, crate::tail(&log));
        }
        out
    }
}

impl Site for NetCluster {
    fn env(&self) -> Vec<(String, String)> {
        NetCluster::env(self)
    }
    fn masters(&self) -> Vec<String> {
        self.peers.split(',').map(str::to_owned).collect()
    }
    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        let parents: Vec<String> = (0..self.agents.len()).map(|i| self.cgroup_parent(i)).collect();
        crate::kill_cluster(self.agents.iter().chain(&self.masters), self.dir.path(), &parents);
    }
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}
