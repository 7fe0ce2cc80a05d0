//! Subcommands. Each file holds one command family; this module holds the flags they share,
//! the output helpers and the one error renderer.

mod analyze;
mod archive;
mod bake;
mod build;
mod checks;
mod debug;
mod epoch;
mod image;
mod init;
mod input;
mod lint;
mod output;
mod progress;
mod registry;
mod run;
mod sbom;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kiln_image::Store;

/// Build container images from Dockerfiles, without a daemon.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, propagate_version = true)]
#[command(
    after_help = "Example:\n  kiln build -t my-python-base examples/python-base\n  kiln run --rm my-python-base python3 -V"
)]
pub struct Cli {
    /// Store root (default: /var/lib/kiln for root, $XDG_DATA_HOME/kiln otherwise).
    #[arg(long, global = true, env = "KILN_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "warn", value_name = "LEVEL")]
    pub log_level: String,
    /// Progress output.
    #[arg(long, global = true, value_enum, default_value_t = Progress::Auto, value_name = "MODE")]
    pub progress: Progress,
    #[command(subcommand)]
    pub command: Command,
}

/// How progress is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    /// tty on a terminal, plain otherwise.
    Auto,
    /// Stable lines, for CI and tests.
    Plain,
    /// Redrawn status lines.
    Tty,
    /// Errors only.
    Quiet,
    /// One JSON object per event on stderr, for tools (`kiln build`; other commands print
    /// their lines as `{"type":"log",…}` objects).
    Json,
}

/// Output formats of listing commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
}

/// The commands kiln knows.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile.
    Build(Box<build::BuildArgs>),
    /// Build the targets of a bake file (docker-bake.hcl) in one run.
    Bake(Box<bake::BakeArgs>),
    /// Run a command in a new container from an image.
    Run(run::RunArgs),
    /// List images in the store.
    Images(image::ImagesArgs),
    /// Show the docker-style JSON of images.
    Inspect(image::InspectArgs),
    /// Show the steps and layer sizes of an image.
    History(image::HistoryArgs),
    /// Give an image another name.
    Tag(image::TagArgs),
    /// Remove image names.
    Rmi(image::RmiArgs),
    /// Remove blobs, snapshots and cache no image needs.
    Gc(image::GcArgs),
    /// Verify every blob of the store; with --repair, drop what is corrupt.
    Check(image::CheckArgs),
    /// Read a docker-archive or oci-archive into the store.
    Load(archive::LoadArgs),
    /// Write images as a docker-archive, oci-archive or OCI directory.
    Save(archive::SaveArgs),
    /// Make a one-layer image from a rootfs tarball.
    Import(archive::ImportArgs),
    /// Inspect how kiln reads Dockerfiles and shell words (stable, for tests and users).
    Debug(debug::DebugArgs),
    /// Pull an image from a registry (mirrors first).
    Pull(registry::PullArgs),
    /// Push an image to a registry.
    Push(registry::PushArgs),
    /// Store credentials for a registry.
    Login(registry::LoginArgs),
    /// Remove stored credentials for a registry.
    Logout(registry::LogoutArgs),
    /// Check a Dockerfile against the size and cache lessons (rules KL001…).
    Lint(lint::LintArgs),
    /// Where an image's bytes go: layer sizes, wasted bytes and efficiency (as dive has them).
    Analyze(analyze::AnalyzeArgs),
    /// Write a Dockerfile and .dockerignore from a template (`kiln init python`).
    Init(init::InitArgs),
    /// Print an image's SBOM (SPDX 2.3): from its attestation, or by reading its layers.
    Sbom(sbom::SbomArgs),
}

impl Command {
    /// Whether the command uses the store or runs containers, which a normal user's kiln does
    /// as root of a user namespace (rootless).
    pub fn needs_store(&self) -> bool {
        !matches!(
            self,
            Command::Lint(_)
                | Command::Init(_)
                | Command::Debug(_)
                | Command::Login(_)
                | Command::Logout(_)
        )
    }
}

/// A `--platform` flag's value, checked (`linux/arm64`).
pub fn platform_flag(text: Option<&str>) -> anyhow::Result<Option<kiln_image::Platform>> {
    text.map(str::parse::<kiln_image::Platform>)
        .transpose()
        .map_err(|why| anyhow::anyhow!("--platform: {why}"))
}

