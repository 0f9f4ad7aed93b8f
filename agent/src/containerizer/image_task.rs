//! What a task with an image runs (issue 15): the image found in the
//! agent's store (imported from its `--image-layouts` or pulled from a
//! registry on first use), its
//! overlay root, and the image's `Env`, `Entrypoint`/`Cmd`, `User` and
//! `WorkingDir` applied under what the task itself asks for.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mezzo_proto::image::{ImageRef, Source};

use super::rootfs::ImageRoot;
use super::{CommandSpec, ContainerError};
use crate::images::{Credentials, Digest, Image, LayerDescriptor, Puller, Reference, RemoteImage, Store};

/// Where a launch says what slow step it is in (an image pull): the task's
/// supervisor reports each message as a `TASK_STARTING` update.
pub type Progress = tokio::sync::mpsc::UnboundedSender<String>;

/// Where the agent finds images.
#[derive(Debug, Clone)]
pub struct ImageSource {
    /// OCI image layouts, one directory per name (`oci:NAME`), if the
    /// agent has `--image-layouts`.
    pub layouts: Option<PathBuf>,
    /// The registry client (`HOST/PATH` references).
    pub puller: Puller,
    pub store: Arc<Store>,
    /// The store is kept under this size by removing the least recently
    /// used images no container uses (`--image-store-max-mib`).
    pub max_bytes: u64,
    pub leases: Leases,
    /// Why images cannot run in a user namespace on this host, if they
    /// cannot (found at start: `LinuxContainerizer::new`).
    pub userns_unsupported: Option<String>,
}

/// The images containers use (manifest digests, counted), which the
/// store's garbage collection keeps; and those seen since the agent
/// started, for which it has run once.
#[derive(Debug, Default, Clone)]
pub struct Leases {
    inner: Arc<Mutex<LeaseTable>>,
}

#[derive(Debug, Default)]
struct LeaseTable {
    in_use: HashMap<Digest, usize>,
    seen: HashSet<Digest>,
}

/// One container's use of an image, given back when dropped.
#[derive(Debug)]
pub struct Lease {
    leases: Leases,
    digest: Digest,
}

impl Leases {
    /// Takes a lease on `digest`; true if the image is new to this agent
    /// since it started.
    pub fn take(&self, digest: &Digest) -> (Lease, bool) {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *t.in_use.entry(digest.clone()).or_default() += 1;
        let new = t.seen.insert(digest.clone());
        let lease = Lease {
            leases: self.clone(),
            digest: digest.clone(),
        };
        (lease, new)
    }

    fn in_use(&self) -> HashSet<Digest> {
        let t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        t.in_use.keys().cloned().collect()
    }
}

impl Lease {
    /// The image's manifest digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut t = self.leases.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = t.in_use.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                t.in_use.remove(&self.digest);
            }
        }
    }
}

/// An image ready for one container.
pub struct Prepared {
    /// Held while the container lives: its layers stay in the store.
    pub lease: Lease,
    pub root: ImageRoot,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The image's user if it names one other than root: `(uid, gid)`.
    pub user: Option<(u32, u32)>,
    pub cwd: Option<PathBuf>,
}

fn image_error(r: &ImageRef, e: impl std::fmt::Display) -> ContainerError {
    ContainerError::Image(format!("{}{e}", r.error_message_prefix()))
}

impl ImageSource {
    /// Finds `r` (importing it into the store if it is not there yet, once
    /// even for concurrent launches) and prepares the container's root in
    /// `run_dir`. Blocking. A registry image is pulled with `credentials`
    /// if given. A layer it downloads is announced on `progress`, for the
    /// task's status.
    pub fn prepare(
        &self,
        (r, credentials): (&ImageRef, Option<&Credentials>),
        command: &CommandSpec,
        task_env: &[(String, String)],
        run_dir: &Path,
        progress: Option<&Progress>,
    ) -> Result<Prepared, ContainerError> {
        let image = self.find(r, credentials, progress).map_err(|e| image_error(r, e))?;
        let (lease, new) = self.leases.take(&image.manifest_digest);
        if new {
            self.collect_garbage();
        }
        let (upper, work) = (run_dir.join("root-upper"), run_dir.join("root-work"));
        for dir in [&upper, &work] {
            std::fs::create_dir_all(dir).map_err(|e| image_error(r, format!("{}: {e}", dir.display())))?;
        }
        let layers = image.layers.iter().map(|d| self.store.layer_dir(d)).collect::<Vec<_>>();
        let user = image_user(&image, &layers).map_err(|e| image_error(r, e))?;
        Ok(Prepared {
            lease,
            argv: argv(&image, command).map_err(|e| image_error(r, e))?,
            env: env(&image, task_env),
            user,
            cwd: Some(&image.config.working_dir)
                .filter(|d| d.starts_with('/'))
                .map(PathBuf::from),
            root: ImageRoot { layers, upper, work },
        })
    }
}

