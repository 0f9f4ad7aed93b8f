//! `mezzo run` as a user runs it (a subprocess of a real cluster): the
//! task's stdout and stderr reach the terminal, every end is told in
//! words, the exit code is the task's own, and `--detach` leaves the task
//! running (docs/operators.md "`mezzo run`"; DESIGN.md "Containers": an
//! OOM kill is reported as FAILED with a memory-limit reason).

use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mezzo_tests::{Cluster, ClusterSpec};
use tokio::io::{AsyncBufReadExt, BufReader};

async fn cluster() -> Result<Cluster> {
    Cluster::start(ClusterSpec {
        agents: 1,
        ..Default::default()
    })
    .await
}

/// `mezzo run ARGS` to its end (60 s at most).
async fn run(c: &Cluster, args: &[&str]) -> Result<Output> {
    let mut cmd = c.command();
    cmd.arg("run").args(args).kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .context("mezzo run did not end in 60 s")?
        .context("spawn mezzo run")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The memory tests need the Linux containerizer (cgroups), which needs root.
fn isolating() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: a memory limit needs the agent's Linux isolation, which needs root");
    false
}

/// The first report: `mezzo run -- echo hi` printed no "hi". The
/// task's stdout is the command's stdout, and nothing else is on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mezzo_run_echo_prints_hi() -> Result<()> {
    let c = cluster().await?;
    let result = async {
        let out = run(&c, &["--", "echo", "hi"]).await?;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        ensure!(out.status.code() == Some(0), "{:?}\n{stderr}", out.status);
        ensure!(stdout == "hi\n", "stdout {stdout:?}\nstderr {stderr}");
        ensure!(stderr.contains("TASK_FINISHED"), "no outcome on stderr: {stderr}");
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// Issue 21: work no agent could ever run is refused at once (exit 4),
/// instead of waiting silently for its whole timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mezzo_run_refuses_a_task_no_agent_could_ever_run() -> Result<()> {
    let c = cluster().await?;
    let result = async {
        let started = std::time::Instant::now();
        let out = run(&c, &["--cpus", "1000", "--timeout", "60s", "--", "true"]).await?;
        let stderr = text(&out.stderr);
        ensure!(out.status.code() == Some(4), "{:?}\n{stderr}", out.status);
        ensure!(
            stderr.contains("no agent can ever run a task of cpus:1000") && stderr.contains("the largest has"),
            "{stderr}"
        );
        ensure!(started.elapsed() < std::time::Duration::from_secs(20), "it waited");
        // One that fits still runs.
        let out = run(&c, &["--", "true"]).await?;
        ensure!(out.status.code() == Some(0), "{}", text(&out.stderr));
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// The task's stderr goes to our stderr, and its exit code is ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mezzo_run_streams_stderr_and_keeps_the_exit_code() -> Result<()> {
    let c = cluster().await?;
    let result = async {
        let out = run(&c, &["--shell", "--", "echo out; echo e >&2; exit 3"]).await?;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        ensure!(out.status.code() == Some(3), "{:?}\n{stderr}", out.status);
        ensure!(stdout == "out\n", "stdout {stdout:?}");
        ensure!(stderr.lines().any(|l| l == "e"), "stderr {stderr:?}");
        ensure!(stderr.contains("exited with status 3"), "stderr {stderr:?}");
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// Output arrives while the task runs, not only at its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_arrives_while_the_task_runs() -> Result<()> {
    let c = cluster().await?;
    let result = async {
        let mut cmd = c.command();
        cmd.args(["run", "--shell", "--", "echo first; sleep 8; echo second"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .context("no line within 20 s")??;
        ensure!(first.as_deref() == Some("first"), "{first:?}");
        ensure!(child.try_wait()?.is_none(), "mezzo run ended before the task did");
        let second = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await??;
        ensure!(second.as_deref() == Some("second"), "{second:?}");
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
        ensure!(status.success(), "{status:?}");
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// The agent rotates stdout past `--log-max-mib` (copy to `stdout.1`,
/// truncate): what was written before the rotation and not read yet is
/// read from `stdout.1`, then the output goes on from the new file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_followed_across_log_rotation() -> Result<()> {
    let mut spec = ClusterSpec {
        agents: 1,
        ..Default::default()
    };
    spec.agent_args
        .extend(["--log-max-mib", "1", "--disk-check-interval", "300ms"].map(String::from));
    let c = Cluster::start(spec).await?;
    let result = async {
        // 150 lines of 20 kB, 50 a second (1 MB/s): rotated every second
        // or so, and lines land in the new file before it is read. (A line
        // written between the agent's copy and its truncation would be
        // lost by the agent itself: a window of microseconds.)
        let script = "x=$(head -c 20000 /dev/zero | tr '\\0' x); \
                      for i in $(seq 1 150); do echo \"$x $i\"; sleep 0.02; done";
        let out = run(&c, &["--shell", "--", script]).await?;
        ensure!(out.status.success(), "{:?}\n{}", out.status, text(&out.stderr));
        let stdout = text(&out.stdout);
        let numbers: Vec<u32> = stdout
            .lines()
            .map(|l| l.trim_start_matches('x').trim().parse())
            .collect::<Result<_, _>>()
            .with_context(|| format!("a line that is not x* N in {} bytes", stdout.len()))?;
        ensure!(
            numbers == (1..=150).collect::<Vec<_>>(),
            "lines lost, twice or out of order: {numbers:?}"
        );
        let whole = |l: &str| l.len() == 20_000 + 1 + l.rsplit(' ').next().map_or(0, str::len);
        ensure!(stdout.lines().all(whole), "a line was cut");
        ensure!(has_file(c.dir.path(), "stdout.1"), "the agent rotated nothing");
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// Whether a file called `name` is somewhere under `dir`.
fn has_file(dir: &std::path::Path, name: &str) -> bool {
    std::fs::read_dir(dir).into_iter().flatten().flatten().any(|e| {
        let p = e.path();
        e.file_name() == name || (p.is_dir() && !p.is_symlink() && has_file(&p, name))
    })
}

/// Runs `script` in 32 MiB, checks that `mezzo run` failed and told the
/// memory limit, and returns the task's stdout.
async fn run_out_of_memory(script: &str) -> Result<String> {
    let c = cluster().await?;
    let result = async {
        let out = run(&c, &["--mem", "32", "--shell", "--", script]).await?;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        let told = format!("{:?}\nstdout: {stdout}\nstderr: {stderr}", out.status);
        ensure!(out.status.code() != Some(0), "{told}");
        ensure!(stderr.contains("TASK_FAILED"), "{told}");
        ensure!(stderr.contains("memory limit of 32 MiB reached"), "{told}");
        Ok(stdout)
    }
    .await;
    result.with_context(|| c.logs())
}

/// The second report: a task killed at its memory limit showed
/// `TASK_FAILED (exit -9)` with no word of memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_killed_task_prints_the_memory_reason() -> Result<()> {
    if !isolating() {
        return Ok(());
    }
    run_out_of_memory("head -c 200m /dev/zero | tail").await?;
    Ok(())
}

/// A child OOM-killed inside the container is the memory limit too, even
/// when the main process goes on and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_killed_child_is_reported_as_the_memory_limit() -> Result<()> {
    if !isolating() {
        return Ok(());
    }
    let stdout = run_out_of_memory("(head -c 200m /dev/zero | tail); echo ok").await?;
    ensure!(stdout == "ok\n", "stdout {stdout:?}");
    Ok(())
}

/// `--detach` prints the task id and returns while the task runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_returns_while_the_task_runs() -> Result<()> {
    let c = cluster().await?;
    let result = async {
        let out = run(&c, &["--detach", "--", "sleep", "60"]).await?;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        ensure!(out.status.code() == Some(0), "{:?}\n{stderr}", out.status);
        let id = stdout.trim();
        ensure!(id.starts_with("mezzo-run-") && !id.contains('\n'), "stdout {stdout:?}");
        ensure!(stderr.contains(&format!("mezzo logs -f {id}")), "no hint: {stderr}");
        c.wait_master("the detached task running", |s| {
            s["tasks"]
                .as_array()
                .is_some_and(|ts| ts.iter().any(|t| t["id"] == id && t["state"] == "TASK_RUNNING"))
        })
        .await?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// DESIGN.md "Tasks": DROPPED means the process never started, so it is
/// safe to launch again. The agent is SIGKILLed while a failpoint (debug
/// builds) holds the launch between the task's checkpoint and its
/// container; restarted, it reports the task DROPPED, and `mezzo run`
/// launches it again under a new id and ends with its output and code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mezzo_run_relaunches_a_dropped_task() -> Result<()> {
    let mut c = cluster().await?;
    let result = async {
        c.agents[0]
            .env
            .push(("MEZZO_FAILPOINT".into(), "before_launch:2000".into()));
        c.agents[0].kill().await;
        c.restart_agent(0).await?;
        c.wait_agent(0, "registered again", |s| s["master"].is_string()).await?;
        let mut cmd = c.command();
        cmd.args(["run", "--", "echo", "hi"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn()?;
        let launching = |s: &serde_json::Value| {
            s["tasks"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["state"] == "TASK_STARTING"))
        };
        c.wait_agent(0, "the launch held by the failpoint", launching).await?;
        c.agents[0].kill().await;
        c.restart_agent(0).await?;
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .context("mezzo run did not end in 60 s")??;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        ensure!(out.status.code() == Some(0), "{:?}\n{stderr}", out.status);
        ensure!(stdout == "hi\n", "stdout {stdout:?}\n{stderr}");
        ensure!(
            stderr.contains("TASK_DROPPED") && stderr.contains("relaunched as mezzo-run-"),
            "{stderr}"
        );
        ensure!(stderr.contains(".r1 TASK_FINISHED"), "{stderr}");
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}
