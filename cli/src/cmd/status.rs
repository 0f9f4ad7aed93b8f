//! `mezzo status`: every master's Raft view and the leader's `/state`, as
//! tables (read into the master's own view types) or `--json`.

use std::process::ExitCode;

use anyhow::Context;
use comfy_table::Table;
use mezzo_master::core::view::StateView;
use mezzo_master::raft::RaftStatus;
use serde_json::Value;

use std::time::Duration;

use super::ops::client::Client;
use super::res;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Master addresses, comma-separated; the first that answers is used.
    #[arg(long, env = "MEZZO_MASTER", default_value = "")]
    master: String,
    /// Print the master's full state as JSON.
    #[arg(long)]
    json: bool,
}

/// Fetches `/state` from the leader (through any master), as it came.
pub async fn fetch_state(masters: &str) -> anyhow::Result<Value> {
    let client = Client::with_timeout(masters, Duration::from_secs(5))?;
    Ok(client.get("/state").await?)
}

/// `/raft` of every given master (unreachable ones included, as errors).
pub async fn masters_status(masters: &str) -> Vec<(String, Result<RaftStatus, String>)> {
    let client = match Client::with_timeout(masters, Duration::from_secs(2)) {
        Ok(c) => c,
        Err(e) => return vec![(masters.to_owned(), Err(e.to_string()))],
    };
    let mut out = Vec::new();
    for m in client.masters() {
        let r = client
            .get_from::<RaftStatus>(m, "/raft")
            .await
            .map_err(|e| e.to_string());
        out.push((m.clone(), r));
    }
    out
}

/// The masters table.
pub fn masters_table(masters: &[(String, Result<RaftStatus, String>)]) -> Table {
    let mut t = Table::new();
    t.set_header(["MASTER", "ID", "ROLE", "TERM", "COMMIT", "APPLIED", "LEADER"]);
    for (addr, r) in masters {
        match r {
            Ok(v) => t.add_row([
                addr.clone(),
                v.id.to_string(),
                v.role.clone(),
                v.term.to_string(),
                v.commit.to_string(),
                v.applied.to_string(),
                v.leader.clone().unwrap_or_default(),
            ]),
            Err(e) => t.add_row([
                addr.clone(),
                String::new(),
                "unreachable".into(),
                String::new(),
                String::new(),
                String::new(),
                e.chars().take(40).collect(),
            ]),
        };
    }
    t
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let masters = masters_status(&a.master).await;
    let state = fetch_state(&a.master).await?;
    if a.json {
        print_json(state, &masters)?;
        return Ok(ExitCode::SUCCESS);
    }
    let state: StateView = serde_json::from_value(state).context("unexpected /state")?;
    println!("{}", masters_table(&masters));
    print_state(&state);
    Ok(ExitCode::SUCCESS)
}

/// `/state` as it came, with every master's Raft view (or why it did not
/// answer) under `masters`.
fn print_json(mut state: Value, masters: &[(String, Result<RaftStatus, String>)]) -> anyhow::Result<()> {
    if let Some(obj) = state.as_object_mut() {
        let list: Vec<Value> = masters
            .iter()
            .map(|(addr, r)| match r {
                Ok(v) => serde_json::json!({ "address": addr, "raft": v }),
                Err(e) => serde_json::json!({ "address": addr, "error": e }),
            })
            .collect();
        obj.insert("masters".into(), Value::Array(list));
    }
    println!("{}", serde_json::to_string_pretty(&state)?);
    Ok(())
}

/// The leader's agents, frameworks and active tasks.
fn print_state(state: &StateView) {
    println!("leader has served for {:.0}s", state.uptime_secs);
    let totals = &state.totals;
    println!(
        "cluster: total {}  used {}  offered {}",
        res(&totals.total),
        res(&totals.used),
        res(&totals.offered)
    );
    let mut t = Table::new();
    t.set_header(["AGENT", "HOSTNAME", "STATUS", "TASKS", "TOTAL", "USED"]);
    for a in &state.agents {
        t.add_row([
            a.id.clone(),
            a.hostname.clone(),
            a.status.name().to_owned(),
            a.active_tasks.to_string(),
            res(&a.total),
            res(&a.used),
        ]);
    }
    println!("\n{t}");
    let mut t = Table::new();
    t.set_header(["FRAMEWORK", "NAME", "CONNECTED", "TASKS", "OFFERS", "ALLOCATED"]);
    for f in &state.frameworks {
        t.add_row([
            f.id.clone(),
            f.name.clone(),
            f.connected.to_string(),
            f.active_tasks.to_string(),
            f.outstanding_offers.to_string(),
            res(&f.allocated),
        ]);
    }
    println!("\n{t}");
    let mut t = Table::new();
    t.set_header(["TASK", "FRAMEWORK", "AGENT", "STATE", "RESOURCES"]);
    for task in &state.tasks {
        t.add_row([
            task.id.clone(),
            task.framework_id.clone(),
            task.agent_id.clone(),
            task.state.to_string(),
            res(&task.resources),
        ]);
    }
    println!("\n{t}");
}
