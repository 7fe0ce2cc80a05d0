//! `COPY`, `ADD` and `WORKDIR`: steps that write files into the rootfs without running
//! anything. The writes go through an overlay mount, so the upper dir holds exactly the change,
//! and then through the same commit as a `RUN`.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use kiln_dockerfile::Instruction;
use kiln_image::Digest;
use kiln_layer::{ApplyMode, ApplyOptions};
use sha2::{Digest as _, Sha256};

use super::stage::{StageState, StepContext, commit_upper, push_history};
use crate::Error;
use crate::copy::{self, CopyOptions, Matched, SourceRoot};
use crate::snapshot::{self, OverlayMount, StepDirs};
use crate::support::{chown_id, split_chown};

/// Where a COPY or ADD reads from, resolved before the cache lookup.
pub(crate) enum Origin {
    /// The build context.
    Context(PathBuf),
    /// A directory `--build-context`.
    Named(crate::context::Context),
    /// A stage built earlier, or an image: its layers.
    Layers {
        layers: Vec<kiln_image::Descriptor>,
        diff_ids: Vec<Digest>,
        /// `stage NAME` or `image REF`, for the errors about missing sources.
        what: String,
    },
    /// Files kiln wrote itself (heredoc sources, downloads), in a staging dir.
    Staged(tempfile::TempDir),
}

/// A COPY or ADD with its sources found and keyed.
pub(crate) struct Plan {
    origin: Origin,
    patterns: Vec<String>,
    dest: String,
    chown: Option<String>,
    chmod: Option<String>,
    extract: bool,
    /// `--link` as BuildKit applies it: the copy is made onto an empty root.
    link: bool,
    key: Digest,
    created_by: String,
}

impl Plan {
    /// What the cache key adds for the sources.
    pub fn key(&self) -> &Digest {
        &self.key
    }

    /// The absolute destination of a `--link` copy, whose layer does not depend on the stage
    /// it is laid on; `None` for a copy onto the stage.
    pub fn link_dest(&self) -> Option<&str> {
        self.link.then_some(self.dest.as_str())
    }
}

