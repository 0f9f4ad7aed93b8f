//! The image a task may name (`ContainerInfo.image.reference`), checked
//! the same way by the master (bad input) and the agent.
//!
//! Two kinds:
//! - `oci:NAME[:TAG]` or `oci:NAME@sha256:HEX`: an OCI image layout in the
//!   agent's `--image-layouts` directory;
//! - `HOST[:PORT]/PATH[:TAG][@sha256:HEX]`: an image in a registry. The
//!   host is always explicit (Docker's rule tells it from a path: it has a
//!   `.` or a `:`, or is `localhost`). There is no implicit `docker.io`,
//!   so that which registry an agent trusts is visible in every task.

use std::fmt;

/// A parsed image reference; `Display` gives it back in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub source: Source,
    pub selector: Selector,
}

/// Where the image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An OCI image layout's directory name in the agent's `--image-layouts`.
    Layout(String),
    /// A repository in a registry.
    Registry {
        /// `name[:port]`, as written (a DNS name or IPv4 address).
        host: String,
        /// `/`-separated path components, e.g. `library/busybox`.
        repository: String,
    },
}

/// Which image of the layout or repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A tag: the `org.opencontainers.image.ref.name` of a layout's
    /// `index.json` entry, or a registry tag.
    Tag(String),
    /// A manifest (or index) digest, `sha256:<64 lowercase hex>`.
    Digest(String),
    /// `NAME:TAG@DIGEST`: the digest decides; the tag is kept for people.
    TagAndDigest { tag: String, digest: String },
}

impl Selector {
    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        match self {
            Selector::Tag(_) => None,
            Selector::Digest(d) | Selector::TagAndDigest { digest: d, .. } => Some(d),
        }
    }

    /// What to ask a layout or registry for: the digest if there is one,
    /// else the tag.
    pub fn lookup(&self) -> &str {
        match self {
            Selector::Tag(t) => t,
            Selector::Digest(d) | Selector::TagAndDigest { digest: d, .. } => d,
        }
    }
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
/// Docker's limit on a repository path.
const MAX_REPOSITORY: usize = 255;

const TAG_RULE: &str = "a tag is 1 to 128 letters, digits, '.', '_' or '-', not starting with '.' or '-'";
const DIGEST_RULE: &str = "the digest must be sha256: and 64 lowercase hex digits";

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, ImageRefError> {
        let err = |reason| ImageRefError {
            reference: s.chars().take(MAX_LEN).collect(),
            reason,
        };
        if s.len() > MAX_LEN {
            return Err(err("longer than 512 bytes"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => (rest, Some(parse_digest(digest).ok_or_else(|| err(DIGEST_RULE))?)),
            None => (s, None),
        };
        let (source, tag) = match rest.strip_prefix("oci:") {
            Some(layout) => parse_layout(layout).map_err(err)?,
            None => parse_registry(rest).map_err(err)?,
        };
        let selector = match (tag, digest) {
            (Some(tag), Some(digest)) => {
                if matches!(source, Source::Layout(_)) {
                    return Err(err("a layout image is oci:NAME:TAG or oci:NAME@sha256:HEX, not both"));
                }
                Selector::TagAndDigest { tag, digest }
            }
            (None, Some(digest)) => Selector::Digest(digest),
            (Some(tag), None) => Selector::Tag(tag),
            (None, None) => Selector::Tag("latest".to_owned()),
        };
        Ok(ImageRef { source, selector })
    }

    /// Whether the image comes from a registry (not a local layout).
    pub fn is_registry(&self) -> bool {
        matches!(self.source, Source::Registry { .. })
    }
}

/// `sha256:HEX` → the digest, canonical.
fn parse_digest(digest: &str) -> Option<String> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))?;
    Some(format!("sha256:{hex}"))
}

/// `NAME[:TAG]` after `oci:`.
fn parse_layout(rest: &str) -> Result<(Source, Option<String>), &'static str> {
    let (name, tag) = split_tag(rest)?;
    let name_ok = name.len() <= MAX_PART
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !name_ok {
        return Err(
            "a layout name is 1 to 128 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
        );
    }
    Ok((Source::Layout(name.to_owned()), tag))
}

/// `HOST[:PORT]/PATH[:TAG]`.
fn parse_registry(rest: &str) -> Result<(Source, Option<String>), &'static str> {
    const NO_HOST: &str = "no registry host: name one explicitly, as in registry.example.com/library/busybox:1 or \
                           localhost:5000/app (there is no implicit docker.io; use docker.io/library/NAME), \
                           or oci:NAME for a layout in the agent's --image-layouts";
    let Some((host, path)) = rest.split_once('/') else {
        return Err(NO_HOST);
    };
    if !(host.contains('.') || host.contains(':') || host == "localhost") {
        return Err(NO_HOST);
    }
    if !valid_host(host) {
        return Err("a registry host is a DNS name or IPv4 address with an optional :PORT (1 to 65535)");
    }
    // Path components hold no ':', so a ':' after the host starts the tag.
    let (path, tag) = split_tag(path)?;
    let path_ok = path.len() <= MAX_REPOSITORY && path.split('/').all(valid_component);
    if !path_ok {
        return Err(
            "a repository path is up to 255 bytes of '/'-separated components of lowercase letters and digits, \
             separated inside by single '.', '_' or '-'",
        );
    }
    Ok((
        Source::Registry {
            host: host.to_owned(),
            repository: path.to_owned(),
        },
        tag,
    ))
}

/// Splits `NAME:TAG`, checking the tag.
fn split_tag(s: &str) -> Result<(&str, Option<String>), &'static str> {
    let Some((name, tag)) = s.split_once(':') else {
        return Ok((s, None));
    };
    let tag_ok = tag.len() <= MAX_PART
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !tag_ok {
        return Err(TAG_RULE);
    }
    Ok((name, Some(tag.to_owned())))
}

