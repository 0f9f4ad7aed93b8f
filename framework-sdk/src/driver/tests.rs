//! The driver against an in-process fake master (the generated `Scheduler`
//! service on 127.0.0.1:0). Each test names the behaviour of the SDK brief
//! it checks.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mezzo_proto::v1;
use mezzo_proto::v1::event::Event as Wire;
use mezzo_proto::v1::scheduler_server::{Scheduler as SchedulerService, SchedulerServer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Code, Request, Response, Status};

use crate::{Event, Events, Scheduler, SchedulerConfig, SdkError};

const WAIT: Duration = Duration::from_secs(10);

/// What the fake master saw, and how it behaves.
#[derive(Default)]
struct Seen {
    subscribes: Vec<v1::SubscribeRequest>,
    /// Every acknowledgement, a batch's entries one by one.
    acks: Vec<v1::AcknowledgeRequest>,
    /// Acknowledge calls (a batch is one).
    ack_calls: usize,
    /// Each Acknowledge call takes this long to answer.
    ack_delay: Duration,
    /// Acknowledge calls answered (after `ack_delay`).
    acks_answered: usize,
    /// How many Acknowledge calls had been answered when Teardown was called.
    acks_at_teardown: Option<usize>,
    reconciles: Vec<v1::ReconcileRequest>,
    accepts: Vec<v1::AcceptRequest>,
    declines: Vec<v1::DeclineRequest>,
    /// Teardown calls.
    teardowns: usize,
    /// Answer this many Teardown calls without removing the framework (a
    /// leader that failed before committing the removal).
    ignore_teardowns: usize,
    /// The removal commits this long after the teardown is taken; a
    /// teardown meanwhile is refused as a real master refuses it (the
    /// framework no longer holds a subscription).
    slow_removal: Option<Duration>,
    removing: bool,
    /// The teardown call is answered (and the removal made) only after
    /// this long: longer than a call's time limit, as on a loaded master.
    slow_teardown_answer: Option<Duration>,
    /// Sender of the open event stream; dropping it ends the stream.
    stream: Option<mpsc::Sender<Result<v1::Event, Status>>>,
    /// Announced heartbeat interval (no heartbeat is ever sent).
    heartbeat_secs: f64,
    /// Refuse subscriptions with UNAVAILABLE, naming this leader if set.
    refuse: Option<Option<String>>,
    /// Answer Revive with UNAVAILABLE naming this leader.
    revive_redirect: Option<String>,
    /// Answer this many implicit reconciliations with UNAVAILABLE (agents
    /// still re-registering), then the rest with `Reconciled`.
    reconcile_refusals: usize,
    /// With a store, the key-value calls read and write it; without, they
    /// answer fixed values.
    store: Option<std::collections::BTreeMap<String, Vec<u8>>>,
    /// Store writes and accepts, in order: `put KEY`, `delete KEY`, `accept`.
    log: Vec<String>,
    /// Store puts of these keys are refused (UNAVAILABLE) and not logged.
    refuse_puts: std::collections::BTreeSet<String>,
}

#[derive(Clone, Default)]
struct FakeMaster(Arc<Mutex<Seen>>);

impl FakeMaster {
    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.0.lock().expect("fake master lock")
    }

    async fn serve(self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SchedulerServer::new(self))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        addr
    }

    async fn push(&self, event: Wire) {
        let tx = self.seen().stream.clone().expect("a subscriber");
        tx.send(Ok(v1::Event { event: Some(event) }))
            .await
            .expect("stream open");
    }

    fn drop_stream(&self) {
        self.seen().stream = None;
    }
}

fn ok() -> Result<Response<v1::CallResponse>, Status> {
    Ok(Response::new(v1::CallResponse {}))
}

#[tonic::async_trait]
impl SchedulerService for FakeMaster {
    type SubscribeStream = ReceiverStream<Result<v1::Event, Status>>;

