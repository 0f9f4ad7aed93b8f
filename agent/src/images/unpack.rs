//! Unpacking one layer's tar stream into a fresh directory in overlayfs
//! lower-dir format, against hostile archives.
//!
//! The `tar` crate only parses; its `unpack` functions are never used
//! (their escape history: RUSTSEC-2018-0002, 2021-0080, 2026-0067). Every
//! entry is placed by the code below: its parent directory is opened from
//! the layer root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)`, and the entry is created on that directory fd
//! without following anything. Names are normalised first: leading `/`
//! and `./` are dropped (an absolute name lands inside the layer, as with
//! Docker), `..` components, NUL bytes and empty names are refused.
//!
//! Overlay format: a whiteout `.wh.NAME` becomes a 0/0 character device
//! NAME, `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.
//! Device nodes are refused (the container's `/dev` is its own), and so
//! are GNU sparse files; archive xattrs are ignored. The uncompressed
//! bytes and the entries are capped ([`Limits`]), against decompression
//! bombs. The layer is unpacked into `<dest>.tmp-<random>` and only
//! renamed into place by [`StagedLayer::commit`], once the caller has
//! checked its digests; anything else removes it.
//!
//! A task's artifact ([`unpack_artifact`], `crate::fetch`) is placed by
//! the same code into a directory of its sandbox, with three differences
//! ([`Placement::Artifact`]): names are plain (no whiteouts, no 0/0
//! devices), everything belongs to the task's user with the set-id and
//! sticky bits dropped, and a symlink's target must stay inside the
//! directory (the task resolves it on the host, not in an image root).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, OpenHow, RenameFlags, ResolveFlag, openat, openat2, renameat2};
use nix::sys::stat::{
    FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstatat, futimens, mkdirat, mknodat,
    utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};
use tar::EntryType;
use xattr::FileExt;

use super::ImageError;
use super::digest::{Digest, DigestReader};

/// Bounds on one layer: a small compressed blob can expand to fill the
/// disk (a decompression bomb) or its inodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Of the uncompressed tar stream.
    pub max_bytes: u64,
    pub max_entries: u64,
    /// Of a whole image: its layers' sizes as its manifest gives them
    /// (compressed), checked before any layer is fetched.
    pub max_image_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bytes: 16 << 30,
            max_entries: 1_000_000,
            max_image_bytes: u64::MAX,
        }
    }
}

/// How entries are placed: as an image layer, or as a task's artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    /// Overlay format, with the archive's owners and modes.
    Layer,
    /// Plain names, owned by `uid`:`gid`, no set-id bits, symlinks inside.
    Artifact { uid: Uid, gid: Gid },
}

impl Placement {
    /// The entry's metadata as placed: an artifact's owner is not the
    /// archive's (which need not even name one).
    fn meta(self, entry: &mut tar::Entry<'_, impl Read>, raw: &[u8]) -> Result<Meta, ImageError> {
        let Placement::Artifact { uid, gid } = self else {
            return meta(entry, raw);
        };
        let header = entry.header();
        Ok(Meta {
            uid,
            gid,
            mode: Mode::from_bits_truncate(header.mode().map_err(ImageError::Archive)? & 0o777),
            mtime: TimeSpec::new(header.mtime().map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX)), 0),
        })
    }
}

/// How a layer blob is compressed, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    /// zstd frames (`tar+zstd` layers, `.tar.zst` artifacts): see
    /// [`super::zstd`].
    Zstd,
}

impl Compression {
    /// `stream` decompressed.
    fn reader<'a>(self, stream: &'a mut dyn Read) -> Result<Box<dyn Read + 'a>, ImageError> {
        Ok(match self {
            Compression::None => Box::new(stream),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
            Compression::Zstd => Box::new(super::zstd::Frames::new(stream).map_err(ImageError::Archive)?),
        })
    }
}

/// A layer unpacked beside its destination, not yet in place. Dropping it
/// removes it.
#[derive(Debug)]
pub struct StagedLayer {
    tmp: PathBuf,
    dest: PathBuf,
    diff_id: Digest,
    size: u64,
    committed: bool,
}

