//! Operator commands over the operator HTTP API (docs/operator-api.md):
//! queries print tables (or `--json`), actions need the rights the ACLs
//! give the caller's credential (the client configuration's).
//! Exit codes: 0 ok, 1 error or unreachable, 2 not found, 3 refused
//! (no credential, or not allowed), 4 bad request.

pub mod client;
mod drain;
mod exec;
pub mod follow;
mod logs;
mod resolve;
mod top;

use std::collections::HashMap;

use mezzo_proto::resources::Resources;
use std::process::ExitCode;
use std::time::Duration;

use comfy_table::Table;
use mezzo_master::core::view::{AgentRow, FrameworkRow, ImagePull, Page, TaskView, WhyFramework, WhyTask};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::res;
pub use client::{ApiError, Client};

/// Where and how to reach the masters.
#[derive(Debug, Clone, clap::Args)]
pub struct Conn {
    /// Master addresses, comma-separated; followers send us to the leader.
    #[arg(long, env = "MEZZO_MASTER", default_value = "")]
    master: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// A task on the command line, with the masters to ask about it.
#[derive(Debug, Clone, clap::Args)]
pub struct TaskRef {
    #[command(flatten)]
    conn: Conn,
    task: String,
    /// Its framework, when the task id is used by more than one.
    #[arg(long)]
    framework: Option<String>,
}

impl TaskRef {
    /// A client of the masters, and the task's framework.
    async fn resolve(&self) -> Result<(Client, String), ApiError> {
        let c = Client::new(&self.conn.master)?;
        let fw = task_framework(&c, self.framework.as_deref(), &self.task).await?;
        Ok((c, fw))
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List agents.
    Agents {
        #[command(flatten)]
        conn: Conn,
        /// Only agents in this state: active, disconnected, recovering, unreachable, draining.
        #[arg(long)]
        status: Option<String>,
        /// `wide`: full ids and every resource.
        #[arg(short = 'o', long, value_enum)]
        output: Option<Output>,
    },
    /// List frameworks with their offers and tasks.
    Frameworks {
        #[command(flatten)]
        conn: Conn,
        /// `wide`: full ids.
        #[arg(short = 'o', long, value_enum)]
        output: Option<Output>,
    },
    /// List tasks, newest first.
    Tasks(TasksArgs),
    /// Print a task's stdout (or another sandbox file); -f follows it.
    Logs(logs::Args),
    /// Run a command in a running task's container (needs the ACL action exec_task).
    Exec(exec::Args),
    /// Follow a task's stdout and stderr until it ends.
    Attach(TaskRef),
    /// Why is a task or framework not running? Shows offers and reported waits.
    Why {
        #[command(flatten)]
        conn: Conn,
        /// A task id or a framework id.
        id: String,
    },
    /// A live view of the cluster in the terminal.
    Top(top::Args),
    /// Stop offering an agent; its tasks may finish (or are killed at --deadline).
    Drain {
        #[command(flatten)]
        conn: Conn,
        /// The agent: its id, a unique id prefix, or its hostname.
        agent: String,
        /// Kill tasks still running after this long (e.g. 10m).
        #[arg(long, value_parser = super::duration)]
        deadline: Option<Duration>,
        /// Wait until no task runs on the agent, printing what is left.
        #[arg(long)]
        wait: bool,
    },
    /// End a drain: offer the agent again.
    Reactivate {
        #[command(flatten)]
        conn: Conn,
        /// The agent: its id, a unique id prefix, or its hostname.
        agent: String,
    },
    /// Mark an agent gone for good: its tasks become GONE and it may not return.
    Gone {
        #[command(flatten)]
        conn: Conn,
        /// The agent: its id, a unique id prefix, or its hostname.
        agent: String,
    },
    /// Remove a framework and kill its tasks.
    Teardown {
        #[command(flatten)]
        conn: Conn,
        /// The framework: its id, a unique id prefix, or its name.
        framework: String,
    },
    /// Kill a task.
    Kill {
        #[command(flatten)]
        conn: Conn,
        task: String,
        /// Its framework, when the task id is used by more than one.
        #[arg(long)]
        framework: Option<String>,
        /// Time between SIGTERM and SIGKILL.
        #[arg(long, value_parser = super::duration)]
        grace: Option<Duration>,
    },
}

#[derive(Debug, clap::Args)]
pub struct TasksArgs {
    #[command(flatten)]
    conn: Conn,
    /// State(s), e.g. running, failed, active, terminal (comma-separated).
    #[arg(long)]
    state: Option<String>,
    /// A framework's id, unique id prefix, or name.
    #[arg(long)]
    framework: Option<String>,
    /// An agent's id, unique id prefix, or hostname.
    #[arg(long)]
    agent: Option<String>,
    /// At most this many (1..=1000).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// `wide`: also the task's name, its framework's and agent's ids and
    /// its resources.
    #[arg(short = 'o', long, value_enum)]
    output: Option<Output>,
}

/// Table layouts beyond the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Wide,
}

/// Runs an operator command and maps its failure to an exit code.
pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match exec(cmd).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("mezzo: {e}");
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}

