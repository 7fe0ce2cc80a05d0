//! Turn a directory (an overlayfs upper dir, or a plain rootfs) into a layer
//! tar, hashing it as it is written (the format is in the crate documentation).
//!
//! The walker only reads and writes: the one hash of the tar is the writer's, kiln-image's
//! [`HashingWriter`] for any sink or the store's [`BlobWriter`](kiln_image::BlobWriter),
//! whose digest is then both the blob's name and the diff id. The writer runs on a thread of
//! its own, so that hashing and writing one chunk overlaps reading the next.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use kiln_image::{Digest, HashingWriter, Store};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::apply::{WHITEOUT_OPAQUE, WHITEOUT_PREFIX};
use crate::error::{Error, Result};

/// Options of [`write_layer_from_upper`] and [`write_layer_from_dir`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffOptions {
    /// Clamp every mtime to this many seconds since the epoch
    /// (`SOURCE_DATE_EPOCH`), for reproducible layers.
    pub source_date_epoch: Option<i64>,
}

/// The layer tar that was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSummary {
    /// The digest of the uncompressed tar: the layer's `diff_id`.
    pub diff_id: Digest,
    /// Size in bytes of the uncompressed tar.
    pub size: u64,
}

/// Writes the overlayfs upper dir `upper` as an OCI layer tar into `out`.
///
/// Overlay whiteouts become `.wh.` entries and opaque dirs get a
/// `.wh..wh..opq` entry (the full format is in
/// [the crate documentation](crate#the-layers-this-crate-writes)).
/// `out` is written in 1 MiB chunks, from a thread of the call's own, and flushed at the end.
pub fn write_layer_from_upper(
    upper: &Path,
    out: impl Write + Send,
    opts: DiffOptions,
) -> Result<LayerSummary> {
    write_hashed(upper, Source::Upper, out, opts)
}

/// Writes the overlayfs upper dir `upper` as a layer into the store: an uncompressed blob,
/// whose digest is the layer's diff id. The tar is hashed once, by the
/// [`BlobWriter`](kiln_image::BlobWriter), as it is written.
pub fn store_layer_from_upper(
    store: &Store,
    upper: &Path,
    opts: DiffOptions,
) -> Result<LayerSummary> {
    let blob = write_layer(upper, Source::Upper, store.blob_writer()?, opts)?;
    let (diff_id, size) = blob.commit(None)?;
    Ok(LayerSummary { diff_id, size })
}

/// Writes the plain directory `dir` (e.g. a rootfs to `import`) as a layer tar into `out`.
///
/// Same format as [`write_layer_from_upper`], without the whiteout
/// conversion: a 0/0 char device stays a char device.
pub fn write_layer_from_dir(
    dir: &Path,
    out: impl Write + Send,
    opts: DiffOptions,
) -> Result<LayerSummary> {
    write_hashed(dir, Source::Plain, out, opts)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Upper,
    Plain,
}

/// What one walk of a plain rootfs saw: each entry's signature, by its path relative to the
/// root (no leading or trailing `/`). The next walk, compared with it, gives the layer of the
/// step in between ([`store_layer_from_changes`]): the snapshotter that needs no overlayfs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeState {
    entries: HashMap<Vec<u8>, Signature>,
}

/// What tells a changed entry from an unchanged one. `ctime` moves with every change of
/// content, mode, owner, xattrs or link count and cannot be set back from user space; the
/// inode tells a replaced entry from one changed in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Signature {
    ino: u64,
    dev: u64,
    /// Type and permission bits.
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    rdev: u64,
}

impl Signature {
    fn is_dir(&self) -> bool {
        FileType::from_raw_mode(self.mode) == FileType::Directory
    }

    /// Whether `self` (before) and `now` differ. A directory that holds a path the run had
    /// furnished is compared without its times: putting those paths in and taking them back
    /// touches it, and what a step really did in it shows in its entries.
    fn changed(&self, now: &Signature, holds_ignored: bool) -> bool {
        if holds_ignored && self.is_dir() && now.is_dir() {
            (self.ino, self.dev, self.mode, self.uid, self.gid)
                != (now.ino, now.dev, now.mode, now.uid, now.gid)
        } else {
            self != now
        }
    }
}

