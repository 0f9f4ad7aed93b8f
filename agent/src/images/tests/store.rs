//! The store: imports verified end to end, layers unpacked once even by
//! concurrent importers, and the LRU GC.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use super::fixtures::{E, LayoutFixture, digest_of, names, tar};
use crate::images::{Digest, ImageError, Reference, Store};

fn tag(t: &str) -> Reference {
    Reference::Tag(t.to_owned())
}

/// Two layers (a whiteout in the second) and a third to share.
fn layers() -> [Vec<u8>; 3] {
    [
        tar(vec![
            E::file("bin/sh", b"sh").mode(0o755),
            E::file("etc/motd", b"hello"),
        ]),
        tar(vec![E::file("etc/.wh.motd", b""), E::file("app/run", b"run")]),
        tar(vec![E::file("other/data", &[1u8; 5000])]),
    ]
}

#[test]
fn images_store_imports_once() {
    let mut f = LayoutFixture::new();
    let [l1, l2, _] = layers();
    let manifest = f.image("latest", &[l1.clone(), l2.clone()], true);
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let image = store.import_layout(f.path(), &tag("latest")).unwrap();
    assert_eq!(image.manifest_digest, manifest);
    assert_eq!(image.layers, [Digest::of(&l1), Digest::of(&l2)]);
    assert_eq!(image.config.cmd, ["echo hi"]);
    assert_eq!(
        std::fs::read(store.layer_dir(&image.layers[0]).join("etc/motd")).unwrap(),
        b"hello"
    );
    assert!(
        store.layer_dir(&image.layers[1]).join("etc/motd").metadata().is_ok(),
        "the whiteout device"
    );
    assert_eq!(store.image(&manifest).unwrap().as_ref(), Some(&image));
    let blobs = names(&root.path().join("blobs/sha256"));
    assert_eq!(blobs.len(), 2, "manifest and config");
    assert!(blobs.contains(&manifest.hex().to_owned()));

    let again = store
        .import_layout(f.path(), &Reference::Digest(manifest.clone()))
        .unwrap();
    assert_eq!(again.layers, image.layers);
    assert_eq!(
        store.unpacks.load(Ordering::SeqCst),
        2,
        "the second import unpacked nothing"
    );
    assert!(names(&root.path().join("tmp")).is_empty());
}

/// An image whose layers (as its manifest gives their sizes) are more
/// than the store may hold is refused before any layer is read, and
/// nothing is recorded; one that fits exactly is imported.
/// A zstd layer (`tar+zstd`, as `docker buildx --compression zstd` and
/// podman push) beside a gzip one: both unpacked, both checked against
/// the config's diff_ids.
#[test]
fn images_store_imports_zstd_layers() {
    let mut f = LayoutFixture::new();
    let [l1, l2, _] = layers();
    let zstd_layer = f.blob(super::fixtures::OCI_TAR_ZSTD, &super::fixtures::zstd(&l2));
    let (gzip_layer, _) = f.layer(&l1, true);
    let config = f.config(&[Digest::of(&l1), Digest::of(&l2)]);
    let manifest = f.manifest(config, vec![gzip_layer, zstd_layer]);
    f.tag(manifest, "zstd");
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let image = store.import_layout(f.path(), &tag("zstd")).unwrap();
    assert_eq!(
        std::fs::read(store.layer_dir(&image.layers[1]).join("app/run")).unwrap(),
        b"run"
    );
}

#[test]
fn images_store_refuses_an_image_larger_than_it_may_hold() {
    let mut f = LayoutFixture::new();
    let [l1, l2, _] = layers();
    f.image("latest", &[l1, l2], true);
    let resolved = crate::images::Layout::open(f.path())
        .unwrap()
        .resolve(&tag("latest"))
        .unwrap();
    let size: u64 = resolved.layers.iter().map(|l| l.size).sum();
    let root = tempfile::tempdir().unwrap();
    let limited = |max_image_bytes| {
        Store::open(root.path()).unwrap().with_limits(crate::images::Limits {
            max_image_bytes,
            ..Default::default()
        })
    };
    let store = limited(size - 1);
    let err = store.import_layout(f.path(), &tag("latest")).unwrap_err();
    assert!(
        matches!(err, ImageError::ImageTooLarge { bytes, limit } if bytes == size && limit == size - 1),
        "{err}"
    );
    assert!(err.to_string().contains("--image-store-max-mib"), "{err}");
    assert_eq!(store.unpacks.load(Ordering::SeqCst), 0);
    assert!(names(&root.path().join("images")).is_empty());
    limited(size).import_layout(f.path(), &tag("latest")).unwrap();
}

#[test]
fn images_store_concurrent_imports_unpack_each_layer_once() {
    let mut f = LayoutFixture::new();
    let [l1, l2, l3] = layers();
    f.image("latest", &[l1, l2, l3], true);
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let images: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| store.import_layout(f.path(), &tag("latest"))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    assert!(images.iter().all(|i| i.layers == images[0].layers));
    assert_eq!(store.unpacks.load(Ordering::SeqCst), 3);
    let mut expected: Vec<String> = images[0]
        .layers
        .iter()
        .flat_map(|d| {
            let hex = d.hex();
            [hex.to_owned(), format!("{hex}.json"), format!("{hex}.lock")]
        })
        .collect();
    expected.sort();
    assert_eq!(names(&root.path().join("layers")), expected, "no temp dirs left");
}

