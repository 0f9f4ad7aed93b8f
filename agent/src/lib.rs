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
//! | executor API | nothing; custom executors' calls go to the table | [`executor_api`] |
//!
//! The files the agent keeps are drawn in [`paths`].

pub mod attach;
pub mod cgroups;
mod config;
pub mod containerizer;
mod error;
pub mod exec;
pub mod executor_api;
#[cfg(test)]
mod executor_api_tests;
mod failpoint;
pub mod fetch;
pub mod files;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod gc;
pub mod http;
pub mod images;
pub mod key;
pub mod metrics;
pub mod paths;
mod resources;
pub mod status;
pub mod task;
pub mod tls;
pub mod volumes;
pub mod writeback;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use mezzo_proto::ids::AgentId;
use mezzo_proto::reservation::ReservedResources;
use mezzo_proto::security::Transport;
use mezzo_proto::security::serve::ServeOptions;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

pub use config::{AgentConfig, Isolation, IsolationConfig};
pub use error::AgentError;
pub use resources::detect_resources;

use crate::attach::register::{self, Identity};
use crate::containerizer::{Containerizer, LinuxConfig, LinuxContainerizer, PosixContainerizer};
use crate::metrics::Metrics;
use crate::status::{StatusConfig, StatusHandle};
use crate::task::table::{self, TableDeps, TableHandle};

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
    let host = prepare_host(&config).await?;
    let metrics = Metrics::new();
    let (listener, http_addr) = bind_http(config.listen).await?;
    let transport = tls::credentials(
        &config.security,
        &host.work_dir,
        &config.masters,
        &config.hostname,
        &http_addr.to_string(),
    )
    .await?;
    let (agent_id_tx, agent_id_rx) = watch::channel(host.stored_id.clone());
    let (master_tx, master_rx) = watch::channel(None);
    let executor_api::Bound {
        listener: executor_listener,
        former_port_lost,
    } = executor_api::bind(config.executor_listen, &host.work_dir).await?;
    let (outbound_tx, outbound_rx) = watch::channel(None);
    let identity = Identity {
        hostname: config.hostname.clone(),
        resources: host.resources.clone(),
        attributes: config.attributes.clone(),
        http_address: http_addr.to_string(),
        registration: uuid::Uuid::new_v4().to_string(),
    };
    let executors = table::ExecutorDeps {
        endpoint: executor_listener.local_addr().map_err(|source| AgentError::Bind {
            addr: config.executor_listen,
            source,
        })?,
        registration_timeout: config.executor_registration_timeout,
        agent_info: identity.info(),
        outbound: outbound_rx,
        rotate_tokens: former_port_lost,
    };
    let executor_addr = executors.endpoint;
    let tasks = recover_tasks(&config, &host, &metrics, agent_id_rx.clone(), executors).await?;

    let mut actors = JoinSet::new();
    watch_actor(&mut actors, "status update manager", tasks.status_join);
    spawn_actor(&mut actors, "sandbox garbage collector", tasks.gc_actor);
    if let Some(actor) = tasks.writeback_actor {
        spawn_actor(&mut actors, "sandbox writeback", actor);
    }
    watch_actor(&mut actors, "task table", tasks.table_join);
    let http_state = http::HttpState {
        table: tasks.table.clone(),
        status: tasks.status.clone(),
        agent_id: agent_id_rx,
        master: master_rx,
        hostname: config.hostname.clone(),
        resources: host.resources.total(),
        metrics: metrics.clone(),
    };
    let offered = host.resources.total();
    let server = http_server(listener, &transport, http_state, host.work_dir.clone())?;
    spawn_actor(&mut actors, "HTTP server", server);
    let executor_server = executor_api::serve(executor_listener, tasks.table.clone(), tasks.status.clone());
    spawn_actor(&mut actors, "executor API", executor_server);
    let deps = attach::AttachDeps {
        masters: config.masters.clone(),
        work_dir: host.work_dir,
        identity,
        outbound: outbound_tx,
        transport,
        table: tasks.table,
        status: tasks.status,
        agent_id: agent_id_tx,
        master: master_tx,
        metrics,
        checkpoints_marker: paths::checkpoints_marker(&host.runtime_dir),
        tasks_complete: host.checkpoints_intact,
    };
    spawn_actor(&mut actors, "master connection", attach::run(deps));
    tracing::info!(%executor_addr, "custom executors reach the agent here");
    tracing::info!(%http_addr, masters = ?config.masters, runtime_dir = %host.runtime_dir.display(), "agent started");
    for warning in startup_warnings(&config.hostname, &offered).await {
        tracing::warn!("{warning}");
    }
    Ok(AgentHandle {
        http_addr,
        actors,
        containerizer: tasks.containerizer,
        runtime_dir: host.runtime_dir,
        runtime_dir_is_default: config.runtime_dir.is_none(),
    })
}