    async fn subscribe(&self, req: Request<v1::SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = req.into_inner();
        let mut seen = self.seen();
        if let Some(leader) = &seen.refuse {
            let mut status = Status::unavailable("not the leader");
            if let Some(leader) = leader {
                status
                    .metadata_mut()
                    .insert("mezzo-leader", leader.parse().expect("ascii address"));
            }
            return Err(status);
        }
        let framework_id = if req.framework_id.is_empty() {
            "fw-1".to_owned()
        } else {
            req.framework_id.clone()
        };
        let (tx, rx) = mpsc::channel(16);
        let subscribed = Wire::Subscribed(v1::Subscribed {
            framework_id,
            heartbeat_interval_secs: seen.heartbeat_secs,
            master_id: "fake".into(),
        });
        tx.try_send(Ok(v1::Event {
            event: Some(subscribed),
        }))
        .expect("fresh channel");
        seen.subscribes.push(req);
        seen.stream = Some(tx);
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn accept(&self, req: Request<v1::AcceptRequest>) -> Result<Response<v1::CallResponse>, Status> {
        let req = req.into_inner();
        // Offers whose id ends in -9 are unknown (rescinded); others taken.
        let refused = req.offer_ids.iter().any(|o| o.ends_with("-9"));
        let mut seen = self.seen();
        seen.log.push("accept".into());
        seen.accepts.push(req);
        drop(seen);
        if refused {
            return Err(Status::invalid_argument("unknown offer o-9"));
        }
        ok()
    }

    async fn decline(&self, req: Request<v1::DeclineRequest>) -> Result<Response<v1::CallResponse>, Status> {
        self.seen().declines.push(req.into_inner());
        ok()
    }

    async fn revive(&self, _: Request<v1::ReviveRequest>) -> Result<Response<v1::CallResponse>, Status> {
        match self.seen().revive_redirect.clone() {
            Some(leader) => {
                let mut status = Status::unavailable("lost leadership");
                status
                    .metadata_mut()
                    .insert("mezzo-leader", leader.parse().expect("ascii address"));
                Err(status)
            }
            None => ok(),
        }
    }

    async fn suppress(&self, _: Request<v1::SuppressRequest>) -> Result<Response<v1::CallResponse>, Status> {
        ok()
    }

    async fn kill(&self, _: Request<v1::KillRequest>) -> Result<Response<v1::CallResponse>, Status> {
        ok()
    }

    async fn acknowledge(&self, req: Request<v1::AcknowledgeRequest>) -> Result<Response<v1::CallResponse>, Status> {
        let req = req.into_inner();
        let delay = {
            let mut seen = self.seen();
            seen.ack_calls += 1;
            let batch = req.acks.iter().map(|a| v1::AcknowledgeRequest {
                framework_id: req.framework_id.clone(),
                agent_id: a.agent_id.clone(),
                task_id: a.task_id.clone(),
                uuid: a.uuid.clone(),
                acks: Vec::new(),
            });
            let batch: Vec<_> = batch.collect();
            if batch.is_empty() {
                seen.acks.push(req);
            } else {
                seen.acks.extend(batch);
            }
            seen.ack_delay
        };
        tokio::time::sleep(delay).await;
        self.seen().acks_answered += 1;
        ok()
    }

    async fn reconcile(&self, req: Request<v1::ReconcileRequest>) -> Result<Response<v1::CallResponse>, Status> {
        let (refuse, stream) = {
            let mut seen = self.seen();
            let req = req.into_inner();
            let implicit = req.tasks.is_empty();
            seen.reconciles.push(req);
            let refuse = implicit && seen.reconcile_refusals > 0;
            if refuse {
                seen.reconcile_refusals -= 1;
            }
            (refuse, seen.stream.clone().filter(|_| implicit))
        };
        if refuse {
            return Err(Status::unavailable("agents are still re-registering"));
        }
        if let Some(tx) = stream {
            let done = Wire::Reconciled(v1::Reconciled {});
            let _ = tx.send(Ok(v1::Event { event: Some(done) })).await;
        }
        ok()
    }

    async fn teardown(&self, _: Request<v1::TeardownRequest>) -> Result<Response<v1::CallResponse>, Status> {
        let slow = self.seen().slow_teardown_answer.take();
        if let Some(d) = slow {
            tokio::time::sleep(d).await;
        }
        // As a master does once the removal commits: an Error event, and
        // the stream ends.
        let (stream, delay) = {
            let mut seen = self.seen();
            seen.acks_at_teardown = Some(seen.acks_answered);
            seen.teardowns += 1;
            if seen.removing {
                return Err(Status::failed_precondition("framework fw-1 is not subscribed"));
            }
            if seen.ignore_teardowns > 0 {
                seen.ignore_teardowns -= 1;
                (None, None)
            } else {
                seen.removing = seen.slow_removal.is_some();
                (seen.stream.take(), seen.slow_removal)
            }
        };
        if let Some(tx) = stream {
            let removed = Wire::Error(v1::Error {
                message: "framework removed".into(),
            });
            tokio::spawn(async move {
                tokio::time::sleep(delay.unwrap_or_default()).await;
                let _ = tx.send(Ok(v1::Event { event: Some(removed) })).await;
            });
        }
        ok()
    }

    // The key-value calls answer fixed values: enough to check the SDK's
    // conversions (the real store is tested in the master and tests/); or
    // keep a plain map, for the controller.
    async fn kv_get(&self, req: Request<v1::KvGetRequest>) -> Result<Response<v1::KvGetResponse>, Status> {
        let key = req.into_inner().key;
        if let Some(store) = &self.seen().store {
            let entry = store.get(&key).map(|v| v1::KvEntry {
                key,
                value: v.clone(),
                version: 1,
            });
            return Ok(Response::new(v1::KvGetResponse { entry }));
        }
        let entry = (key == "present").then(|| v1::KvEntry {
            key,
            value: b"v".to_vec(),
            version: 7,
        });
        Ok(Response::new(v1::KvGetResponse { entry }))
    }

    async fn kv_put(&self, req: Request<v1::KvPutRequest>) -> Result<Response<v1::KvPutResponse>, Status> {
        let req = req.into_inner();
        let mut seen = self.seen();
        if seen.refuse_puts.contains(&req.key) {
            return Err(Status::unavailable("no quorum"));
        }
        if seen.store.is_some() {
            seen.log.push(format!("put {}", req.key));
            seen.store.as_mut().map(|s| s.insert(req.key, req.value));
            return Ok(Response::new(v1::KvPutResponse { version: 1 }));
        }
        match req.expected_version {
            Some(v) if v != 7 => Err(Status::aborted(format!(
                "key \"k\": expected version {v}, found version 7"
            ))),
            _ => Ok(Response::new(v1::KvPutResponse { version: 8 })),
        }
    }

    async fn kv_delete(&self, req: Request<v1::KvDeleteRequest>) -> Result<Response<v1::KvDeleteResponse>, Status> {
        let key = req.into_inner().key;
        let mut seen = self.seen();
        if seen.store.is_some() {
            seen.log.push(format!("delete {key}"));
            let existed = seen.store.as_mut().and_then(|s| s.remove(&key)).is_some();
            return Ok(Response::new(v1::KvDeleteResponse { existed }));
        }
        Ok(Response::new(v1::KvDeleteResponse { existed: true }))
    }

    async fn kv_list(&self, req: Request<v1::KvListRequest>) -> Result<Response<v1::KvListResponse>, Status> {
        let prefix = req.into_inner().prefix;
        let Some(store) = &self.seen().store else {
            return Err(Status::not_found("unknown framework fw-1"));
        };
        let entries = store
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| v1::KvEntry {
                key: k.clone(),
                value: v.clone(),
                version: 1,
            })
            .collect();
        Ok(Response::new(v1::KvListResponse { entries }))
    }

    async fn report_pending(&self, _: Request<v1::ReportPendingRequest>) -> Result<Response<v1::CallResponse>, Status> {
        ok()
    }

    async fn message(&self, _: Request<v1::MessageRequest>) -> Result<Response<v1::CallResponse>, Status> {
        ok()
    }

    async fn shutdown_executor(
        &self,
        _: Request<v1::ShutdownExecutorRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        ok()
    }
}

fn config(masters: &[SocketAddr]) -> SchedulerConfig {
    // The fake master speaks plain text.
    let mut config = SchedulerConfig::new(masters.iter().map(ToString::to_string), "test")
        .with_transport(mezzo_proto::security::Transport::Plain);
    config.reconnect_backoff_max = Duration::from_millis(200);
    config.call_timeout = Duration::from_secs(2);
    config
}

async fn next(events: &mut Events) -> Event {
    tokio::time::timeout(WAIT, events.next())
        .await
        .expect("an event in time")
        .expect("driver running")
}

/// A status update of `task` on agent-1, as the master forwards it.
fn status(task: &str, state: v1::TaskState, uuid: &[u8]) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: task.into(),
        agent_id: "agent-1".into(),
        state: state as i32,
        uuid: uuid.to_vec(),
        ..Default::default()
    }
}

/// Pushes `status` from the fake master and waits for the driver to hand
/// it over.
async fn deliver(master: &FakeMaster, events: &mut Events, status: v1::TaskStatus) {
    master
        .push(Wire::Update(v1::Update {
            status: Some(status.clone()),
        }))
        .await;
    assert_eq!(next(events).await, Event::Update(status));
}

