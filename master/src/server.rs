//! Starting a master: open the registry, spawn the owner task, serve gRPC
//! and HTTP on one port (and optionally HTTP on a second).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use mezzo_proto::MAX_MESSAGE_BYTES;
use mezzo_proto::v1::agent_api_server::AgentApiServer;
use mezzo_proto::v1::scheduler_server::SchedulerServer;
use tokio::net::TcpListener;

use crate::api::agent::AgentService;
use crate::api::scheduler::SchedulerApi;
use crate::core::{CoreConfig, Master};
use crate::error::MasterError;
use crate::storage::{LocalLog, StorageError};

#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// gRPC and HTTP address.
    pub listen: SocketAddr,
    /// Extra HTTP-only address, if wanted.
    pub http: Option<SocketAddr>,
    pub work_dir: PathBuf,
    pub core: CoreConfig,
    /// How often timers are checked.
    pub tick: Duration,
}

impl MasterConfig {
    pub fn new(listen: SocketAddr, work_dir: PathBuf) -> Self {
        MasterConfig {
            listen,
            http: None,
            work_dir,
            core: CoreConfig::default(),
            tick: Duration::from_millis(50),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create work dir {path}: {source}")]
    WorkDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Storage(#[from] StorageError),
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
    let (log, registry) = LocalLog::open(&cfg.work_dir.join("registry.log"))?;
    tracing::info!(
        agents = registry.agents.len(),
        frameworks = registry.frameworks.len(),
        "registry recovered"
    );
    let core = Master::recover(cfg.core.clone(), registry, Instant::now());
    let (handle, owner) = crate::runtime::spawn(core, log, cfg.tick);

    let scheduler = SchedulerServer::new(SchedulerApi::new(handle.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let agents = AgentApiServer::new(AgentService::new(handle.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let grpc = tonic::service::Routes::new(scheduler)
        .add_service(agents)
        .into_axum_router();
    let app = grpc.merge(crate::http::router(handle.clone()));

    let listener = bind(cfg.listen).await?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: cfg.listen,
        source,
    })?;
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
            let router = crate::http::router(handle.clone());
            tokio::spawn(async move {
                let _ = axum::serve(l, router).await;
            });
            Some(a)
        }
        None => None,
    };
    tracing::info!(%addr, "master listening (gRPC and HTTP)");
    Ok(MasterHandle { addr, http_addr, owner })
}