/// What an operator should know about this agent's identity before work
/// lands on it (issue 21): a hostname that does not resolve (frameworks
/// and health checks that connect to its tasks by it will fail), and
/// nothing to run tasks with.
async fn startup_warnings(hostname: &str, resources: &mezzo_proto::resources::Resources) -> Vec<String> {
    let mut warnings = Vec::new();
    let lookup = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::lookup_host((hostname, 0u16)),
    )
    .await;
    let unresolved = match lookup {
        Ok(Ok(addrs)) => (addrs.count() == 0).then(|| "no address".to_owned()),
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("no answer within 5 s".to_owned()),
    };
    if let Some(why) = unresolved {
        warnings.push(format!(
            "hostname {hostname:?} does not resolve ({why}): frameworks and health checks that reach tasks by it will fail; pass --hostname with a name this machine is known by"
        ));
    }
    if resources.cpus.0 == 0 || resources.mem.0 == 0 {
        warnings.push(format!(
            "this agent offers {resources}: without cpus and memory no task can run on it (--resources replaces what is detected; give cpus and mem too)"
        ));
    }
    warnings
}

/// What the agent finds or makes on this host before any actor starts.
struct Host {
    work_dir: PathBuf,
    runtime_dir: PathBuf,
    /// What this agent offers.
    resources: ReservedResources,
    /// The id a master gave this agent before a restart, if any.
    stored_id: Option<AgentId>,
    /// The runtime dir kept every checkpoint since a master last accepted
    /// this agent ([`paths::checkpoints_marker`]).
    checkpoints_intact: bool,
}

/// Creates the work dir and the runtime dir, and reads the resources to
/// offer and the stored agent id.
async fn prepare_host(config: &AgentConfig) -> Result<Host, AgentError> {
    let work_dir = config.work_dir.clone();
    tokio::fs::create_dir_all(&work_dir)
        .await
        .map_err(AgentError::io("create work dir", &work_dir))?;
    let resources = ReservedResources {
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
    let checkpoints_intact = stored_id.is_none() || paths::checkpoints_marker(&runtime_dir).exists();
    if !checkpoints_intact {
        tracing::warn!(runtime_dir = %runtime_dir.display(), "the task checkpoints were lost (host rebooted or runtime dir wiped): tasks not found are reported LOST");
    }
    Ok(Host {
        work_dir,
        runtime_dir,
        resources,
        stored_id,
        checkpoints_intact,
    })
}

/// Binds the HTTP listener before anything is recovered, so that a port
/// in use fails the start early; returns it with the address it got.
async fn bind_http(listen: SocketAddr) -> Result<(TcpListener, SocketAddr), AgentError> {
    let bind_error = |source| AgentError::Bind { addr: listen, source };
    let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, addr))
}

/// An actor that has yet to be spawned.
type Actor = BoxFuture<'static, Result<(), AgentError>>;

/// The task side of the agent, recovered: the status update manager and
/// the task table run already; the sandbox keepers are still to spawn.
struct Tasks {
    status: StatusHandle,
    status_join: JoinHandle<Result<(), AgentError>>,
    containerizer: Arc<dyn Containerizer>,
    table: TableHandle,
    table_join: JoinHandle<Result<(), AgentError>>,
    gc_actor: Actor,
    writeback_actor: Option<Actor>,
}