/// Builds `path?k=v&...` with the values percent-encoded.
pub(super) fn with_query(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let mut u = reqwest::Url::parse("http://x/").expect("static URL");
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in pairs {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
    }
    match u.query() {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    }
}

/// One path segment, percent-encoded.
pub(super) fn seg(s: &str) -> String {
    let mut u = reqwest::Url::parse("http://x/").expect("static URL");
    u.path_segments_mut().expect("base URL").push(s);
    u.path().trim_start_matches('/').to_owned()
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Reads the master's JSON into its own view type.
fn decode<T: DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::Other(format!("unexpected answer from the master: {e}")))
}

/// GETs `path`: with `--json`, prints the answer as it came and returns
/// `None`; else reads it into the master's view type `T`.
async fn read<T: DeserializeOwned>(c: &Client, path: &str, json: bool) -> Result<Option<T>, ApiError> {
    let v = c.get(path).await?;
    if json {
        print_json(&v);
        return Ok(None);
    }
    decode(v).map(Some)
}

async fn exec(cmd: Command) -> Result<(), ApiError> {
    match cmd {
        Command::Agents { conn, status, output } => agents(conn, status, output == Some(Output::Wide)).await,
        Command::Frameworks { conn, output } => frameworks(conn, output == Some(Output::Wide)).await,
        Command::Tasks(a) => tasks(a).await,
        Command::Logs(a) => logs::run(a).await,
        Command::Exec(a) => exec::run(a).await,
        Command::Attach(a) => exec::attach(a).await,
        Command::Why { conn, id } => why(conn, &id).await,
        Command::Top(a) => top::run(a).await,
        Command::Drain {
            conn,
            agent,
            deadline,
            wait,
        } => {
            let agent = resolve::agent(&Client::new(&conn.master)?, &agent).await?;
            drain::run(conn, &agent, deadline, wait).await
        }
        Command::Reactivate { conn, agent } => {
            let agent = resolve::agent(&Client::new(&conn.master)?, &agent).await?;
            let path = format!("/api/v1/agents/{}/reactivate", seg(&agent));
            act(conn, &path, Value::Null, &format!("reactivating agent {agent}")).await
        }
        Command::Gone { conn, agent } => {
            let agent = resolve::agent(&Client::new(&conn.master)?, &agent).await?;
            let path = format!("/api/v1/agents/{}/gone", seg(&agent));
            act(conn, &path, Value::Null, &format!("agent {agent} marked gone")).await
        }
        Command::Teardown { conn, framework } => {
            let framework = resolve::framework(&Client::new(&conn.master)?, &framework).await?;
            let path = format!("/api/v1/frameworks/{}/teardown", seg(&framework));
            act(conn, &path, Value::Null, &format!("tearing down framework {framework}")).await
        }
        Command::Kill {
            conn,
            task,
            framework,
            grace,
        } => kill(conn, task, framework, grace).await,
    }
}