impl StagedLayer {
    /// The sha256 of the uncompressed tar stream, to check against the
    /// config's `rootfs.diff_ids`.
    pub fn diff_id(&self) -> &Digest {
        &self.diff_id
    }

    /// The bytes of regular-file content unpacked.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Renames the layer into place; fails (and removes it) if something
    /// is there already.
    pub fn commit(mut self) -> Result<(), ImageError> {
        renameat2(AT_FDCWD, &self.tmp, AT_FDCWD, &self.dest, RenameFlags::RENAME_NOREPLACE)
            .map_err(ImageError::sys("rename into place", &self.dest))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for StagedLayer {
    fn drop(&mut self) {
        if !self.committed {
            // remove_dir_all does not follow symlinks.
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Unpacks the layer read from `blob` next to `dest`, within `limits`,
/// reading `blob` to its end (so that a digest the caller computes over
/// it covers all of it), and syncs it to disk.
pub fn unpack_layer(
    blob: &mut dyn Read,
    compression: Compression,
    dest: &Path,
    limits: &Limits,
) -> Result<StagedLayer, ImageError> {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let tmp = dest.with_file_name(name);
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&tmp)
        .map_err(ImageError::io("create", &tmp))?;
    let mut staged = StagedLayer {
        tmp,
        dest: dest.to_path_buf(),
        diff_id: Digest::of(b""),
        size: 0,
        committed: false,
    };
    let root = openat(
        AT_FDCWD,
        &staged.tmp,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(ImageError::sys("open", &staged.tmp))?;
    let (diff_id, size) = unpack_tar(&mut compression.reader(&mut *blob)?, &root, limits, Placement::Layer)?;
    io::copy(blob, &mut io::sink()).map_err(ImageError::Archive)?;
    nix::unistd::syncfs(&root).map_err(ImageError::sys("syncfs", &staged.tmp))?;
    staged.diff_id = diff_id;
    staged.size = size;
    Ok(staged)
}

/// Unpacks the tar `archive` (a task's artifact) into the existing
/// directory `dest`, every entry owned by `owner` (the agent's own user
/// when `None`), within `limits`; returns the bytes of content written.
/// Entries that would land outside `dest` are refused as in a layer, and
/// so are symlinks pointing out of it. What was placed before a refusal
/// is left for the caller to remove.
pub fn unpack_artifact(
    archive: &mut dyn Read,
    compression: Compression,
    dest: &Path,
    owner: Option<(u32, u32)>,
    limits: &Limits,
) -> Result<u64, ImageError> {
    let (uid, gid) = owner.map_or_else(
        || (nix::unistd::geteuid(), nix::unistd::getegid()),
        |(u, g)| (Uid::from_raw(u), Gid::from_raw(g)),
    );
    let root = openat(
        AT_FDCWD,
        dest,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(ImageError::sys("open", dest))?;
    let how = Placement::Artifact { uid, gid };
    let (_, size) = unpack_tar(&mut compression.reader(archive)?, &root, limits, how)?;
    Ok(size)
}

/// Places every entry of the tar `stream` beneath `root`; returns the
/// stream's digest (read to its end) and the bytes unpacked.
fn unpack_tar(
    stream: &mut dyn Read,
    root: &OwnedFd,
    limits: &Limits,
    how: Placement,
) -> Result<(Digest, u64), ImageError> {
    let mut reader = DigestReader::new(stream);
    // One byte past the limit, to tell a stream at the limit from one over.
    let result = place_all(&mut (&mut reader).take(limits.max_bytes + 1), root, limits, how);
    if reader.count() > limits.max_bytes {
        return Err(ImageError::LayerTooLarge {
            what: "uncompressed bytes",
            limit: limits.max_bytes,
        });
    }
    let size = result?;
    Ok((reader.finish().0, size))
}

fn place_all(stream: &mut impl Read, root: &OwnedFd, limits: &Limits, how: Placement) -> Result<u64, ImageError> {
    let mut archive = tar::Archive::new(stream);
    let (mut size, mut entries) = (0, 0);
    for entry in archive.entries().map_err(ImageError::Archive)? {
        entries += 1;
        if entries > limits.max_entries {
            return Err(ImageError::LayerTooLarge {
                what: "entries",
                limit: limits.max_entries,
            });
        }
        let mut entry = entry.map_err(ImageError::Archive)?;
        size += place(root, &mut entry, how)?;
    }
    // The end-of-archive blocks and padding count in the diff_id.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(ImageError::Archive)?;
    Ok(size)
}

/// An entry's owner, permissions (with setuid, setgid, sticky) and mtime.
struct Meta {
    uid: Uid,
    gid: Gid,
    mode: Mode,
    mtime: TimeSpec,
}

/// Places one entry; returns the bytes of content written.
fn place(root: &OwnedFd, entry: &mut tar::Entry<'_, impl Read>, how: Placement) -> Result<u64, ImageError> {
    let kind = entry.header().entry_type();
    if kind == EntryType::XGlobalHeader {
        return Ok(0);
    }
    let raw = entry.path_bytes().into_owned();
    let comps = normalize(&raw)?;
    let meta = how.meta(entry, &raw)?;
    let Some((name, parents)) = comps.split_last() else {
        match (kind.is_dir(), how) {
            // `./`: the layer root's own owner and mode.
            (true, Placement::Layer) => return set_dir_meta(root, &meta, &raw).map(|()| 0),
            // An artifact's directory (maybe the sandbox) keeps its own.
            (true, Placement::Artifact { .. }) => return Ok(0),
            (false, _) => return Err(ImageError::hostile(&raw, "empty name")),
        }
    };
    let parent = open_parent(root, parents, &raw, how)?;
    if how == Placement::Layer
        && let Some(hidden) = name.strip_prefix(b".wh.")
    {
        return whiteout(parent, hidden, &raw).map(|()| 0);
    }
    let path = display_path(&raw);
    match kind {
        // Not GNU sparse files: their holes would be written out as zeros,
        // a disk-filling bomb that the stream's size does not bound.
        EntryType::Regular | EntryType::Continuous => {
            clear_slot(&parent, name, false, &raw)?;
            let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let fd = openat(&parent, name.as_slice(), flags, Mode::from_bits_truncate(0o600))
                .map_err(ImageError::sys("create", &path))?;
            let mut file = File::from(fd);
            let written = io::copy(entry, &mut file).map_err(ImageError::io("write", &path))?;
            // chown before chmod: chown clears the setuid and setgid bits.
            fchown(&file, Some(meta.uid), Some(meta.gid)).map_err(ImageError::sys("chown", &path))?;
            fchmod(&file, meta.mode).map_err(ImageError::sys("chmod", &path))?;
            futimens(&file, &meta.mtime, &meta.mtime).map_err(ImageError::sys("set mtime", &path))?;
            Ok(written)
        }
        EntryType::Directory => {
            if !clear_slot(&parent, name, true, &raw)? {
                mkdirat(&parent, name.as_slice(), Mode::from_bits_truncate(0o700))
                    .map_err(ImageError::sys("mkdir", &path))?;
            }
            let dir = open_beneath(&parent, name).map_err(|e| resolve_error(e, &raw))?;
            set_dir_meta(&dir, &meta, &raw).map(|()| 0)
        }
        EntryType::Symlink => {
            // Stored as is: only ever resolved inside the container's root.
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| ImageError::hostile(&raw, "symlink without a target"))?;
            if target.is_empty() || target.contains(&0) {
                return Err(ImageError::hostile(&raw, "empty or NUL symlink target"));
            }
            if how != Placement::Layer && !stays_inside(parents.len(), &target) {
                return Err(ImageError::hostile(&raw, "symlink pointing out of the directory"));
            }
            clear_slot(&parent, name, false, &raw)?;
            symlinkat(target.as_ref(), &parent, name.as_slice()).map_err(ImageError::sys("symlink", &path))?;
            set_meta_at(&parent, name, &meta, &path, false)?;
            Ok(0)
        }
        EntryType::Link => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| ImageError::hostile(&raw, "hard link without a target"))?;
            hard_link(root, &parent, name, &target, &raw).map(|()| 0)
        }
        EntryType::Char if how == Placement::Layer && device_numbers(entry, &raw)? == (0, 0) => {
            // An overlay whiteout already in overlay form.
            clear_slot(&parent, name, false, &raw)?;
            mknodat(&parent, name.as_slice(), SFlag::S_IFCHR, Mode::empty(), 0)
                .map_err(ImageError::sys("mknod", &path))?;
            Ok(0)
        }
        EntryType::Char | EntryType::Block => Err(ImageError::hostile(&raw, "device node")),
        EntryType::Fifo => {
            clear_slot(&parent, name, false, &raw)?;
            mknodat(
                &parent,
                name.as_slice(),
                SFlag::S_IFIFO,
                Mode::from_bits_truncate(0o600),
                0,
            )
            .map_err(ImageError::sys("mkfifo", &path))?;
            set_meta_at(&parent, name, &meta, &path, true)?;
            Ok(0)
        }
        _ => Err(ImageError::hostile(&raw, "unsupported entry type")),
    }
}

/// Whether a symlink `depth` directories below the root, to `target`,
/// stays inside the root: relative, with `..` only at its start and no
/// more of them than its depth. A `..` after a name could climb out of a
/// symlinked directory (`y -> .` then `y/..`); names alone cannot, as each
/// is a real directory or a symlink placed by this same rule.
fn stays_inside(depth: usize, target: &[u8]) -> bool {
    if target.starts_with(b"/") {
        return false;
    }
    let (mut up, mut named) = (0, false);
    for comp in target.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." if named => return false,
            b".." => up += 1,
            _ => named = true,
        }
    }
    up <= depth
}

/// The components of an entry name, leading `/` and `.` dropped; refuses
/// `..` and NUL.
fn normalize(raw: &[u8]) -> Result<Vec<Vec<u8>>, ImageError> {
    if raw.contains(&0) {
        return Err(ImageError::hostile(raw, "NUL in name"));
    }
    let mut comps = Vec::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(ImageError::hostile(raw, "`..` component")),
            _ => comps.push(comp.to_vec()),
        }
    }
    Ok(comps)
}