/// Replays the status journal, builds the containerizer and the sandbox
/// keepers, then recovers the task table from its checkpoints, which
/// needs the journal's latest states and a containerizer to adopt
/// running containers with.
async fn recover_tasks(
    config: &AgentConfig,
    host: &Host,
    metrics: &Metrics,
    agent_id: watch::Receiver<Option<AgentId>>,
    executors: table::ExecutorDeps,
) -> Result<Tasks, AgentError> {
    let (forget_tx, forget_rx) = mpsc::unbounded_channel();
    let status_config = StatusConfig {
        work_dir: host.work_dir.clone(),
        retry_initial: config.status_retry_initial,
        retry_max: config.status_retry_max,
    };
    let (status, recovered, status_join) = status::start(status_config, metrics.clone(), forget_tx).await?;
    if !recovered.is_empty() {
        tracing::info!(tasks = recovered.len(), "recovered pending status updates");
    }

    let containerizer = containerizer(config, host, executors.endpoint.port())?;
    let fetcher = fetch::Fetcher::new(config.artifacts.clone(), &host.work_dir, metrics.clone())?;
    let sandboxes = paths::sandboxes_root(&host.work_dir);
    let (writeback, writeback_actor) = writeback::start(&sandboxes, config.sandbox_writeback)?;
    let (gc, gc_actor) = gc::start(sandboxes, config.sandbox_gc.clone(), metrics.clone())?;
    let volumes = volumes::Volumes::open(&host.work_dir, config.host_volumes.clone())?;
    let volumes = Arc::new(volumes.with_retention(config.volume_retention));
    // Removed volumes whose retention is over (and what a crash left).
    let purged = volumes.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(VOLUME_PURGE_INTERVAL);
        loop {
            every.tick().await;
            let purged = purged.clone();
            let _ = tokio::task::spawn_blocking(move || purged.purge()).await;
        }
    });
    let deps = TableDeps {
        work_dir: host.work_dir.clone(),
        runtime_dir: host.runtime_dir.clone(),
        default_kill_grace: config.default_kill_grace,
        containerizer: containerizer.clone(),
        fetcher: Arc::new(fetcher),
        volumes,
        status: status.clone(),
        forget: forget_rx,
        agent_id,
        metrics: metrics.clone(),
        writeback,
        gc,
        checkpoints_intact: host.checkpoints_intact,
        executors,
    };
    let (table, table_join) = table::start(deps, recovered).await?;
    Ok(Tasks {
        status,
        status_join,
        containerizer,
        table,
        table_join,
        gc_actor: gc_actor.boxed(),
        writeback_actor: writeback_actor.map(FutureExt::boxed),
    })
}

/// Serves `/state`, `/metrics` and the sandboxes' files, over TLS with
/// the agent's certificate, to its masters and the administrator.
fn http_server(
    listener: TcpListener,
    transport: &Transport,
    state: http::HttpState,
    work_dir: PathBuf,
) -> Result<impl Future<Output = Result<(), AgentError>> + Send + 'static, AgentError> {
    let table = state.table.clone();
    let app = http::router(state)
        .merge(files::router(work_dir))
        .merge(exec::router(table))
        .layer(axum::middleware::from_fn(tls::only_masters));
    let server_tls = match transport.credentials() {
        Some(c) => Some(c.server_config().map_err(|e| AgentError::Security(e.to_string()))?),
        None => None,
    };
    Ok(async move {
        mezzo_proto::security::serve::serve(listener, ServeOptions::new(server_tls), app).await;
        Ok(())
    })
}

