//! `/state` in batches, as Mesos 1.7 answers it: a read that arrives
//! while a snapshot is being written waits for the next one, and every
//! read waiting then shares it. The snapshot is taken on the owner task
//! (a pointer per task, see [`StateSnapshot`]) and written to JSON on a
//! thread of its own (two at scale) at a lower priority, so ten clients
//! polling a big cluster write it once between them, never hold the owner
//! task while JSON is written, and wait when the master is busy scheduling.
//! Each is still sent its own copy through TLS: the readers that accept
//! gzip share one compressed copy ([`Compressor`]), a tenth of the bytes.
//!
//! The JSON is sent as it is written, in chunks ([`Written`]): writing
//! 400,000 tasks (186 MB) and sending them over TLS overlap instead of
//! following each other.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use futures::Stream;
use tokio::sync::{mpsc, oneshot, watch};

use crate::core::view::state::StateSnapshot;
use crate::core::view::{JsonSink, Split};
use crate::error::MasterError;
use crate::runtime::Handle;

type Reply = (oneshot::Sender<Result<Written, MasterError>>, Encoding);

/// How a reader takes `/state`'s body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Identity,
    /// Compressed once per batch for every reader that asked
    /// (`Accept-Encoding: gzip`): each reader is sent its own copy through
    /// TLS, and at 400,000 tasks a copy is 186 MB plain, a tenth of it
    /// compressed.
    Gzip,
}

/// The way to the task that answers `/state`.
#[derive(Debug, Clone)]
pub(crate) struct StateReads {
    tx: mpsc::Sender<Reply>,
}

impl StateReads {
    /// Starts the answering task; it ends with the last handle.
    pub(crate) fn start(handle: Handle) -> StateReads {
        // Readers beyond this many wait to be queued: back-pressure, not
        // an unbounded list of open requests.
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(answer(handle, rx));
        StateReads { tx }
    }

    /// `/state` taken after this call began, as it is written; an error
    /// (not leading) comes before any of it.
    pub(crate) async fn get(&self, encoding: Encoding) -> Result<Written, MasterError> {
        let (reply, answer) = oneshot::channel();
        (self.tx.send((reply, encoding)).await).map_err(|_| MasterError::ShuttingDown)?;
        answer.await.map_err(|_| MasterError::ShuttingDown)?
    }
}

async fn answer(handle: Handle, mut rx: mpsc::Receiver<Reply>) {
    let mut not_before = tokio::time::Instant::now();
    while let Some(first) = rx.recv().await {
        // After a batch that waited for the cores, readers wait too (and
        // those arriving meanwhile join them).
        tokio::time::sleep_until(not_before).await;
        let mut waiting = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let snapshot: Result<StateSnapshot, MasterError> = handle.read(|m| m.state_snapshot(true)).await;
        let snapshot = match snapshot {
            Ok(s) => s,
            Err(e) => {
                for (reply, _) in waiting {
                    let _ = reply.send(Err(e.clone()));
                }
                continue;
            }
        };
        let wants = |e: Encoding| waiting.iter().any(|(_, w)| *w == e);
        let plain = wants(Encoding::Identity).then(Written::new);
        let gzip = wants(Encoding::Gzip).then(Written::new);
        for (reply, encoding) in waiting {
            let written = match encoding {
                Encoding::Identity => plain.as_ref(),
                Encoding::Gzip => gzip.as_ref(),
            };
            if let Some((w, _)) = written {
                let _ = reply.send(Ok(w.clone()));
            }
        }
        let mut sink = Tee {
            plain: plain.map(|(_, writer)| writer),
            gzip: gzip.and_then(|(_, writer)| Compressor::start(writer)),
        };
        // The next batch starts once this one is written.
        let (done, written) = oneshot::channel();
        let (began, process_began) = (tokio::time::Instant::now(), process_cpu());
        // A thread that cannot start drops `done` (and the writers, so
        // the readers are told); one that panics too.
        let _ = behind("state-writer", move || {
            let helper_cpu = Mutex::new(Duration::ZERO);
            let helper = |work: &mut dyn FnMut()| {
                lower_priority();
                work();
                *helper_cpu.lock().unwrap_or_else(PoisonError::into_inner) = thread_cpu();
            };
            let split = Split {
                from: SPLIT_FROM,
                helper: &helper,
            };
            let result = snapshot.write_json_split(&mut sink, &split);
            let cpu = thread_cpu() + *helper_cpu.lock().unwrap_or_else(PoisonError::into_inner);
            let gzip_cpu = sink.finish(result.map_err(|e| e.to_string()));
            let _ = done.send(cpu + gzip_cpu);
        });
        match written.await {
            Ok(cpu) => {
                let others = (process_cpu() - process_began).saturating_sub(cpu);
                if let Some(wait) = backoff(began.elapsed(), others) {
                    tracing::debug!(
                        ?wait,
                        ?others,
                        "the master was busy while /state was written: the next batch waits as long"
                    );
                    not_before = tokio::time::Instant::now() + wait;
                }
            }
            Err(_) => tracing::error!("writing /state failed: its thread could not start or panicked"),
        }
    }
}

