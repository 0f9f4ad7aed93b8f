//! Durable Raft log storage for the master (DESIGN.md, "Durable state (Raft)").
//!
//! [`RaftStorage`] implements [`raft::Storage`] on top of raft-engine. Log
//! entries live in raft-engine's entry log for one raft group ([`GROUP`]);
//! the hard state, the conf state and the latest snapshot (metadata *and*
//! the application state it captures) are key-values of the same group, so
//! every change — entries plus hard state, a compaction plus its snapshot —
//! is one atomic `LogBatch`.
//!
//! Invariants kept by every mutator (and checked by [`RaftStorage::open`]):
//!
//! * the first entry held by raft-engine, if any, is `snapshot.index + 1`;
//! * `hard_state.commit >= snapshot.index` (raft-rs refuses to start
//!   otherwise).
//!
//! The in-memory copies of hard state, conf state, snapshot and the terms of
//! the live entries are updated only after the batch carrying them was
//! written successfully.
//!
//! **Reads run on a thread of their own.** raft-engine 0.4 decodes entries
//! through a *thread-local* one-block cache keyed only by (file sequence,
//! offset, length) — not by engine. Two engines read from the same thread
//! (several masters in one process, or a log reopened in the same thread)
//! can therefore be served each other's entries. Every block read of one
//! `RaftStorage` (entries, the open-time verification, and the rewrites done
//! by `purge_expired_files`) is executed on its private reader thread, so
//! that cache only ever holds this engine's blocks. Terms are kept in
//! memory, so `term()` never reads the disk.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{Error as RaftError, GetEntriesContext, RaftState, StorageError};
use raft_engine::{Command, Config, Engine, LogBatch, MessageExt, ReadableSize, RecoveryMode};
use tracing::{debug, info, warn};

/// Raft group id used inside raft-engine (one group per master).
const GROUP: u64 = 1;

/// Key of the persisted [`HardState`].
const KEY_HARD_STATE: &[u8] = b"hard_state";
/// Key of the persisted [`ConfState`].
const KEY_CONF_STATE: &[u8] = b"conf_state";
/// Key of the persisted [`Snapshot`] (metadata and application data).
const KEY_SNAPSHOT: &[u8] = b"snapshot";

/// raft-engine rotates log files at this size. Only whole files can be
/// purged, so this bounds how much compacted log lingers on disk.
const TARGET_FILE_SIZE: u64 = 32 * 1024 * 1024;
/// raft-engine only purges (rewriting live data out of old files) once the
/// append queue is larger than this.
const PURGE_THRESHOLD: u64 = 256 * 1024 * 1024;
/// Entries read per chunk when `open` verifies the whole log.
const VERIFY_CHUNK: u64 = 1024;

/// Errors of the durable Raft storage. Every message names the directory.
#[derive(Debug, thiserror::Error)]
pub enum RaftStorageError {
    /// raft-engine found a truncated or corrupted file (or a record that
    /// does not decode) while opening.
    #[error("raft log in {dir} is corrupt or truncated: {source}; refusing to start")]
    Corrupt {
        dir: PathBuf,
        #[source]
        source: raft_engine::Error,
    },
    /// The files decode but their contents contradict each other.
    #[error("raft log in {dir} is inconsistent: {detail}; refusing to start")]
    Inconsistent { dir: PathBuf, detail: String },
    /// The log could not be opened for another reason (permissions, lock
    /// held by another process, not a directory, ...).
    #[error("cannot open raft log in {dir}: {source}")]
    Open {
        dir: PathBuf,
        #[source]
        source: raft_engine::Error,
    },
    /// A write to the log failed; the in-memory state was left unchanged.
    #[error("writing raft log in {dir} failed: {source}")]
    Write {
        dir: PathBuf,
        #[source]
        source: raft_engine::Error,
    },
    /// A read from the log failed.
    #[error("reading raft log in {dir} failed: {source}")]
    Read {
        dir: PathBuf,
        #[source]
        source: raft_engine::Error,
    },
    /// The caller asked for something the log cannot do (append over the
    /// compacted prefix or with a gap, compact out of range, bootstrap twice,
    /// install an out-of-date snapshot).
    #[error("invalid operation on raft log in {dir}: {detail}")]
    Invalid { dir: PathBuf, detail: String },
}

