//! The volume store on a temp dir (docs/frameworks.md, "Volumes"): what
//! the master lists is made, what it no longer lists goes unless a live
//! task mounts it, and nothing else in the store is touched.

use std::collections::HashSet;
use std::path::Path;

use mezzo_proto::ids::VolumeId;
use mezzo_proto::v1;

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn ids(names: &[&str]) -> Vec<VolumeId> {
    names.iter().map(|n| VolumeId::parse(n).expect("volume id")).collect()
}

fn on_disk(work: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(paths::volumes_root(work))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn listed_volumes_are_made_and_unlisted_ones_removed_with_their_data() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let store = Volumes::open(dir.path(), vec![])?;
    let synced = store.sync(&ids(&["db-0", "logs"]), &HashSet::new())?;
    assert_eq!(synced.created, ids(&["db-0", "logs"]));
    let db = paths::volume_dir(dir.path(), &ids(&["db-0"])[0]);
    assert_eq!(
        std::fs::metadata(&db)?.permissions().mode() & 0o777,
        0o700,
        "root's until used"
    );
    std::fs::write(db.join("data"), b"kept")?;

    // Listed again: nothing changes, the data stays.
    assert_eq!(store.sync(&ids(&["db-0", "logs"]), &HashSet::new())?, Synced::default());
    assert_eq!(std::fs::read(db.join("data"))?, b"kept");

    let synced = store.sync(&ids(&["logs"]), &HashSet::new())?;
    assert_eq!(synced.removed, ids(&["db-0"]));
    assert!(!db.exists());
    store.purge();
    let removed = std::fs::read_dir(paths::volumes_removed(dir.path()))?.count();
    assert_eq!(removed, 0, "the removed volume's data is deleted");
    assert_eq!(on_disk(dir.path()), ["+removed", "logs"]);
    Ok(())
}

/// A removed volume leaves the store at once, mounted or not (created
/// again, it starts empty), and its data stays for its retention.
#[test]
fn a_removed_volume_leaves_at_once_and_its_data_after_its_retention() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Volumes::open(dir.path(), vec![])?.with_retention(std::time::Duration::from_secs(3600));
    store.sync(&ids(&["db-0"]), &HashSet::new())?;
    let db = paths::volume_dir(dir.path(), &ids(&["db-0"])[0]);
    std::fs::write(db.join("data"), b"old")?;
    let in_use: HashSet<VolumeId> = ids(&["db-0"]).into_iter().collect();
    let synced = store.sync(&[], &in_use)?;
    assert_eq!(
        (synced.removed_in_use, synced.removed),
        (ids(&["db-0"]), ids(&["db-0"]))
    );
    assert_eq!(on_disk(dir.path()), ["+removed"]);
    store.sync(&ids(&["db-0"]), &HashSet::new())?;
    assert!(!db.join("data").exists(), "a volume created again starts empty");
    store.purge();
    let graves: Vec<_> = std::fs::read_dir(paths::volumes_removed(dir.path()))?
        .flatten()
        .collect();
    assert_eq!(graves.len(), 1, "kept for its retention");
    assert_eq!(std::fs::read(graves[0].path().join("data"))?, b"old");
    drop(store);
    let store = Volumes::open(dir.path(), vec![])?;
    store.purge();
    assert_eq!(std::fs::read_dir(paths::volumes_removed(dir.path()))?.count(), 0);
    Ok(())
}

#[test]
fn names_that_are_no_volume_id_are_left_alone() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Volumes::open(dir.path(), vec![])?;
    let root = paths::volumes_root(dir.path());
    std::fs::create_dir(root.join("lost+found"))?;
    std::fs::write(root.join("a b"), b"junk")?;
    let synced = store.sync(&[], &HashSet::new())?;
    assert_eq!(synced, Synced::default());
    assert_eq!(on_disk(dir.path()), ["a b", "lost+found"]);
    Ok(())
}

