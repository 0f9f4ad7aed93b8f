//! `mezzo run`: a small framework on the public SDK that runs one command
//! as one task (or N copies), waits for them, and reports. One task's
//! stdout and stderr are copied to ours as it runs, and its end is told in
//! words; `--detach` leaves it running.

mod drive;
mod outcome;
mod report;
mod stream;
mod tracks;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mezzo_sdk::{Resources, Scheduler, SchedulerConfig};

use drive::{Mode, Run};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Master addresses, comma-separated.
    #[arg(long, env = "MEZZO_MASTER", default_value = "127.0.0.1:5050")]
    master: String,
    /// Cpus per task.
    #[arg(long, default_value_t = 0.1)]
    cpus: f64,
    /// Memory per task, MiB.
    #[arg(long, default_value_t = 32)]
    mem: u64,
    /// Task name prefix.
    #[arg(long, default_value = "mezzo-run")]
    name: String,
    /// Number of copies to run.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Run the words after `--` through /bin/sh -c.
    #[arg(long)]
    shell: bool,
    /// Give up after this long.
    #[arg(long, default_value = "10m", value_parser = super::duration)]
    timeout: Duration,
    /// Launch at most this many tasks per second (offers are held until
    /// tasks are due); without it every task is launched as soon as it fits.
    #[arg(long)]
    rate: Option<f64>,
    /// Print a JSON summary (with latency percentiles) instead of text.
    #[arg(long)]
    json: bool,
    /// Do not wait: print each task's id once it runs and exit, leaving
    /// the tasks running (`mezzo logs -f ID` follows one). They are killed
    /// if still running `--timeout` after this command exits.
    #[arg(long, conflicts_with = "json")]
    detach: bool,
    /// Write each task's timeline to this file, a JSON object per line:
    /// when it was accepted and, for each update, when the agent stamped it
    /// and when it arrived here (seconds since the Unix epoch). For finding
    /// which hop a slow task waited in.
    #[arg(long, value_name = "FILE")]
    timeline: Option<std::path::PathBuf>,
    /// The role the framework registers in (its tasks' secrets are that
    /// role's).
    #[arg(long, default_value = "*")]
    role: String,
    /// An environment variable, NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// An environment variable holding a secret of the role, NAME=SECRET
    /// (repeatable; see `mezzo secret put`).
    #[arg(long = "secret-env", value_name = "NAME=SECRET")]
    secret_env: Vec<String>,
    /// A file in the sandbox holding a secret of the role, PATH=SECRET
    /// (repeatable).
    #[arg(long = "secret-file", value_name = "PATH=SECRET")]
    secret_file: Vec<String>,
    /// An artifact to fetch into the sandbox before the task starts,
    /// `URL[#OPTIONS]` (repeatable): an http(s) URL or a path under the
    /// agent's --artifact-paths; OPTIONS, comma-separated, are `extract`
    /// (unpack a .tar, .tar.gz or .tgz), `executable`, `cache` (keep it in
    /// the agent's cache), `sha256=HEX` and `output=NAME` (docs/frameworks.md
    /// "Artifacts").
    #[arg(long = "uri", value_name = "URL[#OPTIONS]")]
    uri: Vec<String>,
    /// Run in this OCI image: `HOST[:PORT]/PATH[:TAG]` from a registry, or
    /// `oci:NAME[:TAG]`, a layout in the agents' `--image-layouts` (see
    /// docs/images.md). Without a command, the image's entrypoint and
    /// command run.
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// Pull the image with the credentials (`USER:PASSWORD`) in this
    /// secret of the role (`mezzo secret put ROLE NAME`).
    #[arg(long, value_name = "SECRET", requires = "image")]
    image_credentials: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required_unless_present = "image")]
    command: Vec<String>,
}

/// `--uri URL[#OPTIONS]` as the artifact it names.
fn artifact(s: &str) -> anyhow::Result<mezzo_sdk::v1::CommandUri> {
    let (value, options) = s.split_once('#').unwrap_or((s, ""));
    let mut uri = mezzo_sdk::v1::CommandUri {
        value: value.to_owned(),
        ..Default::default()
    };
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            None if option == "extract" => uri.extract = true,
            None if option == "executable" => uri.executable = true,
            None if option == "cache" => uri.cache = true,
            Some(("sha256", hex)) => uri.sha256 = hex.to_owned(),
            Some(("output", name)) => uri.output_file = name.to_owned(),
            _ => bail!("--uri {s:?}: unknown option {option:?} (extract, executable, cache, sha256=HEX, output=NAME)"),
        }
    }
    Ok(uri)
}

