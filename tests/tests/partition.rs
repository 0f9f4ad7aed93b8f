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
use mezzo_tests::mezzo_bin;
use mezzo_tests::netcluster::NetCluster;
use mezzo_tests::netns::Net;
use serde_json::Value;

/// Every wait's bound.
const LIMIT: Duration = Duration::from_secs(10);
/// How long a cut-off leader may keep serving (check_quorum: about two
/// election timeouts of 6 x 50 ms).
const STEP_DOWN: Duration = Duration::from_secs(2);

/// Three masters with the usual agent timeout, in namespaces.
async fn start(net: &Net) -> Result<NetCluster> {
    let args = ["--agent-timeout", "3s", "--heartbeat-interval", "500ms"].map(String::from);
    NetCluster::start(net, 3, &args).await
}

/// Starts an agent that runs no task: no cgroups to create or clean up.
async fn add_agent(g: &mut NetCluster, net: &Net) -> Result<()> {
    let none = ["--isolation", "none"].map(String::from);
    g.add_agent(net, "cpus:4;mem:4096;disk:4096;ports:[31000-31099]", &none)
        .await?;
    Ok(())
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
    let mut g = start(&net).await?;
    for (i, m) in g.masters.iter().enumerate() {
        println!("master{i}: {} in netns {}", m.addr, net.ns(i));
    }
    let result = scenario(&net, &mut g).await;
    result.with_context(|| g.logs())
}

async fn scenario(net: &Net, g: &mut NetCluster) -> Result<()> {
    let all: &[usize] = &[0, 1, 2];
    let gr = &*g;
    let ((old, old_raft), took) = until("a master leads and serves", LIMIT, || async move {
        gr.serving_leader(all).await.ok_or_else(|| "no leader".to_owned())
    })
    .await?;
    println!("leader: master{old} after {took:?}: {old_raft}");
    add_agent(g, net).await?;
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
    add_agent(g, net).await?;
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
async fn converged(g: &NetCluster, leader: &str) -> std::result::Result<Value, String> {
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
