use std::time::Duration;

use mezzo_proto::v1;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;

fn timing(grace_ms: u64, failures: u32, successes: u32) -> Timing {
    Timing {
        delay: Duration::ZERO,
        grace: Duration::from_millis(grace_ms),
        interval: Duration::from_millis(50),
        timeout: Duration::from_secs(1),
        failures,
        successes,
    }
}

#[test]
fn the_verdict_changes_only_on_thresholds_and_ignores_failures_in_the_grace_period() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let mut v = Verdict::new(timing(1000, 2, 2), t0);
    // In the grace period, before any pass: failures do not count.
    assert_eq!(v.record(false, at(10)), None);
    assert_eq!(v.record(false, at(20)), None);
    // The first pass decides at once.
    assert_eq!(v.record(true, at(30)), Some(true));
    assert_eq!(v.record(true, at(40)), None);
    // A pass ended the grace period: failures count now, two in a row.
    assert_eq!(v.record(false, at(50)), None);
    assert_eq!(v.record(true, at(60)), None);
    assert_eq!(v.record(false, at(70)), None);
    assert_eq!(v.record(false, at(80)), Some(false));
    assert_eq!(v.record(false, at(90)), None);
    // Healthy again after two passes in a row.
    assert_eq!(v.record(true, at(100)), None);
    assert_eq!(v.record(false, at(110)), None);
    assert_eq!(v.record(true, at(120)), None);
    assert_eq!(v.record(true, at(130)), Some(true));
}

#[test]
fn failures_after_the_grace_period_count_without_a_pass() {
    let t0 = Instant::now();
    let mut v = Verdict::new(timing(100, 1, 1), t0);
    assert_eq!(v.record(false, t0 + Duration::from_millis(50)), None);
    assert_eq!(v.record(false, t0 + Duration::from_millis(150)), Some(false));
}

/// The rules and defaults are `mezzo_proto::health`'s (tested there); the
/// agent reads a check with them and says why it refuses one.
#[test]
fn checks_are_read_by_the_shared_rules() {
    let tcp = v1::HealthCheck {
        tcp: Some(v1::TcpCheck { port: 8080 }),
        ..Default::default()
    };
    assert_eq!(parse(&tcp).map(|c| c.probe), Ok(Probe::Tcp { port: 8080 }));
    let bad = v1::HealthCheck {
        tcp: Some(v1::TcpCheck { port: 70_000 }),
        ..Default::default()
    };
    assert_eq!(
        parse(&bad).err().as_deref(),
        Some("health check port 70000 is not from 1 to 65535")
    );
}

/// A check of a task run without isolation, started for real.
fn host_check(probe: Probe, dir: &std::path::Path) -> (Checker, mpsc::Receiver<Change>, Metrics) {
    let (tx, rx) = mpsc::channel(4);
    let metrics = Metrics::new();
    let entry = Entry::Host {
        sandbox: dir.to_owned(),
        env: vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("GREETING".into(), "hi".into()),
        ],
    };
    let check = HealthCheck {
        probe,
        timing: timing(0, 2, 1),
    };
    (spawn(check, entry, tx, metrics.clone()), rx, metrics)
}

async fn next(rx: &mut mpsc::Receiver<Change>) -> Change {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a change within 10 s")
        .expect("the checker runs")
}

#[tokio::test]
async fn a_command_check_runs_in_the_sandbox_with_the_environment_and_follows_its_exit_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = "echo $GREETING; test -f ready";
    let (_checker, mut rx, metrics) = host_check(
        Probe::Command(vec!["/bin/sh".into(), "-c".into(), script.into()]),
        dir.path(),
    );
    let change = next(&mut rx).await;
    assert!(!change.healthy, "{change:?}");
    assert!(change.message.contains("exited 1: hi"), "{change:?}");
    std::fs::write(dir.path().join("ready"), b"").expect("ready");
    let change = next(&mut rx).await;
    assert!(change.healthy && change.message.contains("exited 0"), "{change:?}");
    let text = metrics.encode();
    assert!(
        text.contains(r#"mezzo_agent_health_checks_total{result="failed"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"mezzo_agent_health_checks_total{result="passed"}"#),
        "{text}"
    );
}

#[tokio::test]
async fn tcp_and_http_checks_follow_the_listener() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Answers 200 to the first two requests, then 503.
    let server = tokio::spawn(async move {
        for n in 0.. {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut conn, &mut buf).await;
            let head = if n < 2 { "200 OK" } else { "503 Service Unavailable" };
            let _ = conn
                .write_all(format!("HTTP/1.1 {head}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes())
                .await;
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let (_http, mut rx, _) = host_check(
        Probe::Http {
            port,
            path: "/health".into(),
        },
        dir.path(),
    );
    let change = next(&mut rx).await;
    assert!(change.healthy, "{change:?}");
    assert!(change.message.contains("/health answered 200"), "{change:?}");
    let change = next(&mut rx).await;
    assert!(!change.healthy && change.message.contains("503"), "{change:?}");
    server.abort();
    let _ = server.await;
    // Nothing listens on the port any more.
    let (_tcp, mut rx, _) = host_check(Probe::Tcp { port }, dir.path());
    let change = next(&mut rx).await;
    assert!(
        !change.healthy && change.message.contains("cannot connect"),
        "{change:?}"
    );
}