impl ImageSource {
    /// Keeps the store under its size, sparing the images in use. Run
    /// when an image new to this agent came in; an error is only logged:
    /// the launch goes on.
    fn collect_garbage(&self) {
        match self.store.gc(self.max_bytes, &self.leases.in_use()) {
            Ok(report) if !report.images_removed.is_empty() => tracing::info!(
                removed = report.images_removed.len(),
                bytes_before = report.bytes_before,
                bytes_after = report.bytes_after,
                "image store: garbage collected"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("image store: garbage collection failed: {e}"),
        }
    }

    /// A lease on the image of a container found again after a restart.
    pub fn lease(&self, manifest: &Digest) -> Lease {
        self.leases.take(manifest).0
    }

    /// The image `r` in the store: imported from its layout or pulled
    /// from its registry unless the store has it.
    fn find(
        &self,
        r: &ImageRef,
        credentials: Option<&Credentials>,
        progress: Option<&Progress>,
    ) -> Result<Image, String> {
        match &r.source {
            Source::Layout(name) => {
                let layouts = self.layouts.as_ref().ok_or("this agent has no --image-layouts")?;
                let layout = layouts.join(name);
                if !layout.is_dir() {
                    return Err(format!("no such layout in {}", layouts.display()));
                }
                let reference = Reference::parse(r.selector.lookup()).map_err(|e| e.to_string())?;
                self.store.import_layout(&layout, &reference).map_err(|e| e.to_string())
            }
            Source::Registry { host, repository } => {
                let remote = RemoteImage {
                    host,
                    repository,
                    lookup: r.selector.lookup(),
                    digest: r.selector.digest(),
                    credentials,
                };
                let on_fetch = |layer: &LayerDescriptor, received: u64| {
                    if let Some(progress) = progress {
                        let (prefix, digest, size) = (r.pull_message_prefix(), &layer.digest, bytes(layer.size));
                        let _ = progress.send(match received {
                            0 => format!("{prefix}layer {digest} ({size})"),
                            n => format!("{prefix}layer {digest}: {} of {size}", bytes(n)),
                        });
                    }
                };
                self.puller
                    .pull_reporting(&self.store, &remote, &on_fetch)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// The task's command run inside the image: a shell command with the
/// image's `/bin/sh`, a program looked up in the image's PATH, or with
/// no command the image's entrypoint and then the task's arguments, or
/// else the image's `Cmd` (Docker's rule).
fn argv(image: &Image, command: &CommandSpec) -> Result<Vec<String>, String> {
    let argv = match command {
        CommandSpec::Shell(script) => vec!["/bin/sh".into(), "-c".into(), script.clone()],
        CommandSpec::Exec { program, args } => std::iter::once(program.clone()).chain(args.iter().cloned()).collect(),
        CommandSpec::FromImage { args } => {
            let tail = if args.is_empty() { &image.config.cmd } else { args };
            image.config.entrypoint.iter().chain(tail).cloned().collect()
        }
    };
    match argv.first() {
        Some(p) if !p.is_empty() => Ok(argv),
        _ => Err("the task has no command and the image no entrypoint or cmd".into()),
    }
}

/// The image's `Env`, with the task's variables winning.
fn env(image: &Image, task_env: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = image
        .config
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| !task_env.iter().any(|(t, _)| t == k))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if !env.iter().chain(task_env).any(|(k, _)| k == "PATH") {
        env.push((
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ));
    }
    env.extend(task_env.iter().cloned());
    env
}

/// The image's `User` (`name`, `uid`, `name:group` or `uid:gid`, names
/// from the image's own `/etc/passwd` and `/etc/group`). Root, or no
/// user, leaves the choice to the agent (its task user): an image cannot
/// make a task root.
fn image_user(image: &Image, layers: &[PathBuf]) -> Result<Option<(u32, u32)>, String> {
    let spec = image.config.user.trim();
    if spec.is_empty() {
        return Ok(None);
    }
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = image_file(layers, "etc/passwd");
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (
            uid,
            lookup(passwd.as_deref(), |f| f.get(2) == Some(&user)).and_then(|f| num(f.get(3))),
        ),
        Err(_) => {
            let fields = lookup(passwd.as_deref(), |f| f.first() == Some(&user))
                .ok_or_else(|| format!("user {user:?} is not in the image's /etc/passwd"))?;
            let uid = num(fields.get(2)).ok_or_else(|| format!("bad /etc/passwd entry for {user:?}"))?;
            (uid, num(fields.get(3)))
        }
    };
    let gid = match group {
        None => primary.unwrap_or(uid),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = image_file(layers, "etc/group");
                lookup(groups.as_deref(), |f| f.first() == Some(&g))
                    .and_then(|f| num(f.get(2)))
                    .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?
            }
        },
    };
    Ok((uid != 0).then_some((uid, gid)))
}

fn num(field: Option<&&str>) -> Option<u32> {
    field.and_then(|f| f.parse().ok())
}

/// The fields of the first line of a passwd-style file that `matches`.
fn lookup<'a>(file: Option<&'a str>, matches: impl Fn(&[&'a str]) -> bool) -> Option<Vec<&'a str>> {
    file?
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| matches(f))
}

/// A small text file of the image as its root shows it: from the topmost
/// layer that has it, unless a layer above deleted it (a whiteout: a
/// character device) or its directory (an opaque one is not looked
/// through; a rare case for `/etc`, read as "absent").
fn image_file(layers: &[PathBuf], rel: &str) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    for layer in layers.iter().rev() {
        let path = layer.join(rel);
        match path.symlink_metadata() {
            Ok(m) if m.file_type().is_char_device() => return None,
            Ok(m) if m.is_file() && m.len() <= 1 << 20 => return std::fs::read_to_string(&path).ok(),
            Ok(_) => return None,
            Err(_) => {
                let opaque = path
                    .parent()
                    .and_then(|d| xattr::get(d, "trusted.overlay.opaque").ok().flatten())
                    .is_some_and(|v| v == b"y");
                if opaque {
                    return None;
                }
            }
        }
    }
    None
}
/// A size as people read it: `512 B`, `12.3 kB`, `50.0 MB` (powers of 1000).
fn bytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.1} GB", n as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_people_write_them() {
        let got: Vec<String> = [0, 512, 12_345, 50_000_000, 3_200_000_000].map(super::bytes).into();
        assert_eq!(got, ["0 B", "512 B", "12.3 kB", "50.0 MB", "3.2 GB"]);
    }
}