/// Finds the sources of a COPY/ADD and digests them for the cache key.
pub(crate) fn plan(ctx: &StepContext<'_, '_>, state: &StageState) -> Result<Plan, Error> {
    let builder = ctx.builder;
    let (sources, inline, dest, from, chown, chmod, extract, checksum, link) = match &ctx.inst.value
    {
        Instruction::Copy(c) => (
            &c.sources,
            &c.inline_sources,
            &c.dest,
            c.from.clone(),
            c.chown.clone(),
            c.chmod.clone(),
            false,
            None,
            c.link,
        ),
        Instruction::Add(a) => (
            &a.sources,
            &a.inline_sources,
            &a.dest,
            None,
            a.chown.clone(),
            a.chmod.clone(),
            a.unpack.unwrap_or(true),
            a.checksum.clone(),
            a.link,
        ),
        _ => return Err(Error::BadInput("not a COPY or ADD".into())),
    };
    // BuildKit (dockerfile2llb's dispatchCopy) links only a copy without --chmod; with one it
    // copies onto the stage as if --link were not given.
    let link = crate::support::links(link, chmod.as_deref());
    // An empty value (`--chown=$UNSET`) is no --chown, as BuildKit takes it. A name with
    // --link was refused by the plan (support::check_expanded).
    let chown = chown.filter(|spec| !spec.is_empty());

    // BuildKit's history: the keyword, the (expanded) sources and destination, no flags.
    let created_by = if inline.is_empty() {
        format!(
            "{} {} {} # buildkit",
            ctx.inst.keyword.to_uppercase(),
            sources.join(" "),
            dest
        )
    } else {
        format!("{} # buildkit", ctx.inst.original)
    };
    let dest = absolute_dest(&state.workdir(), dest);
    let mut key = Sha256::new();
    let is_url = |s: &str| s.starts_with("http://") || s.starts_with("https://");
    // `ADD <git URL>`: one source, the repository (BuildKit's rule and words).
    let mut git_source = None;
    // The commit an `ADD <git URL>` fetched: what its step is keyed on.
    let mut git_commit = None;
    if let Instruction::Add(add) = &ctx.inst.value {
        for source in sources.iter() {
            if let Some(remote @ crate::git::Remote::Git { .. }) =
                crate::git::Remote::parse(source)?
            {
                if sources.len() != 1 {
                    return Err(Error::BadInput(
                        "ADD: when using a git source, only one source can be specified".into(),
                    ));
                }
                git_source = Some(remote);
            }
        }
        if add.keep_git_dir.is_some() && git_source.is_none() {
            return Err(Error::BadInput(
                "ADD --keep-git-dir: only a git source has a .git directory".into(),
            ));
        }
        let urls = git_source.is_some() || sources.iter().any(|s| is_url(s));
        if add.checksum.is_some() && !urls {
            // BuildKit's words.
            return Err(Error::BadInput(
                "ADD --checksum: checksum requires HTTP(S) or Git sources".into(),
            ));
        }
        if add.unpack == Some(true) && git_source.is_some() {
            return Err(Error::BadInput(
                "ADD --unpack=true of a git source: a checkout is files, not an archive".into(),
            ));
        }
    }
    let (origin, patterns) = if !inline.is_empty() {
        let dir = tempfile::tempdir_in(builder.store.root().join("tmp"))
            .map_err(Error::io("create staging dir", builder.store.root()))?;
        let mut names = Vec::new();
        for source in inline {
            let name = heredoc_file_name(&ctx.inst.keyword, &source.name)?;
            let mut file = create_staged(dir.path(), &name, 0o644)?;
            file.write_all(source.data.as_bytes())
                .map_err(Error::io("write", dir.path().join(&name)))?;
            names.push(name);
        }
        (Origin::Staged(dir), names)
    } else if let Some(crate::git::Remote::Git {
        url,
        reference,
        subdir,
        options,
    }) = git_source
    {
        // The flag or the URL's query keeps it, as BuildKit's convert adds either.
        let keep_git_dir = matches!(&ctx.inst.value, Instruction::Add(add) if add.keep_git_dir == Some(true))
            || options.keep_git_dir == Some(true);
        let checksum = checksum.or(options.checksum);
        let dir = tempfile::tempdir_in(builder.store.root().join("tmp"))
            .map_err(Error::io("create staging dir", builder.store.root()))?;
        let checkout = dir.path().join("checkout");
        std::fs::create_dir(&checkout).map_err(Error::io("create directory", &checkout))?;
        git_commit = Some(crate::git::checkout(
            &url,
            reference.as_deref(),
            &checkout,
            keep_git_dir,
            checksum.as_deref(),
            options.submodules != Some(false),
        )?);
        let root = crate::git::subdir_of(&checkout, subdir.as_deref(), &url)?;
        let real_dir = dir
            .path()
            .canonicalize()
            .map_err(Error::io("resolve", dir.path()))?;
        let rel = root
            .strip_prefix(&real_dir)
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "checkout".to_owned());
        (Origin::Staged(dir), vec![rel])
    } else if sources.iter().any(|s| is_url(s)) {
        let dir = tempfile::tempdir_in(builder.store.root().join("tmp"))
            .map_err(Error::io("create staging dir", builder.store.root()))?;
        let mut names = Vec::new();
        for url in sources {
            if !is_url(url) {
                return Err(Error::BadInput(format!(
                    "ADD mixes URLs and local paths ({url:?}); use one ADD for each"
                )));
            }
            names.push(download(
                builder.request.registry.as_deref(),
                url,
                dir.path(),
                checksum.as_deref(),
            )?);
        }
        (Origin::Staged(dir), names)
    } else if let Some(from) = from {
        if let Some(dir) = builder.dir_context(&from) {
            (Origin::Named(dir.clone()), sources.clone())
        } else if let Some(dep) = builder.stage_for(&from, ctx.stage_index) {
            let dep_state = builder.built[dep].get().ok_or_else(|| {
                Error::BadInput(format!("COPY --from={from}: that stage was not built"))
            })?;
            key.update(dep_state.key.as_str().as_bytes());
            (
                Origin::Layers {
                    layers: dep_state.layers.clone(),
                    diff_ids: dep_state.config.rootfs.diff_ids.clone(),
                    what: format!("stage {from}"),
                },
                sources.clone(),
            )
        } else {
            let image = builder.resolve_image(&from, &builder.stage_platform(ctx.stage_index)).map_err(|_| {
                Error::BadInput(format!("COPY --from={from}: no stage of that name before this one, and no image of that name in the store"))
            })?;
            key.update(image.manifest_digest().as_str().as_bytes());
            (
                Origin::Layers {
                    layers: image.manifest.layers.clone(),
                    diff_ids: image.config.rootfs.diff_ids.clone(),
                    what: format!("image {from}"),
                },
                sources.clone(),
            )
        }
    } else {
        let root = builder.request.context.root.clone().ok_or_else(|| {
            Error::BadInput(format!("{} needs a build context, and none was given (the Dockerfile came on stdin): pass a directory instead of `-`", ctx.inst.keyword.to_uppercase()))
        })?;
        (Origin::Context(root), sources.clone())
    };
    // Local archives from the context are extracted; a download only with --unpack=true
    // (BuildKit's rule), and a heredoc never.
    let unpack_download = matches!(&ctx.inst.value, Instruction::Add(add) if add.unpack == Some(true))
        && inline.is_empty()
        && sources.iter().any(|s| is_url(s));
    let extract = extract
        && (matches!(origin, Origin::Context(_))
            || (unpack_download && matches!(origin, Origin::Staged(_))));
    let (parents, exclude) = copy_flags(&ctx.inst.value);
    let options = copy_options(None, chmod.as_deref(), extract, false, exclude)?;
    if let Some(commit) = &git_commit {
        // BuildKit keys a git source on its commit: a kept `.git` (index, FETCH_HEAD) is
        // written anew by every fetch, but the same commit is the same files.
        key.update(commit.as_bytes());
    } else if let Some(root) = origin.local_root() {
        let src = SourceRoot {
            root,
            ignore: origin.ignore(builder),
            of: origin.of(),
        };
        let parents = parents && !matches!(origin, Origin::Staged(_));
        let matched = match_all(src, &patterns, parents)?;
        key.update(
            copy::write_copy_tar(src, &matched, &dest, None, &options, io::sink())?
                .as_str()
                .as_bytes(),
        );
    }
    Ok(Plan {
        origin,
        patterns,
        dest,
        chown,
        chmod,
        extract,
        link,
        key: Digest::from_hasher(key),
        created_by,
    })
}

