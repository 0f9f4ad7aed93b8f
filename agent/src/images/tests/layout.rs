//! Reading OCI layouts: tags, digests, indexes per platform, Docker media
//! types, and every blob checked before it is parsed.

use serde_json::json;

use super::fixtures::{E, LayoutFixture, OCI_INDEX, OCI_MANIFEST, digest_of, tar};
use crate::images::MAX_JSON_BLOB;
use crate::images::layout::host_architecture;
use crate::images::{Compression, Digest, ImageError, Layout, Reference};

fn resolve(fixture: &LayoutFixture, reference: &str) -> Result<crate::images::ResolvedImage, ImageError> {
    Layout::open(fixture.path())?.resolve(&Reference::parse(reference)?)
}

#[test]
fn images_layout_by_tag_and_digest() {
    let mut f = LayoutFixture::new();
    let layer = tar(vec![E::file("a", b"a")]);
    let digest = f.image("latest", std::slice::from_ref(&layer), true);
    let image = resolve(&f, "latest").unwrap();
    assert_eq!(image.manifest.digest, digest);
    assert_eq!(image.config.env, ["PATH=/bin", "A=1"]);
    assert_eq!(image.config.entrypoint, ["/bin/sh", "-c"]);
    assert_eq!(image.config.cmd, ["echo hi"]);
    assert_eq!(
        (image.config.user.as_str(), image.config.working_dir.as_str()),
        ("1000:1000", "/home")
    );
    assert_eq!(image.config.diff_ids, [Digest::of(&layer)]);
    assert_eq!(image.layers.len(), 1);
    assert_eq!(image.layers[0].compression, Compression::Gzip);
    assert_eq!(resolve(&f, &digest.to_string()).unwrap().manifest.digest, digest);
    assert!(matches!(resolve(&f, "other"), Err(ImageError::NotFound { .. })));
    assert!(matches!(
        resolve(&f, &Digest::of(b"x").to_string()),
        Err(ImageError::NotFound { .. })
    ));
}

#[test]
fn images_layout_follows_an_index_to_this_platform() {
    let mut f = LayoutFixture::new();
    let (layer, diff_id) = f.layer(&tar(vec![E::file("a", b"a")]), false);
    let config = f.config(&[diff_id]);
    let ours = f.manifest(config.clone(), vec![layer.clone()]);
    // Another platform's manifest, with an extra layer to tell it apart.
    let theirs = f.manifest(config, vec![layer.clone(), layer]);
    let entry = |desc: &serde_json::Value, arch: &str| {
        let mut d = desc.clone();
        d["platform"] = json!({"os": "linux", "architecture": arch});
        d
    };
    let index = json!({"schemaVersion": 2, "manifests": [entry(&theirs, "s390x"), entry(&ours, host_architecture())]});
    let index_desc = f.blob(OCI_INDEX, &serde_json::to_vec(&index).unwrap());
    f.tag(index_desc.clone(), "multi");
    assert_eq!(resolve(&f, "multi").unwrap().manifest.digest, digest_of(&ours));
    assert_eq!(
        resolve(&f, &digest_of(&index_desc).to_string())
            .unwrap()
            .manifest
            .digest,
        digest_of(&ours)
    );

    let only_theirs = json!({"schemaVersion": 2, "manifests": [entry(&theirs, "s390x")]});
    let desc = f.blob(OCI_INDEX, &serde_json::to_vec(&only_theirs).unwrap());
    f.tag(desc, "foreign");
    assert!(matches!(resolve(&f, "foreign"), Err(ImageError::NotFound { .. })));
}

