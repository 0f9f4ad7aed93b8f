//! Fuzz checks of the agent's decoders of untrusted input (DESIGN.md "Bad
//! input"; see `docs/fuzzing.md`): paths of the files API, and records of
//! the status update journal.
//!
//! Each check takes arbitrary bytes, decodes them as the agent does, and
//! panics if anything panics or an accepted value breaks an invariant.
//! The property tests (`files/fuzz_tests.rs`, `status/journal_fuzz_tests.rs`)
//! and the coverage-guided targets in `fuzz/` call these; [`seeds`] gives
//! valid inputs to start from.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use mezzo_proto::v1;

use crate::files::{FilesError, MAX_READ, Sandbox};
use crate::status::journal::{Record, decode_all};

/// What every file outside the fuzzed task's sandbox holds, so a read
/// that escapes shows it.
const SECRET: &str = "SECRET-OUTSIDE";

/// Builds the work dir the files check runs in: the sandbox of task `t1`
/// of framework `f1` holds files, a directory, symlinks inside it, and
/// every kind of way out (absolute and relative symlinks to a secret, to
/// another task's sandbox and to `/etc`, a symlink loop, a fifo); beside
/// it lie the secret and that other sandbox.
pub fn make_work_dir(work: &Path) -> std::io::Result<()> {
    let sb = work.join("sandboxes/f1/t1");
    std::fs::create_dir_all(sb.join("sub/deeper"))?;
    std::fs::write(sb.join("stdout"), "inside: hello\nworld\n")?;
    std::fs::write(sb.join("stderr"), "inside")?;
    std::fs::write(sb.join("sub/inner"), "inside: inner")?;
    std::fs::write(work.join("secret"), SECRET)?;
    std::fs::create_dir_all(work.join("sandboxes/f1/t2"))?;
    std::fs::write(work.join("sandboxes/f1/t2/stdout"), SECRET)?;
    symlink(work.join("secret"), sb.join("out-abs"))?;
    symlink("../../../secret", sb.join("out-rel"))?;
    symlink("../t2", sb.join("neighbour"))?;
    symlink("/etc", sb.join("etc"))?;
    symlink("..", sb.join("sub/up"))?;
    symlink("sub/inner", sb.join("in-link"))?;
    symlink("loop-b", sb.join("loop-a"))?;
    symlink("loop-a", sb.join("loop-b"))?;
    nix::unistd::mkfifo(&sb.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(std::io::Error::from)?;
    Ok(())
}

/// A files API request in a work dir built by [`make_work_dir`]. Input:
/// one byte choosing browse, read from an offset or read a tail (and the
/// offset or tail length), then `<framework>/<task>` and a newline (or
/// just the path, for task `t1` of `f1`), then the path as the router
/// hands it over (percent-decoded once). A request may only ever see
/// what is inside that task's sandbox; a refusal is a client error.
pub fn files_path(work: &Path, data: &[u8]) {
    let Some((&op, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let (ids, path) = text.split_once('\n').unwrap_or(("f1/t1", &text));
    let (fw, task) = ids.split_once('/').unwrap_or((ids, "t1"));
    let sandbox = match Sandbox::of(work, fw, task) {
        Ok(s) => s,
        Err(e) => return check_refusal(&e),
    };
    let root = work.join("sandboxes").join(fw).join(task);
    let root = root.canonicalize().unwrap_or(root);
    if (fw, task) != ("f1", "t1") {
        // Only another valid sandbox can open, and it holds the secret.
        assert!(root.starts_with(work.join("sandboxes")), "sandbox {root:?}");
        return;
    }
    match sandbox.resolve(path) {
        Ok(real) => assert!(
            real.starts_with(&root),
            "{path:?} resolved to {real:?}, outside {root:?}"
        ),
        Err(e) => check_refusal(&e),
    }
    let n = u64::from(op / 3) * 997;
    let answer = match op % 3 {
        0 => sandbox.browse(path).map(|l| {
            for e in &l.entries {
                assert!(!e.name.contains('/'), "{e:?}");
            }
            String::new()
        }),
        1 => sandbox.read(path, Some(n), None, None).map(|c| c.data),
        _ => sandbox.read(path, None, Some(MAX_READ), Some(n)).map(|c| c.data),
    };
    match answer {
        Ok(data) => assert!(!data.contains(SECRET), "{path:?} read a file outside the sandbox"),
        Err(e) => check_refusal(&e),
    }
}

/// A refusal names the client's mistake (4xx), never a server error.
fn check_refusal(e: &FilesError) {
    assert!(!matches!(e, FilesError::Io { .. }), "refused as a server error: {e}");
}

/// The status update journal as it is replayed at start: any bytes give
/// the records of a valid prefix, and those records encode back to a
/// journal that replays to the same records in full.
pub fn status_journal(data: &[u8]) {
    let (records, valid) = decode_all(data);
    assert!(valid <= data.len());
    assert_eq!(
        decode_all(&data[..valid]),
        (records.clone(), valid),
        "the valid prefix replays differently"
    );
    let mut again = Vec::new();
    for r in &records {
        r.encode(&mut again);
    }
    assert_eq!(
        decode_all(&again),
        (records, again.len()),
        "decoded records do not encode back"
    );
}

/// Records of every kind, as the status update manager writes them.
pub fn journal_records() -> Vec<Record> {
    let update = |task: &str, state: v1::TaskState, uuid: u8| {
        Record::Update(v1::StatusUpdate {
            framework_id: "f1".into(),
            status: Some(v1::TaskStatus {
                task_id: task.into(),
                state: state as i32,
                message: "ok".into(),
                uuid: vec![uuid; 16],
                timestamp: 1.5,
                exit_code: Some(0),
                framework_id: "f1".into(),
                ..Default::default()
            }),
            latest_state: state as i32,
        })
    };
    let ack = |task: &str, uuid: u8| {
        Record::Ack(v1::AcknowledgeUpdate {
            framework_id: "f1".into(),
            task_id: task.into(),
            uuid: vec![uuid; 16],
        })
    };
    vec![
        update("t1", v1::TaskState::TaskStarting, 1),
        update("t1", v1::TaskState::TaskRunning, 2),
        ack("t1", 1),
        update("t2", v1::TaskState::TaskFailed, 3),
        ack("t1", 2),
        update("t1", v1::TaskState::TaskFinished, 4),
    ]
}

/// Valid inputs for each target of this crate: `(target, input)`.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for path in [".", "stdout", "sub/inner", "./sub", "in-link", "sub/deeper", "stderr"] {
        for op in [0u8, 1, 5] {
            out.push(("files_path", [&[op], path.as_bytes()].concat()));
        }
    }
    out.push(("files_path", b"\x01f1/t2\nstdout".to_vec()));
    let mut journal = Vec::new();
    for r in journal_records() {
        r.encode(&mut journal);
        out.push(("status_journal", journal.clone()));
    }
    out
}

/// A fresh work dir for the files check under the system's temp dir, one
/// per process (named by its pid); those of processes that are gone are
/// removed first.
pub fn temp_work_dir() -> std::io::Result<PathBuf> {
    let tmp = std::env::temp_dir();
    for entry in std::fs::read_dir(&tmp)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("mezzo-fuzz-files-")
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = tmp.join(format!("mezzo-fuzz-files-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    make_work_dir(&dir)?;
    Ok(dir)
}
