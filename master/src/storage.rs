//! Single-master durable storage for the registry: an append-only file of
//! [`RegistryOp`]s, one JSON object per line, fsynced before an op counts
//! as committed. The Raft log replaces this for replicated masters; both
//! sit behind the same propose-then-apply seam in the runtime.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::registry::{Registry, RegistryOp};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("registry log {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "registry log {path} is corrupt at line {line}: {why}; refusing to start (move the file away to start empty)"
    )]
    Corrupt { path: PathBuf, line: usize, why: String },
}

/// The open log file.
#[derive(Debug)]
pub struct LocalLog {
    path: PathBuf,
    file: File,
}

impl LocalLog {
    /// Opens (or creates) the log and replays it into a registry. A final
    /// line without its newline is an op whose write never completed, so it
    /// was never acknowledged: it is dropped. Any other bad line is
    /// corruption and refuses the start.
    pub fn open(path: &Path) -> Result<(LocalLog, Registry), StorageError> {
        let io = |source| StorageError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let mut registry = Registry::default();
        let mut good_len = 0u64;
        {
            let mut reader = BufReader::new(&mut file);
            let mut line = String::new();
            let mut n = 0;
            loop {
                line.clear();
                let read = reader.read_line(&mut line).map_err(io)?;
                if read == 0 {
                    break;
                }
                n += 1;
                if !line.ends_with('\n') {
                    tracing::warn!(path = %path.display(), line = n, "dropping a partly written last registry entry");
                    break;
                }
                let op: RegistryOp = serde_json::from_str(line.trim_end()).map_err(|e| StorageError::Corrupt {
                    path: path.to_owned(),
                    line: n,
                    why: e.to_string(),
                })?;
                registry.apply(&op);
                good_len += read as u64;
            }
        }
        file.set_len(good_len).map_err(io)?;
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok((
            LocalLog {
                path: path.to_owned(),
                file,
            },
            registry,
        ))
    }

    /// Appends ops and makes them durable with one fsync.
    pub fn append(&mut self, ops: &[RegistryOp]) -> Result<(), StorageError> {
        let io = |source| StorageError::Io {
            path: self.path.clone(),
            source,
        };
        let mut buf = Vec::new();
        for op in ops {
            serde_json::to_writer(&mut buf, op).map_err(|e| io(e.into()))?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf).map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::FrameworkRecord;
    use mezzo_proto::ids::FrameworkId;

    fn fw(id: &str) -> RegistryOp {
        RegistryOp::RegisterFramework(FrameworkRecord {
            id: FrameworkId::parse(id).expect("id"),
            name: "n".into(),
            user: String::new(),
            principal: String::new(),
            roles: vec!["*".into()],
            failover_timeout_secs: 1.0,
            hostname: String::new(),
        })
    }

    #[test]
    fn ops_survive_reopen_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("registry.log");
        {
            let (mut log, reg) = LocalLog::open(&path).expect("open");
            assert!(reg.frameworks.is_empty());
            log.append(&[fw("f1"), fw("f2")]).expect("append");
        }
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"op\":\"register_fra").expect("write");
        drop(f);
        let (mut log, reg) = LocalLog::open(&path).expect("reopen");
        assert_eq!(reg.frameworks.len(), 2);
        log.append(&[fw("f3")]).expect("append after torn tail");
        let (_, reg) = LocalLog::open(&path).expect("reopen");
        assert_eq!(reg.frameworks.len(), 3);
    }

    #[test]
    fn a_corrupt_line_refuses_to_open_and_names_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("registry.log");
        std::fs::write(&path, "{\"op\":\"remove_framework\",\"id\":\"f\"}\ngarbage\n").expect("write");
        let err = LocalLog::open(&path).expect_err("corrupt").to_string();
        assert!(err.contains("registry.log") && err.contains("line 2"), "{err}");
    }
}
