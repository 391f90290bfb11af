//! `certgate quickstart` (being built: see issue 4).

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct QuickstartArgs {}

pub fn run(_args: QuickstartArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`certgate quickstart` is not available in this build yet")
}
