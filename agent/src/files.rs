//! The files API: browse a task's sandbox and read its files by offset, for
//! the dashboard's log tail and `mezzo logs -f`.
//!
//! ```text
//! GET /files/<framework>/<task>/browse?path=DIR
//! GET /files/<framework>/<task>/read?path=FILE&offset=N&length=N   (or &tail=N)
//! GET /files/<framework>/executors/<executor>/{browse,read}?…  (a custom
//!     executor's sandbox, which the tasks it runs share)
//! ```
//!
//! Paths are confined to the sandbox. A request path must be relative and
//! made only of plain names (no `..`, no root; query strings are
//! percent-decoded once by the router, so `%2e%2e` is `..` and refused,
//! and nothing is decoded twice). The joined path is canonicalized and
//! must stay under the canonical sandbox, which refuses symlinks that lead
//! out; the final file is opened with `O_NOFOLLOW` and its real path read
//! back from `/proc/self/fd` and checked again, so a symlink swapped in
//! between the check and the open is refused too.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use mezzo_proto::ids::{ExecutorId, FrameworkId, TaskId};
use serde::{Deserialize, Serialize};

use crate::paths;

/// Largest read answered at once.
pub const MAX_READ: u64 = 1 << 20;
/// Read size when the request names none.
pub const DEFAULT_READ: u64 = 64 * 1024;
/// Entries listed from one directory at most.
pub const MAX_ENTRIES: usize = 10_000;

/// Why a files request is refused.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("path {0:?}: must be relative to the sandbox, without `..` or a leading `/`")]
    Outside(String),
    #[error("path {0:?} leads out of the sandbox (a symlink?)")]
    Escapes(String),
    #[error("path {0:?}: not found in the sandbox")]
    NotFound(String),
    /// `what`: "task ID" or "executor ID".
    #[error("no sandbox for {what} of framework {framework}")]
    NoSandbox { framework: String, what: String },
    #[error("path {0:?} is a directory: list it with `mezzo logs TASK --ls {0}` (or the files API's browse)")]
    IsDir(String),
    #[error("path {0:?} is not a directory; use read")]
    NotDir(String),
    #[error("{0}")]
    Invalid(String),
    #[error("reading {path:?}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl FilesError {
    fn status(&self) -> StatusCode {
        match self {
            FilesError::Outside(_) | FilesError::Invalid(_) | FilesError::IsDir(_) | FilesError::NotDir(_) => {
                StatusCode::BAD_REQUEST
            }
            FilesError::Escapes(_) => StatusCode::FORBIDDEN,
            FilesError::NotFound(_) | FilesError::NoSandbox { .. } => StatusCode::NOT_FOUND,
            FilesError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for FilesError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string(), "status": self.status().as_u16() });
        (self.status(), Json(body)).into_response()
    }
}

/// A task's sandbox, checked to exist.
#[derive(Debug, Clone)]
pub struct Sandbox {
    root: PathBuf,
}

impl Sandbox {
    /// The sandbox of a task under `work_dir`.
    pub fn of(work_dir: &Path, framework: &str, task: &str) -> Result<Sandbox, FilesError> {
        let fid = FrameworkId::parse(framework).map_err(|e| FilesError::Invalid(format!("framework: {e}")))?;
        let tid = TaskId::parse(task).map_err(|e| FilesError::Invalid(format!("task: {e}")))?;
        Sandbox::at(
            &paths::sandbox_dir(work_dir, &fid, &tid),
            framework,
            &format!("task {task}"),
        )
    }

    /// The sandbox of a custom executor under `work_dir`.
    pub fn of_executor(work_dir: &Path, framework: &str, executor: &str) -> Result<Sandbox, FilesError> {
        let fid = FrameworkId::parse(framework).map_err(|e| FilesError::Invalid(format!("framework: {e}")))?;
        let eid = ExecutorId::parse(executor).map_err(|e| FilesError::Invalid(format!("executor: {e}")))?;
        let dir = paths::executor_sandbox_dir(work_dir, &fid, &eid);
        Sandbox::at(&dir, framework, &format!("executor {executor}"))
    }

    fn at(dir: &Path, framework: &str, what: &str) -> Result<Sandbox, FilesError> {
        let root = dir.canonicalize().map_err(|_| FilesError::NoSandbox {
            framework: framework.to_owned(),
            what: what.to_owned(),
        })?;
        Ok(Sandbox { root })
    }

