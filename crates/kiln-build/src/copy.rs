//! `COPY` and `ADD` sources turned into one tar stream, applied to the step's rootfs.
//!
//! Going through a tar lets one piece of code, `kiln_layer::apply_layer`, do every write into
//! the rootfs, with every path resolved inside it: a base image whose `/app` is a symlink to
//! `/etc` cannot make a COPY write to the host's `/etc`. While the tar is written, a digest of
//! the sources' names, metadata and content (not their mtimes) is taken for the cache key.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln_image::Digest;
use rustix::fs::{Mode, OFlags};
use sha2::{Digest as _, Sha256};

use crate::Error;
use crate::context::{IgnoreRules, clean_path};

mod chmod;
pub use chmod::{Change, Chmod, ChmodError};

/// Where sources are read from.
#[derive(Debug, Clone, Copy)]
pub struct SourceRoot<'a> {
    /// The context dir, or the rootfs of a stage or image (`--from`).
    pub root: &'a Path,
    /// `.dockerignore` rules (context only).
    pub ignore: Option<&'a IgnoreRules>,
    /// What the root is when it is no build context (`stage NAME`, `image REF`), for the
    /// errors about sources it lacks.
    pub of: Option<&'a str>,
}

/// What to do with the sources.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// `--chown`, resolved to ids.
    pub owner: Option<(u32, u32)>,
    /// `--chmod`.
    pub chmod: Option<Chmod>,
    /// `ADD`: local tar archives are extracted into the destination.
    pub extract_archives: bool,
    /// Without `--chown`, sources keep their uid/gid (`COPY --from`, as docker does); otherwise
    /// they become root's (the build context).
    pub keep_owners: bool,
    /// `--exclude` patterns, matched against paths below each source (BuildKit's
    /// testExcludedFilesOnCopy): what they match is left out, as `.dockerignore` leaves it out.
    /// A source named on its own is never left out.
    pub exclude: IgnoreRules,
}

/// One source matched in the source root.
#[derive(Debug, Clone)]
pub struct Matched {
    /// Relative to the source root.
    pub path: String,
    /// `COPY --parents`: `path` is a directory, and what this matches below it is copied, with
    /// the directories on the way (as BuildKit copies it, an include pattern on the directory).
    pub include: Option<Include>,
}

impl Matched {
    /// A source copied as it is.
    pub fn path(path: impl Into<String>) -> Matched {
        Matched {
            path: path.into(),
            include: None,
        }
    }
}

/// The pattern of a `COPY --parents` source below its pivot directory.
#[derive(Debug, Clone)]
pub struct Include {
    /// `.dockerignore` semantics: an entry is included if the pattern matches it or a
    /// directory above it.
    rules: IgnoreRules,
    /// One glob per component, `None` for `**`: which directories can hold a match.
    components: Vec<Option<globset::GlobMatcher>>,
}

impl Include {
    fn new(pattern: &str) -> Result<Include, Error> {
        let rules = IgnoreRules::from_patterns([pattern], "COPY --parents")?;
        let components = pattern
            .split('/')
            .map(|part| {
                if part == "**" {
                    return Ok(None);
                }
                globset::GlobBuilder::new(part)
                    .backslash_escape(true)
                    .build()
                    .map(|g| Some(g.compile_matcher()))
                    .map_err(|e| {
                        Error::BadInput(format!("COPY --parents {pattern:?}: bad pattern: {e}"))
                    })
            })
            .collect::<Result<_, Error>>()?;
        Ok(Include { rules, components })
    }

    fn includes(&self, below: &str) -> bool {
        self.rules.is_excluded(below)
    }

    /// Whether something below directory `dir` (not matched itself) may match.
    fn may_hold_a_match(&self, dir: &str) -> bool {
        let mut parts = dir.split('/');
        for component in &self.components {
            let Some(glob) = component else {
                return true;
            };
            match parts.next() {
                None => return true,
                Some(part) if glob.is_match(part) => {}
                Some(_) => return false,
            }
        }
        false
    }
}

