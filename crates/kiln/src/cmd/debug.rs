//! `kiln debug`: the parser's and the shell lexer's view of the input.

use std::process::ExitCode;

use clap::Args;

/// Arguments of `kiln debug`.
#[derive(Debug, Args)]
pub struct DebugArgs {}

/// Runs `kiln debug`.
pub fn run(_args: DebugArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("kiln debug is not implemented yet")
}
