//! `RUN`: the command in a sandbox over an overlay of the parent snapshots; the upper dir
//! becomes the layer.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use kiln_dockerfile::{CommandLine, MountType, RunInstruction};
use kiln_sandbox::{Network, Rootfs, RunSpec};

use super::stage::{StageState, StepContext, commit_upper};
use crate::Error;
use crate::snapshot::{self, OverlayMount, StepDirs};

/// Lines of output kept for the error of a failing step.
const TAIL_LINES: usize = 20;

/// What a RUN's bind mounts read, for the cache key: the context's files, or the stage or
/// image a mount comes from, so that a changed bound file reruns the step, as with BuildKit.
pub(crate) fn bind_inputs(
    ctx: &StepContext<'_, '_>,
    run: &RunInstruction,
) -> Result<Vec<(String, kiln_image::Digest)>, Error> {
    let builder = ctx.builder;
    let mut inputs = Vec::new();
    for mount in run.mounts.iter().filter(|m| m.kind == MountType::Bind) {
        let source = crate::context::clean_path(mount.source.as_deref().unwrap_or_default());
        let dir = match &mount.from {
            Some(from) => builder.dir_context(from),
            None => Some(&builder.request.context),
        };
        let digest = match (&mount.from, dir) {
            // The build context, or a directory `--build-context`: what the mount shows.
            (_, Some(dir)) => {
                let Some(root) = dir.root.as_deref() else {
                    continue;
                };
                let src = crate::copy::SourceRoot {
                    root,
                    ignore: Some(&dir.ignore),
                    of: None,
                };
                let matched =
                    crate::copy::match_sources(src, if source.is_empty() { "." } else { &source })?;
                let options = crate::copy::CopyOptions::default();
                crate::copy::write_copy_tar(src, &matched, "/", None, &options, std::io::sink())?
            }
            (Some(from), None) => match builder
                .stage_for(from, ctx.stage_index)
                .and_then(|dep| builder.built[dep].get())
            {
                Some(dep) => dep.key.clone(),
                None => builder
                    .resolve_image(from, &builder.stage_platform(ctx.stage_index))?
                    .manifest_digest()
                    .clone(),
            },
            (None, None) => continue,
        };
        inputs.push((format!("bind:{source}"), digest));
    }
    Ok(inputs)
}

/// The argv of a RUN: exec form as written; shell form through the shell, with heredocs
/// appended to the script so that the shell reads them as it would in a terminal.
fn argv(state: &StageState, run: &RunInstruction) -> Vec<String> {
    match &run.command {
        CommandLine::Exec(argv) => argv.clone(),
        CommandLine::Shell(script) if run.heredocs.len() == 1 && is_bare_heredoc(script) => {
            // `RUN <<EOF`: the heredoc is the script, as BuildKit runs it.
            let heredoc = &run.heredocs[0];
            let mut argv = state.shell();
            argv.push(if heredoc.chomp {
                heredoc.chomped()
            } else {
                heredoc.content.clone()
            });
            argv
        }
        CommandLine::Shell(script) => {
            let mut script = script.clone();
            for heredoc in &run.heredocs {
                script.push('\n');
                script.push_str(&heredoc.content);
                if !heredoc.content.ends_with('\n') && !heredoc.content.is_empty() {
                    script.push('\n');
                }
                script.push_str(&heredoc.name);
            }
            let mut argv = state.shell();
            argv.push(script);
            argv
        }
    }
}

/// `RUN <<EOF` whose body starts with `#!`: BuildKit runs such a heredoc as a program of its
/// own, so that its interpreter (awk, python) reads it, not the shell.
fn shebang_heredoc(run: &RunInstruction) -> Option<&kiln_dockerfile::Heredoc> {
    match &run.command {
        CommandLine::Shell(script) if run.heredocs.len() == 1 && is_bare_heredoc(script) => {
            let heredoc = &run.heredocs[0];
            // `<<-` strips the tabs before the `#!` as it does from every line.
            heredoc.chomped().starts_with("#!").then_some(heredoc)
        }
        _ => None,
    }
}