/// Waits until `check` holds on what the fake master saw.
async fn eventually(master: &FakeMaster, what: &str, check: impl Fn(&Seen) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check(&master.seen()) {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn subscribed(framework_id: &str, resumed: bool) -> Event {
    Event::Subscribed {
        framework_id: framework_id.into(),
        resumed,
    }
}

/// An address where nothing listens.
async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("local addr")
}

/// A fake master with 30 s heartbeats (no reconnect for silence while a
/// test runs) and a scheduler started against it.
async fn started() -> (FakeMaster, SocketAddr, Scheduler, Events) {
    let master = FakeMaster::default();
    master.seen().heartbeat_secs = 30.0;
    let addr = master.clone().serve().await;
    let (scheduler, events) = Scheduler::start(config(&[addr]));
    (master, addr, scheduler, events)
}

#[tokio::test]
async fn resubscribes_with_the_framework_id_and_reconciles() {
    let (master, addr, scheduler, mut events) = started().await;

    assert_eq!(next(&mut events).await, subscribed("fw-1", false));
    assert_eq!(scheduler.framework_id().as_deref(), Some("fw-1"));
    assert_eq!(scheduler.master(), Some(addr.to_string()));
    assert_eq!(master.seen().subscribes[0].framework_id, "");
    assert_eq!(
        master.seen().subscribes[0].framework.as_ref().map(|f| f.name.as_str()),
        Some("test")
    );
    assert!(
        master.seen().reconciles.is_empty(),
        "no reconciliation on a first registration"
    );

    // The master ends the stream and refuses to take the framework back for
    // now: the app hears of it and calls fail fast.
    master.seen().refuse = Some(None);
    master.drop_stream();
    assert!(matches!(next(&mut events).await, Event::Disconnected { .. }));
    assert_eq!(scheduler.revive().await, Err(SdkError::NotConnected));
    assert!(!scheduler.is_connected());
    assert_eq!(scheduler.framework_id().as_deref(), Some("fw-1"), "the id survives");

    master.seen().refuse = None;
    assert_eq!(next(&mut events).await, subscribed("fw-1", true));
    assert_eq!(master.seen().subscribes[1].framework_id, "fw-1");
    eventually(&master, "implicit reconciliation", |s| s.reconciles.len() == 1).await;
    let reconcile = master.seen().reconciles[0].clone();
    assert_eq!(reconcile.framework_id, "fw-1");
    assert!(reconcile.tasks.is_empty(), "implicit = every task");
    assert_eq!(scheduler.revive().await, Ok(()));
    scheduler.stop().await;
}

/// A suppress holds across re-subscriptions: the driver names the roles
/// it was suppressed in when it subscribes again, also when the suppress
/// itself could not be sent (the master applies them at once).
#[tokio::test]
async fn resubscribes_suppressed_where_it_was() {
    let (master, _addr, scheduler, mut events) = started().await;
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));
    assert!(master.seen().subscribes[0].suppressed_roles.is_empty());
    assert_eq!(scheduler.suppress().await, Ok(()));

    master.drop_stream();
    assert!(matches!(next(&mut events).await, Event::Disconnected { .. }));
    assert_eq!(next(&mut events).await, subscribed("fw-1", true));
    assert_eq!(master.seen().subscribes[1].suppressed_roles, vec!["*".to_owned()]);

    // A revive while disconnected fails, and still counts.
    master.seen().refuse = Some(None);
    master.drop_stream();
    assert!(matches!(next(&mut events).await, Event::Disconnected { .. }));
    assert_eq!(scheduler.revive().await, Err(SdkError::NotConnected));
    master.seen().refuse = None;
    assert_eq!(next(&mut events).await, subscribed("fw-1", true));
    let last = master.seen().subscribes.last().cloned().expect("subscribed");
    assert!(last.suppressed_roles.is_empty(), "{last:?}");
    scheduler.stop().await;
}

#[tokio::test]
async fn auto_ack_only_for_updates_with_a_uuid() {
    let master = FakeMaster::default();
    let addr = master.clone().serve().await;
    let (scheduler, mut events) = Scheduler::start(config(&[addr]));
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));

    let update = |task: &str, uuid: &[u8]| status(task, v1::TaskState::TaskRunning, uuid);
    for status in [update("t1", b"u1"), update("t2", b""), update("t3", b"u3")] {
        deliver(&master, &mut events, status).await;
    }
    eventually(&master, "two acknowledgements", |s| s.acks.len() >= 2).await;
    // Give a wrong third ack time to show up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let acks: Vec<_> = master
        .seen()
        .acks
        .iter()
        .map(|a| {
            (
                a.framework_id.clone(),
                a.agent_id.clone(),
                a.task_id.clone(),
                a.uuid.clone(),
            )
        })
        .collect();
    let want = |t: &str, u: &[u8]| ("fw-1".to_owned(), "agent-1".to_owned(), t.to_owned(), u.to_vec());
    let mut acks = acks;
    acks.sort();
    assert_eq!(acks, vec![want("t1", b"u1"), want("t3", b"u3")]);

    // A manual ack of a uuid-less update is a no-op.
    assert_eq!(scheduler.acknowledge(&update("t2", b"")).await, Ok(()));
    assert_eq!(master.seen().acks.len(), 2);
    scheduler.stop().await;
}

#[tokio::test]
async fn acknowledgements_queued_during_a_call_go_in_one_batch() {
    let master = FakeMaster::default();
    master.seen().ack_delay = Duration::from_millis(100);
    let addr = master.clone().serve().await;
    let (scheduler, mut events) = Scheduler::start(config(&[addr]));
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));
    for i in 0..20u8 {
        let st = status(&format!("t{i}"), v1::TaskState::TaskRunning, &[i; 16]);
        deliver(&master, &mut events, st).await;
    }
    eventually(&master, "20 acknowledgements", |s| s.acks.len() == 20).await;
    {
        let seen = master.seen();
        let mut tasks: Vec<_> = seen.acks.iter().map(|a| a.task_id.clone()).collect();
        tasks.sort();
        tasks.dedup();
        assert_eq!(tasks.len(), 20, "each update acknowledged once");
        // Calls are answered after 100 ms; once the few allowed at once are in
        // flight, everything queued meanwhile goes in the next.
        assert!(seen.ack_calls < 20, "{} calls for 20 acknowledgements", seen.ack_calls);
    }
    scheduler.stop().await;
}

/// `teardown` returns once the removal is confirmed (issue 20: a second
/// loop had to drain events until the Error came), calling again when a
/// leader forgot the first call; the app still sees the Error, then the
/// end of its events.
#[tokio::test]
async fn teardown_returns_once_the_removal_is_confirmed() {
    let master = FakeMaster::default();
    master.seen().ignore_teardowns = 1;
    let addr = master.clone().serve().await;
    let (scheduler, mut events) = Scheduler::start(config(&[addr]));
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));
    assert_eq!(scheduler.teardown().await, Ok(()));
    assert_eq!(master.seen().teardowns, 2, "asked again after the first was forgotten");
    assert!(!scheduler.is_connected());
    assert_eq!(
        next(&mut events).await,
        Event::Error {
            message: "framework removed".into()
        }
    );
    assert_eq!(tokio::time::timeout(WAIT, events.next()).await.expect("closed"), None);
    // A master that never confirms: the call gives up.
    let master = FakeMaster::default();
    master.seen().ignore_teardowns = usize::MAX;
    let addr = master.clone().serve().await;
    let (scheduler, mut events) = Scheduler::start(config(&[addr]));
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));
    assert_eq!(scheduler.teardown().await, Err(SdkError::Timeout));
    assert_eq!(master.seen().teardowns, crate::TEARDOWN_TRIES);
    scheduler.stop().await;
    // A removal slower than a call (a loaded registry): the teardown asked
    // again is refused, the framework being without a subscription; the
    // removal still comes, and the teardown returns once it has.
    let master = FakeMaster::default();
    master.seen().slow_removal = Some(Duration::from_millis(2500));
    let addr = master.clone().serve().await;
    let (scheduler, mut events) = Scheduler::start(config(&[addr]));
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));
    assert_eq!(scheduler.teardown().await, Ok(()));
    assert_eq!(master.seen().teardowns, 2);
    // A teardown answered later than a call's time limit: the removal it
    // made still counts.
    let master = FakeMaster::default();
    master.seen().slow_teardown_answer = Some(Duration::from_millis(2500));
    let addr = master.clone().serve().await;
    let (scheduler, mut events) = Scheduler::start(config(&[addr]));
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));
    assert_eq!(scheduler.teardown().await, Ok(()));
    assert_eq!(master.seen().teardowns, 1);
}

