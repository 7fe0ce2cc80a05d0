//! `kiln pull`, `kiln push`, `kiln login`, `kiln logout`, and the registry settings every
//! command that talks to registries shares (config files, `--registry-mirror`).

use std::io::{self, Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::Context as _;
use clap::Args;
use kiln_image::{Reference, Store};
use kiln_registry::{Event, Registry, RegistryConfig, Reporter};

use super::{Output, Progress, human_size};

/// Registry settings: config files and mirrors.
#[derive(Debug, Clone, Default, Args)]
pub struct RegistryFlags {
    /// A registry config file, read after /etc/kiln/config.toml and
    /// $XDG_CONFIG_HOME/kiln/config.toml (`[registry."docker.io"] mirrors = [...]`).
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A pull mirror: `URL` mirrors docker.io, `HOST=URL` mirrors HOST (repeatable; tried in
    /// order before the registry).
    #[arg(long = "registry-mirror", value_name = "[HOST=]URL")]
    pub mirrors: Vec<String>,
}

/// Reads `/etc/kiln/config.toml`, then `$XDG_CONFIG_HOME/kiln/config.toml` (or
/// `~/.config/kiln/config.toml`), then `--config`; later files override earlier ones host by
/// host. `--registry-mirror` adds mirrors last.
pub fn load_config(flags: &RegistryFlags) -> anyhow::Result<RegistryConfig> {
    let mut config = RegistryConfig::default();
    let user_dir = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")),
    };
    let mut files = vec![(PathBuf::from("/etc/kiln/config.toml"), false)];
    if let Some(dir) = user_dir {
        files.push((dir.join("kiln/config.toml"), false));
    }
    if let Some(file) = &flags.config {
        files.push((file.clone(), true));
    }
    for (file, required) in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !required => continue,
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("read {}", file.display())));
            }
        };
        let parsed: RegistryConfig =
            toml::from_str(&text).with_context(|| format!("parse {}", file.display()))?;
        parsed
            .validate()
            .with_context(|| format!("in {}", file.display()))?;
        config.merge(parsed);
    }
    for mirror in &flags.mirrors {
        config.add_mirror(mirror).context("--registry-mirror")?;
    }
    Ok(config)
}

/// A registry client with the settings of these flags.
pub fn client(flags: &RegistryFlags) -> anyhow::Result<Registry> {
    Ok(Registry::new(load_config(flags)?)?)
}

/// `kiln pull`
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln pull 127.0.0.1:5000/library/debian:bookworm\n  kiln pull --platform linux/arm64 quay.io/org/app@sha256:…\n  kiln pull --registry-mirror https://mirror.example ubuntu:trusty"
)]
pub struct PullArgs {
    /// The image reference (`ubuntu:trusty` is docker.io/library/ubuntu:trusty).
    pub image: String,
    /// The platform to pull from a multi-platform index (default: the host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

/// `kiln push`
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln push 127.0.0.1:5000/my-python-base\n  kiln push my-python-base registry.example/team/python-base:1"
)]
pub struct PushArgs {
    /// The image in the store.
    pub image: String,
    /// Where to push it (default: the image's own name).
    pub target: Option<String>,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

/// `kiln login`
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  echo \"$TOKEN\" | kiln login -u ci --password-stdin registry.example\n  kiln login -u me -p secret 127.0.0.1:5000"
)]
pub struct LoginArgs {
    /// The registry host (`docker.io` when omitted).
    pub server: Option<String>,
    /// User name.
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin: arguments show in `ps`).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

/// `kiln logout`
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  kiln logout registry.example:5000")]
pub struct LogoutArgs {
    /// The registry host (`docker.io` when omitted).
    pub server: Option<String>,
}

fn parse_reference(text: &str) -> anyhow::Result<Reference> {
    Ok(text.parse::<Reference>()?)
}

/// Pulls an image into the store.
pub fn pull(
    store: &Store,
    out: &mut Output,
    progress: Progress,
    args: PullArgs,
) -> anyhow::Result<ExitCode> {
    let reference = parse_reference(&args.image)?;
    let platform = args
        .platform
        .as_deref()
        .map(kiln_registry::parse_platform)
        .transpose()?;
    let registry = client(&args.registry)?;
    let printer = TransferPrinter::new(progress);
    let pulled = registry
        .pull(store, &reference, platform.as_ref(), &printer)
        .with_context(|| format!("pull {reference}"))?;
    printer.line(&format!(
        "pulled {} from {}{}: {} downloaded, digest {}",
        reference,
        pulled.served_by,
        if pulled.from_mirror { " (mirror)" } else { "" },
        human_size(pulled.downloaded),
        pulled.remote_digest
    ));
    out.line(pulled.image.id().as_str())?;
    Ok(ExitCode::SUCCESS)
}

