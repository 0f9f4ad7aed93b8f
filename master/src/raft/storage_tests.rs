//! Tests of the durable Raft storage: the `raft::Storage` contract,
//! atomic batches, recovery after a kill and the mark.

#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

use super::*;
use raft::Storage;

/// Size of an entry as raft-rs's `limit_size` counts it.
fn entry_size(e: &Entry) -> u64 {
    use protobuf::Message as _;
    u64::from(e.compute_size())
}

fn new_entry(index: u64, term: u64) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = term;
    e
}

fn entry_with_data(index: u64, term: u64, data: Vec<u8>) -> Entry {
    let mut e = new_entry(index, term);
    e.data = data.into();
    e
}

fn new_snapshot(index: u64, term: u64, voters: Vec<u64>, data: &[u8]) -> Snapshot {
    let mut s = Snapshot::default();
    s.mut_metadata().index = index;
    s.mut_metadata().term = term;
    s.mut_metadata().mut_conf_state().voters = voters;
    s.set_data(data.to_vec().into());
    s
}

fn voters(v: &[u64]) -> ConfState {
    let mut cs = ConfState::default();
    cs.voters = v.to_vec();
    cs
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

/// Pseudo-random, incompressible bytes (raft-engine lz4-compresses big
/// entry blocks; corruption tests need batches that stay large).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A storage shaped like raft-rs's MemStorage tests: snapshot at (2, 2),
/// then entries (3,3), (4,4), (5,5) [, (6,6)].
fn storage_3_to(last: u64, dir: &Path) -> RaftStorage {
    let mut s = RaftStorage::open(dir).unwrap();
    s.apply_snapshot(new_snapshot(2, 2, vec![1], b"")).unwrap();
    let ents: Vec<Entry> = (3..=last).map(|i| new_entry(i, i)).collect();
    s.append(&ents, None, true).unwrap();
    s
}

fn raftlog_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "raftlog"))
        .collect();
    files.sort();
    files
}

/// raft-rs `Storage::term` contract (MemStorage `test_storage_term`):
/// the term is known for [first_index()-1, last_index()], `Compacted`
/// below and `Unavailable` above.
#[test]
fn term_table() {
    let tmp = tempfile::tempdir().unwrap();
    let s = storage_3_to(5, tmp.path());
    let cases = [
        (1, Err(RaftError::Store(StorageError::Compacted))),
        (2, Ok(2)),
        (3, Ok(3)),
        (4, Ok(4)),
        (5, Ok(5)),
        (6, Err(RaftError::Store(StorageError::Unavailable))),
    ];
    for (idx, want) in cases {
        assert_eq!(s.term(idx), want, "term({idx})");
    }
}

/// raft-rs `Storage::entries` contract (MemStorage
/// `test_storage_entries`): `[low, high)`, `Compacted` below
/// first_index(), `max_size` honoured as by `limit_size` and at least one
/// entry is always returned.
#[test]
fn entries_table() {
    let tmp = tempfile::tempdir().unwrap();
    let s = storage_3_to(6, tmp.path());
    let e = |i: u64| new_entry(i, i);
    let sz = |i: u64| entry_size(&e(i));
    let max = u64::MAX;
    let cases: Vec<(u64, u64, u64, raft::Result<Vec<Entry>>)> = vec![
        (2, 6, max, Err(RaftError::Store(StorageError::Compacted))),
        (3, 4, max, Ok(vec![e(3)])),
        (4, 5, max, Ok(vec![e(4)])),
        (4, 6, max, Ok(vec![e(4), e(5)])),
        (4, 7, max, Ok(vec![e(4), e(5), e(6)])),
        (4, 7, 0, Ok(vec![e(4)])),
        (4, 7, sz(4) + sz(5), Ok(vec![e(4), e(5)])),
        (4, 7, sz(4) + sz(5) + sz(6) / 2, Ok(vec![e(4), e(5)])),
        (4, 7, sz(4) + sz(5) + sz(6) - 1, Ok(vec![e(4), e(5)])),
        (4, 7, sz(4) + sz(5) + sz(6), Ok(vec![e(4), e(5), e(6)])),
        (4, 4, max, Ok(vec![])),
        (4, 8, max, Err(RaftError::Store(StorageError::Unavailable))),
    ];
    for (i, (lo, hi, max_size, want)) in cases.into_iter().enumerate() {
        assert_eq!(
            s.entries(lo, hi, max_size, ctx()),
            want,
            "case #{i}: entries({lo}, {hi}, {max_size})"
        );
    }
    assert_eq!(s.entries(3, 7, None, ctx()).unwrap().len(), 4);
}