#[tokio::test]
async fn teardown_waits_for_queued_acknowledgements() {
    let master = FakeMaster::default();
    master.seen().ack_delay = Duration::from_millis(200);
    let addr = master.clone().serve().await;
    let (scheduler, mut events) = Scheduler::start(config(&[addr]));
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));
    for i in 0..3u8 {
        let st = status(&format!("t{i}"), v1::TaskState::TaskFinished, &[i; 16]);
        deliver(&master, &mut events, st).await;
    }
    assert_eq!(scheduler.teardown().await, Ok(()));
    // Every acknowledgement call was answered (each takes 200 ms) before
    // the teardown went out.
    {
        let seen = master.seen();
        assert_eq!(seen.acks.len(), 3);
        assert_eq!(seen.acks_at_teardown, Some(seen.ack_calls));
    }
    scheduler.stop().await;
}

/// An offer rescinded while it waits unread in the events channel is never
/// handed over, nor is its rescind: a framework that fell behind plans
/// only on offers it may still accept.
#[tokio::test]
async fn offers_rescinded_before_they_are_read_are_left_out() {
    let master = FakeMaster::default();
    let addr = master.clone().serve().await;
    let (scheduler, mut events) = Scheduler::start(config(&[addr]));
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));
    let offer = |id: &str| v1::Offer {
        offer_id: id.into(),
        agent_id: "a-1".into(),
        ..Default::default()
    };
    master
        .push(Wire::Offers(v1::Offers {
            offers: vec![offer("o-1"), offer("o-2")],
        }))
        .await;
    master
        .push(Wire::Offers(v1::Offers {
            offers: vec![offer("o-3")],
        }))
        .await;
    for id in ["o-1", "o-3", "o-9"] {
        master.push(Wire::Rescind(v1::Rescind { offer_id: id.into() })).await;
    }
    let st = status("t", v1::TaskState::TaskFinished, &[1; 16]);
    master
        .push(Wire::Update(v1::Update {
            status: Some(st.clone()),
        }))
        .await;
    // The update's acknowledgement reaches the master only after the driver
    // has handled every event before it.
    tokio::time::timeout(WAIT, async {
        while master.seen().acks.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("acknowledged in time");
    assert_eq!(next(&mut events).await, Event::Offers(vec![offer("o-2")]));
    assert_eq!(next(&mut events).await, Event::Rescind { offer_id: "o-9".into() });
    assert_eq!(next(&mut events).await, Event::Update(st));
    scheduler.stop().await;
}

#[tokio::test]
async fn other_events_are_relayed() {
    let master = FakeMaster::default();
    let addr = master.clone().serve().await;
    let (scheduler, mut events) = Scheduler::start(config(&[addr]));
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));

    let offer = v1::Offer {
        offer_id: "o-1".into(),
        agent_id: "a-1".into(),
        ..Default::default()
    };
    master.push(Wire::Heartbeat(v1::Heartbeat {})).await;
    master
        .push(Wire::Offers(v1::Offers {
            offers: vec![offer.clone()],
        }))
        .await;
    assert_eq!(next(&mut events).await, Event::Offers(vec![offer]));
    master.push(Wire::Rescind(v1::Rescind { offer_id: "o-1".into() })).await;
    master
        .push(Wire::Failure(v1::Failure {
            agent_id: "a-1".into(),
            ..Default::default()
        }))
        .await;
    master
        .push(Wire::AgentDrain(v1::AgentDrain {
            agent_id: "a-2".into(),
            draining: true,
            deadline: Some(1_800_000_000.5),
        }))
        .await;
    assert_eq!(next(&mut events).await, Event::Rescind { offer_id: "o-1".into() });
    assert_eq!(next(&mut events).await, Event::AgentLost { agent_id: "a-1".into() });
    let deadline = std::time::UNIX_EPOCH + Duration::from_millis(1_800_000_000_500);
    assert_eq!(
        next(&mut events).await,
        Event::AgentDraining {
            agent_id: "a-2".into(),
            draining: true,
            deadline: Some(deadline),
        }
    );
    scheduler.stop().await;
}

#[tokio::test]
async fn heartbeat_timeout_triggers_reconnect() {
    let master = FakeMaster::default();
    master.seen().heartbeat_secs = 0.2; // dead after the 1 s minimum
    let addr = master.clone().serve().await;
    let (scheduler, mut events) = Scheduler::start(config(&[addr]));
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));

    let started = tokio::time::Instant::now();
    match next(&mut events).await {
        Event::Disconnected { reason } => assert!(reason.contains("heartbeat"), "{reason}"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(next(&mut events).await, subscribed("fw-1", true));
    assert_eq!(master.seen().subscribes.len(), 2);
    scheduler.stop().await;
}

/// A scheduler subscribed to a fake master that announces 1 s heartbeats
/// (so the SDK gives up after 3 s of silence) and sends none by itself.
async fn subscribed_with_3s_limit() -> (FakeMaster, Scheduler, Events) {
    let master = FakeMaster::default();
    master.seen().heartbeat_secs = 1.0;
    let addr = master.clone().serve().await;
    let (scheduler, mut events) = Scheduler::start(config(&[addr]));
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));
    (master, scheduler, events)
}

/// No event for `quiet`, and still the first subscription.
async fn still_subscribed(master: &FakeMaster, events: &mut Events, quiet: Duration) {
    let after = tokio::time::timeout(quiet, events.next()).await;
    assert!(after.is_err(), "the driver did not wait for the master: {after:?}");
    assert_eq!(master.seen().subscribes.len(), 1);
}

