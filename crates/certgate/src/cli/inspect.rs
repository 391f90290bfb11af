//! `certgate inspect`.

use std::path::PathBuf;
use std::process::ExitCode;

use certgate_pki::inspect::{CertInfo, CrlInfo, Inspected};
use certgate_pki::validity::format_time;
use clap::Args;

use super::out::Out;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  certgate inspect api.crt                          # every certificate in the chain
  certgate inspect certgate-ca/crl.pem --json")]
pub struct InspectArgs {
    /// A certificate (or chain), CSR or CRL, PEM or DER.
    pub file: PathBuf,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let bytes = certgate_pki::fs::read(&args.file)?;
    let inspected = certgate_pki::inspect::inspect(&bytes, &args.file.display().to_string())?;
    let mut stdout = Out::lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&inspected)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    match inspected {
        Inspected::Certificates { certificates } => {
            for (i, cert) in certificates.iter().enumerate() {
                if certificates.len() > 1 {
                    writeln!(stdout, "certificate #{} of {}", i + 1, certificates.len())?;
                }
                print_cert(&mut stdout, cert)?;
                if i + 1 < certificates.len() {
                    writeln!(stdout)?;
                }
            }
        }
        Inspected::Csr(csr) => {
            writeln!(stdout, "certificate signing request (signature verified)")?;
            writeln!(stdout, "  subject   {}", csr.subject)?;
            writeln!(stdout, "  SANs      {}", or_none(&csr.sans))?;
            writeln!(stdout, "  key       {}", csr.key_type)?;
            for note in &csr.ignored_by_ca {
                writeln!(stdout, "  note      {note}")?;
            }
        }
        Inspected::Crl(crl) => {
            writeln!(stdout, "certificate revocation list")?;
            print_crl(&mut stdout, &crl)?;
        }
        Inspected::Crls { crls } => {
            for (i, crl) in crls.iter().enumerate() {
                if i > 0 {
                    writeln!(stdout)?;
                }
                writeln!(stdout, "certificate revocation list #{} of {}", i + 1, crls.len())?;
                print_crl(&mut stdout, crl)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_crl(stdout: &mut Out, crl: &CrlInfo) -> anyhow::Result<()> {
    writeln!(stdout, "  issuer       {}", crl.issuer)?;
    writeln!(stdout, "  number       {}", crl.crl_number.as_deref().unwrap_or("(none)"))?;
    writeln!(stdout, "  this update  {}", format_time(crl.this_update))?;
    match crl.next_update {
        Some(t) => writeln!(stdout, "  next update  {}", format_time(t))?,
        None => writeln!(stdout, "  next update  (none)")?,
    }
    writeln!(stdout, "  revoked      {}", crl.revoked.len())?;
    for r in &crl.revoked {
        let reason = r.reason.as_deref().unwrap_or("unspecified");
        writeln!(stdout, "    {}  {}  {reason}", r.serial, format_time(r.revoked_at))?;
    }
    Ok(())
}

fn print_cert(stdout: &mut Out, c: &CertInfo) -> anyhow::Result<()> {
    let kind = if c.is_ca {
        match c.path_len {
            Some(n) => format!("CA certificate (pathlen {n})"),
            None => "CA certificate".to_string(),
        }
    } else {
        "leaf certificate".to_string()
    };
    let self_signed = if c.self_signed { ", self-signed" } else { "" };
    writeln!(stdout, "  {kind}{self_signed}")?;
    writeln!(stdout, "  subject      {}", c.subject)?;
    writeln!(stdout, "  issuer       {}", c.issuer)?;
    writeln!(stdout, "  serial       {}", c.serial)?;
    writeln!(stdout, "  not before   {}", format_time(c.not_before))?;
    writeln!(stdout, "  not after    {}  ({})", format_time(c.not_after), c.validity_status)?;
    for (kind, values) in [("DNS", &c.sans.dns), ("URI", &c.sans.uri), ("email", &c.sans.email)] {
        if !values.is_empty() {
            writeln!(stdout, "  SAN {kind:<8} {}", values.join(", "))?;
        }
    }
    if !c.sans.ip.is_empty() {
        let ips: Vec<String> = c.sans.ip.iter().map(ToString::to_string).collect();
        writeln!(stdout, "  SAN IP       {}", ips.join(", "))?;
    }
    writeln!(stdout, "  key          {}", c.key_type)?;
    writeln!(stdout, "  key usage    {}", or_none(&c.key_usage))?;
    writeln!(stdout, "  ext. usage   {}", or_none(&c.extended_key_usage))?;
    writeln!(stdout, "  SHA-256      {}", c.sha256_fingerprint)?;
    writeln!(stdout, "  x5t#S256     {}", c.x5t_s256)?;
    Ok(())
}

fn or_none(items: &[String]) -> String {
    if items.is_empty() { "(none)".into() } else { items.join(", ") }
}
