//! The driver task: subscribe, serve the event stream, reconnect.
//!
//! One task owns the framework id, the master rotation and the backoff.
//! Each round is one subscription attempt ([`Driver::subscribe`]) and, when
//! it succeeds, one session ([`Driver::serve`]) that lasts until the stream
//! ends, fails, goes silent or the master removes the framework.

use std::time::Duration;

use mezzo_proto::v1;
use mezzo_proto::v1::event::Event as Wire;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::Streaming;
use tracing::{debug, info, warn};

use super::acks;
use super::connect::{self, Masters, is_fatal_subscribe_error};
use crate::calls::{Calls, Client, Command, Link, Session, leader_hint};
use crate::config::SchedulerConfig;
use crate::event::{Event, Unread};

/// A session that lasted this long was healthy: the next reconnection
/// starts again from the smallest backoff.
const STABLE_SESSION: Duration = Duration::from_secs(1);
/// Pause before trying the next master of the list after one failed (a
/// full round of failures backs off instead).
const NEXT_MASTER: Duration = Duration::from_millis(50);
/// How late the heartbeat limit's timer may fire before it says more about
/// this process than about the master: a runtime that keeps up fires it
/// within a millisecond or two.
const STARVED: Duration = Duration::from_millis(100);

/// Silence tolerated when the master announces no heartbeat interval.
const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(45);
/// The master is declared dead after this many missed heartbeats...
const MISSED_HEARTBEATS: f64 = 3.0;
/// ...but never sooner than this.
const MIN_DEAD_AFTER: Duration = Duration::from_secs(1);

/// Starts the driver task. It ends on a stop request, when both the handles
/// and the events receiver are gone, or when the master removes the
/// framework; it then marks the session stopped and closes the events.
pub(crate) fn spawn(
    config: SchedulerConfig,
    calls: Calls,
    acker: acks::Acker,
    session: watch::Sender<Session>,
    (events, unread): (mpsc::Sender<Event>, Unread),
    cmds: mpsc::Receiver<Command>,
    stop: watch::Receiver<bool>,
) {
    let stop_requested = stop_signal(stop, events.clone());
    let (transport, masters) = match config.resolve_transport() {
        Ok((t, m)) => (Ok(t), m),
        Err(why) => (Err(why), config.masters.clone()),
    };
    let mut driver = Driver {
        transport,
        framework: config.framework,
        framework_id: config.framework_id.filter(|id| !id.is_empty()),
        auto_ack: config.auto_acknowledge,
        acker,
        call_timeout: config.call_timeout,
        masters: Masters::new(masters),
        backoff: connect::reconnect_backoff(config.reconnect_backoff_max),
        calls,
        session,
        events,
        unread,
        cmds,
    };
    tokio::spawn(async move {
        tokio::select! {
            () = driver.run() => {}
            () = stop_requested => debug!("scheduler driver stopped on request"),
        }
        driver.session.send_modify(|s| s.link = Link::Stopped);
        // Dropping `driver` drops the last events sender: the channel closes.
    });
}

/// Resolves on an explicit stop, or once every [`Scheduler`](crate::Scheduler)
/// handle and the [`Events`](crate::Events) receiver are dropped.
async fn stop_signal(mut stop: watch::Receiver<bool>, events: mpsc::Sender<Event>) {
    if stop.wait_for(|stop| *stop).await.is_ok() {
        return;
    }
    events.closed().await;
}

/// How one subscription attempt went.
enum Attempt {
    Subscribed(Box<Live>),
    /// Not the leader; try this address.
    Redirect(String),
    /// Worth trying again (elsewhere, later).
    Retry(String),
    /// The master refused the framework for good.
    Fatal(String),
}

/// How a session ended.
enum Outcome {
    Lost(String),
    Fatal(String),
}

/// A subscription that has received its `Subscribed` event.
struct Live {
    master: String,
    client: Client,
    stream: Streaming<v1::Event>,
    framework_id: String,
    dead_after: Duration,
}

struct Driver {
    /// How to reach the masters, or why that is unknown (fatal at once).
    transport: Result<mezzo_proto::security::Transport, String>,
    framework: v1::FrameworkInfo,
    /// Passed on every subscription once known, so the framework resumes.
    framework_id: Option<String>,
    auto_ack: bool,
    /// The acknowledger ([`acks::Acker`]), shared with the handles.
    acker: acks::Acker,
    call_timeout: Duration,
    masters: Masters,
    backoff: mezzo_proto::backoff::Backoff,
    /// The same call path as the framework's, for acks and reconciliation.
    calls: Calls,
    session: watch::Sender<Session>,
    events: mpsc::Sender<Event>,
    /// Offers queued in `events` and not read yet (a rescind takes one out).
    unread: Unread,
    cmds: mpsc::Receiver<Command>,
}

