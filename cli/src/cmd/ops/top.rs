//! `mezzo top`: the cluster at a glance, redrawn every interval (plain
//! ANSI: clear and home), like `top`. `--once` prints one frame.

use std::time::Duration;

use comfy_table::Table;
use serde_json::Value;

use super::{ApiError, Client, Conn, items, res, s};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    conn: Conn,
    /// Time between redraws.
    #[arg(long, default_value = "2s", value_parser = crate::cmd::duration)]
    interval: Duration,
    /// Print one frame and exit.
    #[arg(long)]
    once: bool,
}

fn pct(a: &Value, b: &Value) -> String {
    let (a, b) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
    if b > 0.0 {
        format!("{:5.1}%", 100.0 * a / b)
    } else {
        "    -".into()
    }
}

async fn frame(c: &Client) -> Result<(String, Value), ApiError> {
    let o = c.get("/api/v1/overview").await?;
    let fws = c.get("/api/v1/frameworks?limit=20").await?;
    let tasks = c.get("/api/v1/tasks?state=active&limit=15").await?;
    let r = &o["resources"];
    let mut out = String::new();
    out.push_str(&format!(
        "mezzo top — leader {} term {} · {} agents · {} frameworks ({} connected) · {} active tasks · {} offers out\n\n",
        s(&o["raft"]["leader"]),
        s(&o["raft"]["term"]),
        s(&o["agents"]),
        s(&o["frameworks"]),
        s(&o["frameworks_connected"]),
        s(&o["active_tasks"]),
        s(&o["outstanding_offers"]),
    ));
    let mut t = Table::new();
    t.set_header(["RESOURCE", "TOTAL", "ALLOCATED", "OFFERED", "IDLE", "USED%"]);
    for k in ["cpus", "mem", "disk"] {
        t.add_row([
            k.to_owned(),
            s(&r["total"][k]),
            s(&r["allocated"][k]),
            s(&r["offered"][k]),
            s(&r["idle"][k]),
            pct(&r["allocated"][k], &r["total"][k]),
        ]);
    }
    out.push_str(&format!("{t}\n\n"));
    let mut t = Table::new();
    t.set_header(["FRAMEWORK", "NAME", "SHARE", "ALLOCATED", "OFFERS R/D/A", "PENDING"]);
    for f in items(&fws) {
        let of = &f["offers"];
        t.add_row([
            s(&f["id"]),
            s(&f["name"]),
            format!("{:.1}%", f["dominant_share"].as_f64().unwrap_or(0.0) * 100.0),
            res(&f["allocated"]),
            format!("{}/{}/{}", s(&of["received"]), s(&of["declined"]), s(&of["accepted"])),
            s(&f["pending_tasks"]),
        ]);
    }
    out.push_str(&format!("{t}\n\n"));
    let mut t = Table::new();
    t.set_header(["TASK", "STATE", "FRAMEWORK", "AGENT", "RESOURCES"]);
    for task in items(&tasks) {
        t.add_row([
            s(&task["id"]),
            s(&task["state"]),
            s(&task["framework_id"]),
            s(&task["agent_id"]),
            res(&task["resources"]),
        ]);
    }
    out.push_str(&format!("{t}\n"));
    let json = serde_json::json!({ "overview": o, "frameworks": fws, "tasks": tasks });
    Ok((out, json))
}

pub async fn run(a: Args) -> Result<(), ApiError> {
    let c = Client::new(&a.conn.master, a.conn.token.clone())?;
    loop {
        let (text, json) = frame(&c).await?;
        if a.conn.json {
            println!("{json}");
        } else if a.once {
            print!("{text}");
        } else {
            print!("\x1b[2J\x1b[H{text}");
        }
        if a.once {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(a.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
