//! The file system a task sees (its "view"), built by the container's init
//! in its own mount namespace just before the task starts:
//!
//! ```text
//! /                 the host's root, read-only, nosuid, nodev (every mount under it too)
//! /proc             this pid namespace's proc; kernel-internal files masked,
//!                   /proc/sys, sysrq-trigger, irq, bus and fs read-only
//! /sys              read-only; firmware, powercap and the cgroup mounts masked
//! /dev              a private tmpfs: null, zero, full, random, urandom, tty,
//!                   a private pts instance, shm and mqueue (the devices
//!                   cgroup refuses any other device anyway)
//! /tmp              a private tmpfs (charged to the task's memory cgroup)
//! /run, hidden dirs empty and read-only (the agent's work and runtime dirs:
//!                   other tasks' sandboxes and checkpoints; host sockets)
//! <host paths>      directories the operator shares (`--host-paths`)
//! <sandbox>         the task's own sandbox, read-write, at its host path
//! <mounts>          the volumes the task mounts, beneath its sandbox or
//!                   (with an image) anywhere in its root
//! ```
//!
//! The same contract as crun's and runc's default spec (masked and
//! read-only paths, a minimal `/dev`), with the host's root in place of an
//! image. Everything is mounted in the container's namespace, which is
//! private (`MS_REC|MS_PRIVATE`) before the first mount, so nothing reaches
//! the host's mount table.
//!
//! In a user namespace (`mezzo agent --user-namespaces`, see
//! `super::userns`) the init is root of that namespace only: it cannot
//! `mknod`, so the devices are bind mounts of the host's (as runc does
//! rootless); and the kernel mounts a new `/proc` only where a proc is
//! already fully visible and no less writable, so the host's proc under
//! the new one is made writable again first (it stays covered).

// `open_tree`, `move_mount` and `mount_setattr` are raw system calls (nix
// wraps none of them); each `unsafe` block below says why it is sound.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::libc;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, makedev, mknod, umask};
use serde::{Deserialize, Serialize};

/// What the agent asks for; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// An empty directory the new root is mounted on, one per agent: each
    /// container mounts it in its own namespace.
    pub mountpoint: PathBuf,
    /// Host directories covered by an empty read-only tmpfs (the agent's
    /// work and runtime dirs). Absolute, without symbolic links.
    pub hide: Vec<PathBuf>,
    /// Host directories the operator shares with every task, at the same
    /// path (`mezzo agent --host-paths`).
    #[serde(default)]
    pub host_paths: Vec<HostPath>,
    /// The task's root from an image instead of the host's.
    #[serde(default)]
    pub image: Option<ImageRoot>,
    /// The directories this task mounts (`ContainerInfo.mounts`).
    #[serde(default)]
    pub mounts: Vec<super::TaskMount>,
}

/// Where a task with an image finds its sandbox (`MEZZO_SANDBOX`): its
/// host path means nothing inside an image.
pub const SANDBOX_IN_IMAGE: &str = "/mnt/mezzo/sandbox";

/// Files of the host every image task sees read-only, so that names
/// resolve as on the host (tasks share its network).
const HOST_FILES: [&str; 2] = ["/etc/resolv.conf", "/etc/hosts"];

/// An image's root: an overlay of its unpacked layers (read-only, shared
/// by every task of the image) under a writable directory of the
/// container's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRoot {
    /// Unpacked layers, the base layer first (the manifest's order).
    pub layers: Vec<PathBuf>,
    /// Empty directories of this container on one file system: the
    /// task's changes to its root, and overlayfs' scratch space.
    pub upper: PathBuf,
    pub work: PathBuf,
}

impl View {
    /// Where the task finds its sandbox inside this view.
    pub fn sandbox_inside<'a>(&self, host_path: &'a Path) -> &'a Path {
        match self.image {
            Some(_) => Path::new(SANDBOX_IN_IMAGE),
            None => host_path,
        }
    }
}

