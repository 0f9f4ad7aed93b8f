//! HTTP clients of Mezzo daemons: TLS verified against the cluster CA by
//! the name of the principal expected at the other end, this party's
//! certificate presented, and no redirect followed on their own (a
//! credential must not travel to a host it was not meant for; callers
//! follow a leader's 307 themselves, to another verified master).

use std::time::Duration;

use super::client_config::Transport;

/// A client for servers named `server` (`master.mezzo`, or an agent's
/// `NAME.agent.mezzo`).
pub fn client(transport: &Transport, server: &str, timeout: Duration) -> Result<reqwest::Client, String> {
    super::tls::ensure_provider();
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true);
    if let Some(creds) = transport.credentials() {
        let cfg = creds.client_config(server).map_err(|e| e.to_string())?;
        b = b.use_preconfigured_tls(std::sync::Arc::unwrap_or_clone(cfg));
    }
    b.build().map_err(|e| e.to_string())
}

/// `https://ADDR/PATH` (or `http://` for an `--insecure` cluster).
pub fn url(transport: &Transport, addr: &str, path: &str) -> String {
    format!("{}://{addr}{path}", transport.scheme())
}

/// Adds the bearer token, when the credentials are one.
pub fn authorize(req: reqwest::RequestBuilder, transport: &Transport) -> reqwest::RequestBuilder {
    match transport.credentials().and_then(|c| c.token()) {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}
