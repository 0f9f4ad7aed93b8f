//! Small OCI image layouts built by hand for tests (issue 15): one gzip
//! layer per call to [`LayoutBuilder::layer`], a config with the fields
//! Mezzo honours, and `index.json` naming the image by tag. Deterministic,
//! and no registry or internet is needed.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};

/// A file of a layer: its path (relative), content and mode, or a symlink.
pub enum Entry<'a> {
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
}

/// A layout being built.
#[derive(Default)]
pub struct LayoutBuilder {
    layers: Vec<(Vec<u8>, String)>,
    config: Value,
}

/// A header with every numeric field set (owner root, epoch mtime), as
/// real image builders write them.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// The SHA-256 of `bytes` as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl LayoutBuilder {
    /// The image's config (`Env`, `Entrypoint`, `Cmd`, `User`, `WorkingDir`).
    pub fn config(mut self, config: Value) -> Self {
        self.config = config;
        self
    }

    /// Adds a layer holding `entries` (parents made as 0755 dirs).
    pub fn layer(mut self, entries: &[Entry<'_>]) -> Result<Self> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut dirs = std::collections::BTreeSet::new();
        for e in entries {
            let path = match e {
                Entry::File(p, ..) | Entry::Symlink(p, _) => *p,
            };
            let mut parent = Path::new(path).parent();
            while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                dirs.insert(p.to_path_buf());
                parent = p.parent();
            }
        }
        for dir in &dirs {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            tar.append_data(&mut h, dir, std::io::empty())?;
        }
        for e in entries {
            match e {
                Entry::File(path, data, mode) => {
                    let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
                    tar.append_data(&mut h, path, *data)?;
                }
                Entry::Symlink(path, target) => {
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                    tar.append_link(&mut h, path, target)?;
                }
            }
        }
        let raw = tar.into_inner()?;
        let diff_id = format!("sha256:{}", sha256_hex(&raw));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw)?;
        self.layers.push((gz.finish()?, diff_id));
        Ok(self)
    }

    /// Writes the layout to `dir` with the image tagged `tag`.
    pub fn write(self, dir: &Path, tag: &str) -> Result<()> {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs)?;
        let put = |bytes: &[u8]| -> Result<String> {
            let hex = sha256_hex(bytes);
            std::fs::write(blobs.join(&hex), bytes)?;
            Ok(format!("sha256:{hex}"))
        };
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for (blob, diff_id) in &self.layers {
            layers.push(json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": put(blob)?,
                "size": blob.len(),
            }));
            diff_ids.push(diff_id.clone());
        }
        let config = serde_json::to_vec(&json!({
            "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            "os": "linux",
            "config": self.config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": put(&config)?,
                "size": config.len(),
            },
            "layers": layers,
        }))?;
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": put(&manifest)?,
                "size": manifest.len(),
                "annotations": { "org.opencontainers.image.ref.name": tag },
            }],
        });
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(())
    }
}

/// `len` bytes no compressor can shrink (a xorshift stream from `seed`):
/// layers whose size on the wire is their size on disk.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A busybox image (the host's static busybox, from Debian's
/// busybox-static): `/bin/busybox` with `sh`, `cat`, `id`, `pwd`, `ls`
/// and `echo` links, an `/etc/passwd` with `app` (uid 1234), and `extra`
/// files on top, in a second layer.
pub fn busybox_layout(dir: &Path, tag: &str, config: Value, extra: &[Entry<'_>]) -> Result<()> {
    let busybox = std::fs::read("/bin/busybox")?;
    let passwd = b"root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n";
    let group = b"root:x:0:\napp:x:1234:\nnogroup:x:65534:\n";
    let applets: Vec<String> = ["sh", "cat", "id", "pwd", "ls", "echo", "env", "true"]
        .iter()
        .map(|a| format!("bin/{a}"))
        .collect();
    let mut base = vec![
        Entry::File("bin/busybox", &busybox, 0o755),
        Entry::File("etc/passwd", passwd, 0o644),
        Entry::File("etc/group", group, 0o644),
    ];
    base.extend(applets.iter().map(|a| Entry::Symlink(a, "busybox")));
    LayoutBuilder::default()
        .config(config)
        .layer(&base)?
        .layer(extra)?
        .write(dir, tag)
}

/// The layer digests an image manifest lists, in order.
pub fn layer_digests(manifest: &Value) -> Result<Vec<String>> {
    Ok(manifest["layers"]
        .as_array()
        .context("no layers")?
        .iter()
        .filter_map(|l| l["digest"].as_str().map(str::to_owned))
        .collect())
}
