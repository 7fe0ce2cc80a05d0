//! Apply an (uncompressed) OCI layer tar stream into a directory, safely
//! (the rules are in the crate documentation).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// The prefix of a whiteout entry name.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The name of the opaque-directory marker entry.
pub const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
/// The overlayfs xattr that marks a directory opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The same for an overlayfs mounted with `userxattr` (rootless).
pub const USER_OVERLAY_OPAQUE_XATTR: &str = "user.overlay.opaque";

/// At most this many lines in [`ApplyStats::warnings`]; the counters keep counting.
const MAX_WARNINGS: usize = 1000;

/// How whiteouts are represented in the target directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyMode {
    /// The target is a merged rootfs (all layers applied on top of each
    /// other): `.wh.NAME` deletes `NAME`, `.wh..wh..opq` removes the entries of
    /// lower layers from the directory (entries of this layer stay, whether
    /// they come before or after the marker).
    Merged,
    /// The target is this layer's own directory, used later as an overlayfs
    /// lower dir: `.wh.NAME` becomes a 0/0 character device `NAME`, and
    /// `.wh..wh..opq` sets `trusted.overlay.opaque=y` on the directory
    /// (`user.overlay.opaque` with [`ApplyOptions::user_xattrs`]).
    Overlay,
}

/// Options of [`apply_layer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Set the owner of every entry to the uid/gid of the tar header
    /// (`lchown`). On by default; turn it off when not running as root.
    pub preserve_owner: bool,
    /// In [`ApplyMode::Overlay`], mark opaque dirs with `user.overlay.opaque`
    /// instead of `trusted.overlay.opaque`: for an overlayfs mounted with the
    /// `userxattr` option (rootless). Off by default.
    pub user_xattrs: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            preserve_owner: true,
            user_xattrs: false,
        }
    }
}

/// What [`apply_layer`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApplyStats {
    /// Tar entries read (including whiteouts and skipped ones).
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hardlinks created.
    pub hardlinks: u64,
    /// Fifos and device nodes created.
    pub specials: u64,
    /// `.wh.NAME` whiteouts applied.
    pub whiteouts: u64,
    /// `.wh..wh..opq` markers applied.
    pub opaque_dirs: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Device nodes skipped because `mknod` was not permitted.
    pub skipped_devices: u64,
    /// Extended attributes that could not be set, or were refused
    /// (`trusted.overlay.*` from a layer is never applied).
    pub skipped_xattrs: u64,
    /// Entries ignored (the root dir itself, unknown types, global headers).
    pub skipped_entries: u64,
    /// One human-readable line per skipped item (the first 1000).
    pub warnings: Vec<String>,
}

/// Applies the uncompressed layer tar `tar_stream` to the directory `root`.
///
/// Use [`decompress_auto`](crate::decompress_auto) first for a compressed
/// blob. Nothing outside `root` is ever created, changed or read, whatever
/// the layer holds (see [the crate documentation](crate#applying-a-layer-safely)).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use kiln_layer::{apply_layer, ApplyMode, ApplyOptions};
/// let mut b = tar::Builder::new(Vec::new());
/// let mut h = tar::Header::new_ustar();
/// h.set_size(2);
/// h.set_mode(0o644);
/// b.append_data(&mut h, "etc/hostname", &b"k\n"[..])?;
/// let tar = b.into_inner()?;
///
/// let root = tempfile::tempdir()?;
/// let opts = ApplyOptions { preserve_owner: false, ..Default::default() };
/// let stats = apply_layer(&tar[..], root.path(), ApplyMode::Merged, opts)?;
/// assert_eq!(stats.files, 1);
/// assert_eq!(std::fs::read(root.path().join("etc/hostname"))?, b"k\n");
/// # Ok(()) }
/// ```
pub fn apply_layer(
    tar_stream: impl Read,
    root: &Path,
    mode: ApplyMode,
    opts: ApplyOptions,
) -> Result<ApplyStats> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::sys("open", root, e))?;
    let mut applier = Applier {
        root,
        root_fd,
        mode,
        opts,
        stats: ApplyStats::default(),
        unpacked: HashSet::new(),
        dir_times: Vec::new(),
        buf: vec![0u8; 1 << 20],
    };
    let mut archive = tar::Archive::new(tar_stream);
    let entries = archive.entries().map_err(|e| Error::TarRead {
        entry: None,
        source: e,
    })?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::TarRead {
            entry: None,
            source: e,
        })?;
        applier.entry(&mut entry)?;
    }
    applier.finish()?;
    Ok(applier.stats)
}

