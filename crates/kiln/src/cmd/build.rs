//! `kiln build`: a Dockerfile and a context become an image in the store.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::Context as _;
use clap::Args;
use kiln_build::{BuildRequest, Event, Reporter};
use kiln_image::{Reference, Store};

use super::{Output, Progress};

/// `kiln build`
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln build -t my-python-base examples/python-base\n  kiln build -t app:1 --build-arg VERSION=1.2 -f docker/Dockerfile .\n  kiln build -t tiny - < Dockerfile        (no context)\n  kiln build -t app -f - . < Dockerfile    (the Dockerfile from stdin)\n  tar -czf - . | kiln build -t app -       (the context from stdin)"
)]
pub struct BuildArgs {
    /// The build context directory; `-`: stdin, which is the context when it is a tar archive
    /// (plain, gzip, bzip2, xz or zstd) and otherwise the Dockerfile, with no context; a git
    /// URL (`https://host/repo.git#REF:SUBDIR`, `git://…`, `git@host:repo`); or an HTTP(S) URL
    /// of a tarball (the context) or of a Dockerfile.
    pub context: String,
    /// Name and optionally tag the image (repeatable).
    #[arg(short, long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile); `-` reads it from stdin. With a context
    /// from stdin, a path inside that context.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A named context that `FROM NAME` and `COPY --from=NAME` read instead of a stage or an
    /// image of that name (repeatable): a directory, `docker-image://REF` or
    /// `oci-layout://PATH[:TAG][@DIGEST]`.
    #[arg(
        long = "build-context",
        value_name = "NAME=DIR|docker-image://REF|oci-layout://PATH"
    )]
    pub build_contexts: Vec<String>,
    /// Set a build-time variable (repeatable).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Build up to this stage.
    #[arg(long)]
    pub target: Option<String>,
    /// Run every step, ignoring the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// An annotation of the image manifest, its index entry (`manifest-descriptor:`) or the
    /// image index (`index:`): `[TYPE[PLATFORM]:]KEY=VALUE` (repeatable).
    #[arg(long = "annotation", value_name = "[TYPE[PLATFORM]:]KEY=VALUE")]
    pub annotations: Vec<String>,
    /// An `/etc/hosts` entry of RUN steps: `HOST:IP` (or `HOST=IP`) (repeatable).
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_hosts: Vec<String>,
    /// The size of RUN steps' `/dev/shm` (docker's units: 64m, 1g; default 64m).
    #[arg(long = "shm-size", value_name = "BYTES", value_parser = super::docker_size)]
    pub shm_size: Option<u64>,
    /// A resource limit of RUN steps: `NAME=SOFT[:HARD]`, as docker's (repeatable).
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<String>,
    /// Run every step of these stages (by name), ignoring the cache for them only
    /// (repeatable, or comma-separated).
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// Run at most N steps (RUN, COPY/ADD, pulls) at once; independent stages build
    /// concurrently. Default: the number of cores.
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Let RUN steps' fsync, fdatasync, syncfs, sync and sync_file_range reach the disk. By
    /// default they return at once without doing anything: kiln makes each layer durable when
    /// it commits it, and a step cut short is thrown away. KILN_SYNC=1 does the same.
    #[arg(long, env = "KILN_SYNC", value_parser = clap::builder::BoolishValueParser::new())]
    pub sync: bool,
    /// Add a label to the image (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// A secret for `RUN --mount=type=secret`: `id=ID,src=PATH`, `id=ID,env=VAR`, or `id=ID`
    /// (the variable ID if set, else the file ID), as buildx reads them (repeatable).
    #[arg(long = "secret", value_name = "id=ID[,src=PATH|env=VAR]")]
    pub secrets: Vec<String>,
    /// An ssh agent for `RUN --mount=type=ssh`, as buildx reads it (repeatable): `default`
    /// ($SSH_AUTH_SOCK), `ID=SOCKET`, or `ID=KEYFILE[,KEYFILE…]` (loaded into an ssh-agent
    /// of kiln's, stopped after the build; keys without a passphrase).
    #[arg(long = "ssh", value_name = "default|ID[=SOCKET|KEYFILE[,KEYFILE]]")]
    pub ssh: Vec<String>,
    /// Do not show `kiln lint` findings before the build.
    #[arg(long)]
    pub no_lint: bool,
    /// Only run BuildKit's build checks and print what they find (`docker build --check`):
    /// nothing is built; exit 1 when a check is violated.
    #[arg(long)]
    pub check: bool,
    /// Check the registry for a newer base image even when the store has one.
    #[arg(long)]
    pub pull: bool,
    /// Push the image to its registry under each `-t` name after the build (short for
    /// `-o type=registry`).
    #[arg(long)]
    pub push: bool,
    /// Also write the result elsewhere (repeatable): `type=local,dest=DIR`,
    /// `type=tar,dest=FILE|-`, `type=oci,dest=FILE|DIR[,tar=false]`,
    /// `type=docker[,dest=FILE]`, `type=image,name=NAME[,push=true]`, `type=registry`;
    /// `-o DIR` is local and `-o -` a tar on stdout. Layer options: compression=gzip|zstd|
    /// uncompressed, compression-level=N, force-compression, oci-mediatypes, rewrite-timestamp.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "type=TYPE[,KEY=VALUE…]|DIR|-"
    )]
    pub outputs: Vec<String>,
    /// Load the image into docker (`docker load`; short for `-o type=docker`).
    #[arg(long)]
    pub load: bool,
    /// Write the image id to FILE (`sha256:…`, no newline).
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write the result as buildx's JSON to FILE (`containerimage.digest`, …).
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Print only the image id on stdout; nothing on stderr but errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// Build for these platforms (`linux/amd64,linux/arm64`): one image each, tagged as one
    /// index; foreign RUN steps run under qemu-user (binfmt_misc). Sets TARGETPLATFORM and
    /// chooses bases from multi-platform images. Default: the host's.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Import build cache: `type=registry,ref=REF` (a cache, or an image built with
    /// `--cache-to type=inline`; a bare `REF` is the same), `type=local,src=DIR[,tag=T|digest=D]`
    /// (repeatable).
    #[arg(long = "cache-from", value_name = "type=registry|local,…")]
    pub cache_from: Vec<String>,
    /// Export the build cache: `type=registry,ref=REF`, `type=local,dest=DIR[,tag=T]` or
    /// `type=inline`, with `mode=min` (the final stage's steps, the default) or `mode=max`
    /// (every step), and `ignore-error=true`.
    #[arg(long = "cache-to", value_name = "type=registry|local|inline,…")]
    pub cache_to: Option<String>,
    /// The network of RUN steps: default (a private network with outbound access), host
    /// (the host's own: an explicit opt-in) or none. With --isolation chroot, the
    /// container's own (host).
    #[arg(long, value_name = "default|host|none")]
    pub network: Option<String>,
    /// How RUN steps are isolated: oci (namespaces and overlay mounts, as root), rootless (a
    /// user namespace), chroot (no namespaces or mounts: inside a container with docker's
    /// default security), or auto, the strongest that works here (see docs/isolation.md).
    #[arg(long, default_value = "auto", value_name = "oci|rootless|chroot|auto")]
    pub isolation: String,
    /// Grant an entitlement: `network.host` lets `RUN --network=host` share the host's network;
    /// `security.insecure` lets `RUN --security=insecure` run with every capability, no
    /// seccomp filter and nothing of /proc masked.
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,
    /// Attach an SPDX 2.3 SBOM of each image, as BuildKit attaches attestations (an
    /// attestation manifest in the image index); `kiln sbom IMAGE` prints it.
    #[arg(long, value_name = "true|false", num_args = 0..=1, default_missing_value = "true")]
    pub sbom: Option<String>,
    /// Attach SLSA v1 provenance (base image digests, the Dockerfile's digest, build args,
    /// kiln's version) the same way.
    #[arg(long, value_name = "true|false", num_args = 0..=1, default_missing_value = "true")]
    pub provenance: Option<String>,
    #[command(flatten)]
    pub limits: super::LimitFlags,
    #[command(flatten)]
    pub registry: super::registry::RegistryFlags,
}

