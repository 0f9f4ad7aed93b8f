//! The status update manager actor: per-task queues, write-ahead, send,
//! resend with backoff, forget on acknowledgement.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet, VecDeque};
use std::time::Duration;

use mezzo_proto::backoff::Backoff;
use mezzo_proto::clock::unix_now;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::journal::{Journal, Record};
use super::{Recovered, StatusCmd, StatusConfig};
use crate::AgentError;
use crate::key::TaskKey;
use crate::metrics::Metrics;

/// Most commands handled (and records written) per fsync.
const MAX_BATCH: usize = 1024;
/// Compact once the file holds this many records and 4x the pending ones.
const COMPACT_MIN_RECORDS: usize = 4096;
/// A journal write (with its fsync) or compaction slower than this is
/// logged as a warning.
const SLOW_WRITE: Duration = Duration::from_millis(20);
/// At most one slow-write warning per this long (a slow disk is slow for
/// every batch; the warning counts the others).
const SLOW_WARN_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct TaskQueue {
    /// Oldest first; the head is the one in flight.
    updates: VecDeque<v1::StatusUpdate>,
    backoff: Backoff,
    /// Bumped whenever the head's retry timer is re-armed, so stale timer
    /// entries in the heap are recognised and skipped.
    timer_gen: u64,
}

fn state_of(update: &v1::StatusUpdate) -> Option<TaskState> {
    update.status.as_ref().and_then(|s| TaskState::from_proto(s.state))
}

fn uuid_of(update: &v1::StatusUpdate) -> &[u8] {
    update.status.as_ref().map(|s| s.uuid.as_slice()).unwrap_or_default()
}

fn key_of(update: &v1::StatusUpdate) -> Option<TaskKey> {
    let status = update.status.as_ref()?;
    TaskKey::parse(&update.framework_id, &status.task_id).ok()
}

pub(super) struct Manager {
    config: StatusConfig,
    journal: Option<Journal>,
    queues: BTreeMap<TaskKey, TaskQueue>,
    timers: BinaryHeap<Reverse<(Instant, TaskKey, u64)>>,
    outbound: Option<mpsc::Sender<v1::AgentMessage>>,
    rx: mpsc::Receiver<StatusCmd>,
    forget: mpsc::UnboundedSender<TaskKey>,
    metrics: Metrics,
    /// When the last slow-write warning was logged, and how many slow
    /// writes went unreported since.
    slow_warned: Option<std::time::Instant>,
    slow_unreported: u64,
}

impl Manager {
    pub(super) fn recover(
        config: StatusConfig,
        journal: Journal,
        records: Vec<Record>,
        rx: mpsc::Receiver<StatusCmd>,
        forget: mpsc::UnboundedSender<TaskKey>,
        metrics: Metrics,
    ) -> Manager {
        let mut m = Manager {
            config,
            journal: Some(journal),
            queues: BTreeMap::new(),
            timers: BinaryHeap::new(),
            outbound: None,
            rx,
            forget,
            metrics,
            slow_warned: None,
            slow_unreported: 0,
        };
        for record in records {
            match record {
                Record::Update(u) => match key_of(&u) {
                    Some(key) => m.queue(key).updates.push_back(u),
                    None => tracing::warn!("journal holds an update with invalid ids; skipped"),
                },
                Record::Ack(a) => {
                    let _ = m.apply_ack(&a);
                }
            }
        }
        m.metrics.pending_updates.set(m.pending() as i64);
        m
    }

    pub(super) fn recovered(&self) -> Vec<Recovered> {
        self.queues
            .iter()
            .filter_map(|(key, q)| {
                let latest_state = q.updates.back().and_then(state_of)?;
                let latest_reason = q
                    .updates
                    .back()
                    .and_then(|u| u.status.as_ref())
                    .and_then(|s| v1::StatusReason::try_from(s.reason).ok())
                    .unwrap_or(v1::StatusReason::ReasonUnspecified);
                Some(Recovered {
                    key: key.clone(),
                    latest_state,
                    latest_reason,
                    uuids: q.updates.iter().map(|u| uuid_of(u).to_vec()).collect(),
                })
            })
            .collect()
    }

    fn pending(&self) -> usize {
        self.queues.values().map(|q| q.updates.len()).sum()
    }

    fn queue(&mut self, key: TaskKey) -> &mut TaskQueue {
        let backoff = Backoff::new(self.config.retry_initial, self.config.retry_max);
        self.queues.entry(key).or_insert_with(|| TaskQueue {
            updates: VecDeque::new(),
            backoff,
            timer_gen: 0,
        })
    }