/// `[a-z0-9]+([._-][a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    !bytes.is_empty()
        && bytes.first().copied().is_some_and(alnum)
        && bytes.last().copied().is_some_and(alnum)
        && bytes.windows(2).all(|w| alnum(w[0]) || alnum(w[1]))
        && bytes.iter().all(|&b| alnum(b) || b"._-".contains(&b))
}

/// `name[:port]`: DNS labels (letters, digits, inner '-') joined by '.',
/// and a port of 1 to 65535. IPv6 literals are not accepted.
fn valid_host(host: &str) -> bool {
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let port_ok = port
        .is_none_or(|p| p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|n| n > 0));
    name.len() <= 253 && name.split('.').all(label_ok) && port_ok
}

impl ImageRef {
    /// How the `TASK_STARTING` message an agent sends as it downloads a
    /// layer of this image begins (`mezzo why` and the dashboard read it).
    pub fn pull_message_prefix(&self) -> String {
        format!("pulling image {self}: ")
    }

    /// How the message of a task that ended because this image could not
    /// be found, pulled or used begins.
    pub fn error_message_prefix(&self) -> String {
        format!("image {self}: ")
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Layout(name) => write!(f, "oci:{name}")?,
            Source::Registry { host, repository } => write!(f, "{host}/{repository}")?,
        }
        match &self.selector {
            Selector::Tag(tag) => write!(f, ":{tag}"),
            Selector::Digest(d) => write!(f, "@{d}"),
            Selector::TagAndDigest { tag, digest } => write!(f, ":{tag}@{digest}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(name: &str) -> Source {
        Source::Layout(name.into())
    }

    fn registry(host: &str, repository: &str) -> Source {
        Source::Registry {
            host: host.into(),
            repository: repository.into(),
        }
    }

    #[test]
    fn references_parse_with_a_tag_a_digest_or_neither() {
        let hex = "a".repeat(64);
        let digest = format!("sha256:{hex}");
        let tag = |t: &str| Selector::Tag(t.into());
        for (s, source, sel) in [
            ("oci:busybox".to_owned(), layout("busybox"), tag("latest")),
            ("oci:busybox:1.36".to_owned(), layout("busybox"), tag("1.36")),
            (
                format!("oci:my-app.v2@{digest}"),
                layout("my-app.v2"),
                Selector::Digest(digest.clone()),
            ),
            (
                "127.0.0.1:5001/busybox:1".to_owned(),
                registry("127.0.0.1:5001", "busybox"),
                tag("1"),
            ),
            (
                "registry.example.com/library/busybox".to_owned(),
                registry("registry.example.com", "library/busybox"),
                tag("latest"),
            ),
            (
                "localhost/a/b-c/d.e_f:v1.0".to_owned(),
                registry("localhost", "a/b-c/d.e_f"),
                tag("v1.0"),
            ),
            (
                format!("docker.io/library/busybox@{digest}"),
                registry("docker.io", "library/busybox"),
                Selector::Digest(digest.clone()),
            ),
            (
                format!("ghcr.io/org/app:2@{digest}"),
                registry("ghcr.io", "org/app"),
                Selector::TagAndDigest {
                    tag: "2".into(),
                    digest: digest.clone(),
                },
            ),
        ] {
            let r = ImageRef::parse(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!((&r.source, &r.selector), (&source, &sel), "{s}");
            assert_eq!(r.is_registry(), s.contains('/'), "{s}");
            // Display is canonical: it parses back to the same reference.
            assert_eq!(ImageRef::parse(&r.to_string()).as_ref(), Ok(&r), "{s}");
            if s.contains(':') && s != "oci:busybox" {
                assert_eq!(r.to_string(), s);
            }
        }
        assert_eq!(
            ImageRef::parse(&format!("h.io/a:t@{digest}"))
                .map(|r| r.selector.lookup().to_owned())
                .as_deref(),
            Ok(digest.as_str())
        );
    }

    #[test]
    fn bad_references_are_refused_with_the_reason() {
        let hex = "a".repeat(64);
        for (s, why) in [
            ("busybox", "no implicit docker.io"),
            ("busybox:1", "no implicit docker.io"),
            ("library/busybox:1", "no implicit docker.io"),
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
            (&format!("oci:busybox:1@sha256:{hex}"), "not both"),
            ("h.io/Busybox", "repository path"),
            ("h.io/", "repository path"),
            ("h.io/a//b", "repository path"),
            ("h.io/a/../b", "repository path"),
            ("h.io/a--b", "repository path"),
            ("h.io/-a", "repository path"),
            ("h.io/a.", "repository path"),
            (&format!("h.io/{}", "a".repeat(256)), "repository path"),
            ("h.io/a:", "tag"),
            ("h.io/a:.x", "tag"),
            ("h.io/a:b:c", "tag"),
            ("h.io/a@sha256:ABC", "digest"),
            (&format!("h.io/a@sha512:{hex}"), "digest"),
            ("h.io:0/a", "registry host"),
            ("h.io:70000/a", "registry host"),
            ("h.io:x/a", "registry host"),
            ("h..io/a", "registry host"),
            ("-h.io/a", "registry host"),
            ("h_x.io/a", "registry host"),
            ("[::1]:5000/a", "registry host"),
            ("user@h.io/a", "digest"),
        ] {
            let e = ImageRef::parse(s).expect_err(s);
            assert!(e.to_string().contains(why), "{s}: {e}");
        }
        assert!(ImageRef::parse(&format!("oci:{}", "a".repeat(600))).is_err());
        assert!(ImageRef::parse(&format!("h.io/{}", "a/".repeat(300))).is_err());
    }
}
