//! `mezzo drain AGENT [--deadline D] [--wait]`: starts a drain and, with
//! `--wait`, follows it until nothing runs on the agent any more, saying
//! what is left whenever that changes (as `kubectl drain` and `nomad node
//! drain -monitor` do).

use std::time::Duration;

use mezzo_master::core::view::{Page, TaskView};

use super::client::{ApiError, Client};
use super::{Conn, decode, print_json, seg, with_query};

/// How often the agent's tasks are read while waiting.
const POLL: Duration = Duration::from_secs(1);
/// Task ids named in a progress line, at most.
const NAMED: usize = 5;

pub(super) async fn run(conn: Conn, agent: &str, deadline: Option<Duration>, wait: bool) -> Result<(), ApiError> {
    let c = Client::new(&conn.master)?;
    let body = serde_json::json!({ "deadline_secs": deadline.map(|d| d.as_secs_f64()) });
    let v = c.post(&format!("/api/v1/agents/{}/drain", seg(agent)), body).await?;
    if conn.json {
        print_json(&v);
    } else {
        let by = deadline.map_or(String::new(), |d| {
            format!("; what still runs in {} is killed", humantime::format_duration(d))
        });
        println!("draining agent {agent}{by}");
    }
    if wait {
        wait_empty(&c, agent, !conn.json).await?;
    }
    Ok(())
}

/// Polls until no active task is left on `agent`.
async fn wait_empty(c: &Client, agent: &str, say: bool) -> Result<(), ApiError> {
    let path = with_query(
        "/api/v1/tasks",
        &[
            ("agent", Some(agent.to_owned())),
            ("state", Some("active".to_owned())),
            ("limit", Some("1000".to_owned())),
        ],
    );
    let mut last = None;
    loop {
        let page: Page<TaskView> = decode::<Page<TaskView>>(c.get(&path).await?)?;
        if page.total == 0 {
            if say {
                println!("agent {agent} is drained: no task runs on it");
            }
            return Ok(());
        }
        if say && last != Some(page.total) {
            println!("{}", progress(&page));
        }
        last = Some(page.total);
        tokio::time::sleep(POLL).await;
    }
}

fn progress(page: &Page<TaskView>) -> String {
    let mut ids: Vec<&str> = page.items.iter().take(NAMED).map(|t| t.id.as_str()).collect();
    let more = page.total.saturating_sub(ids.len());
    if more > 0 {
        ids.push("…");
    }
    let n = page.total;
    let s = if n == 1 { "" } else { "s" };
    format!("{n} task{s} still running: {}", ids.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_names_a_few_tasks() {
        let task = |id: &str| {
            serde_json::from_value::<TaskView>(serde_json::json!({
                "id": id, "name": "", "framework_id": "f", "agent_id": "a",
                "state": "TASK_RUNNING", "reason": "", "message": "", "exit_code": null,
                "role": "*", "resources": {}, "launched_at": 0.0, "awaiting_ack": false,
                "usage": null
            }))
            .expect("task view")
        };
        let page = |n: usize| Page {
            total: n,
            offset: 0,
            limit: 1000,
            items: (0..n).map(|k| task(&format!("t{k}"))).collect(),
        };
        assert_eq!(progress(&page(1)), "1 task still running: t0");
        assert_eq!(progress(&page(7)), "7 tasks still running: t0, t1, t2, t3, t4, …");
    }
}