/// Builds (or completes) the scaffold layer in `dir`: the mount points an
/// image root needs (`/proc`, `/dev`, `/sys`, `/tmp`, the host files, the
/// sandbox and the shared host paths), laid over every image as its
/// topmost read-only layer. Without it each launch made them in the
/// container's upper dir, copying their parents up (`/etc`, `/mnt`), on
/// the launch's path. Merged directories take the scaffold's attributes:
/// 0755 and root's, as in every image (`/tmp` 1777).
pub fn build_scaffold(dir: &Path, host_paths: &[HostPath]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let mkdir = |rel: &Path| {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir.join(rel.strip_prefix("/").unwrap_or(rel)))
    };
    mkdir(Path::new("/"))?;
    for d in ["/proc", "/dev", "/sys", "/tmp", SANDBOX_IN_IMAGE] {
        mkdir(Path::new(d))?;
    }
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    let files = HOST_FILES.iter().map(Path::new);
    let shared = host_paths.iter().map(|h| h.path.as_path());
    for path in files.chain(shared) {
        let inside = dir.join(path.strip_prefix("/").unwrap_or(path));
        if is_dir(path) {
            mkdir(path)?;
        } else if !inside.exists() {
            if let Some(parent) = path.parent() {
                mkdir(parent)?;
            }
            std::fs::File::create(&inside)?;
        }
    }
    Ok(())
}

/// A host directory shown to tasks; read-only unless `writable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPath {
    pub path: PathBuf,
    pub writable: bool,
}

/// A step of [`enter`] that failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the task's file system: {step} {}: {source}", path.display())]
pub struct ViewError {
    pub step: &'static str,
    pub path: PathBuf,
    pub source: Errno,
}

/// Files whose contents say too much about the host (crun's and runc's list).
const MASKED_FILES: [&str; 6] = [
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
];
/// Directories replaced by an empty read-only tmpfs.
const MASKED_DIRS: [&str; 6] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/sys/fs/cgroup",
];
/// Parts of the fresh proc that stay visible but read-only.
const READ_ONLY: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];
/// Character devices of the private `/dev`: the devices cgroup's allowlist
/// (`crate::cgroups`) without the pts ones, which devpts provides.
const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];
const DEV_LINKS: [(&str, &str); 5] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];
/// The `tty` group, owner of pts devices (Debian's and every distribution's gid 5).
const TTY_GID: u32 = 5;

const HARDENED: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
const PROC_FLAGS: MsFlags = HARDENED.union(MsFlags::MS_NOEXEC);

/// The view's mount point, opened while the init is still host root: as
/// root of a user namespace it may not look it up (the agent's runtime
/// dir is private). With an image in a user namespace, also the image's
/// directories, for the same reason.
pub struct Mountpoint {
    fd: OwnedFd,
    image: Option<ImageDirs>,
}

/// An image's directories as a container in a user namespace mounts them:
/// its layers (id-mapped, the base first), upper and work dirs, each by a
/// descriptor (`/proc/self/fd/N` in the overlay's options).
struct ImageDirs {
    lowers: Vec<OwnedFd>,
    upper: OwnedFd,
    work: OwnedFd,
}

/// Detached, id-mapped copies of an image's layers, the base first, made
/// by the supervisor (host root) for a container in a user namespace: a
/// file a layer has as host uid N is uid N in the container
/// (`idmapped_layers`).
pub struct IdmappedLayers(Vec<OwnedFd>);

/// Copies of `layers` mapped as the user namespace `userns` maps ids:
/// `open_tree(OPEN_TREE_CLONE)` and `mount_setattr(MOUNT_ATTR_IDMAP)`,
/// which need `CAP_SYS_ADMIN` in the host's user namespace.
pub fn idmapped_layers(layers: &[PathBuf], userns: &OwnedFd) -> Result<IdmappedLayers, ViewError> {
    use std::os::fd::AsRawFd;
    layers
        .iter()
        .map(|layer| {
            let tree = open_tree(layer, false)?;
            // Read-only too: overlayfs never writes a lower layer, and nothing
            // else should write the store's through this mount.
            let attrs =
                libc::MOUNT_ATTR_IDMAP | libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
            set_mount_attr(&tree, layer, attrs, false, userns.as_raw_fd() as u64)?;
            Ok(tree)
        })
        .collect::<Result<_, _>>()
        .map(IdmappedLayers)
}