    /// Resolves `rel` inside the sandbox (see the module doc).
    pub fn resolve(&self, rel: &str) -> Result<PathBuf, FilesError> {
        if rel.contains('\0') {
            return Err(FilesError::Outside(rel.to_owned()));
        }
        let p = Path::new(rel);
        for c in p.components() {
            match c {
                Component::Normal(_) | Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(FilesError::Outside(rel.to_owned()));
                }
            }
        }
        let joined = self.root.join(p);
        let real = joined.canonicalize().map_err(|e| self.unresolved(rel, &joined, e))?;
        if !real.starts_with(&self.root) {
            return Err(FilesError::Escapes(rel.to_owned()));
        }
        Ok(real)
    }

    /// Why `joined` does not resolve, as the caller's mistake: a way out
    /// when the part of it that exists already leads out of the sandbox
    /// (so that what lies beyond a symlink out, or does not, stays
    /// unknown), else not found, a symlink loop or an overlong name.
    fn unresolved(&self, rel: &str, joined: &Path, e: std::io::Error) -> FilesError {
        let outside = joined
            .ancestors()
            .skip(1)
            .find_map(|p| p.canonicalize().ok())
            .is_some_and(|real| !real.starts_with(&self.root));
        if outside {
            return FilesError::Escapes(rel.to_owned());
        }
        match e.raw_os_error().map(nix::errno::Errno::from_raw) {
            Some(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => FilesError::NotFound(rel.to_owned()),
            Some(nix::errno::Errno::ELOOP) => FilesError::Invalid(format!("path {rel:?}: a symlink loop")),
            Some(nix::errno::Errno::ENAMETOOLONG) => FilesError::Invalid(format!("path {rel:?}: a name is too long")),
            _ => FilesError::Io {
                path: rel.to_owned(),
                source: e,
            },
        }
    }

    /// Opens a resolved path without following a final symlink, and checks
    /// where the open really landed.
    fn open(&self, rel: &str, real: &Path) -> Result<File, FilesError> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(real)
            .map_err(|e| match e.raw_os_error() {
                Some(code) if code == nix::errno::Errno::ELOOP as i32 => FilesError::Escapes(rel.to_owned()),
                _ => FilesError::Io {
                    path: rel.to_owned(),
                    source: e,
                },
            })?;
        let landed = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(|e| FilesError::Io {
            path: rel.to_owned(),
            source: e,
        })?;
        if !landed.starts_with(&self.root) {
            return Err(FilesError::Escapes(rel.to_owned()));
        }
        Ok(file)
    }

    /// Lists a directory of the sandbox.
    pub fn browse(&self, rel: &str) -> Result<Listing, FilesError> {
        let real = self.resolve(rel)?;
        let dir = self.open(rel, &real)?;
        let io = |e| FilesError::Io {
            path: rel.to_owned(),
            source: e,
        };
        if !dir.metadata().map_err(io)?.is_dir() {
            return Err(FilesError::NotDir(rel.to_owned()));
        }
        let mut entries = Vec::new();
        for e in std::fs::read_dir(&real).map_err(io)?.take(MAX_ENTRIES) {
            let e = e.map_err(io)?;
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            let kind = if meta.is_dir() {
                "dir"
            } else if meta.is_file() {
                "file"
            } else if meta.file_type().is_symlink() {
                "symlink"
            } else {
                "other"
            };
            entries.push(Entry {
                name: e.file_name().to_string_lossy().into_owned(),
                kind,
                size: meta.len(),
                mtime: meta.mtime(),
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Listing {
            path: rel.to_owned(),
            entries,
        })
    }

    /// Reads part of a file: `length` bytes from `offset`, or the last
    /// `tail` bytes.
    pub fn read(
        &self,
        rel: &str,
        offset: Option<u64>,
        length: Option<u64>,
        tail: Option<u64>,
    ) -> Result<Chunk, FilesError> {
        let real = self.resolve(rel)?;
        let mut file = self.open(rel, &real)?;
        let io = |e| FilesError::Io {
            path: rel.to_owned(),
            source: e,
        };
        let meta = file.metadata().map_err(io)?;
        if meta.is_dir() {
            return Err(FilesError::IsDir(rel.to_owned()));
        }
        if !meta.is_file() {
            return Err(FilesError::Invalid(format!("path {rel:?} is not a regular file")));
        }
        let size = meta.len();
        let length = length.unwrap_or(DEFAULT_READ);
        if length > MAX_READ {
            return Err(FilesError::Invalid(format!(
                "length: {length} is over the limit of {MAX_READ} bytes"
            )));
        }
        let (start, want) = match (offset, tail) {
            (Some(_), Some(_)) => return Err(FilesError::Invalid("give offset or tail, not both".into())),
            (_, Some(t)) => {
                let t = t.min(MAX_READ);
                (size.saturating_sub(t), t)
            }
            (o, None) => (o.unwrap_or(0).min(size), length),
        };
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut buf = Vec::new();
        file.take(want).read_to_end(&mut buf).map_err(io)?;
        if start + (buf.len() as u64) < size {
            // The next read starts where this one ends: on a character's
            // first byte, not inside it (which would show U+FFFD twice).
            buf.truncate(utf8_whole(&buf));
        }
        Ok(Chunk {
            path: rel.to_owned(),
            offset: start,
            length: buf.len() as u64,
            size,
            data: String::from_utf8_lossy(&buf).into_owned(),
        })
    }
}

/// The length of `buf` without a UTF-8 sequence cut off at its end (at
/// most 3 bytes less). Bytes that are not UTF-8 at all stay.
fn utf8_whole(buf: &[u8]) -> usize {
    let n = buf.len();
    for back in 1..=n.min(3) {
        let b = buf[n - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead
        }
        let needs = match b {
            0xF0..=0xF7 => 4,
            0xE0..=0xEF => 3,
            0xC0..=0xDF => 2,
            _ => 1, // ASCII, or a byte that starts nothing
        };
        return if needs > back { n - back } else { n };
    }
    n
}

/// One directory entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub kind: &'static str,
    pub size: u64,
    pub mtime: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub path: String,
    pub entries: Vec<Entry>,
}

