//! The online CA's client commands: `cert request` (a first certificate with a one-time
//! token) and `cert renew --ca-url` (once, `--if-needed` for timers, or `--daemon`, in
//! `renew_daemon`). The protocol and the checks live in `certgate_gateway::renewal`, shared
//! with the gateway's managed certificates.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use certgate_gateway::renewal::{self, CertFiles, ExpiresIn, RootPin};
use certgate_pki::fs::Overwrite;
use certgate_pki::validity::{format_time, parse_duration};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use super::cert::{RekeyArgs, RenewArgs, RequestArgs};
use super::out::Out;
use super::renew_daemon::AfterRenewal;

/// The exit status of `cert renew --if-needed` when nothing was due.
pub const NOT_DUE: u8 = 3;

/// How the CA's root is known: a file, or its SHA-256 fingerprint (the root is then fetched
/// from `/roots` and must match).
#[derive(Debug, Clone, clap::Args)]
#[group(multiple = false)]
pub struct RootPinArgs {
    /// The CA's root certificate (PEM), e.g. from `certgate ca root`.
    #[arg(long, value_name = "FILE")]
    pub root: Option<PathBuf>,
    /// The SHA-256 fingerprint of the CA's root (hex, colons allowed), as `certgate ca
    /// token` and `certgate inspect` print it: the root is fetched from URL/roots and used
    /// only when it matches.
    #[arg(long, value_name = "SHA256")]
    pub fingerprint: Option<String>,
}

impl RootPinArgs {
    pub fn given(&self) -> bool {
        self.root.is_some() || self.fingerprint.is_some()
    }

    pub fn pin(&self) -> anyhow::Result<RootPin> {
        match (&self.root, &self.fingerprint) {
            (Some(path), _) => certgate_pki::pem::read_certs(path)?
                .into_iter()
                .next()
                .map(RootPin::Root)
                .with_context(|| format!("{}: no certificate in the file", path.display())),
            (None, Some(fingerprint)) => Ok(RootPin::Fingerprint(fingerprint.clone())),
            (None, None) => anyhow::bail!("give the CA's root with --root FILE or --fingerprint"),
        }
    }
}