/// Runs one command and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let root = cli.root.clone().unwrap_or_else(Store::default_root);
    let mut out = Output {
        quiet: cli.progress == Progress::Quiet,
    };
    let open = || -> anyhow::Result<(Store, kiln_image::StoreLock)> {
        let store = Store::open(&root).map_err(|e| {
            anyhow::Error::new(e).context(format!("open the store at {}", root.display()))
        })?;
        let lock = store.lock_shared()?;
        Ok((store, lock))
    };
    match cli.command {
        Command::Debug(args) => debug::run(args, &root),
        Command::Lint(args) => lint::lint(&mut out, args),
        Command::Analyze(args) => analyze::analyze(&root, &mut out, args),
        Command::Init(args) => init::init(&mut out, args),
        Command::Login(args) => registry::login(&mut out, args),
        Command::Logout(args) => registry::logout(&mut out, args),
        Command::Pull(args) => registry::pull(&open()?.0, &mut out, cli.progress, args),
        Command::Push(args) => registry::push(&open()?.0, &mut out, cli.progress, args),
        Command::Gc(args) => {
            let store = Store::open(&root)?;
            image::gc(&store, &mut out, args)
        }
        // Like gc, it takes the store's lock itself (exclusive to repair).
        Command::Check(args) => {
            let store = Store::open(&root)?;
            image::check(&store, &mut out, args)
        }
        Command::Build(args) => build::build(&open()?.0, &mut out, cli.progress, *args),
        Command::Bake(args) => bake::bake(open, &mut out, cli.progress, *args),
        Command::Run(args) => run::run(&open()?.0, args),
        Command::Images(args) => image::images(&open()?.0, &mut out, args),
        Command::Inspect(args) => image::inspect(&open()?.0, &mut out, args),
        Command::History(args) => image::history(&open()?.0, &mut out, args),
        Command::Tag(args) => image::tag(&open()?.0, args),
        Command::Rmi(args) => image::rmi(&open()?.0, &mut out, args),
        Command::Load(args) => archive::load(&open()?.0, &mut out, args),
        Command::Save(args) => archive::save(&open()?.0, args),
        Command::Import(args) => archive::import(&open()?.0, &mut out, args),
        Command::Sbom(args) => sbom::sbom(&open()?.0, &mut out, args),
    }
}

/// Result lines on stdout (the part of the output that scripts read).
pub struct Output {
    quiet: bool,
}

impl Output {
    /// Prints one line.
    pub fn line(&mut self, text: &str) -> io::Result<()> {
        if self.quiet {
            return Ok(());
        }
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "{text}")
    }

    /// Prints rows as aligned columns.
    pub fn table<const N: usize>(&mut self, rows: &[[String; N]]) -> io::Result<()> {
        let mut widths = [0usize; N];
        for row in rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for row in rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < N {
                    line.extend(std::iter::repeat_n(
                        ' ',
                        widths[i] - cell.chars().count() + 3,
                    ));
                }
            }
            self.line(line.trim_end())?;
        }
        Ok(())
    }
}

/// Sizes as docker prints them: decimal units, three significant digits.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
            + UNITS[unit]
    }
}

