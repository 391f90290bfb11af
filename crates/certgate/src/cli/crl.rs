//! `certgate crl`.

use std::path::PathBuf;
use std::process::ExitCode;

use certgate_pki::ca::Authority;
use certgate_pki::fs::{Mode, Overwrite};
use clap::Args;

use super::CaDir;
use super::out::Out;

#[derive(Debug, Args)]
pub struct CrlArgs {
    #[command(flatten)]
    pub dir: CaDir,
    /// Where to write the PEM CRL (default: crl.pem in the CA directory; '-' for stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// How long the CRL is valid (nextUpdate); publish a new one before then.
    #[arg(long, default_value = "7d")]
    pub next_update: String,
    /// Password file for an encrypted CA key.
    #[arg(long, env = "CERTGATE_CA_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
}

pub fn run(args: CrlArgs) -> anyhow::Result<ExitCode> {
    let next = certgate_pki::validity::parse_duration(&args.next_update)?;
    let mut ca =
        Authority::open(&args.dir.ca_dir, super::ca_password(args.password_file.as_ref())?)?;
    let out = args.out.unwrap_or_else(|| ca.paths().crl.clone());
    let to_stdout = out.as_os_str() == "-";
    let (der, number, count) = ca.crl(next, |der| {
        if to_stdout {
            return Ok(());
        }
        let pem = certgate_pki::pem::encode("X509 CRL", der);
        // A CRL is replaced on every publication: that is its job.
        certgate_pki::fs::write_atomic(&out, pem.as_bytes(), Mode::Public, Overwrite::Force)
    })?;
    let mut stdout = Out::lock();
    if to_stdout {
        write!(stdout, "{}", certgate_pki::pem::encode("X509 CRL", &der))?;
    } else {
        let next_at = certgate_pki::validity::checked_after(
            "the CRL's next update",
            time::OffsetDateTime::now_utc(),
            next,
        )?;
        writeln!(
            stdout,
            "wrote CRL #{number} to {} ({count} revoked, next update by {})",
            out.display(),
            certgate_pki::validity::format_time(next_at)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