/// Makes `layers` usable by an overlay mounted in a user namespace,
/// which reads only `user.overlay.*` xattrs: layers unpacked by an
/// agent from before images ran in user namespaces made their opaque
/// directories with the `trusted.` one only. Each layer is walked once
/// and marked (then one `getxattr` a launch).
pub fn for_user_namespaces(layers: &[PathBuf]) -> Result<(), ContainerError> {
    for layer in layers {
        copy_opaque_xattrs(layer).map_err(|e| {
            ContainerError::Image(format!(
                "cannot mark the opaque directories of {} for user namespaces: {e}",
                layer.display()
            ))
        })?;
    }
    Ok(())
}

/// Marks a layer whose opaque directories all carry `user.overlay.opaque`
/// (on its root: a layer is walked once, not at every agent start).
const USER_XATTRS_DONE: &str = "user.mezzo.user-xattrs";

/// Sets `user.overlay.opaque` on every directory under `dir` (itself
/// included) that has `trusted.overlay.opaque`, then marks `dir`; links
/// are not followed. A file system without `user.` xattrs fails here.
fn copy_opaque_xattrs(dir: &Path) -> std::io::Result<()> {
    if xattr::get(dir, USER_XATTRS_DONE)?.is_some() {
        return Ok(());
    }
    let [trusted, user] = crate::images::OPAQUE_XATTRS;
    let root = dir;
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        if xattr::get(&dir, trusted)?.is_some_and(|v| v == b"y") && xattr::get(&dir, user)?.is_none() {
            xattr::set(&dir, user, b"y")?;
        }
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    xattr::set(root, USER_XATTRS_DONE, b"1")
}

#[cfg(test)]
mod user_xattr_tests {
    /// A layer unpacked before images ran in user namespaces has only the
    /// `trusted.` opaque xattr: the walk adds the `user.` one where (and
    /// only where) it is, without following links.
    #[test]
    fn opaque_directories_get_the_user_xattr_too() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: trusted xattrs need root");
            return;
        }
        let layer = tempfile::tempdir().expect("tempdir");
        let (opaque, plain) = (layer.path().join("a/opaque"), layer.path().join("a/plain"));
        std::fs::create_dir_all(&opaque).expect("mkdir");
        std::fs::create_dir_all(&plain).expect("mkdir");
        if xattr::set(&opaque, "trusted.overlay.opaque", b"y").is_err()
            || xattr::set(&plain, "user.probe", b"y")
                .and_then(|()| xattr::remove(&plain, "user.probe"))
                .is_err()
        {
            eprintln!("skipped: this file system takes no trusted or no user xattrs");
            return;
        }
        let outside = tempfile::tempdir().expect("tempdir");
        xattr::set(outside.path(), "trusted.overlay.opaque", b"y").expect("xattr");
        std::os::unix::fs::symlink(outside.path(), layer.path().join("link")).expect("symlink");
        super::copy_opaque_xattrs(layer.path()).expect("walk");
        let user = |p: &std::path::Path| xattr::get(p, "user.overlay.opaque").expect("get");
        assert_eq!(user(&opaque), Some(b"y".to_vec()));
        assert_eq!(user(&plain), None);
        assert_eq!(user(outside.path()), None, "followed a link");
        // Marked: a second walk (another agent start) reads one xattr.
        assert!(user(layer.path()).is_none());
        assert!(
            xattr::get(layer.path(), super::USER_XATTRS_DONE)
                .expect("get")
                .is_some()
        );
        xattr::remove(&opaque, "user.overlay.opaque").expect("remove");
        super::copy_opaque_xattrs(layer.path()).expect("walk");
        assert_eq!(user(&opaque), None, "walked again");
    }
}
