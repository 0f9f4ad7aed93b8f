//! A framework's event stream as the owner task writes it: the stream's
//! bounded queue and, once that is full, an overflow behind it that is
//! moved into the queue as the framework reads.
//!
//! Bursts the master makes itself are as large as the framework: a
//! re-subscription resends every unacknowledged update, an implicit
//! reconciliation answers for every task. A framework with more tasks than
//! the queue holds was disconnected by each of them, subscribed again and
//! was sent the same burst: it never came back (a failover with 100,000
//! tasks in `mezzo-sim`). The overflow keeps at most one update per task
//! and kind (acknowledged or reconciliation answer; a newer one replaces
//! the older in place), so it is bounded by the framework's tasks;
//! other events (offers, rescinds, `Reconciled`) keep their order behind
//! the updates before them and are bounded by [`OTHERS_MAX`]: a stream
//! that reads nothing is still dropped once that many wait.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mezzo_proto::v1;
use tokio::sync::{mpsc, oneshot};

use super::{Command, FrameworkTx};
use crate::core::ConnId;

/// Events other than task updates the overflow holds before the stream is
/// dropped as not reading (the queue holds as many again).
pub const OTHERS_MAX: usize = 65_536;

/// How much of the queue must be free before the overflow is moved in:
/// one wake-up of the owner task per this many events read.
const ROOM: usize = 4_096;

/// Why an event could not be queued or held.
#[derive(Debug, PartialEq, Eq)]
pub enum Unwritable {
    /// The stream ended (the framework left).
    Closed,
    /// The framework has read nothing while [`OTHERS_MAX`] events waited.
    NotReading,
}

impl Unwritable {
    pub fn why(&self) -> &'static str {
        match self {
            Unwritable::Closed => "is closed",
            Unwritable::NotReading => "is not reading (its queue and overflow are full)",
        }
    }
}

/// One framework stream.
#[derive(Debug)]
pub struct Outbox {
    tx: FrameworkTx,
    /// Events waiting for room in the queue, oldest first.
    overflow: VecDeque<v1::Event>,
    /// Sequence number of `overflow`'s front.
    front: u64,
    /// Where each task's held update is (its sequence number), by kind
    /// ([`UpdateKind`]) and task. The other held events are
    /// `overflow.len()` less these.
    updates: [HashMap<String, u64>; 2],
    /// Dropped to call off the wait for room (the stream is forgotten).
    waiting: Option<oneshot::Sender<()>>,
    /// Events held by every outbox (the `framework_events_held` gauge).
    held_total: Arc<AtomicU64>,
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.held_total.fetch_sub(self.overflow.len() as u64, Ordering::Relaxed);
    }
}

impl Outbox {
    pub fn new(tx: FrameworkTx, held_total: Arc<AtomicU64>) -> Outbox {
        Outbox {
            tx,
            overflow: VecDeque::new(),
            front: 0,
            updates: Default::default(),
            waiting: None,
            held_total,
        }
    }