/// raft-rs `Storage::first_index`/`last_index` contract (MemStorage
/// `test_storage_first_index`, `test_storage_last_index`): first is the
/// truncated index + 1 (1 for a new storage), last follows appends and
/// falls back to the snapshot index when the log is empty.
#[test]
fn first_and_last_index() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = RaftStorage::open(&tmp.path().join("fresh")).unwrap();
    assert_eq!((fresh.first_index(), fresh.last_index()), (Ok(1), Ok(0)));
    assert!(!fresh.is_initialized());

    let mut s = storage_3_to(5, &tmp.path().join("log"));
    assert_eq!((s.first_index(), s.last_index()), (Ok(3), Ok(5)));
    s.append(&[new_entry(6, 5)], None, true).unwrap();
    assert_eq!(s.last_index(), Ok(6));
    s.compact(3, voters(&[1]), b"state@3".to_vec()).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (Ok(4), Ok(6)));
}

/// raft-rs `Storage` contract after compaction (MemStorage
/// `test_storage_compact`, with our `compact(i)` = their `compact(i+1)`):
/// first_index() == index + 1, the term of the compacted index is kept,
/// earlier entries are `Compacted`, and out-of-range compactions are
/// refused.
#[test]
fn compact_table() {
    // (compact index, first index, term at first index (0 = none), live entries)
    let cases = [(3, 4, 4, 2), (4, 5, 5, 1), (5, 6, 0, 0)];
    for (i, (idx, wfirst, wterm, wlen)) in cases.into_iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = storage_3_to(5, tmp.path());
        s.compact(idx, voters(&[1, 2]), format!("state@{idx}").into_bytes())
            .unwrap();
        let first = s.first_index().unwrap();
        assert_eq!(first, wfirst, "#{i}");
        assert_eq!(s.last_index(), Ok(5), "#{i}");
        let term = s
            .entries(first, first + 1, 1, ctx())
            .map_or(0, |v| v.first().map_or(0, |e| e.term));
        assert_eq!(term, wterm, "#{i}");
        assert_eq!(s.entries(first, 6, 100, ctx()).unwrap().len(), wlen, "#{i}");
        assert_eq!(s.term(idx), Ok(idx), "#{i}: term of the snapshot index");
        assert_eq!(s.term(idx - 1), Err(RaftError::Store(StorageError::Compacted)), "#{i}");
        assert_eq!(
            s.entries(idx, 6, None, ctx()),
            Err(RaftError::Store(StorageError::Compacted))
        );
        let (meta, data) = s.snapshot_data();
        assert_eq!((meta.index, meta.term), (idx, idx));
        assert_eq!(meta.get_conf_state().voters, vec![1, 2]);
        assert_eq!(data, format!("state@{idx}").into_bytes());
        assert!(s.hard_state().commit >= idx, "commit raised to the snapshot index");
        // appending continues after the compacted prefix
        s.append(&[new_entry(6, 6)], None, true).unwrap();
        assert_eq!(s.last_index(), Ok(6));
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut s = storage_3_to(5, tmp.path());
    for bad in [2, 6] {
        let err = s.compact(bad, voters(&[1]), vec![]).unwrap_err();
        assert!(matches!(err, RaftStorageError::Invalid { .. }), "compact({bad}): {err}");
        assert!(err.to_string().contains(&tmp.path().display().to_string()));
    }
}