/// A framework slow to take its events is not a silent master: the driver
/// blocked handing an event to a full queue for longer than the heartbeat
/// limit, then found nothing new on the stream at that moment and
/// reconnected (re-subscribing and asking about all its tasks again),
/// though the master's next heartbeat was on its way.
#[tokio::test]
async fn an_app_slow_to_take_its_events_does_not_count_as_master_silence() {
    let (master, scheduler, mut events) = subscribed_with_3s_limit().await;
    // One event more than the app's queue holds: the driver waits to hand
    // over the last one while the app does not read.
    let offers = super::EVENTS_CAPACITY + 1;
    for i in 0..offers {
        let offer = v1::Offer {
            offer_id: format!("o-{i}"),
            agent_id: "a-1".into(),
            ..Default::default()
        };
        master.push(Wire::Offers(v1::Offers { offers: vec![offer] })).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    for _ in 0..offers {
        assert!(matches!(next(&mut events).await, Event::Offers(_)));
    }
    // The master's next heartbeat, well within 3 s of the app taking the
    // last event.
    tokio::time::sleep(Duration::from_millis(500)).await;
    master.push(Wire::Heartbeat(v1::Heartbeat {})).await;
    still_subscribed(&master, &mut events, Duration::from_secs(1)).await;
    scheduler.stop().await;
}

/// A process that could not run is not a silent master: with every thread
/// of the framework's runtime held for longer than the heartbeat limit (a
/// framework's own work, or cores busy elsewhere), the driver woke with its
/// limit long past before its connection had read what the master sent
/// meanwhile, and reconnected.
#[tokio::test]
async fn a_runtime_that_could_not_run_does_not_count_as_master_silence() {
    let (master, scheduler, mut events) = subscribed_with_3s_limit().await;
    let beating = master.clone();
    let beats = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            beating.push(Wire::Heartbeat(v1::Heartbeat {})).await;
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The test's runtime has one thread: the driver, its connection and
    // the fake master all stop.
    std::thread::sleep(Duration::from_secs(4));
    still_subscribed(&master, &mut events, Duration::from_secs(2)).await;
    beats.abort();
    scheduler.stop().await;
}

#[tokio::test]
async fn calls_fail_fast_when_not_connected_and_after_stop() {
    let (scheduler, mut events) = Scheduler::start(config(&[dead_address().await]));
    let started = tokio::time::Instant::now();
    assert_eq!(
        scheduler.accept(vec!["o".into()], vec![], None).await,
        Err(SdkError::NotConnected)
    );
    assert_eq!(scheduler.kill("t", None).await, Err(SdkError::NotConnected));
    assert_eq!(scheduler.teardown().await, Err(SdkError::NotConnected));
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(scheduler.framework_id(), None);

    scheduler.stop().await;
    assert_eq!(scheduler.decline(vec![], None).await, Err(SdkError::Stopped));
    assert_eq!(tokio::time::timeout(WAIT, events.next()).await.expect("closed"), None);
}

#[tokio::test]
async fn refused_calls_carry_the_masters_reason() {
    let master = FakeMaster::default();
    let addr = master.clone().serve().await;
    let (scheduler, mut events) = Scheduler::start(config(&[addr]));
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));

    let task = crate::TaskBuilder::new("t-1").shell("true").build();
    let got = scheduler
        .accept(vec!["o-9".into()], vec![task.clone()], Some(5.0))
        .await;
    assert_eq!(
        got,
        Err(SdkError::Rejected {
            code: Code::InvalidArgument,
            message: "unknown offer o-9".into()
        })
    );
    let accept = master.seen().accepts[0].clone();
    assert_eq!(accept.framework_id, "fw-1");
    assert_eq!(accept.offer_ids, ["o-9"]);
    assert_eq!(accept.filters.and_then(|f| f.refuse_seconds), Some(5.0));
    let launched = match accept.operations.first().and_then(|op| op.operation.clone()) {
        Some(v1::operation::Operation::Launch(launch)) => launch.tasks,
        other => panic!("expected a launch, got {other:?}"),
    };
    assert_eq!(launched, vec![task]);
    scheduler.stop().await;
}

/// Reservations and volumes go out as one Accept, operations in order.
#[tokio::test]
async fn accept_operations_sends_them_in_order() {
    use crate::operations::{create_volume, reserve};
    let master = FakeMaster::default();
    let addr = master.clone().serve().await;
    let (scheduler, mut events) = Scheduler::start(config(&[addr]));
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));

    let role = crate::Role::parse("svc").expect("role");
    let ops = vec![
        reserve(&role, &crate::Resources::parse("disk:64").expect("res")),
        create_volume("db-0", 64),
    ];
    let _ = scheduler.accept_operations(vec!["o-1".into()], ops.clone(), None).await;
    let accept = master.seen().accepts[0].clone();
    assert_eq!((accept.offer_ids, accept.operations), (vec!["o-1".to_owned()], ops));
    scheduler.stop().await;
}

/// `launch` carries out a plan: one accept per offer with its tasks, the
/// places of a refused accept given back (its payload returned), the
/// unused offers declined with the filter, every launched task named in
/// the record.
#[tokio::test]
async fn launch_accepts_names_rolls_back_and_declines() {
    use crate::offers::{Placed, Strategy, TaskRequest, plan};
    let master = FakeMaster::default();
    let addr = master.clone().serve().await;
    let (scheduler, mut events) = Scheduler::start(config(&[addr]));
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));

    let offer = |id: &str, agent: &str, res: &str| v1::Offer {
        offer_id: id.into(),
        agent_id: agent.into(),
        hostname: agent.into(),
        resources: crate::Resources::parse(res).expect("res").to_proto(),
        ..Default::default()
    };
    // o-9 is rescinded by the time it is accepted; o-3 is too small.
    let offers = [
        offer("o-1", "a1", "cpus:1"),
        offer("o-9", "a9", "cpus:1"),
        offer("o-3", "a3", "cpus:0.1"),
    ];
    let one = TaskRequest::new(&crate::Resources::parse("cpus:1").expect("res"));
    let work = ["x", "y", "z"].map(|p| (one.clone(), p));
    let mut placed = Placed::default();
    let p = plan(&offers, work, Strategy::FirstFit, &[], &mut placed).expect("plan");
    let done = scheduler
        .launch(p, &mut placed, Some(7.0), |a| {
            crate::TaskBuilder::new(format!("t-{}", a.payload))
                .resources(&a.resources)
                .shell("true")
                .build()
        })
        .await;
    assert_eq!(done.launched, vec![("t-x".to_owned(), "x")]);
    assert_eq!(done.refused.len(), 1);
    assert_eq!(done.refused[0].payload, "y");
    assert_eq!(done.refused[0].task_id, "t-y");
    assert!(!done.refused[0].maybe_launched(), "a refusal, not a lost answer");
    assert_eq!(done.unplaced, ["z"]);
    assert_eq!(placed.tasks(), 1, "the refused task's place was given back");
    assert_eq!((placed.on_agent("a1"), placed.on_agent("a9")), (1, 0));
    assert!(placed.location("t-x").is_some_and(|l| l.agent_id == "a1"));
    let (accepts, declines) = {
        let seen = master.seen();
        (seen.accepts.clone(), seen.declines.clone())
    };
    assert_eq!(accepts.len(), 2, "one accept per offer");
    for a in &accepts {
        let refuse = a.filters.as_ref().and_then(|f| f.refuse_seconds);
        assert_eq!(refuse, Some(0.0), "remainders come back for the work still waiting");
    }
    assert_eq!(declines.len(), 1);
    assert_eq!(declines[0].offer_ids, ["o-3"]);
    assert_eq!(declines[0].filters.as_ref().and_then(|f| f.refuse_seconds), Some(7.0));
    scheduler.stop().await;
}