impl Origin {
    fn local_root(&self) -> Option<&Path> {
        match self {
            Origin::Context(root) => Some(root),
            Origin::Named(dir) => dir.root.as_deref(),
            Origin::Staged(dir) => Some(dir.path()),
            Origin::Layers { .. } => None,
        }
    }

    fn of(&self) -> Option<&str> {
        match self {
            Origin::Layers { what, .. } => Some(what),
            _ => None,
        }
    }

    fn ignore<'b>(
        &'b self,
        builder: &'b super::stage::Builder<'_>,
    ) -> Option<&'b crate::context::IgnoreRules> {
        match self {
            Origin::Context(_) => Some(&builder.request.context.ignore),
            // A named context's own .dockerignore, as BuildKit reads it.
            Origin::Named(dir) => Some(&dir.ignore),
            _ => None,
        }
    }
}

/// `COPY --parents` and the `--exclude` patterns of a COPY or ADD.
fn copy_flags(inst: &Instruction) -> (bool, &[String]) {
    match inst {
        Instruction::Copy(c) => (c.parents, &c.exclude),
        Instruction::Add(a) => (false, &a.exclude),
        _ => (false, &[]),
    }
}

/// Every source pattern's matches. As BuildKit allows it, a wildcard that matches nothing is
/// no error when another source matched; a plain path that is missing always is. With
/// `--parents`, each pattern keeps its path ([`copy::match_parents`]).
pub(crate) fn match_all(
    src: SourceRoot<'_>,
    patterns: &[String],
    parents: bool,
) -> Result<Vec<Matched>, Error> {
    if parents {
        let mut matched = Vec::new();
        for pattern in patterns {
            matched.extend(copy::match_parents(src, pattern)?);
        }
        return Ok(matched);
    }
    let mut matched = Vec::new();
    let mut empty_wildcard = None;
    for pattern in patterns {
        match copy::match_sources(src, pattern) {
            Ok(found) => matched.extend(found),
            Err(e) if pattern.contains(['*', '?', '[']) => {
                empty_wildcard.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    match empty_wildcard {
        Some(e) if matched.is_empty() => Err(e),
        _ => Ok(matched),
    }
}

/// The destination as an absolute path; a relative one is under the working directory.
fn absolute_dest(workdir: &str, dest: &str) -> String {
    if dest.starts_with('/') {
        return dest.to_owned();
    }
    // BuildKit's rule: only `.` or a trailing `/` mean "into"; `sub/.` is cleaned to `sub`.
    let trailing = dest.ends_with('/') || dest == ".";
    let mut joined = format!("{}/{}", workdir.trim_end_matches('/'), dest);
    joined = format!("/{}", crate::context::clean_path(&joined));
    if trailing && !joined.ends_with('/') {
        joined.push('/');
    }
    joined
}

/// `keep_owners`: the sources come from layers (`COPY --from`), whose owners docker keeps.
fn copy_options(
    owner: Option<(u32, u32)>,
    chmod: Option<&str>,
    extract: bool,
    keep_owners: bool,
    exclude: &[String],
) -> Result<CopyOptions, Error> {
    let exclude = crate::context::IgnoreRules::from_patterns(
        exclude.iter().map(String::as_str),
        "--exclude",
    )?;
    // BuildKit takes an empty value (`--chmod=$UNSET`) as no --chmod.
    let chmod = chmod
        .filter(|mode| !mode.is_empty())
        .map(copy::Chmod::parse)
        .transpose()
        .map_err(|e| Error::BadInput(e.to_string()))?;
    Ok(CopyOptions {
        owner,
        chmod,
        extract_archives: extract,
        keep_owners,
        exclude,
    })
}

/// Runs a planned COPY/ADD on a cache miss.
pub(crate) fn apply(
    ctx: &StepContext<'_, '_>,
    state: &mut StageState,
    plan: Plan,
) -> Result<(), Error> {
    // A --link copy is made in an empty root of its own (`state` is the empty image's); in
    // `--isolation chroot` that root must not replace the stage's working one.
    let own_root = std::sync::Mutex::new(None);
    let link_ctx;
    let ctx = if plan.link {
        link_ctx = StepContext {
            root: &own_root,
            ..*ctx
        };
        &link_ctx
    } else {
        ctx
    };
    let store = ctx.builder.store;
    let target = Writable::new(ctx, state, "copy")?;
    // Sources from other layers are read through a read-only overlay of their own (a tree of
    // their own in chroot mode).
    let from_dirs;
    let from_mount;
    let from_tree;
    let source_root: PathBuf = match &plan.origin {
        Origin::Layers {
            layers, diff_ids, ..
        } if ctx.chroot() => {
            from_tree = snapshot::materialize(store, layers, diff_ids)?;
            from_tree.path().join("rootfs")
        }
        Origin::Layers {
            layers, diff_ids, ..
        } => {
            from_dirs = StepDirs::new(store, "from")?;
            // Both are empty: the upper dir is not used by a read-only mount.
            let from_lowers = read_only_lowers(
                snapshot::lowers_of(store, layers, diff_ids)?,
                [from_dirs.empty(), from_dirs.upper()],
            );
            from_mount =
                OverlayMount::mount(&from_lowers, None, &from_dirs.empty(), &from_dirs.merged())?;
            from_mount.path().to_path_buf()
        }
        other => other
            .local_root()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    let owner = plan
        .chown
        .as_deref()
        .map(|spec| resolve_owner(&target.path(), spec))
        .transpose()?;
    let keep_owners = matches!(plan.origin, Origin::Layers { .. });
    let (parents, exclude) = copy_flags(&ctx.inst.value);
    let options = copy_options(
        owner,
        plan.chmod.as_deref(),
        plan.extract,
        keep_owners,
        exclude,
    )?;
    let src = SourceRoot {
        root: &source_root,
        ignore: plan.origin.ignore(ctx.builder),
        of: plan.origin.of(),
    };
    let parents = parents && !matches!(plan.origin, Origin::Staged(_));
    let matched = match_all(src, &plan.patterns, parents)?;
    let staging = store.staging_dir("copy-tar")?;
    let tar_path = staging.path().join("copy.tar");
    {
        let file = File::create(&tar_path).map_err(Error::io("create", &tar_path))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        copy::write_copy_tar(
            src,
            &matched,
            &plan.dest,
            Some(&target.path()),
            &options,
            &mut out,
        )?;
        out.flush().map_err(Error::io("write", &tar_path))?;
    }
    let tar = File::open(&tar_path).map_err(Error::io("open", &tar_path))?;
    kiln_layer::apply_layer(
        io::BufReader::with_capacity(1 << 20, tar),
        &target.path(),
        ApplyMode::Merged,
        ApplyOptions::default(),
    )?;
    target.commit(ctx, state, plan.created_by)
}

/// Where a COPY, ADD or WORKDIR writes: a writable overlay whose upper dir holds the change,
/// or in `--isolation chroot` the stage's working rootfs, whose change two walks find.
enum Writable {
    Overlay(StepDirs, OverlayMount),
    Chroot(snapshot::WorkingRoot),
}

impl Writable {
    fn new(
        ctx: &StepContext<'_, '_>,
        state: &StageState,
        purpose: &str,
    ) -> Result<Writable, Error> {
        if ctx.chroot() {
            return Ok(Writable::Chroot(ctx.take_root(state)?));
        }
        let (dirs, mount) = snapshot::mount_writable(
            ctx.builder.store,
            purpose,
            &state.layers,
            &state.config.rootfs.diff_ids,
        )?;
        Ok(Writable::Overlay(dirs, mount))
    }

    /// The rootfs as the step sees it.
    fn path(&self) -> PathBuf {
        match self {
            Writable::Overlay(_, mount) => mount.path().to_path_buf(),
            Writable::Chroot(root) => root.path(),
        }
    }

    /// The change becomes `state`'s next layer.
    fn commit(
        self,
        ctx: &StepContext<'_, '_>,
        state: &mut StageState,
        created_by: String,
    ) -> Result<(), Error> {
        match self {
            Writable::Overlay(dirs, mount) => {
                drop(mount);
                commit_upper(ctx.builder.store, state, &dirs.upper(), created_by)
            }
            Writable::Chroot(root) => ctx.commit_root(root, state, created_by),
        }
    }

    /// Gives a chroot root back unchanged (a WORKDIR of `/` makes no layer).
    fn keep(self, ctx: &StepContext<'_, '_>) {
        if let Writable::Chroot(root) = self {
            let mut slot = ctx
                .root
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *slot = Some(root);
        }
    }
}

/// The lowers of a read-only overlay. Without an upper dir overlayfs wants at least two lowers
/// (`fsconfig create` fails with EINVAL on one), so distinct empty dirs go at the bottom: they
/// change nothing in the merged view, and a single layer's whiteouts are still hidden by the
/// mount.
fn read_only_lowers(mut lowers: Vec<PathBuf>, empties: [PathBuf; 2]) -> Vec<PathBuf> {
    for empty in empties {
        if lowers.len() < 2 {
            lowers.push(empty);
        }
    }
    lowers
}

/// `--chown=user:group`, as BuildKit's copy takes it (`llb.WithUser`, then the solver's
/// `readUser`): a numeric user (or `root`) is taken as it is and is the group too when none is
/// given, whatever `/etc/passwd` says; only names are looked up, in the rootfs being written to.
fn resolve_owner(rootfs: &Path, spec: &str) -> Result<(u32, u32), Error> {
    let bad = |why: String| Error::BadInput(format!("--chown={spec}: {why}"));
    let (user, group) = split_chown(spec);
    let (uid, gid) = match chown_id(user) {
        Some(id) => (id, id),
        None => resolve_user(rootfs, user).map_err(bad)?,
    };
    let gid = match group {
        None => gid,
        Some(group) => match chown_id(group) {
            Some(id) => id,
            None => resolve_user(rootfs, &format!("0:{group}")).map_err(bad)?.1,
        },
    };
    Ok((uid, gid))
}

/// `user[:group]` (names or ids) against the rootfs's `/etc/passwd` and `/etc/group`.
fn resolve_user(rootfs: &Path, spec: &str) -> Result<(u32, u32), String> {
    let read = |path: &str| -> Option<String> {
        let fd = copy::open_in_root(rootfs, path).ok()?;
        let mut text = String::new();
        File::open(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ))
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
        Some(text)
    };
    let passwd = read("etc/passwd");
    let group = read("etc/group");
    let user = kiln_sandbox::user::resolve(spec, passwd.as_deref(), group.as_deref())?;
    Ok((user.uid, user.gid))
}

/// `WORKDIR`: sets the directory and creates it if the rootfs lacks it.
pub(crate) fn workdir(
    ctx: &StepContext<'_, '_>,
    state: &mut StageState,
    dir: &str,
) -> Result<(), Error> {
    let path = absolute_dest(&state.workdir(), dir);
    let path = if path.len() > 1 {
        path.trim_end_matches('/').to_owned()
    } else {
        path
    };
    state.config.container().working_dir = path.clone();
    let target = Writable::new(ctx, state, "workdir")?;
    let root = target.path();
    // BuildKit creates the missing directories as the current USER (`mkdir -p` with
    // `WithUser`); docker's legacy builder made them root's.
    let user = state.user();
    let (uid, gid) = if user.is_empty() {
        (0, 0)
    } else {
        resolve_user(&root, &user)
            .map_err(|why| Error::BadInput(format!("WORKDIR {path}: USER {user}: {why}")))?
    };
    let mut tar = tar::Builder::new(Vec::new());
    let mut prefix = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        prefix = if prefix.is_empty() {
            part.to_owned()
        } else {
            format!("{prefix}/{part}")
        };
        if copy::kind_in_root(&root, &prefix).is_none() {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_uid(uid.into());
            header.set_gid(gid.into());
            header.set_size(0);
            header.set_mtime(crate::source_date_epoch().unwrap_or(0).max(0) as u64);
            tar.append_data(&mut header, format!("{prefix}/"), io::empty())
                .map_err(Error::archive("write workdir entry"))?;
        }
    }
    let bytes = tar
        .into_inner()
        .map_err(Error::archive("write workdir entry"))?;
    kiln_layer::apply_layer(
        &bytes[..],
        &root,
        ApplyMode::Merged,
        ApplyOptions::default(),
    )?;
    // BuildKit makes every WORKDIR but `/` a layer (its mkdir), empty when the directory was
    // there already; docker's history then shows it with a layer.
    let created_by = format!("WORKDIR {path}");
    if path == "/" {
        target.keep(ctx);
        push_history(&mut state.config, created_by, true);
        Ok(())
    } else {
        target.commit(ctx, state, created_by)
    }
}

/// The file a heredoc source becomes. BuildKit writes it into an empty in-memory root, so the
/// name is a path inside that root: `..` cannot climb out of it, and a name with directories
/// fails there because the root has none. The name never reaches a host path.
pub(crate) fn heredoc_file_name(keyword: &str, name: &str) -> Result<String, Error> {
    let cleaned = crate::context::clean_path(name);
    if cleaned.is_empty() || cleaned.contains('/') {
        return Err(Error::BadInput(format!(
            "{} <<{name}: a heredoc source is a file of its own empty root, so its name must \
             be one file name (BuildKit fails the same way: no parent directory there)",
            keyword.to_uppercase()
        )));
    }
    Ok(cleaned)
}

/// Creates (or truncates, when a second source has the same name) a file directly in kiln's own
/// staging dir, never through a symlink. `name` is one path component.
fn create_staged(dir: &Path, name: &str, mode: u32) -> Result<File, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(Error::io("create staged file", &path))
}

/// An HTTP date (RFC 9110's IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`).
/// An HTTP date (`Last-Modified`), as RFC 2822 reads it.
pub fn http_date(text: &str) -> Option<std::time::SystemTime> {
    let parsed =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc2822)
            .ok()?;
    Some(parsed.into())
}