impl Driver {
    async fn run(&mut self) {
        let mut redirected = false;
        let mut failed_in_round = 0usize;
        loop {
            let Some(addr) = self.masters.current().map(str::to_owned) else {
                self.emit(Event::Error {
                    message: "no master address configured".to_owned(),
                })
                .await;
                return;
            };
            let attempt = self.subscribe(&addr).await;
            let follow_at_once = matches!(attempt, Attempt::Redirect(_)) && !redirected;
            redirected = matches!(attempt, Attempt::Redirect(_));
            match attempt {
                Attempt::Subscribed(live) => {
                    failed_in_round = 0;
                    let began = Instant::now();
                    match self.serve(live).await {
                        Outcome::Fatal(message) => return self.fail(message).await,
                        Outcome::Lost(reason) => {
                            warn!(%reason, "lost the master; reconnecting");
                            self.session.send_modify(|s| s.link = Link::Connecting);
                            self.emit(Event::Disconnected { reason }).await;
                            if began.elapsed() >= STABLE_SESSION {
                                self.backoff.reset();
                            }
                        }
                    }
                }
                Attempt::Redirect(leader) => {
                    info!(from = %addr, to = %leader, "following the leader");
                    self.masters.follow(leader);
                }
                Attempt::Retry(why) => {
                    warn!(master = %addr, %why, "subscription failed");
                    self.masters.failed();
                    failed_in_round += 1;
                    // Try the rest of the list quickly (a dead master refuses
                    // at once); back off once all of them failed.
                    if failed_in_round < self.masters.len() {
                        tokio::time::sleep(NEXT_MASTER).await;
                        continue;
                    }
                    failed_in_round = 0;
                }
                Attempt::Fatal(message) => return self.fail(message).await,
            }
            if !follow_at_once {
                tokio::time::sleep(self.backoff.next_delay()).await;
            }
        }
    }

    /// Connects to `addr`, subscribes and waits for the `Subscribed` event.
    async fn subscribe(&mut self, addr: &str) -> Attempt {
        let transport = match &self.transport {
            Ok(t) => t,
            Err(why) => return Attempt::Fatal(why.clone()),
        };
        let mut client = match connect::connect(addr, transport).await {
            Ok(client) => client,
            Err(why) => return Attempt::Retry(why),
        };
        let request = v1::SubscribeRequest {
            framework: Some(self.framework.clone()),
            framework_id: self.framework_id.clone().unwrap_or_default(),
            suppressed_roles: self.calls.suppressed_roles(),
        };
        let mut stream = match tokio::time::timeout(self.call_timeout, client.subscribe(request)).await {
            Err(_) => return Attempt::Retry(format!("{addr}: no answer to Subscribe")),
            Ok(Err(status)) => return classify(addr, &status),
            Ok(Ok(response)) => response.into_inner(),
        };
        let first = match tokio::time::timeout(self.call_timeout, stream.message()).await {
            Err(_) => return Attempt::Retry(format!("{addr}: no Subscribed event")),
            Ok(Err(status)) => return classify(addr, &status),
            Ok(Ok(None)) => return Attempt::Retry(format!("{addr}: stream closed before Subscribed")),
            Ok(Ok(Some(event))) => event.event,
        };
        match first {
            Some(Wire::Subscribed(s)) if !s.framework_id.is_empty() => Attempt::Subscribed(Box::new(Live {
                master: addr.to_owned(),
                client,
                stream,
                framework_id: s.framework_id,
                dead_after: dead_after(s.heartbeat_interval_secs),
            })),
            Some(Wire::Error(e)) => Attempt::Fatal(e.message),
            _ => Attempt::Retry(format!("{addr}: the first event was not Subscribed")),
        }
    }