/// Expands one source pattern (`*.txt`, `dir/`, `.`) against the source root.
///
/// The pattern has Go's `filepath.Match` rules, as in BuildKit: `*` stays within one path
/// component and `**` is no more than `*` (unlike `.dockerignore`, where `**` spans
/// directories). A directory that `.dockerignore` excludes still counts when an exception
/// (`!dir/file`) brings something below it back: docker's context holds it, with that inside.
pub fn match_sources(src: SourceRoot<'_>, pattern: &str) -> Result<Vec<Matched>, Error> {
    let cleaned = clean_path(pattern);
    let excluded = |rel: &str| {
        src.ignore.is_some_and(|i| {
            !rel.is_empty() && i.is_excluded(rel) && !reincludes_below(src.root, rel, i)
        })
    };
    if !cleaned.contains(['*', '?', '[']) {
        if excluded(&cleaned) || open_in_root(src.root, &cleaned).is_err() {
            return Err(Error::BadInput(match src.of {
                // BuildKit's words, the path quoted from the root.
                Some(of) => format!("{:?}: not found in {of}", format!("/{cleaned}")),
                None => format!(
                    "source {pattern:?} was not found in the build context (or is excluded by \
                     .dockerignore)"
                ),
            }));
        }
        return Ok(vec![Matched::path(cleaned)]);
    }
    let glob = globset::GlobBuilder::new(&go_match_pattern(&cleaned))
        .literal_separator(true)
        .build()
        .map_err(|e| Error::BadInput(format!("source pattern {pattern:?} is invalid: {e}")))?
        .compile_matcher();
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(src.root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry =
            entry.map_err(|e| Error::BadInput(format!("walk {}: {e}", src.root.display())))?;
        let rel = relative(src.root, entry.path());
        if glob.is_match(&rel) && !excluded(&rel) {
            found.push(Matched::path(rel));
        }
    }
    if found.is_empty() {
        return Err(Error::BadInput(format!(
            "no source files were specified: nothing in {} matches {pattern:?}",
            src.of.unwrap_or("the build context")
        )));
    }
    Ok(found)
}

/// Expands one `COPY --parents` source: `pivot/./pattern` copies what `pattern` matches below
/// `pivot`, with the directories between (a pivot may have wildcards); without `/./`, the pivot
/// is the source root. As in BuildKit (dockerfile2llb's dispatchCopy), a source without
/// wildcards must be there; one with wildcards may match nothing.
pub fn match_parents(src: SourceRoot<'_>, source: &str) -> Result<Vec<Matched>, Error> {
    let (pivot, pattern) = source.split_once("/./").unwrap_or(("/", source));
    let pattern = clean_path(pattern);
    let wild = |p: &str| p.contains(['*', '?', '[']);
    if !wild(pivot) && !wild(&pattern) {
        // The error when it is missing (or ignored).
        match_sources(src, &join(&clean_path(pivot), &pattern))?;
    }
    let include = if pattern.is_empty() {
        None
    } else {
        Some(Include::new(&pattern)?)
    };
    let pivots = if wild(pivot) {
        match_sources(src, pivot).unwrap_or_default()
    } else {
        vec![Matched::path(clean_path(pivot))]
    };
    Ok(pivots
        .into_iter()
        .filter(|m| kind_in_root(src.root, &m.path).is_some())
        .map(|m| Matched {
            path: m.path,
            include: include.clone(),
        })
        .collect())
}

