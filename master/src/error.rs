//! The master's typed errors. Each variant has a stable `code()` that maps
//! to a gRPC status, so clients can act on the kind, not the text.

use mezzo_proto::ids::IdError;
use mezzo_proto::resources::ResourceError;

/// gRPC metadata key naming the leader's address in a NotLeader answer.
pub const LEADER_METADATA: &str = "mezzo-leader";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MasterError {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error(transparent)]
    BadId(#[from] IdError),
    #[error(transparent)]
    BadResources(#[from] ResourceError),
    #[error("framework {0} is not subscribed: open a Subscribe stream first")]
    NotSubscribed(String),
    #[error("unknown framework {0}")]
    UnknownFramework(String),
    #[error("unknown offer {0}: it never existed, was already used, or was rescinded")]
    UnknownOffer(String),
    #[error("offer {offer} belongs to another framework")]
    ForeignOffer { offer: String },
    #[error("offers {0} and {1} are on different agents; one accept may use offers of one agent only")]
    MixedAgents(String, String),
    #[error("task {task}: asks for {asked} but the offers hold only {offered}")]
    BeyondOffer {
        task: String,
        asked: String,
        offered: String,
    },
    #[error("task {0} already exists in this framework; task ids are never reused")]
    DuplicateTask(String),
    #[error("unknown task {0}")]
    UnknownTask(String),
    #[error("task {task} is already {state}")]
    TaskTerminal { task: String, state: &'static str },
    #[error("unknown agent {0}")]
    UnknownAgent(String),
    #[error("agent {agent} has no volume {volume}")]
    UnknownVolume { agent: String, volume: String },
    #[error("no executor {executor} of this framework runs on agent {agent}")]
    UnknownExecutor { agent: String, executor: String },
    #[error("agent {0} is not connected; try again once it re-registers")]
    AgentDisconnected(String),
    #[error("agent {0} was marked gone and may not register again")]
    AgentGone(String),
    #[error("the master is shutting down")]
    ShuttingDown,
    #[error("agents are still re-registering after a failover, so the master cannot yet report every task; ask again")]
    AgentsRecovering,
    #[error("this master is not the leader{}", match .leader { Some(l) => format!("; the leader is {l}"), None => "; no leader is elected yet".into() })]
    NotLeader { leader: Option<String> },
    #[error("registry write failed: {0}")]
    Storage(String),
    /// A fault of the master's own (a read that could not be written).
    #[error("internal error: {0}")]
    Internal(String),
    /// A compare-and-set found another version, or the namespace is full.
    #[error(transparent)]
    Kv(#[from] crate::kv::KvError),
    /// A limit against abuse (frameworks per principal, agents, secrets).
    #[error("limit reached: {0}")]
    ResourceExhausted(String),
    /// No credential, or one that names nobody.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's principal may not do this (see `docs/security.md`).
    #[error("{0}")]
    Denied(String),
}

impl From<crate::auth::AuthzError> for MasterError {
    fn from(e: crate::auth::AuthzError) -> Self {
        match e {
            crate::auth::AuthzError::Unauthenticated => MasterError::Unauthenticated(e.to_string()),
            _ => MasterError::Denied(e.to_string()),
        }
    }
}

/// Stable machine-readable kinds of [`MasterError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    FailedPrecondition,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    /// A compare-and-set lost the race: read again and retry.
    Aborted,
    /// A size limit (a framework's key-value namespace) is reached.
    ResourceExhausted,
    /// No credential.
    Unauthenticated,
    Unavailable,
    Internal,
}

impl MasterError {
    pub fn code(&self) -> ErrorCode {
        use MasterError::*;
        match self {
            Invalid(_) | BadId(_) | BadResources(_) | MixedAgents(..) | BeyondOffer { .. } => {
                ErrorCode::InvalidArgument
            }
            NotSubscribed(_) | TaskTerminal { .. } => ErrorCode::FailedPrecondition,
            UnknownFramework(_)
            | UnknownOffer(_)
            | UnknownTask(_)
            | UnknownAgent(_)
            | UnknownVolume { .. }
            | UnknownExecutor { .. } => ErrorCode::NotFound,
            DuplicateTask(_) => ErrorCode::AlreadyExists,
            ForeignOffer { .. } | AgentGone(_) | Denied(_) => ErrorCode::PermissionDenied,
            Unauthenticated(_) => ErrorCode::Unauthenticated,
            ResourceExhausted(_) => ErrorCode::ResourceExhausted,
            AgentDisconnected(_) | ShuttingDown | AgentsRecovering | NotLeader { .. } => ErrorCode::Unavailable,
            Storage(_) | Internal(_) => ErrorCode::Internal,
            Kv(crate::kv::KvError::UnknownFramework(_)) => ErrorCode::NotFound,
            Kv(crate::kv::KvError::Conflict { .. }) => ErrorCode::Aborted,
            Kv(crate::kv::KvError::NamespaceFull { .. }) => ErrorCode::ResourceExhausted,
        }
    }
}

impl From<MasterError> for tonic::Status {
    fn from(e: MasterError) -> Self {
        let code = match e.code() {
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::Aborted => tonic::Code::Aborted,
            ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::Internal => tonic::Code::Internal,
        };
        let mut status = tonic::Status::new(code, e.to_string());
        if let MasterError::NotLeader { leader: Some(l) } = &e
            && let Ok(v) = l.parse()
        {
            status.metadata_mut().insert(LEADER_METADATA, v);
        }
        status
    }
}
