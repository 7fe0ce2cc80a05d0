//! `kiln`: build container images from Dockerfiles without a daemon.
//!
//! `main` parses flags, hands them to `run`, and decides the exit code in one place.

mod cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
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
