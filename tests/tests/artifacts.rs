//! Issue 19, artifact fetching, end to end: a real master and agent, the
//! artifacts served by an HTTP server on loopback, tasks run with
//! `mezzo run --uri` (docs/frameworks.md "Artifacts"). A fetched archive
//! is unpacked and its script runs; a second task with the same URI is
//! served by the agent's cache (its metrics and its log say so, and the
//! server saw one request); a wrong checksum ends
//! the task TASK_FAILED with REASON_FETCH_FAILED, naming the URI, and is
//! not served from the cache; credentials in a URI appear nowhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mezzo_tests::oci::sha256_hex;
use mezzo_tests::{Cluster, ClusterSpec};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SCRIPT: &[u8] = b"#!/bin/sh\necho \"hello from the artifact as $(id -un)\"\n";

/// A .tar.gz holding `tool/hello.sh`, executable.
fn tool_tgz() -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    let mut header = tar::Header::new_gnu();
    header.set_size(SCRIPT.len() as u64);
    header.set_mode(0o755);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, "tool/hello.sh", SCRIPT)?;
    Ok(builder.into_inner()?.finish()?)
}

/// A minimal HTTP/1.1 server on loopback answering every GET with `body`
/// (connection closed after each); its address and request count. It
/// stops when the test's runtime does.
async fn serve(body: Vec<u8>) -> Result<(String, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/gzip\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(&body).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Ok((addr, requests))
}

/// `mezzo run ARGS` to its end (60 s at most): exit code, stdout, stderr.
async fn run(c: &Cluster, args: &[&str]) -> Result<(Option<i32>, String, String)> {
    let mut cmd = c.command();
    cmd.arg("run").args(args).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .context("mezzo run did not end in 60 s")??;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok((out.status.code(), text(&out.stdout), text(&out.stderr)))
}

/// The task `mezzo run` told the end of on `stderr` (`Task <id> <STATE> …`),
/// as the leader lists it.
async fn task_told(c: &Cluster, stderr: &str) -> Result<Value> {
    let id = stderr
        .lines()
        .find_map(|l| l.strip_prefix("Task ")?.split_whitespace().next())
        .with_context(|| format!("no task told in {stderr}"))?;
    let page = c.get(c.master_addr(), &format!("/api/v1/tasks?q={id}")).await?;
    page["items"]
        .as_array()
        .and_then(|items| items.iter().find(|t| t["id"] == id))
        .cloned()
        .with_context(|| format!("task {id} not listed: {page}"))
}

async fn cache_hits(c: &Cluster) -> Result<String> {
    let metrics = c.text(&c.agents[0].addr, "/metrics").await?;
    Ok(metrics
        .lines()
        .find(|l| l.starts_with("mezzo_agent_artifact_cache_hits_total"))
        .unwrap_or("no mezzo_agent_artifact_cache_hits_total")
        .to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_are_fetched_cached_and_checked() -> Result<()> {
    // The artifacts are served on loopback.
    let mut agent_args = ClusterSpec::default().agent_args;
    agent_args.push("--artifact-allow-loopback".into());
    let c = Cluster::start(ClusterSpec {
        agents: 1,
        agent_args,
        ..Default::default()
    })
    .await?;
    let result = async {
        let tgz = tool_tgz()?;
        let (addr, requests) = serve(tgz.clone()).await?;
        let url = format!("http://{addr}/dl/tool.tar.gz");
        let good = format!("{url}#extract,cache,sha256={}", sha256_hex(&tgz));
        let command = ["--shell", "--", "./tool/hello.sh"];

        // A fetched archive is extracted, and its script is executable.
        let (code, stdout, stderr) = run(&c, &[&["--uri", good.as_str()][..], &command].concat()).await?;
        ensure!(code == Some(0), "{code:?}\nstdout {stdout}\nstderr {stderr}");
        ensure!(
            stdout.starts_with("hello from the artifact as "),
            "stdout {stdout:?}\nstderr {stderr}"
        );
        ensure!(
            requests.load(Ordering::SeqCst) == 1,
            "requests: {requests:?}\nstderr {stderr}"
        );
        ensure!(
            cache_hits(&c).await? == "mezzo_agent_artifact_cache_hits_total 0",
            "{}",
            cache_hits(&c).await?
        );

        // The second task with the same URI uses the cache.
        let (code, stdout, stderr) = run(&c, &[&["--uri", good.as_str()][..], &command].concat()).await?;
        ensure!(code == Some(0), "{code:?}\nstdout {stdout}\nstderr {stderr}");
        ensure!(stdout.starts_with("hello from the artifact"), "{stdout}");
        ensure!(requests.load(Ordering::SeqCst) == 1, "the second task downloaded again");
        ensure!(
            cache_hits(&c).await? == "mezzo_agent_artifact_cache_hits_total 1",
            "{}",
            cache_hits(&c).await?
        );
        let log = c.agents[0].log();
        ensure!(
            log.contains("from_cache=true"),
            "the agent did not log the cache hit:\n{log}"
        );

        // A wrong checksum fails the task with that reason, naming the URI;
        // the entry cached for the right one is not served for it.
        let wrong = "0".repeat(64);
        let bad = format!("{url}#extract,cache,sha256={wrong}");
        let (code, stdout, stderr) = run(&c, &[&["--uri", bad.as_str()][..], &command].concat()).await?;
        ensure!(code != Some(0), "{code:?}\nstdout {stdout}\nstderr {stderr}");
        ensure!(stdout.is_empty(), "the command ran: {stdout}");
        let said = format!("sha256 is {}, expected {wrong}", sha256_hex(&tgz));
        ensure!(
            stderr.contains("TASK_FAILED") && stderr.contains("cannot fetch its artifacts") && stderr.contains(&said),
            "{stderr}"
        );
        let task = task_told(&c, &stderr).await?;
        ensure!(
            task["state"] == "TASK_FAILED" && task["reason"] == "REASON_FETCH_FAILED",
            "{task}"
        );
        let message = task["message"].as_str().unwrap_or_default();
        ensure!(message == format!("artifact {url}: {said}"), "{task}");
        ensure!(
            requests.load(Ordering::SeqCst) == 2,
            "the wrong checksum was not downloaded: {requests:?}"
        );

        // Credentials in a URI (DESIGN.md "Trust") reach no status
        // message, no CLI output and no log: the URI is shown without
        // them and without its query.
        let token = "s3cr3t-t0ken";
        let with_credentials = format!("http://user:{token}@{addr}/dl/tool.tar.gz?X-Amz-Signature={token}");
        let bad = format!("{with_credentials}#extract,sha256={wrong}");
        let (code, stdout, stderr) = run(&c, &[&["--uri", bad.as_str()][..], &command].concat()).await?;
        ensure!(
            code != Some(0) && stdout.is_empty(),
            "{code:?}\nstdout {stdout}\nstderr {stderr}"
        );
        let task = task_told(&c, &stderr).await?;
        let message = task["message"].as_str().unwrap_or_default();
        ensure!(
            message == format!("artifact http://{addr}/dl/tool.tar.gz?…: {said}"),
            "{task}"
        );
        ensure!(!stderr.contains(token), "{stderr}");
        let logs = c.logs();
        ensure!(!logs.contains(token), "a log holds the URI's credentials:\n{logs}");
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}