impl TreeState {
    /// Walks `root` (not following symlinks, not crossing into other file systems' roots).
    pub fn scan(root: &Path) -> Result<TreeState> {
        let fd = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys("open", root, e))?;
        let mut state = TreeState::default();
        let mut path = Vec::with_capacity(4096);
        scan_dir(&fd, root, &mut path, &mut state.entries)?;
        Ok(state)
    }

    /// Entries seen.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the walk saw nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn scan_dir(
    dir: &OwnedFd,
    root: &Path,
    path: &mut Vec<u8>,
    out: &mut HashMap<Vec<u8>, Signature>,
) -> Result<()> {
    let host = |path: &[u8]| root.join(std::ffi::OsStr::from_bytes(path));
    let mut names = Vec::new();
    {
        let mut d =
            rustix::fs::Dir::read_from(dir).map_err(|e| Error::sys("openat", host(path), e))?;
        while let Some(ent) = d.read() {
            let ent = ent.map_err(|e| Error::sys("getdents64", host(path), e))?;
            let n = ent.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
    }
    for name in names {
        let base = path.len();
        if base > 0 {
            path.push(b'/');
        }
        path.extend_from_slice(&name);
        let r = (|| -> Result<()> {
            let st = rustix::fs::statat(dir, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| Error::sys("fstatat", host(path), e))?;
            let sig = Signature {
                ino: st.st_ino,
                dev: st.st_dev,
                mode: st.st_mode,
                uid: st.st_uid,
                gid: st.st_gid,
                size: st.st_size as u64,
                mtime: (st.st_mtime, st.st_mtime_nsec as i64),
                ctime: (st.st_ctime, st.st_ctime_nsec as i64),
                rdev: st.st_rdev,
            };
            out.insert(path.clone(), sig);
            if sig.is_dir() {
                let fd = rustix::fs::openat(
                    dir,
                    name.as_slice(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| Error::sys("openat", host(path), e))?;
                scan_dir(&fd, root, path, out)?;
            }
            Ok(())
        })();
        path.truncate(base);
        r?;
    }
    Ok(())
}

/// Whether `path` is `prefix` or lies under it.
fn under(path: &[u8], prefix: &[u8]) -> bool {
    path.starts_with(prefix) && (path.len() == prefix.len() || path[prefix.len()] == b'/')
}

fn parent_of(path: &[u8]) -> &[u8] {
    path.iter()
        .rposition(|b| *b == b'/')
        .map_or(&[][..], |i| &path[..i])
}

/// Which entries of a walk go into the layer: the changed ones and their parents, and the
/// names of deleted entries (as whiteouts) by the directory that held them.
#[derive(Debug, Default)]
struct Changes {
    emit: std::collections::HashSet<Vec<u8>>,
    whiteouts: HashMap<Vec<u8>, Vec<Vec<u8>>>,
}

impl Changes {
    fn between(before: &TreeState, after: &TreeState, ignore: &[&str]) -> Changes {
        let ignored = |path: &[u8]| ignore.iter().any(|i| under(path, i.as_bytes()));
        let holds_ignored = |path: &[u8]| {
            ignore.iter().any(|i| {
                path.is_empty()
                    || i.as_bytes().starts_with(path) && i.as_bytes().get(path.len()) == Some(&b'/')
            })
        };
        let mut changes = Changes::default();
        let mark = |emit: &mut std::collections::HashSet<Vec<u8>>, mut path: &[u8]| {
            while !path.is_empty() && emit.insert(path.to_vec()) {
                path = parent_of(path);
            }
        };
        for (path, now) in &after.entries {
            if ignored(path) {
                continue;
            }
            let changed = before
                .entries
                .get(path)
                .is_none_or(|was| was.changed(now, holds_ignored(path)));
            if changed {
                mark(&mut changes.emit, path);
            }
        }
        for path in before.entries.keys() {
            if ignored(path) || after.entries.contains_key(path) {
                continue;
            }
            let parent = parent_of(path);
            // A deleted directory's whiteout hides what it held.
            if !parent.is_empty() && !after.entries.get(parent).is_some_and(Signature::is_dir) {
                continue;
            }
            let name = path[if parent.is_empty() {
                0
            } else {
                parent.len() + 1
            }..]
                .to_vec();
            changes
                .whiteouts
                .entry(parent.to_vec())
                .or_default()
                .push(name);
            mark(&mut changes.emit, parent);
        }
        changes
    }
}

/// Writes the layer of what changed under the plain rootfs `root` since the walk `before`
/// into the store, in the same form as [`store_layer_from_upper`] (deleted entries as
/// `.wh.` whiteouts, changed entries with their parent directories), and returns it with the
/// new walk. Paths under `ignore` (relative, such as `dev`) never go into the layer.
pub fn store_layer_from_changes(
    store: &Store,
    root: &Path,
    before: &TreeState,
    ignore: &[&str],
    opts: DiffOptions,
) -> Result<(LayerSummary, TreeState)> {
    let after = TreeState::scan(root)?;
    let changes = Changes::between(before, &after, ignore);
    let blob = write_layer_filtered(
        root,
        Source::Plain,
        store.blob_writer()?,
        opts,
        Some(&changes),
    )?;
    let (diff_id, size) = blob.commit(None)?;
    Ok((LayerSummary { diff_id, size }, after))
}

fn write_hashed(
    root: &Path,
    source: Source,
    out: impl Write + Send,
    opts: DiffOptions,
) -> Result<LayerSummary> {
    let hashing = write_layer(root, source, HashingWriter::new(out), opts)?;
    let (_, diff_id, size) = hashing.finish();
    Ok(LayerSummary { diff_id, size })
}

/// Writes the layer tar into `out`, flushes it and gives it back.
///
/// Two threads: this one walks the tree and reads the files into 1 MiB buffers; another
/// hands each full buffer to `out`, which hashes and writes it. On two cores the hash and the
/// write of one buffer overlap the reading of the next, as in `tar -c | sha256sum`.
fn write_layer<W: Write + Send>(
    root: &Path,
    source: Source,
    out: W,
    opts: DiffOptions,
) -> Result<W> {
    write_layer_filtered(root, source, out, opts, None)
}

/// [`write_layer`], with only the entries `changes` names when there is one.
fn write_layer_filtered<W: Write + Send>(
    root: &Path,
    source: Source,
    out: W,
    opts: DiffOptions,
    changes: Option<&Changes>,
) -> Result<W> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::sys("open", root, e))?;
    let (full, to_write) = sync_channel::<(Vec<u8>, usize)>(BUFFERS);
    let (written, empty) = sync_channel::<Vec<u8>>(BUFFERS);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> io::Result<W> {
            let mut out = out;
            for (buf, fill) in to_write {
                out.write_all(&buf[..fill])?;
                // The walker may have stopped (an error): the buffer is then dropped.
                let _ = written.send(buf);
            }
            out.flush()?;
            Ok(out)
        });
        let walked = walk(
            &root_fd,
            root,
            source,
            opts,
            changes,
            TarOut::new(full, empty),
        );
        let wrote = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the thread writing the layer stopped")));
        // A writer that failed stops the walker too, which then only knows that the writer
        // is gone: the writer's error is the one to report.
        match (walked, wrote) {
            (_, Err(source)) => Err(Error::Write { source }),
            (Err(e), Ok(_)) => Err(e),
            (Ok(()), Ok(out)) => Ok(out),
        }
    })
}