/// `ADD https://…`: downloads into `dir` (mode 0600, as docker does) and checks `--checksum`.
/// The file's mtime is the response's `Last-Modified`, or the epoch without one (BuildKit's
/// rule), so that the same bytes key the same whenever they are fetched.
fn download(
    registry: Option<&crate::registry::BuildRegistry>,
    url: &str,
    dir: &Path,
    checksum: Option<&str>,
) -> Result<String, Error> {
    let name = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        // BuildKit's name for a URL that names no file.
        .unwrap_or("__unnamed__")
        .to_owned();
    let path = dir.join(&name);
    let mut body = crate::registry::fetch_url(registry, url)?;
    let file = create_staged(dir, &name, 0o600)?;
    let mut out = kiln_image::HashingWriter::new(BufWriter::new(file));
    io::copy(&mut body, &mut out)
        .map_err(|e| Error::BadInput(format!("ADD {url}: download failed: {e}")))?;
    let (mut file, digest, _) = out.finish();
    file.flush().map_err(Error::io("write", &path))?;
    let modified = match body.header("last-modified") {
        Some(text) => http_date(text).ok_or_else(|| {
            Error::BadInput(format!(
                "ADD {url}: Last-Modified {text:?} is not an HTTP date"
            ))
        })?,
        None => std::time::SystemTime::UNIX_EPOCH,
    };
    file.into_inner()
        .map_err(|e| Error::io("write", &path)(e.into_error()))?
        .set_modified(modified)
        .map_err(Error::io("set the mtime of", &path))?;
    if let Some(expected) = checksum
        && expected != digest.as_str()
    {
        return Err(Error::BadInput(format!(
            "ADD {url}: --checksum={expected} does not match the download ({digest})"
        )));
    }
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(Error::io("chmod", &path))?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_read() {
        let t = http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let secs = t.duration_since(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(secs.as_secs(), 784111777);
        assert!(http_date("yesterday").is_none());
    }

    #[test]
    fn destinations_are_under_the_workdir() {
        assert_eq!(absolute_dest("/app", "x"), "/app/x");
        assert_eq!(absolute_dest("/app", "sub/"), "/app/sub/");
        assert_eq!(absolute_dest("/app", "."), "/app/");
        assert_eq!(absolute_dest("/app", "sub/."), "/app/sub");
        assert_eq!(absolute_dest("/", "./a/../b"), "/b");
        assert_eq!(absolute_dest("/app", "/abs"), "/abs");
    }

    #[test]
    fn read_only_overlays_get_two_lowers() {
        let p = PathBuf::from;
        let empties = || [p("/e1"), p("/e2")];
        assert_eq!(
            read_only_lowers(vec![p("/l1")], empties()),
            [p("/l1"), p("/e1")]
        );
        assert_eq!(read_only_lowers(vec![], empties()), [p("/e1"), p("/e2")]);
        let two = vec![p("/l2"), p("/l1")];
        assert_eq!(read_only_lowers(two.clone(), empties()), two);
    }
}
