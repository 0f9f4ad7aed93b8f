//! The batch framework (`mezzo batch serve`) as a daemon beside a cluster,
//! and the records its tasks keep outside Mezzo: each task appends a line
//! to a file of its own in a shared directory, so that how often it ran is
//! known whatever Mezzo reports.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use mezzo_batch::client::Client;
use mezzo_batch::engine::JobStatus;
use mezzo_batch::job::JobState;

use crate::{Daemon, Site, mezzo_bin};

/// A batch framework daemon beside a cluster.
#[derive(Debug)]
pub struct Batch {
    pub daemon: Daemon,
    pub state_dir: PathBuf,
    /// Where its logs go (`batch.log`, then `batch.restart.log`).
    dir: PathBuf,
}

impl Batch {
    /// Starts `mezzo batch serve` against the site's masters and waits
    /// until it is ready.
    pub async fn start(site: &impl Site) -> Result<Batch> {
        let state_dir = site.dir().join("batch-state");
        let args: Vec<String> = vec![
            "batch".into(),
            "--addr".into(),
            "127.0.0.1:0".into(),
            "serve".into(),
            "--masters".into(),
            site.masters().join(","),
            "--state-dir".into(),
            state_dir.display().to_string(),
        ];
        let daemon = Daemon::spawn_env(&site.env(), "batch", &args, site.dir().join("batch.log")).await?;
        let b = Batch {
            daemon,
            state_dir,
            dir: site.dir().to_owned(),
        };
        b.wait_ready().await?;
        Ok(b)
    }

    /// Starts it again (after [`Daemon::kill`]) with its state dir; its
    /// address changes (port 0).
    pub async fn restart(&mut self) -> Result<()> {
        self.daemon = self.daemon.respawn(crate::restart_log(&self.dir, "batch")).await?;
        self.wait_ready().await
    }

    /// Waits until the framework has subscribed and loaded its jobs.
    pub async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.client().list().await.is_err() || !self.state_dir.join("framework_id").exists() {
            ensure!(
                Instant::now() < deadline,
                "batch framework not ready: {}",
                self.daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Waits for `name` to succeed, then checks from the tasks' own
    /// records (`runs-INDEX` files) that each of its `n` tasks ran once.
    pub async fn each_ran_once(&self, name: &str, n: usize, dir: &Path) -> Result<()> {
        self.wait_job(name, "succeeded", |s| s.summary.state == JobState::Succeeded)
            .await?;
        for i in 0..n {
            let runs = lines(&dir.join(format!("runs-{i}")));
            ensure!(runs == 1, "task {i} ran {runs} times");
        }
        let st = self.client().status(name, false, None).await?;
        ensure!(st.summary.counts.retried == 0, "{st:?}");
        Ok(())
    }

    /// A client with the framework's API token (none before it has made
    /// one: its calls are then refused).
    pub fn client(&self) -> Client {
        let client = Client::new(self.daemon.addr.clone());
        match mezzo_sdk::api_token::read(&mezzo_sdk::api_token::path_in(&self.state_dir)) {
            Ok(token) => client.with_token(token),
            Err(_) => client,
        }
    }

    pub fn framework_id(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.state_dir.join("framework_id"))?
            .trim()
            .to_owned())
    }

    /// Runs `mezzo batch ARGS` against this daemon (with the cluster's
    /// environment, as its user would).
    pub async fn cli(&self, args: &[&str]) -> Result<Output> {
        let out = tokio::process::Command::new(mezzo_bin())
            .envs(self.daemon.env.iter().cloned())
            .arg("batch")
            .arg("--addr")
            .arg(&self.daemon.addr)
            .arg("--token-file")
            .arg(mezzo_sdk::api_token::path_in(&self.state_dir))
            .args(args)
            .kill_on_drop(true)
            .output()
            .await?;
        Ok(out)
    }

    /// Submits `text` from a file; the command's output.
    pub async fn submit(&self, dir: &Path, text: &str, wait: bool) -> Result<Output> {
        let file = dir.join(format!("job-{}.toml", rand_suffix()));
        std::fs::write(&file, text)?;
        let path = file.display().to_string();
        let mut args = vec!["submit", path.as_str()];
        if wait {
            args.extend(["--wait", "--json"]);
        }
        tokio::time::timeout(Duration::from_secs(120), self.cli(&args))
            .await
            .context("submit did not return in 120 s")?
    }

    /// Polls the status of `name` until `ok` holds (60 s at most).
    pub async fn wait_job(&self, name: &str, what: &str, ok: impl Fn(&JobStatus) -> bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.client().status(name, true, None).await;
            if let Ok(s) = &s
                && ok(s)
            {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "job {name}: {what}: last {s:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every log of the framework (the first run's, then each restart's).
    pub fn logs(&self) -> String {
        logs_in(&self.dir)
    }
}

/// Every log of the batch framework started in `dir` (the first run's,
/// then each restart's).
pub fn logs_in(dir: &Path) -> String {
    let restarts = (1..).map(|k| dir.join(format!("batch.restart-{k}.log")));
    std::iter::once(dir.join("batch.log"))
        .chain(restarts.take_while(|p| p.exists()))
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n--- restart ---\n")
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A directory every task user may write to (tasks run as nobody).
pub fn shared_dir() -> Result<tempfile::TempDir> {
    crate::shared_dir("mezzo-batch-test-")
}

/// Lines in a file (0 if it does not exist): the runs a task recorded.
pub fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|s| s.lines().count()).unwrap_or(0)
}
