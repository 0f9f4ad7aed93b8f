//! gRPC clients of a Mezzo master: one way to open a channel (TLS by the
//! [`Transport`], HTTP/2 keep-alive, `TCP_NODELAY`) and one interceptor
//! that sends a bearer token with every call when the credentials hold
//! one instead of a certificate. The SDK, the agent and the CLI use both.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};

use super::client_config::Transport;

/// Timeouts and keep-alives of a channel to a master.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A channel endpoint for `addr` (`host:port`; a full URI keeps its
/// scheme, so `http://` still reaches an `--insecure` cluster).
pub fn endpoint(addr: &str, transport: &Transport) -> Result<Endpoint, String> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("{}://{addr}", transport.scheme())
    };
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(|e| format!("bad master address {addr:?}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    if let Some(creds) = transport.credentials() {
        endpoint = endpoint
            .tls_config(creds.grpc_tls())
            .map_err(|e| format!("TLS for {addr}: {}", error_chain(&e)))?;
    }
    Ok(endpoint)
}

/// Connects now.
pub async fn connect(addr: &str, transport: &Transport) -> Result<Channel, String> {
    endpoint(addr, transport)?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {}", error_chain(&e)))
}

/// "a: b: c" for an error and its sources (tonic's own Display is terse).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Adds `authorization: Bearer <token>` to each call, if there is a token.
#[derive(Clone, Default)]
pub struct BearerAuth(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "BearerAuth(<token>)"
        } else {
            "BearerAuth(none)"
        })
    }
}

impl BearerAuth {
    pub fn new(transport: &Transport) -> BearerAuth {
        let value = transport
            .credentials()
            .and_then(|c| c.token())
            .and_then(|t| format!("Bearer {t}").parse().ok());
        BearerAuth(value)
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}