    pub(super) async fn run(mut self) -> Result<(), AgentError> {
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
            let first = tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => cmd,
                    None => return Ok(()),
                },
                _ = sleep_until_opt(next_timer) => {
                    self.resend_due();
                    continue;
                }
            };
            // Group everything already queued under one write and one fsync.
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            self.handle_batch(batch).await?;
        }
    }

    async fn handle_batch(&mut self, batch: Vec<StatusCmd>) -> Result<(), AgentError> {
        let mut bytes = Vec::new();
        let mut count = 0;
        let mut to_send: HashSet<TaskKey> = HashSet::new();
        let mut replies = Vec::new();
        let mut send_all = false;
        // Only new updates need the fsync before they are sent. A lost ack
        // record only makes a restarted agent resend an update that was
        // already acknowledged, which at-least-once delivery allows.
        let mut sync = false;

        // Change the queues in memory; nothing leaves before the fsync below.
        for cmd in batch {
            match cmd {
                StatusCmd::Update(key, status) => {
                    let update = self.stamp(&key, status);
                    Record::Update(update.clone()).encode(&mut bytes);
                    count += 1;
                    sync = true;
                    let queue = self.queue(key.clone());
                    queue.updates.push_back(update);
                    if queue.updates.len() == 1 {
                        to_send.insert(key);
                    }
                }
                StatusCmd::Ack(ack) => {
                    if let Some(next) = self.apply_ack(&ack) {
                        Record::Ack(ack).encode(&mut bytes);
                        count += 1;
                        if let Some(key) = next {
                            to_send.insert(key);
                        }
                    }
                }
                StatusCmd::Connected(outbound) => {
                    self.outbound = Some(outbound);
                    send_all = true;
                }
                StatusCmd::Disconnected => {
                    self.outbound = None;
                    send_all = false;
                    to_send.clear();
                }
                StatusCmd::Pending(reply) => replies.push(reply),
            }
        }

        if count > 0 {
            self.write(bytes, count, sync).await?;
        }
        let pending = self.pending();
        self.metrics.pending_updates.set(pending as i64);
        for reply in replies {
            let _ = reply.send(pending);
        }
        if send_all {
            let keys: Vec<TaskKey> = self.queues.keys().cloned().collect();
            for key in keys {
                self.send_head(&key, true);
            }
        } else {
            for key in to_send {
                self.send_head(&key, true);
            }
        }
        self.maybe_compact().await
    }

    /// Gives the update its UUID and wraps it for the wire. A custom
    /// executor's update keeps the 16-byte uuid the executor gave it: the
    /// framework's acknowledgement of it is passed back to the executor,
    /// which knows its updates by that uuid.
    fn stamp(&self, key: &TaskKey, mut status: v1::TaskStatus) -> v1::StatusUpdate {
        if status.uuid.len() != 16 {
            status.uuid = uuid::Uuid::new_v4().as_bytes().to_vec();
        }
        status.task_id = key.task_id.to_string();
        status.framework_id = key.framework_id.to_string();
        if status.timestamp == 0.0 {
            status.timestamp = unix_now();
        }
        let latest_state = status.state;
        v1::StatusUpdate {
            framework_id: key.framework_id.to_string(),
            status: Some(status),
            latest_state,
        }
    }

    /// Removes the head the ack names. `None`: the ack matched nothing.
    /// `Some(Some(key))`: a next head is now due; `Some(None)`: queue done.
    fn apply_ack(&mut self, ack: &v1::AcknowledgeUpdate) -> Option<Option<TaskKey>> {
        let Ok(key) = TaskKey::parse(&ack.framework_id, &ack.task_id) else {
            tracing::debug!(task_id = %ack.task_id, "acknowledgement with invalid ids ignored");
            return None;
        };
        let Some(queue) = self.queues.get_mut(&key) else {
            tracing::debug!(task = %key, "acknowledgement for a task with no pending update ignored");
            return None;
        };
        if queue.updates.front().map(uuid_of) != Some(ack.uuid.as_slice()) {
            tracing::debug!(task = %key, "acknowledgement of an update that is not the head ignored");
            return None;
        }
        let acked = queue.updates.pop_front();
        queue.backoff.reset();
        queue.timer_gen += 1;
        if !queue.updates.is_empty() {
            return Some(Some(key));
        }
        self.queues.remove(&key);
        if acked.as_ref().and_then(state_of).is_some_and(TaskState::is_terminal) {
            let _ = self.forget.send(key);
        }
        Some(None)
    }

    async fn write(&mut self, bytes: Vec<u8>, count: usize, sync: bool) -> Result<(), AgentError> {
        if !sync {
            // Acknowledgement records only: a write into the page cache,
            // cheaper in place than handing it to a blocking thread and back.
            let journal = self
                .journal
                .as_mut()
                .ok_or(AgentError::ActorStopped("status journal"))?;
            return journal.append(&bytes, count, false);
        }
        let Some(mut journal) = self.journal.take() else {
            return Err(AgentError::ActorStopped("status journal"));
        };
        let started = std::time::Instant::now();
        let (journal, result) = tokio::task::spawn_blocking(move || {
            let r = journal.append(&bytes, count, sync);
            (journal, r)
        })
        .await
        .map_err(|_| AgentError::ActorPanicked("status journal writer"))?;
        self.journal = Some(journal);
        // Every new update waits for this fsync: a slow disk shows here.
        let took = started.elapsed();
        if took > SLOW_WRITE {
            self.slow_write(count, took);
        }
        result
    }

    /// Logs a slow journal write, at most once per [`SLOW_WARN_EVERY`].
    fn slow_write(&mut self, count: usize, took: Duration) {
        if self.slow_warned.is_some_and(|at| at.elapsed() < SLOW_WARN_EVERY) {
            self.slow_unreported += 1;
            return;
        }
        let others = std::mem::take(&mut self.slow_unreported);
        self.slow_warned = Some(std::time::Instant::now());
        tracing::warn!(
            count,
            ?took,
            others_since_last_warning = others,
            "writing status updates to the journal was slow"
        );
    }

    async fn maybe_compact(&mut self) -> Result<(), AgentError> {
        let pending = self.pending();
        let records = self.journal.as_ref().map(Journal::records).unwrap_or_default();
        if records < COMPACT_MIN_RECORDS || records < 4 * pending {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for update in self.queues.values().flat_map(|q| q.updates.iter()) {
            Record::Update(update.clone()).encode(&mut bytes);
        }
        let Some(mut journal) = self.journal.take() else {
            return Err(AgentError::ActorStopped("status journal"));
        };
        let started = std::time::Instant::now();
        let (journal, result) = tokio::task::spawn_blocking(move || {
            let r = journal.compact(&bytes, pending);
            (journal, r)
        })
        .await
        .map_err(|_| AgentError::ActorPanicked("status journal compaction"))?;
        self.journal = Some(journal);
        // Updates wait meanwhile: a slow disk shows here first.
        let took = started.elapsed();
        if took > SLOW_WRITE {
            tracing::warn!(records, pending, ?took, "compacting the status journal was slow");
        } else {
            tracing::debug!(records, pending, ?took, "compacted the status journal");
        }
        result
    }

    /// Sends the head of `key`'s queue (if connected) and arms its retry.
    fn send_head(&mut self, key: &TaskKey, reset_backoff: bool) {
        let Some(outbound) = self.outbound.clone() else { return };
        let Some(queue) = self.queues.get(key) else { return };
        let Some(head) = queue.updates.front() else { return };
        let mut update = head.clone();
        // The head may lag behind: tell the master where the task is now.
        if let Some(latest) = queue.updates.back().and_then(|u| u.status.as_ref()) {
            update.latest_state = latest.state;
        }
        let msg = v1::AgentMessage {
            message: Some(v1::agent_message::Message::StatusUpdate(update)),
        };
        match outbound.try_send(msg) {
            Ok(()) => {
                self.metrics.updates_sent.inc();
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!(task = %key, "outbound stream full; update will be resent");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.outbound = None,
        }
        let Some(queue) = self.queues.get_mut(key) else { return };
        if reset_backoff {
            queue.backoff.reset();
        }
        let delay = queue.backoff.next_delay();
        queue.timer_gen += 1;
        self.timers
            .push(Reverse((Instant::now() + delay, key.clone(), queue.timer_gen)));
    }

    fn resend_due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, key, generation))) = self.timers.pop() else {
                break;
            };
            let live = self.queues.get(&key).is_some_and(|q| q.timer_gen == generation);
            if live && self.outbound.is_some() {
                tracing::debug!(task = %key, "resending unacknowledged status update");
                self.send_head(&key, false);
            }
        }
        if self.outbound.is_none() {
            // Every head is resent when the next connection comes up.
            self.timers.clear();
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
