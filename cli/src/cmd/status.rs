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
    for m in super::comma_list(masters) {
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

pub(crate) fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `cpus 4 mem 8192` from a resources object, leaving out zeros and
/// empty port sets ("-" when nothing is left).
pub(crate) fn res(v: &Value) -> String {
    let Some(o) = v.as_object() else { return s(v) };
    let parts: Vec<String> = o
        .iter()
        .filter(|(k, x)| !(x.as_f64() == Some(0.0) || (k.as_str() == "ports" && x.as_str() == Some("[]"))))
        .map(|(k, x)| format!("{k} {}", s(x)))
        .collect();
    if parts.is_empty() { "-".into() } else { parts.join(" ") }
}

/// `/raft` of every given master (unreachable ones included, as errors).
pub async fn masters_status(masters: &str) -> Vec<(String, Result<Value, String>)> {
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()
    {
        Ok(c) => c,
        Err(e) => return vec![(masters.to_owned(), Err(e.to_string()))],
    };
    let mut out = Vec::new();
    for m in super::comma_list(masters) {
        let r = match client.get(format!("http://{m}/raft")).send().await {
            Ok(resp) => resp.json::<Value>().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        out.push((m, r));
    }
    out
}

/// The masters table.
pub fn masters_table(masters: &[(String, Result<Value, String>)]) -> Table {
    let mut t = Table::new();
    t.set_header(["MASTER", "ID", "ROLE", "TERM", "COMMIT", "APPLIED", "LEADER"]);
    for (addr, r) in masters {
        match r {
            Ok(v) => t.add_row([
                addr.clone(),
                s(&v["id"]),
                s(&v["role"]),
                s(&v["term"]),
                s(&v["commit"]),
                s(&v["applied"]),
                s(&v["leader"]),
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
    let mut state = fetch_state(&a.master).await?;
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
    if a.json {
        println!("{}", serde_json::to_string_pretty(&state)?);
        return Ok(ExitCode::SUCCESS);
    }
    let empty = vec![];
    let list = |k: &str| state[k].as_array().unwrap_or(&empty).clone();
    println!("{}", masters_table(&masters));
    println!(
        "leader has served for {:.0}s",
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
