//! Starting a master: open the Raft log, spawn the Raft node and the owner
//! task, serve gRPC (scheduler, agent and Raft APIs) and HTTP on one port
//! (and optionally HTTP on a second).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mezzo_proto::MAX_MESSAGE_BYTES;
use mezzo_proto::security::client_config::mezzo_home;
use mezzo_proto::security::https;
use mezzo_proto::security::principal::MASTER_DNS_NAME;
use mezzo_proto::security::serve::ServeOptions;
use mezzo_proto::security::{Kind, Transport};
use mezzo_proto::v1::agent_api_server::AgentApiServer;
use mezzo_proto::v1::raft_transport_server::RaftTransportServer;
use mezzo_proto::v1::scheduler_server::SchedulerServer;
use tokio::net::TcpListener;

use crate::api::agent::AgentService;
use crate::api::scheduler::SchedulerApi;
use crate::core::CoreConfig;
use crate::error::MasterError;
use crate::http::authn::Authenticator;
use crate::pki::Authority;
use crate::pki::setup::{self, SecurityConfig, SetupError, hostname};
use crate::raft::node::NodeError;
use crate::raft::transport::{MAX_BATCH_BYTES, RaftService};
use crate::raft::{RaftConfig, node};

#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// gRPC and HTTP address.
    pub listen: SocketAddr,
    /// Extra HTTP-only address, if wanted.
    pub http: Option<SocketAddr>,
    /// A plain-HTTP address serving only Mesos' API, for Mesos clients
    /// that cannot speak TLS (still authenticated); `None`: Mesos' API is
    /// on `listen` only.
    pub mesos_listen: Option<SocketAddr>,
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
    /// TLS, authentication and limits (see `docs/security.md`).
    pub security: SecurityConfig,
}

