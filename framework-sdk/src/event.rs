//! What the driver tells the framework, one event at a time.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use mezzo_proto::v1;
use tokio::sync::mpsc;

/// One thing that happened to the framework. Events arrive in order, one at
/// a time, through [`Events`]. New kinds of event may be added: a match
/// needs a `_` arm.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The master (re)registered the framework. `resumed` is true when the
    /// SDK passed a framework id, i.e. this is a failover or a reconnection;
    /// the SDK then asks for an implicit reconciliation, whose answers arrive
    /// as [`Event::Update`]s, followed by [`Event::Reconciled`].
    Subscribed {
        /// The framework's id; pass it in [`SchedulerConfig::framework_id`](crate::SchedulerConfig::framework_id)
        /// to resume after a restart.
        framework_id: String,
        /// True when an existing framework was resumed.
        resumed: bool,
    },
    /// New resource offers. Accept or decline each one.
    Offers(Vec<v1::Offer>),
    /// An offer is no longer valid; accepting it would fail.
    Rescind {
        /// The offer withdrawn.
        offer_id: String,
    },
    /// Every answer of the implicit reconciliation after a resumed
    /// subscription has arrived: a task of this framework not reported
    /// since [`Event::Subscribed`] is not running anywhere. (The SDK asks
    /// again while agents are still re-registering after a master
    /// failover.) A framework that restarted should launch nothing it may
    /// already have running before this event.
    Reconciled,
    /// A task changed state. With auto-acknowledgement on, the SDK has
    /// already acknowledged it; otherwise call [`Scheduler::acknowledge`](crate::Scheduler::acknowledge).
    Update(v1::TaskStatus),
    /// An agent was lost; its tasks get their own updates.
    AgentLost {
        /// The agent lost.
        agent_id: String,
    },
    /// One of the framework's custom executors ended (its resources are
    /// free; its tasks that had not ended get their own updates).
    ExecutorLost {
        /// The agent it ran on.
        agent_id: String,
        /// The executor that ended.
        executor_id: String,
        /// Its wait(2) status, when it exited by itself.
        status: Option<i32>,
    },
    /// Bytes one of the framework's custom executors sent (best effort).
    Message {
        /// The agent the executor runs on.
        agent_id: String,
        /// The executor that sent it.
        executor_id: String,
        /// What it sent.
        data: Vec<u8>,
    },
    /// An operator drains an agent for maintenance (`draining`), or ended
    /// the drain: the agent gets no new offers, and what still runs on it
    /// at `deadline` is killed (with reason `REASON_AGENT_DRAINING`). A
    /// framework that cares about availability starts replacements
    /// elsewhere and stops its tasks there itself, at its own pace. Sent
    /// when the drain changes and again after every (re)subscription
    /// while it lasts.
    AgentDraining {
        /// The agent drained.
        agent_id: String,
        /// False when the drain ended (the agent was reactivated).
        draining: bool,
        /// When the agent's remaining tasks are killed; `None` when they
        /// may run to completion.
        deadline: Option<std::time::SystemTime>,
    },
    /// Tasks of this framework are to be preempted for a task of a higher
    /// priority: killed at `deadline` (`TASK_KILLED`, `REASON_PREEMPTED`)
    /// unless they end first.
    Preempting(v1::Preemption),
    /// The connection to the master was lost. The SDK is reconnecting;
    /// calls return [`SdkError::NotConnected`](crate::SdkError::NotConnected) until the next
    /// [`Event::Subscribed`]. Outstanding offers should be considered gone.
    Disconnected {
        /// What happened, for logs.
        reason: String,
    },
    /// The master removed the framework (or refused it for good). The driver
    /// has stopped and the channel closes after this event.
    Error {
        /// The master's explanation.
        message: String,
    },
}

/// The receiving end of the driver's events.
///
/// Events are delivered through a bounded channel: a framework that stops
/// reading slows the driver down rather than losing events.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
    unread: Unread,
}

impl Events {
    pub(crate) fn new(rx: mpsc::Receiver<Event>, unread: Unread) -> Self {
        Events { rx, unread }
    }

    /// The next event, or `None` once the driver has stopped. Offers
    /// rescinded while they waited in the channel are left out (with their
    /// [`Event::Rescind`]): a framework that falls behind is not handed
    /// offers it could only be refused.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.unread.read(self.rx.recv().await?) {
                return Some(event);
            }
        }
    }

    /// The next event if one is already waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.unread.read(self.rx.try_recv().ok()?) {
                return Some(event);
            }
        }
    }
}

/// The offers in the events channel that the framework has not read yet,
/// and those of them rescinded since. Shared by the driver, which notes
/// offers before it queues them and asks here whether a rescind still
/// needs passing on, and [`Events`], which takes the rescinded ones out.
/// Both sets hold only offers in the channel.
#[derive(Debug, Clone, Default)]
pub(crate) struct Unread(Arc<Mutex<UnreadOffers>>);

#[derive(Debug, Default)]
struct UnreadOffers {
    queued: HashSet<String>,
    rescinded: HashSet<String>,
}

impl Unread {
    fn lock(&self) -> std::sync::MutexGuard<'_, UnreadOffers> {
        // The sets stay consistent whatever panicked while holding them.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The driver is about to queue `offers`.
    pub(crate) fn queue(&self, offers: &[v1::Offer]) {
        let mut u = self.lock();
        u.queued.extend(offers.iter().map(|o| o.offer_id.clone()));
    }

    /// The master rescinded `offer`: true if the framework still has to be
    /// told (it may have read the offer); false if the offer is still
    /// queued, and is now taken out when it is read.
    pub(crate) fn rescind(&self, offer: &str) -> bool {
        let mut u = self.lock();
        if u.queued.remove(offer) {
            u.rescinded.insert(offer.to_owned());
            false
        } else {
            true
        }
    }

    /// `event` as the framework reads it: offers rescinded while queued
    /// left out, nothing if none is left.
    fn read(&self, event: Event) -> Option<Event> {
        let Event::Offers(mut offers) = event else {
            return Some(event);
        };
        let mut u = self.lock();
        offers.retain(|o| {
            u.queued.remove(&o.offer_id);
            !u.rescinded.remove(&o.offer_id)
        });
        (!offers.is_empty()).then_some(Event::Offers(offers))
    }
}
