//! The launch claim: the one file that decides whether a task's process
//! ever started, so that "never started" can be proven after a crash.
//!
//! `<run_dir>/claim` is made once, by whoever comes first: the container
//! init (or the posix containerizer) just before it starts the task's
//! process, writing `started`; or a restarted agent's recovery, writing
//! `dropped`, for a container that has not claimed yet. The loser obeys:
//! an init that finds `dropped` never starts the task, and recovery that
//! finds `started` knows the task may have run. The claim is a symbolic
//! link whose target is the word: one `symlink` call makes it with its
//! content at once and fails if the name exists, so there is no
//! half-written claim and no temporary file (it is on every launch's path).
//! It is only ever read with `readlink`, never followed.

use std::io;
use std::path::Path;

/// Name of the claim file in a container's run dir.
pub const CLAIM_FILE: &str = "claim";

/// What the claim says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The task's process was (about to be) started.
    Started,
    /// Recovery dropped the task before it started: it never runs.
    Dropped,
}

impl Claim {
    fn word(self) -> &'static str {
        match self {
            Claim::Started => "started",
            Claim::Dropped => "dropped",
        }
    }

    fn parse(s: &str) -> Option<Claim> {
        match s.trim() {
            "started" => Some(Claim::Started),
            "dropped" => Some(Claim::Dropped),
            _ => None,
        }
    }
}

/// Takes the claim for `want` unless someone took it first; returns the
/// claim that holds (`want` if this call won or an equal claim was there).
pub fn take(run_dir: &Path, want: Claim) -> io::Result<Claim> {
    match std::os::unix::fs::symlink(want.word(), run_dir.join(CLAIM_FILE)) {
        Ok(()) => Ok(want),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read(run_dir).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unreadable claim in {}", run_dir.display()),
            )
        }),
        Err(e) => Err(e),
    }
}

/// The claim in `run_dir`, if one was taken.
pub fn read(run_dir: &Path) -> Option<Claim> {
    Claim::parse(std::fs::read_link(run_dir.join(CLAIM_FILE)).ok()?.to_str()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claim_is_taken_once() -> io::Result<()> {
        for _ in 0..20 {
            let dir = tempfile::tempdir()?;
            let path = dir.path().to_path_buf();
            let racers: Vec<_> = [Claim::Started, Claim::Dropped]
                .into_iter()
                .map(|want| {
                    let path = path.clone();
                    std::thread::spawn(move || take(&path, want).map(|held| (want, held)))
                })
                .collect();
            let results: Vec<(Claim, Claim)> = racers
                .into_iter()
                .map(|r| r.join().map_err(|_| io::Error::other("racer panicked"))?)
                .collect::<io::Result<_>>()?;
            let winners = results.iter().filter(|(want, held)| want == held).count();
            assert_eq!(winners, 1, "{results:?}");
            assert!(
                results.iter().all(|(_, held)| Some(*held) == read(&path)),
                "{results:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_second_take_sees_the_first() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        assert_eq!(read(dir.path()), None);
        assert_eq!(take(dir.path(), Claim::Dropped)?, Claim::Dropped);
        assert_eq!(take(dir.path(), Claim::Started)?, Claim::Dropped);
        assert_eq!(take(dir.path(), Claim::Dropped)?, Claim::Dropped);
        Ok(())
    }
}
