//! Archives written header by header (so that hostile names can be
//! written too: `Header::set_path` refuses `..`) and OCI layouts written
//! file by file.

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};
use tar::{EntryType, Header};
use tempfile::TempDir;

use crate::images::Digest;

/// The mtime every fixture entry has.
pub const MTIME: u64 = 1_600_000_000;

/// One tar entry; `name` and `link` are written as raw bytes.
pub struct E {
    pub kind: EntryType,
    pub name: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub data: Vec<u8>,
    pub dev: (u32, u32),
}

impl E {
    fn new(kind: EntryType, name: &str, mode: u32) -> E {
        E {
            kind,
            name: name.into(),
            link: Vec::new(),
            mode,
            uid: 0,
            gid: 0,
            data: Vec::new(),
            dev: (0, 0),
        }
    }
    pub fn file(name: &str, data: &[u8]) -> E {
        E {
            data: data.to_vec(),
            ..E::new(EntryType::Regular, name, 0o644)
        }
    }
    pub fn dir(name: &str) -> E {
        E::new(EntryType::Directory, name, 0o755)
    }
    pub fn symlink(name: &str, target: &str) -> E {
        E {
            link: target.into(),
            ..E::new(EntryType::Symlink, name, 0o777)
        }
    }
    pub fn hardlink(name: &str, target: &str) -> E {
        E {
            link: target.into(),
            ..E::new(EntryType::Link, name, 0o644)
        }
    }
    pub fn device(name: &str, kind: EntryType, major: u32, minor: u32) -> E {
        E {
            dev: (major, minor),
            ..E::new(kind, name, 0o666)
        }
    }
    pub fn mode(self, mode: u32) -> E {
        E { mode, ..self }
    }
    pub fn owner(self, uid: u64, gid: u64) -> E {
        E { uid, gid, ..self }
    }
}

/// An uncompressed tar of `entries`.
pub fn tar(entries: Vec<E>) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..e.name.len()].copy_from_slice(&e.name);
            old.linkname[..e.link.len()].copy_from_slice(&e.link);
        }
        h.set_entry_type(e.kind);
        if e.kind == EntryType::GNUSparse {
            // A 1 GiB hole, then the entry's data.
            let octal = |n: u64| format!("{n:011o}\0").into_bytes();
            let gnu = h.as_gnu_mut().unwrap();
            gnu.realsize.copy_from_slice(&octal((1 << 30) + e.data.len() as u64));
            gnu.sparse[0].offset.copy_from_slice(&octal(1 << 30));
            gnu.sparse[0].numbytes.copy_from_slice(&octal(e.data.len() as u64));
        }
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(MTIME);
        h.set_size(e.data.len() as u64);
        h.set_device_major(e.dev.0).unwrap();
        h.set_device_minor(e.dev.1).unwrap();
        h.set_cksum();
        builder.append(&h, &e.data[..]).unwrap();
    }
    builder.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(bytes, ruzstd::encoding::CompressionLevel::Fastest)
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// An OCI image layout in a temp dir.
pub struct LayoutFixture {
    pub dir: TempDir,
    index: Vec<Value>,
}

impl LayoutFixture {
    pub fn new() -> LayoutFixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        let fixture = LayoutFixture { dir, index: Vec::new() };
        fixture.write_index();
        fixture
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn blob_path(&self, digest: &Digest) -> std::path::PathBuf {
        self.path().join("blobs/sha256").join(digest.hex())
    }

    /// Writes a blob; returns its descriptor.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let digest = Digest::of(bytes);
        std::fs::write(self.blob_path(&digest), bytes).unwrap();
        json!({"mediaType": media_type, "digest": digest.to_string(), "size": bytes.len()})
    }

    /// A layer blob for the uncompressed `tar`, and its diff_id.
    pub fn layer(&self, tar: &[u8], gzip_it: bool) -> (Value, Digest) {
        let desc = if gzip_it {
            self.blob(OCI_TAR_GZIP, &gzip(tar))
        } else {
            self.blob(OCI_TAR, tar)
        };
        (desc, Digest::of(tar))
    }

    pub fn config(&self, diff_ids: &[Digest]) -> Value {
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": ["PATH=/bin", "A=1"],
                "Entrypoint": ["/bin/sh", "-c"],
                "Cmd": ["echo hi"],
                "User": "1000:1000",
                "WorkingDir": "/home",
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(ToString::to_string).collect::<Vec<_>>()},
        });
        self.blob(OCI_CONFIG, &serde_json::to_vec(&config).unwrap())
    }

    pub fn manifest(&self, config: Value, layers: Vec<Value>) -> Value {
        let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers});
        self.blob(OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap())
    }

    /// Adds `desc` to `index.json` under `tag`.
    pub fn tag(&mut self, mut desc: Value, tag: &str) {
        desc["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.index.push(desc);
        self.write_index();
    }

    fn write_index(&self) {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.index});
        std::fs::write(self.path().join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }

    /// An image of the uncompressed `tars`, bottom first, tagged `tag`;
    /// returns its manifest digest.
    pub fn image(&mut self, tag: &str, tars: &[Vec<u8>], gzip_them: bool) -> Digest {
        let (layers, diff_ids): (Vec<_>, Vec<_>) = tars.iter().map(|t| self.layer(t, gzip_them)).unzip();
        let config = self.config(&diff_ids);
        let manifest = self.manifest(config, layers);
        let digest = digest_of(&manifest);
        self.tag(manifest, tag);
        digest
    }
}

/// The digest a descriptor names.
pub fn digest_of(desc: &Value) -> Digest {
    Digest::parse(desc["digest"].as_str().unwrap()).unwrap()
}

/// The names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
