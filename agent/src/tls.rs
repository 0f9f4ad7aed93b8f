//! The agent's credential: a certificate of the cluster's CA naming its
//! principal (`agent:NAME`), with which it attaches to the masters and
//! serves its HTTP endpoint. The first start gets it by joining with a
//! join token (`MEZZO_JOIN_TOKEN`, or the agent join token in the local
//! client configuration that a new cluster writes); later starts read it
//! from the work dir.
//!
//! ```text
//! <work dir>/tls/       mode 0700
//! ├── agent.crt         its certificate (PEM)
//! ├── agent.key         its private key (PEM, 0600), made on this machine
//! └── ca.crt            the cluster CA
//! ```
//!
//! Its HTTP endpoint answers masters (the files proxy, which checks each
//! caller's rights) and the administrator only; `/health` answers anyone.

use std::path::{Path, PathBuf};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mezzo_proto::clock::unix_now;
use mezzo_proto::security::client_config::{ClientConfig, default_path};
use mezzo_proto::security::serve::Peer;
use mezzo_proto::security::{Credentials, Identity, Kind, Transport, join};

use crate::error::AgentError;

/// How the agent secures itself (`mezzo agent` flags).
#[derive(Debug, Clone, Default)]
pub struct AgentSecurity {
    /// Plain text to an `--insecure` cluster.
    pub insecure: bool,
    /// A join token for the first start; else the one in the local client
    /// configuration.
    pub join_token: Option<String>,
}

/// How long a first start keeps asking the masters to let it join while
/// none can answer (they may be starting too).
const JOIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(300);

fn dir(work_dir: &Path) -> PathBuf {
    work_dir.join("tls")
}

/// The agent's transport: its saved credential, or one got by joining.
pub async fn credentials(
    sec: &AgentSecurity,
    work_dir: &Path,
    masters: &[String],
    hostname: &str,
    http_address: &str,
) -> Result<Transport, AgentError> {
    if sec.insecure {
        tracing::warn!("--insecure: talking plain text to the masters and serving HTTP to anyone");
        return Ok(Transport::Plain);
    }
    let tls = dir(work_dir);
    if let Some(creds) = load(&tls)? {
        return Ok(Transport::Tls(creds));
    }
    let token = match sec.join_token.clone() {
        Some(t) => t,
        None => local_join_token()?,
    };
    let joined = join::join_patiently(masters, &token, hostname, http_address, JOIN_PATIENCE)
        .await
        .map_err(|e| AgentError::Security(e.to_string()))?;
    save(&tls, &joined.response.cert, &joined.key_pem, &joined.response.ca)?;
    tracing::info!(principal = %joined.response.principal, "joined the cluster");
    Ok(Transport::Tls(joined.credentials))
}

/// The agent join token of the client configuration on this machine.
fn local_join_token() -> Result<String, AgentError> {
    let path = default_path();
    let cfg = ClientConfig::load(&path).map_err(|e| {
        AgentError::Security(format!(
            "the agent has no certificate yet and no join token: set MEZZO_JOIN_TOKEN \
             (from `mezzo token create --kind agent`); {e}"
        ))
    })?;
    cfg.agent_join_token.ok_or_else(|| {
        AgentError::Security(format!(
            "{} holds no agent join token: set MEZZO_JOIN_TOKEN (from `mezzo token create --kind agent`)",
            path.display()
        ))
    })
}

/// The saved credential, if there is one still valid for a day.
fn load(dir: &Path) -> Result<Option<Credentials>, AgentError> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let (Some(cert), Some(key), Some(ca)) = (read("agent.crt"), read("agent.key"), read("ca.crt")) else {
        return Ok(None);
    };
    let bad = |e: &dyn std::fmt::Display| AgentError::Security(format!("{}: {e}", dir.display()));
    let id = Identity::from_pem(&cert, &key).map_err(|e| bad(&e))?;
    if id.principal().kind() != Kind::Agent {
        return Err(bad(&format!("the certificate names {}, not an agent", id.principal())));
    }
    if id.info().not_after < unix_now() as i64 + 24 * 3600 {
        tracing::warn!(dir = %dir.display(), "the agent's certificate expires within a day; joining again");
        return Ok(None);
    }
    Ok(Some(Credentials::new(&ca).map_err(|e| bad(&e))?.with_identity(id)))
}

fn save(dir: &Path, cert: &str, key: &str, ca: &str) -> Result<(), AgentError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(AgentError::io("create", dir))?;
    for (name, text, mode) in [
        ("agent.key", key, 0o600),
        ("agent.crt", cert, 0o644),
        ("ca.crt", ca, 0o644),
    ] {
        let path = dir.join(name);
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(AgentError::io("create", &tmp))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(AgentError::io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(AgentError::io("rename", &path))?;
    }
    Ok(())
}

/// Lets through masters and the administrator (and anyone to `/health`,
/// or anyone at all on an insecure agent).
pub async fn only_masters(req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<Peer>();
    let allowed = req.uri().path() == "/health"
        || peer.is_none_or(|p| !p.tls)
        || peer.and_then(|p| p.cert.as_ref()).is_some_and(|c| {
            c.principal.kind() == Kind::Master || (c.principal.kind() == Kind::User && c.principal.name() == "admin")
        });
    if allowed {
        next.run(req).await
    } else {
        (
            StatusCode::FORBIDDEN,
            "this agent answers its masters and the cluster administrator only (a client certificate of the cluster's CA)",
        )
            .into_response()
    }
}