    /// Events held behind the queue.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.overflow.len()
    }

    /// Held events that are not task updates.
    fn others(&self) -> usize {
        self.overflow.len() - self.updates.iter().map(HashMap::len).sum::<usize>()
    }

    /// Queues `event`, or holds it while the queue is full (then `wake` is
    /// sent `FrameworkDrained(conn)` once there is room).
    pub fn send(&mut self, conn: ConnId, event: v1::Event, wake: &mpsc::WeakSender<Command>) -> Result<(), Unwritable> {
        if self.overflow.is_empty() {
            match self.tx.try_send(Ok(event)) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(Unwritable::Closed),
                // Only `Ok` items are ever sent.
                Err(mpsc::error::TrySendError::Full(item)) => {
                    tracing::info!(conn, "framework stream is behind; holding its events until it reads");
                    if let Ok(event) = item {
                        self.hold(event)?;
                    }
                    self.wait_for_room(conn, wake.clone());
                    return Ok(());
                }
            }
        }
        if self.tx.is_closed() {
            return Err(Unwritable::Closed);
        }
        self.hold(event)
    }

    fn hold(&mut self, event: v1::Event) -> Result<(), Unwritable> {
        let next = self.front + self.overflow.len() as u64;
        match update_of(&event) {
            Some((task, kind)) => {
                if let Some(&at) = self.updates[kind as usize].get(task) {
                    // The task's newer update, where the older one was.
                    self.overflow[(at - self.front) as usize] = event;
                    return Ok(());
                }
                self.updates[kind as usize].insert(task.to_owned(), next);
            }
            None if self.others() >= OTHERS_MAX => return Err(Unwritable::NotReading),
            None => {}
        }
        self.overflow.push_back(event);
        self.held_total.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// There is room in the queue: moves held events into it, oldest
    /// first, and waits again if some are left.
    pub fn drained(&mut self, conn: ConnId, wake: &mpsc::WeakSender<Command>) -> Result<(), Unwritable> {
        self.waiting = None;
        while let Some(event) = self.overflow.pop_front() {
            // Out of the overflow (and the gauge) before it is sent, back
            // in if the queue is full: once sent, a later update of the
            // task is held anew, behind what is queued.
            self.held_total.fetch_sub(1, Ordering::Relaxed);
            if let Some((task, kind)) = update_of(&event) {
                self.updates[kind as usize].remove(task);
            }
            match self.tx.try_send(Ok(event)) {
                Ok(()) => self.front += 1,
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(Unwritable::Closed),
                Err(mpsc::error::TrySendError::Full(item)) => {
                    if let Ok(event) = item {
                        if let Some((task, kind)) = update_of(&event) {
                            self.updates[kind as usize].insert(task.to_owned(), self.front);
                        }
                        self.overflow.push_front(event);
                        self.held_total.fetch_add(1, Ordering::Relaxed);
                    }
                    self.wait_for_room(conn, wake.clone());
                    return Ok(());
                }
            }
        }
        tracing::info!(conn, "framework stream caught up");
        Ok(())
    }

    /// Sends `FrameworkDrained(conn)` to the owner task once [`ROOM`]
    /// places are free in the queue. The wait holds a sender of the
    /// stream: it ends when this outbox is dropped, so that dropping the
    /// outbox still ends the stream.
    fn wait_for_room(&mut self, conn: ConnId, wake: mpsc::WeakSender<Command>) {
        let (call_off, called_off) = oneshot::channel();
        self.waiting = Some(call_off);
        let tx = self.tx.clone();
        let room = ROOM.min(tx.max_capacity());
        tokio::spawn(async move {
            tokio::select! {
                permits = tx.reserve_many(room) => {
                    if permits.is_err() {
                        return;
                    }
                }
                _ = called_off => return,
            }
            drop(tx);
            if let Some(wake) = wake.upgrade() {
                let _ = wake.send(Command::FrameworkDrained(conn)).await;
            }
        });
    }
}

/// The two kinds of task update the overflow keeps apart.
#[derive(Debug, Clone, Copy)]
enum UpdateKind {
    /// An agent's update, waiting for its acknowledgement.
    Acknowledged = 0,
    /// A reconciliation answer (no uuid).
    Answer = 1,
}