#[tokio::test]
async fn follows_the_leader_named_by_a_follower() {
    let leader = FakeMaster::default();
    let leader_addr = leader.clone().serve().await;
    let follower = FakeMaster::default();
    follower.seen().refuse = Some(Some(leader_addr.to_string()));
    let follower_addr = follower.clone().serve().await;

    let (scheduler, mut events) = Scheduler::start(config(&[dead_address().await, follower_addr]));
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));
    assert_eq!(scheduler.master(), Some(leader_addr.to_string()));
    assert_eq!(leader.seen().subscribes.len(), 1);
    scheduler.stop().await;
}

#[tokio::test]
async fn master_error_stops_the_driver() {
    let master = FakeMaster::default();
    let addr = master.clone().serve().await;
    let (scheduler, mut events) = Scheduler::start(config(&[addr]));
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));

    master
        .push(Wire::Error(v1::Error {
            message: "framework torn down".into(),
        }))
        .await;
    assert_eq!(
        next(&mut events).await,
        Event::Error {
            message: "framework torn down".into()
        }
    );
    assert_eq!(tokio::time::timeout(WAIT, events.next()).await.expect("closed"), None);
    assert_eq!(scheduler.revive().await, Err(SdkError::Stopped));
    scheduler.stop().await; // already stopped: returns at once
}

#[tokio::test]
async fn resumes_a_configured_framework_id() {
    let master = FakeMaster::default();
    let addr = master.clone().serve().await;
    let mut config = config(&[addr]);
    config.framework_id = Some("fw-old".into());
    let (scheduler, mut events) = Scheduler::start(config);
    assert_eq!(scheduler.framework_id().as_deref(), Some("fw-old"));
    assert_eq!(next(&mut events).await, subscribed("fw-old", true));
    assert_eq!(master.seen().subscribes[0].framework_id, "fw-old");
    eventually(&master, "implicit reconciliation", |s| s.reconciles.len() == 1).await;
    assert_eq!(next(&mut events).await, Event::Reconciled);
    scheduler.stop().await;
}

/// A new leader cannot report every task while agents are still
/// re-registering: the SDK asks again until it can, and the framework
/// learns the end of the answers from `Event::Reconciled`.
#[tokio::test]
async fn implicit_reconciliation_is_asked_again_until_complete() {
    let master = FakeMaster::default();
    master.seen().reconcile_refusals = 2;
    let addr = master.clone().serve().await;
    let mut config = config(&[addr]);
    config.framework_id = Some("fw-old".into());
    let (scheduler, mut events) = Scheduler::start(config);
    assert_eq!(next(&mut events).await, subscribed("fw-old", true));
    assert_eq!(next(&mut events).await, Event::Reconciled);
    assert_eq!(master.seen().reconciles.len(), 3, "two refusals, then answered");
    scheduler.stop().await;
}

#[tokio::test]
async fn a_call_answered_by_a_follower_moves_the_driver_to_the_leader() {
    let old = FakeMaster::default();
    let old_addr = old.clone().serve().await;
    let new = FakeMaster::default();
    let new_addr = new.clone().serve().await;
    let (scheduler, mut events) = Scheduler::start(config(&[old_addr]));
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));

    old.seen().revive_redirect = Some(new_addr.to_string());
    assert_eq!(
        scheduler.revive().await,
        Err(SdkError::Transport("lost leadership".into()))
    );
    assert!(matches!(next(&mut events).await, Event::Disconnected { .. }));
    assert_eq!(next(&mut events).await, subscribed("fw-1", true));
    assert_eq!(scheduler.master(), Some(new_addr.to_string()));
    assert_eq!(new.seen().subscribes[0].framework_id, "fw-1");
    scheduler.stop().await;
}

#[tokio::test]
async fn dropping_every_handle_and_the_events_stops_the_driver() {
    let master = FakeMaster::default();
    let addr = master.clone().serve().await;
    let (scheduler, mut events) = Scheduler::start(config(&[addr]));
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));
    let watcher = scheduler.calls.clone();
    drop(scheduler);
    drop(events);
    tokio::time::timeout(WAIT, watcher.stopped())
        .await
        .expect("driver stopped");
}

