//! Putting fetched bytes into a task's sandbox: unpacked into a
//! directory, or written to a file. A sandbox is reused when a task is
//! launched again under the same id, so whatever an earlier run left at
//! the artifact's name (a file, a symlink) is replaced, never followed.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use mezzo_proto::artifact::{Archive, Artifact};
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, openat, renameat};
use nix::sys::stat::{Mode, fchmod};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, unlinkat};

use super::FetchError;
use crate::images::{Compression, ImageError, Limits};

/// Puts the fetched file `from` into the sandbox as the artifact asks:
/// unpacked into its directory, or copied to its file (0755 when
/// executable, else 0644), owned by `owner`.
pub(super) fn install(
    a: &Artifact,
    from: &Path,
    sandbox: &Path,
    owner: Option<(u32, u32)>,
    limit: u64,
) -> Result<(), FetchError> {
    let write_err = |path: &Path| {
        let (uri, path) = (a.shown.clone(), path.to_path_buf());
        move |source| FetchError::Write {
            uri: uri.clone(),
            path: path.clone(),
            source,
        }
    };
    if !sandbox.is_dir() {
        std::fs::create_dir_all(sandbox).map_err(write_err(sandbox))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(sandbox, Some(uid), Some(gid)).map_err(|e| agent_err(sandbox, "chown", e))?;
        }
    }
    let mut src = File::open(from).map_err(|e| agent_err(from, "open", e))?;
    let Some(kind) = a.archive else {
        return write_file(a, &mut src, sandbox, owner);
    };
    let dir = crate::containerizer::make_dirs(sandbox, &a.output, 0o755, owner)
        .map_err(write_err(&sandbox.join(&a.output)))?;
    let compression = match kind {
        Archive::Tar => Compression::None,
        Archive::TarGz => Compression::Gzip,
        Archive::TarZst => Compression::Zstd,
    };
    let limits = Limits {
        max_bytes: limit,
        ..Limits::default()
    };
    crate::images::unpack_artifact(&mut src, compression, &dir, owner, &limits).map_err(|source| {
        if agents_fault(&source) {
            FetchError::Agent(format!("unpacking {}: {source}", a.shown))
        } else {
            FetchError::Extract {
                uri: a.shown.clone(),
                source,
            }
        }
    })?;
    Ok(())
}

/// The agent's own failure, not the task's: a chown (it runs as root) or
/// a full disk.
fn agents_fault(e: &ImageError) -> bool {
    match e {
        ImageError::Io { op, source, .. } => {
            op.starts_with("chown") || matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        }
        _ => false,
    }
}

/// An agent-side failure on `path`.
fn agent_err(path: &Path, op: &str, e: impl std::fmt::Display) -> FetchError {
    FetchError::Agent(format!("{op} {}: {e}", path.display()))
}

/// Writes `src` to the artifact's file in the sandbox: a temporary name
/// beside it, renamed over whatever is there (an earlier run's copy, or
/// a symlink, which is replaced and not followed). The directories on the
/// way are opened beneath the sandbox, through no symlink.
fn write_file(a: &Artifact, src: &mut File, sandbox: &Path, owner: Option<(u32, u32)>) -> Result<(), FetchError> {
    let target = sandbox.join(&a.output);
    let failed = |source: std::io::Error| FetchError::Write {
        uri: a.shown.clone(),
        path: target.clone(),
        source,
    };
    let parent = a.output.parent().unwrap_or(Path::new(""));
    let name = a
        .output
        .file_name()
        .ok_or_else(|| failed(std::io::Error::other("no file name")))?;
    crate::containerizer::make_dirs(sandbox, parent, 0o755, owner).map_err(failed)?;
    let root = openat(
        AT_FDCWD,
        sandbox,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| failed(e.into()))?;
    let dir = match parent.as_os_str().is_empty() {
        true => root,
        false => crate::images::open_beneath(&root, parent.as_os_str().as_bytes()).map_err(|e| match e {
            Errno::ELOOP | Errno::EXDEV => failed(std::io::Error::other("a parent directory is a symlink")),
            e => failed(e.into()),
        })?,
    };
    let tmp = format!(".mezzo-fetch-{}", uuid::Uuid::new_v4().simple());
    let fd = openat(
        &dir,
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| failed(e.into()))?;
    let placed = (|| {
        if let Some((uid, gid)) = owner {
            fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(|e| agent_err(&target, "chown", e))?;
        }
        let mut out = File::from(fd.try_clone().map_err(&failed)?);
        copy(src, &mut out, &target, &failed)?;
        // Whatever the umask: the mode asked for.
        let mode = if a.executable { 0o755 } else { 0o644 };
        fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(|e| failed(e.into()))?;
        renameat(&dir, tmp.as_str(), &dir, name).map_err(|e| match e {
            Errno::EISDIR | Errno::ENOTEMPTY | Errno::EEXIST => {
                failed(std::io::Error::other("a directory is in the way"))
            }
            e => failed(e.into()),
        })
    })();
    if placed.is_err() {
        let _ = unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    placed
}

/// Copies `src` into `out`; a read of the agent's own file or a full
/// disk is the agent's failure.
fn copy(
    src: &mut File,
    out: &mut File,
    target: &Path,
    failed: &dyn Fn(std::io::Error) -> FetchError,
) -> Result<(), FetchError> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = src
            .read(&mut buf)
            .map_err(|e| agent_err(target, "read the fetched copy for", e))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => agent_err(target, "write", e),
            _ => failed(e),
        })?;
    }
    out.flush().map_err(failed)
}