/// The heredoc as an executable file bound read-only at `/dev/pipes/<name>`, where BuildKit
/// puts it; returns the mount and the path to run.
fn heredoc_program(
    builder: &super::stage::Builder<'_>,
    ctx: &StepContext<'_, '_>,
    heredoc: &kiln_dockerfile::Heredoc,
    keep: &mut Keep,
) -> Result<(kiln_sandbox::Mount, String), Error> {
    let name = super::files::heredoc_file_name(&ctx.inst.keyword, &heredoc.name)?;
    let dir = builder.store.staging_dir("heredoc")?;
    let path = dir.path().join(&name);
    let body = if heredoc.chomp {
        heredoc.chomped()
    } else {
        heredoc.content.clone()
    };
    std::fs::write(&path, body).map_err(Error::io("write", &path))?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(Error::io("chmod", &path))?;
    keep.staged.push(dir);
    let target = format!("/dev/pipes/{name}");
    Ok((
        kiln_sandbox::Mount::Bind {
            source: path,
            target: target.clone(),
            readonly: true,
        },
        target,
    ))
}

/// `<<EOF`, `<<-EOF`, `<<'EOF'`: a command that is only a heredoc.
fn is_bare_heredoc(script: &str) -> bool {
    let script = script.trim();
    script.starts_with("<<") && !script.contains(char::is_whitespace)
}