fn display_path(raw: &[u8]) -> PathBuf {
    PathBuf::from(std::ffi::OsStr::from_bytes(raw))
}

fn meta(entry: &mut tar::Entry<'_, impl Read>, raw: &[u8]) -> Result<Meta, ImageError> {
    // PAX records carry ids too large for the header's octal fields.
    let (mut pax_uid, mut pax_gid) = (None, None);
    if let Ok(Some(pax)) = entry.pax_extensions() {
        for ext in pax.flatten() {
            let value = ext.value().ok().and_then(|v| v.parse::<u64>().ok());
            match ext.key() {
                Ok("uid") => pax_uid = value,
                Ok("gid") => pax_gid = value,
                _ => {}
            }
        }
    }
    let header = entry.header();
    let uid = pax_uid.map_or_else(|| header.uid(), Ok).map_err(ImageError::Archive)?;
    let gid = pax_gid.map_or_else(|| header.gid(), Ok).map_err(ImageError::Archive)?;
    let id = |v: u64| u32::try_from(v).map_err(|_| ImageError::hostile(raw, "owner id out of range"));
    let mtime = i64::try_from(header.mtime().map_err(ImageError::Archive)?).unwrap_or(i64::MAX);
    Ok(Meta {
        uid: Uid::from_raw(id(uid)?),
        gid: Gid::from_raw(id(gid)?),
        mode: Mode::from_bits_truncate(header.mode().map_err(ImageError::Archive)? & 0o7777),
        mtime: TimeSpec::new(mtime, 0),
    })
}

