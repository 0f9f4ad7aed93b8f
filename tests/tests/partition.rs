//! DESIGN.md "Leadership" and "Durable state (Raft)" under a network
//! partition: three masters, each in its own network namespace on a
//! private bridge ([`mezzo_tests::netns`]), agents in the root namespace.
//! The leader is cut off: it stops serving, the other two elect a leader
//! that keeps admitting agents; once healed, the old leader follows and all
//! three hold the same registry. Needs root and iproute2. Security is on:
//! the masters share one `MEZZO_HOME` (the first creates the CA), the
//! agents join with its agent join token, and the test reads as the
//! administrator (curl inside a namespace with the admin's certificate).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use mezzo_proto::security::principal::MASTER_DNS_NAME;
use mezzo_proto::security::{ClientConfig, Transport};
use mezzo_tests::netns::Net;
use mezzo_tests::{Daemon, mezzo_bin};
use serde_json::Value;

/// Every wait's bound.
const LIMIT: Duration = Duration::from_secs(10);
/// How long a cut-off leader may keep serving (check_quorum: about two
/// election timeouts of 6 x 50 ms).
const STEP_DOWN: Duration = Duration::from_secs(2);

/// Masters in namespaces, agents in the root namespace.
struct Group {
    masters: Vec<Daemon>,
    agents: Vec<Daemon>,
    dir: tempfile::TempDir,
    /// As `user:admin`; follows no redirect: a follower's `/state` shows
    /// as 307.
    http: reqwest::Client,
    /// curl's TLS arguments: the CA, the admin's certificate and key.
    curl_tls: Vec<String>,
    peers: String,
}

impl Group {
    /// Three masters, master `i` in namespace `i` on port 5050.
    async fn start(net: &Net) -> Result<Group> {
        mezzo_proto::security::tls::ensure_provider();
        let addrs: Vec<String> = (0..3).map(|i| format!("{}:5050", net.ip(i))).collect();
        let mut g = Group {
            masters: Vec::new(),
            agents: Vec::new(),
            dir: tempfile::Builder::new().prefix("mezzo-test-").tempdir()?,
            http: reqwest::Client::new(),
            curl_tls: Vec::new(),
            peers: addrs.join(","),
        };
        for (i, addr) in addrs.iter().enumerate() {
            let work = g.dir.path().join(format!("master{i}"));
            let args = strings(&[
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
                "--agent-timeout",
                "3s",
                "--heartbeat-interval",
                "500ms",
            ]);
            let log = g.dir.path().join(format!("master{i}.log"));
            let d = Daemon::spawn_full(&net.prefix(i), &g.env(), &format!("master{i}"), &args, log).await;
            g.masters.push(d.with_context(|| g.logs())?);
            if i == 0 {
                g.load_credentials()?;
            }
        }
        Ok(g)
    }

    /// `MEZZO_HOME` of every daemon of the group.
    fn env(&self) -> Vec<(String, String)> {
        vec![("MEZZO_HOME".into(), self.dir.path().join("home").display().to_string())]
    }