/// The mode chosen and why, before the progress view starts: on stderr, where the progress
/// goes, so that stdout keeps only the image id.
#[allow(clippy::print_stderr)]
fn say_isolation(isolation: kiln_build::isolation::Isolation, why: &str) {
    let shared = if isolation == kiln_build::isolation::Isolation::Chroot {
        "; RUN steps share the container's network"
    } else {
        ""
    };
    eprintln!("isolation: {} ({why}){shared}", isolation.as_str());
}

pub(crate) fn key_value(flag: &str, text: &str) -> anyhow::Result<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => match std::env::var(text) {
            // docker takes `--build-arg NAME` as NAME's value from the environment.
            Ok(v) if flag == "--build-arg" && !text.is_empty() => Ok((text.to_owned(), v)),
            _ => anyhow::bail!("{flag} {text:?}: expected KEY=VALUE"),
        },
    }
}

/// A build error that names the Dockerfile line it is about (`Dockerfile:N: …`), shown with
/// that instruction's lines as parse errors are; any other error as it is.
fn at_line(err: kiln_build::Error, request: &BuildRequest) -> anyhow::Error {
    let text = err.to_string();
    let name = &request.dockerfile_name;
    let located = text
        .strip_prefix(name.as_str())
        .and_then(|rest| rest.strip_prefix(':'))
        .and_then(|rest| rest.split_once(": "))
        .and_then(|(line, message)| Some((line.parse::<usize>().ok()?, message)));
    match located {
        Some((line, message)) if line > 0 && !message.contains('\n') => anyhow::anyhow!(
            "{}",
            kiln_dockerfile::render_at_line(name, &request.dockerfile, line, message).trim_end()
        ),
        _ => err.into(),
    }
}