impl MasterConfig {
    pub fn new(listen: SocketAddr, work_dir: PathBuf) -> Self {
        MasterConfig {
            listen,
            http: None,
            mesos_listen: None,
            work_dir,
            peers: Vec::new(),
            join: Vec::new(),
            core: CoreConfig::default(),
            tick: Duration::from_millis(50),
            raft_tick: Duration::from_millis(50),
            election_ticks: 20,
            heartbeat_ticks: 1,
            snapshot_every: 10_000,
            security: SecurityConfig::new(mezzo_home().join("pki")),
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
    #[error("TLS: {0}")]
    Security(#[from] SetupError),
}

/// A running master.
#[derive(Debug)]
pub struct MasterHandle {
    pub addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    /// Where `--mesos-listen` serves.
    pub mesos_addr: Option<SocketAddr>,
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
    let peers = static_peers(&cfg, addr)?;
    let member = match &peers {
        Some((id, peers)) => peers.get(id).cloned().unwrap_or_else(|| addr.to_string()),
        None => addr.to_string(),
    };
    let known: Vec<String> = match &peers {
        Some((_, p)) => p.values().cloned().collect(),
        None => cfg.join.iter().cloned().chain([member.clone()]).collect(),
    };
    let Secured {
        transport,
        server_tls,
        authority,
    } = secure(&cfg, addr, &member, &known).await?;
    let (id, peers) = match peers {
        Some(p) => p,
        None => join_group(&cfg.join, &member, &cfg.work_dir, &transport).await?,
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
        transport: transport.clone(),
    };
    let (raft, events) = node::start(raft_cfg)?;
    let mut core = cfg.core.clone();
    let master_id = core.master_id.clone();
    let mesos_listener = match cfg.mesos_listen {
        Some(at) => {
            let l = bind(at).await?;
            let a = l.local_addr().map_err(|source| StartError::Bind { addr: at, source })?;
            Some((l, a))
        }
        None => None,
    };
    core.mesos_endpoint = (id, mesos_listener.as_ref().map(|(_, a)| advertised(*a, &member)));
    if let Some(a) = &authority {
        core.data_key = crate::core::DataKey::new(*a.data_key());
    }
    let (handle, owner) = crate::runtime::spawn(core, raft.clone(), events, cfg.tick);

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
    let data_key = authority.as_ref().map(|a| *a.data_key());
    let mut authn = Authenticator::new(data_key, raft.clone(), cfg.security.max_calls_per_second);
    authn.anonymous_read = cfg.security.anonymous_read;
    let http_state = crate::http::HttpState::start(handle.clone(), raft.clone(), authn, authority, transport);
    let streams = crate::mesos::Streams::default();
    let mesos = |at: SocketAddr, plain: bool| {
        // SUBSCRIBED names this master as clients reach it.
        let at = advertised(at, &member).parse().unwrap_or(at);
        let info = crate::mesos::master_info(&master_id, at, &hostname());
        crate::mesos::router(http_state.clone(), streams.clone(), info, plain)
    };
    let app = crate::http::app(http_state.clone(), grpc.merge(mesos(addr, false)));
    let mut serve = ServeOptions::new(server_tls);
    serve.max_connections = cfg.security.max_connections;
    // The other masters' connections (Raft) on the node's own thread.
    serve.dedicated = Some((Kind::Master, raft.runtime().clone()));
    tokio::spawn(crate_serve(listener, serve.clone(), app));
    let mesos_addr = match mesos_listener {
        Some((l, a)) => {
            let app = crate::http::authenticated(http_state.authn(), mesos(a, true));
            let mut plain = ServeOptions::new(None);
            plain.max_connections = cfg.security.max_connections;
            tokio::spawn(crate_serve(l, plain, app));
            tracing::info!(addr = %a, "serving Mesos' API in plain HTTP (--mesos-listen)");
            Some(a)
        }
        None => None,
    };
    let http_addr = match cfg.http {
        Some(http) => {
            let l = bind(http).await?;
            let a = l
                .local_addr()
                .map_err(|source| StartError::Bind { addr: http, source })?;
            let router = crate::http::app(http_state, axum::Router::new());
            tokio::spawn(crate_serve(l, serve, router));
            Some(a)
        }
        None => None,
    };
    tracing::info!(%addr, id, "master listening (gRPC and HTTP)");
    Ok(MasterHandle {
        addr,
        http_addr,
        mesos_addr,
        owner,
    })
}

/// The address others reach a listener bound at `bound` by: itself, or
/// for a wildcard bind (`0.0.0.0:5051`) this master's own host with that
/// port (a redirect to `0.0.0.0` would lead nowhere).
fn advertised(bound: SocketAddr, member: &str) -> String {
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    let host = member.rsplit_once(':').map_or(member, |(h, _)| h);
    format!("{host}:{}", bound.port())
}

async fn crate_serve(listener: TcpListener, opts: ServeOptions, app: axum::Router) {
    mezzo_proto::security::serve::serve(listener, opts, app).await;
}

/// This master's id and every member's address.
type Group = (u64, BTreeMap<u64, String>);

/// The group from `--peers` (or a lone master): this master's id and
/// every member; `None` when joining a running group.
fn static_peers(cfg: &MasterConfig, addr: SocketAddr) -> Result<Option<Group>, StartError> {
    if !cfg.join.is_empty() {
        return Ok(None);
    }
    if cfg.peers.is_empty() {
        return Ok(Some((1, [(1, addr.to_string())].into_iter().collect())));
    }
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
        .map(|(id, _)| *id)
        .ok_or_else(|| StartError::NotAPeer {
            listen: me,
            peers: cfg.peers.clone(),
        })?;
    Ok(Some((id, peers)))
}

/// How a master is secured: its transport to the other masters and the
/// agents, its server's TLS config, and the CA (none under `--insecure`).
struct Secured {
    transport: Transport,
    server_tls: Option<Arc<rustls::ServerConfig>>,
    authority: Option<Arc<Authority>>,
}

/// The transport to the other masters, the server's TLS config and the
/// CA, or plain text with a warning under `--insecure`.
async fn secure(cfg: &MasterConfig, addr: SocketAddr, member: &str, known: &[String]) -> Result<Secured, StartError> {
    if cfg.security.insecure {
        tracing::warn!(
            "--insecure: this master serves plain text and authenticates nobody; \
             anyone who can reach {addr} controls the cluster. Never use it outside a test machine."
        );
        return Ok(Secured {
            transport: Transport::Plain,
            server_tls: None,
            authority: None,
        });
    }
    let mut hosts = vec![hostname()];
    if !addr.ip().is_unspecified() {
        hosts.push(addr.ip().to_string());
    }
    let tls = setup::prepare(&cfg.security, &cfg.work_dir, member, &hosts, known).await?;
    let server = tls.credentials.server_config().map_err(SetupError::from)?;
    Ok(Secured {
        transport: Transport::Tls(tls.credentials),
        server_tls: Some(server),
        authority: Some(Arc::new(tls.authority)),
    })
}

/// Asks a running group for its members and finds this master among them
/// (an operator adds it first). The id is kept in the work dir so a
/// restart works even while the others are unreachable.
async fn join_group(
    join: &[String],
    me: &str,
    work_dir: &Path,
    transport: &Transport,
) -> Result<(u64, BTreeMap<u64, String>), StartError> {
    let id_file = work_dir.join("raft-id");
    let client = https::client(transport, MASTER_DNS_NAME, Duration::from_secs(3)).map_err(StartError::Join)?;
    let mut why = Vec::new();
    for m in join {
        let get = https::authorize(client.get(https::url(transport, m, "/raft")), transport);
        let status = match get.send().await {
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

#[cfg(test)]
mod tests {
    use super::advertised;

    #[test]
    fn a_wildcard_listener_is_advertised_at_this_masters_host() {
        let at = |s: &str| s.parse().expect("address");
        assert_eq!(advertised(at("127.0.0.1:5051"), "10.0.0.1:5050"), "127.0.0.1:5051");
        assert_eq!(advertised(at("0.0.0.0:5051"), "10.0.0.1:5050"), "10.0.0.1:5051");
        assert_eq!(advertised(at("[::]:5051"), "node-1:5050"), "node-1:5051");
    }
}
