//! `mezzo batch`: run the batch framework (`serve`) and talk to it
//! (`submit`, `status`, `list`, `cancel`, `logs`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use comfy_table::Table;
use indicatif::{ProgressBar, ProgressStyle};
use mezzo_batch::client::{Client, ClientError};
use mezzo_batch::engine::{JobStatus, JobSummary, Run, TaskView};
use mezzo_batch::job::JobState;
use mezzo_batch::{BatchConfig, Engine};
use mezzo_sdk::clock::unix_now;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address of the batch framework's HTTP API (`--batch` as `mezzo
    /// service` takes `--service`; for `serve`, also `--listen`).
    #[arg(long, global = true, visible_aliases = ["batch", "listen"], env = "MEZZO_BATCH", default_value = "127.0.0.1:5080")]
    addr: String,
    /// The framework's API token, which `mezzo batch serve` keeps in its
    /// work dir (`api-token`, readable by its user only). Default: the
    /// work dir `serve` uses by default, from here.
    #[arg(
        long,
        global = true,
        env = "MEZZO_BATCH_TOKEN_FILE",
        default_value = "mezzo-batch-state/api-token"
    )]
    token_file: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the batch framework with its HTTP API (a daemon).
    Serve(ServeArgs),
    /// Submit a job file (TOML); with --wait, follow it to its end.
    Submit {
        /// The job file.
        file: PathBuf,
        /// Wait for every job of the file to end, with a progress bar; the
        /// exit status is 0 only if all succeeded.
        #[arg(long)]
        wait: bool,
        /// Print the final statuses as JSON (with --wait).
        #[arg(long)]
        json: bool,
    },
    /// Show one job and its unfinished or failed tasks; with --index, every
    /// run of one task (attempt, task id, host, times, outcome).
    Status {
        name: String,
        /// List every task.
        #[arg(long)]
        all: bool,
        /// Only this task, with each of its runs.
        #[arg(long)]
        index: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// List the jobs.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job: nothing more starts, running tasks are killed.
    Cancel { name: String },
    /// Print the tail of a task's output.
    Logs {
        name: String,
        /// Index of the task in the array.
        #[arg(long, default_value_t = 0)]
        index: u32,
        /// An earlier attempt's output (1 is the first; default: the latest
        /// run). `batch status` lists each task's attempts.
        #[arg(long)]
        attempt: Option<u32>,
        /// stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Master addresses, comma-separated (`--master` as everywhere else).
    #[arg(
        long,
        visible_alias = "master",
        env = "MEZZO_MASTER",
        default_value = "127.0.0.1:5050"
    )]
    masters: String,
    /// Where the framework id is kept between runs (jobs are kept in the
    /// masters' registry); `--work-dir` as the service framework names it.
    #[arg(
        long,
        visible_alias = "work-dir",
        env = "MEZZO_BATCH_STATE_DIR",
        default_value = "mezzo-batch-state"
    )]
    state_dir: PathBuf,
    /// Framework name.
    #[arg(long, default_value = "mezzo-batch")]
    name: String,
    /// How long the masters keep the tasks of a stopped batch framework.
    #[arg(long, default_value = "1week", value_parser = super::duration)]
    failover_timeout: Duration,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Every command but `serve` talks to the framework, with its token.
    let connect = || -> anyhow::Result<Client> {
        let token = mezzo_sdk::api_token::read(&args.token_file).with_context(|| {
            format!(
                "cannot read the batch framework's API token at {} (`mezzo batch serve` writes it in its --work-dir; give --token-file)",
                args.token_file.display()
            )
        })?;
        Ok(Client::new(args.addr.clone()).with_token(token))
    };
    let refused = |e: ClientError| -> anyhow::Result<ExitCode> {
        eprintln!("mezzo batch: {e}");
        Ok(ExitCode::from(2))
    };
    match args.command {
        Command::Serve(s) => serve(&args.addr, s).await,
        Command::Submit { file, wait, json } => {
            let client = connect()?;
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let names = match client.submit(text).await {
                Ok(n) => n,
                Err(e) => return refused(e),
            };
            if !wait {
                println!("submitted {}", names.join(", "));
                return Ok(ExitCode::SUCCESS);
            }
            follow(&client, &names, json).await
        }
        Command::Status { name, all, index, json } => match connect()?.status(&name, all, index).await {
            Ok(s) if json => {
                println!("{}", serde_json::to_string_pretty(&s)?);
                Ok(ExitCode::SUCCESS)
            }
            Ok(s) => {
                print_status(&s, index.is_some(), unix_now());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => refused(e),
        },
        Command::List { json } => match connect()?.list().await {
            Ok(l) if json => {
                println!("{}", serde_json::to_string_pretty(&l)?);
                Ok(ExitCode::SUCCESS)
            }
            Ok(l) => {
                print_list(&l);
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => refused(e),
        },
        Command::Cancel { name } => match connect()?.cancel(&name).await {
            Ok(s) => {
                println!("{}: {}", s.name, state_name(s.state));
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => refused(e),
        },
        Command::Logs {
            name,
            index,
            attempt,
            stderr,
        } => {
            match connect()?
                .logs(&name, index, attempt, if stderr { "stderr" } else { "stdout" })
                .await
            {
                Ok(text) => {
                    print!("{text}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => refused(e),
            }
        }
    }
}

async fn serve(addr: &str, s: ServeArgs) -> anyhow::Result<ExitCode> {
    let token = mezzo_sdk::api_token::create(&s.state_dir)
        .with_context(|| format!("cannot keep the API token in {}", s.state_dir.display()))?;
    let engine = Engine::start(BatchConfig {
        masters: super::comma_list(&s.masters),
        state_dir: s.state_dir,
        name: s.name,
        failover_timeout: s.failover_timeout,
    })
    .context("cannot start the batch framework")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    super::ready("batch", listener.local_addr()?);
    axum::serve(listener, mezzo_batch::api::router(engine, token)).await?;
    Ok(ExitCode::SUCCESS)
}

/// Follows the jobs to their end with a progress bar; exit 0 only if all
/// succeeded.
async fn follow(client: &Client, names: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut errors = 0;
    let statuses = loop {
        let mut all = Vec::new();
        let mut failed = false;
        for n in names {
            match client.status(n, false, None).await {
                Ok(s) => all.push(s),
                Err(e) => {
                    failed = true;
                    errors += 1;
                    bar.set_message(format!("({e})"));
                    if errors > 150 {
                        bar.abandon();
                        anyhow::bail!("lost the batch framework: {e}");
                    }
                }
            }
        }
        if !failed {
            errors = 0;
            let total: u64 = all.iter().map(|s| u64::from(s.summary.count)).sum();
            let ended: u64 = all
                .iter()
                .map(|s| (s.summary.counts.succeeded + s.summary.counts.failed + s.summary.counts.cancelled) as u64)
                .sum();
            let running: usize = all.iter().map(|s| s.summary.counts.running).sum();
            let failed_tasks: usize = all.iter().map(|s| s.summary.counts.failed).sum();
            bar.set_length(total);
            bar.set_position(ended);
            bar.set_message(format!("running {running}, failed {failed_tasks}"));
            if all.iter().all(|s| s.summary.state.is_final()) {
                bar.finish_and_clear();
                break all;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&statuses)?);
    } else {
        for s in &statuses {
            print_status(s, false, unix_now());
        }
    }
    let ok = statuses.iter().all(|s| s.summary.state == JobState::Succeeded);
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn state_name(s: JobState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn print_list(list: &[JobSummary]) {
    let mut t = Table::new();
    t.set_header([
        "JOB",
        "STATE",
        "TASKS",
        "SUCCEEDED",
        "FAILED",
        "RUNNING",
        "RETRIED",
        "DEPENDS ON",
    ]);
    for j in list {
        t.add_row([
            j.name.clone(),
            state_name(j.state),
            j.count.to_string(),
            j.counts.succeeded.to_string(),
            j.counts.failed.to_string(),
            j.counts.running.to_string(),
            j.counts.retried.to_string(),
            j.depends_on.join(","),
        ]);
    }
    println!("{t}");
}

/// Where a run ran: its host, or its agent's id when the host is not
/// known (a run adopted after the framework restarted).
fn host_of(r: &Run) -> String {
    if r.host.is_empty() {
        r.agent_id.clone()
    } else {
        r.host.clone()
    }
}

/// How long a run took, or has run so far.
fn elapsed(r: &Run, now: f64) -> String {
    let secs = (r.ended_at.unwrap_or(now) - r.launched_at).max(0.0);
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        humantime::format_duration(Duration::from_secs(secs as u64)).to_string()
    }
}

/// Every run of one task, for `status --index`.
fn print_runs(task: &TaskView, now: f64) {
    println!("task {}: {}, {} attempt(s)", task.index, task.state, task.attempts);
    if task.runs.is_empty() {
        println!("  no run since the framework started");
        return;
    }
    let mut t = Table::new();
    t.set_header(["ATTEMPT", "TASK", "HOST", "STATE", "EXIT", "STARTED", "ELAPSED"]);
    for r in &task.runs {
        let started = std::time::UNIX_EPOCH + Duration::from_secs_f64(r.launched_at.max(0.0));
        t.add_row([
            r.attempt.to_string(),
            r.task_id.clone(),
            host_of(r),
            r.state.trim_start_matches("TASK_").to_lowercase(),
            r.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            humantime::format_rfc3339_seconds(started).to_string(),
            elapsed(r, now),
        ]);
    }
    println!("{t}");
    if let Some(f) = &task.reason {
        println!("  last failure: {f}");
    }
}

fn print_status(s: &JobStatus, runs: bool, now: f64) {
    let j = &s.summary;
    println!(
        "job {}: {} — {}/{} succeeded, {} failed, {} running, {} pending, {} cancelled, {} retried",
        j.name,
        state_name(j.state),
        j.counts.succeeded,
        j.count,
        j.counts.failed,
        j.counts.running,
        j.counts.pending,
        j.counts.cancelled,
        j.counts.retried
    );
    // Launches that never started and were made again cost no attempt;
    // worth a line only when there were some.
    if j.counts.dropped_relaunched > 0 || j.counts.requeued > 0 {
        println!(
            "  {} launches dropped before they started and made again, {} tasks requeued after being lost",
            j.counts.dropped_relaunched, j.counts.requeued
        );
    }
    if let Some(why) = &j.abandoned {
        println!("  not run: {why}");
    }
    if s.tasks.is_empty() {
        return;
    }
    if runs {
        for task in &s.tasks {
            print_runs(task, now);
        }
        return;
    }
    let mut t = Table::new();
    t.set_header([
        "INDEX",
        "STATE",
        "ATTEMPTS",
        "EXIT",
        "TASK",
        "HOST",
        "ELAPSED",
        "LAST FAILURE",
    ]);
    for task in &s.tasks {
        let last = task.runs.last();
        t.add_row([
            task.index.to_string(),
            task.state.clone(),
            task.attempts.to_string(),
            task.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            last.map(|r| r.task_id.clone()).unwrap_or_default(),
            last.map(host_of).unwrap_or_default(),
            last.map(|r| elapsed(r, now)).unwrap_or_default(),
            task.reason.clone().unwrap_or_default(),
        ]);
    }
    println!("{t}");
    if s.truncated {
        println!("  (first {} tasks shown)", s.tasks.len());
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: super::Args,
    }

    /// One flag name for one concept (issue 21): `serve --master` and
    /// `--listen` as the other daemons take them, `--batch` for clients.
    #[test]
    fn serve_and_clients_take_the_common_flag_names() {
        let cli = Cli::try_parse_from([
            "batch",
            "serve",
            "--master",
            "10.0.0.1:5050",
            "--listen",
            "127.0.0.1:7070",
        ])
        .expect("common names");
        assert_eq!(cli.args.addr, "127.0.0.1:7070");
        match cli.args.command {
            super::Command::Serve(s) => assert_eq!(s.masters, "10.0.0.1:5050"),
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["batch", "--batch", "127.0.0.1:7071", "list"]).expect("--batch");
        assert_eq!(cli.args.addr, "127.0.0.1:7071");
        let cli = Cli::try_parse_from(["batch", "serve", "--masters", "m:1", "--addr", "a:2"]).expect("the old names");
        assert_eq!(cli.args.addr, "a:2");
        let cli = Cli::try_parse_from(["batch", "serve", "--work-dir", "/w"]).expect("--work-dir");
        match cli.args.command {
            super::Command::Serve(s) => assert_eq!(s.state_dir, std::path::Path::new("/w")),
            other => panic!("{other:?}"),
        }
    }
}
