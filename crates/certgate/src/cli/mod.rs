//! The command line: one module per command family. Each turns its flags into library calls
//! once and prints what happened.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub mod ca;
pub mod cert;
pub mod crl;
pub mod docs;
pub mod inspect;
pub mod online;
pub mod out;
pub mod quickstart;
pub mod renew_daemon;
pub mod serve;
pub mod values;
pub mod verify;

/// A private certificate authority and mTLS gateway in one binary.
#[derive(Debug, Parser)]
#[command(
    name = "certgate",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = "Examples:
  certgate quickstart                               # a throw-away PKI and a gateway to try
  certgate ca init --name \"Example Root CA\"
  certgate cert issue api --san api.example.com
  certgate serve --config certgate.toml"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The certificate authority: create it, print its root, serve it online, make one-time
    /// tokens for it.
    #[command(
        subcommand,
        after_help = "Examples:
  certgate ca init --name \"Example Root CA\"
  certgate ca root > root.crt"
    )]
    Ca(ca::CaCommand),
    /// Issue, sign, export, list, revoke and renew certificates.
    #[command(
        subcommand,
        after_help = "Examples:
  certgate cert issue api --san api.example.com
  certgate cert list"
    )]
    Cert(cert::CertCommand),
    /// Publish the CRLs of the CA: the intermediate's and the root's, or one of them.
    Crl(crl::CrlArgs),
    /// Check a certificate exactly as the gateway would, and say why it is refused.
    Verify(verify::VerifyArgs),
    /// Summarize a certificate, chain, CSR or CRL.
    Inspect(inspect::InspectArgs),
    /// Run the mTLS gateway.
    Serve(serve::ServeArgs),
    /// Make a throw-away PKI and run the gateway in front of a built-in echo service.
    Quickstart(quickstart::QuickstartArgs),
    /// Print a completion script for bash, zsh, fish, elvish or PowerShell.
    Completions(docs::CompletionsArgs),
    /// Print a man page (roff) for certgate or one of its commands.
    Man(docs::ManArgs),
}

/// Where the CA lives, shared by every CA command.
#[derive(Debug, Clone, Args)]
pub struct CaDir {
    /// CA directory.
    #[arg(long, env = "CERTGATE_CA_DIR", default_value = "./certgate-ca", global = true)]
    pub ca_dir: PathBuf,
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Ca(cmd) => ca::run(cmd),
        Command::Cert(cmd) => cert::run(cmd),
        Command::Crl(args) => crl::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Quickstart(args) => quickstart::run(args),
        Command::Completions(args) => docs::completions(args),
        Command::Man(args) => docs::man(args),
    }
}

/// Reads the CA key password from `--password-file`, if given.
pub fn ca_password(file: Option<&PathBuf>) -> anyhow::Result<Option<Vec<u8>>> {
    Ok(match file {
        Some(path) => Some(certgate_pki::fs::read_password(path)?),
        None => None,
    })
}
