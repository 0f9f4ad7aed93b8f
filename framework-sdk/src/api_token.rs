//! A token for a framework's own HTTP API (the batch and service
//! frameworks' are examples). The masters' credentials cannot guard it:
//! only masters can check those. So a framework makes a random token each
//! time it starts, keeps it in its work dir readable by its own user alone
//! (`api-token`, 0600), and asks for it as a bearer token on every call; a
//! CLI on the same machine, run by that user, reads it from there. A task
//! on the same machine, which runs as another user, can reach a loopback
//! port but cannot read the file. Like a Docker socket's or Jupyter's
//! token, no configuration is needed on one machine; elsewhere, copy the
//! file.
//!
//! The file is trusted only where nobody else could have put it: the work
//! dir and every directory above it belong to us or root and nobody else
//! may write to them (but sticky ones such as `/tmp`), and the file is a
//! regular file of ours, private, with one link (as OpenSSH's
//! `StrictModes`). A new token at every start means a token sent to
//! whoever squatted the port while the framework was down is worthless.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// The token's file name in a framework's work dir.
pub const FILE_NAME: &str = "api-token";

/// A token's length: 256 bits in hex.
const LEN: usize = 64;

/// Where the token of a framework with work dir `dir` is kept.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Makes `dir` (0700 where it is made) and a new token in it, replacing
/// the previous one; refuses a work dir others could tamper with.
pub fn create(dir: &Path) -> io::Result<String> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    check_dirs(dir)?;
    let mut bytes = [0u8; LEN / 2];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| io::Error::other("no randomness from the system"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let suffix: String = bytes[..4].iter().map(|b| format!("{:02x}", b ^ 0x5a)).collect();
    let tmp = dir.join(format!(".{FILE_NAME}.{suffix}"));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(token.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path_in(dir))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    let kept = read(&path_in(dir))?;
    if kept != token {
        return Err(io::Error::other(format!(
            "{} changed under us: is another `serve` using this work dir?",
            path_in(dir).display()
        )));
    }
    Ok(token)
}

/// The token in the file at `path`: a private regular file (no group or
/// other bits, one link, not a symbolic link) holding 64 hex digits.
pub fn read(path: &Path) -> io::Result<String> {
    let refuse = |why: &str| io::Error::new(io::ErrorKind::PermissionDenied, format!("{}: {why}", path.display()));
    let mut f = File::options().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() || meta.nlink() != 1 {
        return Err(refuse("not a plain file with one link; delete it"));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refuse("readable or writable by others; delete it"));
    }
    let mut text = String::new();
    Read::by_ref(&mut f).take(LEN as u64 + 2).read_to_string(&mut text)?;
    let token = text.trim();
    if token.len() != LEN || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(refuse("not an API token"));
    }
    Ok(token.to_owned())
}

/// Refuses `dir` unless it and every directory above it belong to us or
/// root and nobody else may write to them, but sticky ones above it.
fn check_dirs(dir: &Path) -> io::Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    let dir = fs::canonicalize(dir)?;
    for (i, d) in dir.ancestors().enumerate() {
        let meta = fs::symlink_metadata(d)?;
        let refuse = |why: &str| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} {why}: a framework's API token cannot be kept below it", d.display()),
            )
        };
        if meta.uid() != me && meta.uid() != 0 {
            return Err(refuse("belongs to another user"));
        }
        let sticky = meta.mode() & libc::S_ISVTX != 0;
        if meta.mode() & 0o022 != 0 && (i == 0 || !sticky) {
            return Err(refuse("may be written by others"));
        }
    }
    Ok(())
}

/// Whether an `Authorization` header value carries `token` as a bearer
/// token (compared in constant time).
pub fn authorized(authorization: Option<&[u8]>, token: &str) -> bool {
    let Some(given) = authorization.and_then(|h| h.strip_prefix(b"Bearer ")) else {
        return false;
    };
    given.ct_eq(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mezzo-sdk-token-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_token_is_new_at_each_start_private_and_checked() {
        let dir = scratch("ok");
        let token = create(&dir).expect("made");
        assert_eq!(token.len(), 64);
        assert_eq!(read(&path_in(&dir)).expect("read"), token);
        let again = create(&dir).expect("made again");
        assert_ne!(again, token, "a new token at every start");
        let mode = fs::metadata(path_in(&dir)).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(fs::metadata(&dir).expect("dir").permissions().mode() & 0o777, 0o700);
        assert!(authorized(Some(format!("Bearer {again}").as_bytes()), &again));
        for bad in [
            None,
            Some(again.as_bytes()),
            Some(b"Bearer ".as_slice()),
            Some(b"Bearer x".as_slice()),
        ] {
            assert!(!authorized(bad, &again), "{bad:?}");
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn planted_or_exposed_tokens_and_open_work_dirs_are_refused() {
        let dir = scratch("bad");
        fs::create_dir_all(&dir).expect("dir");
        let path = path_in(&dir);
        // Readable by others.
        fs::write(&path, "a".repeat(64)).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(read(&path).expect_err("0644").kind(), io::ErrorKind::PermissionDenied);
        // Not a token.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        fs::write(&path, "KNOWN").expect("write");
        assert!(read(&path).is_err());
        // A link to somewhere else.
        fs::remove_file(&path).expect("rm");
        std::os::unix::fs::symlink("/etc/hostname", &path).expect("symlink");
        assert!(read(&path).is_err());
        fs::remove_file(&path).expect("rm");
        // A work dir others may write to.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = create(&dir).expect_err("world-writable work dir");
        assert!(err.to_string().contains("may be written by others"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }
}
