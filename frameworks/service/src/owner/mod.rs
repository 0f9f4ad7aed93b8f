//! The owner task: the only holder of the services' state. The loop
//! shape is the SDK's controller ([`mezzo_sdk::controller`]): each
//! service's record is a desired object in the key-value namespace, its
//! instances are the controller's observed tasks, and its planning is the
//! controller's reconcile (`reconcile.rs`), with requeue.
//!
//! ```text
//!  SDK Events ───────────┐   (health verdicts arrive as status updates: health.rs)
//!  API Cmd (mpsc 256) ───┼──▶ owner: Controller<ServiceRecord> + Services ──▶ Scheduler calls, Kv writes
//!  tick (200 ms) ────────┘
//! ```
//!
//! One file per concern: `reconcile.rs` (the controller's callback: the
//! planner's step as kills and launches), `events.rs` (what events,
//! instance ends and health verdicts mean to a service), `task.rs` (an
//! instance's task), `commands.rs` (the API's commands) and `state.rs`
//! (what is held per service beside the controller) and `volumes.rs`
//! (stateful services' volumes, made from offers before the controller
//! sees them).

mod commands;
mod events;
mod reconcile;
mod state;
mod task;
mod volumes;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use mezzo_sdk::controller::Controller;
use mezzo_sdk::{Event, Events, Role, Scheduler};
use tokio::sync::{mpsc, oneshot};

use self::state::Services;
use crate::error::ApiError;
use crate::record::{self, LegacyInstance, ServiceRecord};
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

/// How often the controller runs its periodic step.
const TICK: Duration = Duration::from_millis(200);

/// The owner task's state.
pub(crate) struct Owner {
    ctl: Controller<ServiceRecord>,
    svc: Services,
    work_dir: PathBuf,
    /// For the Accepts that make volumes.
    sched: Scheduler,
    /// The framework's role: volumes and reservations are made for it.
    role: Role,
    /// Instances of records from before the controller were handed over.
    legacy_done: bool,
}

impl Owner {
    pub(crate) fn new(sched: Scheduler, work_dir: PathBuf, role: Role) -> Owner {
        Owner {
            ctl: Controller::new(&sched, record::PREFIX),
            svc: Services::new(),
            work_dir,
            sched,
            role,
            legacy_done: false,
        }
    }

    /// Runs until the driver stops. Returns the master's reason when it
    /// removed the framework.
    pub(crate) async fn run(mut self, mut events: Events, mut cmds: mpsc::Receiver<Cmd>) -> Option<String> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    None => return None,
                    Some(Event::Error { message }) => return Some(message),
                    Some(Event::Offers(offers)) => {
                        let offers = self.make_volumes(offers).await;
                        self.ctl.event(Event::Offers(offers), &mut self.svc).await;
                        self.take_over_legacy();
                    }
                    Some(ev) => {
                        self.on_event(&ev);
                        self.ctl.event(ev, &mut self.svc).await;
                        self.take_over_legacy();
                    }
                },
                Some(cmd) = cmds.recv() => self.on_cmd(cmd).await,
                _ = tick.tick() => {
                    self.ctl.tick(&mut self.svc).await;
                    self.take_over_legacy();
                }
            }
        }
    }

    /// Hands the instances of records written before the controller kept
    /// them over to it, once loaded (before any reconcile: none runs until
    /// the master has said which tasks run), so that an upgrade keeps its
    /// instances instead of stopping them as tasks no record holds.
    fn take_over_legacy(&mut self) {
        if self.legacy_done || !self.ctl.is_loaded() {
            return;
        }
        self.legacy_done = true;
        let older: Vec<(String, BTreeMap<String, LegacyInstance>)> = self
            .ctl
            .desired()
            .filter(|(_, r)| !r.legacy.is_empty())
            .map(|(k, r)| (k.to_owned(), r.legacy.clone()))
            .collect();
        for (name, instances) in older {
            tracing::info!(service = %name, instances = instances.len(), "taking over instances of an older record");
            for (id, i) in instances {
                self.ctl.hold(state::legacy_task(&name, id, i));
            }
            self.ctl.modify(&name, |r| r.legacy.clear());
        }
    }
}
