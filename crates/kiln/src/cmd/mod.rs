//! Subcommands. Each file holds one command family; this module holds the flags they share
//! and the one error renderer.

mod debug;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Build container images from Dockerfiles, without a daemon.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, propagate_version = true)]
pub struct Cli {
    /// Store root (default: /var/lib/kiln for root, $XDG_DATA_HOME/kiln otherwise).
    #[arg(long, global = true, env = "KILN_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "warn", value_name = "LEVEL")]
    pub log_level: String,
    /// Progress output: auto, plain, tty or quiet.
    #[arg(long, global = true, default_value = "auto", value_name = "MODE")]
    pub progress: String,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands kiln knows.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect how kiln reads Dockerfiles and shell words (stable, for tests and users).
    Debug(debug::DebugArgs),
}

/// Runs one command and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Debug(args) => debug::run(args),
    }
}

/// The one error renderer: `error: …`, then each cause, then a hint where one helps.
#[allow(clippy::print_stderr)]
pub fn report_error(err: &anyhow::Error) {
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}
