//! The Mezzo agent: offers this machine's resources to the master, runs
//! the tasks it is sent, and reports their status updates reliably.
//!
//! ```no_run
//! # async fn run() -> Result<(), mezzo_agent::AgentError> {
//! use mezzo_agent::{AgentConfig, start};
//!
//! let config = AgentConfig::new(
//!     vec!["127.0.0.1:5050".to_owned()],
//!     "127.0.0.1:0".parse().expect("literal address"),
//!     "/tmp/mezzo-agent".into(),
//! );
//! let mut agent = start(config).await?;
//! println!("agent HTTP on http://{}", agent.http_addr);
//! agent.wait().await
//! # }
//! ```
//!
//! Inside, a few actors, each owning its state and reached through a
//! cloneable handle over a bounded channel:
//!
//! | actor | owns | module |
//! |---|---|---|
//! | master connection | the `Attach` stream, registration, heartbeats | [`attach`] |
//! | task table | every task, its latest state and supervisor | [`task::table`] |
//! | one supervisor per task | the task's container | [`task::supervisor`] |
//! | status update manager | per-task update queues and their journal | [`status`] |
//! | sandbox garbage collector | done sandboxes, oldest first | [`gc`] |
//! | sandbox writeback | nothing; `syncfs` of the sandboxes now and then | [`writeback`] |
//! | HTTP server | nothing; asks the others | [`http`] |
//!
//! The files the agent keeps are drawn in [`paths`].

pub mod attach;
pub mod cgroups;
mod config;
pub mod containerizer;
mod error;
pub mod files;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod gc;
pub mod http;
pub mod metrics;
pub mod paths;
mod resources;
pub mod status;
pub mod task;
pub mod writeback;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

pub use config::{AgentConfig, Isolation, IsolationConfig};
pub use error::AgentError;
pub use resources::detect_resources;

use crate::attach::register::{self, Identity};
use crate::containerizer::{Containerizer, LinuxConfig, LinuxContainerizer, PosixContainerizer};
use crate::metrics::Metrics;
use crate::status::StatusConfig;
use crate::task::table::{self, TableDeps};

/// A running agent.
pub struct AgentHandle {
    /// Where the HTTP endpoint listens.
    pub http_addr: SocketAddr,
    actors: JoinSet<(&'static str, Result<(), AgentError>)>,
    containerizer: Arc<dyn Containerizer>,
    runtime_dir: std::path::PathBuf,
    runtime_dir_is_default: bool,
}

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHandle")
            .field("http_addr", &self.http_addr)
            .finish()
    }
}

impl AgentHandle {
    /// Runs until one of the agent's actors fails; dropping the handle
    /// stops the agent (running tasks are left alone).
    pub async fn wait(&mut self) -> Result<(), AgentError> {
        match self.actors.join_next().await {
            Some(Ok((_, Err(e)))) => Err(e),
            Some(Ok((name, Ok(())))) => Err(AgentError::ActorStopped(name)),
            Some(Err(_)) => Err(AgentError::ActorPanicked("agent actor")),
            None => Ok(()),
        }
    }

