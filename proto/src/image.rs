//! The image a task may name (`ContainerInfo.image.reference`), checked
//! the same way by the master (bad input) and the agent.

use std::fmt;

/// `oci:NAME[:TAG]` or `oci:NAME@sha256:HEX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// An OCI image layout's directory name in the agent's `--image-layouts`.
    pub name: String,
    pub selector: Selector,
}

/// Which image of the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The `org.opencontainers.image.ref.name` of an `index.json` entry.
    Tag(String),
    /// A manifest digest, `sha256:<64 lowercase hex>`.
    Digest(String),
}

/// Why a reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image reference {reference:?}: {reason}")]
pub struct ImageRefError {
    pub reference: String,
    pub reason: &'static str,
}

const MAX_LEN: usize = 512;
const MAX_PART: usize = 128;

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, ImageRefError> {
        let err = |reason| ImageRefError {
            reference: s.chars().take(MAX_LEN).collect(),
            reason,
        };
        if s.len() > MAX_LEN {
            return Err(err("longer than 512 bytes"));
        }
        let Some(rest) = s.strip_prefix("oci:") else {
            return Err(err(
                "only oci:NAME[:TAG] and oci:NAME@sha256:HEX (a layout in the agent's --image-layouts) are supported; registry references are not yet",
            ));
        };
        let (name, selector) = if let Some((name, digest)) = rest.split_once('@') {
            let hex = digest
                .strip_prefix("sha256:")
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
                .ok_or_else(|| err("the digest must be sha256: and 64 lowercase hex digits"))?;
            (name, Selector::Digest(format!("sha256:{hex}")))
        } else if let Some((name, tag)) = rest.split_once(':') {
            let tag_ok = tag.len() <= MAX_PART
                && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && tag
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !tag_ok {
                return Err(err(
                    "a tag is 1 to 128 letters, digits, '.', '_' or '-', not starting with '.' or '-'",
                ));
            }
            (name, Selector::Tag(tag.to_owned()))
        } else {
            (rest, Selector::Tag("latest".to_owned()))
        };
        let name_ok = name.len() <= MAX_PART
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !name_ok {
            return Err(err(
                "a layout name is 1 to 128 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
            ));
        }
        Ok(ImageRef {
            name: name.to_owned(),
            selector,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            Selector::Tag(tag) => write!(f, "oci:{}:{tag}", self.name),
            Selector::Digest(d) => write!(f, "oci:{}@{d}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_with_a_tag_a_digest_or_neither() {
        let hex = "a".repeat(64);
        for (s, name, sel) in [
            ("oci:busybox", "busybox", Selector::Tag("latest".into())),
            ("oci:busybox:1.36", "busybox", Selector::Tag("1.36".into())),
            (
                &format!("oci:my-app.v2@sha256:{hex}") as &str,
                "my-app.v2",
                Selector::Digest(format!("sha256:{hex}")),
            ),
        ] {
            let r = ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!((r.name.as_str(), &r.selector), (name, &sel), "{s}");
            if s.contains(':') && s != "oci:busybox" {
                assert_eq!(r.to_string(), s);
            }
        }
    }

    #[test]
    fn bad_references_are_refused_with_the_reason() {
        for (s, why) in [
            ("busybox", "registry references"),
            ("registry:5000/busybox:1", "registry references"),
            ("oci:", "layout name"),
            ("oci:../etc", "layout name"),
            ("oci:a/b", "layout name"),
            ("oci:.hidden", "layout name"),
            ("oci:Busybox", "layout name"),
            ("oci:busybox:", "tag"),
            ("oci:busybox:-x", "tag"),
            ("oci:busybox:a/b", "tag"),
            ("oci:busybox@sha256:abc", "digest"),
            ("oci:busybox@sha512:abc", "digest"),
        ] {
            let e = ImageRef::parse(s).expect_err(s);
            assert!(e.to_string().contains(why), "{s}: {e}");
        }
        assert!(ImageRef::parse(&format!("oci:{}", "a".repeat(600))).is_err());
    }
}
