//! Operator commands over the operator HTTP API (docs/operator-api.md):
//! queries print tables (or `--json`), actions send the operator token.
//! Exit codes: 0 ok, 1 error or unreachable, 2 not found, 3 refused
//! (token), 4 bad request.

pub mod client;
mod logs;
mod top;

use std::process::ExitCode;
use std::time::Duration;

use comfy_table::Table;
use serde_json::Value;

use super::status::{res, s};
pub use client::{ApiError, Client};

/// Where and how to reach the masters.
#[derive(Debug, Clone, clap::Args)]
pub struct Conn {
    /// Master addresses, comma-separated; followers send us to the leader.
    #[arg(long, env = "MEZZO_MASTER", default_value = "127.0.0.1:5050")]
    master: String,
    /// Operator token for actions and secret fields.
    #[arg(long, env = "MEZZO_OPERATOR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
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
    },
    /// List frameworks with their offers and tasks.
    Frameworks {
        #[command(flatten)]
        conn: Conn,
    },
    /// List tasks, newest first.
    Tasks {
        #[command(flatten)]
        conn: Conn,
        /// State(s), e.g. running, failed, active, terminal (comma-separated).
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        framework: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        /// At most this many (1..=1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// Print a task's stdout (or another sandbox file); -f follows it.
    Logs(logs::Args),
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
        agent: String,
        /// Kill tasks still running after this long (e.g. 10m).
        #[arg(long, value_parser = super::duration)]
        deadline: Option<Duration>,
    },
    /// End a drain: offer the agent again.
    Reactivate {
        #[command(flatten)]
        conn: Conn,
        agent: String,
    },
    /// Mark an agent gone for good: its tasks become GONE and it may not return.
    Gone {
        #[command(flatten)]
        conn: Conn,
        agent: String,
    },
    /// Remove a framework and kill its tasks.
    Teardown {
        #[command(flatten)]
        conn: Conn,
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

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

async fn exec(cmd: Command) -> Result<(), ApiError> {
    match cmd {
        Command::Agents { conn, status } => {
            let c = Client::new(&conn.master, conn.token)?;
            let v = c
                .get(&with_query(
                    "/api/v1/agents",
                    &[("status", status), ("limit", Some("1000".into()))],
                ))
                .await?;
            if conn.json {
                print_json(&v);
                return Ok(());
            }
            let mut t = Table::new();
            t.set_header(["AGENT", "HOSTNAME", "STATUS", "TASKS", "TOTAL", "USED", "OFFERED"]);
            for a in items(&v) {
                let status = if a["draining"] == true {
                    "draining".into()
                } else {
                    s(&a["status"])
                };
                t.add_row([
                    s(&a["id"]),
                    s(&a["hostname"]),
                    status,
                    s(&a["active_tasks"]),
                    res(&a["total"]),
                    res(&a["used"]),
                    res(&a["offered"]),
                ]);
            }
            println!("{t}");
        }
        Command::Frameworks { conn } => {
            let c = Client::new(&conn.master, conn.token)?;
            let v = c.get("/api/v1/frameworks?limit=1000").await?;
            if conn.json {
                print_json(&v);
                return Ok(());
            }
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
            for f in items(&v) {
                let o = &f["offers"];
                let tasks: Vec<String> = f["tasks_by_state"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, n)| format!("{} {}", n, k.trim_start_matches("TASK_").to_lowercase()))
                            .collect()
                    })
                    .unwrap_or_default();
                t.add_row([
                    s(&f["id"]),
                    s(&f["name"]),
                    f["roles"]
                        .as_array()
                        .map(|r| r.iter().map(s).collect::<Vec<_>>().join(","))
                        .unwrap_or_default(),
                    s(&f["connected"]),
                    format!("{:.1}%", f["dominant_share"].as_f64().unwrap_or(0.0) * 100.0),
                    format!("{}/{}/{}", s(&o["received"]), s(&o["declined"]), s(&o["accepted"])),
                    tasks.join(", "),
                    s(&f["pending_tasks"]),
                ]);
            }
            println!("{t}");
        }
        Command::Tasks {
            conn,
            state,
            framework,
            agent,
            limit,
            offset,
        } => {
            let c = Client::new(&conn.master, conn.token)?;
            let path = with_query(
                "/api/v1/tasks",
                &[
                    ("state", state),
                    ("framework", framework),
                    ("agent", agent),
                    ("limit", Some(limit.to_string())),
                    ("offset", Some(offset.to_string())),
                ],
            );
            let v = c.get(&path).await?;
            if conn.json {
                print_json(&v);
                return Ok(());
            }
            let mut t = Table::new();
            t.set_header(["TASK", "NAME", "STATE", "REASON", "FRAMEWORK", "AGENT", "RESOURCES"]);
            for task in items(&v) {
                t.add_row([
                    s(&task["id"]),
                    s(&task["name"]),
                    s(&task["state"]),
                    s(&task["reason"]),
                    s(&task["framework_id"]),
                    s(&task["agent_id"]),
                    res(&task["resources"]),
                ]);
            }
            println!("{t}");
            let shown = v["items"].as_array().map_or(0, Vec::len);
            println!("{shown} of {} task(s) shown (offset {offset})", s(&v["total"]));
        }
        Command::Logs(a) => logs::run(a).await?,
        Command::Why { conn, id } => why(conn, &id).await?,
        Command::Top(a) => top::run(a).await?,
        Command::Drain { conn, agent, deadline } => {
            let body = serde_json::json!({ "deadline_secs": deadline.map(|d| d.as_secs_f64()) });
            act(
                conn,
                &format!("/api/v1/agents/{}/drain", seg(&agent)),
                body,
                &format!("draining agent {agent}"),
            )
            .await?;
        }
        Command::Reactivate { conn, agent } => {
            let path = format!("/api/v1/agents/{}/reactivate", seg(&agent));
            act(conn, &path, Value::Null, &format!("reactivating agent {agent}")).await?;
        }
        Command::Gone { conn, agent } => {
            let path = format!("/api/v1/agents/{}/gone", seg(&agent));
            act(conn, &path, Value::Null, &format!("agent {agent} marked gone")).await?;
        }
        Command::Teardown { conn, framework } => {
            let path = format!("/api/v1/frameworks/{}/teardown", seg(&framework));
            act(conn, &path, Value::Null, &format!("tearing down framework {framework}")).await?;
        }
        Command::Kill {
            conn,
            task,
            framework,
            grace,
        } => {
            let c = Client::new(&conn.master, conn.token.clone())?;
            let fw = match framework {
                Some(f) => f,
                None => framework_of(&c, &task).await?,
            };
            let body = serde_json::json!({ "grace_secs": grace.map(|d| d.as_secs_f64()) });
            let path = format!("/api/v1/tasks/{}/{}/kill", seg(&fw), seg(&task));
            act(conn, &path, body, &format!("killing task {task}")).await?;
        }
    }
    Ok(())
}

