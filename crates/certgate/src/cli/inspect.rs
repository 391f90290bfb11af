//! `certgate inspect`.

use std::path::PathBuf;
use std::process::ExitCode;

use certgate_pki::inspect::{CertInfo, Inspected};
use certgate_pki::validity::format_time;
use clap::Args;

#[derive(Debug, Args)]
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
    if args.json {
        println!("{}", serde_json::to_string_pretty(&inspected)?);
        return Ok(ExitCode::SUCCESS);
    }
    match inspected {
        Inspected::Certificates { certificates } => {
            for (i, cert) in certificates.iter().enumerate() {
                if certificates.len() > 1 {
                    println!("certificate #{} of {}", i + 1, certificates.len());
                }
                print_cert(cert);
                if i + 1 < certificates.len() {
                    println!();
                }
            }
        }
        Inspected::Csr(csr) => {
            println!("certificate signing request (signature verified)");
            println!("  subject   {}", csr.subject);
            println!("  SANs      {}", or_none(&csr.sans));
            println!("  key       {}", csr.key_type);
            for note in &csr.ignored_by_ca {
                println!("  note      {note}");
            }
        }
        Inspected::Crl(crl) => {
            println!("certificate revocation list");
            println!("  issuer       {}", crl.issuer);
            println!("  number       {}", crl.crl_number.as_deref().unwrap_or("(none)"));
            println!("  this update  {}", format_time(crl.this_update));
            match crl.next_update {
                Some(t) => println!("  next update  {}", format_time(t)),
                None => println!("  next update  (none)"),
            }
            println!("  revoked      {}", crl.revoked.len());
            for r in &crl.revoked {
                let reason = r.reason.as_deref().unwrap_or("unspecified");
                println!("    {}  {}  {reason}", r.serial, format_time(r.revoked_at));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_cert(c: &CertInfo) {
    let kind = if c.is_ca {
        match c.path_len {
            Some(n) => format!("CA certificate (pathlen {n})"),
            None => "CA certificate".to_string(),
        }
    } else {
        "leaf certificate".to_string()
    };
    let self_signed = if c.self_signed { ", self-signed" } else { "" };
    println!("  {kind}{self_signed}");
    println!("  subject      {}", c.subject);
    println!("  issuer       {}", c.issuer);
    println!("  serial       {}", c.serial);
    println!("  not before   {}", format_time(c.not_before));
    println!("  not after    {}  ({})", format_time(c.not_after), c.validity_status);
    for (kind, values) in [("DNS", &c.sans.dns), ("URI", &c.sans.uri), ("email", &c.sans.email)] {
        if !values.is_empty() {
            println!("  SAN {kind:<8} {}", values.join(", "));
        }
    }
    if !c.sans.ip.is_empty() {
        let ips: Vec<String> = c.sans.ip.iter().map(ToString::to_string).collect();
        println!("  SAN IP       {}", ips.join(", "));
    }
    println!("  key          {}", c.key_type);
    println!("  key usage    {}", or_none(&c.key_usage));
    println!("  ext. usage   {}", or_none(&c.extended_key_usage));
    println!("  SHA-256      {}", c.sha256_fingerprint);
    println!("  x5t#S256     {}", c.x5t_s256);
}

fn or_none(items: &[String]) -> String {
    if items.is_empty() { "(none)".into() } else { items.join(", ") }
}
