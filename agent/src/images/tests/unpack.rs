//! Unpacking single layers: what a normal layer becomes, overlay
//! whiteouts (checked by a real overlay mount), and each hostile entry
//! refused with nothing written outside the destination.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use tar::EntryType;

use super::fixtures::{E, MTIME, gzip, names, tar, zstd};
use crate::images::{Compression, Digest, ImageError, Limits, StagedLayer, unpack_layer};

fn unpack(bytes: &[u8], compression: Compression, dest: &Path) -> Result<StagedLayer, ImageError> {
    unpack_layer(&mut &bytes[..], compression, dest, &Limits::default())
}

fn normal_layer() -> Vec<E> {
    vec![
        E::dir("./").mode(0o755),
        E::dir("etc/").mode(0o755),
        E::file("etc/hosts", b"first"),
        E::file("etc/hosts", b"127.0.0.1 localhost\n"),
        E::file("bin/busybox", b"\x7fELF...").mode(0o755),
        E::file("bin/su", b"su").mode(0o4755),
        E::file("usr/bin/wall", b"wall").mode(0o2755).owner(0, 5),
        E::symlink("bin/sh", "busybox"),
        E::symlink("bin/abs", "/etc/hosts"),
        E::hardlink("bin/su2", "bin/su"),
        E::hardlink("bin/sh2", "/bin/sh"),
        E::file("home/u/notes", b"mine").mode(0o640).owner(1000, 1001),
        E::dir("home/u").mode(0o700).owner(1000, 1001),
        E::device("run/fifo", EntryType::Fifo, 0, 0).mode(0o620),
        E::file("x", b"file then dir"),
        E::dir("x"),
        E::file("y/z/deep", b"gone"),
        E::file("y", b"dir then file"),
        E::dir("etc").mode(0o750),
        E::file("/abs", b"absolute names land inside"),
    ]
}

#[test]
fn images_unpack_normal_layer() {
    let t = tempfile::tempdir().unwrap();
    let bytes = tar(normal_layer());
    for (i, compression) in [Compression::None, Compression::Gzip, Compression::Zstd]
        .into_iter()
        .enumerate()
    {
        let dest = t.path().join(format!("layer{i}"));
        let blob = match compression {
            Compression::None => bytes.clone(),
            Compression::Gzip => gzip(&bytes),
            Compression::Zstd => zstd(&bytes),
        };
        let staged = unpack(&blob, compression, &dest).unwrap();
        assert_eq!(
            staged.diff_id(),
            &Digest::of(&bytes),
            "the diff_id is the uncompressed stream's"
        );
        let content = [
            &b"first"[..],
            b"127.0.0.1 localhost\n",
            b"\x7fELF...",
            b"su",
            b"wall",
            b"mine",
            b"file then dir",
            b"gone",
            b"dir then file",
        ];
        let expected: usize = content.iter().map(|c| c.len()).sum::<usize>() + b"absolute names land inside".len();
        assert_eq!(staged.size(), expected as u64);
        assert!(!dest.exists(), "only commit puts it in place");
        staged.commit().unwrap();

        let meta = |p: &str| std::fs::symlink_metadata(dest.join(p)).unwrap();
        assert_eq!(std::fs::read(dest.join("etc/hosts")).unwrap(), b"127.0.0.1 localhost\n");
        assert_eq!(
            meta("etc").mode() & 0o7777,
            0o750,
            "a directory declared again gets the new mode"
        );
        assert_eq!(meta("bin/su").mode() & 0o7777, 0o4755, "setuid kept");
        assert_eq!(
            (meta("usr/bin/wall").mode() & 0o7777, meta("usr/bin/wall").gid()),
            (0o2755, 5),
            "setgid kept"
        );
        assert_eq!(meta("bin").mode() & 0o7777, 0o755, "a missing parent is made 0755");
        assert_eq!(std::fs::read_link(dest.join("bin/sh")).unwrap(), Path::new("busybox"));
        assert_eq!(
            std::fs::read_link(dest.join("bin/abs")).unwrap(),
            Path::new("/etc/hosts"),
            "stored as is"
        );
        assert_eq!(meta("bin/su2").ino(), meta("bin/su").ino());
        assert!(
            meta("bin/sh2").file_type().is_symlink(),
            "a hard link to a symlink links the symlink"
        );
        assert_eq!(meta("bin/sh2").ino(), meta("bin/sh").ino());
        let notes = meta("home/u/notes");
        assert_eq!((notes.uid(), notes.gid(), notes.mode() & 0o7777), (1000, 1001, 0o640));
        assert_eq!((meta("home/u").uid(), meta("home/u").mode() & 0o7777), (1000, 0o700));
        assert!(meta("run/fifo").file_type().is_fifo());
        assert_eq!(meta("run/fifo").mode() & 0o7777, 0o620);
        assert!(meta("x").is_dir(), "a later entry replaces an earlier one");
        assert_eq!(
            std::fs::read(dest.join("y")).unwrap(),
            b"dir then file",
            "a directory tree replaced"
        );
        assert_eq!(std::fs::read(dest.join("abs")).unwrap(), b"absolute names land inside");
        assert_eq!(meta("etc/hosts").mtime(), MTIME as i64);
        assert_eq!(meta("bin/sh").mtime(), MTIME as i64);
    }
    assert_eq!(names(t.path()), ["layer0", "layer1", "layer2"], "no temp dir left");
}