/// Pushes an image from the store.
pub fn push(
    store: &Store,
    out: &mut Output,
    progress: Progress,
    args: PushArgs,
) -> anyhow::Result<ExitCode> {
    let image = store.resolve(&args.image)?;
    let target = parse_reference(args.target.as_deref().unwrap_or(&args.image))?;
    let registry = client(&args.registry)?;
    let printer = TransferPrinter::new(progress);
    // A multi-platform image goes as its index, with every platform's image.
    let tagged = args
        .image
        .parse::<Reference>()
        .ok()
        .and_then(|r| {
            let name = r.store_name();
            store.list().ok()?.into_iter().find(|t| t.name == name)
        })
        .filter(|t| kiln_image::is_index(&t.descriptor.media_type));
    let pushed = match tagged {
        Some(tagged) => {
            let images: Vec<(kiln_image::Platform, kiln_image::Image)> = store
                .platform_images(&tagged.descriptor)?
                .into_iter()
                .map(|(p, image)| (p.unwrap_or_else(|| image.config.platform()), image))
                .collect();
            push_stored_index(
                store,
                &registry,
                &images,
                &tagged.descriptor,
                &target,
                &printer,
            )
        }
        None => Ok(registry.push(store, &image, &target, &printer)?),
    }
    .with_context(|| format!("push {target}"))?;
    printer.line(&format!(
        "pushed {target}: digest {} uploaded {} bytes, compressed {} layers",
        pushed.digest, pushed.uploaded, pushed.compressed
    ));
    out.line(pushed.digest.as_str())?;
    Ok(ExitCode::SUCCESS)
}