/// `5 minutes ago`, from an RFC 3339 time.
pub fn relative_time(created: Option<&str>) -> String {
    let Some(created) = created.and_then(|c| {
        time::OffsetDateTime::parse(c, &time::format_description::well_known::Rfc3339).ok()
    }) else {
        return "N/A".into();
    };
    let seconds = (time::OffsetDateTime::now_utc() - created).whole_seconds();
    let (n, unit) = match seconds {
        s if s < 60 => return "Less than a minute ago".into(),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86400 => (s / 3600, "hour"),
        s if s < 86400 * 30 => (s / 86400, "day"),
        s if s < 86400 * 365 => (s / (86400 * 30), "month"),
        s => (s / (86400 * 365), "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// Makes Ctrl-C and SIGTERM stop the running container (and with it the build) instead of
/// killing kiln outright, so that mounts are torn down and the store stays consistent.
pub fn on_interrupt(interrupt: kiln_sandbox::Interrupt) {
    let Ok(mut signals) = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) else {
        return;
    };
    std::thread::spawn(move || {
        for _ in signals.forever() {
            interrupt.interrupt();
        }
    });
}

/// The one error renderer: `error: …`, then each cause, then a hint where one helps.
#[allow(clippy::print_stderr)]
pub fn report_error(err: &anyhow::Error) {
    // Dockerfile diagnostics arrive rendered, with their own `error:` line.
    let text = err.to_string();
    eprintln!(
        "{}",
        if text.starts_with("error: ") {
            text
        } else {
            format!("error: {text}")
        }
    );
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    if let Some(kiln_build::Error::BaseNotFound { name, .. }) = err
        .chain()
        .find_map(|c| c.downcast_ref::<kiln_build::Error>())
    {
        eprintln!(
            "hint: get it with `kiln import ROOTFS.tar {name}` or `kiln load -i IMAGE.tar` (scripts/make-debian-base.sh makes debian:bookworm with mmdebstrap)"
        );
    }
    if let Some(kiln_image::Error::ImageNotFound(name)) = err
        .chain()
        .find_map(|c| c.downcast_ref::<kiln_image::Error>())
    {
        eprintln!(
            "hint: get it with `kiln load -i FILE`, `kiln import ROOTFS.tar {name}` or `kiln pull {name}`; `kiln images` lists what the store has"
        );
    }
}

/// docker's `--memory` and `--pids-limit`, for build steps and for `kiln run`.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitFlags {
    /// Memory limit of each process tree (docker's units: 512m, 2g; at least 6m).
    #[arg(short = 'm', long, value_name = "BYTES", value_parser = docker_memory)]
    pub memory: Option<u64>,
    /// Most processes and threads at once.
    #[arg(long = "pids-limit", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub pids_limit: Option<u64>,
}

impl LimitFlags {
    /// The limits; an error naming the flags when this machine cannot enforce them (a limit
    /// is never dropped silently).
    pub fn limits(&self) -> anyhow::Result<kiln_sandbox::Limits> {
        let limits = kiln_sandbox::Limits {
            memory: self.memory,
            pids: self.pids_limit,
        };
        if limits.any()
            && let Some(mapping) = kiln_sandbox::userns::current()
        {
            let given: Vec<&str> = [
                ("--memory", limits.memory.is_some()),
                ("--pids-limit", limits.pids.is_some()),
            ]
            .into_iter()
            .filter_map(|(flag, set)| set.then_some(flag))
            .collect();
            anyhow::bail!(
                "{}: a rootless kiln (user namespace {mapping}) cannot enforce them, it has no \
                 cgroup of its own; drop the flag or build as root",
                given.join(", ")
            );
        }
        if !limits.any() {
            return Ok(limits);
        }
        kiln_sandbox::check_limits(&limits).map_err(|err| {
            anyhow::anyhow!("--memory/--pids-limit: this machine cannot enforce them: {err}")
        })?;
        Ok(limits)
    }
}

/// A size as written, `1.5 GB`: its number and its unit, lower-cased (`example` shows the
/// forms in the error).
pub fn number_and_unit(text: &str, example: &str) -> Result<(f64, String), String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size ({example})"))?;
    Ok((number, unit.trim().to_ascii_lowercase()))
}

/// docker's RAMInBytes: a number with an optional binary unit (b, k, m, g, t, p, with an
/// optional `b`/`ib` after it); docker refuses a memory limit below 6 MiB.
fn docker_memory(text: &str) -> Result<u64, String> {
    let bytes = docker_bytes(text)?;
    if bytes < 6 * 1024 * 1024 {
        return Err(format!("{text:?}: the minimum memory limit is 6m"));
    }
    Ok(bytes)
}

/// A size in docker's RAMInBytes units (`--shm-size`); more than 0.
pub fn docker_size(text: &str) -> Result<u64, String> {
    match docker_bytes(text)? {
        0 => Err(format!("{text:?}: the size must be more than 0")),
        bytes => Ok(bytes),
    }
}

fn docker_bytes(text: &str) -> Result<u64, String> {
    let (number, unit) = number_and_unit(text, "512m, 2g, 1073741824")?;
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b').filter(|u| !u.is_empty()))
        .unwrap_or(&unit);
    let power = match unit {
        "" | "b" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return Err(format!("{text:?}: unknown unit (b, k, m, g, t, p)")),
    };
    Ok((number * 1024f64.powi(power)).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_read_as_docker_reads_them() {
        assert_eq!(docker_memory("512m"), Ok(512 << 20));
        assert_eq!(docker_memory("2G"), Ok(2 << 30));
        assert_eq!(docker_memory("1.5gb"), Ok(3 << 29));
        assert_eq!(docker_memory("64MiB"), Ok(64 << 20));
        assert_eq!(docker_memory("10485760"), Ok(10 << 20));
        let small = docker_memory("4m").unwrap_err();
        assert!(small.contains("minimum"), "{small}");
        let unit = docker_memory("5x").unwrap_err();
        assert!(unit.contains("unknown unit"), "{unit}");
        let word = docker_memory("lots").unwrap_err();
        assert!(word.contains("not a size"), "{word}");
    }

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_500), "1.5kB");
        assert_eq!(human_size(7_050_000), "7.05MB");
    }
}