/// Runs `actor` in the set under `name`.
fn spawn_actor(
    actors: &mut JoinSet<(&'static str, Result<(), AgentError>)>,
    name: &'static str,
    actor: impl Future<Output = Result<(), AgentError>> + Send + 'static,
) {
    actors.spawn(async move { (name, actor.await) });
}

/// How often the data of removed volumes is looked at for deletion.
const VOLUME_PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits in the set for an actor that already runs as its own task; its
/// panic ends the agent like an error.
fn watch_actor(
    actors: &mut JoinSet<(&'static str, Result<(), AgentError>)>,
    name: &'static str,
    join: JoinHandle<Result<(), AgentError>>,
) {
    actors.spawn(async move { (name, join.await.unwrap_or(Err(AgentError::ActorPanicked(name)))) });
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

/// Tasks see neither this agent's work dir (other tasks' sandboxes) nor
/// its runtime dir (checkpoints); they mount their root on `runtime/root`.
fn task_view(
    host: &Host,
    shared: &[containerizer::rootfs::HostPath],
) -> Result<containerizer::rootfs::View, AgentError> {
    let mountpoint = host.runtime_dir.join("root");
    create_private_dir(&mountpoint)?;
    let resolve = |dir: &std::path::Path| std::fs::canonicalize(dir).map_err(AgentError::io("resolve", dir));
    let hide = [&host.work_dir, &host.runtime_dir]
        .into_iter()
        .map(|dir| resolve(dir))
        .collect::<Result<_, _>>()?;
    let mut host_paths = Vec::with_capacity(shared.len());
    for p in shared {
        let path = resolve(&p.path)?;
        if !path.is_dir() {
            return Err(AgentError::Isolation(format!(
                "--host-paths: {} is not a directory",
                path.display()
            )));
        }
        host_paths.push(containerizer::rootfs::HostPath { path, ..p.clone() });
    }
    Ok(containerizer::rootfs::View {
        mountpoint,
        hide,
        host_paths,
        image: None,
        mounts: Vec::new(),
    })
}

/// The image store (`<work dir>/images`), the layouts images are
/// imported from (`--image-layouts`, optional) and the registry client
/// (`--insecure-registries`, `--registry-ca`).
fn image_source(
    work_dir: &std::path::Path,
    iso: &IsolationConfig,
) -> Result<containerizer::image_task::ImageSource, AgentError> {
    if let Some(layouts) = &iso.image_layouts
        && !layouts.is_dir()
    {
        return Err(AgentError::Isolation(format!(
            "--image-layouts: {} is not a directory",
            layouts.display()
        )));
    }
    // An image larger than the whole store could never be kept: refused
    // before a byte of it is fetched.
    let store = images::Store::open(&work_dir.join("images"))
        .map_err(|e| AgentError::Isolation(e.to_string()))?
        .with_limits(images::Limits {
            max_image_bytes: iso.image_store_max_bytes,
            ..Default::default()
        });
    let puller = images::Puller::new(&iso.registries).map_err(|e| AgentError::Isolation(e.to_string()))?;
    Ok(containerizer::image_task::ImageSource {
        layouts: iso.image_layouts.clone(),
        puller,
        store: Arc::new(store),
        max_bytes: iso.image_store_max_bytes,
        leases: Default::default(),
        userns_unsupported: None,
    })
}

/// The containerizer the configuration asks for; refuses to start an
/// isolating agent that cannot isolate.
fn containerizer(config: &AgentConfig, host: &Host, executor_port: u16) -> Result<Arc<dyn Containerizer>, AgentError> {
    let work_dir = host.work_dir.as_path();
    match &config.isolation {
        Isolation::None => Ok(Arc::new(PosixContainerizer::new())),
        Isolation::Linux(iso) => {
            // Tasks run as another user (or in a user namespace): their
            // sandboxes and volumes must be reachable.
            let reachable = [
                work_dir.to_path_buf(),
                paths::sandboxes_root(work_dir),
                paths::volumes_root(work_dir),
            ];
            for dir in reachable {
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
                view: Some(task_view(host, &iso.host_paths)?),
                allow_unconfined: iso.allow_unconfined,
                images: Some(image_source(work_dir, iso)?),
                userns: iso.userns,
                loopback: loopback_filter(iso, executor_port)?,
            };
            let c = LinuxContainerizer::new(cfg).map_err(|e| AgentError::Isolation(e.to_string()))?;
            Ok(Arc::new(c))
        }
    }
}

/// The loopback filter `--task-loopback` asks for, with the executor API's
/// port (custom executors are tasks); `None` when it asks for none. An
/// agent that cannot filter refuses to start rather than leave loopback
/// open (`--task-loopback all` says to).
fn loopback_filter(
    iso: &IsolationConfig,
    executor_port: u16,
) -> Result<Option<crate::cgroups::LoopbackFilter>, AgentError> {
    let Some(mut ports) = iso.task_loopback.clone() else {
        return Ok(None);
    };
    ports.push(executor_port..=executor_port);
    crate::cgroups::LoopbackFilter::new(&ports).map(Some).map_err(|e| {
        AgentError::Isolation(format!(
            "cannot filter what tasks reach on loopback ({e}; naming the host's network namespace needs Linux 5.14); pass --task-loopback all to run without the filter"
        ))
    })
}

#[cfg(test)]
#[tokio::test]
async fn startup_warns_of_an_unresolvable_hostname_and_nothing_to_offer() {
    use mezzo_proto::resources::Resources;
    let fine = Resources::parse("cpus:1;mem:64").expect("resources");
    assert!(startup_warnings("localhost", &fine).await.is_empty());
    let warnings = startup_warnings("no-such-host.invalid", &fine).await;
    assert!(
        warnings.len() == 1 && warnings[0].contains("does not resolve") && warnings[0].contains("--hostname"),
        "{warnings:?}"
    );
    let ports_only = Resources::parse("ports:[31000-31010]").expect("resources");
    let warnings = startup_warnings("localhost", &ports_only).await;
    assert!(
        warnings.len() == 1 && warnings[0].contains("without cpus and memory"),
        "{warnings:?}"
    );
}