/// An `--annotation` as buildx reads it: `KEY=VALUE`, with an optional `TYPE[PLATFORM]:`
/// before the key. `index-descriptor` is refused by name: it goes on an OCI layout's
/// descriptor of the index, and kiln writes no multi-platform image to an OCI layout.
fn annotation(text: &str) -> anyhow::Result<kiln_build::Annotation> {
    use kiln_build::AnnotationKind;
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("--annotation {text}: expected KEY=VALUE"))?;
    // The longer names first: `manifest-descriptor:` is not `manifest` and a key.
    const TYPES: [(&str, Option<AnnotationKind>); 4] = [
        (
            "manifest-descriptor",
            Some(AnnotationKind::ManifestDescriptor),
        ),
        ("index-descriptor", None),
        ("manifest", Some(AnnotationKind::Manifest)),
        ("index", Some(AnnotationKind::Index)),
    ];
    let typed = TYPES.iter().find_map(|(name, kind)| {
        let rest = key.strip_prefix(name)?;
        (rest.starts_with(':') || rest.starts_with('[')).then_some((*name, *kind, rest))
    });
    let (kind, platform, key) = match typed {
        None => (AnnotationKind::Manifest, None, key),
        Some((name, kind, rest)) => {
            let (platform, key) = match rest.strip_prefix('[') {
                Some(bracketed) => {
                    let (platform, key) = bracketed.split_once("]:").ok_or_else(|| {
                        anyhow::anyhow!("--annotation {text}: expected {name}[PLATFORM]:KEY=VALUE")
                    })?;
                    let platform = platform
                        .parse::<kiln_image::Platform>()
                        .map_err(|e| anyhow::anyhow!("--annotation {text}: {e}"))?;
                    (Some(platform), key)
                }
                None => (None, &rest[1..]),
            };
            let kind = kind.ok_or_else(|| {
                anyhow::anyhow!(
                    "--annotation {text}: index-descriptor annotations go on the descriptor of \
                     the index in an OCI layout's index.json, and kiln writes no index to an OCI \
                     layout (-o type=oci takes one platform): use index: or manifest-descriptor:"
                )
            })?;
            anyhow::ensure!(
                kind != AnnotationKind::Index || platform.is_none(),
                "--annotation {text}: an index is every platform's: give index:KEY=VALUE"
            );
            (kind, platform, key)
        }
    };
    anyhow::ensure!(!key.is_empty(), "--annotation {text}: the key is empty");
    Ok(kiln_build::Annotation {
        kind,
        platform,
        key: key.to_owned(),
        value: value.to_owned(),
    })
}

