//! The artifacts a task fetches into its sandbox before it starts
//! (`CommandInfo.uris`, docs/frameworks.md "Artifacts"): how a
//! [`CommandUri`] is read. The master checks every task's with [`check`]
//! when it arrives; the agent reads them again with it before it writes
//! anything (as root), so both agree on the source, the file name and
//! the archive kind.

use std::path::{Component, Path, PathBuf};

use reqwest::Url;

use crate::v1::CommandUri;

/// Most artifacts one task may list.
pub const MAX_URIS: usize = 64;
/// Longest `CommandUri.value`.
pub const MAX_URI_BYTES: usize = 4096;

/// Where an artifact comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An `http://` or `https://` URL.
    Http(Url),
    /// An absolute path on the agent (or a `file:///` URL), of plain
    /// components; the agent serves only those under its
    /// `--artifact-paths`.
    Local(PathBuf),
}

/// The archives an agent unpacks (`CommandUri.extract`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archive {
    Tar,
    TarGz,
    TarZst,
}

impl Archive {
    /// The suffixes [`Archive::of`] knows, for messages.
    pub const SUFFIXES: &'static str = ".tar, .tar.gz, .tgz, .tar.zst, .tzst";

    /// The archive kind of a file named `name`, by its suffix.
    pub fn of(name: &str) -> Option<Archive> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
            Some(Archive::TarGz)
        } else if lower.ends_with(".tar.zst") || lower.ends_with(".tzst") {
            Some(Archive::TarZst)
        } else if lower.ends_with(".tar") {
            Some(Archive::Tar)
        } else {
            None
        }
    }
}

/// A [`CommandUri`] as checked by [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// The URI as the task gave it (credentials included: never shown).
    pub uri: String,
    /// The URI for messages and logs ([`redact`]).
    pub shown: String,
    pub source: Source,
    /// Relative to the sandbox: the file to write or, with `archive`, the
    /// directory to unpack into (empty: the sandbox itself).
    pub output: PathBuf,
    /// Set when the artifact is to be unpacked.
    pub archive: Option<Archive>,
    pub executable: bool,
    pub cache: bool,
    /// The expected SHA-256, 64 lowercase hex digits.
    pub sha256: Option<String>,
}

/// `value` (a `CommandUri.value`) as messages, status updates and logs
/// may show it: a URL without its user, password, query and fragment,
/// where presigned URLs and tokens go (`https://host/path?…`); a local
/// path as it is. DESIGN.md "Trust": tokens never appear in a read, an
/// event or a log.
pub fn redact(value: &str) -> String {
    if value.starts_with('/') {
        return value.to_owned();
    }
    match Url::parse(value) {
        Ok(url) => redact_url(&url),
        Err(_) => redact_unparsed(value),
    }
}

/// [`redact`] for a parsed URL (a redirect's, say).
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    // Fails only for URLs that cannot have them (file:).
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    let mut out = shown.to_string();
    if url.query().is_some() {
        out.push_str("?…");
    }
    out
}

/// [`redact`] for what is not a URL: cut at `?` or `#`, and anything up
/// to an `@` after the scheme dropped.
fn redact_unparsed(value: &str) -> String {
    let end = value.find(['?', '#']).unwrap_or(value.len());
    let mut out = value[..end].to_owned();
    if let Some(start) = out.find("://").map(|i| i + 3) {
        let host_end = out[start..].find('/').map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..host_end].rfind('@') {
            out.replace_range(start..start + at + 1, "");
        }
    }
    if end < value.len() {
        out.push_str("?…");
    }
    out
}

/// Reads one artifact of a task, or says (naming it) why it is refused.
pub fn check(uri: &CommandUri) -> Result<Artifact, String> {
    let value = uri.value.as_str();
    let shown = redact(value);
    let bad = |why: String| format!("artifact {shown:?}: {why}");
    if value.is_empty() || value.len() > MAX_URI_BYTES {
        return Err(bad(format!("must be 1 to {MAX_URI_BYTES} bytes")));
    }
    if value.contains('\0') || uri.output_file.contains('\0') || uri.sha256.contains('\0') {
        return Err(bad("contains a NUL byte".to_owned()));
    }
    let source = source(value).map_err(bad)?;
    let name = match &source {
        Source::Http(url) => url.path_segments().and_then(|mut s| s.next_back()).unwrap_or(""),
        Source::Local(path) => path.file_name().and_then(|n| n.to_str()).unwrap_or(""),
    };
    let archive = match uri.extract {
        false => None,
        true => Some(Archive::of(name).ok_or_else(|| {
            bad(format!(
                "extract is set but {name:?} is not an archive the agent unpacks ({})",
                Archive::SUFFIXES
            ))
        })?),
    };
    let output = match (uri.output_file.as_str(), archive) {
        ("", Some(_)) => PathBuf::new(),
        ("", None) => crate::security::secret::sandbox_relative("file name", name)
            .map_err(|e| bad(format!("{e}; name the file with output_file")))?,
        (file, _) => crate::security::secret::sandbox_relative("output_file", file).map_err(bad)?,
    };
    let sha256 = match uri.sha256.as_str() {
        "" => None,
        hex if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => Some(hex.to_ascii_lowercase()),
        hex => return Err(bad(format!("sha256 {hex:?} is not 64 hex digits"))),
    };
    Ok(Artifact {
        uri: value.to_owned(),
        shown: shown.clone(),
        source,
        output,
        archive,
        executable: uri.executable,
        cache: uri.cache,
        sha256,
    })
}