/// Walks the tree into `out`, to the end-of-archive marker.
fn walk(
    root_fd: &OwnedFd,
    root: &Path,
    source: Source,
    opts: DiffOptions,
    changes: Option<&Changes>,
    out: TarOut,
) -> Result<()> {
    let mut walker = Walker {
        out,
        root,
        source,
        changes,
        epoch: opts.source_date_epoch,
        links: HashMap::new(),
        path: Vec::with_capacity(4096),
        list_buf: vec![0u8; 4096],
        value_buf: vec![0u8; 4096],
        xattrs: Vec::new(),
        link_buf: Vec::with_capacity(4096),
        pax: Vec::with_capacity(1024),
    };
    walker.walk_dir(root_fd)?;
    walker.out.finish()
}

const BLOCK: usize = 512;
const BUF_SIZE: usize = 1 << 20;
/// Buffers in use: one being filled, the others being written or waiting to be.
const BUFFERS: usize = 3;

/// The output buffer: file data is read straight into it, and the writer thread gets it in
/// 1 MiB chunks (which a `BufWriter` of that size passes on without copying them again).
struct TarOut {
    buf: Vec<u8>,
    fill: usize,
    /// Full buffers, to the writer thread.
    full: SyncSender<(Vec<u8>, usize)>,
    /// Buffers the writer is done with.
    empty: Receiver<Vec<u8>>,
    /// Buffers made so far (up to [`BUFFERS`]).
    made: usize,
}

