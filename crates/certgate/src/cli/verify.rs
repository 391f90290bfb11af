//! `certgate verify`: the gateway's path validation on any certificate file.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use certgate_pki::verify::{
    DEFAULT_MAX_DEPTH, Purpose, TrustStore, VerifiedChain, VerifyError, VerifyPolicy,
};
use clap::{Args, ValueEnum};
use rustls_pki_types::{ServerName, UnixTime};

use super::CaDir;
use super::out::Out;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  certgate verify joe.crt                           # a client certificate, against the CA's root
  certgate verify api.crt --purpose server --name api.example.com
  certgate verify joe.crt --crl certgate-ca/crl.pem --json
  certgate verify client.pem --ca root_certificate.pem")]
pub struct VerifyArgs {
    /// The certificate to check: leaf first, then any intermediates (PEM), as a client sends it.
    pub cert: PathBuf,
    /// Trust anchor(s) (PEM). Default: root.crt in the CA directory.
    #[arg(long)]
    pub ca: Vec<PathBuf>,
    /// CRL file(s) to check revocation against (repeatable).
    #[arg(long)]
    pub crl: Vec<PathBuf>,
    /// What the certificate must be good for.
    #[arg(long, value_enum, default_value_t = PurposeArg::Client)]
    pub purpose: PurposeArg,
    /// Host name or IP the certificate must be valid for (server certificates).
    #[arg(long)]
    pub name: Option<String>,
    /// Maximum CA certificates above the leaf, trust anchor included (as the gateway's
    /// max_chain_depth).
    #[arg(long, default_value_t = DEFAULT_MAX_DEPTH)]
    pub max_depth: u8,
    /// Accept a certificate whose issuer has no CRL among --crl (as the gateway's
    /// allow_unknown_revocation).
    #[arg(long)]
    pub allow_unknown_revocation: bool,
    /// Also refuse when a CA above the leaf has no CRL among --crl (as the gateway's
    /// full_chain_crls). A revoked intermediate is refused either way.
    #[arg(long)]
    pub full_chain_crls: bool,
    /// Print the verdict as one JSON object on stdout (accepted or refused; the exit code is
    /// the same as without it): {"verdict": "SUCCESS"|"FAILED", "reason": null|"expired"|...,
    /// "message", "cert", "purpose", "chain": [subjects, leaf first], "trust_anchor",
    /// "crl_files"}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub dir: CaDir,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PurposeArg {
    Client,
    Server,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let cas = if args.ca.is_empty() {
        let root = args.dir.ca_dir.join("root.crt");
        if !root.exists() {
            anyhow::bail!(
                "no trust anchor: give --ca FILE, or --ca-dir pointing at a CA ({} does not exist)",
                root.display()
            );
        }
        vec![root]
    } else {
        args.ca.clone()
    };
    let store = TrustStore::from_pem_files(&cas, &args.crl)?;
    let chain = certgate_pki::pem::read_certs(&args.cert)?;
    let name = match &args.name {
        Some(n) => Some(
            ServerName::try_from(n.clone())
                .with_context(|| format!("--name {n:?} is not a valid host name or IP address"))?,
        ),
        None => None,
    };
    let purpose = purpose(args.purpose);
    let policy = VerifyPolicy {
        purpose,
        max_depth: args.max_depth,
        name,
        allow_unknown_revocation: args.allow_unknown_revocation,
        full_chain_crls: args.full_chain_crls,
        dangerous_stale_crl_grace: std::time::Duration::ZERO,
    };
    let verdict = store.verify(&chain, &policy, UnixTime::now());
    let mut stdout = Out::lock();
    if args.json {
        let presented = chain
            .iter()
            .map(|c| certgate_pki::inspect::cert_info(c).map(|info| info.subject))
            .collect::<Result<Vec<_>, _>>()?;
        let json = verdict_json(&args, presented, &verdict);
        writeln!(stdout, "{}", serde_json::to_string_pretty(&json)?)?;
        return Ok(if verdict.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    match verdict {
        Ok(verified) => {
            writeln!(stdout, "OK: {} is valid for {purpose}", args.cert.display())?;
            let last = verified.subjects.len().saturating_sub(1);
            for (i, subject) in verified.subjects.iter().enumerate() {
                let note = if i == last { "  (trust anchor)" } else { "" };
                writeln!(stdout, "  {i}: {subject}{note}")?;
            }
            if !args.crl.is_empty() {
                writeln!(stdout, "  not revoked according to {} CRL file(s)", args.crl.len())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            // Nothing is left to report a closed stderr to; the exit code still says it.
            let _ = writeln!(
                std::io::stderr(),
                "REFUSED: {}: {reason} (code: {})",
                args.cert.display(),
                reason.code()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The `--json` form of a verdict. Its keys are stable; `reason` uses the reason codes of the
/// gateway's `X-Client-Verify` header (`FAILED:reason`), and `verdict` its `SUCCESS`/`FAILED`.
fn verdict_json(
    args: &VerifyArgs,
    presented: Vec<String>,
    verdict: &Result<VerifiedChain, VerifyError>,
) -> serde_json::Value {
    let cert = args.cert.display().to_string();
    let (status, reason, message, chain) = match verdict {
        Ok(verified) => (
            "SUCCESS",
            None,
            format!("{cert} is valid for {}", purpose(args.purpose)),
            verified.subjects.clone(),
        ),
        Err(reason) => ("FAILED", Some(reason.code()), reason.to_string(), Vec::new()),
    };
    serde_json::json!({
        "verdict": status,
        "reason": reason,
        "message": message,
        "cert": cert,
        "purpose": match args.purpose {
            PurposeArg::Client => "client",
            PurposeArg::Server => "server",
        },
        "trust_anchor": chain.last(),
        "chain": chain,
        "presented": presented,
        "crl_files": args.crl.len(),
    })
}

fn purpose(arg: PurposeArg) -> Purpose {
    match arg {
        PurposeArg::Client => Purpose::ClientAuth,
        PurposeArg::Server => Purpose::ServerAuth,
    }
}
