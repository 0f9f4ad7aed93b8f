//! The security commands: join tokens, credentials, ACLs, secrets and the
//! dashboard's sign-in. Each talks to the masters with the caller's own
//! credential (the client configuration); what it may do is decided by
//! the ACLs (`docs/security.md`). Exit codes as the operator commands:
//! 0 ok, 1 error, 2 not found, 3 refused, 4 bad request.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use comfy_table::Table;
use mezzo_master::auth::acl::{Acl, Action, Rule};
use mezzo_proto::security::client_config::ClientConfig;
use mezzo_proto::security::csr::new_key_and_request;
use serde_json::{Value, json};

use super::ops::client::{ApiError, Client};

#[derive(Debug, clap::Args)]
pub struct Conn {
    /// Master addresses, comma-separated (default: the client configuration's).
    #[arg(long, env = "MEZZO_MASTER", default_value = "", global = true)]
    master: String,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Join tokens, with which agents and masters of other machines join.
    Token {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Credentials of people and programs: issue, list, revoke.
    Credential {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: CredentialAction,
    },
    /// The access control list: who may do what.
    Acl {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: Option<AclAction>,
    },
    /// Secrets of a role, which tasks refer to by name.
    Secret {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: SecretAction,
    },
    /// Print the dashboard's address and a sign-in token for it.
    Dashboard {
        #[command(flatten)]
        conn: Conn,
        /// How long the sign-in token lasts.
        #[arg(long, default_value = "12h", value_parser = super::duration)]
        ttl: Duration,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenAction {
    /// Create a join token (printed once).
    Create {
        /// agent or master.
        #[arg(long, default_value = "agent", value_parser = ["agent", "master"])]
        kind: String,
        /// How long it is valid.
        #[arg(long, default_value = "24h", value_parser = super::duration)]
        ttl: Duration,
        #[arg(long, default_value = "")]
        description: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum CredentialAction {
    /// Issue a credential to user NAME: a certificate over a key made here,
    /// written with the CA into a client configuration file (--out), or
    /// with --token a bearer token, printed once.
    Issue {
        name: String,
        /// A bearer token instead of a certificate.
        #[arg(long)]
        token: bool,
        /// Where to write the client configuration (certificates); "-" prints it.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value = "365days", value_parser = super::duration)]
        ttl: Duration,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the credentials issued, and those revoked.
    List,
    /// Revoke a credential by its id (a certificate's serial, a token's nonce).
    Revoke { id: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum AclAction {
    /// List the rules (the default).
    List,
    /// Add a rule.
    Add {
        /// Principal patterns: user:ci, 'user:team-*', '*'.
        #[arg(long = "principal", required = true)]
        principals: Vec<String>,
        /// Actions (see `docs/security.md`), e.g. register_framework.
        #[arg(long = "action", required = true)]
        actions: Vec<String>,
        /// Object patterns: a role, a user, a framework's owner, an agent id.
        #[arg(long = "object", required = true)]
        objects: Vec<String>,
    },
    /// Remove rule N (as numbered by `mezzo acl list`).
    Remove { n: usize },
    /// Replace every rule with those of a JSON file ({"rules": [...]}).
    Set { file: PathBuf },
}

#[derive(Debug, clap::Subcommand)]
pub enum SecretAction {
    /// Set a secret of ROLE from a file, or from stdin (never the command line).
    Put {
        role: String,
        name: String,
        /// Read the value from this file (default: stdin).
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// List secrets by name (never their values), all or one role's.
    List {
        /// Only this role's secrets.
        role: Option<String>,
    },
    /// Delete a secret.
    Delete { role: String, name: String },
}

fn done(json: bool, v: &Value, what: impl FnOnce(&Value) -> String) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        println!("{}", what(v));
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a failed call and gives its exit code.
fn failed(e: ApiError) -> anyhow::Result<ExitCode> {
    eprintln!("error: {e}");
    Ok(ExitCode::from(e.exit_code()))
}

pub async fn run(c: Command) -> anyhow::Result<ExitCode> {
    let r = match c {
        Command::Token { conn, action } => token(conn, action).await,
        Command::Credential { conn, action } => credential(conn, action).await,
        Command::Acl { conn, action } => acl(conn, action.unwrap_or(AclAction::List)).await,
        Command::Secret { conn, action } => secret(conn, action).await,
        Command::Dashboard { conn, ttl } => dashboard(conn, ttl).await,
    };
    match r {
        Ok(code) => Ok(code),
        Err(e) => match e.downcast::<ApiError>() {
            Ok(api) => failed(api),
            Err(e) => Err(e),
        },
    }
}

async fn token(conn: Conn, action: TokenAction) -> anyhow::Result<ExitCode> {
    let TokenAction::Create { kind, ttl, description } = action;
    let c = Client::new(&conn.master)?;
    let body = json!({ "kind": kind, "ttl_secs": ttl.as_secs().max(1), "description": description });
    let v = c.post("/api/v1/tokens", body).await?;
    done(conn.json, &v, |v| v["token"].as_str().unwrap_or_default().to_owned())
}

async fn credential(conn: Conn, action: CredentialAction) -> anyhow::Result<ExitCode> {
    let c = Client::new(&conn.master)?;
    match action {
        CredentialAction::Issue {
            name,
            token,
            out,
            ttl,
            description,
        } => {
            let mut body = json!({ "principal": name, "ttl_secs": ttl.as_secs().max(1), "description": description });
            if token {
                body["token"] = json!(true);
                let v = c.post("/api/v1/credentials", body).await?;
                return done(conn.json, &v, |v| v["token"].as_str().unwrap_or_default().to_owned());
            }
            let Some(out) = out else {
                bail!("a certificate needs --out FILE (where its client configuration goes), or use --token");
            };
            let (key, csr) = new_key_and_request().context("cannot make a key")?;
            body["csr"] = json!(csr);
            let v = c.post("/api/v1/credentials", body).await?;
            let cfg = ClientConfig {
                masters: c.masters().to_vec(),
                ca: v["ca"].as_str().unwrap_or_default().to_owned(),
                cert: v["cert"].as_str().map(str::to_owned),
                key: Some(key),
                ..Default::default()
            };
            if out.as_os_str() == "-" {
                print!("{}", toml::to_string(&cfg)?);
            } else {
                cfg.save(&out)?;
                eprintln!(
                    "issued {} (serial {}); its client configuration is {} (give it as MEZZO_CLIENT_CONFIG)",
                    v["principal"].as_str().unwrap_or_default(),
                    v["id"].as_str().unwrap_or_default(),
                    out.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CredentialAction::List => {
            let v = c.get("/api/v1/credentials").await?;
            done(conn.json, &v, credential_table)
        }
        CredentialAction::Revoke { id } => {
            let v = c.post("/api/v1/credentials/revoke", json!({ "id": id })).await?;
            done(conn.json, &v, |v| {
                format!("revoked {}", v["revoked"].as_str().unwrap_or_default())
            })
        }
    }
}

fn credential_table(v: &Value) -> String {
    let mut t = Table::new();
    t.set_header(["ID", "KIND", "PRINCIPAL", "EXPIRES", "ISSUED BY", "REVOKED"]);
    let revoked = &v["revoked"];
    for c in v["credentials"].as_array().into_iter().flatten() {
        let id = c["id"].as_str().unwrap_or_default();
        let expires = match c["expires"].as_u64() {
            Some(0) | None => "never".to_owned(),
            Some(e) => humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(e)).to_string(),
        };
        t.add_row([
            id.to_owned(),
            c["kind"].as_str().unwrap_or_default().to_owned(),
            c["principal"].as_str().unwrap_or_default().to_owned(),
            expires,
            c["issued_by"].as_str().unwrap_or_default().to_owned(),
            if revoked.get(id).is_some() {
                "yes".into()
            } else {
                String::new()
            },
        ]);
    }
    t.to_string()
}

async fn acl(conn: Conn, action: AclAction) -> anyhow::Result<ExitCode> {
    let c = Client::new(&conn.master)?;
    let current: Acl = serde_json::from_value(c.get("/api/v1/acl").await?).context("unexpected ACL from the master")?;
    let new = match action {
        AclAction::List => {
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&current)?);
            } else if current.rules.is_empty() {
                println!("no rules: only user:admin, and owners on their own frameworks, may act");
            } else {
                for (i, r) in current.rules.iter().enumerate() {
                    println!("{:>3}  {r}", i + 1);
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        AclAction::Add {
            principals,
            actions,
            objects,
        } => {
            let actions = actions
                .iter()
                .map(|a| a.parse::<Action>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ApiError::Bad(e.to_string()))?;
            let mut acl = current;
            acl.rules.push(Rule {
                principals,
                actions,
                objects,
            });
            acl
        }
        AclAction::Remove { n } => {
            let mut acl = current;
            if n == 0 || n > acl.rules.len() {
                return Err(ApiError::NotFound(format!("no rule {n}; `mezzo acl list` numbers them")).into());
            }
            acl.rules.remove(n - 1);
            acl
        }
        AclAction::Set { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            serde_json::from_str(&text).map_err(|e| ApiError::Bad(format!("{}: {e}", file.display())))?
        }
    };
    let v = c
        .call(reqwest::Method::PUT, "/api/v1/acl", Some(serde_json::to_value(&new)?))
        .await?;
    done(conn.json, &v, |v| format!("the ACL now has {} rules", v["rules"]))
}

async fn secret(conn: Conn, action: SecretAction) -> anyhow::Result<ExitCode> {
    let c = Client::new(&conn.master)?;
    match action {
        SecretAction::Put { role, name, from_file } => {
            let mut value = Vec::new();
            match &from_file {
                Some(f) => value = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?,
                None => {
                    std::io::stdin()
                        .read_to_end(&mut value)
                        .context("cannot read the value from stdin")?;
                }
            }
            use base64::Engine;
            let body = json!({
                "role": role,
                "name": name,
                "value_base64": base64::engine::general_purpose::STANDARD.encode(&value),
            });
            let v = c.call(reqwest::Method::PUT, "/api/v1/secrets", Some(body)).await?;
            done(conn.json, &v, |_| format!("secret {role}/{name} set"))
        }
        SecretAction::List { role } => {
            let mut v = c.get("/api/v1/secrets").await?;
            if let (Some(role), Some(list)) = (&role, v.as_array_mut()) {
                list.retain(|s| s["role"] == role.as_str());
            }
            done(conn.json, &v, |v| {
                let mut t = Table::new();
                t.set_header(["ROLE", "NAME", "UPDATED BY"]);
                for s in v.as_array().into_iter().flatten() {
                    t.add_row([
                        s["role"].as_str().unwrap_or_default(),
                        s["name"].as_str().unwrap_or_default(),
                        s["updated_by"].as_str().unwrap_or_default(),
                    ]);
                }
                t.to_string()
            })
        }
        SecretAction::Delete { role, name } => {
            let body = json!({ "role": role, "name": name });
            let v = c.call(reqwest::Method::DELETE, "/api/v1/secrets", Some(body)).await?;
            done(conn.json, &v, |_| format!("secret {role}/{name} deleted"))
        }
    }
}

async fn dashboard(conn: Conn, ttl: Duration) -> anyhow::Result<ExitCode> {
    let c = Client::new(&conn.master)?;
    // A token of the caller's own: the dashboard shows what this
    // credential may see, no more.
    let v = c
        .post("/api/v1/credentials/self", json!({ "ttl_secs": ttl.as_secs().max(60) }))
        .await?;
    let master = c.masters().first().cloned().unwrap_or_default();
    let ca = mezzo_proto::security::client_config::mezzo_home().join("pki/ca.crt");
    if conn.json {
        let out = json!({ "url": format!("https://{master}/"), "token": v["token"], "principal": v["principal"] });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "dashboard: https://{master}/  (the browser will ask to trust the cluster's CA: {})",
            ca.display()
        );
        println!(
            "sign in as {} with: {}",
            v["principal"].as_str().unwrap_or_default(),
            v["token"].as_str().unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
