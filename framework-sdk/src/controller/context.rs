//! What a reconcile is given and answers: the [`Reconciler`] trait, the
//! [`Context`] through which it launches and kills, and [`Requeue`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::observed::Task;
use crate::TaskBuilder;
use crate::offers::{Constraint, TaskRequest};

/// When to reconcile a key again, besides the changes that trigger it
/// anyway (its desired object, its tasks, a drain, offers for its
/// waiting launches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Only on a change.
    No,
    /// After this long (a backoff ending, a deadline), or sooner on a change.
    After(Duration),
}

/// The framework's logic for one kind of desired object `D`.
pub trait Reconciler<D> {
    /// Why a reconcile failed; it is logged and the key retried with
    /// backoff.
    type Error: std::fmt::Display;

    /// Brings `key` towards `desired`, given its tasks as last observed.
    /// Every task that ended since the last reconcile is in `tasks` once
    /// ([`Task::ended`]), then dropped. Changes to `desired` are written to
    /// the store. Launches asked for through `ctx` replace those of the
    /// last reconcile that still wait for offers.
    ///
    /// An `Err` undoes nothing: the changes to `desired`, the launches and
    /// kills asked for are kept, and the ends in `tasks` count as seen (the
    /// retry does not show them again). Handle ends before anything that
    /// may fail, or remember them in `desired`.
    fn reconcile(
        &mut self,
        key: &str,
        desired: &mut D,
        tasks: &[Task],
        ctx: &mut Context<'_>,
    ) -> Result<Requeue, Self::Error>;

    /// The task of a launch placed on an offer: `builder` carries its id,
    /// its resources (ports included) and its labels; `task` says where it
    /// goes and which ports it got.
    fn build(&mut self, key: &str, desired: &D, task: &Task, builder: TaskBuilder) -> TaskBuilder;
}

/// One task to start, waiting for an offer with room.
#[derive(Debug, Clone)]
pub struct Launch {
    pub(crate) name: String,
    pub(crate) request: TaskRequest,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) constraints: Vec<Constraint>,
    pub(crate) describe: String,
    pub(crate) volume: Option<VolumeMount>,
}

/// A persistent volume a launch mounts ([`Launch::volume`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    /// The volume's id.
    pub id: String,
    /// Where the task sees it (relative: beneath the sandbox).
    pub container_path: String,
    /// The agent that holds it, when known: volume ids are unique per
    /// agent only, so another agent may offer a volume of the same id.
    pub agent_id: Option<String>,
}

impl Launch {
    /// A task named `<key>.<name>` (`name` unique within the key, and
    /// never used again) needing `request`.
    pub fn new(name: impl Into<String>, request: TaskRequest) -> Launch {
        Launch {
            name: name.into(),
            request,
            labels: BTreeMap::new(),
            constraints: Vec::new(),
            describe: String::new(),
            volume: None,
        }
    }

    /// Mounts the persistent volume `id` at `container_path`: the launch
    /// is placed only on an offer that lists the volume (so on its agent,
    /// once no task uses it), whatever its constraints, and waits until
    /// one comes. Creating the volume is the framework's part
    /// ([`operations`](crate::operations)).
    pub fn volume(mut self, id: impl Into<String>, container_path: impl Into<String>) -> Launch {
        self.volume = Some(VolumeMount {
            id: id.into(),
            container_path: container_path.into(),
            agent_id: None,
        });
        self
    }

    /// With [`Self::volume`]: only the volume of that id on this agent
    /// (the one the framework made), never another agent's of the same id.
    pub fn volume_agent(mut self, agent_id: impl Into<String>) -> Launch {
        if let Some(v) = self.volume.as_mut() {
            v.agent_id = Some(agent_id.into());
        }
        self
    }

    /// The volume it mounts, if any.
    pub fn mounts(&self) -> Option<&VolumeMount> {
        self.volume.as_ref()
    }

    /// A label, kept with the task (also across a restart) and given to it.
    pub fn label(mut self, name: impl Into<String>, value: impl Into<String>) -> Launch {
        self.labels.insert(name.into(), value.into());
        self
    }

    /// Placement constraints, counted over the key's live tasks.
    pub fn constraints(mut self, constraints: Vec<Constraint>) -> Launch {
        self.constraints = constraints;
        self
    }

    /// Its name within the key.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it needs.
    pub fn request(&self) -> &TaskRequest {
        &self.request
    }

    /// Its labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// What waits, for the pending report operators read (`mezzo why`)
    /// when no offer has room.
    pub fn describe(mut self, what: impl Into<String>) -> Launch {
        self.describe = what.into();
        self
    }
}

/// What a reconcile may do besides changing its desired object.
#[derive(Debug)]
pub struct Context<'a> {
    now: Instant,
    draining: &'a BTreeMap<String, Option<SystemTime>>,
    pub(crate) launches: Vec<Launch>,
    pub(crate) kills: Vec<(String, Option<Duration>)>,
    pub(crate) forget: bool,
}

impl<'a> Context<'a> {
    /// A context at `now` with these agents draining. The controller makes
    /// one per reconcile; a framework's tests make their own to call a
    /// reconciler without I/O and read what it asked for.
    pub fn new(now: Instant, draining: &'a BTreeMap<String, Option<SystemTime>>) -> Context<'a> {
        Context {
            now,
            draining,
            launches: Vec::new(),
            kills: Vec::new(),
            forget: false,
        }
    }

    /// The controller's clock (tests drive it).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Asks for a task: it waits for an offer with room, placed by
    /// spreading over hosts within its constraints.
    pub fn launch(&mut self, launch: Launch) {
        self.launches.push(launch);
    }

    /// Stops a task (`grace` overrides its kill grace period). Sent again
    /// until its end is seen.
    pub fn kill(&mut self, task_id: impl Into<String>, grace: Option<Duration>) {
        self.kills.push((task_id.into(), grace));
    }

    /// Whether `agent_id` is being drained, and the drain's deadline.
    pub fn draining(&self, agent_id: &str) -> Option<Option<SystemTime>> {
        self.draining.get(agent_id).copied()
    }

    /// Deletes the key (its desired object and task records) once none of
    /// its tasks is left; until then it is reconciled as usual.
    pub fn forget(&mut self) {
        self.forget = true;
    }

    /// The launches asked for so far.
    pub fn launches(&self) -> &[Launch] {
        &self.launches
    }

    /// The kills asked for so far: task id and grace period.
    pub fn kills(&self) -> &[(String, Option<Duration>)] {
        &self.kills
    }

    /// Whether the key is to be forgotten.
    pub fn forgetting(&self) -> bool {
        self.forget
    }
}