/// raft-rs `MemStorageCore::append` semantics (MemStorage
/// `test_storage_append`): a conflicting suffix is replaced and later
/// entries dropped; appending over compacted entries or with a gap is
/// refused (MemStorage panics).
#[test]
fn append_conflict_truncation() {
    let e = new_entry;
    let cases: Vec<(Vec<Entry>, Option<Vec<Entry>>)> = vec![
        (vec![e(3, 3), e(4, 4), e(5, 5)], Some(vec![e(3, 3), e(4, 4), e(5, 5)])),
        (vec![e(3, 3), e(4, 6), e(5, 6)], Some(vec![e(3, 3), e(4, 6), e(5, 6)])),
        (
            vec![e(3, 3), e(4, 4), e(5, 5), e(6, 5)],
            Some(vec![e(3, 3), e(4, 4), e(5, 5), e(6, 5)]),
        ),
        (vec![e(2, 3), e(3, 3), e(4, 5)], None),
        (vec![e(4, 5)], Some(vec![e(3, 3), e(4, 5)])),
        (vec![e(6, 6)], Some(vec![e(3, 3), e(4, 4), e(5, 5), e(6, 6)])),
        (vec![e(7, 6)], None),
        (vec![e(6, 6), e(8, 6)], None),
    ];
    for (i, (ents, want)) in cases.into_iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = storage_3_to(5, tmp.path());
        let res = s.append(&ents, None, true);
        match want {
            Some(want) => {
                res.unwrap();
                let last = s.last_index().unwrap();
                assert_eq!(s.entries(3, last + 1, None, ctx()).unwrap(), want, "#{i}");
                // and the truncation is what comes back after a restart
                drop(s);
                let s = RaftStorage::open(tmp.path()).unwrap();
                assert_eq!(
                    s.entries(3, s.last_index().unwrap() + 1, None, ctx()).unwrap(),
                    want,
                    "#{i}"
                );
            }
            None => {
                let err = res.unwrap_err();
                assert!(matches!(err, RaftStorageError::Invalid { .. }), "#{i}: {err}");
                assert_eq!(s.last_index(), Ok(5), "#{i}: nothing written");
            }
        }
    }
}

/// DESIGN.md "Durable state (Raft)": the registry must survive any
/// master loss, so hard state, conf state, entries and snapshot all
/// survive close + reopen (raft-rs `Storage::initial_state` contract).
#[test]
fn survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let mut hs = HardState::default();
    hs.term = 3;
    hs.vote = 2;
    hs.commit = 4;
    {
        let mut s = RaftStorage::open(tmp.path()).unwrap();
        s.bootstrap(&[1, 2, 3], b"initial".to_vec()).unwrap();
        let ents: Vec<Entry> = (1..=6)
            .map(|i| entry_with_data(i, 1 + i / 3, vec![i as u8; 10]))
            .collect();
        s.append(&ents, Some(&hs), true).unwrap();
        s.set_conf_state(voters(&[1, 2, 3, 4])).unwrap();
        s.compact(2, voters(&[1, 2, 3]), b"state@2".to_vec()).unwrap();
        s.set_commit(5).unwrap();
    }
    let s = RaftStorage::open(tmp.path()).unwrap();
    assert!(s.is_initialized());
    hs.commit = 5;
    assert_eq!(s.hard_state(), hs);
    assert_eq!(s.conf_state(), voters(&[1, 2, 3, 4]));
    let state = s.initial_state().unwrap();
    assert_eq!((state.hard_state, state.conf_state), (hs, voters(&[1, 2, 3, 4])));
    assert_eq!((s.first_index(), s.last_index()), (Ok(3), Ok(6)));
    let ents = s.entries(3, 7, None, ctx()).unwrap();
    let want: Vec<Entry> = (3..=6)
        .map(|i| entry_with_data(i, 1 + i / 3, vec![i as u8; 10]))
        .collect();
    assert_eq!(ents, want);
    assert_eq!(s.term(2), Ok(1));
    let (meta, data) = s.snapshot_data();
    assert_eq!(
        (meta.index, meta.term, meta.get_conf_state().voters.clone()),
        (2, 1, vec![1, 2, 3])
    );
    assert_eq!(data, b"state@2".to_vec());
}

/// raft-rs `Storage::initial_state` contract: a bootstrapped storage is
/// initialized and reports the voters; `first_index()` is 1 and the
/// snapshot at index 0 carries the application's initial state
/// (DESIGN.md "Durable state (Raft)"). Bootstrapping twice is refused.
#[test]
fn bootstrap_then_initial_state() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = RaftStorage::open(tmp.path()).unwrap();
    assert!(!s.is_initialized());
    assert!(!s.initial_state().unwrap().initialized());
    s.bootstrap(&[1, 2, 3], b"registry v0".to_vec()).unwrap();
    assert!(s.is_initialized());
    let state = s.initial_state().unwrap();
    assert!(state.initialized());
    assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
    assert_eq!(state.hard_state, HardState::default());
    assert_eq!((s.first_index(), s.last_index(), s.term(0)), (Ok(1), Ok(0), Ok(0)));
    let snap = s.snapshot(0, 2).unwrap();
    assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1, 2, 3]);
    assert_eq!(snap.get_data(), b"registry v0");
    let err = s.bootstrap(&[1], vec![]).unwrap_err();
    assert!(matches!(err, RaftStorageError::Invalid { .. }), "{err}");
    drop(s);
    let s = RaftStorage::open(tmp.path()).unwrap();
    assert!(s.is_initialized());
    assert_eq!(s.initial_state().unwrap().conf_state.voters, vec![1, 2, 3]);
    assert_eq!(s.snapshot_data().1, b"registry v0".to_vec());
}

