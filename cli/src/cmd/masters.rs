//! `mezzo masters`: list the Raft group, add or remove a master.

use std::process::ExitCode;

use super::ops::client::Client;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Master addresses, comma-separated (any of them; followers redirect).
    #[arg(long, env = "MEZZO_MASTER", default_value = "", global = true)]
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
    let (method, path, body) = match a.action.unwrap_or(Action::List) {
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
            reqwest::Method::POST,
            "/raft/members".to_owned(),
            Some(serde_json::json!({ "address": address })),
        ),
        Action::Remove { id } => (reqwest::Method::DELETE, format!("/raft/members/{id}"), None),
    };
    let client = Client::new(&a.master)?;
    match client.call(method, &path, body).await {
        Ok(v) => {
            if a.json {
                println!("{v}");
            } else {
                println!("done: master {} ; members now {}", v["id"], v["members"]);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}
