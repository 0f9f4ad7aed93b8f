//! `mezzo top`: the cluster at a glance, redrawn every interval (plain
//! ANSI: clear and home), like `top`. `--once` prints one frame.

use std::time::Duration;

use comfy_table::Table;
use mezzo_master::core::view::{FrameworkRow, Page, ResourceBuckets, TaskView};
use mezzo_master::http::OverviewBody;
use mezzo_proto::resources::Resources;

use super::{ApiError, Client, Conn, decode, res};

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

fn pct(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:5.1}%", 100.0 * a / b)
    } else {
        "    -".into()
    }
}

/// One frame: the overview, the top frameworks and the active tasks;
/// with `json`, the three answers as they came, in one object.
async fn frame(c: &Client, json: bool) -> Result<String, ApiError> {
    let o = c.get("/api/v1/overview").await?;
    let fws = c.get("/api/v1/frameworks?limit=20").await?;
    let tasks = c.get("/api/v1/tasks?state=active&limit=15").await?;
    if json {
        return Ok(serde_json::json!({ "overview": o, "frameworks": fws, "tasks": tasks }).to_string());
    }
    let (o, fws, tasks): (OverviewBody, Page<FrameworkRow>, Page<TaskView>) =
        (decode(o)?, decode(fws)?, decode(tasks)?);
    let ov = &o.overview;
    let raft = o.raft.as_ref();
    let mut out = format!(
        "mezzo top — leader {} term {} · {} agents · {} frameworks ({} connected) · {} active tasks · {} offers out\n\n",
        raft.and_then(|r| r.leader.clone()).unwrap_or_default(),
        raft.map(|r| r.term.to_string()).unwrap_or_default(),
        ov.agents,
        ov.frameworks,
        ov.frameworks_connected,
        ov.active_tasks,
        ov.outstanding_offers,
    );
    out.push_str(&format!("{}\n\n", resources(&ov.resources)));
    let mut t = Table::new();
    t.set_header(["FRAMEWORK", "NAME", "SHARE", "ALLOCATED", "OFFERS R/D/A", "PENDING"]);
    for f in fws.items {
        let of = &f.offers;
        t.add_row([
            f.id,
            f.name,
            format!("{:.1}%", f.dominant_share * 100.0),
            res(&f.allocated),
            format!("{}/{}/{}", of.received, of.declined, of.accepted),
            f.pending_tasks.to_string(),
        ]);
    }
    out.push_str(&format!("{t}\n\n"));
    let mut t = Table::new();
    t.set_header(["TASK", "STATE", "FRAMEWORK", "AGENT", "RESOURCES"]);
    for task in tasks.items {
        t.add_row([
            task.id,
            task.state.into_owned(),
            task.framework_id,
            task.agent_id,
            res(&task.resources),
        ]);
    }
    out.push_str(&format!("{t}\n"));
    Ok(out)
}

/// cpus, mem and disk: total, allocated, offered, idle and the allocated
/// share (what tasks hold, not what they use).
fn resources(r: &ResourceBuckets) -> Table {
    type Amount = fn(&Resources) -> f64;
    let kinds: [(&str, Amount); 3] = [
        ("cpus", |x| x.cpus.0 as f64 / 1000.0),
        ("mem", |x| x.mem.0 as f64),
        ("disk", |x| x.disk.0 as f64),
    ];
    let mut t = Table::new();
    t.set_header(["RESOURCE", "TOTAL", "ALLOCATED", "OFFERED", "IDLE", "ALLOC%"]);
    for (k, get) in kinds {
        let (total, allocated) = (get(&r.total), get(&r.allocated));
        t.add_row([
            k.to_owned(),
            total.to_string(),
            allocated.to_string(),
            get(&r.offered).to_string(),
            get(&r.idle).to_string(),
            pct(allocated, total),
        ]);
    }
    t
}

pub async fn run(a: Args) -> Result<(), ApiError> {
    let c = Client::new(&a.conn.master)?;
    loop {
        let text = frame(&c, a.conn.json).await?;
        if a.conn.json {
            println!("{text}");
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
