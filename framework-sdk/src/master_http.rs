//! The masters' HTTP API (`/state`, the operator API, task sandboxes)
//! for frameworks and tools, with the same credential and TLS as the
//! scheduler connection: each master is tried in turn, and a follower's
//! 307 is followed to the leader by this client itself, only ever to
//! another master verified by the cluster's CA, so the credential never
//! travels anywhere else.
//!
//! ```no_run
//! # async fn f() -> Result<(), mezzo_sdk::SdkError> {
//! let config = mezzo_sdk::SchedulerConfig::new(["127.0.0.1:5050"], "tool");
//! let http = mezzo_sdk::MasterHttp::new(&config)?;
//! let state: serde_json::Value = http.get_json("/state").await?;
//! println!("{} agents", state["agents"].as_array().map_or(0, Vec::len));
//! # Ok(()) }
//! ```

use std::time::Duration;

use mezzo_proto::security::principal::MASTER_DNS_NAME;
use mezzo_proto::security::{Transport, https};

use crate::config::SchedulerConfig;
use crate::error::SdkError;

/// A client of the masters' HTTP API.
#[derive(Debug, Clone)]
pub struct MasterHttp {
    masters: Vec<String>,
    transport: Transport,
    http: reqwest::Client,
}

/// Part of a sandbox file, as [`MasterHttp::read_sandbox`] reads it (the
/// agent's files API answer). The next read starts at `offset + length`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SandboxChunk {
    /// The file, relative to the sandbox.
    #[serde(default)]
    pub path: String,
    /// Where the part starts in the file.
    pub offset: u64,
    /// Bytes read.
    #[serde(default)]
    pub length: u64,
    /// The file's size when it was read.
    pub size: u64,
    /// The bytes, as UTF-8 (invalid sequences replaced).
    pub data: String,
}

/// The most an agent gives in one read (its files API's limit).
pub const MAX_READ: u64 = 1 << 20;

/// Which part of a sandbox file to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxRead {
    /// The last this many bytes.
    Tail(u64),
    /// A part from a position.
    From {
        /// The first byte.
        offset: u64,
        /// Bytes wanted (the agent gives at most [`MAX_READ`]).
        length: u64,
    },
}

/// The path and query of the master's files route for one read.
pub fn sandbox_read_path(framework_id: &str, task_id: &str, path: &str, read: SandboxRead) -> String {
    let mut url = reqwest::Url::parse("http://x/api/v1/tasks/").expect("static URL");
    if let Ok(mut segs) = url.path_segments_mut() {
        segs.pop_if_empty().extend([framework_id, task_id, "files", "read"]);
    }
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("path", path);
        match read {
            SandboxRead::Tail(t) => {
                q.append_pair("tail", &t.to_string());
            }
            SandboxRead::From { offset, length } => {
                q.append_pair("offset", &offset.to_string());
                q.append_pair("length", &length.to_string());
            }
        }
    }
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

/// An answer: its HTTP status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The body, as text.
    pub body: String,
    /// The master that answered.
    pub master: String,
}

impl MasterHttp {
    /// A client of `config`'s masters with its transport (the client
    /// configuration file's when the config names none), 10 s per request.
    pub fn new(config: &SchedulerConfig) -> Result<MasterHttp, SdkError> {
        let (transport, masters) = config.resolve_transport().map_err(SdkError::Transport)?;
        MasterHttp::with(masters, transport, Duration::from_secs(10))
    }

    /// A client of these masters over this transport.
    pub fn with(masters: Vec<String>, transport: Transport, timeout: Duration) -> Result<MasterHttp, SdkError> {
        let http = https::client(&transport, MASTER_DNS_NAME, timeout).map_err(SdkError::Transport)?;
        Ok(MasterHttp {
            masters,
            transport,
            http,
        })
    }

    /// The masters tried, in order.
    pub fn masters(&self) -> &[String] {
        &self.masters
    }

