//! zstd streams (`tar+zstd` layers, `.tar.zst` artifacts), decoded by
//! ruzstd (pure Rust: the build needs no C compiler), frame after frame as
//! `zstd -d` reads them. Each frame's header is read here first: a frame
//! may declare a window of up to 2^64 bytes, which the decoder would hold
//! in memory before giving a byte out (so before any size limit of the
//! unpacker could act); one over [`MAX_WINDOW`] is refused, as `zstd -d`
//! refuses windows over 128 MiB unless told otherwise. Skippable frames
//! are skipped.

use std::io::{self, Read};

use ruzstd::decoding::{FrameDecoder, StreamingDecoder};

/// Largest window a frame may ask for (`zstd -d`'s default limit).
pub const MAX_WINDOW: u64 = 128 << 20;

const MAGIC: u32 = 0xFD2F_B528;
/// Skippable frames' magic numbers are 0x184D2A50..=0x184D2A5F.
const SKIPPABLE: u32 = 0x184D_2A50;

/// The decompressed bytes of every frame of a stream.
pub struct Frames<'a> {
    frame: Option<StreamingDecoder<Peekable<'a>, FrameDecoder>>,
}

impl<'a> Frames<'a> {
    pub fn new(stream: &'a mut dyn Read) -> io::Result<Frames<'a>> {
        let source = Peekable {
            head: Vec::new(),
            pos: 0,
            inner: stream,
        };
        Ok(Frames {
            frame: next_frame(source)?,
        })
    }
}

impl Read for Frames<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(decoder) = self.frame.as_mut() {
            let n = decoder.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // This frame is done: the next one, unless the stream is.
            let Some(done) = self.frame.take() else { break };
            self.frame = next_frame(done.into_inner())?;
        }
        Ok(0)
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The decoder of the next frame of `source` (skippable frames skipped),
/// or `None` at its end.
fn next_frame(mut source: Peekable<'_>) -> io::Result<Option<StreamingDecoder<Peekable<'_>, FrameDecoder>>> {
    loop {
        let head = source.peek(4)?;
        if head.is_empty() {
            return Ok(None);
        }
        if head.len() < 4 {
            return Err(invalid("zstd: a truncated frame".into()));
        }
        let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if magic & 0xFFFF_FFF0 == SKIPPABLE {
            let head = source.peek(8)?;
            if head.len() < 8 {
                return Err(invalid("zstd: a truncated skippable frame".into()));
            }
            let size = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            let skip = 8 + u64::from(size);
            if io::copy(&mut (&mut source).take(skip), &mut io::sink())? < skip {
                return Err(invalid("zstd: a truncated skippable frame".into()));
            }
            continue;
        }
        if magic != MAGIC {
            return Err(invalid(format!("zstd: not a zstd frame (magic {magic:#010x})")));
        }
        let window = window_size(source.peek(18)?)?;
        if window > MAX_WINDOW {
            return Err(invalid(format!(
                "zstd: a frame asks for a window of {window} bytes, over the {MAX_WINDOW} allowed"
            )));
        }
        return StreamingDecoder::new(source)
            .map(Some)
            .map_err(|e| invalid(format!("zstd: {e}")));
    }
}

/// The window a frame's header (RFC 8878, 3.1.1.1) asks for.
fn window_size(header: &[u8]) -> io::Result<u64> {
    let truncated = || invalid("zstd: a truncated frame header".into());
    let descriptor = *header.get(4).ok_or_else(truncated)?;
    let single_segment = descriptor & 0x20 != 0;
    if !single_segment {
        let w = *header.get(5).ok_or_else(truncated)?;
        let log = 10 + u64::from(w >> 3);
        let base = 1u64 << log;
        return Ok(base + (base / 8) * u64::from(w & 7));
    }
    // One segment: the window is the content size, after the dictionary id.
    let dict_len = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let size_len = [1, 2, 4, 8][usize::from(descriptor >> 6)];
    let at = 5 + dict_len;
    let field = header.get(at..at + size_len).ok_or_else(truncated)?;
    let mut bytes = [0u8; 8];
    bytes[..size_len].copy_from_slice(field);
    let size = u64::from_le_bytes(bytes);
    Ok(if size_len == 2 { size + 256 } else { size })
}

/// A reader whose next bytes can be looked at before they are read.
struct Peekable<'a> {
    head: Vec<u8>,
    pos: usize,
    inner: &'a mut dyn Read,
}

impl Peekable<'_> {
    /// Up to `n` next bytes (fewer only at the end of the stream).
    fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.pos > 0 {
            self.head.drain(..self.pos);
            self.pos = 0;
        }
        let mut chunk = [0u8; 32];
        while self.head.len() < n {
            let want = (n - self.head.len()).min(chunk.len());
            match self.inner.read(&mut chunk[..want]) {
                Ok(0) => break,
                Ok(k) => self.head.extend_from_slice(&chunk[..k]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(&self.head[..n.min(self.head.len())])
    }
}

impl Read for Peekable<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.head.len() {
            let n = buf.len().min(self.head.len() - self.pos);
            buf[..n].copy_from_slice(&self.head[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::tests::fixtures::zstd;

    fn decode(bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Frames::new(&mut &bytes[..])?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn frames_and_skippable_frames_are_read_in_turn() {
        let skippable = [&0x184D_2A53u32.to_le_bytes()[..], &3u32.to_le_bytes(), b"xyz"].concat();
        let stream = [zstd(b"hello, "), skippable, zstd(b"world")].concat();
        assert_eq!(decode(&stream).expect("three frames"), b"hello, world");
        assert_eq!(decode(b"").expect("no frame"), b"");
    }

    /// A frame that declares a huge window is refused from its header,
    /// before the decoder allocates anything.
    #[test]
    fn a_frame_asking_for_a_huge_window_is_refused() {
        // Magic, a descriptor without single segment, a window descriptor
        // of exponent 31 (2^41 bytes), then garbage.
        let huge = [&MAGIC.to_le_bytes()[..], &[0x00, 31 << 3], &[0u8; 16]].concat();
        let err = decode(&huge).expect_err("a 2 TiB window");
        assert!(err.to_string().contains("window of 2199023255552 bytes"), "{err}");
        // Single segment with an 8-byte content size of 1 TiB.
        let big = [
            &MAGIC.to_le_bytes()[..],
            &[0xE0],
            &(1u64 << 40).to_le_bytes(),
            &[0u8; 8],
        ]
        .concat();
        assert!(
            decode(&big)
                .expect_err("a 1 TiB window")
                .to_string()
                .contains("window of 1099511627776 bytes")
        );
        assert_eq!(window_size(&[0, 0, 0, 0, 0, 0]).expect("header"), 1024);
        for bad in [&b"nope"[..], &[0x28, 0xB5], &[0x50, 0x2A, 0x4D, 0x18, 9, 0, 0, 0, 1]] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
