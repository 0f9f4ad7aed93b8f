//! `mezzo quota`, `mezzo weights`, `mezzo reserve`, `mezzo unreserve`,
//! `mezzo volumes`: the allocator's operator controls, over the master's HTTP API
//! (`master/src/http/policy.rs`). Tables by default, `--json` for scripts.

use std::process::ExitCode;

use anyhow::{Context, bail};
use comfy_table::Table;
use mezzo_master::core::view::AllocationView;
use mezzo_master::core::volumes::VolumeView;
use serde_json::Value;

use super::res;

#[derive(Debug, clap::Args)]
pub struct Conn {
    /// Master addresses, comma-separated (any of them; followers redirect).
    #[arg(long, env = "MEZZO_MASTER", default_value = "", global = true)]
    master: String,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Role quotas: a guarantee set aside for the role and a limit it never passes.
    Quota {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: Option<QuotaAction>,
    },
    /// Role weights for the fair share (1 is the default).
    Weights {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: Option<WeightsAction>,
    },
    /// Reserve an agent's unreserved resources for roles, e.g. `mezzo reserve AGENT 'cpus(eng):2;mem(eng):1GiB'`.
    Reserve {
        #[command(flatten)]
        conn: Conn,
        agent: String,
        /// Resources with their role: `cpus(eng):2;mem(eng):1024` (mem and disk take MiB or a unit like 1GiB).
        resources: String,
        /// Who reserves, recorded in the registry's log: on an `--insecure`
        /// cluster only (otherwise it is the caller's own principal).
        #[arg(long, default_value = "")]
        principal: String,
    },
    /// Give back dynamically reserved resources of an agent.
    Unreserve {
        #[command(flatten)]
        conn: Conn,
        agent: String,
        resources: String,
    },
    /// Persistent volumes: which agent and role each is on, its size, the task using it.
    Volumes {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: Option<VolumesAction>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum VolumesAction {
    /// Every volume (the default).
    List,
    /// Destroy a volume no task uses, and its data: `mezzo volumes destroy AGENT VOLUME`.
    Destroy { agent: String, volume: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum QuotaAction {
    /// Set a role's quota: `mezzo quota set eng/batch cpus=4,mem=8GiB --limit cpus=8,mem=16GiB`.
    /// A guarantee or limit left out keeps the role's current one.
    Set {
        role: String,
        /// Guaranteed resources, e.g. `cpus=4,mem=8GiB`.
        guarantee: Option<String>,
        /// Most the role may ever hold, e.g. `cpus=8`.
        #[arg(long)]
        limit: Option<String>,
    },
    /// Every role with its quota, allocation and share (the default).
    List,
    /// Remove a role's quota.
    Remove { role: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum WeightsAction {
    /// Set weights: `mezzo weights set eng=2 ops=1`.
    Set {
        #[arg(required = true)]
        weights: Vec<String>,
    },
    /// Every role with its weight and share (the default).
    List,
}

/// Converts `cpus=4,mem=8GiB` (or `cpus:4;mem:8192`) into the resource
/// text form with mem and disk in MiB.
pub fn quantity_list(text: &str) -> anyhow::Result<String> {
    let mut out = Vec::new();
    for part in text.split([',', ';']).map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once(['=', ':'])
            .with_context(|| format!("{part:?} is not name=value (e.g. cpus=4,mem=8GiB)"))?;
        let (name, value) = (name.trim(), value.trim());
        let value = if value.starts_with('[') {
            value.to_owned()
        } else if matches!(base_name(name), "mem" | "disk") {
            mib(value).with_context(|| format!("{name}={value}"))?
        } else {
            value.to_owned()
        };
        out.push(format!("{name}:{value}"));
    }
    if out.is_empty() {
        bail!("no resources given");
    }
    Ok(out.join(";"))
}

/// `mem` of `mem(eng)`.
fn base_name(name: &str) -> &str {
    name.split('(').next().unwrap_or(name).trim()
}

/// A size in MiB: plain numbers are MiB; units B, K/KiB, M/MiB, G/GiB, T/TiB.
fn mib(v: &str) -> anyhow::Result<String> {
    let split = v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num.trim().parse().with_context(|| format!("{num:?} is not a number"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mi" | "mib" => 1.0,
        "g" | "gb" | "gi" | "gib" => 1024.0,
        "t" | "tb" | "ti" | "tib" => 1024.0 * 1024.0,
        "k" | "kb" | "ki" | "kib" => 1.0 / 1024.0,
        other => bail!("unknown size unit {other:?} (use MiB, GiB or TiB)"),
    };
    let m = n * factor;
    if m.fract() != 0.0 {
        bail!("{v} is not a whole number of MiB");
    }
    Ok(format!("{m}"))
}

async fn request(conn: &Conn, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let client = super::ops::client::Client::new(&conn.master)?;
    Ok(client.call(method, path, body).await?)
}

fn print_roles(v: &AllocationView, weights_only: bool) {
    let mut t = Table::new();
    if weights_only {
        t.set_header(["ROLE", "WEIGHT", "ALLOCATED", "SHARE", "FRAMEWORKS"]);
    } else {
        t.set_header(["ROLE", "WEIGHT", "GUARANTEE", "LIMIT", "ALLOCATED", "OFFERED", "SHARE"]);
    }
    for r in &v.roles {
        let share = format!("{:.3}", r.dominant_share);
        if weights_only {
            t.add_row([
                r.role.clone(),
                r.weight.to_string(),
                res(&r.allocated),
                share,
                r.frameworks.len().to_string(),
            ]);
        } else {
            t.add_row([
                r.role.clone(),
                r.weight.to_string(),
                res(&r.guarantee),
                res(&r.limit),
                res(&r.allocated),
                res(&r.offered),
                share,
            ]);
        }
    }
    println!("{t}");
    if !weights_only && !v.reservations.is_empty() {
        let mut t = Table::new();
        t.set_header(["AGENT", "DYNAMIC RESERVATIONS"]);
        for (agent, r) in &v.reservations {
            t.add_row([agent.to_string(), r.clone()]);
        }
        println!("\n{t}");
    }
}

fn print_volumes(list: &[VolumeView]) {
    if list.is_empty() {
        println!("no persistent volumes");
        return;
    }
    let mut t = Table::new();
    t.set_header(["VOLUME", "AGENT", "HOST", "ROLE", "DISK", "USED BY", "CREATED BY"]);
    for v in list {
        let used = v
            .used_by
            .as_ref()
            .map_or_else(|| "-".to_owned(), |u| format!("{} ({})", u.task_id, u.framework_id));
        t.add_row([
            v.volume.id.clone(),
            v.volume.agent_id.clone(),
            v.hostname.clone(),
            v.volume.role.clone(),
            format!("{} MiB", v.volume.disk_mib),
            used,
            v.volume.principal.clone(),
        ]);
    }
    println!("{t}");
}

/// The roles, as they came (`--json`) or read into the master's view.
async fn roles(conn: &Conn) -> anyhow::Result<(Value, AllocationView)> {
    let v = request(conn, reqwest::Method::GET, "/api/v1/roles", None).await?;
    let view = serde_json::from_value(v.clone()).context("unexpected answer from the master")?;
    Ok((v, view))
}

/// Why `guarantee` cannot be met by the agents the cluster has now, if it
/// cannot (best effort: no warning when the overview cannot be read).
async fn beyond_cluster(conn: &Conn, role: &str, guarantee: &str) -> Option<String> {
    use mezzo_proto::resources::Resources;
    let wanted = Resources::parse(guarantee).ok()?;
    let v = request(conn, reqwest::Method::GET, "/api/v1/overview", None)
        .await
        .ok()?;
    let total: Resources = serde_json::from_value(v["resources"]["total"].clone()).ok()?;
    (!total.contains(&wanted)).then(|| {
        format!(
            "the guarantee of {role} ({wanted}) is more than all active agents have together ({total}); \
             it cannot be met until more agents join"
        )
    })
}

fn done(conn: &Conn, v: &Value, what: String) -> anyhow::Result<ExitCode> {
    if conn.json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        println!("{what}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a role command; a call the master refused or found bad exits as
/// the operator commands do (3 refused, 4 bad request, 2 not found).
pub async fn run(c: Command) -> anyhow::Result<ExitCode> {
    match exec(c).await {
        Err(e) => match e.downcast_ref::<super::ops::client::ApiError>() {
            Some(api) => {
                eprintln!("mezzo: {api}");
                Ok(ExitCode::from(api.exit_code()))
            }
            None => Err(e),
        },
        ok => ok,
    }
}

async fn exec(c: Command) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    match c {
        Command::Quota { conn, action } => match action.unwrap_or(QuotaAction::List) {
            QuotaAction::List => {
                let (v, view) = roles(&conn).await?;
                if conn.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    print_roles(&view, false);
                }
                Ok(ExitCode::SUCCESS)
            }
            QuotaAction::Set { role, guarantee, limit } => {
                if guarantee.is_none() && limit.is_none() {
                    bail!("give a guarantee (e.g. cpus=4,mem=8GiB), a --limit, or both");
                }
                let mut g = guarantee.as_deref().map(quantity_list).transpose()?;
                let mut l = limit.as_deref().map(quantity_list).transpose()?;
                // The API replaces a quota whole: what is left out here is
                // the role's current value.
                if g.is_none() || l.is_none() {
                    let (v, _) = roles(&conn).await?;
                    let current = |side: &str| {
                        v["quotas"]
                            .get(role.as_str())
                            .and_then(|q| q[side].as_str())
                            .map(str::to_owned)
                    };
                    g = g.or_else(|| current("guarantee"));
                    l = l.or_else(|| current("limit"));
                }
                let (g, l) = (g.unwrap_or_default(), l.unwrap_or_default());
                let body = serde_json::json!({ "role": role, "guarantee": g, "limit": l });
                let v = request(&conn, Method::PUT, "/quota", Some(body)).await?;
                if let Some(warning) = beyond_cluster(&conn, &role, &g).await {
                    eprintln!("mezzo: warning: {warning}");
                }
                done(&conn, &v, format!("quota of {role}: guarantee {g:?}, limit {l:?}"))
            }
            QuotaAction::Remove { role } => {
                let v = request(&conn, Method::DELETE, &format!("/quota/{role}"), None).await?;
                done(&conn, &v, format!("quota of {role} removed"))
            }
        },
        Command::Weights { conn, action } => match action.unwrap_or(WeightsAction::List) {
            WeightsAction::List => {
                let (_, view) = roles(&conn).await?;
                if conn.json {
                    println!("{}", serde_json::to_string_pretty(&view.weights)?);
                } else {
                    print_roles(&view, true);
                }
                Ok(ExitCode::SUCCESS)
            }
            WeightsAction::Set { weights } => {
                let mut body = serde_json::Map::new();
                for w in &weights {
                    let (role, value) = w
                        .split_once('=')
                        .with_context(|| format!("{w:?} is not role=weight (e.g. eng=2)"))?;
                    let value: f64 = value
                        .trim()
                        .parse()
                        .with_context(|| format!("weight of {role}: {value:?} is not a number"))?;
                    if !value.is_finite() || !(1e-6..=1e6).contains(&value) {
                        bail!("weight of {role} must be a finite number from 1e-6 to 1e6, got {value}");
                    }
                    body.insert(role.trim().to_owned(), serde_json::json!(value));
                }
                let v = request(&conn, Method::PUT, "/weights", Some(Value::Object(body))).await?;
                done(&conn, &v, format!("weights set: {}", weights.join(" ")))
            }
        },
        Command::Reserve {
            conn,
            agent,
            resources,
            principal,
        } => {
            let r = quantity_list(&resources)?;
            let body = serde_json::json!({ "agent": agent, "resources": r, "principal": principal });
            let v = request(&conn, Method::POST, "/reserve", Some(body)).await?;
            done(&conn, &v, format!("reserved {r} on {agent}"))
        }
        Command::Volumes { conn, action } => match action.unwrap_or(VolumesAction::List) {
            VolumesAction::List => {
                let v = request(&conn, Method::GET, "/api/v1/volumes", None).await?;
                if conn.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    let list: Vec<VolumeView> =
                        serde_json::from_value(v).context("unexpected answer from the master")?;
                    print_volumes(&list);
                }
                Ok(ExitCode::SUCCESS)
            }
            VolumesAction::Destroy { agent, volume } => {
                let body = serde_json::json!({ "agent": agent, "volume": volume });
                let v = request(&conn, Method::POST, "/api/v1/volumes/destroy", Some(body)).await?;
                done(&conn, &v, format!("destroyed volume {volume} on {agent}"))
            }
        },
        Command::Unreserve { conn, agent, resources } => {
            let r = quantity_list(&resources)?;
            let body = serde_json::json!({ "agent": agent, "resources": r });
            let v = request(&conn, Method::POST, "/unreserve", Some(body)).await?;
            done(&conn, &v, format!("unreserved {r} on {agent}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_convert_to_resource_text() {
        assert_eq!(
            quantity_list("cpus=4,mem=8GiB").ok().as_deref(),
            Some("cpus:4;mem:8192")
        );
        assert_eq!(
            quantity_list("cpus(eng):2;mem(eng):1GiB").ok().as_deref(),
            Some("cpus(eng):2;mem(eng):1024")
        );
        assert_eq!(quantity_list("disk=1TiB").ok().as_deref(), Some("disk:1048576"));
        for bad in ["", "cpus", "mem=1.5PiB", "mem=0.3"] {
            assert!(quantity_list(bad).is_err(), "{bad}");
        }
    }
}
