//! Mounts of persistent volumes and host volumes (docs/frameworks.md,
//! "Volumes"): one check of a task's `ContainerInfo.mounts`, shared by the
//! master (which refuses a bad launch) and the agent (which trusts nothing
//! it did not check).

use std::collections::HashSet;
use std::path::{Component, Path};

use crate::ids::{IdError, VolumeId};
use crate::v1;

/// Most mounts one task may ask for.
pub const MAX_MOUNTS: usize = 16;
/// Longest container path, in bytes.
pub const MAX_PATH_LEN: usize = 1024;

/// Where a mount's directory comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A persistent volume of the task's role on its agent.
    Volume(VolumeId),
    /// A directory the agent's operator shares under this name.
    Host(String),
}

/// One checked mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: Source,
    /// Relative (beneath the sandbox) or absolute (in an image's root);
    /// without `.` or `..` components.
    pub container_path: std::path::PathBuf,
    pub read_only: bool,
}

/// Why a task's mounts were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error("at most {MAX_MOUNTS} mounts per task")]
    TooMany,
    #[error("mount {0}: give exactly one of volume_id and host_volume")]
    Source(usize),
    #[error("mount {index}: {source}")]
    Id { index: usize, source: IdError },
    #[error("mount {0}: container_path is empty")]
    NoPath(usize),
    #[error("mount {0}: container_path is longer than {MAX_PATH_LEN} bytes or holds a NUL")]
    BadPath(usize),
    #[error("mount {0}: container_path may not hold `.` or `..` components")]
    DotPath(usize),
    #[error("mount {0}: an absolute container_path needs a task with an image; give a path relative to the sandbox")]
    AbsoluteWithoutImage(usize),
    #[error("mount {0}: container_path may not be `/` or beneath /proc, /sys or /dev")]
    Reserved(usize),
    #[error("mount {0}: stdout and stderr in the sandbox are the task's output")]
    Output(usize),
    #[error("mount {index}: {path} is mounted twice")]
    SamePath { index: usize, path: String },
    #[error("mount {index}: volume {id} is mounted twice")]
    SameVolume { index: usize, id: String },
}

/// The persistent volumes a task mounts (unchecked: what it names).
pub fn mounted_volumes(task: &v1::TaskInfo) -> impl Iterator<Item = &str> {
    task.container
        .iter()
        .flat_map(|c| &c.mounts)
        .map(|m| m.volume_id.as_str())
        .filter(|v| !v.is_empty())
}

/// Checks a task's mounts; `has_image`: the task has a root of its own.
pub fn check(mounts: &[v1::Mount], has_image: bool) -> Result<Vec<Mount>, MountError> {
    if mounts.len() > MAX_MOUNTS {
        return Err(MountError::TooMany);
    }
    let mut paths = HashSet::new();
    let mut volumes = HashSet::new();
    let mut out = Vec::with_capacity(mounts.len());
    for (index, m) in mounts.iter().enumerate() {
        let source = match (m.volume_id.is_empty(), m.host_volume.is_empty()) {
            (false, true) => {
                let id = VolumeId::parse(&m.volume_id).map_err(|source| MountError::Id { index, source })?;
                if !volumes.insert(id.clone()) {
                    return Err(MountError::SameVolume {
                        index,
                        id: id.to_string(),
                    });
                }
                Source::Volume(id)
            }
            (true, false) => {
                // A host volume's name follows the same rules as an id.
                VolumeId::parse(&m.host_volume).map_err(|source| MountError::Id { index, source })?;
                Source::Host(m.host_volume.clone())
            }
            _ => return Err(MountError::Source(index)),
        };
        let path = container_path(index, &m.container_path, has_image)?;
        if !paths.insert(path.clone()) {
            return Err(MountError::SamePath {
                index,
                path: path.display().to_string(),
            });
        }
        out.push(Mount {
            source,
            container_path: path,
            read_only: m.read_only,
        });
    }
    Ok(out)
}

fn container_path(index: usize, p: &str, has_image: bool) -> Result<std::path::PathBuf, MountError> {
    if p.is_empty() {
        return Err(MountError::NoPath(index));
    }
    if p.len() > MAX_PATH_LEN || p.contains('\0') {
        return Err(MountError::BadPath(index));
    }
    let path = Path::new(p);
    let mut clean = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir => clean.push("/"),
            Component::Normal(n) => clean.push(n),
            Component::CurDir | Component::ParentDir | Component::Prefix(_) => return Err(MountError::DotPath(index)),
        }
    }
    // `a/./b` loses its `.` in `components()`: refuse it all the same.
    if p.split('/').any(|c| c == "." || c == "..") {
        return Err(MountError::DotPath(index));
    }
    if clean.is_absolute() {
        if !has_image {
            return Err(MountError::AbsoluteWithoutImage(index));
        }
        let reserved = ["/proc", "/sys", "/dev"].iter().any(|r| clean.starts_with(r));
        if clean == Path::new("/") || reserved {
            return Err(MountError::Reserved(index));
        }
    } else if clean.starts_with("stdout") || clean.starts_with("stderr") {
        return Err(MountError::Output(index));
    }
    Ok(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(id: &str, path: &str) -> v1::Mount {
        v1::Mount {
            container_path: path.into(),
            volume_id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn good_mounts_pass_and_are_cleaned() {
        let host = v1::Mount {
            container_path: "/etc/certs/".into(),
            read_only: true,
            host_volume: "certs".into(),
            ..Default::default()
        };
        let got = check(&[vol("db-0", "data//db"), host], true).expect("valid");
        assert_eq!(got[0].source, Source::Volume(VolumeId::parse("db-0").expect("id")));
        assert_eq!(got[0].container_path, Path::new("data/db"));
        assert_eq!(got[1].source, Source::Host("certs".into()));
        assert!(got[1].read_only && got[1].container_path == Path::new("/etc/certs"));
    }

    #[test]
    fn bad_mounts_are_refused_with_the_reason() {
        let cases: Vec<(Vec<v1::Mount>, bool, &str)> = vec![
            (vec![vol("a", "../x")], false, "`..`"),
            (vec![vol("a", "x/./y")], false, "`..`"),
            (vec![vol("a", "")], false, "empty"),
            (vec![vol("a", "/data")], false, "needs a task with an image"),
            (vec![vol("a", "/proc/x")], true, "/proc"),
            (vec![vol("a", "/")], true, "/proc"),
            (vec![vol("a", "stdout")], false, "output"),
            (vec![vol("a/b", "x")], false, "volume id"),
            (vec![vol("", "x")], false, "exactly one"),
            (vec![vol("a", "x"), vol("a", "y")], false, "mounted twice"),
            (vec![vol("a", "x"), vol("b", "x/")], false, "mounted twice"),
            (vec![vol("a", "x"); MAX_MOUNTS + 1], false, "at most"),
        ];
        for (mounts, image, want) in cases {
            let err = check(&mounts, image).expect_err(want).to_string();
            assert!(err.contains(want), "{err} lacks {want}");
        }
        let both = v1::Mount {
            host_volume: "h".into(),
            ..vol("a", "x")
        };
        assert!(matches!(check(&[both], false), Err(MountError::Source(0))));
    }
}
