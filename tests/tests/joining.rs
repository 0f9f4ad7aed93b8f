//! DESIGN.md "Trust": a single machine needs no configuration, and other
//! machines join with a token. Each "machine" here is a network namespace
//! (needs root and iproute2).

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use mezzo_proto::security::ClientConfig;
use mezzo_sdk::TaskState;
use mezzo_tests::netns::Net;
use mezzo_tests::{Daemon, fw, http_client, mezzo_bin, remove_cgroups};
use serde_json::json;

/// Runs `mezzo ARGS` to its end inside the namespace with `env`.
async fn mezzo_in(net: &Net, env: &[(String, String)], args: &[&str]) -> Result<std::process::Output> {
    let prefix = net.prefix(0);
    let out = tokio::process::Command::new(&prefix[0])
        .args(&prefix[1..])
        .arg(mezzo_bin())
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .kill_on_drop(true)
        .output();
    Ok(tokio::time::timeout(Duration::from_secs(60), out).await??)
}

/// An agent on another host joins with a join token it was given (no
/// credential of the cluster on its machine); a wrong token, or one of
/// A join token of `kind` (`agent` or `master`), from the token endpoint
/// at `url`, as the administrator. A master that has just started may not
/// lead yet (it answers 503 until it does): asked again for up to 10 s.
async fn join_token(http: &reqwest::Client, url: &str, kind: &str) -> Result<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = http
            .post(url)
            .json(&json!({ "kind": kind, "ttl_secs": 600 }))
            .send()
            .await?;
        let status = r.status();
        let body = r.text().await?;
        if status.is_success() {
            let v: serde_json::Value = serde_json::from_str(&body).with_context(|| body.clone())?;
            return Ok(v["token"].as_str().context("token")?.to_owned());
        }
        ensure!(
            status.as_u16() == 503 && std::time::Instant::now() < deadline,
            "token: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// another cluster, is refused and nothing joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_another_host_joins_with_a_token() -> Result<()> {
    let net = Net::new(1)?;
    let dir = tempfile::Builder::new().prefix("mezzo-join-").tempdir()?;
    let home = dir.path().join("home");
    let env = vec![("MEZZO_HOME".to_owned(), home.display().to_string())];
    let args: Vec<String> = [
        "master",
        "--listen",
        &format!("{}:0", net.gateway()),
        "--work-dir",
        &dir.path().join("master").display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let mut master = Daemon::spawn_env(&env, "master", &args, dir.path().join("master.log")).await?;
    let result = async {
        let path = home.join("config.toml");
        let admin = ClientConfig::load(&path)?.transport(&path)?;
        let http = http_client(&admin, "master.mezzo")?;
        let url = |p: &str| mezzo_proto::security::https::url(&admin, &master.addr, p);
        let token = join_token(&http, &url("/api/v1/tokens"), "agent").await?;

        // The other host has nothing of the cluster's: an empty MEZZO_HOME.
        let agent_home = dir.path().join("agent-home");
        let agent_args = |work: &str| -> Vec<String> {
            [
                "agent",
                "--master",
                &master.addr,
                "--listen",
                &format!("{}:0", net.ip(0)),
                "--work-dir",
                &dir.path().join(work).display().to_string(),
                "--isolation",
                "none",
            ]
            .map(String::from)
            .to_vec()
        };
        let with_token = |t: &str| {
            vec![
                ("MEZZO_HOME".to_owned(), agent_home.display().to_string()),
                ("MEZZO_JOIN_TOKEN".to_owned(), t.to_owned()),
            ]
        };
        // A token whose signature was altered, and one of another cluster.
        let mut altered = token.clone();
        let last = altered.pop().context("token")?;
        altered.push(if last == '0' { '1' } else { '0' });
        let foreign = {
            let other = mezzo_master::pki::Authority::generate()?;
            mezzo_proto::security::token::Token::issue(
                other.data_key(),
                mezzo_proto::security::token::Grant::Join {
                    kind: mezzo_proto::security::Kind::Agent,
                    ca_fingerprint: other.fingerprint().to_owned(),
                },
                0,
            )?
            .reveal()
        };
        for (bad, why) in [(altered.as_str(), "signature"), (foreign.as_str(), "not the cluster")] {
            let args = agent_args("bad-agent");
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = mezzo_in(&net, &with_token(bad), &args).await?;
            let err = String::from_utf8_lossy(&out.stderr);
            ensure!(!out.status.success() && err.contains(why), "{why}: {err}");
        }
        // The right token joins, from the other host.
        let mut agent = Daemon::spawn_full(
            &net.prefix(0),
            &with_token(&token),
            "agent",
            &agent_args("agent"),
            dir.path().join("agent.log"),
        )
        .await?;
        let run = async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let st: serde_json::Value = http.get(url("/state")).send().await?.json().await?;
                if st["agents"].as_array().is_some_and(|a| a.len() == 1) {
                    break;
                }
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "the agent never registered: {st}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // A task runs there.
            let cfg = mezzo_sdk::SchedulerConfig::new([master.addr.clone()], "joined").with_transport(admin.clone());
            let (s, ev) = mezzo_sdk::Scheduler::start(cfg);
            let mut inbox = fw::Inbox::new(ev);
            let o = inbox.offer().await?;
            s.accept(vec![o.offer_id], vec![fw::shell_task("there", "hostname")], None)
                .await?;
            let st = inbox
                .update("there", Duration::from_secs(10), TaskState::is_terminal)
                .await?;
            ensure!(mezzo_sdk::task_state(&st) == Some(TaskState::Finished), "{st:?}");
            s.teardown().await?;
            Ok::<_, anyhow::Error>(())
        }
        .await;
        agent.kill().await;
        run.with_context(|| agent.log())
    }
    .await;
    master.kill().await;
    result.with_context(|| master.log())
}