#[test]
fn images_store_records_nothing_on_a_bad_layer() {
    let [l1, l2, _] = layers();
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();

    // The config's diff_id for the second layer is wrong.
    let mut f = LayoutFixture::new();
    let (d1, id1) = f.layer(&l1, true);
    let (d2, _) = f.layer(&l2, true);
    let config = f.config(&[id1.clone(), Digest::of(b"not this layer")]);
    let manifest = f.manifest(config, vec![d1, d2]);
    let bad = digest_of(&manifest);
    f.tag(manifest, "bad");
    let err = store.import_layout(f.path(), &tag("bad")).unwrap_err();
    assert!(
        matches!(&err, ImageError::DigestMismatch { what, .. } if what.contains("diff_id")),
        "{err}"
    );
    assert_eq!(store.image(&bad).unwrap(), None);
    assert!(store.images().unwrap().is_empty());
    assert!(!store.layer_dir(&Digest::of(&l2)).exists());

    // A layer blob changed after the manifest was written: unpacked,
    // then refused by digest, and removed.
    let mut f = LayoutFixture::new();
    let manifest = f.image("t", std::slice::from_ref(&l2), false);
    let blob = f.blob_path(&Digest::of(&l2));
    let mut bytes = std::fs::read(&blob).unwrap();
    let at = bytes.windows(3).rposition(|w| w == b"run").unwrap();
    bytes[at] = b'R';
    std::fs::write(&blob, &bytes).unwrap();
    let err = store.import_layout(f.path(), &tag("t")).unwrap_err();
    assert!(
        matches!(&err, ImageError::DigestMismatch { what, .. } if what == "layer blob"),
        "{err}"
    );
    assert_eq!(store.image(&manifest).unwrap(), None);
    assert!(!store.layer_dir(&Digest::of(&l2)).exists());
    assert_eq!(
        names(&root.path().join("layers"))
            .iter()
            .filter(|n| n.contains(".tmp-"))
            .count(),
        0
    );
    // Truncated: the size is wrong.
    std::fs::write(&blob, &l2[..l2.len() - 512]).unwrap();
    let err = store.import_layout(f.path(), &tag("t")).unwrap_err();
    assert!(matches!(err, ImageError::SizeMismatch { .. }), "{err}");
}

#[test]
fn images_store_gc_removes_least_recently_used_and_keeps_in_use() {
    let [l1, l2, l3] = layers();
    let mut f = LayoutFixture::new();
    let a = f.image("a", &[l1.clone(), l2.clone()], true);
    let b = f.image("b", &[l1.clone(), l3.clone()], true);
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    store.import_layout(f.path(), &tag("a")).unwrap();
    store.import_layout(f.path(), &tag("b")).unwrap();
    // Leftovers of an interrupted import.
    std::fs::create_dir(
        root.path()
            .join("layers")
            .join(format!("{}.tmp-x", Digest::of(b"x").hex())),
    )
    .unwrap();
    std::fs::write(root.path().join("tmp/partial"), b"x").unwrap();

    let report = store.gc(u64::MAX, &HashSet::new()).unwrap();
    assert!(report.images_removed.is_empty());
    assert_eq!(report.bytes_before, report.bytes_after);
    assert!(names(&root.path().join("tmp")).is_empty());
    assert_eq!(
        names(&root.path().join("layers")).len(),
        9,
        "3 layers, their records and locks"
    );

    // `a` was used last: `b` goes first, with the layer only it had.
    std::thread::sleep(std::time::Duration::from_millis(5));
    store.mark_used(&a).unwrap();
    let report = store.gc(report.bytes_after - 1, &HashSet::new()).unwrap();
    assert_eq!(report.images_removed, [b]);
    assert_eq!((report.layers_removed, report.blobs_removed), (1, 2));
    assert!(report.bytes_after < report.bytes_before);
    assert!(!store.layer_dir(&Digest::of(&l3)).exists());
    assert!(store.layer_dir(&Digest::of(&l1)).is_dir(), "shared with a");
    assert_eq!(
        store
            .images()
            .unwrap()
            .iter()
            .map(|i| &i.manifest_digest)
            .collect::<Vec<_>>(),
        [&a]
    );

    // In use, `a` stays whatever the budget.
    let in_use = HashSet::from([a.clone()]);
    let report = store.gc(0, &in_use).unwrap();
    assert!(report.images_removed.is_empty());
    assert!(store.layer_dir(&Digest::of(&l2)).is_dir());
    let report = store.gc(0, &HashSet::new()).unwrap();
    assert_eq!(report.images_removed, [a]);
    assert_eq!(report.bytes_after, 0);
    assert!(names(&root.path().join("layers")).is_empty());
    assert!(names(&root.path().join("blobs/sha256")).is_empty());
}