/// How long the next batch waits after one that took `wall` to write
/// while the master's other threads used `others` of CPU: none when they
/// left more than half a core (reads follow each other at once), as long
/// as it took when the master was busy with the cluster's own work. Clients
/// polling in a loop then take at most about half of what the scheduling
/// leaves. Other processes on the cores do not count: the writers, at a
/// lower priority, already yield to them, and the next batch waiting would
/// give the master nothing (a simulator beside the leader made every other
/// read of a series wait as long as the one before).
fn backoff(wall: Duration, others: Duration) -> Option<Duration> {
    (others > wall / 2 && wall > Duration::from_millis(100)).then(|| wall.min(MAX_BACKOFF))
}

/// The longest wait [`backoff`] imposes.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// CPU time of the whole process so far.
fn process_cpu() -> Duration {
    cpu_clock(rustix::time::ClockId::ProcessCPUTime)
}

/// CPU time of the calling thread so far.
fn thread_cpu() -> Duration {
    cpu_clock(rustix::time::ClockId::ThreadCPUTime)
}

fn cpu_clock(clock: rustix::time::ClockId) -> Duration {
    let t = rustix::time::clock_gettime(clock);
    Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// How much lower than the cluster's own work `/state` is written and
/// compressed (added to those threads' nice value): about a tenth of a busy
/// thread's share of a saturated core. Ten clients polling `/state` of
/// 400,000 tasks in a loop would otherwise take as much CPU as the
/// scheduling they read about; this way they wait longer for it instead.
const READ_NICE: i32 = 10;

/// Runs `work` on a thread of its own, [`READ_NICE`] below the master's
/// priority (Linux sets the nice value per thread). A thread of the
/// blocking pool would keep the lower priority for whatever it ran next.
fn behind<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        lower_priority();
        work()
    })
}

/// This thread [`READ_NICE`] below the master's priority.
fn lower_priority() {
    if let Err(e) = rustix::process::nice(READ_NICE) {
        tracing::debug!(error = %e, "cannot lower the /state writer's priority");
    }
}

/// From this many running tasks `/state` is written on two threads (both
/// [`READ_NICE`] lower): at 400,000 tasks writing took 0.6–0.8 s on one
/// core of the test machine.
const SPLIT_FROM: usize = 50_000;

/// How far the writer is: chunks ready, and whether it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Writing(usize),
    Done(usize),
    Failed,
}

/// `/state` as it is written: the writer appends chunks, and every read
/// of the batch sends them on as they come.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    chunks: Arc<Mutex<Vec<Bytes>>>,
    progress: watch::Receiver<Progress>,
}

/// The writing end of a [`Written`].
struct ChunkWriter {
    chunks: Arc<Mutex<Vec<Bytes>>>,
    ready: usize,
    progress: watch::Sender<Progress>,
}

impl Written {
    fn new() -> (Written, ChunkWriter) {
        let chunks = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = watch::channel(Progress::Writing(0));
        let writer = ChunkWriter {
            chunks: chunks.clone(),
            ready: 0,
            progress: tx,
        };
        (Written { chunks, progress: rx }, writer)
    }

