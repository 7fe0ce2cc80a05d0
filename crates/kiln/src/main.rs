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
    let cli = cmd::Cli::parse();
    if let Err(err) = init_logging(&cli.log_level) {
        cmd::report_error(&err);
        return ExitCode::FAILURE;
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