impl TarOut {
    fn new(full: SyncSender<(Vec<u8>, usize)>, empty: Receiver<Vec<u8>>) -> Self {
        TarOut {
            buf: vec![0u8; BUF_SIZE],
            fill: 0,
            full,
            empty,
            made: 1,
        }
    }

    fn flush_buf(&mut self) -> Result<()> {
        let next = if self.made < BUFFERS {
            self.made += 1;
            Ok(vec![0u8; BUF_SIZE])
        } else {
            self.empty.recv()
        };
        let next = next.map_err(|_| writer_gone())?;
        let full = std::mem::replace(&mut self.buf, next);
        self.full
            .send((full, self.fill))
            .map_err(|_| writer_gone())?;
        self.fill = 0;
        Ok(())
    }

    fn put(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            if self.fill == self.buf.len() {
                self.flush_buf()?;
            }
            let n = data.len().min(self.buf.len() - self.fill);
            self.buf[self.fill..self.fill + n].copy_from_slice(&data[..n]);
            self.fill += n;
            data = &data[n..];
        }
        Ok(())
    }

    /// Zero padding up to the next block boundary, given `len` bytes of data.
    fn pad(&mut self, len: u64) -> Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.put(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Reads exactly `len` bytes of `file` straight into the buffer, then pads.
    fn file_data(&mut self, file: &mut File, len: u64, path: &dyn Fn() -> PathBuf) -> Result<()> {
        let mut remaining = len;
        while remaining > 0 {
            if self.fill == self.buf.len() {
                self.flush_buf()?;
            }
            let want =
                (self.buf.len() - self.fill).min(usize::try_from(remaining).unwrap_or(usize::MAX));
            match file.read(&mut self.buf[self.fill..self.fill + want]) {
                Ok(0) => {
                    return Err(Error::Changed {
                        path: path(),
                        detail: format!("{} bytes shorter than when it was stat'ed", remaining),
                    });
                }
                Ok(n) => {
                    self.fill += n;
                    remaining -= n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::sys("read", path(), e)),
            }
        }
        self.pad(len)
    }

    /// Writes the end-of-archive marker and hands the last buffer over.
    fn finish(mut self) -> Result<()> {
        self.put(&[0u8; 2 * BLOCK])?;
        let last = std::mem::take(&mut self.buf);
        self.full.send((last, self.fill)).map_err(|_| writer_gone())
    }
}

/// What the walker sees of a writer thread that stopped: its own error is reported instead.
fn writer_gone() -> Error {
    Error::Write {
        source: io::Error::other("the thread writing the layer stopped"),
    }
}

/// What a header describes.
struct Entry<'a> {
    path: &'a [u8],
    kind: tar::EntryType,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    link: &'a [u8],
    dev: (u32, u32),
}

struct Walker<'a> {
    out: TarOut,
    root: &'a Path,
    source: Source,
    /// Only these entries, and these whiteouts (a walk compared with an earlier one).
    changes: Option<&'a Changes>,
    epoch: Option<i64>,
    /// First path seen of each multiply-linked inode.
    links: HashMap<(u64, u64), Vec<u8>>,
    /// The current entry's path relative to the root (dirs end with `/`).
    path: Vec<u8>,
    list_buf: Vec<u8>,
    value_buf: Vec<u8>,
    /// Xattrs of the current entry (name, value), kept ones only.
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    link_buf: Vec<u8>,
    pax: Vec<u8>,
}

/// What the overlayfs xattrs of an entry say.
#[derive(Default)]
struct OverlayMarks {
    opaque: bool,
    whiteout: bool,
}

fn is_dropped_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.")
        || name.starts_with(b"user.overlay.")
        || name == b"security.selinux"
}

fn overlay_suffix(name: &[u8]) -> Option<&[u8]> {
    // `trusted.` with overlayfs's default, `user.` with its `userxattr` option.
    name.strip_prefix(b"trusted.overlay.")
        .or_else(|| name.strip_prefix(b"user.overlay."))
}

