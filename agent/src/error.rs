//! The agent's error type. Every message names the path or address at fault.

use std::net::SocketAddr;
use std::path::PathBuf;

use mezzo_proto::ids::IdError;
use mezzo_proto::resources::ResourceError;

/// Why the agent could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("no master address given")]
    NoMasters,
    #[error("cannot bind the HTTP endpoint on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("HTTP endpoint on {addr} failed: {source}")]
    Http { addr: SocketAddr, source: std::io::Error },
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {what} for {}: {source}", path.display())]
    System {
        what: &'static str,
        path: PathBuf,
        source: nix::Error,
    },
    #[error("agent id stored in {} is invalid: {source}", path.display())]
    BadAgentId { path: PathBuf, source: IdError },
    #[error("detected resources are invalid: {0}")]
    Resources(#[from] ResourceError),
    #[error("the agent's {0} stopped unexpectedly")]
    ActorStopped(&'static str),
    #[error("the agent's {0} panicked")]
    ActorPanicked(&'static str),
    #[error("cannot isolate tasks: {0}")]
    Isolation(String),
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    #[error("credential: {0}")]
    Security(String),
    #[error("{0}")]
    Fetch(#[from] crate::fetch::FetchError),
    #[error("{0}")]
    Volumes(#[from] crate::volumes::VolumeError),
}

impl AgentError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> AgentError {
        let path = path.into();
        move |source| AgentError::Io { op, path, source }
    }
}