/// Runs the command and commits what it changed.
pub(crate) fn run(
    ctx: &StepContext<'_, '_>,
    state: &mut StageState,
    run: &RunInstruction,
) -> Result<(), Error> {
    let builder = ctx.builder;
    let store = builder.store;
    // The chroot mode's working rootfs, or the overlay's dirs.
    let mut working = None;
    let mut dirs = None;
    let rootfs = if ctx.chroot() {
        // An ssh mount with no agent makes no mount: BuildKit leaves it out (or fails it when
        // required, below), so that a step can run either way.
        let given = |m: &&kiln_dockerfile::Mount| {
            m.kind != MountType::Ssh
                || builder
                    .request
                    .ssh
                    .iter()
                    .any(|a| a.id == m.id.as_deref().unwrap_or(crate::ssh::DEFAULT_ID))
        };
        if let Some(mount) = run.mounts.iter().find(given) {
            return Err(Error::BadInput(format!(
                "RUN --mount=type={}: a mount cannot be made with --isolation chroot (no \
                 mounts are allowed here); use --isolation oci where mounts are allowed",
                mount.kind.as_str()
            )));
        }
        if shebang_heredoc(run).is_some() {
            return Err(Error::BadInput(
                "RUN <<EOF with a #! line is run from a mount at /dev/pipes, which \
                 --isolation chroot cannot make: name the interpreter (RUN python3 <<EOF)"
                    .into(),
            ));
        }
        let root = ctx.take_root(state)?;
        let rootfs = Rootfs::Chroot(root.path());
        working = Some(root);
        rootfs
    } else {
        let step_dirs = StepDirs::new(store, "run")?;
        let mut lowers = snapshot::lowers_of(store, &state.layers, &state.config.rootfs.diff_ids)?;
        if lowers.is_empty() {
            lowers.push(step_dirs.empty());
        }
        let rootfs = Rootfs::Overlay {
            lowers,
            upper: step_dirs.upper(),
            work: step_dirs.work(),
        };
        dirs = Some(step_dirs);
        rootfs
    };
    let argv = argv(state, run);
    let mut keep = Keep::default();
    let mut spec = RunSpec::new(rootfs, argv.clone());
    if let Some(heredoc) = shebang_heredoc(run) {
        let (mount, path) = heredoc_program(builder, ctx, heredoc, &mut keep)?;
        spec.mounts.push(mount);
        spec.args = vec![path];
    }
    spec.env = state.vars.run_env();
    add_proxy_args(&mut spec.env, &builder.request.build_args);
    spec.cwd = state.workdir();
    spec.user = state.user();
    spec.interrupt = builder.request.interrupt.clone();
    let request = &builder.request;
    spec.skip_syncs = !request.sync;
    spec.limits = request.limits;
    let options = &request.run_options;
    spec.extra_hosts = options.extra_hosts.clone();
    spec.shm_size = options.shm_size.unwrap_or(kiln_sandbox::DEFAULT_SHM_SIZE);
    spec.ulimits = options.ulimits.iter().map(|(_, u)| *u).collect();
    // Granted in key_material, through check_entitlements.
    spec.insecure = run.security.as_deref() == Some("insecure");
    spec.network = match run.network.as_deref() {
        None | Some("default") => request.network,
        Some("none") => Network::None,
        // BuildKit's rule: the host's network is an entitlement the caller grants.
        Some("host") if request.allow_network_host || request.network == Network::Host => {
            Network::Host
        }
        Some("host") => {
            return Err(Error::BadInput(
                "RUN --network=host: entitlement network.host is not allowed: pass \
                 --allow network.host to kiln build"
                    .into(),
            ));
        }
        Some(other) => {
            return Err(Error::BadInput(format!(
                "RUN --network={other}: kiln supports default, host and none"
            )));
        }
    };
    // BuildKit's build arg for the steps' hostname.
    if let Some((_, hostname)) = request
        .build_args
        .iter()
        .rev()
        .find(|(k, _)| k == "BUILDKIT_SANDBOX_HOSTNAME")
    {
        spec.hostname = hostname.clone();
        // BuildKit's hosts file names the step's hostname; kiln's is the host's plus this.
        spec.extra_hosts
            .push((hostname.clone(), "127.0.0.1".to_owned()));
    }
    let mut ssh_mounts = 0;
    for mount in &run.mounts {
        let m = if mount.kind == MountType::Ssh {
            ssh_mounts += 1;
            ssh_mount(ctx, state, mount, ssh_mounts - 1, &mut keep)?
        } else {
            mount_for(ctx, state, mount, &mut keep, &mut spec.env)?
        };
        if let Some(m) = m {
            spec.mounts.push(m);
        }
    }
    // BuildKit names the first ssh mount's target in SSH_AUTH_SOCK unless the step's
    // environment has one, whether or not an agent was given for it.
    if let Some(first) = run.mounts.iter().find(|m| m.kind == MountType::Ssh)
        && !spec.env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK="))
    {
        spec.env
            .push(format!("SSH_AUTH_SOCK={}", ssh_target(state, first, 0)));
    }
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut partial = Vec::new();
    let mut on_output = |_stream: kiln_sandbox::OutputStream, chunk: &[u8]| {
        partial.extend_from_slice(chunk);
        while let Some(newline) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=newline).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            builder.reporter.report(super::Event::Output {
                id: ctx.id,
                line: &text,
            });
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(text);
        }
    };
    let outcome = kiln_sandbox::run(&spec, &mut on_output).map_err(|cause| Error::RunStart {
        line: ctx.inst.span.start_line(),
        instruction: ctx.inst.original.clone(),
        cause,
    })?;
    if !partial.is_empty() {
        let text = String::from_utf8_lossy(&partial).into_owned();
        builder.reporter.report(super::Event::Output {
            id: ctx.id,
            line: &text,
        });
        tail.push_back(text);
    }
    drop(keep);
    if outcome.interrupted {
        return Err(Error::Interrupted);
    }
    if !outcome.status.success() {
        return Err(Error::RunFailed {
            line: ctx.inst.span.start_line(),
            instruction: ctx.inst.original.clone(),
            command: argv.clone(),
            code: outcome.status.code(),
            tail: tail.into_iter().collect(),
        });
    }
    let declared: Vec<String> = state
        .vars
        .declared_args()
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
    let created_by = match (&run.command, declared.is_empty()) {
        (_, true) => format!("RUN {} # buildkit", argv.join(" ")),
        (_, false) => format!(
            "RUN |{} {} {} # buildkit",
            declared.len(),
            declared.join(" "),
            argv.join(" ")
        ),
    };
    let started = std::time::Instant::now();
    match (working, &dirs) {
        (Some(root), _) => ctx.commit_root(root, state, created_by)?,
        (None, Some(dirs)) => commit_upper(store, state, &dirs.upper(), created_by)?,
        (None, None) => return Err(Error::BadInput("RUN had no rootfs to commit".into())),
    }
    let bytes = state.layers.last().map_or(0, |l| l.size);
    builder.reporter.report(super::Event::Committed {
        id: ctx.id,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(())
}

/// BuildKit's predefined proxy args: a `--build-arg` of these (in any case) reaches every RUN
/// without an `ARG`, in upper and lower case both, as BuildKit's exec op sets them, and stays
/// out of the history and the cache key (the caller adds them after both).
const PROXY_ARGS: [&str; 5] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
];