    /// GETs `path` from the leader and reads its JSON; an HTTP error is
    /// [`SdkError::Rejected`] with the master's message.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, SdkError> {
        let a = self.request(reqwest::Method::GET, path, None).await?;
        if !(200..300).contains(&a.status) {
            return Err(rejected(&a));
        }
        serde_json::from_str(&a.body).map_err(|e| SdkError::Transport(format!("bad JSON from {}: {e}", a.master)))
    }

    /// Sends a request to the leader (trying each master, following a
    /// 307 to another master) and returns whatever it answered; only no
    /// answer at all is an error.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<HttpAnswer, SdkError> {
        let mut last = SdkError::Transport("no master address given".into());
        for m in &self.masters {
            let mut url = https::url(&self.transport, m, path);
            for _hop in 0..5 {
                let mut req = https::authorize(self.http.request(method.clone(), &url), &self.transport);
                if let Some(b) = body {
                    req = req.json(b);
                }
                let resp = match req.send().await {
                    Ok(r) => r,
                    Err(e) => {
                        last = SdkError::Transport(format!("{m}: {}", mezzo_proto::security::grpc::error_chain(&e)));
                        break;
                    }
                };
                let status = resp.status().as_u16();
                if resp.status().is_redirection()
                    && let Some(loc) = resp
                        .headers()
                        .get(reqwest::header::LOCATION)
                        .and_then(|l| l.to_str().ok())
                {
                    // Scheme-relative: the leader is reached as this one was.
                    url = match loc.strip_prefix("//") {
                        Some(rest) => format!("{}://{rest}", self.transport.scheme()),
                        None => loc.to_owned(),
                    };
                    continue;
                }
                let text = resp.text().await.unwrap_or_default();
                let answer = HttpAnswer {
                    status,
                    body: text,
                    master: m.clone(),
                };
                if status == 503 {
                    last = rejected(&answer);
                    break;
                }
                return Ok(answer);
            }
        }
        Err(last)
    }

    /// Reads a file of a task's sandbox through the master, which finds the
    /// task's agent and checks that the caller owns the task's framework:
    /// the last `tail` bytes (with `None`, as much as the agent gives from
    /// the start). Works for tasks that ended and for frameworks that have
    /// gone, within the task history the masters keep, while the agent
    /// keeps the sandbox (`--gc-delay`).
    pub async fn read_sandbox(
        &self,
        framework_id: &str,
        task_id: &str,
        path: &str,
        tail: Option<u64>,
    ) -> Result<SandboxChunk, SdkError> {
        let read = match tail {
            Some(t) => SandboxRead::Tail(t),
            None => SandboxRead::From {
                offset: 0,
                length: MAX_READ,
            },
        };
        self.get_json(&sandbox_read_path(framework_id, task_id, path, read))
            .await
    }

    /// GETs `path` from one master, without following it elsewhere (for
    /// what each master answers itself, like `/raft`).
    pub async fn get_from(&self, master: &str, path: &str) -> Result<HttpAnswer, SdkError> {
        let req = https::authorize(
            self.http.get(https::url(&self.transport, master, path)),
            &self.transport,
        );
        let resp = req
            .send()
            .await
            .map_err(|e| SdkError::Transport(format!("{master}: {}", mezzo_proto::security::grpc::error_chain(&e))))?;
        let status = resp.status().as_u16();
        Ok(HttpAnswer {
            status,
            body: resp.text().await.unwrap_or_default(),
            master: master.to_owned(),
        })
    }
}

/// The master's `{"error": ...}` (or its plain text) as a refusal.
fn rejected(a: &HttpAnswer) -> SdkError {
    let message = serde_json::from_str::<serde_json::Value>(&a.body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| a.body.trim().to_owned());
    let code = match a.status {
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::NotFound,
        429 => tonic::Code::ResourceExhausted,
        400 | 409 | 422 => tonic::Code::InvalidArgument,
        503 => tonic::Code::Unavailable,
        _ => tonic::Code::Unknown,
    };
    SdkError::Rejected {
        code,
        message: format!("{}: {message}", a.master),
    }
}