/// Marker type telling raft-engine how to find the index of an [`Entry`]
/// (the orphan rule forbids implementing `MessageExt` on `Entry` itself).
#[derive(Debug, Clone, Copy)]
pub struct EntryExt;

impl MessageExt for EntryExt {
    type Entry = Entry;

    fn index(e: &Entry) -> u64 {
        e.index
    }
}

impl Drop for RaftStorage {
    /// A clean close brings the mark up to date.
    fn drop(&mut self) {
        let now = Mark {
            term: self.hard_state.term,
            last: self.last(),
        };
        if now != self.marked && self.initialized {
            let _ = self.write_mark(now);
        }
    }
}

/// Durable Raft storage: the log, hard state, conf state and latest
/// snapshot of the master's single raft group, in a raft-engine directory.
pub struct RaftStorage {
    dir: PathBuf,
    engine: Arc<Engine>,
    /// The only thread that reads entry blocks of `engine` (see module doc).
    reader: Reader,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    /// `terms[i]` is the term of entry `snapshot.index + 1 + i`; its length
    /// is the number of live entries.
    terms: VecDeque<u64>,
    initialized: bool,
    /// The high-water mark last written beside the log (see [`Mark`]).
    marked: Mark,
    marked_at: std::time::Instant,
}

/// What this node has acknowledged, written atomically beside the log
/// (`<dir>.mark`). raft-engine preallocates its files, so a killed process
/// leaves a zero tail that recovery must tolerate; the mark tells such a
/// benign tail from a file that lost acknowledged entries or votes.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Mark {
    term: u64,
    /// Last entry synced to the log (acknowledged to the leader).
    last: u64,
}

/// Marks that only move `last` forward are written at most this often.
const MARK_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

type Job = Box<dyn FnOnce(&Engine) + Send>;

/// A thread owning a handle on the engine that runs read jobs one at a time.
struct Reader {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Reader {
    fn spawn(engine: Arc<Engine>) -> std::io::Result<Reader> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("raft-log-reader".to_string())
            .spawn(move || {
                for job in rx {
                    job(&engine);
                }
            })?;
        Ok(Reader {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Runs `f` on the reader thread and waits for its result. `None` if the
    /// thread is gone (a previous job panicked).
    fn run<R: Send + 'static>(&self, f: impl FnOnce(&Engine) -> R + Send + 'static) -> Option<R> {
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |engine| {
            let _ = done_tx.send(f(engine));
        });
        self.tx.as_ref()?.send(job).ok()?;
        done_rx.recv().ok()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn reader_gone() -> raft_engine::Error {
    raft_engine::Error::Other("raft log reader thread stopped".into())
}

impl std::fmt::Debug for RaftStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftStorage")
            .field("dir", &self.dir)
            .field("hard_state", &self.hard_state)
            .field("conf_state", &self.conf_state)
            .field("snapshot_metadata", self.snapshot.get_metadata())
            .field("snapshot_data_len", &self.snapshot.get_data().len())
            .finish()
    }
}

impl RaftStorage {
    /// Opens or creates the log in `dir`.
    ///
    /// raft-engine preallocates its files, so a process killed mid-run
    /// leaves a zero-filled tail after the last write: that tail (and a
    /// torn last batch, which was never acknowledged) is tolerated. Damage
    /// to anything that was acknowledged is not: the checks below refuse
    /// the start, naming the dir, when entries up to the stored commit
    /// index are missing or unreadable.
    ///
    /// Beyond raft-engine's own recovery (which verifies every batch header
    /// and item checksum but only the *last* batch's entry block), this reads
    /// every live entry once so that a damaged entry block anywhere is found
    /// now rather than when raft first needs that entry.
    pub fn open(dir: &Path) -> Result<RaftStorage, RaftStorageError> {
        Self::open_with(dir, TARGET_FILE_SIZE, PURGE_THRESHOLD)
    }