fn add_proxy_args(env: &mut Vec<String>, build_args: &[(String, String)]) {
    for name in PROXY_ARGS {
        // BuildKit takes the build args in sorted order: the last match wins.
        let Some((_, value)) = build_args
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .max_by(|a, b| a.0.cmp(&b.0))
        else {
            continue;
        };
        for key in [name.to_owned(), name.to_ascii_lowercase()] {
            let set = |e: &String| e.split_once('=').is_some_and(|(k, _)| k == key);
            if !env.iter().any(set) {
                env.push(format!("{key}={value}"));
            }
        }
    }
}

/// Mounts, fds, secret copies and cache locks that must outlive the run.
#[derive(Default)]
struct Keep {
    fds: Vec<OwnedFd>,
    overlays: Vec<(OverlayMount, StepDirs)>,
    /// Secret copies and heredoc programs.
    staged: Vec<tempfile::TempDir>,
    locks: Vec<std::fs::File>,
    /// The sockets of ssh mounts, relaying to their agents.
    forwards: Vec<crate::ssh::Forward>,
}

/// Where an ssh mount's socket goes: `target=`, or BuildKit's `/run/buildkit/ssh_agent.N`
/// for the step's Nth ssh mount.
fn ssh_target(state: &StageState, mount: &kiln_dockerfile::Mount, index: usize) -> String {
    match &mount.target {
        Some(target) if target.starts_with('/') => target.clone(),
        Some(target) => format!("{}/{}", state.workdir().trim_end_matches('/'), target),
        None => format!("/run/buildkit/ssh_agent.{index}"),
    }
}

/// An ssh mount: a socket of kiln's at the target, with the mount's owner and mode (BuildKit's
/// defaults: root's, 0600), relaying to the agent `--ssh` gave for its id. Without one, a
/// mount that is not `required` is left out, as BuildKit leaves it.
fn ssh_mount(
    ctx: &StepContext<'_, '_>,
    state: &StageState,
    mount: &kiln_dockerfile::Mount,
    index: usize,
    keep: &mut Keep,
) -> Result<Option<kiln_sandbox::Mount>, Error> {
    let builder = ctx.builder;
    let id = mount.id.as_deref().unwrap_or(crate::ssh::DEFAULT_ID);
    let Some(agent) = builder.request.ssh.iter().find(|a| a.id == id) else {
        if mount.required {
            return Err(Error::BadInput(format!(
                "RUN --mount=type=ssh,id={id} is required, and no SSH agent {id:?} was given: \
                 pass --ssh {id}[=SOCKET|KEYFILE] to kiln build"
            )));
        }
        return Ok(None);
    };
    let forward = crate::ssh::Forward::start(
        builder.store,
        agent,
        mount.uid.unwrap_or(0),
        mount.gid.unwrap_or(0),
        mount.mode.unwrap_or(0o600),
    )?;
    let source = forward.socket().to_path_buf();
    keep.forwards.push(forward);
    Ok(Some(kiln_sandbox::Mount::Bind {
        source,
        target: ssh_target(state, mount, index),
        readonly: true,
    }))
}

/// A secret as the step sees it: a copy with BuildKit's owner and mode (root, 0400 unless
/// `uid=`, `gid=`, `mode=` say otherwise) in a private staging dir that goes with the run.
fn secret_copy(
    builder: &super::stage::Builder<'_>,
    source: &std::path::Path,
    mount: &kiln_dockerfile::Mount,
    keep: &mut Keep,
) -> Result<PathBuf, Error> {
    let dir = builder.store.staging_dir("secret")?;
    let path = dir.path().join("secret");
    std::fs::copy(source, &path).map_err(Error::io("copy secret", source))?;
    std::os::unix::fs::chown(
        &path,
        Some(mount.uid.unwrap_or(0)),
        Some(mount.gid.unwrap_or(0)),
    )
    .map_err(Error::io("chown", &path))?;
    let mode = mount.mode.unwrap_or(0o400);
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(Error::io("chmod", &path))?;
    keep.staged.push(dir);
    Ok(path)
}