/// With no flags at all, a master, an agent and `mezzo run -- echo hi`
/// work on one machine, TLS and authentication included. The "machine"
/// is a fresh network namespace (so the default ports are free) with its
/// own `/tmp` (the default work dirs) and an empty `MEZZO_HOME`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_config_on_one_machine() -> Result<()> {
    let net = Net::new(1)?;
    let dir = tempfile::Builder::new().prefix("mezzo-zero-").tempdir_in("/var/tmp")?;
    let env = vec![("MEZZO_HOME".to_owned(), dir.path().join("home").display().to_string())];
    // Inside the namespace (nsenter: `ip netns exec` would hide the cgroup
    // hierarchies under a fresh /sys), with a private /tmp: then mezzo.
    let mut prefix = vec!["nsenter".to_owned(), format!("--net=/run/netns/{}", net.ns(0))];
    prefix.extend(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            "mount -t tmpfs none /tmp && exec \"$@\"",
            "sh",
        ]
        .map(String::from),
    );
    let mut master = Daemon::spawn_full(
        &prefix,
        &env,
        "master",
        &["master".into()],
        dir.path().join("master.log"),
    )
    .await?;
    let mut agent =
        match Daemon::spawn_full(&prefix, &env, "agent", &["agent".into()], dir.path().join("agent.log")).await {
            Ok(a) => a,
            Err(e) => {
                master.kill().await;
                bail!("{e:#}\n{}", master.log());
            }
        };
    let result = async {
        let run = tokio::process::Command::new(&prefix[0])
            .args(&prefix[1..])
            .arg(mezzo_bin())
            .args(["run", "--", "echo", "hi"])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), run).await??;
        let text = String::from_utf8_lossy(&out.stdout);
        let told = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success() && text == "hi\n" && told.contains("TASK_FINISHED"),
            "mezzo run: {:?}\n{text}\n{told}",
            out.status,
        );
        ensure!(master.log().contains("created the cluster CA"), "no CA was made");
        Ok(())
    }
    .await;
    // A clean stop removes the agent's parent cgroup; the rest is swept.
    agent.stop(Duration::from_secs(10)).await;
    master.kill().await;
    let parent = agent_parent_cgroup();
    if let Some(p) = parent {
        remove_cgroups(&p);
    }
    result.with_context(|| format!("{}\n{}", master.log(), agent.log()))
}

/// The default parent cgroup of an agent with the default work dir.
fn agent_parent_cgroup() -> Option<String> {
    let work = std::path::Path::new("/tmp/mezzo/agent-5051");
    Some(format!("mezzo-agent-{}", mezzo_agent::paths::work_dir_tag(work)))
}

/// A master on another host joins a running group: the operator adds its
/// address, then it starts with a master join token and nothing else of
/// the cluster's; it receives the CA (to admit agents itself) and its own
/// certificate, and replicates the registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_on_another_host_joins_with_a_token() -> Result<()> {
    let net = Net::new(1)?;
    let dir = tempfile::Builder::new().prefix("mezzo-join-m-").tempdir()?;
    let home = dir.path().join("home");
    let env = vec![("MEZZO_HOME".to_owned(), home.display().to_string())];
    let first_addr = format!("{}:{}", net.gateway(), free_port()?);
    let args: Vec<String> = [
        "master",
        "--listen",
        &first_addr,
        "--work-dir",
        &dir.path().join("master0").display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let mut first = Daemon::spawn_env(&env, "master0", &args, dir.path().join("master0.log")).await?;
    let mut second: Option<Daemon> = None;
    let result = async {
        let path = home.join("config.toml");
        let admin = ClientConfig::load(&path)?.transport(&path)?;
        let http = http_client(&admin, "master.mezzo")?;
        let url = |p: &str| mezzo_proto::security::https::url(&admin, &first_addr, p);
        let new_addr = format!("{}:{}", net.ip(0), 5050);
        // The token first: once the group counts the new master, nothing
        // commits until it runs.
        let token = join_token(&http, &url("/api/v1/tokens"), "master").await?;
        let r = http
            .post(url("/raft/members"))
            .json(&json!({ "address": new_addr }))
            .send()
            .await?;
        ensure!(r.status().is_success(), "add member: {}", r.text().await?);
        let other_home = dir.path().join("other-home");
        let env2 = vec![
            ("MEZZO_HOME".to_owned(), other_home.display().to_string()),
            ("MEZZO_JOIN_TOKEN".to_owned(), token),
        ];
        let args2: Vec<String> = [
            "master",
            "--listen",
            &new_addr,
            "--join",
            &first_addr,
            "--work-dir",
            &dir.path().join("master1").display().to_string(),
        ]
        .map(String::from)
        .to_vec();
        let d = Daemon::spawn_full(&net.prefix(0), &env2, "master1", &args2, dir.path().join("master1.log")).await?;
        second = Some(d);
        ensure!(other_home.join("pki/ca.crt").exists(), "the joined master holds no CA");
        // Both members replicate: a registry change shows on the new one.
        let r = http.put(url("/weights")).json(&json!({ "eng": 3 })).send().await?;
        ensure!(r.status().is_success(), "weights: {}", r.text().await?);
        let new_url = mezzo_proto::security::https::url(&admin, &new_addr, "/raft/registry");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = http.get(&new_url).send().await
                && let Ok(v) = r.json::<serde_json::Value>().await
                && v["weights"]["eng"] == 3.0
            {
                break;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the joined master never caught up"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let logs = format!(
        "{}\n{}",
        first.log(),
        second.as_ref().map(Daemon::log).unwrap_or_default()
    );
    if let Some(mut d) = second {
        d.kill().await;
    }
    first.kill().await;
    result.with_context(|| logs)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