/// An `O_PATH` descriptor of the directory `path`.
fn open_path(path: &Path, step: &'static str) -> Result<OwnedFd, ViewError> {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(failed(step, path))
}

impl Mountpoint {
    /// Call after `unshare(CLONE_NEWNS)`: the view is mounted in that
    /// namespace, and so are `idmapped` (an image's layers for a user
    /// namespace), each over its layer's own path.
    pub fn open(view: &View, idmapped: Option<IdmappedLayers>) -> Result<Mountpoint, ViewError> {
        let fd = open_path(&view.mountpoint, "opening the mount point")?;
        let image = match (&view.image, idmapped) {
            (Some(image), Some(IdmappedLayers(trees))) => {
                if trees.len() != image.layers.len() {
                    return Err(failed("mapping the layers of", &view.mountpoint)(Errno::EINVAL));
                }
                let mut lowers = Vec::with_capacity(trees.len());
                for (tree, layer) in trees.iter().zip(&image.layers) {
                    attach(tree, MountTarget::Path(layer), layer)?;
                    lowers.push(open_path(layer, "opening the layer")?);
                }
                Some(ImageDirs {
                    lowers,
                    upper: open_path(&image.upper, "opening the upper dir")?,
                    work: open_path(&image.work, "opening the work dir")?,
                })
            }
            _ => None,
        };
        Ok(Mountpoint { fd, image })
    }
}