/// `K=V` split at the first `=`.
fn pair<'s>(flag: &str, s: &'s str) -> anyhow::Result<(&'s str, &'s str)> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| anyhow::anyhow!("--{flag} {s:?}: expected NAME=VALUE"))
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    if a.instances == 0 {
        bail!("--instances must be at least 1");
    }
    let per_task = Resources::parse(&format!("cpus:{};mem:{}", a.cpus, a.mem)).context("--cpus/--mem")?;
    for (flag, list) in [
        ("env", &a.env),
        ("secret-env", &a.secret_env),
        ("secret-file", &a.secret_file),
    ] {
        for s in list {
            pair(flag, s)?;
        }
    }
    for s in &a.uri {
        artifact(s)?;
    }
    let mode = if a.detach {
        Mode::Detach
    } else if a.json || a.instances > 1 {
        Mode::Summary
    } else {
        Mode::Stream
    };
    let http = crate::cmd::ops::Client::new(&a.master)?;
    if let Some(why) = never_fits(&http, &per_task).await {
        eprintln!("mezzo: {why}; nothing was launched");
        return Ok(ExitCode::from(4));
    }
    let mut cfg = SchedulerConfig::new(super::comma_list(&a.master), a.name.clone());
    cfg.framework.roles = vec![a.role.clone()];
    // Detached tasks outlive this process by the failover timeout: then
    // the master removes the framework and kills what still runs.
    cfg.framework.failover_timeout_secs = match mode {
        Mode::Detach => a.timeout.as_secs_f64(),
        Mode::Stream | Mode::Summary => 10.0,
    };
    let (sched, events) = Scheduler::start(cfg);
    let (mut run, refused) = Run::new(&a, mode, per_task, sched, http);
    // Kept, not returned at once: `--timeline` is written however the run
    // ends (a timeout or a refused Accept are when it is most wanted).
    let outcome = run.drive(events, refused).await;
    let seconds = run.started.unwrap_or_else(Instant::now).elapsed().as_secs_f64();
    if mode != Mode::Detach || outcome.is_err() {
        let _ = run.sched.teardown().await;
    }
    run.sched.stop().await;

    if let Some(path) = &a.timeline {
        report::write_timeline(path, &run.tracks).with_context(|| format!("--timeline {}", path.display()))?;
    }
    outcome?;
    let (summary, exit) = report::summarize(&run.tracks, a.instances, seconds)?;
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else if a.instances > 1 && mode == Mode::Summary {
        report::print_summary(&summary);
    }
    Ok(ExitCode::from(exit))
}

/// Why no agent the cluster has could ever run a task of `per_task` (the
/// largest is smaller), if so; `None` when one could, or when the agents
/// cannot be read (the run then waits for offers as before).
async fn never_fits(http: &crate::cmd::ops::Client, per_task: &Resources) -> Option<String> {
    use mezzo_master::core::view::{AgentRow, Page};
    let page: Page<AgentRow> = http.get_as("/api/v1/agents?limit=1000").await.ok()?;
    let agents: Vec<&Resources> = page
        .items
        .iter()
        .filter(|a| a.status.name() != "gone")
        .map(|a| &a.total)
        .collect();
    if agents.is_empty() || agents.iter().any(|total| total.contains(per_task)) {
        return None;
    }
    let largest = agents.iter().max_by_key(|r| (r.cpus, r.mem))?;
    Some(format!(
        "no agent can ever run a task of {per_task}: the largest has {largest} in all"
    ))
}

#[cfg(test)]
#[test]
fn uri_flags_name_their_options() {
    let uri = artifact("http://h/a.tgz#extract,cache,executable,sha256=ab,output=tools").expect("valid");
    assert_eq!(uri.value, "http://h/a.tgz");
    assert!(uri.extract && uri.cache && uri.executable);
    assert_eq!((uri.sha256.as_str(), uri.output_file.as_str()), ("ab", "tools"));
    let plain = artifact("/srv/a").expect("valid");
    assert!(plain.value == "/srv/a" && !plain.extract && plain.sha256.is_empty());
    let e = artifact("http://h/a#unpack").expect_err("unknown option").to_string();
    assert!(e.contains("unknown option \"unpack\""), "{e}");
}
