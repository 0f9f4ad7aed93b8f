//! `sha256:<64 lowercase hex>` digests, the only kind the store accepts,
//! and a reader that hashes and counts what passes through it so that a
//! blob is verified in the same pass that uses it.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ImageError;

/// A sha256 content digest. Other algorithms (sha512, blake3) are
/// refused: every image we accept names its blobs by sha256.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    /// 64 lowercase hex digits.
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Digest, ImageError> {
        let invalid = |reason| ImageError::InvalidDigest {
            digest: s.to_owned(),
            reason,
        };
        let (algorithm, hex) = s.split_once(':').ok_or_else(|| invalid("no algorithm"))?;
        if algorithm != "sha256" {
            return Err(ImageError::UnsupportedAlgorithm(s.to_owned()));
        }
        Digest::from_hex(hex).ok_or_else(|| invalid("not 64 lowercase hex digits"))
    }

    /// The digest whose hex part is `hex`, if it is 64 lowercase hex
    /// digits (as in a `blobs/sha256/<hex>` file name).
    pub fn from_hex(hex: &str) -> Option<Digest> {
        let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| Digest { hex: hex.to_owned() })
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_ring(ring::digest::digest(&SHA256, bytes))
    }

    /// The 64 hex digits, without the algorithm: a file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    pub(crate) fn from_ring(d: ring::digest::Digest) -> Digest {
        use fmt::Write;
        let mut hex = String::with_capacity(64);
        for b in d.as_ref() {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{b:02x}");
        }
        Digest { hex }
    }

    /// Checks that `actual` bytes with digest `digest` are what `self`
    /// (with `size` bytes) describes; `what` names the blob in the error.
    pub fn verify(&self, size: u64, actual: &Digest, actual_size: u64, what: &str) -> Result<(), ImageError> {
        if actual_size != size {
            return Err(ImageError::SizeMismatch {
                digest: self.clone(),
                expected: size,
                actual: actual_size,
            });
        }
        if actual != self {
            return Err(ImageError::DigestMismatch {
                what: what.to_owned(),
                expected: self.clone(),
                actual: actual.clone(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Digest, ImageError> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Hashes and counts every byte read through it.
pub(crate) struct DigestReader<R> {
    inner: R,
    context: Context,
    count: u64,
}

impl<R: Read> DigestReader<R> {
    pub fn new(inner: R) -> DigestReader<R> {
        DigestReader {
            inner,
            context: Context::new(&SHA256),
            count: 0,
        }
    }

    /// The bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest and length of what was read.
    pub fn finish(self) -> (Digest, u64) {
        (Digest::from_ring(self.context.finish()), self.count)
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.context.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn images_digest_parse_and_display() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d, Digest::of(b""));
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{EMPTY}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
    }

    #[test]
    fn images_digest_refuses_other_forms() {
        let upper = EMPTY.to_uppercase().replace("SHA256", "sha256");
        for bad in ["", "sha256:", "e3b0c442", &upper, &EMPTY[..70], &format!("{EMPTY}0")] {
            assert!(
                matches!(Digest::parse(bad), Err(ImageError::InvalidDigest { .. })),
                "{bad}"
            );
        }
        let sha512 = format!("sha512:{}", "a".repeat(128));
        assert!(matches!(
            Digest::parse(&sha512),
            Err(ImageError::UnsupportedAlgorithm(_))
        ));
        assert!(serde_json::from_str::<Digest>("\"md5:00\"").is_err());
    }

    #[test]
    fn images_digest_reader_hashes_and_counts() {
        let data = vec![7u8; 100_000];
        let mut r = DigestReader::new(&data[..]);
        let mut head = [0u8; 10];
        r.read_exact(&mut head).unwrap();
        io::copy(&mut r, &mut io::sink()).unwrap();
        let (d, n) = r.finish();
        assert_eq!((d.clone(), n), (Digest::of(&data), 100_000));
        d.verify(100_000, &Digest::of(&data), 100_000, "blob").unwrap();
        assert!(matches!(
            d.verify(1, &d, 100_000, "blob"),
            Err(ImageError::SizeMismatch { .. })
        ));
        let other = Digest::of(b"x");
        assert!(matches!(
            d.verify(1, &other, 1, "blob"),
            Err(ImageError::DigestMismatch { .. })
        ));
    }
}