/// Builds the view and makes it this process's root. Call in the init,
/// single-threaded, after `unshare(CLONE_NEWNS)` and before the task's
/// `/proc` is needed: it mounts that `/proc` itself. Paths the init still
/// needs outside the view (its run dir) must be opened before. `userns`:
/// the init is root of its own user namespace (see the module docs).
pub fn enter(view: &View, sandbox: &Path, mountpoint: Mountpoint, userns: bool) -> Result<(), ViewError> {
    // Taken from the host's tree before anything covers it, attached
    // where they belong once the task's root is this process's.
    let mut binds = vec![Bind::take(sandbox, view.sandbox_inside(sandbox), true, false)?];
    for host in &view.host_paths {
        binds.push(Bind::take(&host.path, &host.path, host.writable, true)?);
    }
    // Volumes live under the work dir, hidden below like the sandbox.
    let mounts = view
        .mounts
        .iter()
        .map(|m| Bind::take(&m.source, &m.target, m.writable, true))
        .collect::<Result<Vec<_>, _>>()?;
    let devices = if userns {
        DEVICES
            .iter()
            .map(|(name, ..)| Bind::device(&Path::new("/dev").join(name)))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };
    let mut proc_mounted = false;
    let sys = match &view.image {
        None => {
            let root = open_tree(Path::new("/"), true)?;
            let attrs = libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
            set_attr(&root, Path::new("/"), attrs, true)?;
            attach(&root, MountTarget::Fd(&mountpoint.fd), &view.mountpoint)?;
            // The attached tree's root: the mount point itself is covered.
            nix::unistd::fchdir(&root).map_err(failed("entering", &view.mountpoint))?;
            None
        }
        Some(image) => {
            for file in HOST_FILES.iter().map(Path::new).filter(|f| f.exists()) {
                binds.push(Bind::take(file, file, false, false)?);
            }
            let sys = Bind::take(Path::new("/sys"), Path::new("/sys"), false, true)?;
            match &mountpoint.image {
                Some(dirs) => {
                    let root = overlay_of(dirs, &view.mountpoint)?;
                    attach(&root, MountTarget::Fd(&mountpoint.fd), &view.mountpoint)?;
                    nix::unistd::fchdir(&root).map_err(failed("entering", &view.mountpoint))?;
                    // In a user namespace a new proc needs one as visible
                    // in the mount namespace (`mount_too_revealing`): the
                    // host's, which goes with the pivot.
                    mount_fs("proc", "proc", PROC_FLAGS, None)?;
                    proc_mounted = true;
                }
                None => {
                    mount_overlay(image, &view.mountpoint)?;
                    nix::unistd::chdir(&view.mountpoint).map_err(failed("entering", &view.mountpoint))?;
                }
            }
            Some(sys)
        }
    };
    pivot(&view.mountpoint)?;

    make_dir(Path::new("/proc"))?;
    if userns && view.image.is_none() {
        // The host's proc, read-only in the copy of its tree: a new proc
        // may not be more writable than the visible one.
        remount(
            Path::new("/proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        )?;
    }
    if !proc_mounted {
        mount_fs("proc", "/proc", PROC_FLAGS, None)?;
    }
    if let Some(sys) = sys {
        sys.attach()?;
    }
    make_dir(Path::new("/dev"))?;
    private_dev(devices)?;
    make_dir(Path::new("/tmp"))?;
    mount_fs("tmpfs", "/tmp", HARDENED, Some("mode=1777"))?;
    for file in MASKED_FILES.iter().filter(|f| Path::new(f).exists()) {
        bind(Path::new("/dev/null"), Path::new(file), MsFlags::empty())?;
    }
    for dir in MASKED_DIRS.iter().filter(|d| is_dir(Path::new(d))) {
        mount_fs("tmpfs", dir, HARDENED | MsFlags::MS_RDONLY, Some("size=0,mode=555"))?;
    }
    for path in READ_ONLY.iter().filter(|p| Path::new(p).exists()) {
        bind(
            Path::new(path),
            Path::new(path),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        )?;
        remount_read_only(
            Path::new(path),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        )?;
    }
    // Covered writable first: a mount point may have to be made inside
    // one of them. (An image has none of the host's directories.)
    let mut hidden = Vec::new();
    if view.image.is_none() {
        for dir in view.hide.iter().map(PathBuf::as_path).chain([Path::new("/run")]) {
            if is_dir(dir) && !hidden.iter().any(|h: &&Path| dir.starts_with(h)) {
                mount_fs("tmpfs", dir, HARDENED, Some("mode=755"))?;
                hidden.push(dir);
            }
        }
    }
    for b in binds {
        b.attach()?;
    }
    // Last, so that the sandbox is there first and nothing else makes its
    // mount point in a volume; shallowest first, so that one mounted
    // beneath another is seen.
    let mut mounts: Vec<_> = mounts
        .into_iter()
        .map(|m| match m.target.is_absolute() {
            true => (PathBuf::from("/"), m),
            false => (view.sandbox_inside(sandbox).to_owned(), m),
        })
        .collect();
    mounts.sort_by_key(|(base, m)| base.join(&m.target).components().count());
    for (base, m) in mounts {
        m.attach_beneath(&base)?;
    }
    for dir in hidden {
        remount_read_only(dir, HARDENED)?;
    }
    Ok(())
}

/// A detached copy of a host file or directory, to attach at `target` in
/// the task's root.
struct Bind {
    tree: OwnedFd,
    target: PathBuf,
    is_dir: bool,
}

impl Bind {
    fn take(source: &Path, target: &Path, writable: bool, recursive: bool) -> Result<Bind, ViewError> {
        let mut attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
        if !writable {
            attrs |= libc::MOUNT_ATTR_RDONLY;
        }
        Bind::with_attrs(source, target, attrs, recursive)
    }

    /// The host's device node `path`, for the same path in the private
    /// `/dev` of a user namespace, where `mknod` is refused.
    fn device(path: &Path) -> Result<Bind, ViewError> {
        Bind::with_attrs(path, path, libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOEXEC, false)
    }

    fn with_attrs(source: &Path, target: &Path, attrs: u64, recursive: bool) -> Result<Bind, ViewError> {
        let tree = open_tree(source, recursive)?;
        set_attr(&tree, source, attrs, recursive)?;
        Ok(Bind {
            tree,
            target: target.to_owned(),
            is_dir: is_dir(source),
        })
    }

    /// Attaches the copy, making its mount point (in a writable layer:
    /// a private tmpfs, a hidden dir's cover, or an image's upper dir).
    fn attach(self) -> Result<(), ViewError> {
        if self.is_dir {
            make_dir(&self.target)?;
        } else if !self.target.exists() {
            if let Some(parent) = self.target.parent() {
                make_dir(parent)?;
            }
            std::fs::File::create(&self.target)
                .map_err(|e| failed("making the mount point", &self.target)(io_errno(e)))?;
        }
        attach(&self.tree, MountTarget::Path(&self.target), &self.target)
    }

    /// Attaches the copy at its target beneath `base`, making the missing
    /// directories without following a symlink: what leads there is the
    /// task's (its artifacts, its image), and must not point the agent's
    /// mkdir at a writable host path.
    fn attach_beneath(self, base: &Path) -> Result<(), ViewError> {
        let relative = self.target.strip_prefix("/").unwrap_or(&self.target);
        let target = super::make_dirs(base, relative, 0o755, None)
            .map_err(|e| failed("making the mount point", &base.join(relative))(io_errno(e)))?;
        attach(&self.tree, MountTarget::Path(&target), &target)
    }
}

fn make_dir(path: &Path) -> Result<(), ViewError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(path)
        .map_err(|e| failed("making the mount point", path)(io_errno(e)))
}

/// The image's layers under the container's upper dir, on `target`.
fn mount_overlay(image: &ImageRoot, target: &Path) -> Result<(), ViewError> {
    // Overlay's option syntax has no escapes worth trusting: the store's
    // paths are plain, anything else is refused.
    let plain = |p: &Path| {
        let ok = p.is_absolute() && !p.as_os_str().as_bytes().iter().any(|b| b",:\\\0".contains(b));
        if ok {
            Ok(p.display().to_string())
        } else {
            Err(failed("using as an overlay dir", p)(Errno::EINVAL))
        }
    };
    if image.layers.is_empty() {
        return Err(failed("mounting an image without layers on", target)(Errno::EINVAL));
    }
    // lowerdir lists the topmost layer first.
    let lower = image
        .layers
        .iter()
        .rev()
        .map(|l| plain(l))
        .collect::<Result<Vec<_>, _>>()?;
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        plain(&image.upper)?,
        plain(&image.work)?
    );
    // `volatile` (Linux 5.10+): the upper dir is thrown away with the
    // container, so overlayfs need not sync it (a syncfs of the agent's
    // file system at every unmount, and at every fsync in the task).
    let mount_with = |options: &str| mount(Some("overlay"), target, Some("overlay"), HARDENED, Some(options));
    mount_with(&format!("{options},volatile"))
        .or_else(|_| mount_with(&options))
        .map_err(failed("mounting the image on", target))
}