#[tokio::test]
async fn key_value_calls_convert_answers_and_conflicts() {
    let (_master, _addr, scheduler, mut events) = started().await;
    let kv = scheduler.kv();
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));
    let entry = kv.get("present").await.expect("get").expect("present");
    assert_eq!(
        (entry.key.as_str(), entry.value.as_slice(), entry.version),
        ("present", &b"v"[..], 7)
    );
    assert_eq!(kv.get("absent").await.expect("get"), None);
    assert_eq!(kv.put("k", b"x".to_vec()).await, Ok(8));
    assert_eq!(kv.put_if("k", b"x".to_vec(), 7).await, Ok(8));
    match kv.put_if("k", b"x".to_vec(), 3).await {
        Err(SdkError::Conflict(why)) => assert!(why.contains("expected version 3"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(kv.delete("k").await, Ok(true));
    assert!(matches!(
        kv.list("").await,
        Err(SdkError::Rejected {
            code: Code::NotFound,
            ..
        })
    ));
    scheduler.stop().await;
    assert_eq!(kv.get("present").await, Err(SdkError::Stopped));
}

/// Keeps as many tasks of a key as its desired number says.
struct Copies(u64);

impl crate::controller::Reconciler<u32> for Copies {
    type Error = String;
    fn reconcile(
        &mut self,
        _key: &str,
        want: &mut u32,
        tasks: &[crate::controller::Task],
        ctx: &mut crate::controller::Context<'_>,
    ) -> Result<crate::controller::Requeue, String> {
        let one = crate::offers::TaskRequest::new(&crate::Resources::parse("cpus:1").map_err(|e| e.to_string())?);
        for _ in tasks.iter().filter(|t| !t.ended()).count()..*want as usize {
            self.0 += 1;
            ctx.launch(crate::controller::Launch::new(self.0.to_string(), one.clone()));
        }
        Ok(crate::controller::Requeue::No)
    }
    fn build(&mut self, _: &str, _: &u32, _: &crate::controller::Task, b: crate::TaskBuilder) -> crate::TaskBuilder {
        b.shell("true")
    }
}

/// The master answers that web.1 and web.2 run (after the implicit
/// reconciliation, whose end comes in between); the controller follows
/// the three events.
async fn web_runs(
    master: &FakeMaster,
    events: &mut Events,
    ctl: &mut crate::controller::Controller<u32>,
    copies: &mut Copies,
) {
    for id in ["web.1", "web.2"] {
        master
            .push(Wire::Update(v1::Update {
                status: Some(status(id, v1::TaskState::TaskRunning, b"")),
            }))
            .await;
    }
    for _ in 0..3 {
        let ev = next(events).await;
        ctl.event(ev, copies).await;
    }
}

/// A fake master whose store holds one entry.
async fn master_with_store(key: &str, value: &[u8]) -> (FakeMaster, SocketAddr) {
    let master = FakeMaster::default();
    master.seen().store = Some(std::collections::BTreeMap::from([(key.to_owned(), value.to_vec())]));
    let addr = master.clone().serve().await;
    (master, addr)
}

/// The controller (issue 20): its launches are recorded in the store
/// before they are accepted; a restarted framework reads them back, asks
/// the master about each with its agent, and launches nothing again for
/// tasks that run.
#[tokio::test]
async fn a_controller_records_launches_first_and_takes_them_over_after_a_restart() {
    use crate::controller::Controller;
    let (master, addr) = master_with_store("want/web", b"2").await;
    let offers = |id: &str| {
        Wire::Offers(v1::Offers {
            offers: vec![v1::Offer {
                offer_id: id.into(),
                agent_id: "agent-1".into(),
                hostname: "h".into(),
                resources: crate::Resources::parse("cpus:4").expect("res").to_proto(),
                ..Default::default()
            }],
        })
    };

    let (scheduler, mut events) = Scheduler::start(config(&[addr]));
    let mut ctl = Controller::<u32>::new(&scheduler, "want/");
    let mut copies = Copies(0);
    let first = next(&mut events).await;
    assert_eq!(first, subscribed("fw-1", false));
    ctl.event(first, &mut copies).await;
    assert_eq!(ctl.get("web"), Some(&2), "loaded");
    master.push(offers("o-1")).await;
    let ev = next(&mut events).await;
    ctl.event(ev, &mut copies).await;
    assert_eq!(
        master.seen().log,
        ["put want/web/tasks", "accept"],
        "recorded, then accepted"
    );
    let ids: Vec<String> = ctl.tasks("web").into_iter().map(|t| t.id).collect();
    assert_eq!(ids, ["web.1", "web.2"]);
    scheduler.stop().await;

    let mut resumed = config(&[addr]);
    resumed.framework_id = Some("fw-1".into());
    let (scheduler, mut events) = Scheduler::start(resumed);
    let mut ctl = Controller::<u32>::new(&scheduler, "want/");
    let mut copies = Copies(10);
    let ev = next(&mut events).await;
    assert_eq!(ev, subscribed("fw-1", true));
    ctl.event(ev, &mut copies).await;
    let tasks = ctl.tasks("web");
    assert!(
        tasks.iter().all(|t| t.state == crate::TaskState::Unknown && !t.adopted),
        "{tasks:?}"
    );
    let explicit: Vec<(String, String)> = master
        .seen()
        .reconciles
        .iter()
        .flat_map(|r| r.tasks.iter().map(|t| (t.task_id.clone(), t.agent_id.clone())))
        .collect();
    assert_eq!(
        explicit,
        [
            ("web.1".to_owned(), "agent-1".to_owned()),
            ("web.2".to_owned(), "agent-1".to_owned())
        ]
    );
    // The implicit reconciliation's end, then the two answers (in some order).
    web_runs(&master, &mut events, &mut ctl, &mut copies).await;
    master.push(offers("o-2")).await;
    let ev = next(&mut events).await;
    ctl.event(ev, &mut copies).await;
    let (accepts, declined) = {
        let seen = master.seen();
        (seen.accepts.len(), seen.declines.iter().any(|d| d.offer_ids == ["o-2"]))
    };
    assert_eq!(accepts, 1, "nothing launched twice");
    assert!(declined, "the offer is declined");
    assert_eq!(copies.0, 10, "nothing asked for");
    scheduler.stop().await;
}

/// Finding 8: a flush writes the task records before the desired objects
/// (and a key's object not while its records cannot be written), so that instances taken over from an older record (`hold`, then the
/// record changed) are never in neither place after a crash between the
/// writes.
#[tokio::test]
async fn a_controller_writes_task_records_before_desired_objects() {
    use crate::controller::{Controller, Task};
    let (master, addr) = master_with_store("want/web", b"1").await;
    let (scheduler, mut events) = Scheduler::start(config(&[addr]));
    let mut ctl = Controller::<u32>::new(&scheduler, "want/");
    let mut copies = Copies(0);
    let first = next(&mut events).await;
    ctl.event(first, &mut copies).await;
    assert!(ctl.is_loaded());
    ctl.hold(Task {
        id: "web.old".into(),
        key: "web".into(),
        state: crate::TaskState::Unknown,
        status: None,
        location: crate::offers::Location {
            agent_id: "agent-1".into(),
            hostname: "h".into(),
            attributes: vec![],
        },
        ports: vec![],
        labels: std::collections::BTreeMap::new(),
        launched: None,
        killing: false,
        adopted: false,
    });
    assert!(ctl.modify("web", |w| *w = 2));
    master.seen().log.clear();
    // While the records cannot be written, neither is the object.
    master.seen().refuse_puts.insert("want/web/tasks".into());
    ctl.tick(&mut copies).await;
    assert!(
        !master.seen().log.contains(&"put want/web".to_owned()),
        "{:?}",
        master.seen().log
    );
    master.seen().refuse_puts.clear();
    ctl.tick(&mut copies).await;
    let log = master.seen().log.clone();
    let at = |what: &str| log.iter().position(|l| l == what);
    assert!(
        at("put want/web/tasks").is_some() && at("put want/web").is_some(),
        "{log:?}"
    );
    assert!(at("put want/web/tasks") < at("put want/web"), "{log:?}");
    scheduler.stop().await;
}

/// Finding 1: the store cannot be read at the subscription (say, just
/// after a leader change) and the master reports running tasks first; the
/// load that follows gives them their records: not adopted, nothing
/// launched again, their records kept.
#[tokio::test]
async fn a_controller_gives_tasks_reported_before_its_load_their_records() {
    use crate::controller::Controller;
    // No store yet: listing it fails.
    let master = FakeMaster::default();
    let addr = master.clone().serve().await;
    let mut resumed = config(&[addr]);
    resumed.framework_id = Some("fw-1".into());
    let (scheduler, mut events) = Scheduler::start(resumed);
    let mut ctl = Controller::<u32>::new(&scheduler, "want/");
    let mut copies = Copies(0);
    let ev = next(&mut events).await;
    assert_eq!(ev, subscribed("fw-1", true));
    ctl.event(ev, &mut copies).await;
    assert!(!ctl.is_loaded());
    // The implicit reconciliation's end, then the two answers (in some order).
    web_runs(&master, &mut events, &mut ctl, &mut copies).await;
    assert!(ctl.tasks("web").iter().all(|t| t.adopted));
    let record =
        |id: &str| format!(r#""{id}":{{"agent_id":"agent-1","host":"h","labels":{{"v":"1"}},"launched":1.0}}"#);
    let records = format!("{{{},{}}}", record("web.1"), record("web.2"));
    master.seen().store = Some(std::collections::BTreeMap::from([
        ("want/web".to_owned(), b"2".to_vec()),
        ("want/web/tasks".to_owned(), records.into_bytes()),
    ]));
    ctl.tick(&mut copies).await;
    assert!(ctl.is_loaded());
    ctl.tick(&mut copies).await;
    let tasks = ctl.tasks("web");
    assert_eq!(tasks.len(), 2);
    for t in &tasks {
        assert!(
            !t.adopted && t.state == crate::TaskState::Running && t.location.hostname == "h" && t.labels["v"] == "1",
            "{t:?}"
        );
    }
    assert_eq!(copies.0, 0, "nothing launched again");
    let kept = master
        .seen()
        .store
        .as_ref()
        .and_then(|s| s.get("want/web/tasks").cloned());
    let kept: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&kept.expect("records kept")).expect("json");
    assert_eq!(kept.keys().collect::<Vec<_>>(), ["web.1", "web.2"]);
    scheduler.stop().await;
}

/// Finding 9: a desired object the controller cannot read (a schema
/// change, say) does not make its key an orphan: its running tasks are
/// followed, not killed.
#[tokio::test]
async fn a_controller_follows_the_tasks_of_an_unreadable_desired_object() {
    use crate::controller::Controller;
    let (master, addr) = master_with_store("want/old", b"{not json").await;
    let records = br#"{"old.1":{"agent_id":"agent-1","host":"h","launched":1.0}}"#;
    master
        .seen()
        .store
        .as_mut()
        .map(|s| s.insert("want/old/tasks".to_owned(), records.to_vec()));
    let (scheduler, mut events) = Scheduler::start(config(&[addr]));
    let mut ctl = Controller::<u32>::new(&scheduler, "want/");
    let mut copies = Copies(0);
    let ev = next(&mut events).await;
    ctl.event(ev, &mut copies).await;
    assert!(ctl.is_loaded() && ctl.get("old").is_none());
    deliver(&master, &mut events, status("old.1", v1::TaskState::TaskRunning, b"")).await;
    ctl.event(
        Event::Update(status("old.1", v1::TaskState::TaskRunning, b"")),
        &mut copies,
    )
    .await;
    ctl.tick(&mut copies).await;
    ctl.tick(&mut copies).await;
    let tasks = ctl.tasks("old");
    assert_eq!(tasks.len(), 1);
    assert!(
        tasks[0].state == crate::TaskState::Running && !tasks[0].killing,
        "{tasks:?}"
    );
    scheduler.stop().await;
}

/// A work queue that launched two tasks on one offer at `now`; their ids.
async fn two_launched(scheduler: &Scheduler, now: tokio::time::Instant) -> (crate::WorkQueue<u32>, Vec<String>) {
    let mut q: crate::WorkQueue<u32> = crate::WorkQueue::new("q", crate::RetryPolicy::attempts(1));
    let request = crate::offers::TaskRequest::new(&mezzo_proto::resources::Resources::parse("cpus:0.1").expect("res"));
    q.submit(0, request.clone());
    q.submit(1, request);
    let offer = v1::Offer {
        offer_id: "o-1".into(),
        agent_id: "agent-1".into(),
        hostname: "h".into(),
        resources: mezzo_proto::resources::Resources::parse("cpus:1;mem:64")
            .expect("res")
            .to_proto(),
        ..Default::default()
    };
    let round = q.offers(scheduler, vec![offer], |_, t| t, now).await;
    let tasks: Vec<String> = round.launched.iter().map(|l| l.task_id.clone()).collect();
    assert_eq!(tasks.len(), 2, "{round:?}");
    (q, tasks)
}

/// A launch with no update is asked about after 10 s, then after twice
/// as long each time: a leader behind on its updates is not asked about
/// every waiting launch every 10 s.
#[tokio::test]
async fn the_queue_asks_about_unconfirmed_launches_with_backoff() {
    use tokio::time::Instant;
    let (master, _addr, scheduler, mut events) = started().await;
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));
    let t0 = Instant::now();
    let (mut q, tasks) = two_launched(&scheduler, t0).await;
    // The first tick is the periodic reconciliation of every task.
    q.tick(&scheduler, t0).await;
    eventually(&master, "the periodic reconciliation", |s| s.reconciles.len() == 1).await;
    let asked = |n: usize| master.seen().reconciles.get(n).map(|r| r.tasks.len());
    let s = Duration::from_secs;
    for (at, reconciles) in [(9, 1), (10, 2), (29, 2), (30, 3), (69, 3), (70, 4)] {
        q.tick(&scheduler, t0 + s(at)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(master.seen().reconciles.len(), reconciles, "{at} s after the launch");
    }
    assert_eq!(asked(3), Some(2), "both unconfirmed launches asked about");
    // An update confirms a launch: it is not asked about again.
    q.update(&status(&tasks[0], v1::TaskState::TaskRunning, &[]), t0 + s(71));
    q.tick(&scheduler, t0 + s(150)).await;
    eventually(&master, "the fourth question", |s| s.reconciles.len() == 5).await;
    assert_eq!(asked(4), Some(1));
    scheduler.stop().await;
}

/// After a subscription the work queue asks the master explicitly only
/// about the running tasks its implicit reconciliation did not report, and
/// only once that ended (asking about every task doubled a failover's
/// answers).
#[tokio::test]
async fn the_queue_asks_only_about_tasks_the_implicit_reconciliation_missed() {
    use tokio::time::Instant;
    let (master, _addr, scheduler, mut events) = started().await;
    assert_eq!(next(&mut events).await, subscribed("fw-1", false));
    let (mut q, tasks) = two_launched(&scheduler, Instant::now()).await;
    let running = |t: &str| status(t, v1::TaskState::TaskRunning, &[]);
    for t in &tasks {
        q.update(&running(t), Instant::now());
    }
    // The first tick asks about every running task (and then not for ten minutes).
    q.tick(&scheduler, Instant::now()).await;
    eventually(&master, "the first reconciliation", |s| s.reconciles.len() == 1).await;
    assert_eq!(master.seen().reconciles[0].tasks.len(), 2);

    // A new subscription: the implicit reconciliation reports the first task only.
    q.subscribed();
    q.update(&running(&tasks[0]), Instant::now());
    q.tick(&scheduler, Instant::now()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(master.seen().reconciles.len(), 1, "asked before the implicit one ended");
    q.reconciled();
    q.tick(&scheduler, Instant::now()).await;
    eventually(&master, "the explicit reconciliation", |s| s.reconciles.len() == 2).await;
    let asked: Vec<String> = master.seen().reconciles[1]
        .tasks
        .iter()
        .map(|t| t.task_id.clone())
        .collect();
    assert_eq!(asked, [tasks[1].clone()], "only the task not reported");

    // Without `reconciled`, the unreported ones are asked about a minute on.
    q.subscribed();
    let now = Instant::now();
    q.tick(&scheduler, now).await;
    q.tick(&scheduler, now + Duration::from_secs(61)).await;
    eventually(&master, "the late reconciliation", |s| s.reconciles.len() == 3).await;
    assert_eq!(master.seen().reconciles[2].tasks.len(), 2);
    scheduler.stop().await;
}