/// BuildKit's rule: `index:` and `manifest-descriptor:` annotations need an image index, which
/// a build makes for several platforms or with attestations; a single image has none.
fn check_annotations_have_an_index(
    annotations: &[kiln_build::Annotation],
    makes_an_index: bool,
    texts: &[String],
) -> anyhow::Result<()> {
    if makes_an_index {
        return Ok(());
    }
    let needs_index = annotations
        .iter()
        .zip(texts)
        .find(|(a, _)| a.kind != kiln_build::AnnotationKind::Manifest);
    match needs_index {
        None => Ok(()),
        Some((_, text)) => anyhow::bail!(
            "--annotation {text}: index annotations not supported for single platform export: \
             an image index is made for several --platform values or with --sbom/--provenance"
        ),
    }
}

/// `--add-host`, `--shm-size` and `--ulimit`, read as buildx reads them.
fn run_options(args: &BuildArgs) -> anyhow::Result<kiln_build::RunOptions> {
    let extra_hosts = args
        .add_hosts
        .iter()
        .map(|text| {
            // buildx takes `host=ip` as well as docker's `host:ip` (whose IPv6 address has
            // colons of its own, so the first one splits).
            let (host, address) = text
                .split_once('=')
                .or_else(|| text.split_once(':'))
                .ok_or_else(|| anyhow::anyhow!("--add-host {text}: expected HOST:IP"))?;
            let address = address.trim_start_matches('[').trim_end_matches(']');
            anyhow::ensure!(
                !host.is_empty() && !host.contains(char::is_whitespace),
                "--add-host {text}: {host:?} is not a host name"
            );
            address.parse::<std::net::IpAddr>().map_err(|_| {
                anyhow::anyhow!("--add-host {text}: {address:?} is not an IP address")
            })?;
            Ok((host.to_owned(), address.to_owned()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ulimits = args
        .ulimits
        .iter()
        .map(|text| {
            kiln_sandbox::Ulimit::parse(text)
                .map(|u| (text.clone(), u))
                .map_err(|e| anyhow::anyhow!("--ulimit {text}: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(kiln_build::RunOptions {
        extra_hosts,
        shm_size: args.shm_size,
        ulimits,
    })
}

/// Where a `--secret` comes from.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SecretSource {
    File(PathBuf),
    /// An environment variable's name.
    Env(String),
}

/// BuildKit's limit on a secret's size.
const MAX_SECRET_BYTES: u64 = 500 * 1024;

/// A `--secret` value as buildx reads it: `id=ID` with `src=PATH` (or `source=`), `env=VAR`,
/// `type=file|env` (with `type=env`, `src` names the variable); with neither, the variable
/// named ID if it is set, else the file named ID.
pub(crate) fn secret(text: &str) -> anyhow::Result<(String, SecretSource)> {
    let (mut id, mut src, mut env, mut kind) = (None, None, None, None);
    for field in text.split(',') {
        match field.split_once('=') {
            Some(("id", v)) => id = Some(v.to_owned()),
            Some(("src" | "source", v)) => src = Some(v.to_owned()),
            Some(("env", v)) => env = Some(v.to_owned()),
            Some(("type", v @ ("file" | "env"))) => kind = Some(v),
            Some(("type", v)) => {
                anyhow::bail!("--secret {text}: type={v} is not a secret type (file or env)")
            }
            _ => anyhow::bail!(
                "--secret {text}: unexpected {field:?}; the keys are id, src, env and type"
            ),
        }
    }
    let id = id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| anyhow::anyhow!("--secret {text}: no id=ID"))?;
    if kind == Some("env") && env.is_none() {
        env = src.take();
    }
    let source = match (src, env) {
        (Some(_), Some(_)) => anyhow::bail!("--secret {text}: give src= or env=, not both"),
        (Some(path), None) => SecretSource::File(path.into()),
        (None, Some(var)) => SecretSource::Env(var),
        (None, None) if std::env::var_os(&id).is_some() => SecretSource::Env(id.clone()),
        (None, None) => SecretSource::File(id.clone().into()),
    };
    match &source {
        SecretSource::File(path) => {
            let meta = std::fs::metadata(path)
                .ok()
                .filter(|m| m.is_file())
                .ok_or_else(|| {
                    anyhow::anyhow!("--secret {text}: {} is not a file", path.display())
                })?;
            anyhow::ensure!(
                meta.len() <= MAX_SECRET_BYTES,
                "--secret {text}: {} is larger than a secret may be (500 KiB)",
                path.display()
            );
        }
        SecretSource::Env(var) => {
            let value = std::env::var_os(var).ok_or_else(|| {
                anyhow::anyhow!("--secret {text}: the environment has no variable {var}")
            })?;
            anyhow::ensure!(
                value.len() as u64 <= MAX_SECRET_BYTES,
                "--secret {text}: ${var} is larger than a secret may be (500 KiB)"
            );
        }
    }
    Ok((id, source))
}

/// A secret's id and the file that holds it.
type SecretFile = (String, PathBuf);

/// The secrets as the build reads them, files all: a variable's value is written to a private
/// staging directory of the store (0700, root's), removed when the build is done.
pub(crate) fn secret_files(
    store: &kiln_image::Store,
    secrets: Vec<(String, SecretSource)>,
) -> anyhow::Result<(Vec<SecretFile>, Option<tempfile::TempDir>)> {
    let mut staged = None;
    let mut files = Vec::with_capacity(secrets.len());
    for (i, (id, source)) in secrets.into_iter().enumerate() {
        let path = match source {
            SecretSource::File(path) => path,
            SecretSource::Env(var) => {
                let dir = match &mut staged {
                    Some(dir) => dir,
                    None => staged.insert(store.staging_dir("secrets")?),
                };
                let path = dir.path().join(i.to_string());
                let value = std::env::var_os(&var).unwrap_or_default();
                std::fs::write(&path, value.as_encoded_bytes())
                    .with_context(|| format!("write the secret {id}"))?;
                path
            }
        };
        files.push((id, path));
    }
    Ok((files, staged))
}

/// Puts the resolved `SOURCE_DATE_EPOCH` in the environment, where the library reads the epoch
/// for every timestamp.
#[allow(unsafe_code)]
fn set_source_date_epoch(epoch: super::epoch::Epoch) {
    // SAFETY: `kiln build` calls this before starting any thread of its own (the ssh agents,
    // the interrupt handler and the sandbox's come later); a remote context's download client
    // is dropped, its runtime's threads joined, before `read_input` returns.
    match epoch {
        super::epoch::Epoch::Seconds(value) => unsafe {
            std::env::set_var("SOURCE_DATE_EPOCH", value)
        },
        super::epoch::Epoch::Unset => unsafe { std::env::remove_var("SOURCE_DATE_EPOCH") },
    }
}

/// `--platform a,b`: each checked, none twice.
fn platforms(text: Option<&str>) -> anyhow::Result<Vec<kiln_image::Platform>> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let mut platforms: Vec<kiln_image::Platform> = Vec::new();
    for part in text.split(',') {
        let Some(platform) = super::platform_flag(Some(part.trim()))? else {
            continue;
        };
        anyhow::ensure!(
            !platforms
                .iter()
                .any(|p| p.matches(&platform) && platform.matches(p)),
            "--platform: {platform} is given twice"
        );
        platforms.push(platform);
    }
    Ok(platforms)
}

/// `--jobs`: the machine's cores unless given; at least 1, and no more than one interrupt
/// handle can stop at once.
pub(crate) fn jobs(given: Option<usize>) -> anyhow::Result<usize> {
    let max = kiln_sandbox::MAX_CONCURRENT_RUNS;
    match given {
        Some(0) => anyhow::bail!("--jobs 0: give at least 1"),
        Some(n) if n > max => anyhow::bail!("--jobs {n}: kiln runs at most {max} steps at once"),
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(max)),
    }
}

/// `-q` is quiet progress; with any other `--progress` than auto or quiet it is refused, as
/// buildx refuses it.
fn quiet_progress(progress: Progress, quiet: bool) -> anyhow::Result<Progress> {
    if !quiet {
        return Ok(progress);
    }
    match progress {
        Progress::Auto | Progress::Quiet => Ok(Progress::Quiet),
        other => {
            let name = clap::ValueEnum::to_possible_value(&other)
                .map(|v| v.get_name().to_owned())
                .unwrap_or_default();
            anyhow::bail!("-q/--quiet and --progress {name} cannot be used together")
        }
    }
}

/// Builds the image.
pub fn build(
    store: &Store,
    out: &mut Output,
    progress: Progress,
    args: BuildArgs,
) -> anyhow::Result<ExitCode> {
    let progress = quiet_progress(progress, args.quiet)?;
    let tags = args
        .tags
        .iter()
        .map(|t| t.parse::<Reference>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut build_args = args
        .build_args
        .iter()
        .map(|a| key_value("--build-arg", a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Read first: the Dockerfile's meta ARGs can give SOURCE_DATE_EPOCH, which the outputs
    // below check (rewrite-timestamp) and every timestamp of the build uses.
    let input =
        super::input::read_input(store, &args.context, args.file.as_deref(), &args.registry)?;
    let context_source = match kiln_build::git::Remote::parse(&args.context)? {
        None => super::epoch::ContextSource::Local,
        Some(kiln_build::git::Remote::Http(_)) => {
            super::epoch::ContextSource::Http(input.source_time)
        }
        // The checkout gives every file, and its root, the commit's time.
        Some(kiln_build::git::Remote::Git { .. }) => {
            let root = input.context.root.as_deref().unwrap_or(Path::new("."));
            let time = std::fs::metadata(root)
                .and_then(|m| m.modified())
                .with_context(|| format!("read the time of {}", root.display()))?;
            let seconds = time
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            super::epoch::ContextSource::Git(i64::try_from(seconds).unwrap_or(i64::MAX))
        }
    };
    set_source_date_epoch(super::epoch::resolve(
        &mut build_args,
        &input.dockerfile,
        context_source,
        &args.build_contexts,
        &|url| super::input::url_source_time(store, url, &args.registry),
    )?);
    let labels = args
        .labels
        .iter()
        .map(|a| key_value("--label", a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let secrets = args
        .secrets
        .iter()
        .map(|s| secret(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (secrets, _staged_secrets) = secret_files(store, secrets)?;
    // Lives until the build is done: the agents of key files are kiln's own.
    let ssh_agents = kiln_build::ssh::SshAgents::start(
        store,
        &args.ssh,
        std::env::var_os("SSH_AUTH_SOCK")
            .as_deref()
            .map(std::path::Path::new),
    )?;
    let attest = super::sbom::Attest::from_flags(args.sbom.as_deref(), args.provenance.as_deref())?;
    let outputs = super::output::Plan::new(super::output::Flags {
        outputs: &args.outputs,
        // With attestations the index is pushed below, not the image alone.
        push: args.push && !attest.any(),
        load: args.load,
        tags: &args.tags,
        iidfile: args.iidfile.is_some(),
        quiet: args.quiet,
    })?;
    if let Some(iidfile) = &args.iidfile {
        super::output::remove_stale(iidfile)?;
    }
    let named = super::input::named_contexts(store, &args.build_contexts, &args.registry)?;
    let jobs = jobs(args.jobs)?;
    let mut platforms = platforms(args.platform.as_deref())?;
    // BUILDKIT_MULTI_PLATFORM=1 (BuildKit's built-in build arg): the multi-platform output,
    // index and per-platform directories, for a single platform too.
    let forced_multi = build_args
        .iter()
        .rev()
        .find(|(k, _)| k == "BUILDKIT_MULTI_PLATFORM")
        .is_some_and(|(_, v)| matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"));
    if forced_multi && platforms.is_empty() {
        platforms.push(kiln_image::Platform::host());
    }
    let multi_platform = platforms.len() > 1 || forced_multi;
    let asked = kiln_build::isolation::parse(&args.isolation)?;
    let (isolation, why) = kiln_build::isolation::choose(asked)?;
    let network = match (isolation, args.network.as_deref()) {
        (kiln_build::isolation::Isolation::Chroot, None | Some("host")) => {
            kiln_sandbox::Network::Host
        }
        (kiln_build::isolation::Isolation::Chroot, Some(other)) => anyhow::bail!(
            "--network {other}: --isolation chroot makes no network namespace, so RUN steps \
             share the container's network: drop --network (or pass --network host), or use \
             --isolation oci where namespaces are allowed"
        ),
        (_, network) => network
            .unwrap_or("default")
            .parse::<kiln_sandbox::Network>()
            .map_err(|e| anyhow::anyhow!("--network: {e}"))?,
    };
    // Not into JSON progress or a quiet build.
    if matches!(progress, Progress::Auto | Progress::Plain | Progress::Tty) {
        say_isolation(isolation, &why);
    }
    let mut allow_network_host = false;
    let mut allow_security_insecure = false;
    for entitlement in &args.allow {
        match entitlement.as_str() {
            "network.host" => allow_network_host = true,
            "security.insecure" => allow_security_insecure = true,
            other => anyhow::bail!(
                "--allow {other}: kiln grants network.host and security.insecure, as BuildKit"
            ),
        }
    }
    if attest.any() {
        anyhow::ensure!(
            !args.push || !tags.is_empty(),
            "--push: a push needs a name: give -t REGISTRY/NAME[:TAG]"
        );
        let unsupported: Vec<&str> = [
            ("-o/--output", !args.outputs.is_empty()),
            ("--load", args.load),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect();
        anyhow::ensure!(
            unsupported.is_empty(),
            "{} with --sbom/--provenance is not supported yet: build with -t NAME, then \
             `kiln push NAME` or `kiln save NAME`",
            unsupported.join(", ")
        );
    }
    let annotations = args
        .annotations
        .iter()
        .map(|a| annotation(a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    check_annotations_have_an_index(
        &annotations,
        multi_platform || attest.any(),
        &args.annotations,
    )?;
    let started = super::sbom::started();
    let interrupt = kiln_sandbox::Interrupt::new();
    super::on_interrupt(interrupt.clone());
    let request = BuildRequest {
        dockerfile: input.dockerfile.clone(),
        dockerfile_name: input.dockerfile_name.clone(),
        context: input.context.clone(),
        contexts: named.contexts.clone(),
        tags: tags.clone(),
        build_args,
        target: args.target.clone(),
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        jobs,
        platform: platforms.first().cloned(),
        sync: args.sync,
        labels,
        secrets,
        ssh: ssh_agents.agents(),
        interrupt,
        network,
        allow_network_host,
        allow_security_insecure,
        limits: args.limits.limits()?,
        run_options: run_options(&args)?,
        annotations,
        registry: Some(super::registry::build_registry(
            &args.registry,
            args.pull,
            &args.cache_from,
            args.cache_to.as_deref(),
        )?),
        isolation,
    };
    let reporter = super::progress::BuildView::new(progress);
    if let Some(code) = super::checks::before_build(
        store,
        request.platform.as_ref(),
        &reporter,
        &request.dockerfile,
        &request.dockerfile_name,
        &request.build_args,
        &request.context,
        args.check,
    )? {
        return Ok(code);
    }
    if !args.no_lint {
        // A Dockerfile that does not parse is reported by the build itself.
        if let Ok(findings) = super::lint::lint_text(&request.dockerfile, &request.dockerfile_name)
        {
            for finding in &findings {
                let text = super::lint::render_text(&request.dockerfile_name, finding);
                reporter.report(Event::Warning { text });
            }
        }
    }
    let export_context = super::output::ExportContext {
        store,
        view: &reporter,
        progress,
        registry: &args.registry,
    };
    if multi_platform {
        outputs.check_several_platforms()?;
        let mut built = kiln_build::build_platforms(store, &request, &reporter, &platforms)
            .map_err(|e| at_line(e, &request))?;
        for (platform, image) in &built.images {
            reporter.line(&format!("{platform}: image {}", image.id()));
        }
        if attest.any() {
            built.index = super::sbom::attach(store, &request, &built.images, attest, &started)?;
        }
        reporter.line(&format!("writing index {} done", built.index.digest));
        for tag in &tags {
            reporter.line(&format!("naming to {}", tag.store_name()));
        }
        let (_, first) = &built.images[0];
        let mut exported = super::output::export_index(
            &export_context,
            &outputs,
            &built.index,
            &built.images,
            &args.tags,
        )?;
        // With attestations the outputs are refused and the index pushed here, attestations
        // and all.
        if attest.any() && args.push {
            let registry = super::registry::client(&args.registry)?;
            let pushed = super::registry::push_tags(
                store,
                first,
                Some((&built.images, &built.index)),
                &tags,
                &registry,
                progress,
            )?;
            if let Some(last) = pushed.last() {
                exported = Some(super::output::Exported {
                    manifest: kiln_image::Descriptor::new(
                        kiln_image::media_type::OCI_INDEX,
                        last.digest.clone(),
                        last.size,
                    ),
                    names: args.tags.join(","),
                });
            }
        }
        // buildx's iidfile holds the config digest, or, for an index, which has none, its
        // digest.
        let id = exported
            .as_ref()
            .map_or(&built.index.digest, |e| &e.manifest.digest)
            .clone();
        return write_results(out, &args, &outputs, first, &id, exported.as_ref());
    }
    let image = kiln_build::build(store, &request, &reporter).map_err(|e| at_line(e, &request))?;
    reporter.line(&format!("writing image {} done", image.id()));
    if attest.any() {
        let platform = request
            .platform
            .clone()
            .unwrap_or_else(|| image.config.platform());
        let images = [(platform, image.clone())];
        let index = super::sbom::attach(store, &request, &images, attest, &started)?;
        reporter.line(&format!(
            "writing attestations: index {} done",
            index.digest
        ));
        if args.push {
            let registry = super::registry::client(&args.registry)?;
            super::registry::push_tags(
                store,
                &image,
                Some((&images, &index)),
                &tags,
                &registry,
                progress,
            )?;
        }
    }
    for tag in &tags {
        reporter.line(&format!("naming to {}", tag.store_name()));
    }
    let exported = super::output::export(&export_context, &outputs, &image, &args.tags)?;
    write_results(out, &args, &outputs, &image, image.id(), exported.as_ref())
}

/// What a build leaves for scripts: `--iidfile`, `--metadata-file`, and the id on stdout
/// (alone with `-q`).
fn write_results(
    out: &mut Output,
    args: &BuildArgs,
    outputs: &super::output::Plan,
    image: &kiln_image::Image,
    id: &kiln_image::Digest,
    exported: Option<&super::output::Exported>,
) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.iidfile {
        super::output::write_small_file("--iidfile", path, id.as_str().as_bytes())?;
    }
    if let Some(path) = &args.metadata_file {
        let json = super::output::metadata(image, exported);
        let bytes = serde_json::to_vec_pretty(&json).context("--metadata-file")?;
        super::output::write_small_file("--metadata-file", path, &bytes)?;
    }
    if args.quiet {
        if outputs.has_image() {
            writeln!(io::stdout().lock(), "{id}")?;
        }
    } else if !outputs.uses_stdout() {
        out.line(id.as_str())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Draws build events as BuildKit's plain progress does: `#N [stage i/n] INSTRUCTION`, then the
/// step's output lines prefixed with `#N`, then `#N CACHED` or `#N DONE 1.2s`. On stderr, so
/// that stdout carries only the image id.
pub struct StepPrinter {
    quiet: bool,
    stderr: Mutex<io::Stderr>,
}

impl StepPrinter {
    /// A printer for a progress mode.
    pub fn new(progress: Progress) -> StepPrinter {
        StepPrinter {
            quiet: progress == Progress::Quiet,
            stderr: Mutex::new(io::stderr()),
        }
    }

    pub fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        if let Ok(mut err) = self.stderr.lock() {
            // Progress is best effort: a closed stderr must not fail the build.
            let _ = writeln!(err, "{text}");
        }
    }
}

impl Reporter for StepPrinter {
    fn report(&self, event: Event<'_>) {
        match event {
            Event::Step {
                id,
                stage,
                index,
                total,
                text,
            } => {
                let first = text.lines().next().unwrap_or(text);
                let more = if text.contains('\n') { " …" } else { "" };
                self.line(&format!("#{id} [{stage} {index}/{total}] {first}{more}"));
            }
            Event::Cached { id } => self.line(&format!("#{id} CACHED")),
            Event::Output { id, line } => self.line(&format!("#{id} {line}")),
            Event::Committed { id, bytes, seconds } => self.line(&format!(
                "#{id} committed {} in {seconds:.2}s",
                super::human_size(bytes)
            )),
            Event::Done { id, seconds } => self.line(&format!("#{id} DONE {seconds:.1}s")),
            Event::Warning { text } => self.line(&format!("WARN: {text}")),
            // Plain lines name each blob when it is done (an Output line), not every chunk.
            Event::Transfer { .. } => {}
        }
    }
}
