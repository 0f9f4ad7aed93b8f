//! Log rotation of a task's `stdout` and `stderr`, done by the agent (as
//! root) in a sandbox the task owns: the task may have replaced either
//! file, or its `.1` copy, with a symlink to any file of the host, or with
//! a FIFO. Nothing here follows a link or touches anything but a regular
//! file, so rotation can only ever copy and truncate the task's own log.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::libc::{O_NOFOLLOW, O_NONBLOCK};

/// If `file` is a regular file larger than `max` bytes, copies it to
/// `<file>.1` (replacing the old copy) and truncates it. Returns whether
/// it rotated.
pub(super) fn rotate(file: &Path, max: u64) -> io::Result<bool> {
    // O_NOFOLLOW: a link is refused (ELOOP); O_NONBLOCK: a FIFO or device
    // put in its place cannot hold the open, and is refused just below.
    let mut log = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(O_NOFOLLOW | O_NONBLOCK)
        .open(file)?;
    let meta = log.metadata()?;
    if !meta.is_file() || meta.len() <= max {
        return Ok(false);
    }
    let old = crate::paths::with_suffix(file, ".1");
    match std::fs::remove_file(&old) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // O_EXCL: whatever appeared at `.1` since (a link included) wins, and
    // this round is skipped.
    let mut copy: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(O_NOFOLLOW)
        .open(&old)?;
    std::os::unix::fs::fchown(&copy, Some(meta.uid()), Some(meta.gid()))?;
    io::copy(&mut log, &mut copy)?;
    log.set_len(0)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const MAX: u64 = 1024;

    /// A host file (outside the sandbox) with its bytes, and a sandbox.
    struct Setup {
        _tmp: tempfile::TempDir,
        host: std::path::PathBuf,
        bytes: Vec<u8>,
        sandbox: std::path::PathBuf,
    }

    fn setup() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host-file");
        let bytes = vec![b'h'; 4096];
        std::fs::write(&host, &bytes).unwrap();
        let sandbox = tmp.path().join("sandbox");
        std::fs::create_dir(&sandbox).unwrap();
        Setup {
            _tmp: tmp,
            host,
            bytes,
            sandbox,
        }
    }

    #[test]
    fn a_large_log_is_copied_and_truncated() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("stdout");
        std::fs::write(&log, vec![b'x'; 2048]).unwrap();
        assert!(rotate(&log, MAX).unwrap());
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        assert_eq!(std::fs::read(tmp.path().join("stdout.1")).unwrap(), vec![b'x'; 2048]);
        // A small one is left alone.
        std::fs::write(&log, b"small").unwrap();
        assert!(!rotate(&log, MAX).unwrap());
    }

    #[test]
    fn a_log_replaced_by_a_link_to_a_host_file_is_not_followed() {
        let Setup {
            _tmp,
            host,
            bytes,
            sandbox,
        } = setup();
        let log = sandbox.join("stdout");
        std::os::unix::fs::symlink(&host, &log).unwrap();
        let err = rotate(&log, MAX).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::ELOOP), "{err}");
        assert_eq!(std::fs::read(&host).unwrap(), bytes, "the host file is untouched");
        assert!(!sandbox.join("stdout.1").exists());
    }

    #[test]
    fn an_old_copy_replaced_by_a_link_is_not_written_through() {
        let Setup {
            _tmp,
            host,
            bytes,
            sandbox,
        } = setup();
        let log = sandbox.join("stdout");
        std::fs::write(&log, vec![b'x'; 2048]).unwrap();
        std::os::unix::fs::symlink(&host, sandbox.join("stdout.1")).unwrap();
        assert!(rotate(&log, MAX).unwrap());
        assert_eq!(std::fs::read(&host).unwrap(), bytes, "the host file is untouched");
        let copy = sandbox.join("stdout.1");
        assert!(
            copy.symlink_metadata().unwrap().is_file(),
            "the link was replaced by a file"
        );
        assert_eq!(std::fs::read(&copy).unwrap(), vec![b'x'; 2048]);
    }

    #[test]
    fn a_fifo_in_place_of_the_log_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("stdout");
        nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        assert!(!rotate(&log, MAX).unwrap());
    }
}
