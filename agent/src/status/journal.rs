//! The status update journal: an append-only file of records
//!
//! ```text
//! tag: u8 (1 = update, 2 = ack) | len: u32 LE | crc32fast::hash(body): u32 LE | body
//! ```
//!
//! where the body is a protobuf `StatusUpdate` or `AcknowledgeUpdate`. A
//! record that is cut short or fails its checksum ends the replay: it and
//! everything after it are dropped (with a warning) and the file is
//! truncated there, so new records follow the last good one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use mezzo_proto::v1;
use prost::Message;

use crate::AgentError;
use crate::paths;

const TAG_UPDATE: u8 = 1;
const TAG_ACK: u8 = 2;
const HEADER: usize = 9;
/// No single record comes near this; a larger length means corruption.
const MAX_RECORD: usize = mezzo_proto::MAX_MESSAGE_BYTES;

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Update(v1::StatusUpdate),
    Ack(v1::AcknowledgeUpdate),
}

impl Record {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (tag, body) = match self {
            Record::Update(u) => (TAG_UPDATE, u.encode_to_vec()),
            Record::Ack(a) => (TAG_ACK, a.encode_to_vec()),
        };
        out.push(tag);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
    }
}

/// Decodes records from `buf`; returns them and the length of the valid prefix.
pub fn decode_all(buf: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let Some(header) = buf.get(pos..pos + HEADER) else {
            break;
        };
        let tag = header[0];
        let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let crc = u32::from_le_bytes([header[5], header[6], header[7], header[8]]);
        if len > MAX_RECORD {
            break;
        }
        let Some(body) = buf.get(pos + HEADER..pos + HEADER + len) else {
            break;
        };
        if crc32fast::hash(body) != crc {
            break;
        }
        let record = match tag {
            TAG_UPDATE => v1::StatusUpdate::decode(body).ok().map(Record::Update),
            TAG_ACK => v1::AcknowledgeUpdate::decode(body).ok().map(Record::Ack),
            _ => None,
        };
        let Some(record) = record else { break };
        records.push(record);
        pos += HEADER + len;
    }
    (records, pos)
}

/// The open journal file. Its methods block: call them off the async runtime.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Records in the file, a measure of how much compaction would save.
    records: usize,
}

impl Journal {
    /// Opens (creating if needed) the journal and returns its valid records.
    pub fn open(path: &Path) -> Result<(Journal, Vec<Record>), AgentError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(AgentError::io("create directory", dir))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(AgentError::io("open", path))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf).map_err(AgentError::io("read", path))?;
        let (records, valid) = decode_all(&buf);
        if valid < buf.len() {
            tracing::warn!(
                path = %path.display(),
                "dropping {} bytes of a truncated or corrupt record at offset {valid}",
                buf.len() - valid
            );
            file.set_len(valid as u64).map_err(AgentError::io("truncate", path))?;
            file.sync_all().map_err(AgentError::io("fsync", path))?;
        }
        let journal = Journal {
            path: path.to_owned(),
            file,
            records: records.len(),
        };
        Ok((journal, records))
    }

    /// Appends already-encoded records; with `sync`, makes them (and all
    /// earlier ones) durable.
    pub fn append(&mut self, bytes: &[u8], count: usize, sync: bool) -> Result<(), AgentError> {
        self.file
            .write_all(bytes)
            .map_err(AgentError::io("append to", &self.path))?;
        if sync {
            self.file.sync_data().map_err(AgentError::io("fsync", &self.path))?;
        }
        self.records += count;
        Ok(())
    }

    pub fn records(&self) -> usize {
        self.records
    }

    /// Replaces the file with just `pending` (encoded records, `count` of
    /// them): truncated when nothing is pending, else rewritten atomically.
    pub fn compact(&mut self, pending: &[u8], count: usize) -> Result<(), AgentError> {
        if count == 0 {
            self.file.set_len(0).map_err(AgentError::io("truncate", &self.path))?;
            self.file.sync_all().map_err(AgentError::io("fsync", &self.path))?;
        } else {
            paths::write_atomic(&self.path, pending)?;
            self.file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&self.path)
                .map_err(AgentError::io("reopen", &self.path))?;
        }
        self.records = count;
        Ok(())
    }
}

#[cfg(test)]
#[path = "journal_fuzz_tests.rs"]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_crc_is_ieee_crc32() {
        // The on-disk format names CRC-32 (IEEE); crc32fast computes it.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn decode_stops_at_a_corrupt_or_short_record() {
        let a = Record::Ack(v1::AcknowledgeUpdate {
            framework_id: "f".into(),
            task_id: "t".into(),
            uuid: vec![1; 16],
        });
        let mut buf = Vec::new();
        a.encode(&mut buf);
        let one = buf.len();
        a.encode(&mut buf);
        assert_eq!(decode_all(&buf), (vec![a.clone(), a.clone()], 2 * one));
        assert_eq!(decode_all(&buf[..2 * one - 1]), (vec![a.clone()], one));
        let mut flipped = buf.clone();
        flipped[2 * one - 1] ^= 0xff;
        assert_eq!(decode_all(&flipped), (vec![a.clone()], one));
        assert_eq!(decode_all(&[7, 0, 0]), (vec![], 0));
    }
}