    fn open_with(dir: &Path, target_file_size: u64, purge_threshold: u64) -> Result<RaftStorage, RaftStorageError> {
        let dir = dir.to_path_buf();
        let cfg = Config {
            dir: dir.to_string_lossy().into_owned(),
            recovery_mode: RecoveryMode::TolerateTailCorruption,
            target_file_size: ReadableSize(target_file_size),
            purge_threshold: ReadableSize(purge_threshold),
            ..Default::default()
        };
        let engine = Arc::new(Engine::open(cfg).map_err(|source| open_error(&dir, source))?);
        let corrupt = |source| RaftStorageError::Corrupt {
            dir: dir.clone(),
            source,
        };
        let hard_state: Option<HardState> = engine.get_message(GROUP, KEY_HARD_STATE).map_err(corrupt)?;
        let conf_state: Option<ConfState> = engine.get_message(GROUP, KEY_CONF_STATE).map_err(corrupt)?;
        let snapshot: Option<Snapshot> = engine.get_message(GROUP, KEY_SNAPSHOT).map_err(corrupt)?;
        let initialized = hard_state.is_some() || conf_state.is_some() || snapshot.is_some();
        let reader = Reader::spawn(engine.clone()).map_err(|e| RaftStorageError::Open {
            dir: dir.clone(),
            source: raft_engine::Error::Io(e),
        })?;
        let mut storage = RaftStorage {
            dir,
            engine,
            reader,
            hard_state: hard_state.unwrap_or_default(),
            conf_state: conf_state.unwrap_or_default(),
            snapshot: snapshot.unwrap_or_default(),
            terms: VecDeque::new(),
            initialized,
            marked: Mark::default(),
            marked_at: std::time::Instant::now(),
        };
        storage.terms = storage.verify()?;
        storage.check_mark()?;
        info!(
            dir = %storage.dir.display(),
            first_index = storage.first(),
            last_index = storage.last(),
            commit = storage.hard_state.commit,
            term = storage.hard_state.term,
            "opened raft log"
        );
        Ok(storage)
    }

    fn mark_path(&self) -> PathBuf {
        let mut p = self.dir.clone().into_os_string();
        p.push(".mark");
        PathBuf::from(p)
    }