fn device_numbers(entry: &tar::Entry<'_, impl Read>, raw: &[u8]) -> Result<(u32, u32), ImageError> {
    let header = entry.header();
    let bad = |_| ImageError::hostile(raw, "invalid device numbers");
    Ok((
        header.device_major().map_err(bad)?.unwrap_or(0),
        header.device_minor().map_err(bad)?.unwrap_or(0),
    ))
}

/// Opens the directory `path` beneath `dir`, following no symlink (not
/// even the last component: RESOLVE_NO_SYMLINKS covers it, with ELOOP;
/// O_NOFOLLOW would turn that into a less telling ENOTDIR).
pub(crate) fn open_beneath(dir: &impl AsFd, path: &[u8]) -> nix::Result<OwnedFd> {
    open_beneath_with(dir, path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
}

/// Opens `path` beneath `dir` with `flags` (and O_CLOEXEC), following no
/// symlink on the way or at its end (ELOOP or EXDEV) and never leaving
/// `dir` (EXDEV).
pub(crate) fn open_beneath_with(dir: &impl AsFd, path: &[u8], flags: OFlag) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(dir.as_fd(), path, how)
}

/// Why a path could not be opened beneath the root.
fn resolve_error(e: Errno, raw: &[u8]) -> ImageError {
    match e {
        Errno::ELOOP | Errno::EXDEV => ImageError::hostile(raw, "the path goes through a symlink"),
        Errno::ENOTDIR => ImageError::hostile(raw, "a parent is not a directory"),
        e => ImageError::sys("open beneath the layer root", display_path(raw))(e),
    }
}