/// `mezzo agents`.
async fn agents(conn: Conn, status: Option<String>, wide: bool) -> Result<(), ApiError> {
    let c = Client::new(&conn.master)?;
    let path = with_query("/api/v1/agents", &[("status", status), ("limit", Some("1000".into()))]);
    let Some(page) = read::<Page<AgentRow>>(&c, &path, conn.json).await? else {
        return Ok(());
    };
    let mut t = Table::new();
    t.set_header(["AGENT", "HOSTNAME", "STATUS", "TASKS", "TOTAL", "USED", "OFFERED"]);
    let mut warnings = Vec::new();
    for a in page.items {
        for w in &a.warnings {
            warnings.push(format!(
                "warning: agent {} ({}): {w}",
                a.hostname,
                id_or_prefix(&a.id, wide)
            ));
        }
        let status = if a.draining { "draining" } else { a.status.name() };
        // By default cpus, mem and disk only (ports and named resources
        // with -o wide), so that the table fits 120 columns.
        let r = |x: &Resources| if wide { res(x) } else { core_res(x) };
        t.add_row([
            id_or_prefix(&a.id, wide),
            a.hostname,
            status.to_owned(),
            a.active_tasks.to_string(),
            r(&a.total),
            r(&a.used),
            r(&a.offered),
        ]);
    }
    println!("{t}");
    for w in warnings {
        eprintln!("{w}");
    }
    Ok(())
}

/// `mezzo frameworks`.
async fn frameworks(conn: Conn, wide: bool) -> Result<(), ApiError> {
    let c = Client::new(&conn.master)?;
    let Some(page) = read::<Page<FrameworkRow>>(&c, "/api/v1/frameworks?limit=1000", conn.json).await? else {
        return Ok(());
    };
    let mut t = Table::new();
    t.set_header([
        "FRAMEWORK",
        "NAME",
        "ROLES",
        "CONNECTED",
        "SHARE",
        "OFFERS R/D/A",
        "TASKS",
        "PENDING",
    ]);
    for f in page.items {
        let tasks: Vec<String> = f
            .tasks_by_state
            .iter()
            .map(|(k, n)| format!("{} {}", n, k.trim_start_matches("TASK_").to_lowercase()))
            .collect();
        let o = &f.offers;
        t.add_row([
            id_or_prefix(&f.id, wide),
            f.name,
            f.roles.join(","),
            f.removed_at
                .map_or_else(|| f.connected.to_string(), |t| format!("removed {}", ago(t))),
            format!("{:.1}%", f.dominant_share * 100.0),
            format!("{}/{}/{}", o.received, o.declined, o.accepted),
            tasks.join(", "),
            f.pending_tasks.to_string(),
        ]);
    }
    println!("{t}");
    Ok(())
}