    /// Publishes the connection, then relays events until the session ends.
    async fn serve(&mut self, live: Box<Live>) -> Outcome {
        let Live {
            master,
            client,
            mut stream,
            framework_id,
            dead_after,
        } = *live;
        let resumed = self.framework_id.is_some();
        self.framework_id = Some(framework_id.clone());
        // Hints queued during a previous session are stale.
        while self.cmds.try_recv().is_ok() {}
        self.session.send_modify(|s| {
            s.framework_id = Some(framework_id.clone());
            s.link = Link::Connected {
                client,
                master: master.clone(),
            };
        });
        info!(%master, %framework_id, resumed, "subscribed");
        self.emit(Event::Subscribed { framework_id, resumed }).await;
        if resumed {
            acks::spawn_implicit_reconcile(&self.calls);
        }

        let mut deadline = Instant::now() + dead_after;
        // Whether the limit was moved once already because its timer fired
        // late; cleared by the next event.
        let mut extended = false;
        loop {
            tokio::select! {
                biased;
                message = stream.message() => match message {
                    Ok(Some(event)) => {
                        if let Some(outcome) = self.dispatch(event).await {
                            return outcome;
                        }
                        // Silence counts from here: handing the event over
                        // waits while the app's queue is full, and a master
                        // is not silent for the time its framework did not
                        // listen (it found nothing new the moment it did,
                        // and reconnected for nothing).
                        deadline = Instant::now() + dead_after;
                        extended = false;
                    }
                    Ok(None) => return Outcome::Lost(format!("{master} closed the event stream")),
                    Err(status) => {
                        if let Some(leader) = leader_hint(&status) {
                            self.masters.follow(leader);
                        }
                        return Outcome::Lost(format!("event stream from {master} failed: {}", status.message()));
                    }
                },
                Some(Command::FollowLeader(leader)) = self.cmds.recv() => {
                    if leader != master {
                        self.masters.follow(leader.clone());
                        return Outcome::Lost(format!("{master} is not the leader; following {leader}"));
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    // A timer this late means this process could not run
                    // (its cores busy elsewhere): what the master sent
                    // meanwhile may still be unread in the connection.
                    // Listen once more before blaming the master.
                    let late = Instant::now().saturating_duration_since(deadline);
                    if late >= STARVED && !extended {
                        debug!(%master, ?late, "the heartbeat limit's timer fired late: listening once more");
                        deadline = Instant::now() + dead_after;
                        extended = true;
                        continue;
                    }
                    return Outcome::Lost(format!("no heartbeat from {master} for {dead_after:?}"));
                }
            }
        }
    }

    /// Turns one wire event into an app event; `Some` ends the session.
    async fn dispatch(&mut self, event: v1::Event) -> Option<Outcome> {
        match event.event? {
            Wire::Heartbeat(_) => {}
            Wire::Subscribed(_) => debug!("ignoring a repeated Subscribed event"),
            Wire::Offers(o) => {
                self.unread.queue(&o.offers);
                self.emit(Event::Offers(o.offers)).await;
            }
            Wire::Rescind(r) => {
                if self.unread.rescind(&r.offer_id) {
                    self.emit(Event::Rescind { offer_id: r.offer_id }).await;
                }
            }
            Wire::Failure(f) if f.executor_id.is_empty() => self.emit(Event::AgentLost { agent_id: f.agent_id }).await,
            Wire::Failure(f) => {
                let ev = Event::ExecutorLost {
                    agent_id: f.agent_id,
                    executor_id: f.executor_id,
                    status: f.status,
                };
                self.emit(ev).await
            }
            Wire::Message(m) => {
                let ev = Event::Message {
                    agent_id: m.agent_id,
                    executor_id: m.executor_id,
                    data: m.data,
                };
                self.emit(ev).await
            }
            Wire::Reconciled(_) => self.emit(Event::Reconciled).await,
            Wire::Preemption(p) => self.emit(Event::Preempting(p)).await,
            Wire::AgentDrain(d) => {
                let deadline = d
                    .deadline
                    .and_then(|t| std::time::Duration::try_from_secs_f64(t).ok())
                    .map(|t| std::time::UNIX_EPOCH + t);
                let ev = Event::AgentDraining {
                    agent_id: d.agent_id,
                    draining: d.draining,
                    deadline,
                };
                self.emit(ev).await
            }
            Wire::Update(u) => {
                let status = u.status?;
                // Queued before the event is handed over (the same promise:
                // an update in the channel is not redelivered), so that a
                // teardown the framework makes on seeing it waits for it.
                if self.auto_ack && acks::needs_ack(&status) {
                    self.acker.ack(status.clone());
                }
                self.emit(Event::Update(status)).await;
            }
            Wire::Error(e) => return Some(Outcome::Fatal(e.message)),
        }
        None
    }

    /// Hands an event to the framework, waiting while its channel is full.
    async fn emit(&self, event: Event) {
        if self.events.send(event).await.is_err() {
            debug!("events receiver dropped; event discarded");
        }
    }

    /// The framework is gone for good: tell the app, then end the driver.
    async fn fail(&mut self, message: String) {
        warn!(%message, "the master removed the framework; stopping");
        self.session.send_modify(|s| s.link = Link::Stopped);
        self.emit(Event::Error { message }).await;
    }
}

/// Sorts a refused subscription into redirect, fatal or retry.
fn classify(addr: &str, status: &tonic::Status) -> Attempt {
    if let Some(leader) = leader_hint(status) {
        Attempt::Redirect(leader)
    } else if is_fatal_subscribe_error(status.code()) {
        Attempt::Fatal(status.message().to_owned())
    } else {
        Attempt::Retry(format!("{addr}: {:?}: {}", status.code(), status.message()))
    }
}

/// Silence after which the master is presumed dead: three missed
/// heartbeats, at least one second.
fn dead_after(heartbeat_interval_secs: f64) -> Duration {
    if !(heartbeat_interval_secs.is_finite() && heartbeat_interval_secs > 0.0) {
        return DEFAULT_DEAD_AFTER;
    }
    Duration::try_from_secs_f64(heartbeat_interval_secs * MISSED_HEARTBEATS)
        .unwrap_or(DEFAULT_DEAD_AFTER)
        .max(MIN_DEAD_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_after_is_three_heartbeats_at_least_a_second() {
        assert_eq!(dead_after(15.0), Duration::from_secs(45));
        assert_eq!(dead_after(0.1), MIN_DEAD_AFTER);
        assert_eq!(dead_after(0.0), DEFAULT_DEAD_AFTER);
        assert_eq!(dead_after(f64::NAN), DEFAULT_DEAD_AFTER);
        assert_eq!(dead_after(f64::MAX), DEFAULT_DEAD_AFTER);
    }
}