    /// Refuses a log that holds less than the mark says was acknowledged.
    fn check_mark(&mut self) -> Result<(), RaftStorageError> {
        let path = self.mark_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(RaftStorageError::Inconsistent {
                    dir: self.dir.clone(),
                    detail: format!("cannot read {}: {e}", path.display()),
                });
            }
        };
        let mark: Mark = serde_json::from_str(&text).map_err(|e| RaftStorageError::Inconsistent {
            dir: self.dir.clone(),
            detail: format!("{} does not decode: {e}", path.display()),
        })?;
        if self.hard_state.term < mark.term || self.last() < mark.last {
            return Err(RaftStorageError::Inconsistent {
                dir: self.dir.clone(),
                detail: format!(
                    "the log lost acknowledged state (it holds term {} and entries up to {}, but term {} and entries up to {} were acknowledged; {} says so): a file was truncated or damaged",
                    self.hard_state.term,
                    self.last(),
                    mark.term,
                    mark.last,
                    path.display()
                ),
            });
        }
        self.marked = mark;
        Ok(())
    }

    /// Records the term and the last synced entry beside the log: at once
    /// when the term changed or the log shrank (a conflicting suffix was
    /// replaced), otherwise at most every [`MARK_EVERY`] (see
    /// [`mark_if_stale`](Self::mark_if_stale) for the rest).
    fn mark(&mut self) -> Result<(), RaftStorageError> {
        let now = Mark {
            term: self.hard_state.term,
            last: self.last(),
        };
        let urgent = now.term != self.marked.term || now.last < self.marked.last || self.marked == Mark::default();
        let due = urgent || (now.last > self.marked.last && self.marked_at.elapsed() >= MARK_EVERY);
        if due { self.write_mark(now) } else { Ok(()) }
    }

    /// Writes a mark that fell behind; call it now and then (the Raft node
    /// does on every tick) so an idle log's mark catches up.
    pub fn mark_if_stale(&mut self) -> Result<(), RaftStorageError> {
        let now = Mark {
            term: self.hard_state.term,
            last: self.last(),
        };
        if now != self.marked && self.marked_at.elapsed() >= MARK_EVERY {
            self.write_mark(now)
        } else {
            Ok(())
        }
    }

    fn write_mark(&mut self, now: Mark) -> Result<(), RaftStorageError> {
        let path = self.mark_path();
        let io = |e: std::io::Error| RaftStorageError::Write {
            dir: self.dir.clone(),
            source: raft_engine::Error::Io(e),
        };
        let tmp = path.with_extension("mark.tmp");
        let text = serde_json::to_vec(&now).map_err(|e| io(std::io::Error::other(e)))?;
        {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&text).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        self.marked = now;
        self.marked_at = std::time::Instant::now();
        Ok(())
    }

    /// Checks the invariants, reads every live entry once (checksums) and
    /// returns their terms.
    fn verify(&self) -> Result<VecDeque<u64>, RaftStorageError> {
        let snap_index = self.snap_index();
        let inconsistent = |detail: String| RaftStorageError::Inconsistent {
            dir: self.dir.clone(),
            detail,
        };
        let corrupt = |source| RaftStorageError::Corrupt {
            dir: self.dir.clone(),
            source,
        };
        let span = (self.engine.first_index(GROUP), self.engine.last_index(GROUP));
        let (first, last) = match span {
            (Some(first), Some(last)) => (first, last),
            _ => (snap_index + 1, snap_index),
        };
        if first != snap_index + 1 {
            return Err(inconsistent(format!(
                "first log entry is {first} but the snapshot is at index {snap_index}"
            )));
        }
        if self.hard_state.commit < snap_index || self.hard_state.commit > last {
            return Err(inconsistent(format!(
                "commit index {} is outside [{snap_index}, {last}]",
                self.hard_state.commit
            )));
        }
        let read = self.reader.run(
            move |engine| -> Result<Result<VecDeque<u64>, String>, raft_engine::Error> {
                let mut terms = VecDeque::with_capacity((last + 1 - first) as usize);
                let mut low = first;
                while low <= last {
                    let high = std::cmp::min(low + VERIFY_CHUNK, last + 1);
                    let mut buf = Vec::with_capacity((high - low) as usize);
                    engine.fetch_entries_to::<EntryExt>(GROUP, low, high, None, &mut buf)?;
                    if buf.len() as u64 != high - low {
                        return Ok(Err(format!("entries [{low}, {high}) are incomplete")));
                    }
                    for (i, e) in buf.iter().enumerate() {
                        if e.index != low + i as u64 {
                            return Ok(Err(format!(
                                "entry at position {} has index {}",
                                low + i as u64,
                                e.index
                            )));
                        }
                        terms.push_back(e.term);
                    }
                    low = high;
                }
                Ok(Ok(terms))
            },
        );
        match read {
            None => Err(corrupt(reader_gone())),
            Some(Err(source)) => Err(corrupt(source)),
            Some(Ok(Err(detail))) => Err(inconsistent(detail)),
            Some(Ok(Ok(terms))) => Ok(terms),
        }
    }

    /// True when anything was ever written (hard state, conf state or
    /// snapshot).
    pub fn is_initialized(&self) -> bool {
        self.initialized
    }

    /// For a brand-new group: stores a snapshot at index 0 / term 0 whose
    /// metadata conf_state has `voters` and whose data is `data` (the
    /// application's initial state), durably. The conf state becomes
    /// `voters`; the hard state stays empty.
    pub fn bootstrap(&mut self, voters: &[u64], data: Vec<u8>) -> Result<(), RaftStorageError> {
        if self.initialized || !self.terms.is_empty() {
            return Err(self.invalid("bootstrap of a log that already holds state".to_string()));
        }
        let mut cs = ConfState::default();
        cs.set_voters(voters.to_vec());
        let mut snap = Snapshot::default();
        snap.set_data(data.into());
        {
            let meta = snap.mut_metadata();
            meta.index = 0;
            meta.term = 0;
            meta.set_conf_state(cs.clone());
        }
        let hs = HardState::default();
        let mut batch = LogBatch::default();
        self.put(&mut batch, KEY_SNAPSHOT, &snap)?;
        self.put(&mut batch, KEY_CONF_STATE, &cs)?;
        self.put(&mut batch, KEY_HARD_STATE, &hs)?;
        self.write(&mut batch, true)?;
        self.snapshot = snap;
        self.conf_state = cs;
        self.hard_state = hs;
        self.initialized = true;
        Ok(())
    }

    /// Appends entries (replacing any conflicting suffix, as
    /// `MemStorage::append` does: entries with index <= existing last are
    /// overwritten and everything after them dropped) and, if given, the
    /// hard state, in ONE `LogBatch` written with sync=true (one fsync).
    ///
    /// Where `MemStorage` panics (entries starting inside the compacted
    /// prefix, or leaving a gap after the last entry) this returns
    /// [`RaftStorageError::Invalid`] and writes nothing; non-contiguous
    /// `entries` are refused the same way.
    pub fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<(), RaftStorageError> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        let mut batch = LogBatch::default();
        if let Some(first) = entries.first() {
            let (first_index, last_index) = (self.first(), self.last());
            if first.index < first_index {
                return Err(self.invalid(format!(
                    "append at index {} overwrites compacted entries (first index {first_index})",
                    first.index
                )));
            }
            if first.index > last_index + 1 {
                return Err(self.invalid(format!(
                    "append at index {} leaves a gap after last index {last_index}",
                    first.index
                )));
            }
            if let Some(w) = entries.windows(2).find(|w| w[1].index != w[0].index + 1) {
                return Err(self.invalid(format!(
                    "appended entries are not contiguous: {} followed by {}",
                    w[0].index, w[1].index
                )));
            }
            batch
                .add_entries::<EntryExt>(GROUP, entries)
                .map_err(|source| self.write_error(source))?;
        }
        if let Some(hs) = hard_state {
            self.put(&mut batch, KEY_HARD_STATE, hs)?;
        }
        // Replacing a suffix shrinks the log: lower the mark first, so a crash
        // between the two never leaves a mark above what the log holds.
        if let Some(first) = entries.first()
            && first.index.saturating_sub(1) < self.marked.last
        {
            let lowered = Mark {
                term: self.marked.term,
                last: first.index.saturating_sub(1),
            };
            self.write_mark(lowered)?;
        }
        self.write(&mut batch, sync || !entries.is_empty())?;
        if let Some(first) = entries.first() {
            self.terms.truncate((first.index - self.first()) as usize);
            self.terms.extend(entries.iter().map(|e| e.term));
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs.clone();
            self.initialized = true;
        }
        self.mark()
    }

    /// Updates the commit index of the hard state (from a `LightReady`).
    ///
    /// Written without fsync on purpose: the commit index is a cluster fact
    /// (a quorum persisted the entry), not something only this node knows.
    /// If a crash loses it, the node restarts with an older commit index,
    /// re-applies from its snapshot up to that index and learns the newer
    /// commit index from the leader again, as raft-rs and etcd-raft allow
    /// ("HardState.commit need not be synced"). The entries themselves were
    /// synced by [`append`](Self::append), and raft-engine is an append-only
    /// log, so the next synced write makes this one durable as well.
    /// [`compact`](Self::compact) and [`apply_snapshot`](Self::apply_snapshot)
    /// raise the commit index to the snapshot index in their own synced
    /// batch, so the stored commit never falls below the snapshot.
    pub fn set_commit(&mut self, commit: u64) -> Result<(), RaftStorageError> {
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        let mut batch = LogBatch::default();
        self.put(&mut batch, KEY_HARD_STATE, &hs)?;
        self.write(&mut batch, false)?;
        self.hard_state = hs;
        self.initialized = true;
        self.mark()
    }

    /// Persists a new ConfState (after `apply_conf_change`), synced.
    pub fn set_conf_state(&mut self, cs: ConfState) -> Result<(), RaftStorageError> {
        let mut batch = LogBatch::default();
        self.put(&mut batch, KEY_CONF_STATE, &cs)?;
        self.write(&mut batch, true)?;
        self.conf_state = cs;
        self.initialized = true;
        Ok(())
    }

    /// Installs a snapshot received from the leader: drops the whole log,
    /// stores the snapshot, sets hard state commit/term at least to the
    /// snapshot's index/term and conf state to the snapshot's; synced.
    ///
    /// Like `MemStorage::apply_snapshot`, a snapshot whose index is below
    /// `first_index()` is refused (here as [`RaftStorageError::Invalid`],
    /// "snapshot out of date").
    pub fn apply_snapshot(&mut self, snap: Snapshot) -> Result<(), RaftStorageError> {
        let meta = snap.get_metadata();
        let first_index = self.first();
        if meta.index < first_index {
            return Err(self.invalid(format!(
                "snapshot out of date: index {} is below first index {first_index}",
                meta.index
            )));
        }
        let mut hs = self.hard_state.clone();
        hs.term = std::cmp::max(hs.term, meta.term);
        hs.commit = std::cmp::max(hs.commit, meta.index);
        let cs = meta.get_conf_state().clone();
        let mut batch = LogBatch::default();
        if !self.terms.is_empty() {
            // Drops every entry, whatever the snapshot index: the next
            // append starts a fresh log at snapshot index + 1.
            batch.add_command(
                GROUP,
                Command::Compact {
                    index: std::cmp::max(self.last(), meta.index) + 1,
                },
            );
        }
        self.put(&mut batch, KEY_SNAPSHOT, &snap)?;
        self.put(&mut batch, KEY_HARD_STATE, &hs)?;
        self.put(&mut batch, KEY_CONF_STATE, &cs)?;
        self.write(&mut batch, true)?;
        debug!(dir = %self.dir.display(), index = meta.index, term = meta.term, "installed raft snapshot");
        self.snapshot = snap;
        self.hard_state = hs;
        self.conf_state = cs;
        self.terms.clear();
        self.initialized = true;
        self.mark()
    }

    /// Log compaction: records a snapshot of the application state `data`
    /// at `index` (which must be <= the last index and > the current
    /// snapshot index; its term is looked up from the log), with conf state
    /// `cs`, then compacts the log so that `first_index() == index + 1`, and
    /// lets raft-engine purge old files. Synced.
    ///
    /// The snapshot, the compaction and (if needed) raising the commit index
    /// to `index` are one atomic batch. `cs` is only the snapshot's conf
    /// state; the current conf state (`conf_state()`) is left as is. A
    /// failure of raft-engine's purge is logged, not returned: the
    /// compaction itself is durable and the next purge retries.
    pub fn compact(&mut self, index: u64, cs: ConfState, data: Vec<u8>) -> Result<(), RaftStorageError> {
        let (snap_index, last_index) = (self.snap_index(), self.last());
        if index <= snap_index || index > last_index {
            return Err(self.invalid(format!(
                "compact to {index} outside ({snap_index}, {last_index}] (snapshot index, last index]"
            )));
        }
        let term = self.terms[(index - snap_index - 1) as usize];
        let mut snap = Snapshot::default();
        snap.set_data(data.into());
        {
            let meta = snap.mut_metadata();
            meta.index = index;
            meta.term = term;
            meta.set_conf_state(cs);
        }
        let mut hs = self.hard_state.clone();
        hs.commit = std::cmp::max(hs.commit, index);
        let mut batch = LogBatch::default();
        self.put(&mut batch, KEY_SNAPSHOT, &snap)?;
        if hs != self.hard_state {
            self.put(&mut batch, KEY_HARD_STATE, &hs)?;
        }
        batch.add_command(GROUP, Command::Compact { index: index + 1 });
        self.write(&mut batch, true)?;
        self.snapshot = snap;
        self.hard_state = hs;
        self.terms.drain(..(index - snap_index) as usize);
        self.initialized = true;
        // Purging rewrites live data out of old files, which reads entry
        // blocks: it must run on the reader thread too.
        match self.reader.run(|engine| engine.purge_expired_files()) {
            Some(Ok(groups)) if !groups.is_empty() => {
                debug!(dir = %self.dir.display(), ?groups, "raft-engine asks to compact groups")
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => warn!(dir = %self.dir.display(), error = %e, "purging compacted raft log files failed"),
            None => warn!(dir = %self.dir.display(), error = %reader_gone(), "purging compacted raft log files failed"),
        }
        debug!(dir = %self.dir.display(), index, term, "compacted raft log");
        Ok(())
    }

    /// The stored snapshot (metadata and data).
    pub fn snapshot_data(&self) -> (SnapshotMetadata, Vec<u8>) {
        (self.snapshot.get_metadata().clone(), self.snapshot.get_data().to_vec())
    }

    /// The last persisted hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state.clone()
    }

    /// The last persisted conf state.
    pub fn conf_state(&self) -> ConfState {
        self.conf_state.clone()
    }

    fn snap_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn first(&self) -> u64 {
        self.snap_index() + 1
    }

    fn last(&self) -> u64 {
        self.snap_index() + self.terms.len() as u64
    }

    fn put<M: protobuf::Message>(&self, batch: &mut LogBatch, key: &[u8], msg: &M) -> Result<(), RaftStorageError> {
        batch
            .put_message(GROUP, key.to_vec(), msg)
            .map_err(|source| self.write_error(source))
    }

    fn write(&self, batch: &mut LogBatch, sync: bool) -> Result<(), RaftStorageError> {
        self.engine
            .write(batch, sync)
            .map(|_| ())
            .map_err(|source| self.write_error(source))
    }

    fn write_error(&self, source: raft_engine::Error) -> RaftStorageError {
        RaftStorageError::Write {
            dir: self.dir.clone(),
            source,
        }
    }

    fn invalid(&self, detail: String) -> RaftStorageError {
        RaftStorageError::Invalid {
            dir: self.dir.clone(),
            detail,
        }
    }

    fn store_error(&self, e: raft_engine::Error) -> RaftError {
        match e {
            raft_engine::Error::EntryCompacted => RaftError::Store(StorageError::Compacted),
            raft_engine::Error::EntryNotFound => RaftError::Store(StorageError::Unavailable),
            source => RaftError::Store(StorageError::Other(Box::new(RaftStorageError::Read {
                dir: self.dir.clone(),
                source,
            }))),
        }
    }
}

