//! The CLI's one client of the masters' HTTP API. It finds the masters
//! and its credential in the client configuration (`~/.mezzo/config.toml`,
//! `MEZZO_CLIENT_CONFIG`; `MEZZO_TOKEN` for a bearer token;
//! `MEZZO_INSECURE=1` for an `--insecure` cluster), speaks TLS verified
//! against the cluster's CA as `master.mezzo`, tries each master, follows
//! a follower's 307 to the leader itself (only ever to another verified
//! master, so the credential goes nowhere else), and turns HTTP errors
//! into [`ApiError`] kinds that map to exit codes.

use std::time::Duration;

use mezzo_master::http::ErrorBody;
use mezzo_proto::security::Transport;
use mezzo_sdk::{HttpAnswer, MasterHttp};
use serde_json::Value;

/// How an operator call failed; each kind has its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("bad request: {0}")]
    Bad(String),
    #[error("{0}")]
    Other(String),
}

impl ApiError {
    /// Exit codes scripts can rely on (see docs/operator-api.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            ApiError::Other(_) => 1,
            ApiError::NotFound(_) => 2,
            ApiError::Refused(_) => 3,
            ApiError::Bad(_) => 4,
        }
    }
}

/// The default master when neither `--master`/`MEZZO_MASTER` nor the
/// client configuration names one.
pub const DEFAULT_MASTER: &str = "127.0.0.1:5050";

/// How this client reaches the cluster, and the masters the client
/// configuration names.
pub fn transport() -> Result<(Transport, Vec<String>), ApiError> {
    Transport::discover().map_err(|e| ApiError::Refused(e.to_string()))
}

/// `masters` (comma-separated; empty: the configuration's, else the
/// default) as a list.
pub fn masters_or_default(masters: &str, configured: &[String]) -> Vec<String> {
    let given = super::super::comma_list(masters);
    if !given.is_empty() {
        return given;
    }
    if !configured.is_empty() {
        return configured.to_vec();
    }
    vec![DEFAULT_MASTER.to_owned()]
}

/// The masters' HTTP API, with exit-code errors.
#[derive(Debug, Clone)]
pub struct Client {
    inner: MasterHttp,
}

impl Client {
    /// A client of `masters` (comma-separated, or empty for those of the
    /// client configuration).
    pub fn new(masters: &str) -> Result<Client, ApiError> {
        Client::with_timeout(masters, Duration::from_secs(10))
    }

    pub fn with_timeout(masters: &str, timeout: Duration) -> Result<Client, ApiError> {
        let (transport, configured) = transport()?;
        let inner = MasterHttp::with(masters_or_default(masters, &configured), transport, timeout)
            .map_err(|e| ApiError::Other(e.to_string()))?;
        Ok(Client { inner })
    }

    pub fn masters(&self) -> &[String] {
        self.inner.masters()
    }

    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// GETs `path` into the type the master (or the agent it passes the
    /// request to) wrote.
    pub async fn get_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let a = self
            .inner
            .request(reqwest::Method::GET, path, None)
            .await
            .map_err(|e| ApiError::Other(e.to_string()))?;
        read(&a)
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, ApiError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Asks one master, without following it elsewhere (for views each
    /// master answers itself, like `/raft`).
    pub async fn get_from<T: serde::de::DeserializeOwned>(&self, master: &str, path: &str) -> Result<T, ApiError> {
        let a = self
            .inner
            .get_from(master, path)
            .await
            .map_err(|e| ApiError::Other(e.to_string()))?;
        read(&a)
    }

    /// Any method; `body` is sent as JSON.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, ApiError> {
        let a = self
            .inner
            .request(method, path, body.as_ref())
            .await
            .map_err(|e| ApiError::Other(e.to_string()))?;
        read(&a)
    }
}

/// An answer's JSON, or its error by kind.
fn read<T: serde::de::DeserializeOwned>(a: &HttpAnswer) -> Result<T, ApiError> {
    if !(200..300).contains(&a.status) {
        let msg = serde_json::from_str::<ErrorBody>(&a.body)
            .map(|b| b.error)
            .unwrap_or_else(|_| a.body.trim().to_owned());
        return Err(match a.status {
            404 => ApiError::NotFound(msg),
            401 | 403 | 429 => ApiError::Refused(msg),
            400 | 409 | 422 => ApiError::Bad(msg),
            code => ApiError::Other(format!("{}: {code}: {msg}", a.master)),
        });
    }
    serde_json::from_str(&a.body).map_err(|e| ApiError::Other(format!("bad JSON from {}: {e}", a.master)))
}
