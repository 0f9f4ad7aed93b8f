//! `--config FILE`: daemons read their flags from a TOML file, with flags
//! and `MEZZO_*` variables taking precedence, and refuse a bad file.

use std::time::Duration;

use anyhow::Result;
use mezzo_tests::{Cluster, ClusterSpec, mezzo_bin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_takes_its_flags_from_a_config_file_and_flags_win() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("agent.toml");
    // `resources` is also given as a flag by the harness: the flag must win.
    std::fs::write(
        &file,
        "attributes = \"rack:r9,zone:z1\"\nresources = \"cpus:1;mem:64\"\n",
    )?;
    let mut spec = ClusterSpec {
        agents: 1,
        ..ClusterSpec::default()
    };
    spec.agent_args.extend(["--config".into(), file.display().to_string()]);
    let cluster = Cluster::start(spec).await?;
    let state = cluster.master_state().await?;
    let agent = &state["agents"][0];
    let attrs = agent["attributes"].to_string();
    assert!(attrs.contains("r9") && attrs.contains("z1"), "{attrs}");
    assert_eq!(agent["total"]["cpus"], 8.0, "{agent}");
    Ok(())
}

/// (The masters it starts get a `MEZZO_HOME` of their own: a file that
/// did parse would otherwise create a CA in the caller's `~/.mezzo`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_file_stops_the_daemon_with_the_key_named() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("master.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:0\"\nheartbeat_interval = \"1s\"\nsnapshot_evry = 5\n",
    )?;
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(mezzo_bin())
            .env("MEZZO_HOME", dir.path().join("home"))
            .args(["master", "--work-dir"])
            .arg(dir.path().join("m"))
            .arg("--config")
            .arg(&file)
            .output(),
    )
    .await??;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown key `snapshot_evry`"), "{err}");
    // A value the flag itself would refuse is refused too.
    std::fs::write(&file, "heartbeat_interval = \"soon\"\n")?;
    let out = tokio::process::Command::new(mezzo_bin())
        .env("MEZZO_HOME", dir.path().join("home"))
        .args(["master", "--config"])
        .arg(&file)
        .output()
        .await?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("heartbeat-interval"), "{err}");
    Ok(())
}
