//! `kiln`: build container images from Dockerfiles without a daemon.
//!
//! `main` parses flags, hands them to `run`, and decides the exit code in one place.
// Not `forbid`: `kiln build` puts a `--build-arg SOURCE_DATE_EPOCH` into the environment,
// where kiln-build reads it, and that one call is allowed where it is made.
#![deny(unsafe_code)]

mod cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The second half of a rootless kiln (see `rootless`), before any thread starts.
    if let Err(err) = kiln_sandbox::userns::enter_if_asked() {
        cmd::report_error(&err.into());
        return ExitCode::FAILURE;
    }
    let cli = cmd::Cli::parse();
    if let Err(err) = init_logging(&cli.log_level) {
        cmd::report_error(&err);
        return ExitCode::FAILURE;
    }
    if !rustix::process::geteuid().is_root() && cli.command.needs_store() {
        return match rootless(&cli) {
            Ok(code) => code,
            Err(err) => {
                cmd::report_error(&err);
                ExitCode::FAILURE
            }
        };
    }
    // Before any thread starts. As a normal user there is nothing kiln could mount anyway.
    if rustix::process::geteuid().is_root()
        && let Err(err) = kiln_sandbox::namespaces::enter_private_mount_namespace()
    {
        // EPERM (a container with docker's default seccomp profile): kiln cannot mount
        // anything there either, so nothing can be left mounted.
        if err.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) {
            tracing::debug!("{err}: no mounts allowed here");
        } else {
            tracing::warn!(
                "{err}: kiln's own mounts are in the host's mount namespace, and a killed kiln \
                 may leave one mounted until its next run"
            );
        }
    }
    match cmd::run(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            cmd::report_error(&err);
            ExitCode::FAILURE
        }
    }
}

/// A normal user's kiln runs itself again as root of a user namespace that maps the user's
/// subordinate ids (`kiln_sandbox::userns`), with the store the user's own.
fn rootless(cli: &cmd::Cli) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    let mapping = kiln_sandbox::userns::preflight().context(
        "kiln as a normal user builds with --isolation rootless (a user namespace of its own), \
         which cannot work here. Otherwise run kiln as root: in a container with docker's \
         default security it then uses --isolation chroot, which needs CAP_SYS_CHROOT (docker \
         grants it to root)",
    )?;
    // Inside, kiln is uid 0 and would pick root's store.
    let root = cli
        .root
        .clone()
        .unwrap_or_else(kiln_image::Store::default_root);
    let code = kiln_sandbox::userns::reexec(&mapping, &[("KILN_ROOT", root.as_os_str())])?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// A reader that closed our stdout early (`kiln save | head`) is not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Library logs (`tracing`) go to stderr at the `--log-level` given; `KILN_LOG` may refine it
/// per module (`kiln_registry=debug`).
fn init_logging(level: &str) -> anyhow::Result<()> {
    if !["error", "warn", "info", "debug", "trace", "off"].contains(&level) {
        anyhow::bail!("--log-level {level}: expected error, warn, info, debug or trace");
    }
    let filter = std::env::var("KILN_LOG").unwrap_or_else(|_| level.to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .map_err(|e| anyhow::anyhow!("KILN_LOG={filter}: {e}"))?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    Ok(())
}