/// An http(s) URL, a `file:///` URL or an absolute path.
fn source(value: &str) -> Result<Source, String> {
    if value.starts_with('/') {
        return local(Path::new(value));
    }
    let url = Url::parse(value).map_err(|e| format!("neither an absolute path nor a URL: {e}"))?;
    match url.scheme() {
        // (The url crate refuses an http(s) URL without a host.)
        "http" | "https" => Ok(Source::Http(url)),
        "file" => {
            let path = url
                .to_file_path()
                .map_err(|()| "a file URL must be file:///PATH (no host)".to_owned())?;
            local(&path)
        }
        scheme => Err(format!(
            "unsupported scheme {scheme:?} (http, https, file, or an absolute path)"
        )),
    }
}

fn local(path: &Path) -> Result<Source, String> {
    let plain = path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !path.is_absolute() || !plain || path.file_name().is_none() {
        return Err("a local path must be absolute, name a file, and have no `.` or `..`".to_owned());
    }
    Ok(Source::Local(path.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(value: &str) -> CommandUri {
        CommandUri {
            value: value.into(),
            ..Default::default()
        }
    }

    #[test]
    fn artifacts_are_read_the_same_everywhere() {
        let a = check(&CommandUri {
            extract: true,
            sha256: "AB".repeat(32),
            ..uri("http://127.0.0.1:8080/dl/app.tar.gz?x=1")
        })
        .expect("valid");
        assert_eq!(a.archive, Some(Archive::TarGz));
        assert_eq!(a.output, PathBuf::new());
        assert_eq!(a.sha256, Some("ab".repeat(32)));
        let a = check(&uri("file:///srv/tools/run.sh")).expect("valid");
        assert_eq!(a.source, Source::Local("/srv/tools/run.sh".into()));
        assert_eq!(a.output, PathBuf::from("run.sh"));
        let a = check(&CommandUri {
            output_file: "bin/tool".into(),
            ..uri("https://example.com/tool")
        })
        .expect("valid");
        assert_eq!(a.output, PathBuf::from("bin/tool"));
        assert_eq!(Archive::of("x.TGZ"), Some(Archive::TarGz));
        assert_eq!(Archive::of("x.tar"), Some(Archive::Tar));
        assert_eq!(Archive::of("x.zip"), None);
    }

    /// DESIGN.md "Trust": credentials in a URI are never shown.
    #[test]
    fn credentials_and_queries_are_never_shown() {
        for (value, shown) in [
            (
                "https://user:secret@example.com/a/b.tgz?X-Amz-Signature=secret&x=1",
                "https://example.com/a/b.tgz?…",
            ),
            ("https://secret@example.com:8443/b", "https://example.com:8443/b"),
            ("http://h/app.tgz#secret", "http://h/app.tgz"),
            ("http://h/plain", "http://h/plain"),
            ("/srv/tools/run.sh", "/srv/tools/run.sh"),
            ("http://user:secret@/x?secret", "http:///x?…"),
            ("ftp://u:secret@h/x", "ftp://h/x"),
        ] {
            assert_eq!(redact(value), shown, "{value}");
        }
        let a = check(&uri("https://user:secret@example.com/t?sig=secret")).expect("valid");
        assert_eq!(a.shown, "https://example.com/t?…");
        let e = check(&CommandUri {
            extract: true,
            ..uri("https://user:secret@example.com/t?sig=secret")
        })
        .expect_err("not an archive");
        assert!(!e.contains("secret"), "{e}");
        let e = check(&uri("gopher://user:secret@h/x?secret")).expect_err("bad scheme");
        assert!(!e.contains("secret"), "{e}");
    }
}
