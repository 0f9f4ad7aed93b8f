//! Starting a master: open the Raft log, spawn the Raft node and the owner
//! task, serve gRPC (scheduler, agent and Raft APIs) and HTTP on one port
//! (and optionally HTTP on a second).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::serve::ListenerExt;
use mezzo_proto::MAX_MESSAGE_BYTES;
use mezzo_proto::v1::agent_api_server::AgentApiServer;
use mezzo_proto::v1::raft_transport_server::RaftTransportServer;
use mezzo_proto::v1::scheduler_server::SchedulerServer;
use tokio::net::TcpListener;

use crate::api::agent::AgentService;
use crate::api::scheduler::SchedulerApi;
use crate::core::CoreConfig;
use crate::error::MasterError;
use crate::raft::node::NodeError;
use crate::raft::transport::{MAX_BATCH_BYTES, RaftService};
use crate::raft::{RaftConfig, node};

#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// gRPC and HTTP address.
    pub listen: SocketAddr,
    /// Extra HTTP-only address, if wanted.
    pub http: Option<SocketAddr>,
    pub work_dir: PathBuf,
    /// Every master's address, this one's included, in the same order on
    /// each; empty for a single master.
    pub peers: Vec<String>,
    /// Instead of `peers`: addresses of a running group that this master
    /// joins (after an operator added its address with `mezzo masters add`).
    pub join: Vec<String>,
    pub core: CoreConfig,
    /// How often timers are checked.
    pub tick: Duration,
    /// One Raft tick; elections start after `election_ticks` of them
    /// (randomised up to twice that), leaders heartbeat every
    /// `heartbeat_ticks`.
    pub raft_tick: Duration,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Applied entries between registry snapshots.
    pub snapshot_every: u64,
    /// The operator token (`--operator-token`); its Debug hides it.
    pub operator: crate::http::OperatorAuth,
}

impl MasterConfig {
    pub fn new(listen: SocketAddr, work_dir: PathBuf) -> Self {
        MasterConfig {
            listen,
            http: None,
            work_dir,
            peers: Vec::new(),
            join: Vec::new(),
            core: CoreConfig::default(),
            tick: Duration::from_millis(50),
            raft_tick: Duration::from_millis(50),
            election_ticks: 6,
            heartbeat_ticks: 1,
            snapshot_every: 10_000,
            operator: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create work dir {path}: {source}")]
    WorkDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Raft(#[from] NodeError),
    #[error("--listen {listen} is not one of --peers {peers:?}; list every master's address, this one's included")]
    NotAPeer { listen: String, peers: Vec<String> },
    #[error("--peers names {0} twice")]
    DuplicatePeer(String),
    #[error("cannot join: {0}")]
    Join(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A running master.
#[derive(Debug)]
pub struct MasterHandle {
    pub addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    owner: tokio::task::JoinHandle<Result<(), MasterError>>,
}

impl MasterHandle {
    /// Waits until the master stops; an error means the registry could
    /// not be written.
    pub async fn wait(self) -> Result<(), MasterError> {
        self.owner.await.unwrap_or(Err(MasterError::ShuttingDown))
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

pub async fn start(cfg: MasterConfig) -> Result<MasterHandle, StartError> {
    std::fs::create_dir_all(&cfg.work_dir).map_err(|source| StartError::WorkDir {
        path: cfg.work_dir.clone(),
        source,
    })?;
    let listener = bind(cfg.listen).await?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let (id, peers) = if !cfg.join.is_empty() {
        join_group(&cfg.join, &addr.to_string(), &cfg.work_dir).await?
    } else if cfg.peers.is_empty() {
        (1, [(1, addr.to_string())].into_iter().collect())
    } else {
        let mut peers = BTreeMap::new();
        for (i, p) in cfg.peers.iter().enumerate() {
            if peers.values().any(|v| v == p) {
                return Err(StartError::DuplicatePeer(p.clone()));
            }
            peers.insert(i as u64 + 1, p.clone());
        }
        let me = cfg.listen.to_string();
        let id = peers
            .iter()
            .find(|(_, a)| **a == me || **a == addr.to_string())
            .map(|(id, _)| *id);
        let id = id.ok_or_else(|| StartError::NotAPeer {
            listen: me,
            peers: cfg.peers.clone(),
        })?;
        (id, peers)
    };
    let raft_cfg = RaftConfig {
        id,
        peers,
        dir: cfg.work_dir.join("raft"),
        tick: cfg.raft_tick,
        election_ticks: cfg.election_ticks,
        heartbeat_ticks: cfg.heartbeat_ticks,
        snapshot_every: cfg.snapshot_every,
        join: !cfg.join.is_empty(),
    };
    let (raft, events) = node::start(raft_cfg)?;
    let (handle, owner) = crate::runtime::spawn(cfg.core.clone(), raft.clone(), events, cfg.tick);

    let scheduler = SchedulerServer::new(SchedulerApi::new(handle.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let agents = AgentApiServer::new(AgentService::new(handle.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let raft_api = RaftTransportServer::new(RaftService::new(raft.clone()))
        .max_decoding_message_size(MAX_BATCH_BYTES)
        .max_encoding_message_size(MAX_BATCH_BYTES);
    let grpc = tonic::service::Routes::new(scheduler)
        .add_service(agents)
        .add_service(raft_api)
        .into_axum_router();
    let http_state = crate::http::HttpState::start(handle.clone(), raft.clone(), cfg.operator.clone());
    let app = grpc.merge(crate::http::router(http_state.clone()));

    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "server stopped");
        }
    });
    let http_addr = match cfg.http {
        Some(http) => {
            let l = bind(http).await?;
            let a = l
                .local_addr()
                .map_err(|source| StartError::Bind { addr: http, source })?;
            let router = crate::http::router(http_state);
            tokio::spawn(async move {
                let _ = axum::serve(l, router).await;
            });
            Some(a)
        }
        None => None,
    };
    tracing::info!(%addr, id, "master listening (gRPC and HTTP)");
    Ok(MasterHandle { addr, http_addr, owner })
}

/// Asks a running group for its members and finds this master among them
/// (an operator adds it first). The id is kept in the work dir so a
/// restart works even while the others are unreachable.
async fn join_group(join: &[String], me: &str, work_dir: &Path) -> Result<(u64, BTreeMap<u64, String>), StartError> {
    let id_file = work_dir.join("raft-id");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| StartError::Join(e.to_string()))?;
    let mut why = Vec::new();
    for m in join {
        let status = match client.get(format!("http://{m}/raft")).send().await {
            Ok(r) => r.json::<crate::raft::RaftStatus>().await,
            Err(e) => {
                why.push(format!("{m}: {e}"));
                continue;
            }
        };
        match status {
            Ok(st) => {
                let Some(id) = st.members.iter().find(|(_, a)| a.as_str() == me).map(|(id, _)| *id) else {
                    return Err(StartError::Join(format!(
                        "{me} is not a member of the group at {m} (members: {:?}); add it first with `mezzo masters add {me} --master {m}`",
                        st.members
                    )));
                };
                let _ = std::fs::write(&id_file, id.to_string());
                return Ok((id, st.members));
            }
            Err(e) => why.push(format!("{m}: {e}")),
        }
    }
    if let Some(id) = std::fs::read_to_string(&id_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        tracing::warn!(
            id,
            "no master of the group answered; restarting as the member recorded in the work dir"
        );
        return Ok((id, BTreeMap::new()));
    }
    Err(StartError::Join(format!("no master answered: {}", why.join("; "))))
}