/// What a bind mount of `source` from a directory context shows when the context has ignore
/// rules: a copy of the files the rules keep (BuildKit sends a step only those), in a staging
/// dir that goes with the run. Returns the copy's root and the source's path in it.
fn ignore_filtered(
    builder: &super::stage::Builder<'_>,
    root: &std::path::Path,
    ignore: &crate::context::IgnoreRules,
    source: &str,
    keep: &mut Keep,
) -> Result<(PathBuf, String), Error> {
    let staged = builder.store.staging_dir("bind")?;
    let copy = staged.path().join("files");
    std::fs::create_dir(&copy).map_err(Error::io("create directory", &copy))?;
    let pattern = copy_tree(builder, root, Some(ignore), source, "/", &copy)?;
    // A directory's contents land at the copy's root; a file keeps its name.
    let is_dir = crate::copy::kind_in_root(root, &pattern).is_some_and(|k| k.is_dir());
    let shown = match crate::context::clean_path(source).rsplit('/').next() {
        Some(name) if !is_dir && !name.is_empty() => name.to_owned(),
        _ => String::new(),
    };
    keep.staged.push(staged);
    Ok((copy, shown))
}

/// `source` of `root` (what `ignore` keeps of it), with owners and modes, copied to `dest`
/// under `into`, as a COPY would copy it: a directory's contents land at `dest`. Returns the
/// pattern `source` was matched as.
fn copy_tree(
    builder: &super::stage::Builder<'_>,
    root: &std::path::Path,
    ignore: Option<&crate::context::IgnoreRules>,
    source: &str,
    dest: &str,
    into: &std::path::Path,
) -> Result<String, Error> {
    let src = crate::copy::SourceRoot {
        root,
        ignore,
        of: None,
    };
    let clean = crate::context::clean_path(source);
    let pattern = if clean.is_empty() {
        ".".to_owned()
    } else {
        clean
    };
    let matched = crate::copy::match_sources(src, &pattern)?;
    let staged = builder.store.staging_dir("tree")?;
    let tar_path = staged.path().join("files.tar");
    let options = crate::copy::CopyOptions {
        keep_owners: true,
        ..Default::default()
    };
    {
        let tar = std::fs::File::create(&tar_path).map_err(Error::io("create", &tar_path))?;
        let mut out = std::io::BufWriter::new(tar);
        crate::copy::write_copy_tar(src, &matched, dest, None, &options, &mut out)?;
        std::io::Write::flush(&mut out).map_err(Error::io("write", &tar_path))?;
    }
    let tar = std::fs::File::open(&tar_path).map_err(Error::io("open", &tar_path))?;
    kiln_layer::apply_layer(
        std::io::BufReader::new(tar),
        into,
        kiln_layer::ApplyMode::Merged,
        kiln_layer::ApplyOptions::default(),
    )?;
    Ok(pattern)
}

/// The content key of `source` in `root`: what a copy of it would hold (names, owners, modes,
/// contents), read without writing anything.
fn tree_key(root: &std::path::Path, source: &str) -> Result<kiln_image::Digest, Error> {
    let src = crate::copy::SourceRoot {
        root,
        ignore: None,
        of: None,
    };
    let clean = crate::context::clean_path(source);
    let pattern = if clean.is_empty() {
        "."
    } else {
        clean.as_str()
    };
    let matched = crate::copy::match_sources(src, pattern)?;
    let options = crate::copy::CopyOptions {
        keep_owners: true,
        ..Default::default()
    };
    crate::copy::write_copy_tar(src, &matched, "/", None, &options, std::io::sink())
}