#[test]
fn images_layout_reads_docker_media_types() {
    let mut f = LayoutFixture::new();
    let layer_tar = tar(vec![E::file("a", b"a")]);
    let mut layer = f.blob(
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        &super::fixtures::gzip(&layer_tar),
    );
    layer["mediaType"] = json!("application/vnd.docker.image.rootfs.diff.tar.gzip");
    let mut config = f.config(&[Digest::of(&layer_tar)]);
    config["mediaType"] = json!("application/vnd.docker.container.image.v1+json");
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": config,
        "layers": [layer],
    });
    let desc = f.blob(
        "application/vnd.docker.distribution.manifest.v2+json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    let mut list_entry = desc.clone();
    list_entry["platform"] = json!({"os": "linux", "architecture": host_architecture()});
    let list = json!({"schemaVersion": 2, "manifests": [list_entry]});
    let list_desc = f.blob(
        "application/vnd.docker.distribution.manifest.list.v2+json",
        &serde_json::to_vec(&list).unwrap(),
    );
    f.tag(list_desc, "docker");
    let image = resolve(&f, "docker").unwrap();
    assert_eq!(image.manifest.digest, digest_of(&desc));
    assert_eq!(image.layers[0].compression, Compression::Gzip);
}

#[test]
fn images_layout_refuses_bad_blobs() {
    let layer_tar = tar(vec![E::file("a", b"a")]);

    // A config whose bytes are not what the manifest says.
    let mut f = LayoutFixture::new();
    f.image("t", std::slice::from_ref(&layer_tar), false);
    let config_digest = resolve(&f, "t").unwrap().config_blob.digest;
    let mut bytes = std::fs::read(f.blob_path(&config_digest)).unwrap();
    bytes[0] = b' ';
    std::fs::write(f.blob_path(&config_digest), &bytes).unwrap();
    assert!(matches!(resolve(&f, "t"), Err(ImageError::DigestMismatch { .. })));

    // Right digest, wrong size, either way.
    for delta in [1i64, -1] {
        let mut f = LayoutFixture::new();
        let (layer, diff_id) = f.layer(&layer_tar, false);
        let mut config = f.config(&[diff_id]);
        config["size"] = json!(config["size"].as_i64().unwrap() + delta);
        let manifest = f.manifest(config, vec![layer]);
        f.tag(manifest, "t");
        assert!(
            matches!(resolve(&f, "t"), Err(ImageError::SizeMismatch { .. })),
            "{delta}"
        );
    }

    // Anything unknown (a foreign or non-distributable layer) is refused
    // by media type.
    for media_type in [
        "application/x-unknown",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    ] {
        let mut f = LayoutFixture::new();
        let (mut layer, diff_id) = f.layer(&layer_tar, false);
        layer["mediaType"] = json!(media_type);
        let config = f.config(&[diff_id]);
        let manifest = f.manifest(config, vec![layer]);
        f.tag(manifest, "t");
        assert!(matches!(resolve(&f, "t"), Err(ImageError::UnsupportedMediaType(m)) if m == media_type));
    }

    // A manifest over 4 MiB is not read at all.
    let mut f = LayoutFixture::new();
    let (layer, diff_id) = f.layer(&layer_tar, false);
    let config = f.config(&[diff_id]);
    let padding = "x".repeat(MAX_JSON_BLOB as usize);
    let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer],
        "annotations": {"padding": padding}});
    let desc = f.blob(OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap());
    f.tag(desc, "big");
    assert!(matches!(
        resolve(&f, "big"),
        Err(ImageError::TooLarge { what: "manifest", .. })
    ));

    // More layers than diff_ids.
    let mut f = LayoutFixture::new();
    let (layer, diff_id) = f.layer(&layer_tar, false);
    let config = f.config(&[diff_id]);
    let manifest = f.manifest(config, vec![layer.clone(), layer]);
    f.tag(manifest, "t");
    assert!(matches!(resolve(&f, "t"), Err(ImageError::Layout { .. })));
}

#[test]
fn images_layout_checks_its_version() {
    let f = LayoutFixture::new();
    std::fs::write(f.path().join("oci-layout"), br#"{"imageLayoutVersion":"2.0.0"}"#).unwrap();
    assert!(matches!(Layout::open(f.path()), Err(ImageError::Layout { .. })));
    std::fs::remove_file(f.path().join("oci-layout")).unwrap();
    assert!(matches!(Layout::open(f.path()), Err(ImageError::Io { .. })));
    assert!(matches!(
        Reference::parse("sha512:00"),
        Err(ImageError::UnsupportedAlgorithm(_))
    ));
}