    /// The JSON as a body: each chunk once it is written; an error (and
    /// so a cut response) if writing failed.
    pub(crate) fn into_stream(self) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
        futures::stream::unfold(Some((self, 0usize)), |state| async move {
            let (mut w, next) = state?;
            loop {
                let progress = *w.progress.borrow_and_update();
                match progress {
                    Progress::Writing(n) | Progress::Done(n) if next < n => {
                        let chunk = w.chunks.lock().unwrap_or_else(PoisonError::into_inner)[next].clone();
                        return Some((Ok(chunk), Some((w, next + 1))));
                    }
                    Progress::Done(_) => return None,
                    Progress::Failed => return Some((Err(std::io::Error::other("writing /state failed")), None)),
                    Progress::Writing(_) => {
                        if w.progress.changed().await.is_err() {
                            let gone = std::io::Error::other("the /state writer stopped");
                            return Some((Err(gone), None));
                        }
                    }
                }
            }
        })
    }
}

impl ChunkWriter {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.chunks.lock().unwrap_or_else(PoisonError::into_inner).push(chunk);
            self.ready += 1;
            self.progress.send_replace(Progress::Writing(self.ready));
        }
    }

    fn finish(self, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.progress.send_replace(Progress::Done(self.ready));
            }
            Err(e) => {
                tracing::error!(error = %e, "writing /state failed");
                self.progress.send_replace(Progress::Failed);
            }
        }
    }
}

impl JsonSink for ChunkWriter {
    /// Each buffer is a chunk of the body as it is (the writer hands over
    /// about 256 KiB at a time).
    fn take(&mut self, buf: Vec<u8>) -> std::io::Result<()> {
        self.push(Bytes::from(buf));
        Ok(())
    }
}

/// Where a batch's JSON goes: to its plain readers as it is, and to a
/// compressor for its gzip readers.
struct Tee {
    plain: Option<ChunkWriter>,
    gzip: Option<Compressor>,
}

impl JsonSink for Tee {
    fn take(&mut self, buf: Vec<u8>) -> std::io::Result<()> {
        let chunk = Bytes::from(buf);
        if let Some(gzip) = &self.gzip {
            gzip.send(chunk.clone());
        }
        if let Some(plain) = &mut self.plain {
            plain.push(chunk);
        }
        Ok(())
    }
}

impl Tee {
    /// Ends the batch; the compressor's CPU time (zero without one).
    fn finish(self, result: Result<(), String>) -> Duration {
        let cpu = match self.gzip {
            Some(gzip) => gzip.finish(result.clone()),
            None => Duration::ZERO,
        };
        if let Some(plain) = self.plain {
            plain.finish(result);
        }
        cpu
    }
}

/// Compresses a batch's JSON on a thread of its own, beside the writer
/// (two cores: compressing does not lengthen the write).
struct Compressor {
    tx: std::sync::mpsc::SyncSender<Bytes>,
    thread: std::thread::JoinHandle<(ChunkWriter, std::io::Result<()>, Duration)>,
}

impl Compressor {
    /// None if its thread cannot start: `out` is dropped then, and its
    /// readers are told the writer stopped.
    fn start(mut out: ChunkWriter) -> Option<Compressor> {
        // A few chunks may wait: memory stays bounded if it falls behind.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(8);
        let thread = behind("state-gzip", move || {
            let result = (|| {
                let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
                for chunk in rx {
                    gz.write_all(&chunk)?;
                    if gz.get_ref().len() >= GZIP_CHUNK {
                        out.push(Bytes::from(std::mem::take(gz.get_mut())));
                    }
                }
                out.push(Bytes::from(gz.finish()?));
                Ok(())
            })();
            (out, result, thread_cpu())
        });
        match thread {
            Ok(thread) => Some(Compressor { tx, thread }),
            Err(e) => {
                tracing::error!(error = %e, "cannot start compressing /state");
                None
            }
        }
    }

    fn send(&self, chunk: Bytes) {
        // A compressor that failed has stopped reading; it reports why.
        let _ = self.tx.send(chunk);
    }

    /// Ends the batch; the compressor's CPU time.
    fn finish(self, result: Result<(), String>) -> Duration {
        drop(self.tx);
        match self.thread.join() {
            Ok((out, compressed, cpu)) => {
                out.finish(result.and(compressed.map_err(|e| e.to_string())));
                cpu
            }
            Err(_) => {
                tracing::error!("compressing /state panicked");
                Duration::ZERO
            }
        }
    }
}