/// Appends one PAX record (`"<len> <key>=<value>\n"`).
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    loop {
        let digits = len.to_string().len();
        if digits + body == len {
            break;
        }
        len = digits + body;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Splits `path` into ustar (prefix, name), if it fits.
fn ustar_split(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&[], path));
    }
    // The name part is what follows the slash: at most 100 bytes, not empty.
    let min = path.len().saturating_sub(101);
    (min..path.len().min(156))
        .find(|&i| path[i] == b'/' && i > 0 && i + 1 < path.len() && path.len() - i - 1 <= 100)
        .map(|i| (&path[..i], &path[i + 1..]))
}

impl Walker<'_> {
    fn host(&self) -> PathBuf {
        self.root.join(std::ffi::OsStr::from_bytes(&self.path))
    }

    fn clamp(&self, mtime: i64) -> i64 {
        let t = match self.epoch {
            Some(e) => mtime.min(e),
            None => mtime,
        };
        t.max(0)
    }

    fn walk_dir(&mut self, dir: &OwnedFd) -> Result<()> {
        // Names of the directory in one arena, sorted by their bytes.
        let mut arena: Vec<u8> = Vec::new();
        let mut names: Vec<(usize, usize)> = Vec::new();
        {
            let mut d = rustix::fs::Dir::read_from(dir)
                .map_err(|e| Error::sys("openat", self.host(), e))?;
            while let Some(ent) = d.read() {
                let ent = ent.map_err(|e| Error::sys("getdents64", self.host(), e))?;
                let n = ent.file_name().to_bytes();
                if n != b"." && n != b".." {
                    names.push((arena.len(), n.len()));
                    arena.extend_from_slice(n);
                }
            }
        }
        // Deleted names, as whiteouts in their sorted place (where an upper dir has its
        // whiteout devices): marked by a start past the arena's live names.
        let live = arena.len();
        if let Some(changes) = self.changes {
            let dir_key = self.path.strip_suffix(b"/").unwrap_or(&self.path);
            for name in changes.whiteouts.get(dir_key).into_iter().flatten() {
                names.push((arena.len(), name.len()));
                arena.extend_from_slice(name);
            }
        }
        names.sort_unstable_by(|a, b| arena[a.0..a.0 + a.1].cmp(&arena[b.0..b.0 + b.1]));
        for &(start, len) in &names {
            let name = &arena[start..start + len];
            let base = self.path.len();
            self.path.extend_from_slice(name);
            let r = match self.changes {
                Some(_) if start >= live => self.deleted(dir, name, base),
                Some(changes) if !changes.emit.contains(&self.path) => Ok(()),
                _ => self.visit(dir, name, base),
            };
            self.path.truncate(base);
            r?;
        }
        Ok(())
    }

    /// The whiteout of `name`, deleted from `dir` since the earlier walk: root's, dated as
    /// the directory's last change (when the deletion happened, or later).
    fn deleted(&mut self, dir: &OwnedFd, name: &[u8], base: usize) -> Result<()> {
        let st = rustix::fs::fstat(dir).map_err(|e| Error::sys("fstat", self.host(), e))?;
        let e = Entry {
            path: &[],
            kind: tar::EntryType::Regular,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: self.clamp(st.st_mtime),
            link: &[],
            dev: (0, 0),
        };
        self.whiteout(name, base, e)
    }

    fn visit(&mut self, dir: &OwnedFd, name: &[u8], base: usize) -> Result<()> {
        let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| Error::sys("fstatat", self.host(), e))?;
        let ft = FileType::from_raw_mode(st.st_mode);
        let mode = st.st_mode & 0o7777;
        let mtime = self.clamp(st.st_mtime);
        let upper = self.source == Source::Upper;
        let mut e = Entry {
            path: &[],
            kind: tar::EntryType::Regular,
            mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: 0,
            mtime,
            link: &[],
            dev: (0, 0),
        };
        match ft {
            FileType::Directory => {
                let fd = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| Error::sys("openat", self.host(), e))?;
                let marks = self.read_xattrs(XattrSource::Fd(&fd))?;
                self.path.push(b'/');
                e.kind = tar::EntryType::Directory;
                self.emit(&e, true)?;
                if upper && marks.opaque {
                    let dir_len = self.path.len();
                    self.path.extend_from_slice(WHITEOUT_OPAQUE.as_bytes());
                    let wh = Entry {
                        mode: mode & 0o777,
                        ..e
                    };
                    let r = self.emit(&wh, false);
                    self.path.truncate(dir_len);
                    r?;
                }
                self.walk_dir(&fd)
            }
            FileType::CharacterDevice if upper && st.st_rdev == 0 => self.whiteout(name, base, e),
            _ => {
                if st.st_nlink > 1
                    && let Some(first) = self.links.get(&(st.st_dev, st.st_ino))
                {
                    let first = first.clone();
                    e.kind = tar::EntryType::Link;
                    e.mode = mode;
                    e.link = &first;
                    return self.emit(&e, false);
                }
                let r = match ft {
                    FileType::RegularFile => {
                        match self.regular(dir, name, base, st.st_size as u64, e) {
                            // A whiteout is no inode to link to.
                            Ok(Regular::Whiteout) => return Ok(()),
                            Ok(Regular::File) => Ok(()),
                            Err(e) => Err(e),
                        }
                    }
                    FileType::Symlink => {
                        let mut target = std::mem::take(&mut self.link_buf);
                        target.clear();
                        let target = rustix::fs::readlinkat(dir, name, target)
                            .map_err(|e| Error::sys("readlinkat", self.host(), e))?;
                        self.read_xattrs(XattrSource::Path(&self.host()))?;
                        e.kind = tar::EntryType::Symlink;
                        e.link = target.as_bytes();
                        let r = self.emit(&e, true);
                        self.link_buf = target.into_bytes();
                        r
                    }
                    FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                        self.read_xattrs(XattrSource::Path(&self.host()))?;
                        e.kind = match ft {
                            FileType::CharacterDevice => tar::EntryType::Char,
                            FileType::BlockDevice => tar::EntryType::Block,
                            _ => tar::EntryType::Fifo,
                        };
                        e.dev = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
                        self.emit(&e, true)
                    }
                    // Sockets (and anything else) have no place in a layer.
                    _ => return Ok(()),
                };
                if r.is_ok() && st.st_nlink > 1 {
                    self.links.insert((st.st_dev, st.st_ino), self.path.clone());
                }
                r
            }
        }
    }

    fn whiteout(&mut self, name: &[u8], base: usize, e: Entry<'_>) -> Result<()> {
        let mut path = Vec::with_capacity(base + WHITEOUT_PREFIX.len() + name.len());
        path.extend_from_slice(&self.path[..base]);
        path.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
        path.extend_from_slice(name);
        let wh = Entry {
            path: &path,
            kind: tar::EntryType::Regular,
            mode: 0o600,
            size: 0,
            ..e
        };
        self.emit(&wh, false)
    }

    fn regular(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        base: usize,
        size: u64,
        mut e: Entry<'_>,
    ) -> Result<Regular> {
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys("openat", self.host(), e))?;
        let marks = self.read_xattrs(XattrSource::Fd(&fd))?;
        if self.source == Source::Upper && marks.whiteout && size == 0 {
            return self.whiteout(name, base, e).map(|()| Regular::Whiteout);
        }
        e.size = size;
        self.emit(&e, true)?;
        let mut file = File::from(fd);
        let root = self.root;
        let path = &self.path;
        self.out.file_data(&mut file, size, &|| {
            root.join(std::ffi::OsStr::from_bytes(path))
        })?;
        Ok(Regular::File)
    }

    /// Reads the xattrs of the current entry into `self.xattrs` (kept ones)
    /// and reports the overlayfs marks among them.
    fn read_xattrs(&mut self, src: XattrSource<'_>) -> Result<OverlayMarks> {
        self.xattrs.clear();
        let mut marks = OverlayMarks::default();
        let list_len = loop {
            let r = match src {
                XattrSource::Fd(fd) => rustix::fs::flistxattr(fd, &mut self.list_buf[..]),
                XattrSource::Path(host) => rustix::fs::llistxattr(host, &mut self.list_buf[..]),
            };
            match r {
                Ok(n) => break n,
                Err(Errno::RANGE) => {
                    let want = self.list_buf.len() * 4;
                    if want > 1 << 20 {
                        return Err(Error::sys("listxattr", self.host(), Errno::RANGE));
                    }
                    self.list_buf.resize(want, 0);
                    continue;
                }
                Err(Errno::OPNOTSUPP) => return Ok(marks),
                Err(e) => return Err(Error::sys("listxattr", self.host(), e)),
            }
        };
        if list_len == 0 {
            return Ok(marks);
        }
        let list = std::mem::take(&mut self.list_buf);
        let result = self.read_values(src, &list[..list_len], &mut marks);
        self.list_buf = list;
        result.map(|()| marks)
    }

    fn read_values(
        &mut self,
        src: XattrSource<'_>,
        list: &[u8],
        marks: &mut OverlayMarks,
    ) -> Result<()> {
        for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
            if self.source == Source::Upper
                && let Some(what @ (b"metacopy" | b"redirect")) = overlay_suffix(name)
            {
                return Err(Error::Unsupported {
                    path: self.host(),
                    reason: format!(
                        "the overlayfs upper dir uses {}: its data lives in the lower dirs; \
                         mount the overlay with metacopy=off,redirect_dir=off to commit it",
                        String::from_utf8_lossy(what)
                    ),
                });
            }
            let wanted = match overlay_suffix(name) {
                Some(b"opaque") | Some(b"whiteout") => true,
                _ => !is_dropped_xattr(name),
            };
            if !wanted {
                continue;
            }
            let len = loop {
                let r = match src {
                    XattrSource::Fd(fd) => rustix::fs::fgetxattr(fd, name, &mut self.value_buf[..]),
                    XattrSource::Path(host) => {
                        rustix::fs::lgetxattr(host, name, &mut self.value_buf[..])
                    }
                };
                match r {
                    Ok(n) => break Some(n),
                    Err(Errno::RANGE) if self.value_buf.len() < 1 << 20 => {
                        let want = self.value_buf.len() * 4;
                        self.value_buf.resize(want, 0);
                    }
                    Err(Errno::NODATA) => break None,
                    Err(e) => return Err(Error::sys("getxattr", self.host(), e)),
                }
            };
            let Some(len) = len else { continue };
            let value = &self.value_buf[..len];
            match overlay_suffix(name) {
                Some(b"opaque") => marks.opaque = value == b"y",
                Some(b"whiteout") => marks.whiteout = true,
                _ => self.xattrs.push((name.to_vec(), value.to_vec())),
            }
        }
        Ok(())
    }

    /// Writes the header (and PAX header) of `e` at `self.path`, with the
    /// current xattrs when `with_xattrs`.
    fn emit(&mut self, e: &Entry<'_>, with_xattrs: bool) -> Result<()> {
        let path = std::mem::take(&mut self.path);
        let r = self.emit_at(&path, e, with_xattrs);
        self.path = path;
        r
    }

    fn emit_at(&mut self, path: &[u8], e: &Entry<'_>, with_xattrs: bool) -> Result<()> {
        let path = if e.path.is_empty() { path } else { e.path };
        let mut header = tar::Header::new_ustar();
        self.pax.clear();
        let mut pax = std::mem::take(&mut self.pax);
        {
            let ustar = header.as_ustar_mut().ok_or_else(|| Error::Write {
                source: io::Error::other("ustar header expected"),
            })?;
            match ustar_split(path) {
                Some((prefix, name)) => {
                    ustar.prefix[..prefix.len()].copy_from_slice(prefix);
                    ustar.name[..name.len()].copy_from_slice(name);
                }
                None => {
                    pax_record(&mut pax, b"path", path);
                    ustar.name.copy_from_slice(&path[..100]);
                }
            }
            if e.link.len() > 100 {
                pax_record(&mut pax, b"linkpath", e.link);
                ustar.linkname.copy_from_slice(&e.link[..100]);
            } else {
                ustar.linkname[..e.link.len()].copy_from_slice(e.link);
            }
        }
        if with_xattrs {
            // listxattr order depends on the file system: sort for stable bytes.
            self.xattrs.sort_unstable();
            for (k, v) in &self.xattrs {
                let mut key = Vec::with_capacity(13 + k.len());
                key.extend_from_slice(b"SCHILY.xattr.");
                key.extend_from_slice(k);
                pax_record(&mut pax, &key, v);
            }
        }
        header.set_entry_type(e.kind);
        header.set_mode(e.mode);
        header.set_uid(u64::from(e.uid));
        header.set_gid(u64::from(e.gid));
        header.set_size(e.size);
        header.set_mtime(e.mtime as u64);
        // Written for every entry (0 unless a device), as Go's archive/tar does.
        header
            .set_device_major(e.dev.0)
            .and_then(|()| header.set_device_minor(e.dev.1))
            .map_err(|source| Error::Write { source })?;
        header.set_cksum();
        let r = self
            .write_pax(&pax)
            .and_then(|()| self.out.put(header.as_bytes()));
        self.pax = pax;
        r
    }

    fn write_pax(&mut self, pax: &[u8]) -> Result<()> {
        if pax.is_empty() {
            return Ok(());
        }
        let mut h = tar::Header::new_ustar();
        if let Some(u) = h.as_ustar_mut() {
            let name = b"././@PaxHeader";
            u.name[..name.len()].copy_from_slice(name);
        }
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(pax.len() as u64);
        h.set_cksum();
        self.out.put(h.as_bytes())?;
        self.out.put(pax)?;
        self.out.pad(pax.len() as u64)
    }
}