/// raft-rs `MemStorageCore::apply_snapshot` semantics: the log is
/// dropped, first/last index move to the snapshot, hard state term and
/// commit are raised to it and conf state comes from it; an out-of-date
/// snapshot is refused. Survives reopen (DESIGN.md "Durable state").
#[test]
fn apply_snapshot_clears_log() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = RaftStorage::open(tmp.path()).unwrap();
    s.bootstrap(&[1], vec![]).unwrap();
    let mut hs = HardState::default();
    hs.term = 2;
    hs.commit = 3;
    s.append(&(1..=8).map(|i| new_entry(i, 2)).collect::<Vec<_>>(), Some(&hs), true)
        .unwrap();

    // a snapshot behind the log end still drops the whole log
    s.apply_snapshot(new_snapshot(5, 4, vec![1, 2, 3], b"leader state"))
        .unwrap();
    assert_eq!((s.first_index(), s.last_index()), (Ok(6), Ok(5)));
    assert_eq!(s.term(5), Ok(4));
    assert_eq!(s.term(4), Err(RaftError::Store(StorageError::Compacted)));
    assert_eq!(s.term(6), Err(RaftError::Store(StorageError::Unavailable)));
    assert_eq!((s.hard_state().term, s.hard_state().commit), (4, 5));
    assert_eq!(s.conf_state(), voters(&[1, 2, 3]));

    // ahead of the log
    s.apply_snapshot(new_snapshot(20, 5, vec![1, 2], b"newer")).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (Ok(21), Ok(20)));
    let err = s.apply_snapshot(new_snapshot(20, 5, vec![1], b"")).unwrap_err();
    assert!(err.to_string().contains("out of date"), "{err}");
    s.append(&[new_entry(21, 5), new_entry(22, 5)], None, true).unwrap();

    drop(s);
    let s = RaftStorage::open(tmp.path()).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (Ok(21), Ok(22)));
    assert_eq!(s.snapshot_data().1, b"newer".to_vec());
    assert_eq!(s.conf_state(), voters(&[1, 2]));
    assert_eq!((s.hard_state().term, s.hard_state().commit), (5, 20));
}

/// raft-rs `Storage::snapshot` contract: "a snapshot's index must not
/// be less than the request_index"; otherwise the storage answers
/// `SnapshotTemporarilyUnavailable` so raft asks again later.
#[test]
fn snapshot_request_index() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = storage_3_to(6, tmp.path());
    s.compact(4, voters(&[1, 2]), b"s4".to_vec()).unwrap();
    for req in [0, 3, 4] {
        let snap = s.snapshot(req, 2).unwrap();
        assert_eq!((snap.get_metadata().index, snap.get_metadata().term), (4, 4));
        assert_eq!(snap.get_data(), b"s4");
        assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1, 2]);
    }
    assert_eq!(
        s.snapshot(5, 2),
        Err(RaftError::Store(StorageError::SnapshotTemporarilyUnavailable))
    );
}

/// raft-rs `Storage::entries` contract (entries are this log's) with
/// several masters in one process: two logs with byte-identical layout
/// but different data, read alternately from one thread, each return
/// their own entries (raft-engine's thread-local block cache is keyed by
/// file position only; see the module doc).
#[test]
fn two_logs_in_one_thread_do_not_share_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let make = |name: &str, byte: u8| {
        let mut s = RaftStorage::open(&tmp.path().join(name)).unwrap();
        s.bootstrap(&[1], vec![]).unwrap();
        s.append(
            &[
                entry_with_data(1, 1, vec![byte; 32]),
                entry_with_data(2, 1, vec![byte; 32]),
            ],
            None,
            true,
        )
        .unwrap();
        s
    };
    let a = make("a", b'a');
    let b = make("b", b'b');
    for _ in 0..3 {
        assert_eq!(a.entries(1, 3, None, ctx()).unwrap()[1].data, vec![b'a'; 32]);
        assert_eq!(b.entries(1, 3, None, ctx()).unwrap()[1].data, vec![b'b'; 32]);
    }
    drop(a);
    let a = RaftStorage::open(&tmp.path().join("a")).unwrap();
    assert_eq!(a.entries(1, 2, None, ctx()).unwrap()[0].data, vec![b'a'; 32]);
    assert_eq!(b.entries(1, 2, None, ctx()).unwrap()[0].data, vec![b'b'; 32]);
}