/// The overlay of an image for a container in a user namespace, as a
/// detached mount (`fsopen`, `fsconfig`, `fsmount`: the new mount API,
/// which nix does not wrap): its directories by descriptor, and the
/// `user.overlay.*` xattrs (`userxattr`), the only ones overlayfs reads
/// for a mount made in a user namespace (`unpack.rs` writes both kinds).
fn overlay_of(dirs: &ImageDirs, name: &Path) -> Result<OwnedFd, ViewError> {
    use std::os::fd::AsRawFd;
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_FLAG: libc::c_uint = 0;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    let fail = |step: &'static str| failed(step, name);
    // SAFETY: a NUL-terminated name; the kernel returns a new descriptor or -1.
    let fs = Errno::result(unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) })
        .map_err(fail("opening an overlay for"))?;
    // SAFETY: the kernel just returned this descriptor to us.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as RawFd) };
    let set = |cmd: libc::c_uint, key: &str, value: Option<&str>| -> Result<(), Errno> {
        let key = CString::new(key).map_err(|_| Errno::EINVAL)?;
        let value = value.map(CString::new).transpose().map_err(|_| Errno::EINVAL)?;
        let value_ptr = value.as_ref().map_or(std::ptr::null(), |v| v.as_ptr());
        // SAFETY: an open fs context, NUL-terminated strings (or null)
        // that outlive the call.
        let rc = unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, key.as_ptr(), value_ptr, 0) };
        Errno::result(rc).map(drop)
    };
    let by_fd = |fd: &OwnedFd| format!("/proc/self/fd/{}", fd.as_raw_fd());
    // lowerdir lists the topmost layer first.
    let lower = dirs.lowers.iter().rev().map(by_fd).collect::<Vec<_>>().join(":");
    set(FSCONFIG_SET_STRING, "lowerdir", Some(&lower)).map_err(fail("setting the layers of"))?;
    set(FSCONFIG_SET_STRING, "upperdir", Some(&by_fd(&dirs.upper))).map_err(fail("setting the upper dir of"))?;
    set(FSCONFIG_SET_STRING, "workdir", Some(&by_fd(&dirs.work))).map_err(fail("setting the work dir of"))?;
    set(FSCONFIG_SET_FLAG, "userxattr", None).map_err(fail("setting userxattr on"))?;
    // As `mount_overlay`: no sync of a root thrown away with the container
    // (Linux 5.10+; without it the mount is only slower).
    let _ = set(FSCONFIG_SET_FLAG, "volatile", None);
    // SAFETY: an open fs context; the command takes a null key and value.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    };
    Errno::result(rc).map_err(fail("mounting the image on"))?;
    let attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    // SAFETY: an open, created fs context; integer flags.
    let mnt = Errno::result(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })
        .map_err(fail("mounting the image on"))?;
    // SAFETY: the kernel just returned this descriptor to us.
    let mnt = unsafe { OwnedFd::from_raw_fd(mnt as RawFd) };
    // The overlay holds private copies of its layers: the id-mapped ones
    // attached over the store's paths go, so that no bind of a host path
    // that holds the store (`--host-paths`) carries them into the task.
    for lower in &dirs.lowers {
        umount2(by_fd(lower).as_str(), MntFlags::MNT_DETACH).map_err(fail("detaching a mapped layer of"))?;
    }
    Ok(mnt)
}

