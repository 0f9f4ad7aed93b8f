//! Contract tests for a task's mounts (docs/frameworks.md, "Volumes") in a
//! real container, on the harness of `init_tests.rs`: the volume store
//! makes the volumes under the hidden work dir, the Linux containerizer's
//! `own_volumes` hands them to the task's user, and the init binds them.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use mezzo_proto::ids::VolumeId;
use mezzo_proto::v1;

use super::*;
use crate::volumes::tests::mount;
use crate::volumes::{HostVolume, Volumes};

/// Host volumes of these tests, each a fresh directory beside the temp
/// work dir: `shared` (writable by anyone) and `certs` (shared `:ro`).
const HOST: [(&str, &str); 2] = [("shared", ""), ("certs", ":ro")];

/// A container with the task's own view running `script` as `uid`, whose
/// hidden dir is the work dir of a volume store holding `volumes`, with
/// `mounts` resolved as the supervisor does and handed to the task's
/// host ids (`host_uid`) as the containerizer does. Returns the container,
/// the work dir and the host volumes' directory.
fn with_mounts(
    uid: u32,
    host_uid: u32,
    script: &str,
    volumes: &[&str],
    mounts: &[v1::Mount],
) -> (Container, PathBuf, PathBuf) {
    let (mut c, work) = with_view(&["/bin/sh", "-c", script]);
    let base = c.spec.run_dir.parent().expect("temp dir").to_owned();
    let host: Vec<HostVolume> = HOST
        .iter()
        .map(|(name, ro)| {
            let dir = base.join("host").join(name);
            std::fs::create_dir_all(&dir).expect("host volume");
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).expect("chmod");
            HostVolume::parse(&format!("{name}={}{ro}", dir.display())).expect("host volume")
        })
        .collect();
    let store = Volumes::open(&work, host).expect("store");
    let ids: Vec<VolumeId> = volumes.iter().map(|v| VolumeId::parse(v).expect("id")).collect();
    store.sync(&ids, &HashSet::new()).expect("volumes made");
    // As for a task with an image: relative paths pass either way.
    let checked = mezzo_proto::volume::check(mounts, true).expect("valid mounts");
    let resolved = store.resolve(&checked).expect("resolved");
    crate::containerizer::linux::own_volumes(&resolved, (host_uid, host_uid)).expect("owned");
    std::os::unix::fs::chown(&c.spec.sandbox, Some(host_uid), Some(host_uid)).expect("chown sandbox");
    if let Some(view) = c.spec.view.as_mut() {
        view.mounts = resolved;
    }
    c.spec.uid = uid;
    c.spec.gid = uid;
    c.spec.groups = vec![uid];
    (c, work, base.join("host"))
}

/// Shows whether each of `paths` (relative to the sandbox) takes a file.
const TRY_WRITES: &str = r#"try() { if out=$(sh -c "$2" 2>&1); then echo "$1: ok"; else echo "$1: ${out##*: }"; fi; }
for p in $PATHS; do try "$p" "echo x > $p/from-task"; done
"#;

fn writes_script(paths: &[&str]) -> String {
    format!("PATHS='{}'\n{TRY_WRITES}", paths.join(" "))
}