/// DESIGN.md "Durable state (Raft)": the commit index from a LightReady
/// is persisted (unsynced) and survives a clean restart.
#[test]
fn set_commit_persists() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut s = storage_3_to(5, tmp.path());
        s.set_commit(4).unwrap();
        assert_eq!(s.hard_state().commit, 4);
    }
    let s = RaftStorage::open(tmp.path()).unwrap();
    assert_eq!(s.hard_state().commit, 4);
}

/// Builds a log whose data file is dominated by one large, incompressible
/// batch, so that its middle is inside that batch. Returns the file.
fn damaged_setup(dir: &Path) -> PathBuf {
    let mut s = RaftStorage::open(dir).unwrap();
    s.bootstrap(&[1], b"init".to_vec()).unwrap();
    let ents: Vec<Entry> = (1..=64).map(|i| entry_with_data(i, 1, noise(1024, i))).collect();
    s.append(&ents[..32], None, true).unwrap();
    s.append(&ents[32..], None, true).unwrap();
    drop(s);
    let files = raftlog_files(dir);
    assert!(!files.is_empty(), "no *.raftlog in {}", dir.display());
    files
        .into_iter()
        .max_by_key(|f| std::fs::metadata(f).unwrap().len())
        .unwrap()
}

fn assert_refused(dir: &Path) {
    let err = RaftStorage::open(dir).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&dir.display().to_string()),
        "error does not name the dir: {text}"
    );
    assert!(
        matches!(
            err,
            RaftStorageError::Corrupt { .. } | RaftStorageError::Inconsistent { .. }
        ),
        "{text}"
    );
    assert!(text.contains("refusing to start"), "{text}");
}

/// DESIGN.md "Durable state (Raft)" (the registry must not be silently
/// lost): a data file truncated in the middle refuses the start with an
/// error naming the dir (the mark beside the log says what was lost).
#[test]
fn truncated_file_refuses_start() {
    let tmp = tempfile::tempdir().unwrap();
    let file = damaged_setup(tmp.path());
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert_refused(tmp.path());
}

/// DESIGN.md "Durable state (Raft)": a data file with flipped bytes in
/// the middle refuses the start with an error naming the dir.
#[test]
fn corrupted_file_refuses_start() {
    use std::io::{Read, Seek, SeekFrom, Write};
    for frac in [2u64, 3, 4] {
        let tmp = tempfile::tempdir().unwrap();
        let file = damaged_setup(tmp.path());
        let len = std::fs::metadata(&file).unwrap().len();
        let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&file).unwrap();
        let at = len / frac;
        let mut buf = [0u8; 16];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut buf).unwrap();
        for b in &mut buf {
            *b ^= 0xA5;
        }
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&buf).unwrap();
        f.sync_all().unwrap();
        drop(f);
        assert_refused(tmp.path());
    }
}

/// raft-rs `Storage` contract plus DESIGN.md "Durable state (Raft)":
/// after compaction raft-engine can delete the files holding only
/// compacted entries, and the surviving state is intact after reopen.
#[test]
fn compaction_lets_files_be_purged() {
    let tmp = tempfile::tempdir().unwrap();
    let small = 64 * 1024;
    let mut s = RaftStorage::open_with(tmp.path(), small, 4 * small).unwrap();
    s.bootstrap(&[1], vec![]).unwrap();
    let mut next = 1;
    for _ in 0..40 {
        let ents: Vec<Entry> = (next..next + 8)
            .map(|i| entry_with_data(i, 1, noise(2048, i)))
            .collect();
        s.append(&ents, None, true).unwrap();
        next += 8;
    }
    let before = s.engine.get_used_size();
    let last = next - 1;
    s.compact(last - 1, voters(&[1]), b"compacted".to_vec()).unwrap();
    let after = s.engine.get_used_size();
    assert!(after < before / 2, "purge did not shrink the log: {before} -> {after}");
    assert_eq!((s.first_index(), s.last_index()), (Ok(last), Ok(last)));
    drop(s);
    let s = RaftStorage::open_with(tmp.path(), small, 4 * small).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (Ok(last), Ok(last)));
    assert_eq!(
        s.entries(last, last + 1, None, ctx()).unwrap()[0].data,
        noise(2048, last)
    );
    assert_eq!(s.snapshot_data().1, b"compacted".to_vec());
}