/// `pivot_root` into the working directory, the new root mounted on
/// `new_root`, and drop the old root, runc's way: no directory for the
/// old root is needed in a read-only new one.
fn pivot(new_root: &Path) -> Result<(), ViewError> {
    nix::unistd::pivot_root(".", ".").map_err(failed("pivot_root to", new_root))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(failed("detaching the old root from", new_root))?;
    nix::unistd::chdir("/").map_err(failed("entering", Path::new("/")))
}

/// `/dev` with the allowed devices, a private pts instance, shm and
/// mqueue. The devices are made with `mknod`, or are `host_devices` (the
/// host's, in a user namespace) when there are any.
fn private_dev(host_devices: Vec<Bind>) -> Result<(), ViewError> {
    let dev = Path::new("/dev");
    mount_fs(
        "tmpfs",
        "/dev",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=64k"),
    )?;
    let old_mask = umask(Mode::empty());
    let made = (|| {
        for (name, major, minor) in DEVICES.into_iter().filter(|_| host_devices.is_empty()) {
            let path = dev.join(name);
            mknod(
                &path,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                makedev(major, minor),
            )
            .map_err(failed("mknod", &path))?;
        }
        for (name, target) in DEV_LINKS {
            let path = dev.join(name);
            std::os::unix::fs::symlink(target, &path).map_err(|e| failed("symlink", &path)(io_errno(e)))?;
        }
        for name in ["pts", "shm", "mqueue"] {
            let path = dev.join(name);
            nix::unistd::mkdir(&path, Mode::from_bits_truncate(0o755)).map_err(failed("mkdir", &path))?;
        }
        Ok(())
    })();
    umask(old_mask);
    made?;
    for device in host_devices {
        device.attach()?;
    }
    mount_fs(
        "devpts",
        "/dev/pts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(&format!("newinstance,ptmxmode=0666,mode=0620,gid={TTY_GID}")),
    )?;
    mount_fs("tmpfs", "/dev/shm", HARDENED | MsFlags::MS_NOEXEC, Some("mode=1777"))?;
    mount_fs("mqueue", "/dev/mqueue", HARDENED | MsFlags::MS_NOEXEC, None)
}