/// What [`Walker::regular`] wrote.
enum Regular {
    File,
    /// An xattr whiteout (`overlay.whiteout` on an empty file).
    Whiteout,
}

#[derive(Clone, Copy)]
enum XattrSource<'a> {
    Fd(&'a OwnedFd),
    /// `l*xattr` on the host path of the current entry (symlinks, devices).
    Path(&'a Path),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that takes `room` bytes, then fails as a full disk does.
    struct Full {
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from(io::ErrorKind::StorageFull));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_writer_threads_error_is_the_one_reported() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..8 {
            std::fs::write(dir.path().join(format!("f{i}")), vec![7u8; 1 << 20]).unwrap();
        }
        let err = write_layer_from_dir(dir.path(), Full { room: 3 << 20 }, DiffOptions::default())
            .unwrap_err();
        assert!(
            matches!(&err, Error::Write { source } if source.kind() == io::ErrorKind::StorageFull),
            "{err:?}"
        );
        // With room for it all, the same tree goes through.
        let layer =
            write_layer_from_dir(dir.path(), Full { room: 10 << 20 }, DiffOptions::default())
                .unwrap();
        assert!(layer.size > 8 << 20);
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        let mut v = Vec::new();
        pax_record(&mut v, b"path", b"a");
        assert_eq!(v, b"9 path=a\n");
        v.clear();
        // 2-digit length crossing into 3 digits.
        let val = vec![b'x'; 92];
        pax_record(&mut v, b"path", &val);
        let len: usize = std::str::from_utf8(&v[..v.iter().position(|b| *b == b' ').unwrap()])
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, v.len());
    }

    #[test]
    fn ustar_split_keeps_names_within_fields() {
        assert_eq!(
            ustar_split(b"etc/passwd"),
            Some((&b""[..], &b"etc/passwd"[..]))
        );
        let long = [vec![b'a'; 120], b"/".to_vec(), vec![b'b'; 50]].concat();
        let (p, n) = ustar_split(&long).unwrap();
        assert_eq!((p.len(), n.len()), (120, 50));
        assert!(ustar_split(&vec![b'a'; 300]).is_none());
        let dir = [vec![b'a'; 120], b"/".to_vec()].concat();
        assert!(ustar_split(&dir).is_none());
    }

    /// Two walks of a plain tree give the layer of what changed between them: changed and new
    /// entries with their parents, deletions as whiteouts in their sorted place, ignored paths
    /// left out.
    #[test]
    fn changes_between_walks_make_the_layer() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["a/b", "keep", "del/sub", "dev", "same"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in ["a/b/c", "keep/x", "del/sub/y", "z", "same/s"] {
            std::fs::write(root.join(f), "old").unwrap();
        }
        let before = TreeState::scan(root).unwrap();
        std::fs::write(root.join("a/b/c"), "new content").unwrap();
        std::fs::write(root.join("a/new"), "n").unwrap();
        std::fs::remove_dir_all(root.join("del")).unwrap();
        std::fs::remove_file(root.join("z")).unwrap();
        std::fs::set_permissions(root.join("keep/x"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::write(root.join("dev/null"), "").unwrap();
        let after = TreeState::scan(root).unwrap();
        let changes = Changes::between(&before, &after, &["dev"]);
        let tar = write_layer_filtered(
            root,
            Source::Plain,
            Vec::new(),
            DiffOptions::default(),
            Some(&changes),
        )
        .unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        let paths: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "a/", "a/b/", "a/b/c", "a/new", ".wh.del", "keep/", "keep/x", ".wh.z"
            ]
        );
        assert_eq!(entries[6].1, 0o600);
    }
}