/// `cert request NAME --ca-url URL --token T`: a key made here, a CSR signed by the CA, the
/// answer checked against the pinned root, NAME.crt and NAME.key written.
pub fn request(a: RequestArgs) -> anyhow::Result<ExitCode> {
    certgate_pki::ca::check_file_name(&a.name)?;
    let files = CertFiles::in_dir(&a.out_dir, &a.name);
    let overwrite = Overwrite::from_force(a.force);
    certgate_pki::fs::ensure_absent([files.cert.as_path(), files.key.as_path()], overwrite)?;
    let lifetime = match (a.hours, a.minutes) {
        (Some(0), _) | (_, Some(0)) => anyhow::bail!("the lifetime must not be zero"),
        (Some(h), _) => Some(time::Duration::hours(i64::from(h))),
        (_, Some(m)) => Some(time::Duration::minutes(i64::from(m))),
        _ => None,
    };
    let pin = a.pin.pin()?;
    super::cert::create_dir(&a.out_dir)?;
    let req = renewal::Request {
        name: &a.name,
        sans: &a.sans,
        key_type: a.key_type,
        token: &a.token,
        lifetime,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let got = runtime.block_on(files.request(&a.ca_url, &pin, &req, overwrite))?;
    let mut stdout = Out::lock();
    print_received(&mut stdout, "received", &a.name, &got.chain)?;
    writeln!(stdout, "  wrote      {} (certificate + chain)", files.cert.display())?;
    writeln!(stdout, "  wrote      {} (private key, mode 0600)", files.key.display())?;
    Ok(ExitCode::SUCCESS)
}

/// `cert renew NAME --ca-url URL`: NAME.crt/NAME.key presented to URL/renew; the answer
/// checked (our key, the pinned root) and NAME.crt replaced atomically.
pub fn renew(a: &RenewArgs, url: &str) -> anyhow::Result<ExitCode> {
    if a.daemon {
        return super::renew_daemon::run(a, url);
    }
    certgate_pki::ca::check_file_name(&a.name)?;
    let files = CertFiles::in_dir(&a.out_dir, &a.name);
    let current = files.read()?;
    if a.if_needed {
        let expires_in = expires_in(a.expires_in.as_deref())?;
        let threshold = expires_in.of(&current.validity);
        let now = OffsetDateTime::now_utc();
        let remaining = current.validity.not_after - now;
        if remaining > threshold {
            let mut stdout = Out::lock();
            writeln!(
                stdout,
                "{} is not due: {} of {} remain (valid until {}); renewal is due from {}",
                a.name,
                renewal::schedule::human(remaining),
                renewal::schedule::human(current.validity.lifetime()),
                format_time(current.validity.not_after),
                format_time(current.validity.not_after - threshold)
            )?;
            return Ok(ExitCode::from(NOT_DUE));
        }
    }
    let pin = a.pin.pin()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let renewed = runtime.block_on(files.renew(url, &pin, &current))?;
    let mut stdout = Out::lock();
    print_received(&mut stdout, "renewed", &a.name, &renewed.chain)?;
    writeln!(
        stdout,
        "  wrote      {} (certificate + chain; the key is kept)",
        files.cert.display()
    )?;
    writeln!(
        stdout,
        "  replaces   serial {} (valid until {})",
        current.serial,
        format_time(current.validity.not_after)
    )?;
    // The signal and the hook: a failure fails the run, so a timer unit shows it.
    let mut failures = Vec::new();
    for outcome in AfterRenewal::from_args(a).run(&files) {
        match outcome {
            Ok(line) => writeln!(stdout, "  then       {line}")?,
            Err(line) => failures.push(line),
        }
    }
    if !failures.is_empty() {
        anyhow::bail!("{} was renewed, but {}", a.name, failures.join("; "));
    }
    Ok(ExitCode::SUCCESS)
}

/// `cert rekey NAME --ca-url URL`: a new key made here, certified at URL/rekey for the
/// certificate presented, both files switched together in the versioned layout.
pub fn rekey(a: RekeyArgs) -> anyhow::Result<ExitCode> {
    certgate_pki::ca::check_file_name(&a.name)?;
    let files = CertFiles::in_dir(&a.out_dir, &a.name);
    let current = files.read()?;
    let pin = a.pin.pin()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let rekeyed = runtime.block_on(files.rekey(&a.ca_url, &pin, &current, a.key_type))?;
    let mut stdout = Out::lock();
    print_received(&mut stdout, "rekeyed", &a.name, &rekeyed.chain)?;
    let data = renewal::versioned::Versioned::of(&files)?.data_link();
    let version = std::fs::read_link(&data).unwrap_or_default();
    writeln!(
        stdout,
        "  wrote      {} (certificate + chain, new {} key, mode 0600)",
        a.out_dir.join(&version).display(),
        a.key_type.as_str()
    )?;
    writeln!(
        stdout,
        "  switched   {} and {} (through {})",
        files.cert.display(),
        files.key.display(),
        data.display()
    )?;
    writeln!(stdout, "  replaces   serial {} (superseded at the CA)", current.serial)?;
    Ok(ExitCode::SUCCESS)
}

/// `--expires-in`: `33%` of the lifetime, or a duration; default one third of the lifetime.
pub fn expires_in(value: Option<&str>) -> anyhow::Result<ExpiresIn> {
    match value {
        None => Ok(ExpiresIn::default()),
        Some(v) => ExpiresIn::parse(v, |s| parse_duration(s).ok())
            .map_err(|e| anyhow::anyhow!("--expires-in {v}: {e}")),
    }
}

/// What a certificate received from the online CA is: serial, names, lifetime, and when to
/// renew it (after two thirds of its lifetime).
pub fn print_received(
    stdout: &mut Out,
    verb: &str,
    name: &str,
    chain: &[CertificateDer<'static>],
) -> anyhow::Result<()> {
    let Some(leaf) = chain.first() else { return Ok(()) };
    let info = certgate_pki::inspect::cert_info(leaf)?;
    let lifetime = info.not_after - info.not_before;
    let due = info.not_before + lifetime * 2 / 3;
    writeln!(stdout, "{verb} {name} (serial {})", info.serial)?;
    writeln!(stdout, "  subject    {}", info.subject)?;
    writeln!(
        stdout,
        "  valid      {} to {}",
        format_time(info.not_before),
        format_time(info.not_after)
    )?;
    // The CA backdates notBefore a little for clocks behind its own: say what is left from
    // now (to the minute), which is what was asked for, when that reads differently.
    let now = OffsetDateTime::now_utc();
    let left = info.not_after - now;
    let left = time::Duration::minutes((left + time::Duration::seconds(30)).whole_minutes());
    let (left, all) = (renewal::schedule::human(left), renewal::schedule::human(lifetime));
    if now - info.not_before >= time::Duration::seconds(30) && left != all {
        writeln!(
            stdout,
            "  lifetime   {left} from now ({all} in all: notBefore is backdated for clock skew)"
        )?;
    } else {
        writeln!(stdout, "  lifetime   {all}")?;
    }
    writeln!(stdout, "  renew      after {} (two thirds of its lifetime)", format_time(due))?;
    Ok(())
}