/// `mezzo tasks`.
async fn tasks(a: TasksArgs) -> Result<(), ApiError> {
    let c = Client::new(&a.conn.master)?;
    // A filter that names nothing is an error, not "0 of 0".
    let framework = match &a.framework {
        Some(f) => Some(resolve::framework(&c, f).await?),
        None => None,
    };
    let agent = match &a.agent {
        Some(g) => Some(resolve::agent(&c, g).await?),
        None => None,
    };
    let path = with_query(
        "/api/v1/tasks",
        &[
            ("state", a.state),
            ("framework", framework),
            ("agent", agent),
            ("limit", Some(a.limit.to_string())),
            ("offset", Some(a.offset.to_string())),
        ],
    );
    let Some(page) = read::<Page<TaskView>>(&c, &path, a.conn.json).await? else {
        return Ok(());
    };
    // Names for ids, as people read them (best effort: ids otherwise).
    let frameworks: HashMap<String, String> = resolve::all::<FrameworkRow>(&c, "/api/v1/frameworks")
        .await
        .map(|v| v.into_iter().map(|f| (f.id, f.name)).collect())
        .unwrap_or_default();
    let hosts: HashMap<String, String> = resolve::all::<AgentRow>(&c, "/api/v1/agents")
        .await
        .map(|v| v.into_iter().map(|a| (a.id, a.hostname)).collect())
        .unwrap_or_default();
    let named =
        |map: &HashMap<String, String>, id: &str| map.get(id).cloned().unwrap_or_else(|| id.chars().take(8).collect());
    let wide = a.output == Some(Output::Wide);
    let mut t = Table::new();
    let mut header = vec!["TASK", "STATE", "EXIT", "AGE", "ENDED", "FRAMEWORK", "HOST", "REASON"];
    if wide {
        header.extend(["NAME", "FRAMEWORK ID", "AGENT ID", "RESOURCES"]);
    }
    t.set_header(header);
    let shown = page.items.len();
    for task in page.items {
        let mut state = task.state.trim_start_matches("TASK_").to_lowercase();
        if let (Some(healthy), "running") = (task.healthy, state.as_str()) {
            state.push_str(if healthy { " (healthy)" } else { " (unhealthy)" });
        }
        let why = if task.message.is_empty() {
            &task.reason
        } else {
            &task.message
        };
        let mut row = vec![
            task.id.clone(),
            state,
            task.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            format!("{:.0}s", mezzo_proto::clock::secs_since(task.launched_at)),
            task.ended_at.map(ago).unwrap_or_default(),
            named(&frameworks, &task.framework_id),
            named(&hosts, &task.agent_id),
            short(why, if wide { 200 } else { 32 }),
        ];
        if wide {
            row.extend([task.name, task.framework_id, task.agent_id, res(&task.resources)]);
        }
        t.add_row(row);
    }
    println!("{t}");
    println!("{shown} of {} task(s) shown (offset {})", page.total, a.offset);
    Ok(())
}

/// `mezzo kill`: finds the task's framework unless given.
async fn kill(conn: Conn, task: String, framework: Option<String>, grace: Option<Duration>) -> Result<(), ApiError> {
    let c = Client::new(&conn.master)?;
    let fw = task_framework(&c, framework.as_deref(), &task).await?;
    let body = serde_json::json!({ "grace_secs": grace.map(|d| d.as_secs_f64()) });
    let path = format!("/api/v1/tasks/{}/{}/kill", seg(&fw), seg(&task));
    act(conn, &path, body, &format!("killing task {task}")).await
}

async fn act(conn: Conn, path: &str, body: Value, what: &str) -> Result<(), ApiError> {
    let c = Client::new(&conn.master)?;
    let v = c.post(path, body).await?;
    if conn.json {
        print_json(&v);
    } else {
        println!("{what}");
    }
    Ok(())
}

/// The framework of `task`: the one given (`--framework`), or found.
pub(super) async fn task_framework(c: &Client, given: Option<&str>, task: &str) -> Result<String, ApiError> {
    match given {
        Some(f) => resolve::framework(c, f).await,
        None => framework_of(c, task).await,
    }
}

/// The framework of a task id, when exactly one framework has it.
pub(super) async fn framework_of(c: &Client, task: &str) -> Result<String, ApiError> {
    let path = with_query(
        "/api/v1/tasks",
        &[("q", Some(task.to_owned())), ("limit", Some("1000".into()))],
    );
    let page: Page<TaskView> = decode(c.get(&path).await?)?;
    let mut fws: Vec<String> = page
        .items
        .into_iter()
        .filter(|t| t.id == task)
        .map(|t| t.framework_id)
        .collect();
    fws.dedup();
    match fws.len() {
        0 => Err(ApiError::NotFound(format!("no task {task}"))),
        1 => Ok(fws.remove(0)),
        _ => Err(ApiError::Bad(format!(
            "task id {task} is used by frameworks {}; name one with --framework",
            fws.join(", ")
        ))),
    }
}