/// The directory `rel` under `root`, made if missing, each component opened without following
/// a symlink: a cache mount's contents come from earlier steps, which may have planted links
/// pointing out of it.
fn dir_in_root(root: &std::path::Path, rel: &str) -> Result<OwnedFd, Error> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY;
    let mut fd: OwnedFd = rustix::fs::open(root, flags, Mode::empty())
        .map_err(|e| Error::io("open", root)(e.into()))?;
    let clean = crate::context::clean_path(rel);
    for part in clean.split('/').filter(|p| !p.is_empty()) {
        let next = match rustix::fs::openat(&fd, part, flags, Mode::empty()) {
            Err(rustix::io::Errno::NOENT) => {
                rustix::fs::mkdirat(&fd, part, Mode::from_raw_mode(0o755))
                    .map_err(|e| Error::io("create directory", root.join(&clean))(e.into()))?;
                rustix::fs::openat(&fd, part, flags, Mode::empty())
            }
            other => other,
        };
        fd = next.map_err(|e| Error::io("open directory", root.join(&clean))(e.into()))?;
    }
    Ok(fd)
}

/// The path a held fd names, for a bind mount: the sandbox clones the mount tree at a path,
/// which a /proc magic link is not. The fd stays open for the run.
fn bind_path(fd: OwnedFd, keep: &mut Keep) -> Result<PathBuf, Error> {
    let link = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    let path = std::fs::read_link(&link).map_err(Error::io("readlink", &link))?;
    keep.fds.push(fd);
    Ok(path)
}

/// Takes an exclusive lock on `path` (made if missing), blocking or not; `None` when it is
/// held elsewhere and `wait` is false. The lock lasts while the file stays open.
fn lock_file(path: &std::path::Path, wait: bool) -> Result<Option<std::fs::File>, Error> {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(Error::io("open cache lock", path))?;
    let operation = if wait {
        rustix::fs::FlockOperation::LockExclusive
    } else {
        rustix::fs::FlockOperation::NonBlockingLockExclusive
    };
    match rustix::fs::flock(&lock, operation) {
        Ok(()) => Ok(Some(lock)),
        Err(rustix::io::Errno::WOULDBLOCK) if !wait => Ok(None),
        Err(e) => Err(Error::io("flock", path)(e.into())),
    }
}