/// Opens the entry's parent directory, creating missing ones (archives
/// may omit them) with mode 0755 as Docker does (an artifact's owned by
/// its user).
fn open_parent(root: &OwnedFd, parents: &[Vec<u8>], raw: &[u8], how: Placement) -> Result<OwnedFd, ImageError> {
    let dup = |fd: &OwnedFd| fd.try_clone().map_err(ImageError::io("dup", display_path(raw)));
    if parents.is_empty() {
        return dup(root);
    }
    match open_beneath(root, &parents.join(&b'/')) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(resolve_error(e, raw)),
    }
    let mut dir = dup(root)?;
    for comp in parents {
        dir = match open_beneath(&dir, comp) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                match mkdirat(&dir, comp.as_slice(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(ImageError::sys("mkdir a parent of", display_path(raw))(e)),
                }
                let fd = open_beneath(&dir, comp).map_err(|e| resolve_error(e, raw))?;
                if let Placement::Artifact { uid, gid } = how {
                    fchown(&fd, Some(uid), Some(gid))
                        .map_err(ImageError::sys("chown a parent of", display_path(raw)))?;
                }
                fchmod(&fd, Mode::from_bits_truncate(0o755))
                    .map_err(ImageError::sys("chmod a parent of", display_path(raw)))?;
                fd
            }
            Err(e) => return Err(resolve_error(e, raw)),
        };
    }
    Ok(dir)
}

/// The xattrs that make a directory opaque to overlayfs mounted by the
/// host's root and in a user namespace.
pub const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// `.wh..wh..opq` makes `parent` opaque, `.wh.NAME` hides NAME of the
/// layers below; other `.wh..wh.` names are aufs bookkeeping, ignored.
fn whiteout(parent: OwnedFd, hidden: &[u8], raw: &[u8]) -> Result<(), ImageError> {
    if hidden == b".wh..opq" {
        // Both: overlayfs reads `trusted.` ones, but for a mount made in a
        // user namespace (`userxattr`) only `user.` ones.
        let [trusted, user] = OPAQUE_XATTRS;
        let dir = File::from(parent);
        dir.set_xattr(trusted, b"y").map_err(ImageError::io(
            "set trusted.overlay.opaque on the parent of",
            display_path(raw),
        ))?;
        // Best effort: a store on a file system without `user.` xattrs
        // still serves agents without user namespaces (the others refuse
        // such a layer when they walk it).
        if let Err(e) = dir.set_xattr(user, b"y") {
            tracing::debug!(path = %display_path(raw).display(), "cannot set {user}: {e}");
        }
        return Ok(());
    }
    if hidden.starts_with(b".wh.") {
        return Ok(());
    }
    if hidden.is_empty() || hidden == b"." {
        return Err(ImageError::hostile(raw, "whiteout of nothing"));
    }
    clear_slot(&parent, hidden, false, raw)?;
    mknodat(&parent, hidden, SFlag::S_IFCHR, Mode::empty(), 0)
        .map_err(ImageError::sys("mknod whiteout", display_path(raw)))
}