fn failed(step: &'static str, path: &Path) -> impl FnOnce(Errno) -> ViewError {
    let path = path.to_owned();
    move |source| ViewError { step, path, source }
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

fn is_dir(path: &Path) -> bool {
    path.symlink_metadata().is_ok_and(|m| m.is_dir())
}

/// A new instance of `fstype` (which is also its source name) on `target`.
fn mount_fs(fstype: &str, target: impl AsRef<Path>, flags: MsFlags, data: Option<&str>) -> Result<(), ViewError> {
    let target = target.as_ref();
    mount(Some(fstype), target, Some(fstype), flags, data).map_err(failed("mounting", target))
}

fn bind(source: &Path, target: &Path, flags: MsFlags) -> Result<(), ViewError> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | flags,
        None::<&str>,
    )
    .map_err(failed("binding", target))
}

/// Makes the mount at `target` read-only, keeping `flags` (a bind remount
/// sets every per-mount flag at once).
fn remount_read_only(target: &Path, flags: MsFlags) -> Result<(), ViewError> {
    remount(target, MsFlags::MS_RDONLY | flags)
}

/// Sets the per-mount flags of the mount at `target` to `flags`.
fn remount(target: &Path, flags: MsFlags) -> Result<(), ViewError> {
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags,
        None::<&str>,
    )
    .map_err(failed("setting the mount flags of", target))
}

fn c_path(path: &Path) -> Result<CString, ViewError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| failed("naming", path)(Errno::EINVAL))
}

/// A detached copy of the mount at `path` (with every mount under it when
/// `recursive`): `open_tree(OPEN_TREE_CLONE)`, which nix does not wrap.
fn open_tree(path: &Path, recursive: bool) -> Result<OwnedFd, ViewError> {
    let c = c_path(path)?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `c` is a NUL-terminated path that outlives the call; the
    // kernel returns a new file descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    let fd = Errno::result(fd).map_err(failed("copying the mount of", path))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `mount_setattr` on a detached tree: sets `attrs` on its top mount, or
/// on all of them when `recursive`.
fn set_attr(tree: &OwnedFd, path: &Path, attrs: u64, recursive: bool) -> Result<(), ViewError> {
    set_mount_attr(tree, path, attrs, recursive, 0)
}

/// [`set_attr`], with the user namespace `MOUNT_ATTR_IDMAP` maps by.
fn set_mount_attr(tree: &OwnedFd, path: &Path, attrs: u64, recursive: bool, userns_fd: u64) -> Result<(), ViewError> {
    use std::os::fd::AsRawFd;
    let attr = libc::mount_attr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd,
    };
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: `tree` is an open mount fd, the path is an empty C string,
    // and `attr` is a valid `mount_attr` of the size passed, read only.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    Errno::result(rc)
        .map(drop)
        .map_err(failed("setting the mount flags of", path))
}

/// Where [`attach`] mounts a tree: a path, or an open directory.
enum MountTarget<'a> {
    Path(&'a Path),
    Fd(&'a OwnedFd),
}

/// Attaches a detached tree at `target` (`name` names it in errors).
fn attach(tree: &OwnedFd, target: MountTarget<'_>, name: &Path) -> Result<(), ViewError> {
    use std::os::fd::AsRawFd;
    let (dir, path, flags) = match target {
        MountTarget::Path(path) => (libc::AT_FDCWD, c_path(path)?, libc::MOVE_MOUNT_F_EMPTY_PATH),
        MountTarget::Fd(fd) => (
            fd.as_raw_fd(),
            CString::default(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        ),
    };
    // SAFETY: `tree` and `dir` are open descriptors (or AT_FDCWD), both
    // paths are NUL-terminated C strings that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            dir,
            path.as_ptr(),
            flags,
        )
    };
    Errno::result(rc).map(drop).map_err(failed("mounting on", name))
}