/// Metadata of one entry, with PAX overrides applied.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Applier<'a> {
    root: &'a Path,
    root_fd: OwnedFd,
    mode: ApplyMode,
    opts: ApplyOptions,
    stats: ApplyStats,
    /// Paths (relative, cleaned) unpacked by this layer, and their ancestors.
    unpacked: HashSet<Vec<u8>>,
    /// Directory mtimes, set after all entries.
    dir_times: Vec<(Vec<u8>, i64)>,
    buf: Vec<u8>,
}

/// Splits a tar name into cleaned components: empty and `.` components are
/// dropped and `..` pops (clamped at the root).
pub(crate) fn clean_components(raw: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

fn ts(secs: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn parse_pax_int(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let int = s.split('.').next()?;
    int.parse().ok()
}

/// A numeric header field, where an empty field (all NULs or spaces, as
/// some writers leave unused fields) reads as 0, as Go's archive/tar does.
fn lenient(parsed: std::io::Result<u64>, raw: &[u8]) -> std::io::Result<u64> {
    match parsed {
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        r => r,
    }
}

fn is_overlay_private(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

impl Applier<'_> {
    fn host(&self, rel: &[u8]) -> PathBuf {
        self.root.join(OsStr::from_bytes(rel))
    }

    fn open_in_root(&self, rel: &[u8], flags: OFlags) -> rustix::io::Result<OwnedFd> {
        crate::open_in_root(&self.root_fd, rel, flags)
    }

    fn open_dir_in_root(&self, rel: &[u8]) -> rustix::io::Result<OwnedFd> {
        self.open_in_root(rel, OFlags::RDONLY | OFlags::DIRECTORY)
    }

    /// Opens the directory `comps` (resolved inside the root), creating the
    /// missing ones with mode 0755.
    fn dir_fd(&mut self, comps: &[&[u8]]) -> Result<OwnedFd> {
        let rel = join(comps);
        match self.open_dir_in_root(&rel) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(Error::sys("openat2", self.host(&rel), e)),
        }
        let mut cur = self
            .open_dir_in_root(b"")
            .map_err(|e| Error::sys("openat2", self.root, e))?;
        let mut prefix: Vec<u8> = Vec::with_capacity(rel.len());
        for c in comps {
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(c);
            match self.open_dir_in_root(&prefix) {
                Ok(fd) => cur = fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, *c, Mode::from_raw_mode(0o755)) {
                        Ok(()) => {}
                        Err(Errno::EXIST) => {
                            return Err(Error::BadEntry {
                                entry: lossy(&rel),
                                reason: format!(
                                    "parent {} is a dangling symlink; refusing to create through it",
                                    lossy(&prefix)
                                ),
                            });
                        }
                        Err(e) => return Err(Error::sys("mkdirat", self.host(&prefix), e)),
                    }
                    self.mark_unpacked(&prefix);
                    cur = self
                        .open_dir_in_root(&prefix)
                        .map_err(|e| Error::sys("openat2", self.host(&prefix), e))?;
                }
                Err(e) => return Err(Error::sys("openat2", self.host(&prefix), e)),
            }
        }
        Ok(cur)
    }

    fn mark_unpacked(&mut self, rel: &[u8]) {
        let mut end = rel.len();
        loop {
            if !self.unpacked.insert(rel[..end].to_vec()) {
                break;
            }
            match rel[..end].iter().rposition(|b| *b == b'/') {
                Some(i) => end = i,
                None => break,
            }
        }
    }

    fn warn(&mut self, msg: String) {
        // A hostile layer must not be able to grow this without bound.
        if self.stats.warnings.len() < MAX_WARNINGS {
            self.stats.warnings.push(msg);
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        self.stats.entries += 1;
        let raw = entry.path_bytes().into_owned();
        let name = lossy(&raw);
        let bad = |reason: &str| Error::BadEntry {
            entry: lossy(&raw),
            reason: reason.to_string(),
        };
        if raw.contains(&0) {
            return Err(bad("the name holds a NUL byte"));
        }
        let header = entry.header();
        let mut etype = header.entry_type();
        if etype == tar::EntryType::XGlobalHeader {
            self.stats.skipped_entries += 1;
            return Ok(());
        }
        if etype == tar::EntryType::Regular && raw.ends_with(b"/") {
            // Old (v7) archives mark directories with a trailing slash only.
            etype = tar::EntryType::Directory;
        }
        let tar_err = |e| Error::TarRead {
            entry: Some(name.clone()),
            source: e,
        };
        let old = header.as_old();
        let mut meta = Meta {
            mode: lenient(header.mode().map(u64::from), &old.mode).map_err(tar_err)? as u32
                & 0o7777,
            uid: 0,
            gid: 0,
            mtime: lenient(header.mtime(), &old.mtime)
                .map_err(tar_err)?
                .min(i64::MAX as u64) as i64,
            xattrs: Vec::new(),
        };
        let mut uid = lenient(header.uid(), &old.uid).map_err(tar_err)?;
        let mut gid = lenient(header.gid(), &old.gid).map_err(tar_err)?;
        if let Some(pax) = entry.pax_extensions().map_err(tar_err)? {
            for ext in pax {
                let ext = ext.map_err(tar_err)?;
                let key = ext.key_bytes();
                if let Some(x) = key.strip_prefix(b"SCHILY.xattr.") {
                    meta.xattrs.push((x.to_vec(), ext.value_bytes().to_vec()));
                } else if key == b"mtime"
                    && let Some(t) = parse_pax_int(ext.value_bytes())
                {
                    meta.mtime = t;
                } else if key == b"uid"
                    && let Some(v) = parse_pax_int(ext.value_bytes())
                {
                    uid = v.max(0) as u64;
                } else if key == b"gid"
                    && let Some(v) = parse_pax_int(ext.value_bytes())
                {
                    gid = v.max(0) as u64;
                }
            }
        }
        meta.uid = u32::try_from(uid)
            .ok()
            .filter(|u| *u != u32::MAX)
            .ok_or_else(|| bad("uid out of range"))?;
        meta.gid = u32::try_from(gid)
            .ok()
            .filter(|g| *g != u32::MAX)
            .ok_or_else(|| bad("gid out of range"))?;

        let comps = clean_components(&raw);
        let Some((last, parent)) = comps.split_last() else {
            // The root directory itself: its metadata belongs to the caller.
            self.stats.skipped_entries += 1;
            return Ok(());
        };
        let last: &[u8] = last;

        if last == WHITEOUT_OPAQUE.as_bytes() {
            return self.opaque(parent, &meta);
        }
        if let Some(target) = last.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if target.is_empty() || target == b"." || target == b".." {
                return Err(bad("whiteout of an invalid name"));
            }
            return self.whiteout(parent, target, &meta);
        }

        let rel = join(&comps);
        self.mark_unpacked(&rel);
        let parent_fd = self.dir_fd(parent)?;
        match etype {
            tar::EntryType::Directory => self.dir(&parent_fd, last, &rel, &meta),
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.file(&parent_fd, last, &rel, &meta, entry)
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad("symlink without a target"))?
                    .into_owned();
                if target.contains(&0) {
                    return Err(bad("symlink target holds a NUL byte"));
                }
                self.symlink(&parent_fd, last, &rel, &target, &meta)
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad("hardlink without a target"))?
                    .into_owned();
                self.hardlink(&parent_fd, last, &rel, &target, &raw, &meta)
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (mut major, mut minor) = (0, 0);
                if etype != tar::EntryType::Fifo {
                    let header = entry.header();
                    major = header.device_major().map_err(tar_err)?.unwrap_or(0);
                    minor = header.device_minor().map_err(tar_err)?.unwrap_or(0);
                }
                let ft = match etype {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                self.special(&parent_fd, last, &rel, ft, major, minor, &meta)
            }
            other => {
                self.stats.skipped_entries += 1;
                self.warn(format!(
                    "{name}: skipped entry of unsupported type {other:?}"
                ));
                Ok(())
            }
        }
    }

    /// Removes whatever is at `parent/name` (recursively for a directory).
    /// `rel` is the path of `parent/name` relative to the root, for errors.
    fn remove_all_at(&self, parent: BorrowedFd<'_>, name: &[u8], rel: &mut Vec<u8>) -> Result<()> {
        let st = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(Error::sys("fstatat", self.host(rel), e)),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let fd = rustix::fs::openat(
                parent,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::sys("openat", self.host(rel), e))?;
            for child in self.list_dir(&fd, rel)? {
                let len = rel.len();
                rel.push(b'/');
                rel.extend_from_slice(&child);
                let r = self.remove_all_at(fd.as_fd(), &child, rel);
                rel.truncate(len);
                r?;
            }
            rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)
                .map_err(|e| Error::sys("unlinkat", self.host(rel), e))
        } else {
            rustix::fs::unlinkat(parent, name, AtFlags::empty())
                .map_err(|e| Error::sys("unlinkat", self.host(rel), e))
        }
    }

    fn list_dir(&self, fd: &OwnedFd, rel: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut dir =
            rustix::fs::Dir::read_from(fd).map_err(|e| Error::sys("openat", self.host(rel), e))?;
        let mut names = Vec::new();
        while let Some(ent) = dir.read() {
            let ent = ent.map_err(|e| Error::sys("getdents64", self.host(rel), e))?;
            let n = ent.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
        Ok(names)
    }

    /// Prepares `parent/name` for a new non-directory entry: removes whatever is there.
    fn clear(&self, parent: &OwnedFd, name: &[u8], rel: &[u8]) -> Result<()> {
        let mut rel = rel.to_vec();
        self.remove_all_at(parent.as_fd(), name, &mut rel)
    }

    fn whiteout(&mut self, parent: &[&[u8]], target: &[u8], meta: &Meta) -> Result<()> {
        let mut rel = join(parent);
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(target);
        self.stats.whiteouts += 1;
        match self.mode {
            _ if self.unpacked.contains(&rel) => {
                // A whiteout only hides lower layers, never this layer's own entries.
                Ok(())
            }
            ApplyMode::Merged => {
                let parent_fd = match self.open_dir_in_root(&join(parent)) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Ok(()),
                    Err(e) => return Err(Error::sys("openat2", self.host(&join(parent)), e)),
                };
                self.remove_all_at(parent_fd.as_fd(), target, &mut rel)
            }
            ApplyMode::Overlay => {
                let parent_fd = self.dir_fd(parent)?;
                self.clear(&parent_fd, target, &rel)?;
                rustix::fs::mknodat(
                    &parent_fd,
                    target,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .map_err(|e| Error::sys("mknodat", self.host(&rel), e))?;
                self.chown_at(&parent_fd, target, &rel, meta)
            }
        }
    }

    fn opaque(&mut self, dir: &[&[u8]], _meta: &Meta) -> Result<()> {
        let rel = join(dir);
        self.stats.opaque_dirs += 1;
        self.mark_unpacked(&rel);
        let fd = self.dir_fd(dir)?;
        match self.mode {
            ApplyMode::Merged => {
                let mut rel = rel;
                self.remove_lower(&fd, &mut rel)
            }
            ApplyMode::Overlay => {
                let (name, syscall) = if self.opts.user_xattrs {
                    (USER_OVERLAY_OPAQUE_XATTR, "fsetxattr(user.overlay.opaque)")
                } else {
                    (OVERLAY_OPAQUE_XATTR, "fsetxattr(trusted.overlay.opaque)")
                };
                rustix::fs::fsetxattr(&fd, name, b"y", XattrFlags::empty())
                    .map_err(|e| Error::sys(syscall, self.host(&rel), e))
            }
        }
    }

    /// Removes every entry below the directory `fd` (at `rel`) that this layer did not unpack.
    fn remove_lower(&self, fd: &OwnedFd, rel: &mut Vec<u8>) -> Result<()> {
        for child in self.list_dir(fd, rel)? {
            let len = rel.len();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(&child);
            let r = if !self.unpacked.contains(rel.as_slice()) {
                self.remove_all_at(fd.as_fd(), &child, rel)
            } else {
                match rustix::fs::openat(
                    fd,
                    child.as_slice(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(cfd) => self.remove_lower(&cfd, rel),
                    Err(Errno::NOTDIR) | Err(Errno::LOOP) => Ok(()),
                    Err(e) => Err(Error::sys("openat", self.host(rel), e)),
                }
            };
            rel.truncate(len);
            r?;
        }
        Ok(())
    }

    fn dir(&mut self, parent: &OwnedFd, name: &[u8], rel: &[u8], meta: &Meta) -> Result<()> {
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
            Ok(_) => {
                self.clear(parent, name, rel)?;
                self.mkdir(parent, name, rel)?;
            }
            Err(Errno::NOENT) => self.mkdir(parent, name, rel)?,
            Err(e) => return Err(Error::sys("fstatat", self.host(rel), e)),
        }
        let fd = rustix::fs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys("openat", self.host(rel), e))?;
        self.fd_meta(&fd, rel, meta)?;
        self.dir_times.push((rel.to_vec(), meta.mtime));
        self.stats.dirs += 1;
        Ok(())
    }

    fn mkdir(&self, parent: &OwnedFd, name: &[u8], rel: &[u8]) -> Result<()> {
        rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))
            .map_err(|e| Error::sys("mkdirat", self.host(rel), e))
    }

    /// Owner, mode and xattrs through an fd (regular files and dirs).
    fn fd_meta(&mut self, fd: &OwnedFd, rel: &[u8], meta: &Meta) -> Result<()> {
        if self.opts.preserve_owner {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(meta.uid)),
                Some(rustix::fs::Gid::from_raw(meta.gid)),
            )
            .map_err(|e| Error::sys("fchown", self.host(rel), e))?;
        }
        // After fchown, which clears the setuid/setgid bits.
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))
            .map_err(|e| Error::sys("fchmod", self.host(rel), e))?;
        for (k, v) in &meta.xattrs {
            if is_overlay_private(k) {
                self.refuse_xattr(rel, k);
                continue;
            }
            match rustix::fs::fsetxattr(fd, k.as_slice(), v, XattrFlags::empty()) {
                Ok(()) => {}
                Err(e @ (Errno::OPNOTSUPP | Errno::PERM | Errno::ACCESS)) => {
                    self.skip_xattr(rel, k, e)
                }
                Err(e) => return Err(Error::sys("fsetxattr", self.host(rel), e)),
            }
        }
        Ok(())
    }

    fn refuse_xattr(&mut self, rel: &[u8], k: &[u8]) {
        self.stats.skipped_xattrs += 1;
        self.warn(format!(
            "{}: refused overlayfs-private xattr {}",
            lossy(rel),
            lossy(k)
        ));
    }

    fn skip_xattr(&mut self, rel: &[u8], k: &[u8], e: Errno) {
        self.stats.skipped_xattrs += 1;
        self.warn(format!("{}: xattr {} not set: {e}", lossy(rel), lossy(k)));
    }

    /// Xattrs on an entry that can't be opened for writing (symlink, device,
    /// fifo): `lsetxattr` on `/proc/self/fd/<parent>/<name>`, which resolves
    /// the parent through its fd and doesn't follow the last component.
    fn xattrs_at(&mut self, parent: &OwnedFd, name: &[u8], rel: &[u8], meta: &Meta) -> Result<()> {
        for (k, v) in &meta.xattrs {
            if is_overlay_private(k) {
                self.refuse_xattr(rel, k);
                continue;
            }
            let mut p = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
            p.extend_from_slice(name);
            match rustix::fs::lsetxattr(p.as_slice(), k.as_slice(), v, XattrFlags::empty()) {
                Ok(()) => {}
                Err(e @ (Errno::OPNOTSUPP | Errno::PERM | Errno::ACCESS | Errno::NOENT)) => {
                    self.skip_xattr(rel, k, e)
                }
                Err(e) => return Err(Error::sys("lsetxattr", self.host(rel), e)),
            }
        }
        Ok(())
    }

    fn chown_at(&self, parent: &OwnedFd, name: &[u8], rel: &[u8], meta: &Meta) -> Result<()> {
        if !self.opts.preserve_owner {
            return Ok(());
        }
        rustix::fs::chownat(
            parent,
            name,
            Some(rustix::fs::Uid::from_raw(meta.uid)),
            Some(rustix::fs::Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Error::sys("fchownat", self.host(rel), e))
    }

    fn times_at(&self, parent: &OwnedFd, name: &[u8], rel: &[u8], meta: &Meta) -> Result<()> {
        rustix::fs::utimensat(parent, name, &ts(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| Error::sys("utimensat", self.host(rel), e))
    }

    fn file<R: Read>(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        rel: &[u8],
        meta: &Meta,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<()> {
        self.clear(parent, name, rel)?;
        let fd = rustix::fs::openat(
            parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| Error::sys("openat", self.host(rel), e))?;
        let mut file = File::from(fd);
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::TarRead {
                        entry: Some(lossy(rel)),
                        source: e,
                    });
                }
            };
            file.write_all(&self.buf[..n])
                .map_err(|e| Error::sys("write", self.host(rel), e))?;
            self.stats.bytes += n as u64;
        }
        let fd = OwnedFd::from(file);
        self.fd_meta(&fd, rel, meta)?;
        rustix::fs::futimens(&fd, &ts(meta.mtime))
            .map_err(|e| Error::sys("futimens", self.host(rel), e))?;
        self.stats.files += 1;
        Ok(())
    }

    fn symlink(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        rel: &[u8],
        target: &[u8],
        meta: &Meta,
    ) -> Result<()> {
        self.clear(parent, name, rel)?;
        rustix::fs::symlinkat(target, parent, name)
            .map_err(|e| Error::sys("symlinkat", self.host(rel), e))?;
        self.chown_at(parent, name, rel, meta)?;
        self.xattrs_at(parent, name, rel, meta)?;
        self.times_at(parent, name, rel, meta)?;
        self.stats.symlinks += 1;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn hardlink(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        rel: &[u8],
        target: &[u8],
        raw: &[u8],
        meta: &Meta,
    ) -> Result<()> {
        let bad = |reason: String| Error::BadEntry {
            entry: lossy(raw),
            reason,
        };
        if target.contains(&0) {
            return Err(bad("hardlink target holds a NUL byte".into()));
        }
        let tcomps = clean_components(target);
        let Some((tname, tparent)) = tcomps.split_last() else {
            return Err(bad("hardlink to the root directory".into()));
        };
        let trel = join(&tcomps);
        if trel == rel {
            return Ok(());
        }
        let tparent_fd = self.open_dir_in_root(&join(tparent)).map_err(|e| {
            bad(format!(
                "hardlink target {} can't be resolved inside the root: {e}",
                lossy(target)
            ))
        })?;
        match rustix::fs::statat(&tparent_fd, *tname, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                return Err(bad(format!(
                    "hardlink target {} is a directory",
                    lossy(target)
                )));
            }
            Ok(_) => {}
            Err(e) => {
                return Err(bad(format!(
                    "hardlink target {} not found inside the root: {e}",
                    lossy(target)
                )));
            }
        }
        self.clear(parent, name, rel)?;
        // No AT_SYMLINK_FOLLOW: a symlink target is linked itself, never followed.
        rustix::fs::linkat(&tparent_fd, *tname, parent, name, AtFlags::empty())
            .map_err(|e| Error::sys("linkat", self.host(rel), e))?;
        // The header's mode and owner apply to the (shared) inode, as docker applies them.
        let is_symlink = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
        if !is_symlink {
            self.chown_at(parent, name, rel, meta)?;
            rustix::fs::chmodat(
                parent,
                name,
                Mode::from_raw_mode(meta.mode),
                AtFlags::empty(),
            )
            .map_err(|e| Error::sys("fchmodat", self.host(rel), e))?;
        }
        self.stats.hardlinks += 1;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn special(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        rel: &[u8],
        ft: FileType,
        major: u32,
        minor: u32,
        meta: &Meta,
    ) -> Result<()> {
        self.clear(parent, name, rel)?;
        let mode = Mode::from_raw_mode(meta.mode & 0o777);
        match rustix::fs::mknodat(parent, name, ft, mode, rustix::fs::makedev(major, minor)) {
            Ok(()) => {}
            Err(e @ Errno::PERM) if ft != FileType::Fifo => {
                self.stats.skipped_devices += 1;
                self.warn(format!(
                    "{}: device node not created: mknodat: {e}",
                    lossy(rel)
                ));
                return Ok(());
            }
            Err(e) => return Err(Error::sys("mknodat", self.host(rel), e)),
        }
        self.chown_at(parent, name, rel, meta)?;
        // The node was just created by mknodat, so it is not a symlink.
        rustix::fs::chmodat(
            parent,
            name,
            Mode::from_raw_mode(meta.mode),
            AtFlags::empty(),
        )
        .map_err(|e| Error::sys("fchmodat", self.host(rel), e))?;
        self.xattrs_at(parent, name, rel, meta)?;
        self.times_at(parent, name, rel, meta)?;
        self.stats.specials += 1;
        Ok(())
    }

    /// Sets directory mtimes, deepest and latest first, after all children are in place.
    fn finish(&mut self) -> Result<()> {
        let times = std::mem::take(&mut self.dir_times);
        for (rel, mtime) in times.iter().rev() {
            let fd = match self
                .open_in_root(rel, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW)
            {
                Ok(fd) => fd,
                // Replaced or removed by a later entry.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(e) => return Err(Error::sys("openat2", self.host(rel), e)),
            };
            rustix::fs::futimens(&fd, &ts(*mtime))
                .map_err(|e| Error::sys("futimens", self.host(rel), e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_clamps_dotdot_at_the_root() {
        let c = |s: &str| {
            clean_components(s.as_bytes())
                .into_iter()
                .map(lossy)
                .collect::<Vec<_>>()
        };
        assert_eq!(c("../../etc/passwd"), ["etc", "passwd"]);
        assert_eq!(c("/etc//./passwd"), ["etc", "passwd"]);
        assert_eq!(c("a/../../b/"), ["b"]);
        assert!(c("./").is_empty());
        assert!(c("..").is_empty());
    }

    #[test]
    fn pax_times_parse_with_fraction() {
        assert_eq!(parse_pax_int(b"1700000000.123"), Some(1_700_000_000));
        assert_eq!(parse_pax_int(b"-5"), Some(-5));
        assert_eq!(parse_pax_int(b"x"), None);
    }
}
