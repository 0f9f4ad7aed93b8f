//! Long-running services on Mezzo, in the manner of Marathon or a Nomad
//! service job, built only on the public SDK ([`mezzo_sdk`]).
//!
//! A service is declared in a TOML file ([`spec`]): how many instances,
//! the command, resources, named ports, environment, a health check,
//! placement constraints, restart backoff and rolling-update limits. The
//! framework keeps that many healthy instances running: it replaces
//! instances that fail, are killed, fail their health checks or are lost
//! with their agent; it replaces a version by a rolling update within
//! `max_surge` / `max_unavailable` and rolls back automatically when the
//! new version's instances fail; and it lists the healthy instances'
//! `host:port` for discovery.
//!
//! Everything it must not forget — service versions, the deployment and
//! which task is which instance — lives in the framework's key-value
//! namespace in the masters' replicated registry ([`record`]); only the
//! framework id is kept in a local file, to resume the framework after a
//! restart. A restarted framework reads its records, reconciles every
//! instance with the master and adopts the tasks still running, so it
//! starts no duplicates.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mezzo_service::ServeError> {
//! let config = mezzo_service::Config::new(vec!["127.0.0.1:5050".into()], "127.0.0.1:5090".parse().unwrap(), "/tmp/svc".into());
//! let running = mezzo_service::serve(config).await?;
//! println!("API on http://{}", running.addr);
//! running.wait().await
//! # }
//! ```
//!
//! Inside, one owner task ([`owner`]) holds all state and talks to the
//! HTTP API ([`api`]) and the health checkers ([`health`]) by channels.
//! Its loop is the SDK's controller ([`mezzo_sdk::controller`]): a
//! service's record is the desired object, its instances are the observed
//! tasks, and the reconcile turns the deployment decisions of a pure
//! function ([`plan`]) into launches and kills.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod api;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod health;
mod owner;
pub mod plan;
pub mod record;
pub mod spec;
pub mod view;
pub mod volumes;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mezzo_sdk::{Scheduler, SchedulerConfig};
use tokio::sync::mpsc;
use tracing::info;

pub use error::{ApiError, ServeError};
pub use spec::ServiceSpec;

/// The framework's name in the cluster.
pub const FRAMEWORK_NAME: &str = "mezzo-service";
/// The file in the work dir that keeps the framework id.
const ID_FILE: &str = "framework_id";

/// How to run the framework.
#[derive(Debug, Clone)]
pub struct Config {
    /// Master addresses.
    pub masters: Vec<String>,
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// Keeps the framework id (everything else is in the masters).
    pub work_dir: PathBuf,
    /// How long the masters keep the services' tasks while the framework
    /// is away (default one week).
    pub failover_timeout: std::time::Duration,
    /// The framework's role (default `*`). Stateful services (with a
    /// `volume`) need a role of their own: reservations and volumes are
    /// made for it (docs/service.md, "Persistent volumes").
    pub role: String,
}

impl Config {
    /// A config with the default failover timeout.
    pub fn new(masters: Vec<String>, listen: SocketAddr, work_dir: PathBuf) -> Config {
        Config {
            masters,
            listen,
            work_dir,
            failover_timeout: mezzo_sdk::DEFAULT_FAILOVER_TIMEOUT,
            role: "*".into(),
        }
    }
}

/// A running framework.
#[derive(Debug)]
pub struct Running {
    /// The HTTP API's address.
    pub addr: SocketAddr,
    owner: tokio::task::JoinHandle<Option<String>>,
    http: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits until the framework stops (the master removed it).
    pub async fn wait(self) -> Result<(), ServeError> {
        let r = self.owner.await;
        self.http.abort();
        match r {
            Ok(Some(why)) => Err(ServeError::Removed(why)),
            _ => Ok(()),
        }
    }
}

/// Starts the framework: subscribes (resuming the framework id kept in
/// the work dir), starts the owner and serves the HTTP API.
pub async fn serve(config: Config) -> Result<Running, ServeError> {
    let dir_err = |source| ServeError::WorkDir {
        path: config.work_dir.clone(),
        source,
    };
    std::fs::create_dir_all(&config.work_dir).map_err(dir_err)?;
    let token = mezzo_sdk::api_token::create(&config.work_dir).map_err(dir_err)?;
    let framework_id = match std::fs::read_to_string(config.work_dir.join(ID_FILE)) {
        Ok(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(dir_err(e)),
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: config.listen,
        source,
    })?;

    let role = mezzo_sdk::Role::parse(&config.role).map_err(|e| ServeError::Role(e.to_string()))?;
    let mut sc = SchedulerConfig::new(config.masters.clone(), FRAMEWORK_NAME);
    sc.framework.roles = vec![role.to_string()];
    sc.framework.failover_timeout_secs = config.failover_timeout.as_secs_f64();
    sc.framework_id = framework_id.clone();
    info!(resume = ?framework_id, "starting the service framework");
    // The masters' HTTP API, with the framework's own credential.
    let master_http = mezzo_sdk::MasterHttp::new(&sc).map_err(|e| ServeError::Masters(e.to_string()))?;
    let (sched, events) = Scheduler::start(sc);

    let (cmd_tx, cmd_rx) = mpsc::channel(256);
    let owner = owner::Owner::new(sched, config.work_dir.clone(), role);
    let owner = tokio::spawn(owner.run(events, cmd_rx));
    let app = api::router(cmd_tx, master_http, token);
    let http = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the HTTP API stopped: {e}");
        }
    });
    Ok(Running { addr, owner, http })
}

/// Writes the framework id atomically (tmp file, fsync, rename).
pub(crate) fn save_framework_id(dir: &Path, id: &str) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(ID_FILE);
    if std::fs::read_to_string(&path).is_ok_and(|s| s.trim() == id) {
        return Ok(());
    }
    let tmp = dir.join(format!("{ID_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(id.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}