    /// A clean stop: stops the actors, then lets the containerizer release
    /// what it holds for itself (with isolation, the agent's parent cgroup
    /// once no container is left in it). Running tasks are left alone.
    pub async fn shutdown(mut self) {
        self.actors.shutdown().await;
        self.containerizer.shutdown().await;
        paths::prune_runtime_dir(&self.runtime_dir);
        if self.runtime_dir_is_default
            && let Some(parent) = self.runtime_dir.parent()
        {
            // `/run/mezzo` or `/dev/shm/mezzo`, once no agent uses it.
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// Starts an agent: binds HTTP, recovers pending status updates, and
/// starts attaching to the masters. Returns once everything is running.
pub async fn start(config: AgentConfig) -> Result<AgentHandle, AgentError> {
    if config.masters.is_empty() {
        return Err(AgentError::NoMasters);
    }
    let work_dir = config.work_dir.clone();
    tokio::fs::create_dir_all(&work_dir)
        .await
        .map_err(AgentError::io("create work dir", &work_dir))?;
    let resources = mezzo_proto::reservation::ReservedResources {
        unreserved: match config.resources.clone() {
            Some(r) => r,
            None => detect_resources(&work_dir)?,
        },
        reserved: config.reservations.clone(),
    };
    let runtime_dir = config
        .runtime_dir
        .clone()
        .unwrap_or_else(|| paths::default_runtime_dir(&work_dir));
    create_private_dir(&runtime_dir)?;
    let stored_id = register::load_agent_id(&work_dir)?;
    let metrics = Metrics::new();

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| AgentError::Bind {
            addr: config.listen,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| AgentError::Bind {
        addr: config.listen,
        source,
    })?;

    let (forget_tx, forget_rx) = mpsc::unbounded_channel();
    let status_config = StatusConfig {
        work_dir: work_dir.clone(),
        retry_initial: config.status_retry_initial,
        retry_max: config.status_retry_max,
    };
    let (status, recovered, status_join) = status::start(status_config, metrics.clone(), forget_tx).await?;
    if !recovered.is_empty() {
        tracing::info!(tasks = recovered.len(), "recovered pending status updates");
    }

    let containerizer = containerizer(&config, &work_dir)?;
    let sandboxes = paths::sandboxes_root(&work_dir);
    let (writeback, writeback_actor) = writeback::start(&sandboxes, config.sandbox_writeback)?;
    let (gc, gc_actor) = gc::start(sandboxes, config.sandbox_gc.clone(), metrics.clone())?;
    let (agent_id_tx, agent_id_rx) = watch::channel(stored_id);
    let (master_tx, master_rx) = watch::channel(None);
    let (table, table_join) = table::start(
        TableDeps {
            work_dir: work_dir.clone(),
            runtime_dir: runtime_dir.clone(),
            default_kill_grace: config.default_kill_grace,
            containerizer: containerizer.clone(),
            status: status.clone(),
            forget: forget_rx,
            agent_id: agent_id_rx.clone(),
            metrics: metrics.clone(),
            writeback,
            gc,
        },
        recovered,
    )
    .await?;

    let mut actors = JoinSet::new();
    actors.spawn(async move {
        let r = status_join
            .await
            .unwrap_or(Err(AgentError::ActorPanicked("status update manager")));
        ("status update manager", r)
    });
    actors.spawn(async move { ("sandbox garbage collector", gc_actor.await) });
    if let Some(actor) = writeback_actor {
        actors.spawn(async move { ("sandbox writeback", actor.await) });
    }
    actors.spawn(async move {
        let r = table_join.await.unwrap_or(Err(AgentError::ActorPanicked("task table")));
        ("task table", r)
    });

    let app = http::router(http::HttpState {
        table: table.clone(),
        status: status.clone(),
        agent_id: agent_id_rx,
        master: master_rx,
        hostname: config.hostname.clone(),
        resources: resources.total(),
        metrics: metrics.clone(),
    })
    .merge(files::router(work_dir.clone()));
    actors.spawn(async move {
        let r = axum::serve(listener, app).await.map_err(|source| AgentError::Http {
            addr: http_addr,
            source,
        });
        ("HTTP server", r)
    });

    let deps = attach::AttachDeps {
        masters: config.masters.clone(),
        work_dir,
        identity: Identity {
            hostname: config.hostname.clone(),
            resources,
            attributes: config.attributes.clone(),
            http_address: http_addr.to_string(),
        },
        table,
        status,
        agent_id: agent_id_tx,
        master: master_tx,
        metrics,
    };
    actors.spawn(async move { ("master connection", attach::run(deps).await) });
    tracing::info!(%http_addr, masters = ?config.masters, runtime_dir = %runtime_dir.display(), "agent started");
    Ok(AgentHandle {
        http_addr,
        actors,
        containerizer,
        runtime_dir,
        runtime_dir_is_default: config.runtime_dir.is_none(),
    })
}

/// Creates the runtime dir readable by root only: checkpoints hold tasks'
/// environments.
fn create_private_dir(dir: &std::path::Path) -> Result<(), AgentError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(AgentError::io("create runtime dir", dir))
}

/// The containerizer the configuration asks for; refuses to start an
/// isolating agent that cannot isolate.
fn containerizer(config: &AgentConfig, work_dir: &std::path::Path) -> Result<Arc<dyn Containerizer>, AgentError> {
    match &config.isolation {
        Isolation::None => Ok(Arc::new(PosixContainerizer::new())),
        Isolation::Linux(iso) => {
            // Tasks run as another user: their sandboxes must be reachable.
            for dir in [work_dir.to_path_buf(), paths::sandboxes_root(work_dir)] {
                std::fs::create_dir_all(&dir).map_err(AgentError::io("create", &dir))?;
                let mut perms = std::fs::metadata(&dir)
                    .map_err(AgentError::io("stat", &dir))?
                    .permissions();
                std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o711);
                std::fs::set_permissions(&dir, perms).map_err(AgentError::io("chmod", &dir))?;
            }
            // One parent cgroup per agent work dir, stable across restarts.
            let parent = iso
                .cgroup_parent
                .clone()
                .unwrap_or_else(|| format!("mezzo-agent-{}", paths::work_dir_tag(work_dir)));
            let cfg = LinuxConfig {
                cgroup_root: iso.cgroup_root.clone(),
                parent,
                exe: iso.exe.clone(),
                default_user: iso.task_user.clone(),
                allowed_users: iso.allowed_users.clone(),
                cpu_hard_limit: iso.cpu_hard_limit,
                pids_max: iso.pids_max,
                disk_check_interval: iso.disk_check_interval,
                log_max_bytes: iso.log_max_bytes,
            };
            let c = LinuxContainerizer::new(cfg).map_err(|e| AgentError::Isolation(e.to_string()))?;
            Ok(Arc::new(c))
        }
    }
}