/// Checks and stores credentials.
pub fn login(out: &mut Output, args: LoginArgs) -> anyhow::Result<ExitCode> {
    let server = args
        .server
        .clone()
        .unwrap_or_else(|| kiln_image::DEFAULT_DOMAIN.to_owned());
    let username = args
        .username
        .clone()
        .context("give the user name with -u USER")?;
    let password = match (&args.password, args.password_stdin) {
        (Some(_), true) => anyhow::bail!("give either --password or --password-stdin, not both"),
        (Some(p), false) => p.clone(),
        (None, true) => {
            let mut text = String::new();
            io::stdin()
                .read_to_string(&mut text)
                .context("read the password from stdin")?;
            text.trim_end_matches(['\n', '\r']).to_owned()
        }
        (None, false) => anyhow::bail!("give the password with --password-stdin (or -p)"),
    };
    anyhow::ensure!(!password.is_empty(), "the password is empty");
    let registry = client(&args.registry)?;
    let file = kiln_registry::auth::login(&registry, &server, &username, &password)
        .with_context(|| format!("log in to {server}"))?;
    out.line(&format!(
        "Login Succeeded (credentials stored in {})",
        file.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// Forgets credentials.
pub fn logout(out: &mut Output, args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let server = args
        .server
        .unwrap_or_else(|| kiln_image::DEFAULT_DOMAIN.to_owned());
    if kiln_registry::auth::logout(&server)? {
        out.line(&format!("Removing login credentials for {server}"))?;
    } else {
        out.line(&format!("Not logged in to {server}"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Draws transfer events: a bar per blob on a terminal, else one plain line per blob when it
/// is done (`<digest> : <action> <bytes> done`).
pub struct TransferPrinter {
    quiet: bool,
    stderr: Mutex<io::Stderr>,
    bars: Option<Bars>,
    json: bool,
}

struct Bars {
    multi: indicatif::MultiProgress,
    by_digest: Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
}

impl TransferPrinter {
    /// A printer for a progress mode.
    pub fn new(progress: Progress) -> TransferPrinter {
        use std::io::IsTerminal as _;
        // Bars need a terminal to draw on; `--progress tty` elsewhere falls back to lines.
        let tty = match progress {
            Progress::Tty | Progress::Auto => io::stderr().is_terminal(),
            Progress::Plain | Progress::Quiet | Progress::Json => false,
        };
        TransferPrinter {
            json: progress == Progress::Json,
            quiet: progress == Progress::Quiet,
            stderr: Mutex::new(io::stderr()),
            bars: tty.then(|| Bars {
                multi: indicatif::MultiProgress::new(),
                by_digest: Mutex::new(Default::default()),
            }),
        }
    }

    /// Prints one line (best effort).
    pub fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        if let Some(bars) = &self.bars {
            let _ = bars.multi.println(text);
            return;
        }
        if let Ok(mut err) = self.stderr.lock() {
            if self.json {
                let _ = writeln!(err, "{}", serde_json::json!({"type": "log", "text": text}));
            } else {
                let _ = writeln!(err, "{text}");
            }
        }
    }

    fn bar(&self, digest: &kiln_image::Digest, size: u64) -> Option<indicatif::ProgressBar> {
        let bars = self.bars.as_ref()?;
        let mut map = bars.by_digest.lock().ok()?;
        let bar = map.entry(digest.as_str().to_owned()).or_insert_with(|| {
            let bar = bars.multi.add(indicatif::ProgressBar::new(size));
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(digest.short().to_owned());
            bar
        });
        Some(bar.clone())
    }
}

impl Reporter for TransferPrinter {
    fn report(&self, event: Event<'_>) {
        if self.quiet {
            return;
        }
        match event {
            Event::BlobStart { digest, size } => {
                if self.bar(digest, size).is_none() {
                    self.line(&format!("{}: {} start", digest.short(), human_size(size)));
                }
            }
            Event::BlobProgress { digest, bytes } => {
                if let Some(bar) = self.bar(digest, 0) {
                    bar.set_position(bytes);
                }
            }
            Event::BlobDone {
                digest,
                bytes,
                action,
            } => match self.bar(digest, bytes) {
                Some(bar) => bar.finish_with_message(action.as_str()),
                None => self.line(&format!(
                    "{}: {} {} done",
                    digest.short(),
                    action.as_str(),
                    human_size(bytes)
                )),
            },
            Event::Compressed {
                diff_id,
                digest,
                size,
            } => self.line(&format!(
                "{}: compressed to {} ({})",
                diff_id.short(),
                digest.short(),
                human_size(size)
            )),
            Event::Retry {
                what,
                attempt,
                error,
            } => self.line(&format!("retry {what} (attempt {attempt} failed: {error})")),
            Event::MirrorSkipped { mirror, why } => {
                self.line(&format!("mirror {mirror} skipped: {why}"))
            }
            Event::Served {
                host,
                reference,
                mirror,
            } => self.line(&format!(
                "{reference}: served by {}{host}",
                if mirror { "mirror " } else { "" }
            )),
        }
    }
}

/// The registry side of `kiln build`: settings, `--pull`, the caches.
pub fn build_registry(
    flags: &RegistryFlags,
    pull: bool,
    cache_from: &[String],
    cache_to: Option<&str>,
) -> anyhow::Result<std::sync::Arc<kiln_build::registry::BuildRegistry>> {
    use kiln_build::registry::{BuildRegistry, parse_cache_from, parse_cache_to};
    let mut settings = BuildRegistry::new(load_config(flags)?);
    settings.pull = pull;
    settings.cache_from = cache_from
        .iter()
        .map(|c| parse_cache_from(c))
        .collect::<Result<_, _>>()?;
    settings.cache_to = cache_to.map(parse_cache_to).transpose()?;
    Ok(std::sync::Arc::new(settings))
}

/// `kiln build --push` and `-o type=registry`: pushes the built image under each name; with
/// `index`, the images of that stored index, with its attestations and annotations.
pub fn push_tags(
    store: &Store,
    image: &kiln_image::Image,
    index: Option<(
        &[(kiln_image::Platform, kiln_image::Image)],
        &kiln_image::Descriptor,
    )>,
    tags: &[Reference],
    registry: &Registry,
    progress: Progress,
) -> anyhow::Result<Vec<kiln_registry::Pushed>> {
    let printer = TransferPrinter::new(progress);
    let mut all = Vec::with_capacity(tags.len());
    for tag in tags {
        let pushed = match index {
            Some((images, index)) => {
                push_stored_index(store, registry, images, index, tag, &printer)
            }
            None => Ok(registry.push(store, image, tag, &printer)?),
        }
        .with_context(|| format!("push {tag}"))?;
        printer.line(&format!(
            "pushed {tag}: digest {} uploaded {} bytes, compressed {} layers",
            pushed.digest, pushed.uploaded, pushed.compressed
        ));
        all.push(pushed);
    }
    Ok(all)
}

/// Pushes `images` as the index the store holds over them: with its attestation manifests
/// and its annotations.
fn push_stored_index(
    store: &Store,
    registry: &Registry,
    images: &[(kiln_image::Platform, kiln_image::Image)],
    index: &kiln_image::Descriptor,
    target: &Reference,
    printer: &TransferPrinter,
) -> anyhow::Result<kiln_registry::Pushed> {
    Ok(registry.push_attested_index(
        store,
        images,
        &store.attestations(index)?,
        &store.index_annotations(index)?,
        target,
        printer,
    )?)
}