/// A `filepath.Match` pattern as a globset one: `**` (any run of stars) is a single `*`.
fn go_match_pattern(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push(c);
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            '*' => {
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                out.push('*');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Whether an excluded `rel` is a directory with something below it that an exception of
/// `.dockerignore` re-includes.
fn reincludes_below(root: &Path, rel: &str, ignore: &IgnoreRules) -> bool {
    if !ignore.has_exclusions() {
        return false;
    }
    let Ok(fd) = open_in_root(root, rel) else {
        return false;
    };
    let host = fd_path(&fd);
    if !std::fs::metadata(&host).is_ok_and(|m| m.is_dir()) {
        return false;
    }
    walkdir::WalkDir::new(&host)
        .min_depth(1)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .any(|e| !ignore.is_excluded(&join(rel, &relative(&host, e.path()))))
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// Opens `rel` inside `root` with every symlink resolved inside `root`.
pub fn open_in_root(root: &Path, rel: &str) -> io::Result<OwnedFd> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(kiln_layer::open_in_root(
        &root_fd,
        rel.as_bytes(),
        OFlags::PATH,
    )?)
}

/// A path through which the file an fd refers to can be opened and walked.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// What a path inside a rootfs is, symlinks resolved inside it.
pub fn kind_in_root(root: &Path, path: &str) -> Option<std::fs::FileType> {
    let fd = open_in_root(root, &clean_path(path)).ok()?;
    std::fs::metadata(fd_path(&fd)).ok().map(|m| m.file_type())
}

/// What the destination path is while the sources are written, one after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DestState {
    /// Not there (or not known: no rootfs to look in).
    Missing,
    Dir,
    /// A file or anything else that is not a directory.
    Other,
}

/// Writes the tar that places `sources` at `dest` (an absolute container path; a trailing `/`
/// or an existing directory means "into"). `rootfs` is the step's merged view, consulted for
/// what exists; without it (to take the cache key only, into `io::sink()`) nothing is looked
/// up. Returns the digest of the sources' names, metadata and content: the same with or
/// without a rootfs.
///
/// Several sources go to `dest` in turn, as BuildKit's copy (fsutil's `prepareTargetDir`)
/// takes them, whether or not `dest` ends with `/`: a file goes into `dest` if it is a
/// directory by then, else becomes `dest` (the last one stays); a directory's contents, or an
/// archive's, make `dest` a directory.
pub fn write_copy_tar(
    src: SourceRoot<'_>,
    sources: &[Matched],
    dest: &str,
    rootfs: Option<&Path>,
    options: &CopyOptions,
    out: impl Write,
) -> Result<Digest, Error> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    let mut key = Sha256::new();
    let dest_clean = match rootfs {
        Some(root) => resolve_in_root(root, &clean_path(dest))?,
        None => clean_path(dest),
    };
    let spelled_as_dir = dest.ends_with('/') || dest_clean.is_empty();
    let mut dest_state = match rootfs.and_then(|r| kind_in_root(r, &dest_clean)) {
        None => DestState::Missing,
        Some(kind) if kind.is_dir() => DestState::Dir,
        Some(_) => DestState::Other,
    };
    let not_a_dir = |what: &str| {
        Error::BadInput(format!(
            "cannot copy {what} to {dest:?}: it is not a directory (an earlier source, or the \
             image, put a file there); end the destination with / to copy into a directory"
        ))
    };
    let mut writer = TarWriter {
        tar: &mut tar,
        key: &mut key,
        options,
        rootfs,
        links: HashMap::new(),
    };
    for Matched { path: rel, include } in sources {
        let fd =
            open_in_root(src.root, rel).map_err(Error::io("open source", src.root.join(rel)))?;
        let host = fd_path(&fd);
        let meta = std::fs::metadata(&host).map_err(Error::io("stat", src.root.join(rel)))?;
        if meta.is_dir() {
            if dest_state == DestState::Other {
                return Err(not_a_dir(&format!("the directory {rel:?}")));
            }
            writer.ensure_dir(&dest_clean)?;
            writer.walk_dir(&host, rel, &dest_clean, src.ignore, include.as_ref())?;
            dest_state = DestState::Dir;
        } else if options.extract_archives && is_tar(&host) {
            if dest_state == DestState::Other {
                return Err(not_a_dir(&format!("the archive {rel:?}")));
            }
            // BuildKit's unpack makes the destination 0755 whatever --chmod says.
            writer.ensure_dir_mode(&dest_clean, 0o755)?;
            writer.extract(&host, &dest_clean)?;
            dest_state = DestState::Dir;
        } else {
            let name = Path::new(rel)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let into_dir = spelled_as_dir || dest_state == DestState::Dir;
            let target = if into_dir {
                join(&dest_clean, &name)
            } else {
                dest_clean.clone()
            };
            if let Some(parent) = Path::new(&target).parent() {
                writer.ensure_dir(&parent.to_string_lossy())?;
            }
            writer.entry(&host, &meta, &target, rel)?;
            if into_dir {
                dest_state = DestState::Dir;
            } else if rootfs.is_some() {
                dest_state = DestState::Other;
            }
        }
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(Error::archive("write copy stream"))?;
    Ok(Digest::from_hasher(key))
}

/// `rel` with every symlink on it followed inside `root`, as BuildKit resolves a COPY
/// destination (continuity's `fs.RootPath`): a link to a path that is not there yet is
/// followed too, so the copy creates the link's target and the link stays. `..`, in `rel` or in
/// a link, stops at the root. Components from the first missing one on are taken as written.
fn resolve_in_root(root: &Path, rel: &str) -> Result<String, Error> {
    // continuity's limit.
    const MAX_LINKS: usize = 255;
    let mut done: Vec<String> = Vec::new();
    let mut todo: std::collections::VecDeque<String> = rel
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    let mut links = 0;
    let mut missing = false;
    while let Some(comp) = todo.pop_front() {
        match comp.as_str() {
            "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        if !missing {
            let here = done.join("/");
            let dir = open_in_root(root, &here)
                .map_err(Error::io("open destination directory", root.join(&here)))?;
            let path = || root.join(&here).join(&comp);
            match rustix::fs::statat(&dir, comp.as_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_symlink() => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(Error::BadInput(format!(
                            "destination {rel:?}: more than {MAX_LINKS} symlinks to follow"
                        )));
                    }
                    let target = rustix::fs::readlinkat(&dir, comp.as_str(), Vec::new())
                        .map_err(|e| Error::io("readlink", path())(e.into()))?;
                    let target = target.to_string_lossy().into_owned();
                    if target.starts_with('/') {
                        done.clear();
                    }
                    for part in target.split('/').filter(|c| !c.is_empty()).rev() {
                        todo.push_front(part.to_owned());
                    }
                    continue;
                }
                Ok(_) => {}
                Err(rustix::io::Errno::NOENT) => missing = true,
                Err(e) => return Err(Error::io("stat", path())(e.into())),
            }
        }
        done.push(comp);
    }
    Ok(done.join("/"))
}

