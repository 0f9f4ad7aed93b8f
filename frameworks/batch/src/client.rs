//! A client of the HTTP API, for `mezzo batch` and tests.

use std::time::Duration;

use crate::engine::{JobStatus, JobSummary};

/// Why a call to the batch framework failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The framework answered with an error (its message).
    #[error("{0}")]
    Refused(String),
    /// The framework could not be reached.
    #[error("cannot reach the batch framework at {addr}: {why} (is `mezzo batch serve` running?)")]
    Unreachable { addr: String, why: String },
}

/// Talks to `mezzo batch serve` at one address.
#[derive(Clone)]
pub struct Client {
    addr: String,
    http: reqwest::Client,
    /// The framework's API token (`mezzo_sdk::api_token`).
    token: Option<String>,
}

/// Without the token.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the framework at `addr` (`host:port`).
    pub fn new(addr: impl Into<String>) -> Client {
        mezzo_sdk::ensure_tls_provider();
        // No proxy: it would be handed the token.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .unwrap_or_default();
        Client {
            addr: addr.into(),
            http,
            token: None,
        }
    }

    /// Sends `token` (the framework's `api-token`) with every call.
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.token = Some(token.into());
        self
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let r = req.send().await.map_err(|e| ClientError::Unreachable {
            addr: self.addr.clone(),
            why: e.to_string(),
        })?;
        if r.status().is_success() {
            return Ok(r);
        }
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{status}: {body}"));
        Err(ClientError::Refused(msg))
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, ClientError> {
        let r = self.send(req).await?;
        r.json().await.map_err(|e| ClientError::Unreachable {
            addr: self.addr.clone(),
            why: format!("bad answer: {e}"),
        })
    }

    /// Submits a job file; returns the new jobs' names.
    pub async fn submit(&self, toml: String) -> Result<Vec<String>, ClientError> {
        let v: serde_json::Value = self.json(self.http.post(self.url("/v1/jobs")).body(toml)).await?;
        Ok(v["jobs"]
            .as_array()
            .map(|a| a.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect())
            .unwrap_or_default())
    }

    /// Every job.
    pub async fn list(&self) -> Result<Vec<JobSummary>, ClientError> {
        self.json(self.http.get(self.url("/v1/jobs"))).await
    }

    /// One job (`all`: every task).
    pub async fn status(&self, name: &str, all: bool, index: Option<u32>) -> Result<JobStatus, ClientError> {
        let index = index.map_or(String::new(), |i| format!("&index={i}"));
        let url = self.url(&format!("/v1/jobs/{name}?all={all}{index}"));
        self.json(self.http.get(url)).await
    }

    /// Cancels a job.
    pub async fn cancel(&self, name: &str) -> Result<JobSummary, ClientError> {
        self.json(self.http.post(self.url(&format!("/v1/jobs/{name}/cancel"))))
            .await
    }

    /// The tail of a task's stdout or stderr: its latest run's, or the
    /// latest run of `attempt`.
    pub async fn logs(&self, name: &str, index: u32, attempt: Option<u32>, file: &str) -> Result<String, ClientError> {
        let attempt = attempt.map_or(String::new(), |a| format!("&attempt={a}"));
        let url = self.url(&format!("/v1/jobs/{name}/logs?index={index}{attempt}&file={file}"));
        let r = self.send(self.http.get(url)).await?;
        r.text().await.map_err(|e| ClientError::Unreachable {
            addr: self.addr.clone(),
            why: e.to_string(),
        })
    }
}