/// Compressed bytes handed to the gzip readers at a time.
const GZIP_CHUNK: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    /// Readers get every chunk in order, those that come before and after
    /// they start reading; a failed write cuts the body with an error.
    #[tokio::test]
    async fn readers_get_the_chunks_as_they_are_written() {
        let (written, mut writer) = Written::new();
        let early = tokio::spawn(written.clone().into_stream().collect::<Vec<_>>());
        const CHUNK: usize = 1000;
        let body: Vec<u8> = (0..3 * CHUNK + 10).map(|i| (i % 251) as u8).collect();
        writer.take(body[..CHUNK + 5].to_vec()).expect("write");
        let late = tokio::spawn(written.into_stream().collect::<Vec<_>>());
        tokio::task::yield_now().await;
        writer.take(body[CHUNK + 5..2 * CHUNK].to_vec()).expect("write");
        writer.take(Vec::new()).expect("nothing to write");
        writer.take(body[2 * CHUNK..].to_vec()).expect("write");
        writer.finish(Ok(()));
        for reader in [early, late] {
            let got: Vec<u8> = (reader.await.expect("reader").into_iter())
                .flat_map(|c| c.expect("chunk").to_vec())
                .collect();
            assert!(got == body, "{} bytes read of {}", got.len(), body.len());
        }
        let (written, mut writer) = Written::new();
        writer.take(body.clone()).expect("write");
        writer.finish(Err("no".into()));
        let got: Vec<_> = written.into_stream().collect().await;
        assert!(
            got.last().is_some_and(Result::is_err),
            "a failed write ends in an error"
        );
    }

    /// `/state` is written and compressed below the owner's priority.
    #[test]
    fn writers_run_behind_the_cluster_s_work() {
        let here = rustix::process::getpriority_process(None).expect("priority");
        let there = behind("test", || rustix::process::getpriority_process(None).expect("priority"))
            .expect("spawn")
            .join()
            .expect("join");
        assert_eq!(there, (here + READ_NICE).min(19));
        let after = rustix::process::getpriority_process(None).expect("priority");
        assert_eq!(after, here, "the caller's thread keeps its priority");
    }

    /// A batch written while the master had little else to do is followed
    /// at once, however long it took; one written while the master was
    /// busy makes the next wait as long, up to a cap.
    #[test]
    fn a_batch_written_while_the_master_was_busy_holds_the_next_back() {
        let ms = Duration::from_millis;
        assert_eq!(backoff(ms(800), ms(100)), None, "an idle leader");
        assert_eq!(
            backoff(ms(3000), ms(100)),
            None,
            "a leader idle, the cores busy elsewhere"
        );
        assert_eq!(backoff(ms(90), ms(80)), None, "a small cluster");
        assert_eq!(backoff(ms(3000), ms(1600)), Some(ms(3000)), "a busy leader");
        assert_eq!(backoff(Duration::from_secs(60), ms(31_000)), Some(MAX_BACKOFF));
        // The clock is the thread's own: sleeping costs none of it.
        let before = thread_cpu();
        std::thread::sleep(ms(50));
        assert!(thread_cpu() - before < ms(20));
    }

    /// The gzip readers' body is the JSON compressed; a failed write
    /// fails it too.
    #[tokio::test]
    async fn a_compressed_body_is_the_json_and_fails_with_it() {
        let body: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("{{\"task\":{i}}},").into_bytes())
            .collect();
        let (written, writer) = Written::new();
        let mut tee = Tee {
            plain: None,
            gzip: Compressor::start(writer),
        };
        for part in body.chunks(100_000) {
            tee.take(part.to_vec()).expect("write");
        }
        tee.finish(Ok(()));
        let chunks: Vec<Bytes> = (written.into_stream().collect::<Vec<_>>().await.into_iter())
            .map(|c| c.expect("chunk"))
            .collect();
        assert!(chunks.len() > 1, "sent as it is compressed");
        let gz: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
        let mut json = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut json).expect("gzip");
        assert!(json == body, "{} bytes back of {}", json.len(), body.len());

        let (written, writer) = Written::new();
        let tee = Tee {
            plain: None,
            gzip: Compressor::start(writer),
        };
        tee.finish(Err("no".into()));
        let got: Vec<_> = written.into_stream().collect().await;
        assert!(
            got.last().is_some_and(Result::is_err),
            "a failed write ends in an error"
        );
    }
}