/// Whether slash path `path` is strictly below `dir`.
fn is_below(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.starts_with('/'))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

struct TarWriter<'a, W: Write> {
    tar: &'a mut tar::Builder<W>,
    key: &'a mut Sha256,
    options: &'a CopyOptions,
    rootfs: Option<&'a Path>,
    /// Files with more than one link, by (device, inode), and where the first one went: the
    /// others become hardlinks to it, as docker keeps them.
    links: HashMap<(u64, u64), String>,
}

impl<W: Write> TarWriter<'_, W> {
    /// Adds entries for the missing directories of `dir`, owned as `--chown` says, as BuildKit
    /// creates them: with the permission bits of an octal `--chmod`, else 0755 (fsutil's
    /// MkdirAll since 183e7fb; BuildKit's testCopyChmod; a symbolic mode is not used there). Existing directories are left as
    /// they are.
    fn ensure_dir(&mut self, dir: &str) -> Result<(), Error> {
        let mode = self.options.chmod.as_ref().map_or(0o755, Chmod::dir_mode);
        self.ensure_dir_mode(dir, mode)
    }

    /// [`Self::ensure_dir`] with the mode of the directories it makes.
    fn ensure_dir_mode(&mut self, dir: &str, mode: u32) -> Result<(), Error> {
        let Some(rootfs) = self.rootfs else {
            return Ok(());
        };
        let mut prefix = String::new();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            prefix = join(&prefix, part);
            if kind_in_root(rootfs, &prefix).is_none() {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(mode);
                let (uid, gid) = self.options.owner.unwrap_or((0, 0));
                header.set_uid(uid.into());
                header.set_gid(gid.into());
                header.set_mtime(0);
                header.set_size(0);
                self.tar
                    .append_data(&mut header, format!("{prefix}/"), io::empty())
                    .map_err(Error::archive("write copy stream"))?;
            }
        }
        Ok(())
    }

    /// Copies the contents of the directory `host` (`rel` in the source root) to `dest`: what
    /// `.dockerignore` (context-relative paths) and `--exclude` (paths below `rel`) leave, and,
    /// for `--parents`, what `include` matches.
    fn walk_dir(
        &mut self,
        host: &Path,
        rel: &str,
        dest: &str,
        ignore: Option<&IgnoreRules>,
        include: Option<&Include>,
    ) -> Result<(), Error> {
        let exclude = &self.options.exclude;
        let walker = walkdir::WalkDir::new(host)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name();
        let mut walker = walker.into_iter();
        // Directories left out that something below may still bring back (an exception, or the
        // --parents pattern): if something below one is copied, the directory comes too, with
        // its own metadata (as docker's context has it, and as BuildKit's copy makes a
        // parent), not as a parent made up with 0755.
        let mut pending: Vec<(PathBuf, String)> = Vec::new();
        let stat = |path: &Path| {
            std::fs::symlink_metadata(path)
                .map_err(|e| Error::BadInput(format!("stat {}: {e}", path.display())))
        };
        while let Some(entry) = walker.next() {
            let entry =
                entry.map_err(|e| Error::BadInput(format!("walk {}: {e}", host.display())))?;
            let below = relative(host, entry.path());
            let context_rel = join(rel, &below);
            pending.retain(|(_, dir)| is_below(&below, dir));
            let ignored = ignore.is_some_and(|i| i.is_excluded(&context_rel));
            let excluded = exclude.is_excluded(&below);
            let left_out = include.is_some_and(|i| !i.includes(&below));
            if ignored || excluded || left_out {
                // Each rule that leaves it out must be able to bring back something below.
                let worth_walking = (!ignored || ignore.is_some_and(IgnoreRules::has_exclusions))
                    && (!excluded || exclude.has_exclusions())
                    && (!left_out || include.is_some_and(|i| i.may_hold_a_match(&below)));
                if entry.file_type().is_dir() {
                    if worth_walking {
                        pending.push((entry.path().to_path_buf(), below));
                    } else {
                        walker.skip_current_dir();
                    }
                }
                continue;
            }
            for (path, dir) in pending.drain(..) {
                self.entry(&path, &stat(&path)?, &join(dest, &dir), &join(rel, &dir))?;
            }
            let meta = stat(entry.path())?;
            self.entry(entry.path(), &meta, &join(dest, &below), &context_rel)?;
        }
        Ok(())
    }

    /// `source` names the entry in the cache key: where it comes from, not where it goes, so the
    /// key does not depend on what the rootfs holds.
    fn entry(
        &mut self,
        host: &Path,
        meta: &std::fs::Metadata,
        target: &str,
        source: &str,
    ) -> Result<(), Error> {
        let mut header = tar::Header::new_gnu();
        let file_type = meta.file_type();
        let mode = match &self.options.chmod {
            Some(chmod) => chmod.apply(meta.mode(), file_type.is_dir()),
            None => meta.mode() & 0o7777,
        };
        let (uid, gid) = match self.options.owner {
            Some(owner) => owner,
            None if self.options.keep_owners => (meta.uid(), meta.gid()),
            None => (0, 0),
        };
        header.set_mode(mode);
        header.set_uid(uid.into());
        header.set_gid(gid.into());
        header.set_mtime(meta.mtime().max(0) as u64);
        let record =
            |kind: &str, extra: &str| format!("{kind} {source} {mode:o} {uid}:{gid} {extra}\0");
        let err = Error::archive("write copy stream");
        if file_type.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            self.key.update(record("dir", "").as_bytes());
            self.tar
                .append_data(&mut header, format!("{target}/"), io::empty())
                .map_err(err)
        } else if file_type.is_symlink() {
            let link = std::fs::read_link(host).map_err(Error::io("readlink", host))?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            self.key
                .update(record("link", &link.to_string_lossy()).as_bytes());
            self.tar
                .append_link(&mut header, target, &link)
                .map_err(err)
        } else if file_type.is_file()
            && meta.nlink() > 1
            && let Some(first) = self.links.get(&(meta.dev(), meta.ino()))
        {
            header.set_entry_type(tar::EntryType::Link);
            header.set_size(0);
            self.key.update(record("hardlink", first).as_bytes());
            let first = first.clone();
            self.tar
                .append_link(&mut header, target, first)
                .map_err(err)
        } else if file_type.is_file() {
            if meta.nlink() > 1 {
                self.links
                    .insert((meta.dev(), meta.ino()), target.to_owned());
            }
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let file = File::open(host).map_err(Error::io("open", host))?;
            self.key
                .update(record("file", &meta.len().to_string()).as_bytes());
            let mut content = KeyedReader {
                inner: io::BufReader::with_capacity(1 << 20, file),
                key: self.key,
            };
            self.tar
                .append_data(&mut header, target, &mut content)
                .map_err(err)
        } else if std::os::unix::fs::FileTypeExt::is_socket(&file_type) {
            // BuildKit sends a socket of the context as an empty file.
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(0);
            self.key.update(record("socket", "").as_bytes());
            self.tar
                .append_data(&mut header, target, io::empty())
                .map_err(err)
        } else {
            // Fifos and devices in a build context are not content; BuildKit skips them too.
            Ok(())
        }
    }

    /// `ADD` of a local archive ([`is_tar`]): its entries go under `dest`, owned as `--chown`
    /// says if it is given.
    fn extract(&mut self, host: &Path, dest: &str) -> Result<(), Error> {
        let file = File::open(host).map_err(Error::io("open", host))?;
        let plain = kiln_layer::decompress_auto(io::BufReader::with_capacity(1 << 20, file))?;
        let mut archive = tar::Archive::new(KeyedReader {
            inner: plain,
            key: self.key,
        });
        let err = || Error::archive("read archive to extract");
        for entry in archive.entries().map_err(err())? {
            let mut entry = entry.map_err(err())?;
            let name = clean_path(&String::from_utf8_lossy(&entry.path_bytes()));
            if name.is_empty() {
                continue;
            }
            let mut header = entry.header().clone();
            // BuildKit's unpack gives --chown to every extracted entry (the untar's ChownOpts;
            // testDockerfileAddChownArchive). docker 20.10's kept the archive's owners.
            if let Some((uid, gid)) = self.options.owner {
                header.set_uid(uid.into());
                header.set_gid(gid.into());
            }
            let target = join(dest, &name);
            match header.entry_type() {
                tar::EntryType::Link => {
                    let link = entry
                        .link_name_bytes()
                        .map(|l| clean_path(&String::from_utf8_lossy(&l)))
                        .unwrap_or_default();
                    self.tar
                        .append_link(&mut header, &target, join(dest, &link))
                        .map_err(Error::archive("write copy stream"))?;
                }
                tar::EntryType::Symlink => {
                    let link = entry
                        .link_name_bytes()
                        .map(|l| String::from_utf8_lossy(&l).into_owned())
                        .unwrap_or_default();
                    self.tar
                        .append_link(&mut header, &target, link)
                        .map_err(Error::archive("write copy stream"))?;
                }
                tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink => {}
                _ => self
                    .tar
                    .append_data(&mut header, &target, &mut entry)
                    .map_err(Error::archive("write copy stream"))?,
            }
        }
        Ok(())
    }
}

