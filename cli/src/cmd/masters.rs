//! `mezzo masters`: list the Raft group, add or remove a master.

use std::process::ExitCode;

use anyhow::{Context, bail};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Master addresses, comma-separated (any of them; followers redirect).
    #[arg(long, env = "MEZZO_MASTER", default_value = "127.0.0.1:5050", global = true)]
    master: String,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Show every given master's Raft role and position (the default).
    List,
    /// Add a master by address; then start it with `mezzo master --listen ADDRESS --join MASTERS`.
    Add { address: String },
    /// Remove a master by id (see `mezzo masters list`).
    Remove { id: u64 },
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let (path, body, delete) = match a.action.unwrap_or(Action::List) {
        Action::List => {
            let masters = super::status::masters_status(&a.master).await;
            if a.json {
                let v: Vec<serde_json::Value> = masters
                    .iter()
                    .map(|(addr, r)| match r {
                        Ok(v) => serde_json::json!({ "address": addr, "raft": v }),
                        Err(e) => serde_json::json!({ "address": addr, "error": e }),
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{}", super::status::masters_table(&masters));
            }
            let ok = masters
                .iter()
                .any(|(_, r)| r.as_ref().is_ok_and(|v| v.role == "leader"));
            return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(3) });
        }
        Action::Add { address } => (
            "/raft/members".to_owned(),
            Some(serde_json::json!({ "address": address })),
            false,
        ),
        Action::Remove { id } => (format!("/raft/members/{id}"), None, true),
    };
    let mut last = None;
    for m in super::comma_list(&a.master) {
        let url = format!("http://{m}{path}");
        let req = if delete {
            client.delete(&url)
        } else {
            client.post(&url).json(&body)
        };
        match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                if !status.is_success() {
                    bail!("{m} refused: {status}: {text}");
                }
                let v: serde_json::Value = serde_json::from_str(&text).context("bad answer")?;
                if a.json {
                    println!("{v}");
                } else {
                    println!("done: master {} ; members now {}", v["id"], v["members"]);
                }
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => last = Some(anyhow::anyhow!("{m}: {e}")),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no master address given")))
}
