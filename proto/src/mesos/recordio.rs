//! RecordIO, the framing of Mesos' event streams: each record is its
//! length in bytes as decimal ASCII, a newline, and the record itself,
//! with nothing between records (`docs/recordio.md` in Mesos).

use bytes::{Bytes, BytesMut};

/// One record, framed.
pub fn frame(record: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(record.len() + 8);
    append(&mut out, record);
    Bytes::from(out)
}

/// Appends one record, framed, to what is being written.
pub fn append(out: &mut Vec<u8>, record: &[u8]) {
    out.extend_from_slice(record.len().to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(record);
}

/// Why a stream is not RecordIO.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordIoError {
    #[error("record length {0:?} is not a decimal number")]
    BadLength(String),
    #[error("record of {len} bytes is over the limit of {limit}")]
    TooLong { len: usize, limit: usize },
}

/// Splits a byte stream into records as it arrives (for clients and
/// tests: the master only writes).
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    limit: usize,
}

impl Decoder {
    pub fn new(limit: usize) -> Decoder {
        Decoder {
            buf: BytesMut::new(),
            limit,
        }
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole record, if one has arrived.
    pub fn next_record(&mut self) -> Result<Option<Bytes>, RecordIoError> {
        let Some(nl) = self.buf.iter().position(|b| *b == b'\n') else {
            if self.buf.len() > 20 {
                return Err(RecordIoError::BadLength(
                    String::from_utf8_lossy(&self.buf[..20]).into(),
                ));
            }
            return Ok(None);
        };
        let text = std::str::from_utf8(&self.buf[..nl]).unwrap_or("");
        let len: usize = text
            .parse()
            .map_err(|_| RecordIoError::BadLength(String::from_utf8_lossy(&self.buf[..nl]).into()))?;
        if len > self.limit {
            return Err(RecordIoError::TooLong { len, limit: self.limit });
        }
        if self.buf.len() < nl + 1 + len {
            return Ok(None);
        }
        let _ = self.buf.split_to(nl + 1);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_length_newline_bytes_and_split_back_whatever_the_chunks() {
        let a = frame(b"{\"type\":\"HEARTBEAT\"}");
        assert_eq!(&a[..], b"20\n{\"type\":\"HEARTBEAT\"}");
        let b = frame(b"");
        assert_eq!(&b[..], b"0\n");
        let all: Vec<u8> = [a.clone(), b, frame("é".as_bytes())].concat();
        for chunk in 1..all.len() {
            let mut d = Decoder::new(1 << 20);
            let mut got = Vec::new();
            for piece in all.chunks(chunk) {
                d.push(piece);
                while let Some(r) = d.next_record().expect("valid") {
                    got.push(r);
                }
            }
            assert_eq!(got, vec![a.slice(3..), Bytes::new(), Bytes::from("é")], "chunk {chunk}");
        }
    }

    #[test]
    fn a_bad_or_huge_length_is_an_error() {
        let mut d = Decoder::new(10);
        d.push(b"x1\n");
        assert!(matches!(d.next_record(), Err(RecordIoError::BadLength(_))));
        let mut d = Decoder::new(10);
        d.push(b"11\n");
        assert_eq!(d.next_record(), Err(RecordIoError::TooLong { len: 11, limit: 10 }));
        let mut d = Decoder::new(10);
        d.push(&[b'1'; 30]);
        assert!(d.next_record().is_err());
    }
}