/// Whether a file is a (possibly compressed) tar archive, as `ADD` decides: its first header
/// must parse and checksum.
fn is_tar(host: &Path) -> bool {
    let Ok(file) = File::open(host) else {
        return false;
    };
    let Ok(mut plain) = kiln_layer::decompress_auto(io::BufReader::new(file)) else {
        return false;
    };
    let mut block = [0u8; 512];
    if plain.read_exact(&mut block).is_err() {
        return false;
    }
    let header = tar::Header::from_byte_slice(&block);
    let Ok(sum) = header.cksum() else {
        return false;
    };
    let computed: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    sum == computed && block[0] != 0
}

/// Hashes what the tar builder reads, so content is read once for both.
struct KeyedReader<'a, R> {
    inner: R,
    key: &'a mut Sha256,
}

impl<R: Read> Read for KeyedReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.key.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for file in files {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        }
        dir
    }

    fn names(found: Vec<Matched>) -> Vec<String> {
        found.into_iter().map(|m| m.path).collect()
    }

    #[test]
    fn double_star_is_a_single_star_in_copy_sources() {
        assert_eq!(go_match_pattern("**/*.md"), "*/*.md");
        assert_eq!(go_match_pattern("a/***b"), "a/*b");
        assert_eq!(go_match_pattern(r"lit\*/*"), r"lit\*/*");
        let dir = tree(&["top.md", "a/one.md", "a/b/two.md"]);
        let src = SourceRoot {
            root: dir.path(),
            ignore: None,
            of: None,
        };
        assert_eq!(names(match_sources(src, "**/*.md").unwrap()), ["a/one.md"]);
    }

    /// The entries of a copy tar: (path, type, uid, link target).
    fn copy_entries(
        src: SourceRoot<'_>,
        sources: &[&str],
        dest: &str,
        options: &CopyOptions,
    ) -> Vec<(String, tar::EntryType, u64, String)> {
        let matched: Vec<Matched> = sources.iter().map(|s| Matched::path(*s)).collect();
        let mut out = Vec::new();
        write_copy_tar(src, &matched, dest, None, options, &mut out).unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.display().to_string())
                    .unwrap_or_default();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().entry_type(),
                    e.header().uid().unwrap(),
                    link,
                )
            })
            .collect()
    }

    #[test]
    fn a_destination_follows_links_inside_the_root_even_to_nothing() {
        let root = tree(&["real/file"]);
        let link = |target: &str, at: &str| {
            std::os::unix::fs::symlink(target, root.path().join(at)).unwrap();
        };
        link("/x/y", "abs");
        link("../../../up", "climb");
        link("real", "dir");
        link("abs", "chain");
        link("loop", "loop");
        let resolve = |rel: &str| resolve_in_root(root.path(), rel);
        assert_eq!(resolve("abs").unwrap(), "x/y");
        assert_eq!(resolve("abs/deeper/name").unwrap(), "x/y/deeper/name");
        assert_eq!(resolve("climb/f").unwrap(), "up/f");
        assert_eq!(resolve("dir/file").unwrap(), "real/file");
        assert_eq!(resolve("chain/../z").unwrap(), "x/z");
        assert_eq!(resolve("").unwrap(), "");
        let err = resolve("loop/f").unwrap_err();
        assert!(format!("{err}").contains("more than 255 symlinks"), "{err}");
        assert!(!root.path().join("x").exists(), "nothing is created");
    }

    #[test]
    fn a_parents_pattern_says_which_directories_to_walk() {
        let include = Include::new("c/*/e").unwrap();
        assert!(include.includes("c/d/e"));
        assert!(include.includes("c/d/e/below"));
        assert!(!include.includes("c/d"));
        assert!(include.may_hold_a_match("c"));
        assert!(include.may_hold_a_match("c/d"));
        assert!(!include.may_hold_a_match("c2"));
        assert!(!include.may_hold_a_match("c/d/f"));
        let spanning = Include::new("src/**/*.txt").unwrap();
        assert!(spanning.includes("src/a.txt"));
        assert!(spanning.includes("src/x/y/c.txt"));
        assert!(spanning.may_hold_a_match("src/x/y"));
        assert!(!spanning.may_hold_a_match("other"));
    }

    #[test]
    fn hardlinks_among_the_sources_stay_hardlinks() {
        let dir = tree(&["d/a"]);
        std::fs::hard_link(dir.path().join("d/a"), dir.path().join("d/b")).unwrap();
        let src = SourceRoot {
            root: dir.path(),
            ignore: None,
            of: None,
        };
        let entries = copy_entries(src, &["d"], "/out/", &CopyOptions::default());
        let kinds: Vec<_> = entries
            .iter()
            .map(|(p, k, _, l)| (p.as_str(), *k, l.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("out/a", tar::EntryType::Regular, ""),
                ("out/b", tar::EntryType::Link, "out/a")
            ]
        );
    }

    #[test]
    fn owners_are_kept_only_when_asked() {
        let dir = tree(&["f"]);
        let src = SourceRoot {
            root: dir.path(),
            ignore: None,
            of: None,
        };
        let uid = u64::from(std::fs::metadata(dir.path().join("f")).unwrap().uid());
        let root_owned = copy_entries(src, &["f"], "/f", &CopyOptions::default());
        assert_eq!(root_owned[0].2, 0);
        let keep = CopyOptions {
            keep_owners: true,
            ..CopyOptions::default()
        };
        assert_eq!(copy_entries(src, &["f"], "/f", &keep)[0].2, uid);
        let chown = CopyOptions {
            owner: Some((42, 43)),
            keep_owners: true,
            ..CopyOptions::default()
        };
        assert_eq!(copy_entries(src, &["f"], "/f", &chown)[0].2, 42);
    }

    #[test]
    fn an_excluded_dir_comes_with_what_an_exception_brings_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tree(&["docs/keep.md", "docs/drop.md", "other/x"]);
        let docs = dir.path().join("docs");
        std::fs::set_permissions(&docs, std::fs::Permissions::from_mode(0o750)).unwrap();
        let rules = IgnoreRules::parse("docs\n!docs/keep.md\nother\n").unwrap();
        let src = SourceRoot {
            root: dir.path(),
            ignore: Some(&rules),
            of: None,
        };
        let mut out = Vec::new();
        let matched = [Matched::path("")];
        write_copy_tar(
            src,
            &matched,
            "/ctx/",
            None,
            &CopyOptions::default(),
            &mut out,
        )
        .unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap() & 0o7777,
                )
            })
            .collect();
        let names: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["ctx/docs/", "ctx/docs/keep.md"]);
        assert_eq!(entries[0].1, 0o750);
    }

    #[test]
    fn an_excluded_dir_with_an_exception_below_is_a_source() {
        let dir = tree(&["docs/README.md", "docs/other.md", "secret/key"]);
        let rules = IgnoreRules::parse("docs\n!docs/README.md\nsecret\n").unwrap();
        let src = SourceRoot {
            root: dir.path(),
            ignore: Some(&rules),
            of: None,
        };
        assert_eq!(names(match_sources(src, "docs").unwrap()), ["docs"]);
        assert_eq!(names(match_sources(src, "doc*").unwrap()), ["docs"]);
        for excluded in ["secret", "docs/other.md"] {
            let err = match_sources(src, excluded).unwrap_err();
            assert!(
                matches!(&err, Error::BadInput(why) if why.starts_with(&format!(
                    "source {excluded:?} was not found in the build context (or is excluded"
                ))),
                "{err:?}"
            );
        }
    }
}