    /// Reads the client configuration the first master wrote: the HTTP
    /// client, and the same credential as files for curl.
    fn load_credentials(&mut self) -> Result<()> {
        let path = self.dir.path().join("home/config.toml");
        let cfg = ClientConfig::load(&path)?;
        let transport = cfg.transport(&path)?;
        let Transport::Tls(creds) = &transport else {
            bail!("the group runs with TLS");
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
    async fn get_in(&self, net: &Net, ns: usize, i: usize, path: &str) -> Result<(u16, String)> {
        let url = format!("https://{}{path}", self.masters[i].addr);
        net.http_get(ns, &url, &self.curl_tls).await
    }

    /// Starts agent `i` in the root namespace, on the bridge's address.
    async fn add_agent(&mut self, net: &Net) -> Result<()> {
        let i = self.agents.len();
        let work = self.dir.path().join(format!("agent{i}"));
        let args = strings(&[
            "agent",
            "--master",
            &self.peers,
            "--listen",
            &format!("{}:0", net.gateway()),
            "--work-dir",
            &work.display().to_string(),
            "--runtime-dir",
            &work.join("run").display().to_string(),
            "--resources",
            "cpus:4;mem:4096;disk:4096;ports:[31000-31099]",
            "--hostname",
            &format!("agent{i}"),
            "--status-retry",
            "300ms",
            "--status-retry-max",
            "2s",
            // These agents run no task: no cgroups to create or clean up.
            "--isolation",
            "none",
        ]);
        let log = self.dir.path().join(format!("agent{i}.log"));
        let d = Daemon::spawn_env(&self.env(), &format!("agent{i}"), &args, log).await;
        self.agents.push(d.with_context(|| self.logs())?);
        Ok(())
    }

    /// GET from the root namespace: status and JSON body (null if none).
    async fn get(&self, i: usize, path: &str) -> Result<(u16, Value)> {
        let r = self
            .http
            .get(format!("https://{}{path}", self.masters[i].addr))
            .send()
            .await?;
        let code = r.status().as_u16();
        Ok((code, r.json().await.unwrap_or(Value::Null)))
    }

    /// Among `candidates`, the master whose `/raft` says leader and whose
    /// `/state` answers 200.
    async fn serving_leader(&self, candidates: &[usize]) -> Option<(usize, Value)> {
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

    /// Every daemon's log tail, for a failure message.
    fn logs(&self) -> String {
        let mut out = String::new();
        for d in self.masters.iter().chain(&self.agents) {
            let log = d.log();
            let start = log.len().saturating_sub(6000);
            let start = (start..log.len())
                .find(|i| log.is_char_boundary(*i))
                .unwrap_or(log.len());
            out += &format!("\n--- {} ({}) log ---\n{}", d.name, d.addr, &log[start..]);
        }
        out
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for d in self.agents.iter_mut().chain(self.masters.iter_mut()) {
            if let Some(pid) = d.pid() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// Polls `probe` every 50 ms until it gives `Some`, at most `limit`.
async fn until<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> Result<(T, Duration)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, String>>,
{
    let start = Instant::now();
    loop {
        let last = match probe().await {
            Ok(t) => return Ok((t, start.elapsed())),
            Err(last) => last,
        };
        if start.elapsed() > limit {
            bail!("{what}: not within {limit:?}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_steps_down_and_rejoins() -> Result<()> {
    // Declared first so it is dropped last: the daemons die before their
    // namespaces are deleted (Net's drop also kills any straggler).
    mezzo_bin();
    let net = Net::new(3)?;
    let mut g = Group::start(&net).await?;
    for (i, m) in g.masters.iter().enumerate() {
        println!("master{i}: {} in netns {}", m.addr, net.ns(i));
    }
    let result = scenario(&net, &mut g).await;
    result.with_context(|| g.logs())
}

async fn scenario(net: &Net, g: &mut Group) -> Result<()> {
    let all: &[usize] = &[0, 1, 2];
    let gr = &*g;
    let ((old, old_raft), took) = until("a master leads and serves", LIMIT, || async move {
        gr.serving_leader(all).await.ok_or_else(|| "no leader".to_owned())
    })
    .await?;
    println!("leader: master{old} after {took:?}: {old_raft}");
    g.add_agent(net).await?;
    println!("agent0: {} (root namespace)", g.agents[0].addr);
    let gr = &*g;
    until("agent0 registered", LIMIT, || async move {
        match gr.get(old, "/state").await {
            Ok((200, s)) if s["agents"].as_array().is_some_and(|a| a.len() == 1) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;

    // Cut the leader off. Seen from inside its namespace, it stops leading
    // and stops serving /state (307 or 503).
    net.partition(old)?;
    println!("partitioned master{old} ({})", net.ns(old));
    let (_, took) = until("the cut-off leader steps down", STEP_DOWN, || async move {
        let raft = gr.get_in(net, old, old, "/raft").await;
        let state = gr.get_in(net, old, old, "/state").await;
        match (&raft, &state) {
            (Ok((200, r)), Ok((code, _))) if *code != 200 && !r.contains(r#""role":"leader""#) => Ok(()),
            _ => Err(format!("/raft {raft:?}, /state {state:?}")),
        }
    })
    .await?;
    println!("master{old} stopped serving {took:?} after the cut");

    // The other two elect a leader of a later term, which serves.
    let rest: &[usize] = &all.iter().copied().filter(|i| *i != old).collect::<Vec<_>>();
    let old_term = old_raft["term"].as_u64().context("term")?;
    let ((new, new_raft), took) = until("the majority elects a new leader", LIMIT, || async move {
        match gr.serving_leader(rest).await {
            Some((i, r)) if r["term"].as_u64() > Some(old_term) => Ok((i, r)),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    println!("new leader: master{new} {took:?} after the step-down: {new_raft}");
    let new_addr = gr.masters[new].addr.clone();

    // Admission keeps working: an agent started now registers with the new
    // leader.
    g.add_agent(net).await?;
    println!("agent1: {} (root namespace)", g.agents[1].addr);
    let gr = &*g;
    let new_addr = new_addr.as_str();
    let (_, took) = until("agent1 registers with the new leader", LIMIT, || async move {
        match gr.get(new, "/state").await {
            Ok((200, s))
                if s["agents"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a["hostname"] == "agent1")) =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    println!("agent1 admitted by master{new} after {took:?}");
    // The cut-off master saw none of it and still does not serve.
    let (code, body) = gr.get_in(net, old, old, "/raft/registry").await?;
    let reg: Value = serde_json::from_str(&body).with_context(|| format!("{code} {body}"))?;
    ensure!(
        reg["agents"].as_object().map(|a| a.len()) == Some(1),
        "the cut-off master applied what it could not have seen: {reg}"
    );
    let (code, _) = gr.get_in(net, old, old, "/state").await?;
    ensure!(code != 200, "the cut-off master serves /state");

    // Heal: the old leader follows the new one; all three agree on the
    // leader, the applied index and the registry, which holds both agents.
    net.heal(old)?;
    println!("healed master{old}");
    let (reg, took) = until("the three masters converge", LIMIT, || async move {
        converged(gr, new_addr).await
    })
    .await?;
    println!("converged {took:?} after healing: {reg}");
    let (_, raft) = gr.get(old, "/raft").await?;
    ensure!(raft["role"] == "follower", "master{old} after healing: {raft}");
    Ok(())
}

/// The common registry once every master follows `leader`, has applied
/// the same index (before and after reading the registries), and the
/// registries are equal with two agents.
async fn converged(g: &Group, leader: &str) -> std::result::Result<Value, String> {
    let applied = async || {
        let mut seen = Vec::new();
        for i in 0..3 {
            let (_, r) = g.get(i, "/raft").await.map_err(|e| format!("master{i}: {e}"))?;
            if r["leader"] != leader {
                return Err(format!("master{i} /raft names another leader: {r}"));
            }
            seen.push(r["applied"].as_u64());
        }
        Ok::<_, String>(seen)
    };
    let before = applied().await?;
    let mut regs = Vec::new();
    for i in 0..3 {
        let (_, r) = g
            .get(i, "/raft/registry")
            .await
            .map_err(|e| format!("master{i}: {e}"))?;
        regs.push(r);
    }
    let after = applied().await?;
    if before != after || before.windows(2).any(|w| w[0] != w[1]) {
        return Err(format!("applied indexes differ: {before:?} then {after:?}"));
    }
    if regs.windows(2).any(|w| w[0] != w[1]) {
        return Err(format!("registries differ: {regs:?}"));
    }
    if regs[0]["agents"].as_object().map(|a| a.len()) != Some(2) {
        return Err(format!("not two agents: {}", regs[0]));
    }
    Ok(regs.swap_remove(0))
}
