use std::process::ExitCode;

use anyhow::Context;
use comfy_table::Table;
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Master addresses, comma-separated; the first that answers is used.
    #[arg(long, env = "MEZZO_MASTER", default_value = "127.0.0.1:5050")]
    master: String,
    /// Print the master's full state as JSON.
    #[arg(long)]
    json: bool,
}

/// Fetches `/state` from the first master that answers.
pub async fn fetch_state(masters: &str) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()?;
    let mut last = None;
    for m in super::masters(masters) {
        match client
            .get(format!("http://{m}/state"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
        {
            Ok(resp) => return resp.json().await.with_context(|| format!("bad /state from {m}")),
            Err(e) => last = Some(anyhow::anyhow!("{m}: {e}")),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no master address given")))
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn res(v: &Value) -> String {
    format!("cpus {} mem {} disk {}", s(&v["cpus"]), s(&v["mem"]), s(&v["disk"]))
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let state = fetch_state(&a.master).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&state)?);
        return Ok(ExitCode::SUCCESS);
    }
    let empty = vec![];
    let list = |k: &str| state[k].as_array().unwrap_or(&empty).clone();
    println!(
        "master {}  uptime {:.0}s",
        s(&state["master_id"]),
        state["uptime_secs"].as_f64().unwrap_or(0.0)
    );
    println!(
        "cluster: total {}  used {}  offered {}",
        res(&state["totals"]["total"]),
        res(&state["totals"]["used"]),
        res(&state["totals"]["offered"])
    );
    let mut t = Table::new();
    t.set_header(["AGENT", "HOSTNAME", "STATUS", "TASKS", "TOTAL", "USED"]);
    for a in list("agents") {
        t.add_row([
            s(&a["id"]),
            s(&a["hostname"]),
            s(&a["status"]),
            s(&a["active_tasks"]),
            res(&a["total"]),
            res(&a["used"]),
        ]);
    }
    println!("\n{t}");
    let mut t = Table::new();
    t.set_header(["FRAMEWORK", "NAME", "CONNECTED", "TASKS", "OFFERS", "ALLOCATED"]);
    for f in list("frameworks") {
        t.add_row([
            s(&f["id"]),
            s(&f["name"]),
            s(&f["connected"]),
            s(&f["active_tasks"]),
            s(&f["outstanding_offers"]),
            res(&f["allocated"]),
        ]);
    }
    println!("\n{t}");
    let mut t = Table::new();
    t.set_header(["TASK", "FRAMEWORK", "AGENT", "STATE", "RESOURCES"]);
    for task in list("tasks") {
        t.add_row([
            s(&task["id"]),
            s(&task["framework_id"]),
            s(&task["agent_id"]),
            s(&task["state"]),
            res(&task["resources"]),
        ]);
    }
    println!("\n{t}");
    Ok(ExitCode::SUCCESS)
}