/// Part of a file. The next read starts at `offset + length`. Also what
/// the CLI reads back (`mezzo logs`, `mezzo run`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chunk {
    pub path: String,
    pub offset: u64,
    pub length: u64,
    /// The file's size when it was read.
    pub size: u64,
    /// The bytes, as UTF-8 (invalid sequences replaced).
    pub data: String,
}

#[derive(Debug, Deserialize)]
struct BrowseQuery {
    path: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ReadQuery {
    path: String,
    offset: Option<u64>,
    length: Option<u64>,
    tail: Option<u64>,
}

/// The files routes over the agent's work dir.
pub fn router(work_dir: PathBuf) -> Router {
    Router::new()
        .route("/files/{framework}/{task}/browse", get(browse))
        .route("/files/{framework}/{task}/read", get(read))
        .route("/files/{framework}/executors/{executor}/browse", get(browse_executor))
        .route("/files/{framework}/executors/{executor}/read", get(read_executor))
        .with_state(work_dir)
}

fn bad_query(e: QueryRejection) -> Response {
    FilesError::Invalid(format!("bad query string: {}", e.body_text())).into_response()
}

async fn blocking<T: Serialize + Send + 'static>(
    f: impl FnOnce() -> Result<T, FilesError> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Which sandbox a route names: a task's (`false`) or an executor's.
type Which = (PathBuf, String, String, bool);

fn sandbox((work_dir, fw, id, executor): &Which) -> Result<Sandbox, FilesError> {
    if *executor {
        Sandbox::of_executor(work_dir, fw, id)
    } else {
        Sandbox::of(work_dir, fw, id)
    }
}

async fn browse_in(which: Which, q: Result<Query<BrowseQuery>, QueryRejection>) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    blocking(move || {
        let path = q.path.filter(|p| !p.is_empty()).unwrap_or_else(|| ".".into());
        sandbox(&which)?.browse(&path)
    })
    .await
}

async fn read_in(which: Which, q: Result<Query<ReadQuery>, QueryRejection>) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    blocking(move || sandbox(&which)?.read(&q.path, q.offset, q.length, q.tail)).await
}

async fn browse(
    State(work_dir): State<PathBuf>,
    UrlPath((fw, task)): UrlPath<(String, String)>,
    q: Result<Query<BrowseQuery>, QueryRejection>,
) -> Response {
    browse_in((work_dir, fw, task, false), q).await
}

async fn read(
    State(work_dir): State<PathBuf>,
    UrlPath((fw, task)): UrlPath<(String, String)>,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Response {
    read_in((work_dir, fw, task, false), q).await
}

async fn browse_executor(
    State(work_dir): State<PathBuf>,
    UrlPath((fw, executor)): UrlPath<(String, String)>,
    q: Result<Query<BrowseQuery>, QueryRejection>,
) -> Response {
    browse_in((work_dir, fw, executor, true), q).await
}

async fn read_executor(
    State(work_dir): State<PathBuf>,
    UrlPath((fw, executor)): UrlPath<(String, String)>,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Response {
    read_in((work_dir, fw, executor, true), q).await
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;