/// A lower layer and an upper one that whites out a file, a file in a
/// directory, and makes a directory opaque.
fn whiteout_layers() -> (Vec<u8>, Vec<u8>) {
    let lower = tar(vec![
        E::file("d/a", b"a"),
        E::file("d/b", b"b"),
        E::file("f", b"f"),
        E::file("o/old", b"old"),
        E::file("keep", b"keep"),
    ]);
    let upper = tar(vec![
        E::file(".wh.f", b""),
        E::file("d/.wh.a", b""),
        E::file("o/.wh..wh..opq", b""),
        E::file("o/new", b"new"),
        E::file("n/.wh..wh..opq", b""),
        E::file(".wh..wh..plnk", b""),
    ]);
    (lower, upper)
}

#[test]
fn images_unpack_whiteouts_in_overlay_format() {
    let t = tempfile::tempdir().unwrap();
    let (lower, upper) = whiteout_layers();
    let (l1, l2) = (t.path().join("l1"), t.path().join("l2"));
    unpack(&lower, Compression::None, &l1).unwrap().commit().unwrap();
    unpack(&upper, Compression::None, &l2).unwrap().commit().unwrap();

    for whiteout in ["f", "d/a"] {
        let meta = std::fs::symlink_metadata(l2.join(whiteout)).unwrap();
        assert!(meta.file_type().is_char_device(), "{whiteout}");
        assert_eq!(meta.rdev(), 0, "{whiteout} is 0/0");
    }
    // ext4 under /tmp here; trusted.* needs CAP_SYS_ADMIN (root).
    assert_eq!(
        xattr::get(l2.join("o"), "trusted.overlay.opaque").unwrap().as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        xattr::get(l2.join("n"), "trusted.overlay.opaque").unwrap().as_deref(),
        Some(&b"y"[..]),
        "dir created"
    );
    assert_eq!(
        names(&l2),
        ["d", "f", "n", "o"],
        "aufs bookkeeping ignored, no .wh. names left"
    );

    // A real overlay, mounted in a private mount namespace of a child
    // process: the host's mount table never sees it, and it goes with it.
    let merged = t.path().join("merged");
    std::fs::create_dir(&merged).unwrap();
    let script = format!(
        "mount --make-rprivate / && mount -t overlay overlay -o ro,lowerdir={}:{} {} && cd {} && ls -A . d o n",
        l2.display(),
        l1.display(),
        merged.display(),
        merged.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "overlay mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        listing, ".:\nd\nkeep\nn\no\n\nd:\nb\n\nn:\n\no:\nnew\n",
        "f and d/a hidden, o opaque"
    );
    assert!(names(&merged).is_empty(), "the mount stayed in the child's namespace");
}

/// `entries` must be refused; nothing may be left in the parent of the
/// destination, nor in `outside`.
fn refused(entries: Vec<E>, outside: &Path) -> ImageError {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("layer");
    let before = names(outside);
    let err = unpack(&tar(entries), Compression::None, &dest).unwrap_err();
    assert!(names(t.path()).is_empty(), "left behind: {:?}", names(t.path()));
    assert_eq!(names(outside), before, "written outside: {err}");
    err
}

#[test]
fn images_unpack_refuses_hostile_entries() {
    let outside = tempfile::tempdir().unwrap();
    let out = outside.path().to_str().unwrap();
    let file = || E::file("ok", b"ok");
    let cases: Vec<(&str, Vec<E>, &str)> = vec![
        ("../escape", vec![file(), E::file("../escape", b"x")], "`..` component"),
        ("a/../../x", vec![E::file("a/../../x", b"x")], "`..` component"),
        (
            "symlink to outside, then through it",
            vec![E::symlink("l", out), E::file("l/file", b"x")],
            "symlink",
        ),
        (
            "symlink to .., then through it",
            vec![E::symlink("l", ".."), E::file("l/x", b"x")],
            "symlink",
        ),
        (
            "dir through a symlink",
            vec![E::symlink("l", out), E::dir("l/sub")],
            "symlink",
        ),
        (
            "whiteout through a symlink",
            vec![E::symlink("l", out), E::file("l/.wh.x", b"")],
            "symlink",
        ),
        (
            "hard link to ../../etc/passwd",
            vec![E::hardlink("p", "../../etc/passwd")],
            "`..` component",
        ),
        (
            "hard link to /etc/passwd (not in this layer)",
            vec![E::hardlink("p", "/etc/passwd")],
            "not in this layer",
        ),
        (
            "hard link through a symlink",
            vec![E::symlink("l", "/etc"), E::hardlink("p", "l/passwd")],
            "symlink",
        ),
        (
            "hard link through a symlink to outside",
            vec![E::symlink("l", out), E::hardlink("p", "l/x")],
            "symlink",
        ),
        (
            "hard link to a directory",
            vec![E::dir("d"), E::hardlink("p", "d")],
            "neither a file",
        ),
        (
            "char device 1:3",
            vec![E::device("null", EntryType::Char, 1, 3)],
            "device node",
        ),
        (
            "block device 8:0",
            vec![E::device("sda", EntryType::Block, 8, 0)],
            "device node",
        ),
        (
            "a file as a parent",
            vec![file(), E::file("ok/x", b"x")],
            "not a directory",
        ),
        ("empty name", vec![E::file("/", b"x")], "empty name"),
        ("whiteout of nothing", vec![E::file(".wh.", b"")], "whiteout of nothing"),
        (
            "GNU sparse file",
            vec![E {
                kind: EntryType::GNUSparse,
                ..E::file("s", b"")
            }],
            "unsupported entry type",
        ),
    ];
    for (what, entries, reason) in cases {
        match refused(entries, outside.path()) {
            ImageError::Hostile { reason: r, .. } => assert!(r.contains(reason), "{what}: {r}"),
            e => panic!("{what}: {e}"),
        }
    }
    // The symlink's target outside got nothing either.
    assert!(names(outside.path()).is_empty());
}

