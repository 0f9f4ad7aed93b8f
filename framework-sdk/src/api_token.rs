//! A token for a framework's own HTTP API (the batch and service
//! frameworks' are examples). The masters' credentials cannot guard it:
//! only masters can check those. So a framework makes a random token once,
//! keeps it in its work dir readable by its own user alone (`api-token`,
//! 0600), and asks for it as a bearer token on every call; a CLI on the
//! same machine, run by that user, reads it from there. A task on the same
//! machine, which runs as another user, can reach a loopback port but
//! cannot read the file. Like a Docker socket's or Jupyter's token, no
//! configuration is needed on one machine; elsewhere, copy the file.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// The token's file name in a framework's work dir.
pub const FILE_NAME: &str = "api-token";

/// Where the token of a framework with work dir `dir` is kept.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// The token kept in `dir`, made (256 random bits, hex) if there is none.
/// Safe against another process making it at the same moment: both end
/// up with the one that was linked into place first.
pub fn load_or_create(dir: &Path) -> io::Result<String> {
    let path = path_in(dir);
    match read(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    fs::create_dir_all(dir)?;
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| io::Error::other("no randomness from the system"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{FILE_NAME}.{}", std::process::id()));
    let written = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(token.as_bytes())?;
        f.sync_all()?;
        match fs::hard_link(&tmp, &path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    })();
    let _ = fs::remove_file(&tmp);
    written?;
    read(&path)
}

/// The token in the file at `path`.
pub fn read(path: &Path) -> io::Result<String> {
    let token = fs::read_to_string(path)?.trim().to_owned();
    if token.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(token)
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

    #[test]
    fn a_token_is_made_once_kept_private_and_checked() {
        let dir = tempfile_dir();
        let token = load_or_create(&dir).expect("made");
        assert_eq!(token.len(), 64);
        assert_eq!(load_or_create(&dir).expect("kept"), token);
        let mode = fs::metadata(path_in(&dir)).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(authorized(Some(format!("Bearer {token}").as_bytes()), &token));
        for bad in [
            None,
            Some(token.as_bytes()),
            Some(b"Bearer ".as_slice()),
            Some(b"Bearer x".as_slice()),
        ] {
            assert!(!authorized(bad, &token), "{bad:?}");
        }
        let _ = fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mezzo-sdk-token-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }
}