/// `mezzo why ID`: a framework id, else a task id.
async fn why(conn: Conn, id: &str) -> Result<(), ApiError> {
    let c = Client::new(&conn.master)?;
    let (v, is_task) = match c.get(&format!("/api/v1/why/framework/{}", seg(id))).await {
        Ok(v) => (v, false),
        Err(ApiError::NotFound(_) | ApiError::Bad(_)) => (c.get(&format!("/api/v1/why/task/{}", seg(id))).await?, true),
        Err(e) => return Err(e),
    };
    if conn.json {
        print_json(&v);
    } else if is_task {
        print_why_task(decode(v)?);
    } else {
        print_why_framework(&decode(v)?, true);
    }
    Ok(())
}

fn print_why_task(w: WhyTask) {
    for t in &w.launched {
        println!(
            "task {} of framework {} was launched on agent {}: {} {} {}",
            t.id, t.framework_id, t.agent_id, t.state, t.reason, t.message
        );
    }
    for p in &w.images {
        if let Some(line) = image_line(p) {
            println!("  {line}");
        }
    }
    for (fid, p) in &w.pending {
        println!("framework {fid} reports task {} waiting: {}", p.task_id, p.reason);
    }
    for p in &w.preemption {
        println!("  {p}");
    }
    for f in &w.frameworks {
        print_why_framework(f, false);
    }
}

/// What a launched task's image is doing: pulled for how long (and the
/// latest layer), or why it failed.
fn image_line(p: &ImagePull) -> Option<String> {
    // The messages begin with the image's name, which the line gives.
    let image = mezzo_proto::image::ImageRef::parse(&p.reference).ok();
    if let Some(error) = &p.error {
        let prefix = image.map(|i| i.error_message_prefix()).unwrap_or_default();
        let error = error.strip_prefix(&prefix).unwrap_or(error);
        return Some(format!(
            "task {} failed on its image {}: {error}",
            p.task_id, p.reference
        ));
    }
    let since = p.pulling_since?;
    let prefix = image.map(|i| i.pull_message_prefix()).unwrap_or_default();
    let latest = p.pulling.as_deref().unwrap_or_default();
    Some(format!(
        "task {} is pulling its image {} (for {:.0}s); latest: {}",
        p.task_id,
        p.reference,
        mezzo_proto::clock::secs_since(since),
        latest.strip_prefix(&prefix).unwrap_or(latest)
    ))
}

/// `12s ago` for unix seconds `t`.
/// A full id with `-o wide`, else its first 8 characters (enough for
/// every command that takes an id: they take unique prefixes).
fn id_or_prefix(id: &str, wide: bool) -> String {
    if wide {
        id.to_owned()
    } else {
        id.chars().take(8).collect()
    }
}

/// cpus, mem and disk, in a few columns.
fn core_res(r: &Resources) -> String {
    let core = Resources {
        cpus: r.cpus,
        mem: r.mem,
        disk: r.disk,
        ..Default::default()
    };
    res(&core)
}

/// `text` cut to `max` characters, marked with `…` when cut.
fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn ago(t: f64) -> String {
    format!("{:.0}s ago", mezzo_proto::clock::secs_since(t))
}

/// One framework's offers and hints; its waiting tasks with `pending`.
fn print_why_framework(f: &WhyFramework, pending: bool) {
    let o = &f.offers;
    println!("framework {} ({})", f.name, f.framework_id);
    println!(
        "  offers received {}, declined {}, accepted {}; last offer {}; largest offer {}",
        o.received,
        o.declined,
        o.accepted,
        o.last_offer_at.map_or("never".into(), ago),
        o.largest_offer.as_ref().map_or("none".into(), res)
    );
    for h in &f.hints {
        println!("  - {h}");
    }
    if pending {
        for p in f.pending.iter().flat_map(|p| &p.tasks) {
            println!("  waiting: {} — {}", p.task_id, p.reason);
        }
    }
}