/// Classifies an `Engine::open` failure: damaged data versus anything else.
fn open_error(dir: &Path, source: raft_engine::Error) -> RaftStorageError {
    let corrupt = match &source {
        raft_engine::Error::Corruption(_) | raft_engine::Error::Codec(_) | raft_engine::Error::Protobuf(_) => true,
        raft_engine::Error::Io(e) => e.kind() == std::io::ErrorKind::UnexpectedEof,
        _ => false,
    };
    let dir = dir.to_path_buf();
    if corrupt {
        RaftStorageError::Corrupt { dir, source }
    } else {
        RaftStorageError::Open { dir, source }
    }
}

impl raft::Storage for RaftStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    /// `[low, high)`; `Compacted` below `first_index()`. Where `MemStorage`
    /// panics (`high > last_index() + 1`) this returns `Unavailable`.
    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        if low < self.first() {
            return Err(RaftError::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(RaftError::Store(StorageError::Unavailable));
        }
        if low >= high {
            return Ok(Vec::new());
        }
        let mut ents: Vec<Entry> = Vec::with_capacity(std::cmp::min(high - low, VERIFY_CHUNK) as usize);
        // raft-engine applies the same rule as `limit_size` (sizes are the
        // encoded entry lengths, the first entry always comes back), so it
        // can stop reading early; `limit_size` then makes it exact.
        let engine_max = max_size.map(|m| usize::try_from(m).unwrap_or(usize::MAX));
        let fetched = self.reader.run(move |engine| {
            engine
                .fetch_entries_to::<EntryExt>(GROUP, low, high, engine_max, &mut ents)
                .map(|_| ents)
        });
        let mut ents = match fetched {
            Some(r) => r.map_err(|e| self.store_error(e))?,
            None => return Err(self.store_error(reader_gone())),
        };
        raft::util::limit_size(&mut ents, max_size);
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let meta = self.snapshot.get_metadata();
        if idx == meta.index {
            return Ok(meta.term);
        }
        if idx < self.first() {
            return Err(RaftError::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(RaftError::Store(StorageError::Unavailable));
        }
        Ok(self.terms[(idx - self.first()) as usize])
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snap_index() >= request_index {
            Ok(self.snapshot.clone())
        } else {
            Err(RaftError::Store(StorageError::SnapshotTemporarilyUnavailable))
        }
    }
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
