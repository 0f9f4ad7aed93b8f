//! The owner task: the only holder of the services' state. It takes SDK
//! events, API commands, health reports and a tick, asks [`crate::plan`]
//! what to do, and does it: accepts offers, kills tasks, writes records to
//! the key-value namespace.
//!
//! ```text
//!  SDK Events ───────────┐
//!  API Cmd (mpsc 256) ───┼──▶ owner: services (records + live state) ──▶ Scheduler calls, Kv writes
//!  health Report (1024) ─┤          ▲ spawns one checker per running instance (health.rs)
//!  tick (200 ms) ────────┘
//! ```
//!
//! One file per concern, each adding methods to [`Owner`]: `events.rs`
//! (SDK events, health reports), `tick.rs` (the periodic step and the
//! planner), `launch.rs` (placing and launching instances), `kill.rs`
//! (stopping them), `commands.rs` (the API's commands), `store.rs` (the
//! records in the key-value namespace) and `state.rs` (what is held per
//! service).

mod commands;
mod events;
mod kill;
mod launch;
mod state;
mod store;
mod tick;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use mezzo_sdk::{Event, Events, Kv, Scheduler};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use self::state::Svc;
use crate::error::ApiError;
use crate::health;
use crate::spec::ServiceSpec;
use crate::view::{DeployReply, Endpoint, ServiceStatus, Summary};

/// A reply channel.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// What the API asks of the owner.
#[derive(Debug)]
pub(crate) enum Cmd {
    Deploy(Box<ServiceSpec>, Reply<DeployReply>),
    Scale(String, u32, Reply<Summary>),
    Restart(String, Reply<DeployReply>),
    Rollback(String, Reply<DeployReply>),
    Remove(String, Reply<Summary>),
    Status(String, Reply<ServiceStatus>),
    List(Reply<Vec<Summary>>),
    Endpoints(String, Reply<Vec<Endpoint>>),
}

/// How often the owner runs its periodic step.
const TICK: Duration = Duration::from_millis(200);

/// The owner task's state.
pub(crate) struct Owner {
    sched: Scheduler,
    kv: Kv,
    work_dir: PathBuf,
    http: reqwest::Client,
    services: BTreeMap<String, Svc>,
    loaded: bool,
    /// A pending report stands at the masters (cleared once all fit).
    pending_reported: bool,
    reports_tx: mpsc::Sender<health::Report>,
    last_revive: Option<Instant>,
    last_reconcile: Option<Instant>,
    started: Instant,
    draining: state::Draining,
}

impl Owner {
    pub(crate) fn new(sched: Scheduler, work_dir: PathBuf, reports_tx: mpsc::Sender<health::Report>) -> Owner {
        Owner {
            kv: sched.kv(),
            sched,
            work_dir,
            http: {
                mezzo_sdk::ensure_tls_provider();
                reqwest::Client::new()
            },
            services: BTreeMap::new(),
            loaded: false,
            pending_reported: false,
            reports_tx,
            last_revive: None,
            last_reconcile: None,
            started: Instant::now(),
            draining: state::Draining::new(),
        }
    }

    /// Runs until the driver stops. Returns the master's reason when it
    /// removed the framework.
    pub(crate) async fn run(
        mut self,
        mut events: Events,
        mut cmds: mpsc::Receiver<Cmd>,
        mut reports: mpsc::Receiver<health::Report>,
    ) -> Option<String> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    None => return None,
                    Some(Event::Error { message }) => return Some(message),
                    Some(ev) => self.on_event(ev).await,
                },
                Some(cmd) = cmds.recv() => self.on_cmd(cmd).await,
                Some(r) = reports.recv() => self.on_health(r),
                _ = tick.tick() => self.on_tick().await,
            }
        }
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }
}
