pub mod agent;
pub mod batch;
pub mod master;
pub mod masters;
pub mod ops;
pub mod roles;
pub mod run;
pub mod security;
pub mod service;
pub mod status;

use std::time::Duration;

use mezzo_proto::resources::Resources;

/// Parses durations like `500ms`, `10s`, `2m`.
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 500ms, 10s, 2m)"))
}

/// `cpus 4 mem 8192` for a table cell: the resource text form without
/// its punctuation, zeros left out ("-" when nothing is left).
pub fn res(r: &Resources) -> String {
    if r.is_empty() {
        return "-".into();
    }
    r.to_string().replace([';', ':'], " ")
}

/// Splits a comma-separated list (master addresses, user names), dropping
/// empty entries. (`masters` is the name of the `mezzo masters` module.)
pub fn comma_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Prints the line that scripts and tests wait for, and flushes it.
pub fn ready(what: &str, addr: std::net::SocketAddr) {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "mezzo {what} listening on {addr}");
    let _ = out.flush();
}

/// Waits for SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
