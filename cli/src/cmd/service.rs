//! `mezzo service`: runs the long-running service framework
//! (`serve`) and talks to its HTTP API (everything else).
//!
//! Exit codes: 0 done; 1 the framework could not be reached or failed;
//! 2 the request was refused as malformed (bad file: the message names the
//! field or line); 3 no such service; 4 not possible now (conflict);
//! 5 resources no agent has; 6 the framework is not connected (nothing
//! changed); 7 `endpoints` found no healthy instance.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use comfy_table::Table;
use mezzo_service::view::{DeployReply, Endpoint, ErrorBody, ScaleBody, ServiceStatus, Summary};
use serde::de::DeserializeOwned;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Args)]
struct Client {
    /// The service framework's HTTP address (see `mezzo service serve`).
    #[arg(long, env = "MEZZO_SERVICE", default_value = "127.0.0.1:5090")]
    service: String,
    /// The framework's API token, which `mezzo service serve` keeps in its
    /// work dir (`api-token`, readable by its user only).
    #[arg(
        long,
        env = "MEZZO_SERVICE_TOKEN_FILE",
        default_value = "/tmp/mezzo/service/api-token"
    )]
    token_file: PathBuf,
}

#[derive(Debug, clap::Args)]
struct Query {
    #[command(flatten)]
    client: Client,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Run the service framework (a daemon with an HTTP API).
    Serve {
        /// Master addresses, comma-separated.
        #[arg(
            long,
            visible_alias = "master",
            env = "MEZZO_MASTER",
            default_value = "127.0.0.1:5050"
        )]
        masters: String,
        /// Address of the HTTP API.
        #[arg(long, env = "MEZZO_SERVICE_LISTEN", default_value = "127.0.0.1:5090")]
        listen: SocketAddr,
        /// Keeps the framework id, to resume after a restart (the rest of
        /// the state lives in the masters).
        #[arg(long, env = "MEZZO_SERVICE_WORK_DIR", default_value = "/tmp/mezzo/service")]
        work_dir: PathBuf,
        /// How long the masters keep the tasks while this daemon is away.
        #[arg(long, default_value = "7days", value_parser = super::duration)]
        failover_timeout: Duration,
        /// The framework's role; services with a persistent volume need a
        /// named one (role `*` holds no reservations).
        #[arg(long, env = "MEZZO_SERVICE_ROLE", default_value = "*")]
        role: String,
    },
    /// Create a service, or roll it to a new version, from a TOML file.
    Deploy {
        /// The service file (`-` for stdin).
        file: PathBuf,
        #[command(flatten)]
        query: Query,
    },
    /// Show one service: counts, deployment state, instances, events.
    Status {
        name: String,
        #[command(flatten)]
        query: Query,
    },
    /// List the services.
    List {
        #[command(flatten)]
        query: Query,
    },
    /// Change the number of instances.
    Scale {
        name: String,
        instances: u32,
        #[command(flatten)]
        query: Query,
    },
    /// Replace every instance by a rolling update.
    Restart {
        name: String,
        #[command(flatten)]
        query: Query,
    },
    /// Go back to the previous version.
    Rollback {
        name: String,
        #[command(flatten)]
        query: Query,
    },
    /// Stop every instance and forget the service.
    Remove {
        name: String,
        #[command(flatten)]
        query: Query,
    },
    /// The host:port of every healthy instance.
    Endpoints {
        name: String,
        #[command(flatten)]
        query: Query,
    },
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    match a.command {
        Sub::Serve {
            masters,
            listen,
            work_dir,
            failover_timeout,
            role,
        } => {
            let mut cfg = mezzo_service::Config::new(super::comma_list(&masters), listen, work_dir);
            cfg.failover_timeout = failover_timeout;
            cfg.role = role;
            let running = mezzo_service::serve(cfg)
                .await
                .context("cannot start the service framework")?;
            super::ready("service", running.addr);
            tokio::select! {
                r = running.wait() => r.context("the service framework stopped")?,
                _ = super::shutdown_signal() => {}
            }
            Ok(ExitCode::SUCCESS)
        }
        Sub::Deploy { file, query } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("read stdin")?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?
            };
            let r: Result<DeployReply, _> = call(&query.client, reqwest::Method::POST, "", Some(text)).await?;
            show(r, query.json, |d| {
                println!("service {}: {} (version {})", d.name, d.outcome, d.version)
            })
        }
        Sub::Status { name, query } => {
            let r: Result<ServiceStatus, _> =
                call(&query.client, reqwest::Method::GET, &format!("/{name}"), None).await?;
            show(r, query.json, print_status)
        }
        Sub::List { query } => {
            let r: Result<Vec<Summary>, _> = call(&query.client, reqwest::Method::GET, "", None).await?;
            show(r, query.json, |list| println!("{}", summaries(list)))
        }
        Sub::Scale { name, instances, query } => {
            let body = serde_json::to_string(&ScaleBody { instances })?;
            let r: Result<Summary, _> = call(
                &query.client,
                reqwest::Method::POST,
                &format!("/{name}/scale"),
                Some(body),
            )
            .await?;
            show(r, query.json, |s| {
                println!("service {}: scaling to {}", s.name, s.desired)
            })
        }
        Sub::Restart { name, query } => {
            let r: Result<DeployReply, _> =
                call(&query.client, reqwest::Method::POST, &format!("/{name}/restart"), None).await?;
            show(r, query.json, |d| {
                println!("service {}: restarting as version {}", d.name, d.version)
            })
        }
        Sub::Rollback { name, query } => {
            let r: Result<DeployReply, _> =
                call(&query.client, reqwest::Method::POST, &format!("/{name}/rollback"), None).await?;
            show(r, query.json, |d| {
                println!("service {}: rolling back to version {}", d.name, d.version)
            })
        }
        Sub::Remove { name, query } => {
            let r: Result<Summary, _> = call(&query.client, reqwest::Method::DELETE, &format!("/{name}"), None).await?;
            show(r, query.json, |s| println!("service {}: removing", s.name))
        }
        Sub::Endpoints { name, query } => {
            let r: Result<Vec<Endpoint>, _> =
                call(&query.client, reqwest::Method::GET, &format!("/{name}/endpoints"), None).await?;
            let none_healthy = matches!(&r, Ok(list) if list.is_empty());
            let code = show(r, query.json, |list| {
                for e in list {
                    println!("{}", e.address);
                }
            })?;
            if none_healthy {
                // Nothing to connect to is not success (issue 21).
                eprintln!("mezzo service: {name} has no healthy instance");
                return Ok(ExitCode::from(7));
            }
            Ok(code)
        }
    }
}

