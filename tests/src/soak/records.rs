//! What the soak knows without asking Mezzo: the lines batch tasks append
//! to their own files, and a prober that counts the service's instances
//! answering HTTP on the agents' ports. Plus one sampler that does ask
//! Mezzo, for a figure only: the dropped tasks the masters list.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Nanoseconds since the Unix epoch (the clock `date +%s%N` reads in tasks).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The shell line a batch task runs first: it appends its start time to
/// `DIR/runs-JOB-INDEX`.
pub fn record_command(dir: &Path, job: &str) -> String {
    format!("echo $(date +%s%N) >> {}/runs-{job}-$MEZZO_TASK_INDEX", dir.display())
}

/// Start times (ns) each `(job, index)` recorded.
pub type Runs = BTreeMap<(String, u32), Vec<u64>>;

/// Reads every `runs-JOB-INDEX` file of `dir`.
pub fn read_runs(dir: &Path) -> Runs {
    let mut runs = Runs::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((job, index)) = name.strip_prefix("runs-").and_then(|r| r.rsplit_once('-')) else {
            continue;
        };
        let Ok(index) = index.parse::<u32>() else { continue };
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let starts = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        runs.insert((job.to_owned(), index), starts);
    }
    runs
}

/// One reading of the prober: when, and how many instances answered.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at_ns: u64,
    pub healthy: usize,
}

/// What the samplers saw, once stopped.
#[derive(Debug, Default)]
pub struct Sampled {
    pub healthy: Vec<Sample>,
    /// Ids of tasks some master listed as `TASK_DROPPED`.
    pub dropped: BTreeSet<String>,
}

/// Polls until told to stop: every 500 ms, GET /index.html on every port
/// of `ports` on loopback (the service's instances are the only listeners
/// there); every second, `/state` of the masters (`urls`) for dropped
/// tasks.
pub fn start_samplers(ports: Vec<u16>, http: reqwest::Client, urls: Vec<String>) -> Samplers {
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut out = Sampled::default();
        let mut tick = 0u64;
        loop {
            let answers = join_all(ports.iter().map(|p| answers_http(*p))).await;
            out.healthy.push(Sample {
                at_ns: now_ns(),
                healthy: answers.into_iter().filter(|ok| *ok).count(),
            });
            if tick.is_multiple_of(2) {
                dropped_tasks(&http, &urls, &mut out.dropped).await;
            }
            tick += 1;
            tokio::select! {
                _ = &mut stopped => return out,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    });
    Samplers { stop, task }
}

/// The running samplers.
#[derive(Debug)]
pub struct Samplers {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Sampled>,
}

impl Samplers {
    pub async fn finish(self) -> Sampled {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// Whether something on 127.0.0.1:`port` answers `GET /index.html` with
/// 200 within 400 ms.
async fn answers_http(port: u16) -> bool {
    let probe = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await?;
        let mut head = [0u8; 16];
        let n = s.read(&mut head).await?;
        Ok::<_, std::io::Error>(head[..n].starts_with(b"HTTP/1.0 200") || head[..n].starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(400), probe).await,
        Ok(Ok(true))
    )
}

/// Adds the ids of tasks in `TASK_DROPPED` from the first master that
/// serves `/state` (followers answer 307, which the client does not follow).
async fn dropped_tasks(http: &reqwest::Client, urls: &[String], seen: &mut BTreeSet<String>) {
    for url in urls {
        let Ok(r) = http.get(url).send().await else { continue };
        if !r.status().is_success() {
            continue;
        }
        let Ok(v) = r.json::<Value>().await else { continue };
        for t in v["tasks"].as_array().into_iter().flatten() {
            if t["state"] == "TASK_DROPPED"
                && let Some(id) = t["id"].as_str()
            {
                seen.insert(id.to_owned());
            }
        }
        return;
    }
}