/// A task update's task and kind; `None` for other events.
fn update_of(event: &v1::Event) -> Option<(&str, UpdateKind)> {
    match &event.event {
        Some(v1::event::Event::Update(v1::Update { status: Some(s) })) => {
            let kind = if s.uuid.is_empty() {
                UpdateKind::Answer
            } else {
                UpdateKind::Acknowledged
            };
            Some((s.task_id.as_str(), kind))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(task: &str, uuid: &[u8], message: &str) -> v1::Event {
        v1::Event {
            event: Some(v1::event::Event::Update(v1::Update {
                status: Some(v1::TaskStatus {
                    task_id: task.into(),
                    uuid: uuid.to_vec(),
                    message: message.into(),
                    ..Default::default()
                }),
            })),
        }
    }

    fn heartbeat() -> v1::Event {
        v1::Event {
            event: Some(v1::event::Event::Heartbeat(v1::Heartbeat {})),
        }
    }

    /// What an event says, for comparing orders.
    fn label(event: &v1::Event) -> String {
        match &event.event {
            Some(v1::event::Event::Update(v1::Update { status: Some(s) })) => format!("{}:{}", s.task_id, s.message),
            _ => "beat".into(),
        }
    }

    /// A burst larger than the queue reaches a framework that reads it,
    /// in order, with a task's newer update where its older one waited and
    /// a reconciliation answer kept apart from an acknowledged update.
    #[tokio::test]
    async fn a_burst_larger_than_the_queue_arrives_in_order_once_read() {
        let (cmd_tx, mut cmds) = mpsc::channel(8);
        let wake = cmd_tx.downgrade();
        let (tx, mut rx) = mpsc::channel(2);
        let total = Arc::new(AtomicU64::new(0));
        let mut out = Outbox::new(tx, total.clone());
        let sent = [
            update("a", b"1", "a1"),
            update("b", b"1", "b1"),
            update("c", b"1", "c1"),
            heartbeat(),
            update("d", b"1", "d1"),
            update("c", b"2", "c2"),
            update("c", b"", "c-reconciled"),
            heartbeat(),
        ];
        for e in sent {
            out.send(7, e, &wake).expect("held");
        }
        assert_eq!(out.held(), 5, "c's newer update replaced its older one");
        assert_eq!(total.load(Ordering::Relaxed), 5);
        let mut got = Vec::new();
        while got.len() < 7 {
            tokio::select! {
                Some(Ok(e)) = rx.recv() => got.push(label(&e)),
                Some(cmd) = cmds.recv() => match cmd {
                    Command::FrameworkDrained(conn) => {
                        assert_eq!(conn, 7);
                        out.drained(conn, &wake).expect("drained");
                    }
                    _ => panic!("unexpected command"),
                },
            }
        }
        assert_eq!(got, ["a:a1", "b:b1", "c:c2", "beat", "d:d1", "c:c-reconciled", "beat"]);
        assert_eq!((out.held(), total.load(Ordering::Relaxed)), (0, 0));
        // Caught up: the next event goes straight into the queue.
        out.send(7, heartbeat(), &wake).expect("queued");
        assert_eq!(
            rx.recv().await.map(|e| e.map(|e| label(&e)).ok()),
            Some(Some("beat".into()))
        );
    }

    /// A framework that reads nothing is still dropped, once the events
    /// other than updates fill the overflow; an ended stream is closed,
    /// and what it held leaves the gauge.
    #[tokio::test]
    async fn a_stream_that_reads_nothing_is_dropped_and_a_closed_one_closed() {
        let (cmd_tx, _cmds) = mpsc::channel(8);
        let wake = cmd_tx.downgrade();
        let (tx, rx) = mpsc::channel(1);
        let total = Arc::new(AtomicU64::new(0));
        let mut out = Outbox::new(tx, total.clone());
        out.send(1, heartbeat(), &wake).expect("queued");
        for i in 0..10 {
            // Updates of the same tasks only ever replace each other.
            out.send(1, update(&format!("t{}", i % 3), b"1", "x"), &wake)
                .expect("held");
        }
        assert_eq!(out.held(), 3);
        for _ in 0..OTHERS_MAX {
            out.send(1, heartbeat(), &wake).expect("held");
        }
        assert_eq!(out.send(1, heartbeat(), &wake), Err(Unwritable::NotReading));
        drop(rx);
        assert_eq!(out.send(1, heartbeat(), &wake), Err(Unwritable::Closed));
        // Found closed while moving what it held: the gauge ends at 0.
        assert_eq!(out.drained(1, &wake), Err(Unwritable::Closed));
        drop(out);
        assert_eq!(
            total.load(Ordering::Relaxed),
            0,
            "events of a closed stream still counted"
        );
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        assert_eq!(
            Outbox::new(tx, Arc::default()).send(1, heartbeat(), &wake),
            Err(Unwritable::Closed)
        );
    }

    /// Dropping an outbox that waits for room ends its stream (the wait
    /// holds no sender past it) and takes its events off the gauge.
    #[tokio::test]
    async fn dropping_a_waiting_outbox_ends_its_stream() {
        let (cmd_tx, _cmds) = mpsc::channel(8);
        let wake = cmd_tx.downgrade();
        let (tx, mut rx) = mpsc::channel(1);
        let total = Arc::new(AtomicU64::new(0));
        let mut out = Outbox::new(tx, total.clone());
        out.send(1, heartbeat(), &wake).expect("queued");
        out.send(1, heartbeat(), &wake).expect("held");
        assert_eq!(total.load(Ordering::Relaxed), 1);
        drop(out);
        assert_eq!(total.load(Ordering::Relaxed), 0, "a dropped outbox still counted");
        assert!(rx.recv().await.is_some());
        let end = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await;
        assert!(matches!(end, Ok(None)), "the stream did not end");
    }
}