/// One API call: `Ok(Ok(body))` on success, `Ok(Err((status, message)))`
/// when the framework refused, `Err` when it could not be reached.
async fn call<T: DeserializeOwned>(
    c: &Client,
    method: reqwest::Method,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<Result<T, (u16, String)>> {
    let base = if c.service.starts_with("http") {
        c.service.clone()
    } else {
        format!("http://{}", c.service)
    };
    let url = format!("{base}/v1/services{path}");
    let token = mezzo_sdk::api_token::read(&c.token_file).with_context(|| {
        format!(
            "cannot read the service framework's API token at {} (`mezzo service serve` writes it in its --work-dir; give --token-file)",
            c.token_file.display()
        )
    })?;
    // No proxy: it would be handed the token.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()?;
    let mut req = http.request(method, &url).bearer_auth(token);
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach the service framework at {base} (is `mezzo service serve` running?)"))?;
    let status = resp.status();
    let text = resp.text().await.context("read the answer")?;
    if status.is_success() {
        return Ok(Ok(
            serde_json::from_str(&text).with_context(|| format!("bad answer from {url}"))?
        ));
    }
    let message = serde_json::from_str::<ErrorBody>(&text)
        .map(|e| e.error)
        .unwrap_or(text);
    Ok(Err((status.as_u16(), message)))
}

/// Prints a result (JSON or text) and picks the exit code.
fn show<T: serde::Serialize>(
    r: Result<T, (u16, String)>,
    json: bool,
    text: impl FnOnce(&T),
) -> anyhow::Result<ExitCode> {
    match r {
        Ok(v) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                text(&v);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err((status, message)) => {
            if json {
                println!("{}", serde_json::json!({ "error": message, "status": status }));
            }
            eprintln!("mezzo service: {message}");
            Ok(ExitCode::from(match status {
                400 | 413 => 2,
                404 => 3,
                409 => 4,
                422 => 5,
                503 => 6,
                _ => 1,
            }))
        }
    }
}

fn summaries(list: &[Summary]) -> Table {
    let mut t = Table::new();
    t.set_header(["SERVICE", "VERSION", "DESIRED", "RUNNING", "HEALTHY", "STATE"]);
    for s in list {
        t.add_row([
            s.name.clone(),
            s.version.to_string(),
            s.desired.to_string(),
            s.running.to_string(),
            s.healthy.to_string(),
            s.state.clone(),
        ]);
    }
    t
}

fn print_status(s: &ServiceStatus) {
    println!("{}", summaries(std::slice::from_ref(&s.summary)));
    let mut t = Table::new();
    t.set_header(["INSTANCE", "VERSION", "HOST", "PORTS", "PHASE", "HEALTH"]);
    for i in &s.instances {
        let ports: Vec<String> = i.ports.iter().map(|(k, v)| format!("{k}={v}")).collect();
        t.add_row([
            i.task_id.clone(),
            i.version.to_string(),
            i.host.clone(),
            ports.join(","),
            i.phase.clone(),
            i.health.clone(),
        ]);
    }
    println!("\n{t}");
    if !s.events.is_empty() {
        println!("\nevents:");
        for e in &s.events {
            println!("  {e}");
        }
    }
}