#[test]
fn images_unpack_allows_whiteout_devices_and_replaces_without_following() {
    let t = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"untouched").unwrap();
    let dest = t.path().join("layer");
    let entries = vec![
        E::device("wh", EntryType::Char, 0, 0),
        // A symlink to a host file, then a file of the same name: the
        // symlink is replaced, the host file never written.
        E::symlink("s", victim.to_str().unwrap()),
        E::file("s", b"new"),
        E::symlink("t", victim.to_str().unwrap()),
        E::dir("t"),
    ];
    unpack(&tar(entries), Compression::None, &dest)
        .unwrap()
        .commit()
        .unwrap();
    assert!(
        std::fs::symlink_metadata(dest.join("wh"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert_eq!(std::fs::read(dest.join("s")).unwrap(), b"new");
    assert!(std::fs::symlink_metadata(dest.join("t")).unwrap().is_dir());
    assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
}

/// A zstd stream of several frames (as `zstd` writes for concatenated
/// input, or a parallel compressor) is read whole.
#[test]
fn images_unpack_reads_every_zstd_frame() {
    let t = tempfile::tempdir().unwrap();
    let bytes = tar(normal_layer());
    let (head, rest) = bytes.split_at(bytes.len() / 2);
    let blob = [zstd(head), zstd(rest)].concat();
    let staged = unpack(&blob, Compression::Zstd, &t.path().join("layer")).unwrap();
    assert_eq!(staged.diff_id(), &Digest::of(&bytes), "both frames' bytes");
}

#[test]
fn images_unpack_refuses_garbage_and_an_existing_destination() {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("layer");
    for compression in [Compression::Gzip, Compression::Zstd] {
        let err = unpack(
            b"not a tar at all, but long enough to be read as a header block",
            compression,
            &dest,
        );
        assert!(matches!(err, Err(ImageError::Archive(_))), "{compression:?}: {err:?}");
    }
    std::fs::create_dir(&dest).unwrap();
    let staged = unpack(&tar(vec![E::file("a", b"a")]), Compression::None, &dest).unwrap();
    assert!(
        matches!(staged.commit(), Err(ImageError::Io { .. })),
        "never over an existing layer"
    );
    assert_eq!(names(t.path()), ["layer"]);
}

#[test]
fn images_unpack_stops_decompression_bombs() {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("layer");
    let limits = Limits {
        max_bytes: 1 << 20,
        max_entries: 100,
        ..Limits::default()
    };
    // 4 MiB of zeros: a few KiB compressed, either way.
    let zeros = tar(vec![E::file("zeros", &vec![0u8; 4 << 20])]);
    for (bomb, compression) in [(gzip(&zeros), Compression::Gzip), (zstd(&zeros), Compression::Zstd)] {
        assert!(bomb.len() < 256 << 10, "{compression:?}");
        let err = unpack_layer(&mut &bomb[..], compression, &dest, &limits).unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::LayerTooLarge {
                    what: "uncompressed bytes",
                    ..
                }
            ),
            "{compression:?}: {err}"
        );
    }
    let many = tar((0..101).map(|i| E::file(&format!("f{i}"), b"")).collect());
    let err = unpack_layer(&mut &many[..], Compression::None, &dest, &limits).unwrap_err();
    assert!(
        matches!(err, ImageError::LayerTooLarge { what: "entries", .. }),
        "{err}"
    );
    assert!(names(t.path()).is_empty());
    // At the limits exactly: fine.
    let exact = tar((0..100).map(|i| E::file(&format!("f{i}"), b"")).collect());
    let limits = Limits {
        max_bytes: exact.len() as u64,
        max_entries: 100,
        ..Limits::default()
    };
    unpack_layer(&mut &exact[..], Compression::None, &dest, &limits)
        .unwrap()
        .commit()
        .unwrap();
}