/// The store is the work dir: a restarted agent finds its volumes' data,
/// and deletes what a crash left of removed ones.
#[test]
fn volumes_survive_reopening_and_a_crash_mid_removal_is_finished() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Volumes::open(dir.path(), vec![])?;
    store.sync(&ids(&["db-0", "old"]), &HashSet::new())?;
    let db = paths::volume_dir(dir.path(), &ids(&["db-0"])[0]);
    std::fs::write(db.join("data"), b"kept")?;
    store.sync(&ids(&["db-0"]), &HashSet::new())?; // "old" moved out, not purged: a crash
    drop(store);

    let store = Volumes::open(dir.path(), vec![])?;
    assert_eq!(std::fs::read(db.join("data"))?, b"kept");
    assert_eq!(std::fs::read_dir(paths::volumes_removed(dir.path()))?.count(), 1);
    store.purge();
    assert_eq!(std::fs::read_dir(paths::volumes_removed(dir.path()))?.count(), 0);
    assert_eq!(store.sync(&ids(&["db-0"]), &HashSet::new())?, Synced::default());
    Ok(())
}

/// A task's mount of a volume or (with `volume` empty) a host volume.
pub(crate) fn mount(volume: &str, host: &str, path: &str, read_only: bool) -> v1::Mount {
    v1::Mount {
        container_path: path.into(),
        read_only,
        volume_id: volume.into(),
        host_volume: host.into(),
    }
}

#[test]
fn mounts_resolve_to_the_store_and_the_shared_host_volumes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let shared = dir.path().join("certs");
    std::fs::create_dir(&shared)?;
    let host = vec![
        HostVolume::parse(&format!("certs={}:ro", shared.display()))?,
        HostVolume::parse(&format!("scratch={}", shared.display()))?,
    ];
    let store = Volumes::open(&dir.path().join("work"), host)?;
    store.sync(&ids(&["db-0"]), &HashSet::new())?;
    let asked = [
        mount("db-0", "", "data", false),
        mount("", "certs", "certs", false),
        mount("", "scratch", "scratch", true),
    ];
    let got = store.resolve(&volume::check(&asked, false)?)?;
    let shared = shared.canonicalize()?;
    let want = [
        (
            paths::volume_dir(&dir.path().join("work"), &ids(&["db-0"])[0]),
            "data",
            true,
            true,
        ),
        (shared.clone(), "certs", false, false),
        (shared, "scratch", false, false),
    ];
    assert_eq!(got.len(), want.len());
    for (m, (source, target, writable, owned)) in got.iter().zip(want) {
        assert_eq!((&m.source, m.target.as_path()), (&source, Path::new(target)));
        assert_eq!((m.writable, m.owned_by_task), (writable, owned), "{m:?}");
    }

    let missing = store.resolve(&volume::check(&[mount("db-1", "", "data", false)], false)?);
    let err = missing.expect_err("no such volume").to_string();
    assert_eq!(err, "volume db-1 is not on this agent");
    let unknown = store.resolve(&volume::check(&[mount("", "nope", "x", false)], false)?);
    let err = unknown.expect_err("no such host volume").to_string();
    assert!(err.contains("\"nope\"") && err.contains("--host-volumes"), "{err}");
    Ok(())
}

#[test]
fn host_volumes_are_parsed_and_checked() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path().display();
    let parsed = HostVolume::parse(&format!("certs={d}:ro"))?;
    assert!(parsed.read_only && parsed.name == "certs" && parsed.path == dir.path());
    assert!(!HostVolume::parse(&format!("data={d}"))?.read_only);
    for bad in ["data", "=/x", "a/b=/x", "data=relative", "data=:ro"] {
        assert!(HostVolume::parse(bad).is_err(), "{bad} accepted");
    }
    let work = dir.path().join("work");
    let missing = HostVolume::parse(&format!("gone={d}/nope"))?;
    let err = Volumes::open(&work, vec![missing])
        .expect_err("missing dir")
        .to_string();
    assert!(
        err.contains("gone=") && err.contains("not an existing directory"),
        "{err}"
    );
    let file = dir.path().join("file");
    std::fs::write(&file, b"")?;
    let not_dir = HostVolume::parse(&format!("f={}", file.display()))?;
    assert!(Volumes::open(&work, vec![not_dir]).is_err());
    let twice = vec![
        HostVolume::parse(&format!("a={d}"))?,
        HostVolume::parse(&format!("a={d}:ro"))?,
    ];
    assert!(matches!(Volumes::open(&work, twice), Err(VolumeError::Twice(_))));
    Ok(())
}