async fn act(conn: Conn, path: &str, body: Value, what: &str) -> Result<(), ApiError> {
    let c = Client::new(&conn.master, conn.token)?;
    let v = c.post(path, body).await?;
    if conn.json {
        print_json(&v);
    } else {
        println!("{what}");
    }
    Ok(())
}

/// The framework of a task id, when exactly one framework has it.
pub(super) async fn framework_of(c: &Client, task: &str) -> Result<String, ApiError> {
    let v = c
        .get(&with_query(
            "/api/v1/tasks",
            &[("q", Some(task.to_owned())), ("limit", Some("1000".into()))],
        ))
        .await?;
    let mut fws: Vec<String> = items(&v)
        .iter()
        .filter(|t| t["id"] == task)
        .map(|t| s(&t["framework_id"]))
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

async fn why(conn: Conn, id: &str) -> Result<(), ApiError> {
    let c = Client::new(&conn.master, conn.token)?;
    let (v, is_task) = match c.get(&format!("/api/v1/why/framework/{}", seg(id))).await {
        Ok(v) => (v, false),
        Err(ApiError::NotFound(_) | ApiError::Bad(_)) => (c.get(&format!("/api/v1/why/task/{}", seg(id))).await?, true),
        Err(e) => return Err(e),
    };
    if conn.json {
        print_json(&v);
        return Ok(());
    }
    let frameworks: Vec<Value> = if is_task {
        for t in v["launched"].as_array().cloned().unwrap_or_default() {
            println!(
                "task {} of framework {} was launched on agent {}: {} {} {}",
                s(&t["id"]),
                s(&t["framework_id"]),
                s(&t["agent_id"]),
                s(&t["state"]),
                s(&t["reason"]),
                s(&t["message"])
            );
        }
        for p in v["pending"].as_array().cloned().unwrap_or_default() {
            println!(
                "framework {} reports task {} waiting: {}",
                s(&p[0]),
                s(&p[1]["task_id"]),
                s(&p[1]["reason"])
            );
        }
        v["frameworks"].as_array().cloned().unwrap_or_default()
    } else {
        vec![v]
    };
    for f in frameworks {
        let o = &f["offers"];
        println!("framework {} ({})", s(&f["name"]), s(&f["framework_id"]));
        println!(
            "  offers received {}, declined {}, accepted {}; last offer {}; largest offer {}",
            s(&o["received"]),
            s(&o["declined"]),
            s(&o["accepted"]),
            o["last_offer_at"].as_f64().map_or("never".into(), |t| format!(
                "{:.0}s ago",
                mezzo_proto::clock::secs_since(t)
            )),
            if o["largest_offer"].is_null() {
                "none".into()
            } else {
                res(&o["largest_offer"])
            }
        );
        for h in f["hints"].as_array().cloned().unwrap_or_default() {
            println!("  - {}", s(&h));
        }
        if !is_task {
            for p in f["pending"]["tasks"].as_array().cloned().unwrap_or_default() {
                println!("  waiting: {} — {}", s(&p["task_id"]), s(&p["reason"]));
            }
        }
    }
    Ok(())
}