/// Makes room for `name` in `dir`: removes what is there, unless both it
/// and the new entry are directories (then returns true: the directory
/// stays and gets the new owner and mode).
fn clear_slot(dir: &OwnedFd, name: &[u8], is_dir: bool, raw: &[u8]) -> Result<bool, ImageError> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(ImageError::sys("stat", display_path(raw))(e)),
        Ok(st) if is_directory(&st) && is_dir => Ok(true),
        Ok(st) => remove_tree(dir, name, is_directory(&st))
            .map(|()| false)
            .map_err(ImageError::sys("remove the earlier", display_path(raw))),
    }
}

fn is_directory(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Removes `name` in `dir`, a directory recursively, following nothing.
fn remove_tree(dir: &OwnedFd, name: &[u8], is_dir: bool) -> nix::Result<()> {
    if !is_dir {
        return unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
    }
    let child = open_beneath(dir, name)?;
    let mut listing = nix::dir::Dir::from_fd(child.try_clone().map_err(|_| Errno::EMFILE)?)?;
    let names: Vec<Vec<u8>> = listing
        .iter()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_bytes().to_vec())
        .filter(|n| n != b"." && n != b"..")
        .collect();
    for n in names {
        let st = fstatat(&child, n.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
        remove_tree(&child, &n, is_directory(&st))?;
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)
}

fn set_dir_meta(dir: &OwnedFd, meta: &Meta, raw: &[u8]) -> Result<(), ImageError> {
    let path = display_path(raw);
    fchown(dir, Some(meta.uid), Some(meta.gid)).map_err(ImageError::sys("chown", &path))?;
    fchmod(dir, meta.mode).map_err(ImageError::sys("chmod", &path))
}

/// Owner, then mode (`chmod`: a fifo; symlinks have none) and mtime of
/// `name` in `dir`, not following it.
fn set_meta_at(dir: &OwnedFd, name: &[u8], meta: &Meta, path: &Path, chmod: bool) -> Result<(), ImageError> {
    fchownat(dir, name, Some(meta.uid), Some(meta.gid), AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(ImageError::sys("chown", path))?;
    if chmod {
        // A fifo just made in our own directory: following is harmless.
        fchmodat(dir, name, meta.mode, FchmodatFlags::FollowSymlink).map_err(ImageError::sys("chmod", path))?;
    }
    utimensat(dir, name, &meta.mtime, &meta.mtime, UtimensatFlags::NoFollowSymlink)
        .map_err(ImageError::sys("set mtime", path))
}

/// Links `name` in `parent` to `target`, an entry already unpacked in this
/// layer (a symlink is linked itself, never followed).
fn hard_link(root: &OwnedFd, parent: &OwnedFd, name: &[u8], target: &[u8], raw: &[u8]) -> Result<(), ImageError> {
    let target_comps = normalize(target)?;
    let Some((target_name, target_parents)) = target_comps.split_last() else {
        return Err(ImageError::hostile(raw, "hard link to the layer root"));
    };
    let target_dir = if target_parents.is_empty() {
        root.try_clone().map_err(ImageError::io("dup", display_path(raw)))?
    } else {
        open_beneath(root, &target_parents.join(&b'/')).map_err(|e| match e {
            Errno::ENOENT => ImageError::hostile(raw, "hard link target not in this layer"),
            e => resolve_error(e, raw),
        })?
    };
    match fstatat(&target_dir, target_name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => return Err(ImageError::hostile(raw, "hard link target not in this layer")),
        Err(e) => return Err(ImageError::sys("stat the hard link target of", display_path(raw))(e)),
        Ok(st) => {
            let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
            if kind != SFlag::S_IFREG && kind != SFlag::S_IFLNK {
                return Err(ImageError::hostile(raw, "hard link to neither a file nor a symlink"));
            }
        }
    }
    let same = fstatat(&target_dir, ".", AtFlags::empty())
        .ok()
        .map(|s| (s.st_dev, s.st_ino))
        == fstatat(parent, ".", AtFlags::empty())
            .ok()
            .map(|s| (s.st_dev, s.st_ino));
    if same && target_name.as_slice() == name {
        return Err(ImageError::hostile(raw, "hard link to itself"));
    }
    clear_slot(parent, name, false, raw)?;
    linkat(&target_dir, target_name.as_slice(), parent, name, AtFlags::empty())
        .map_err(ImageError::sys("link", display_path(raw)))
}
