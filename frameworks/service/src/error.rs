//! Errors of the service framework.

use axum::http::StatusCode;

/// Why an API request was refused. Each variant maps to one HTTP status,
/// which `mezzo service` turns into its exit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (a bad service file, a bad count).
    #[error("{0}")]
    BadRequest(String),
    /// The service could never run on this cluster (resources no agent has).
    #[error("{0}")]
    Infeasible(String),
    /// No such service.
    #[error("{0}")]
    NotFound(String),
    /// Not possible in the service's current state.
    #[error("{0}")]
    Conflict(String),
    /// The framework is not connected to a leading master, or the change
    /// could not be stored; nothing was changed.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Infeasible(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Why the framework could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The work directory (which keeps the framework id) is unusable.
    #[error("work dir {path}: {source}")]
    WorkDir {
        /// The path.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The HTTP address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The master removed the framework.
    #[error("the master removed the framework: {0}")]
    Removed(String),
    /// The configured role is not a role name.
    #[error("role: {0}")]
    Role(String),
    /// The masters cannot be reached as configured (no client
    /// configuration, bad credential).
    #[error("masters: {0}")]
    Masters(String),
}
