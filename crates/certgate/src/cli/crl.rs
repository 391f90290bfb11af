//! `certgate crl`: the CRL of every CA in the directory, or of one.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use certgate_pki::ca::Authority;
use certgate_pki::crl::CrlIssuer;
use certgate_pki::fs::{Mode, Overwrite};
use certgate_pki::validity::{checked_after, format_time};
use clap::Args;
use time::OffsetDateTime;

use super::CaDir;
use super::out::Out;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  certgate crl                                      # crl.pem: every CA's CRL, for nginx ssl_crl
  certgate crl --issuer root --next-update 365d     # the root's CRL, signed once a year
  certgate crl --issuer intermediate --der          # intermediate.crl, to serve at --crl-url")]
pub struct CrlArgs {
    #[command(flatten)]
    pub dir: CaDir,
    /// Only this CA's CRL: `intermediate` (revoked leaves) or `root` (revoked intermediates).
    /// Default: every CA's CRL in one PEM bundle, which nginx's ssl_crl and
    /// `openssl verify -crl_check_all` need. The bundle reuses the root's CRL while it is
    /// current and valid for at least --next-update, so the root key can stay offline.
    #[arg(long, value_parser = parse_issuer)]
    pub issuer: Option<CrlIssuer>,
    /// Write DER instead of PEM (one CRL, so it needs --issuer).
    #[arg(long, requires = "issuer")]
    pub der: bool,
    /// Where to write (default in the CA directory: crl.pem for the bundle, ISSUER.crl.pem
    /// for one CA, ISSUER.crl with --der; '-' for stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// How long the CRL is valid (nextUpdate), with a unit: 7d, 12h, 30m. Publish a new one
    /// before then.
    #[arg(long, default_value = "7d")]
    pub next_update: String,
    /// Password file for encrypted CA keys.
    #[arg(long, env = "CERTGATE_CA_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
}

fn parse_issuer(s: &str) -> Result<CrlIssuer, String> {
    CrlIssuer::parse(s).ok_or_else(|| format!("{s:?}: use root or intermediate"))
}

pub fn run(args: CrlArgs) -> anyhow::Result<ExitCode> {
    let next = certgate_pki::validity::parse_duration(&args.next_update)?;
    let next_at = checked_after("the CRL's next update", OffsetDateTime::now_utc(), next)?;
    let mut ca =
        Authority::open(&args.dir.ca_dir, super::ca_password(args.password_file.as_ref())?)?;
    let issuers = match args.issuer {
        Some(one) => vec![one],
        None => ca.crl_issuers(),
    };
    let default_out = match (args.issuer, args.der) {
        (None, _) => ca.paths().crl.clone(),
        (Some(one), false) => ca.paths().dir.join(format!("{one}.crl.pem")),
        (Some(one), true) => ca.paths().published_crl(one),
    };
    let out = args.out.unwrap_or(default_out);
    let to_stdout = out.as_os_str() == "-";

    // The root's CRL first: when the bundle cannot reuse it and its key is not at hand, nothing
    // is signed. Printed and bundled in the order of `issuers` (leaves' issuer first).
    let mut signed = Vec::new();
    for &issuer in issuers.iter().rev() {
        let reusable = args.issuer.is_none() && issuer == CrlIssuer::Root && issuers.len() > 1;
        if reusable && let Some((der, number, until)) = ca.current_crl(issuer, next_at)? {
            let note =
                format!("reused the root's CRL #{number} (next update by {})", format_time(until));
            signed.push((der, note));
            continue;
        }
        let result = ca.crl(issuer, next, |_| Ok(()));
        let (der, number, count) = match reusable {
            true => result.context(
                "the root's CRL must be signed again: the published root.crl is missing, due \
                 before the new next update, or does not list every revoked intermediate",
            )?,
            false => result?,
        };
        let note = format!(
            "signed the {issuer}'s CRL #{number} ({count} revoked, next update by {})",
            format_time(next_at)
        );
        signed.push((der, note));
    }
    signed.reverse();
    let (ders, notes): (Vec<Vec<u8>>, Vec<String>) = signed.into_iter().unzip();
    let bytes = match args.der {
        true => ders.concat(),
        false => ders
            .iter()
            .map(|d| certgate_pki::pem::encode("X509 CRL", d))
            .collect::<String>()
            .into_bytes(),
    };
    let mut stdout = Out::lock();
    if to_stdout {
        stdout.write_bytes(&bytes)?;
        return Ok(ExitCode::SUCCESS);
    }
    // A CRL is replaced on every publication: that is its job.
    certgate_pki::fs::write_atomic(&out, &bytes, Mode::Public, Overwrite::Force)?;
    for note in notes {
        writeln!(stdout, "{note}")?;
    }
    writeln!(stdout, "wrote {}", out.display())?;
    Ok(ExitCode::SUCCESS)
}
