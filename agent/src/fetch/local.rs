//! Local artifacts: files under the operator's `--artifact-paths` (review
//! item 3). The agent reads them as root, so a file is opened beneath its
//! allowed directory through no symlink at all (openat2
//! `RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS`: nothing swapped in between a
//! check and the open can lead out), without blocking (a FIFO), and
//! served only if it is a regular file every user may read: a task gets
//! nothing its user could not read itself.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mezzo_proto::artifact::Artifact;
use nix::errno::Errno;
use nix::fcntl::OFlag;

use super::FetchError;
use crate::images::DigestReader;

/// One of `--artifact-paths`: as given, and resolved when the agent started.
#[derive(Debug)]
pub(super) struct AllowedDir {
    given: PathBuf,
    real: PathBuf,
}

/// The operator's `--artifact-paths`; each must exist.
pub(super) fn allowed_dirs(paths: &[PathBuf]) -> Result<Vec<AllowedDir>, FetchError> {
    paths
        .iter()
        .map(|p| {
            let real = std::fs::canonicalize(p)
                .map_err(|e| FetchError::Agent(format!("--artifact-paths {}: {e}", p.display())))?;
            Ok(AllowedDir { given: p.clone(), real })
        })
        .collect()
}

/// The allowed directory `path` is under (as given or resolved), and the
/// rest of `path` beneath it.
pub(super) fn under<'a>(dirs: &'a [AllowedDir], a: &Artifact, path: &Path) -> Result<(&'a Path, PathBuf), FetchError> {
    dirs.iter()
        .find_map(|d| {
            [&d.given, &d.real].into_iter().find_map(|base| {
                let rest = path.strip_prefix(base).ok()?;
                (!rest.as_os_str().is_empty()).then(|| (base.as_path(), rest.to_path_buf()))
            })
        })
        .ok_or_else(|| FetchError::NotAllowed {
            uri: a.shown.clone(),
            path: path.to_path_buf(),
        })
}

/// Copies the file `rest` beneath the allowed directory `dir` into the
/// new file `to` (0600); returns its SHA-256.
pub(super) fn copy_local(a: &Artifact, dir: &Path, rest: &Path, to: &Path, limit: u64) -> Result<String, FetchError> {
    let path = dir.join(rest);
    let read_err = |source| FetchError::Read {
        uri: a.shown.clone(),
        path: path.clone(),
        source,
    };
    let refused = |why: &'static str| FetchError::Refused {
        uri: a.shown.clone(),
        path: path.clone(),
        why,
    };
    // The directory itself is the operator's: its path may hold symlinks.
    let root = File::open(dir).map_err(read_err)?;
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_NOFOLLOW;
    let fd = crate::images::open_beneath_with(&root, rest.as_os_str().as_bytes(), flags).map_err(|e| match e {
        Errno::ELOOP | Errno::EXDEV => refused("it is, or goes through, a symlink"),
        e => read_err(e.into()),
    })?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(refused("not a regular file"));
    }
    if meta.permissions().mode() & 0o004 == 0 {
        return Err(refused("not readable by all users (the agent serves only those)"));
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(|e| FetchError::Agent(format!("create {}: {e}", to.display())))?;
    let mut reader = DigestReader::new(file);
    let mut buf = vec![0u8; 64 * 1024];
    // One byte past the limit tells a file at the limit from one over.
    let mut limited = (&mut reader).take(limit + 1);
    loop {
        let n = limited.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .map_err(|e| FetchError::Agent(format!("write {}: {e}", to.display())))?;
    }
    if reader.count() > limit {
        return Err(FetchError::TooLarge {
            uri: a.shown.clone(),
            limit,
        });
    }
    Ok(reader.finish().0.hex().to_owned())
}