/// The directory of a cache mount, made and seeded on first use, locked as `sharing=` asks.
///
/// As BuildKit keys its cache directories, a cache is its id together with what it starts
/// from: `from=`'s files (here their content key), or the directory that `uid=`, `gid=` and
/// `mode=` make. `shared` (the default) lets steps use it at once; `locked` makes them take
/// turns; `private` gives a step that finds every instance in use a new one, which later steps
/// reuse when it is free.
fn cache_dir(
    ctx: &StepContext<'_, '_>,
    mount: &kiln_dockerfile::Mount,
    id: &str,
    source: &str,
    keep: &mut Keep,
) -> Result<PathBuf, Error> {
    use kiln_dockerfile::CacheSharing;
    let builder = ctx.builder;
    let seed = match &mount.from {
        Some(_) => {
            let (root, from_source) = mount_source_root(ctx, mount, source, keep)?;
            Some((tree_key(&root, &from_source)?, root, from_source))
        }
        None => None,
    };
    let key = match (&seed, mount.uid, mount.gid, mount.mode) {
        (Some((content, _, _)), ..) => format!("{id}\0from {content}"),
        (None, None, None, None) => id.to_owned(),
        (None, uid, gid, mode) => format!("{id}\0dir {uid:?} {gid:?} {mode:?}"),
    };
    let mounts = builder.store.root().join("cache-mounts");
    // Only the mount itself gets the step's mode; other users stay out of the rest.
    kiln_image::create_private_dir(&mounts)?;
    let base = mounts.join(kiln_image::Digest::of(key.as_bytes()).hex());
    let dir = match mount.sharing {
        None | Some(CacheSharing::Shared) => base,
        Some(CacheSharing::Locked) => {
            // One step at a time uses the cache, across kiln processes too.
            keep.locks
                .extend(lock_file(&base.with_extension("lock"), true)?);
            base
        }
        Some(CacheSharing::Private) => {
            let mut instance = 0usize;
            loop {
                let dir = match instance {
                    0 => base.clone(),
                    n => base.with_extension(format!("private-{n}")),
                };
                if let Some(lock) =
                    lock_file(&dir.with_extension(format!("lock-{instance}")), false)?
                {
                    keep.locks.push(lock);
                    break dir;
                }
                instance += 1;
            }
        }
    };
    // BuildKit's --no-cache (and --no-cache-filter) starts a cache mount empty; later builds
    // use the one it leaves.
    let ignores_cache = builder.request.no_cache || builder.ignores_cache(ctx.stage_index);
    let mut old = None;
    if ignores_cache {
        // Held until the old directory is moved aside, so that a step of this build that
        // comes at the same time never opens the directory about to go.
        let mut emptied = builder
            .emptied_cache_mounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if emptied.insert(dir.clone()) && dir.is_dir() {
            let aside = tempfile::Builder::new()
                .prefix(".old-")
                .tempdir_in(&mounts)
                .map_err(Error::io("create cache mount", &mounts))?;
            std::fs::rename(&dir, aside.path().join("cache"))
                .map_err(Error::io("empty cache mount", &dir))?;
            old = Some(aside);
        }
    }
    // The previous contents are removed outside the lock.
    drop(old);
    if !dir.is_dir() {
        // Made and seeded beside it, then renamed into place: a step that comes at the same
        // time sees the whole seed or makes its own.
        let staged = tempfile::Builder::new()
            .prefix(".new-")
            .tempdir_in(&mounts)
            .map_err(Error::io("create cache mount", &mounts))?;
        let fresh = staged.path().join("cache");
        std::fs::create_dir(&fresh).map_err(Error::io("create cache mount", &fresh))?;
        if let Some((_, root, from_source)) = &seed {
            copy_tree(
                builder,
                root,
                None,
                from_source,
                &format!("/{source}"),
                &fresh,
            )?;
        }
        let mode = mount.mode.unwrap_or(0o755);
        std::fs::set_permissions(&fresh, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(Error::io("chmod", &fresh))?;
        std::os::unix::fs::chown(&fresh, mount.uid, mount.gid)
            .map_err(Error::io("chown", &fresh))?;
        // A step that comes at the same time may have put its own in place first.
        kiln_image::place_dir(&fresh, &dir)?;
    }
    Ok(dir)
}

/// The directory a bind mount (or a cache mount's `from=`) reads, and `source`'s path in it:
/// the build context or a named context's directory (only the files its ignore rules keep, as
/// BuildKit sends a step only those), or a stage's or image's filesystem (a read-only overlay
/// kept for the run).
fn mount_source_root(
    ctx: &StepContext<'_, '_>,
    mount: &kiln_dockerfile::Mount,
    source: &str,
    keep: &mut Keep,
) -> Result<(PathBuf, String), Error> {
    let builder = ctx.builder;
    let mut source = source.to_owned();
    let dir_context = match &mount.from {
        Some(from) => builder.dir_context(from),
        None => Some(&builder.request.context),
    };
    let root: PathBuf =
        match &mount.from {
            _ if let Some(dir) = dir_context
                && !dir.ignore.is_empty()
                && let Some(root) = dir.root.as_deref() =>
            {
                let (copy, shown) = ignore_filtered(builder, root, &dir.ignore, &source, keep)?;
                source = shown;
                copy
            }
            Some(from) if let Some(dir) = dir_context => dir
                .root
                .clone()
                .ok_or_else(|| Error::BadInput(format!("RUN --mount from={from}: no directory")))?,
            Some(from) => {
                let (layers, diff_ids) = match builder.stage_for(from, ctx.stage_index) {
                    Some(dep) => {
                        let s = builder.built[dep].get().ok_or_else(|| {
                            Error::BadInput(format!(
                                "RUN --mount from={from}: that stage was not built"
                            ))
                        })?;
                        (s.layers.clone(), s.config.rootfs.diff_ids.clone())
                    }
                    None => {
                        let image = builder
                            .resolve_image(from, &builder.stage_platform(ctx.stage_index))?;
                        (
                            image.manifest.layers.clone(),
                            image.config.rootfs.diff_ids.clone(),
                        )
                    }
                };
                let dirs = StepDirs::new(builder.store, "bind")?;
                let lowers = snapshot::lowers_of(builder.store, &layers, &diff_ids)?;
                let overlay = OverlayMount::mount(&lowers, None, &dirs.empty(), &dirs.merged())?;
                let path = overlay.path().to_path_buf();
                keep.overlays.push((overlay, dirs));
                path
            }
            None => builder.request.context.root.clone().ok_or_else(|| {
                Error::BadInput("RUN --mount=type=bind needs a build context".into())
            })?,
        };
    Ok((root, source))
}

/// The sandbox mount for one `--mount`, or none when a secret goes only to `env`.
fn mount_for(
    ctx: &StepContext<'_, '_>,
    state: &StageState,
    mount: &kiln_dockerfile::Mount,
    keep: &mut Keep,
    env: &mut Vec<String>,
) -> Result<Option<kiln_sandbox::Mount>, Error> {
    let builder = ctx.builder;
    let target = |default: Option<String>| -> Result<String, Error> {
        let target = mount.target.clone().or(default).ok_or_else(|| {
            Error::BadInput(format!(
                "RUN --mount=type={} needs target=PATH",
                mount.kind.as_str()
            ))
        })?;
        Ok(if target.starts_with('/') {
            target
        } else {
            format!("{}/{}", state.workdir().trim_end_matches('/'), target)
        })
    };
    match mount.kind {
        MountType::Cache => {
            let target = target(None)?;
            let id = mount.id.clone().unwrap_or_else(|| target.clone());
            // BuildKit mounts `source=` of the cache (of from='s files, when given).
            let source = crate::context::clean_path(mount.source.as_deref().unwrap_or(""));
            let dir = cache_dir(ctx, mount, &id, &source, keep)?;
            Ok(Some(kiln_sandbox::Mount::Bind {
                source: bind_path(dir_in_root(&dir, &source)?, keep)?,
                target,
                readonly: mount.readonly,
            }))
        }
        MountType::Tmpfs => Ok(Some(kiln_sandbox::Mount::Tmpfs {
            target: target(None)?,
            size: mount.size.and_then(|s| u64::try_from(s).ok()),
        })),
        MountType::Secret => {
            let id = mount
                .id
                .clone()
                .or_else(|| {
                    mount
                        .target
                        .as_ref()
                        .and_then(|t| t.rsplit('/').next().map(str::to_owned))
                })
                .unwrap_or_default();
            // BuildKit: with env= and no target, the secret is only an environment variable.
            let as_file = mount.target.is_some() || mount.env.is_none();
            let source = builder.request.secrets.iter().find(|(k, _)| *k == id);
            let Some((_, source)) = source else {
                if mount.required {
                    return Err(Error::BadInput(format!(
                        "secret {id}: not found: RUN --mount=type=secret,id={id} is required: \
                         pass --secret id={id},src=FILE"
                    )));
                }
                return Ok(None);
            };
            if let Some(name) = &mount.env {
                let value = std::fs::read(source).map_err(Error::io("read secret", source))?;
                env.push(format!("{name}={}", String::from_utf8_lossy(&value)));
            }
            if !as_file {
                return Ok(None);
            }
            let target = target(Some(format!("/run/secrets/{id}")))?;
            Ok(Some(kiln_sandbox::Mount::Bind {
                source: secret_copy(builder, source, mount, keep)?,
                target,
                readonly: true,
            }))
        }
        MountType::Bind => {
            let target = target(None)?;
            let source = mount.source.clone().unwrap_or_default();
            let (root, source) = mount_source_root(ctx, mount, &source, keep)?;
            // Resolved inside the root: no symlink leads out of it.
            let fd = crate::copy::open_in_root(&root, &crate::context::clean_path(&source))
                .map_err(Error::io("open bind source", root.join(&source)))?;
            let path = bind_path(fd, keep)?;
            // BuildKit: writes to a bind mount, rw or not, never reach its source.
            Ok(Some(if mount.readonly {
                kiln_sandbox::Mount::Bind {
                    source: path,
                    target,
                    readonly: true,
                }
            } else {
                kiln_sandbox::Mount::Scratch {
                    source: path,
                    target,
                }
            }))
        }
        // Made by ssh_mount, which knows the mount's place among the step's ssh mounts.
        MountType::Ssh => Ok(None),
    }
}
