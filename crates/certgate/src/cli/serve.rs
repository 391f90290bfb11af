//! `certgate serve` (being built: see issue 4).

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct ServeArgs {}

pub fn run(_args: ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`certgate serve` is not available in this build yet")
}