/// A task writes its volume at a relative path (the file is in the
/// store, the task user's), beneath another volume mounted at its
/// parent; a volume it mounts read-only and a host volume shared `:ro`
/// (asked writable) refuse writes; a writable host volume takes them.
#[test]
fn a_task_writes_its_volumes_and_read_only_ones_refuse() {
    if !is_root() {
        return;
    }
    let mounts = [
        // Listed before its parent: mounted after it all the same.
        mount("db-0", "", "data/db", false),
        mount("logs", "", "data", false),
        mount("conf", "", "conf", true),
        mount("", "certs", "certs", false),
        mount("", "shared", "shared", false),
    ];
    let script = writes_script(&["data/db", "data", "conf", "certs", "shared"]);
    let (mut c, work, host) = with_mounts(65534, 65534, &script, &["db-0", "logs", "conf"], &mounts);
    assert_eq!(c.run(), ExitRecord::Code(0), "stderr: {}", c.stderr());
    let out = c.stdout();
    for expected in [
        "data/db: ok",
        "data: ok",
        "conf: Read-only file system",
        "certs: Read-only file system",
        "shared: ok",
    ] {
        assert!(out.lines().any(|l| l == expected), "no {expected:?} in:\n{out}");
    }
    let volumes = crate::paths::volumes_root(&work);
    for v in ["db-0", "logs"] {
        let file = volumes.join(v).join("from-task");
        let meta = std::fs::metadata(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(meta.uid(), 65534, "{} is the task user's", file.display());
        assert_eq!(std::fs::metadata(volumes.join(v)).expect("volume").uid(), 65534);
    }
    assert!(!volumes.join("conf/from-task").exists());
    assert!(!host.join("certs/from-task").exists());
    assert!(host.join("shared/from-task").exists());
}

/// The mount point is made without following a symlink the task's
/// artifacts may have planted: the init never makes a directory through
/// it (here, in a writable host dir), and the launch fails.
#[test]
fn a_planted_link_on_the_way_to_a_mount_point_is_not_followed() {
    if !is_root() {
        return;
    }
    let mounts = [mount("db-0", "", "link/x", false)];
    let (mut c, _, host) = with_mounts(65534, 65534, "echo ran", &["db-0"], &mounts);
    if let Some(view) = c.spec.view.as_mut() {
        view.host_paths = vec![crate::containerizer::rootfs::HostPath {
            path: host.join("shared"),
            writable: true,
        }];
    }
    std::os::unix::fs::symlink(host.join("shared"), c.spec.sandbox.join("link")).expect("plant the link");
    let ExitRecord::Error(message) = c.run() else {
        panic!("expected an error record, stdout: {}", c.stdout())
    };
    assert!(message.contains("making the mount point"), "{message}");
    assert!(!host.join("shared/x").exists(), "a directory was made through the link");
    assert_eq!(c.stdout(), "", "the task never ran");
}

/// A task with an image mounts a volume at an absolute path of its root
/// (made in its own upper dir, not in the shared layers) and one beneath
/// its sandbox, which is at `/mnt/mezzo/sandbox` there.
#[test]
fn a_task_with_an_image_mounts_anywhere_in_its_root() {
    if !is_root() {
        return;
    }
    let mounts = [
        mount("db-0", "", "/var/lib/db", false),
        mount("logs", "", "logs", false),
    ];
    let script = writes_script(&["/var/lib/db", "/mnt/mezzo/sandbox/logs"]);
    let (mut c, work, _) = with_mounts(65534, 65534, &script, &["db-0", "logs"], &mounts);
    let (layers, upper) = with_image(&mut c);
    assert_eq!(c.run(), ExitRecord::Code(0), "stderr: {}", c.stderr());
    let out = c.stdout();
    for expected in ["/var/lib/db: ok", "/mnt/mezzo/sandbox/logs: ok"] {
        assert!(out.lines().any(|l| l == expected), "no {expected:?} in:\n{out}");
    }
    let volumes = crate::paths::volumes_root(&work);
    assert!(volumes.join("db-0/from-task").exists() && volumes.join("logs/from-task").exists());
    assert!(upper.join("var/lib/db").is_dir(), "the mount point is the container's");
    assert!(layers.iter().all(|l| !l.join("var").exists()));
}

/// The same with `--user-namespaces`: the init, root of the task's user
/// namespace only, reaches the volume (its owner is mapped); what the
/// task writes is its host user's; read-only holds.
#[test]
fn volumes_in_a_user_namespace() {
    if !is_root() || crate::containerizer::userns::unsupported().is_some() {
        return;
    }
    const BASE: u32 = 300_000;
    let mounts = [
        mount("db-0", "", "data", false),
        mount("conf", "", "conf", true),
        mount("", "certs", "certs", false),
    ];
    let script = writes_script(&["data", "conf", "certs"]);
    let (mut c, work, _) = with_mounts(65534, BASE + 65534, &script, &["db-0", "conf"], &mounts);
    c.spec.userns = Some(crate::containerizer::userns::IdRange {
        base: BASE,
        count: 65536,
    });
    assert_eq!(c.run(), ExitRecord::Code(0), "stderr: {}", c.stderr());
    let out = c.stdout();
    for expected in [
        "data: ok",
        "conf: Read-only file system",
        "certs: Read-only file system",
    ] {
        assert!(out.lines().any(|l| l == expected), "no {expected:?} in:\n{out}");
    }
    let file = crate::paths::volumes_root(&work).join("db-0/from-task");
    assert_eq!(std::fs::metadata(&file).expect("written").uid(), BASE + 65534);
}
