//! `certgate cert issue|sign|p12|list|show|revoke|renew`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use certgate_pki::ca::{self, Authority, IssueRequest, Issued};
use certgate_pki::crl::Reason;
use certgate_pki::fs::{Mode, Overwrite};
use certgate_pki::keys::KeyType;
use certgate_pki::profile::Profile;
use certgate_pki::store::{Effective, ListFilter, Record};
use certgate_pki::validity::{Validity, checked_after, format_time, parse_duration, rfc3339};
use clap::{Args, Subcommand};
use time::OffsetDateTime;

use super::CaDir;
use super::out::Out;

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Issue a certificate and a new key: writes NAME.crt (leaf + intermediates) and NAME.key.
    #[command(after_help = "Examples:
  certgate cert issue api --san api.example.com --san 10.0.0.7
  certgate cert issue joe --san spiffe://example.com/joe
  certgate cert issue svc --san spiffe://example.com/svc --san svc.example.com --profile dual
  certgate cert issue bar --san bar.example.com --subject \"C=NL, O=Foo, CN=Bar\"
  certgate cert issue client --san client@example.com --cert-out client.crt --key-out client.key")]
    Issue(IssueArgs),
    /// Sign a certificate signing request made by openssl, a browser or step.
    #[command(after_help = "Examples:
  certgate cert sign --csr svc.csr --profile server
  certgate cert sign --csr client_csr.pem --profile client --out client_certificate.pem")]
    Sign(SignArgs),
    /// Export NAME.crt + NAME.key as a PKCS#12 file for browsers, phones, curl and Java.
    #[command(after_help = "Examples:
  certgate cert p12 joe --password-file p12.pass
  certgate cert p12 foo --cert client_certificate.pem --key client_private_key.pem \\
      --password-file p12.pass --out client_certificate.p12")]
    P12(P12Args),
    /// List issued certificates.
    #[command(after_help = "Examples:
  certgate cert list
  certgate cert list --expiring 30d                 # valid ones that end within 30 days
  certgate cert list --status revoked --json")]
    List(ListArgs),
    /// Show one issued certificate (by serial or name), with its PEM.
    #[command(after_help = "Examples:
  certgate cert show api                            # the current certificate named api
  certgate cert show api --json")]
    Show(ShowArgs),
    /// Revoke a certificate; publish the change with `certgate crl`.
    #[command(after_help = "Examples:
  certgate cert revoke joe --reason key-compromise  # then publish the CRLs: certgate crl
  certgate cert revoke api                          # the current certificate named api")]
    Revoke(RevokeArgs),
    /// Renew a certificate: same subject, SANs and profile, new validity (and a new key). With
    /// --ca-url, renewed by the online CA over mTLS, keeping the key; with --daemon, kept
    /// renewed.
    #[command(after_help = "Examples:
  certgate cert renew api                # replaces api.crt and api.key in place
  certgate cert renew api --reuse-key    # same key, new certificate
  certgate cert renew api --ca-url https://ca.example.com:9443 --root root.crt
  certgate cert renew api --ca-url https://ca.example.com:9443 --root root.crt --if-needed
  certgate cert renew api --ca-url https://ca.example.com:9443 --root root.crt --daemon \\
      --pid-file /run/nginx.pid          # nginx reloads on SIGHUP
  certgate cert renew api --ca-url https://ca.example.com:9443 --root root.crt --daemon \\
      -- sh -c 'cat \"$CERTGATE_CERT\" \"$CERTGATE_KEY\" > api.pem'   # one file for haproxy

With --ca-url, NAME.crt and NAME.key (in --out-dir) are presented to URL/renew and NAME.crt
is replaced atomically; the key stays. After a renewal, --signal goes to --signal-pid or the
process in --pid-file, then the hook after `--` runs (a program and its arguments, no shell;
CERTGATE_CERT and CERTGATE_KEY hold the files' paths).

Exit status with --if-needed: 0 renewed, 3 nothing was due (more than --expires-in of the
lifetime remains), anything else an error (the CA's reason is printed: expired, revoked or
already renewed certificates are refused; a failed signal or hook is an error too).

--daemon renews when a third of the lifetime of the certificate on disk remains (or
--expires-in), spread by up to a twentieth of the lifetime, and logs each event on stderr.
A failed renewal is retried with backoff (from 10 s, doubling, at most a twentieth of the
lifetime, never past its end); a failed signal or hook is logged and the daemon goes on.
SIGHUP renews at once; SIGTERM or SIGINT exit 0. With --rekey, each renewal is a rekey
(a new key, as `cert rekey` does). A certificate the CA refuses (revoked,
superseded, expired) or one that expired while the CA was unreachable ends the daemon with
status 1 and the reason.")]
    Renew(RenewArgs),
    /// Get a certificate from an online CA (`certgate ca serve`) with a one-time token: the
    /// key is made here and never leaves this machine.
    #[command(after_help = "Examples:
  certgate cert request api --ca-url https://ca.example.com:9443 --token \"$TOKEN\" \\
      --root root.crt --san api.example.com
  certgate cert request api --ca-url https://ca.example.com:9443 --token \"$TOKEN\" \\
      --fingerprint 3f5a...e1 --san api.example.com --hours 24 --out-dir tls

The token comes from the CA's operator: certgate ca token api --san api.example.com")]
    Request(RequestArgs),
    /// Get a new key certified by the online CA: the key is made here, the current
    /// certificate presented over mTLS, and certificate and key switched together.
    #[command(after_help = "Examples:
  certgate cert rekey api --ca-url https://ca.example.com:9443 --root root.crt
  certgate cert rekey api --ca-url https://ca.example.com:9443 --root root.crt --key-type ec-p384

NAME.crt and NAME.key (in --out-dir) become links into a versioned directory, so a reader
never finds a certificate next to another certificate's key: .NAME.versions/<time>/ holds
each pair, .NAME.data links to the current one, NAME.crt and NAME.key link through it, and
one rename of .NAME.data switches both. Plain files are converted first (the current pair
becomes the first version); the previous version is kept, older ones removed. cert renew
--ca-url keeps this layout. The old certificate is superseded at the CA.")]
    Rekey(RekeyArgs),
}

/// Lifetime flags shared by issue and sign.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct ValidityArgs {
    /// Lifetime in days (default: 365).
    #[arg(long)]
    pub days: Option<u32>,
    /// Lifetime in hours (short-lived certificates).
    #[arg(long)]
    pub hours: Option<u32>,
    /// Lifetime in minutes (short-lived certificates).
    #[arg(long)]
    pub minutes: Option<u32>,
}

impl ValidityArgs {
    /// The lifetime asked for, refused here (before the CA is opened) when it is empty or
    /// longer than 100 years.
    fn validity(&self) -> Result<Validity, certgate_pki::PkiError> {
        let validity = match (self.days, self.hours, self.minutes) {
            (Some(d), _, _) => Validity::Days(d),
            (_, Some(h), _) => Validity::Hours(h),
            (_, _, Some(m)) => Validity::Minutes(m),
            _ => Validity::default(),
        };
        validity.checked()
    }
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// Subject CN, inventory name and file name (NAME.crt, NAME.key).
    pub name: String,
    /// The subject, in the order written: `/C=US/O=Example/CN=api` (openssl req -subj) or
    /// `C=US, O=Example, CN=api` (as openssl x509 -subject prints it). Without CN, NAME is
    /// the CN.
    #[arg(long, value_parser = super::ca::parse_subject, value_name = "SUBJECT")]
    pub subject: Option<certgate_pki::issue::Subject>,
    /// Subject alternative name: an IP, a URI (spiffe://...), an email, or a DNS name.
    #[arg(long = "san", value_name = "VALUE")]
    pub sans: Vec<String>,
    /// What the certificate is for. Default: client when every SAN is a URI or email, server
    /// when every SAN is a DNS name or IP (or there is none); a mix needs --profile.
    #[arg(long, value_parser = super::values::profile())]
    pub profile: Option<Profile>,
    #[command(flatten)]
    pub validity: ValidityArgs,
    /// Key type of the new key.
    #[arg(long, default_value = "ec-p256", value_parser = super::values::key_type())]
    pub key_type: KeyType,
    /// Directory for NAME.crt and NAME.key.
    #[arg(long, default_value = ".")]
    pub out_dir: PathBuf,
    /// Write the certificate chain here instead of OUT_DIR/NAME.crt, e.g. `--cert-out
    /// client.crt` (step's file names).
    #[arg(long, value_name = "FILE")]
    pub cert_out: Option<PathBuf>,
    /// Write the private key (0600) here instead of OUT_DIR/NAME.key, e.g. `--key-out
    /// client.key`.
    #[arg(long, value_name = "FILE")]
    pub key_out: Option<PathBuf>,
    /// Overwrite existing NAME.crt / NAME.key (or the --cert-out / --key-out files). An
    /// earlier certificate of NAME is recorded as superseded by the new one.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub ca: CaAccess,
}

/// How to reach the CA and its key.
#[derive(Debug, Args)]
pub struct CaAccess {
    #[command(flatten)]
    pub dir: CaDir,
    /// Password file for an encrypted CA key.
    #[arg(long, env = "CERTGATE_CA_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
}

impl CaAccess {
    fn open(&self) -> anyhow::Result<Authority> {
        Ok(Authority::open(&self.dir.ca_dir, super::ca_password(self.password_file.as_ref())?)?)
    }
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The CSR (PEM or DER).
    #[arg(long)]
    pub csr: PathBuf,
    /// What the certificate is for, as for `cert issue`. A client certificate gets no SAN
    /// made from the CN; a server or dual one without requested SANs gets the CN as its SAN.
    #[arg(long, value_parser = super::values::profile())]
    pub profile: Option<Profile>,
    #[command(flatten)]
    pub validity: ValidityArgs,
    /// Where to write the certificate chain (default: the CSR's name with .crt).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Inventory name (default: the CSR's CN).
    #[arg(long)]
    pub name: Option<String>,
    /// Replace the CSR's SANs with these.
    #[arg(long = "san", value_name = "VALUE")]
    pub sans: Vec<String>,
    /// Overwrite an existing output file.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub ca: CaAccess,
}

#[derive(Debug, Args)]
pub struct P12Args {
    /// Reads NAME.crt and NAME.key; NAME is also the friendly name in the file.
    pub name: String,
    /// Directory holding NAME.crt and NAME.key.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Read the certificate (and chain) from this file instead of DIR/NAME.crt, e.g. `--cert
    /// client_certificate.pem`.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Read the private key from this file instead of DIR/NAME.key, e.g. `--key
    /// client_private_key.pem`.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Password for the PKCS#12 file (first line of this file).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Write the file without a password (anyone who gets it gets the key).
    #[arg(long, conflicts_with = "password_file")]
    pub insecure_no_password: bool,
    /// 3DES/SHA-1 encryption for old Windows, macOS and iOS importers.
    #[arg(long)]
    pub legacy: bool,
    /// Output file (default: DIR/NAME.p12).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Overwrite an existing output file.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub dir_ca: CaDir,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only certificates that expire within this time (e.g. 30d, 12h).
    #[arg(long)]
    pub expiring: Option<String>,
    /// Only certificates with this status.
    #[arg(long, value_parser = status_parser())]
    pub status: Option<Effective>,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub dir: CaDir,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Serial (hex, colons allowed) or name.
    pub query: String,
    /// Print JSON for scripts: the inventory record (as `cert list --json`), "pem", and
    /// "certificate" with the fields `certgate inspect --json` gives.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub dir: CaDir,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Serial (hex, colons allowed) or name.
    pub query: String,
    /// unspecified, key-compromise, ca-compromise, affiliation-changed, superseded,
    /// cessation-of-operation or privilege-withdrawn.
    #[arg(long, default_value = "unspecified", value_parser = parse_reason)]
    pub reason: Reason,
    #[command(flatten)]
    pub dir: CaDir,
}

#[derive(Debug, Args)]
pub struct RenewArgs {
    /// Serial or name of the certificate to renew.
    pub name: String,
    /// Directory for the new NAME.crt (and NAME.key).
    #[arg(long, default_value = ".")]
    pub out_dir: PathBuf,
    /// Certify the same public key again instead of generating a new key.
    #[arg(long)]
    pub reuse_key: bool,
    /// Overwrite files that are not the renewed certificate's own. Without it, NAME.crt (and,
    /// without --reuse-key, NAME.key) are replaced only when they hold the certificate being
    /// renewed (and its key); any other file is left alone.
    #[arg(long)]
    pub force: bool,
    /// Renew with the online CA at this URL (`certgate ca serve`) over mTLS, presenting
    /// NAME.crt and NAME.key from --out-dir; the key is kept. Needs --root or --fingerprint.
    #[arg(long, value_name = "URL")]
    pub ca_url: Option<String>,
    #[command(flatten)]
    pub pin: super::online::RootPinArgs,
    /// Renew only when due: exit 0 after renewing, 3 when more than --expires-in of the
    /// lifetime remains (nothing written), other non-zero on error.
    #[arg(long, requires = "ca_url", group = "when")]
    pub if_needed: bool,
    /// Keep running and renew each time the certificate on disk is due (after two thirds of
    /// its lifetime, with jitter); retry failures with backoff. SIGHUP renews at once,
    /// SIGTERM/SIGINT exit 0; a certificate the CA refuses (revoked, superseded, expired)
    /// ends it with non-zero.
    #[arg(long, requires = "ca_url", group = "when", conflicts_with = "if_needed")]
    pub daemon: bool,
    /// With --daemon: rekey instead of renewing each time (a new key made here, certified at
    /// URL/rekey; the files switch together in the versioned layout of `cert rekey`).
    #[arg(long, requires = "daemon")]
    pub rekey: bool,
    /// With --rekey: the type of each new key.
    #[arg(long, requires = "rekey", default_value = "ec-p256", value_parser = super::values::key_type())]
    pub key_type: KeyType,
    /// With --if-needed or --daemon: renew when at most this remains, a share of the
    /// lifetime (`33%`, the default) or a duration (`8h`, `2d`).
    #[arg(long, requires = "when", value_name = "PERCENT|DURATION")]
    pub expires_in: Option<String>,
    /// After each renewal, send --signal to this process (e.g. a server that reloads its
    /// certificate on SIGHUP).
    #[arg(long, value_name = "PID", requires = "ca_url", conflicts_with = "pid_file")]
    pub signal_pid: Option<u32>,
    /// After each renewal, send --signal to the process whose id this file holds (read anew
    /// each time, so a restarted server is found).
    #[arg(long, value_name = "FILE", requires = "ca_url")]
    pub pid_file: Option<PathBuf>,
    /// The signal sent to --signal-pid or --pid-file.
    #[arg(long, value_name = "SIGNAL", default_value = "hup", value_parser = super::values::signal())]
    pub signal: super::renew_daemon::Signal,
    /// The hook: a program and its arguments, after `--`, run after each renewal (after the
    /// signal) without a shell, with CERTGATE_CERT and CERTGATE_KEY set to the files' paths.
    /// A failing hook fails a one-shot renewal; the daemon logs it and goes on.
    #[arg(last = true, value_name = "PROG ARG", requires = "ca_url")]
    pub hook: Vec<String>,
    #[command(flatten)]
    pub ca: CaAccess,
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// Subject CN and file name (NAME.crt, NAME.key); the token must be for this name.
    pub name: String,
    /// The online CA's URL, e.g. https://ca.example.com:9443.
    #[arg(long, value_name = "URL")]
    pub ca_url: String,
    /// The one-time token from `certgate ca token` (used once).
    #[arg(long, env = "CERTGATE_TOKEN", hide_env_values = true)]
    pub token: String,
    #[command(flatten)]
    pub pin: super::online::RootPinArgs,
    /// Lifetime in hours (default: the CA's default for tokens).
    #[arg(long, conflicts_with = "minutes")]
    pub hours: Option<u32>,
    /// Lifetime in minutes.
    #[arg(long)]
    pub minutes: Option<u32>,
    /// Subject alternative name asked for (as given to `certgate ca token`).
    #[arg(long = "san", value_name = "VALUE")]
    pub sans: Vec<String>,
    /// Key type of the new key.
    #[arg(long, default_value = "ec-p256", value_parser = super::values::key_type())]
    pub key_type: KeyType,
    /// Directory for NAME.crt and NAME.key.
    #[arg(long, default_value = ".")]
    pub out_dir: PathBuf,
    /// Overwrite existing NAME.crt and NAME.key.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct RekeyArgs {
    /// The certificate's name: NAME.crt and NAME.key in --out-dir.
    pub name: String,
    /// The online CA's URL, e.g. https://ca.example.com:9443.
    #[arg(long, value_name = "URL")]
    pub ca_url: String,
    #[command(flatten)]
    pub pin: super::online::RootPinArgs,
    /// Key type of the new key.
    #[arg(long, default_value = "ec-p256", value_parser = super::values::key_type())]
    pub key_type: KeyType,
    /// Directory of NAME.crt and NAME.key.
    #[arg(long, default_value = ".")]
    pub out_dir: PathBuf,
}

fn parse_reason(s: &str) -> Result<Reason, String> {
    Reason::parse(s).ok_or_else(|| {
        let all: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        format!("unknown reason {s:?}; choose one of {}", all.join(", "))
    })
}

pub fn run(cmd: CertCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CertCommand::Issue(a) => issue(a),
        CertCommand::Sign(a) => sign(a),
        CertCommand::P12(a) => p12(a),
        CertCommand::List(a) => list(a),
        CertCommand::Show(a) => show(a),
        CertCommand::Revoke(a) => revoke(a),
        CertCommand::Renew(a) => renew(a),
        CertCommand::Rekey(a) => super::online::rekey(a),
        CertCommand::Request(a) => super::online::request(a),
    }
}

fn issue(a: IssueArgs) -> anyhow::Result<ExitCode> {
    ca::check_file_name(&a.name)?;
    let validity = a.validity.validity()?;
    let (default_crt, default_key) = ca::leaf_file_paths(&a.out_dir, &a.name);
    let crt = a.cert_out.clone().unwrap_or(default_crt);
    let key = a.key_out.clone().unwrap_or(default_key);
    if crt == key {
        anyhow::bail!(
            "--cert-out and --key-out are both {}; the certificate and the key need two files",
            crt.display()
        );
    }
    certgate_pki::fs::ensure_absent(
        [crt.as_path(), key.as_path()],
        Overwrite::from_force(a.force),
    )?;
    for file in [&crt, &key] {
        create_dir(file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))?;
    }
    let mut authority = a.ca.open()?;
    let req = IssueRequest {
        name: a.name.clone(),
        subject: a.subject.clone(),
        sans: a.sans.clone(),
        profile: a.profile,
        validity,
        key_type: a.key_type,
    };
    let mut written = None;
    let issued = authority.issue(&req, |issued| {
        let overwrite = Overwrite::from_force(a.force);
        written = Some(ca::write_leaf_files_at(&crt, &key, issued, overwrite, overwrite)?);
        Ok(())
    })?;
    let mut stdout = Out::lock();
    print_issued(&mut stdout, "issued", &issued, written)?;
    for serial in &issued.supersedes {
        writeln!(
            stdout,
            "  replaces   serial {serial} (now superseded: still usable until it expires; \
             revoke it by serial if it must stop working)"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn sign(a: SignArgs) -> anyhow::Result<ExitCode> {
    let validity = a.validity.validity()?;
    let bytes = certgate_pki::fs::read(&a.csr)?;
    let csr = certgate_pki::csr::parse(&bytes, &a.csr.display().to_string())?;
    let out = a.out.clone().unwrap_or_else(|| a.csr.with_extension("crt"));
    certgate_pki::fs::ensure_absent([out.as_path()], Overwrite::from_force(a.force))?;
    let mut authority = a.ca.open()?;
    let issued =
        authority.sign_csr(&csr, a.profile, validity, a.name.as_deref(), &a.sans, |issued| {
            certgate_pki::fs::write_atomic(
                &out,
                issued.chain_pem.as_bytes(),
                Mode::Public,
                Overwrite::from_force(a.force),
            )
        })?;
    let mut stdout = Out::lock();
    for note in &csr.ignored {
        writeln!(stdout, "note: not copied from the CSR: {note}")?;
    }
    if csr.sans.is_empty() && a.sans.is_empty() && csr.cn_san.is_some() {
        match issued.sans.first() {
            Some(san) => writeln!(
                stdout,
                "note: no SAN requested; the CN {} was added as {san}",
                csr.subject.common_name().unwrap_or_default()
            )?,
            None => writeln!(
                stdout,
                "note: no SAN requested; a client certificate is identified by its subject"
            )?,
        }
    }
    print_issued(&mut stdout, "signed", &issued, Some((out, None)))?;
    Ok(ExitCode::SUCCESS)
}

fn p12(a: P12Args) -> anyhow::Result<ExitCode> {
    let (default_crt, default_key) = ca::leaf_file_paths(&a.dir, &a.name);
    let crt = a.cert.clone().unwrap_or(default_crt);
    let key = a.key.clone().unwrap_or(default_key);
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| certgate_pki::fs::in_dir(&a.dir, &format!("{}.p12", a.name)));
    let password = match (&a.password_file, a.insecure_no_password) {
        (Some(path), _) => {
            let bytes = certgate_pki::fs::read_password(path)?;
            String::from_utf8(bytes)
                .with_context(|| format!("{}: the password is not UTF-8 text", path.display()))?
        }
        (None, true) => String::new(),
        (None, false) => anyhow::bail!(
            "a PKCS#12 file carries the private key: give its password with --password-file FILE \
             (or --insecure-no-password to write it unprotected)"
        ),
    };
    certgate_pki::fs::ensure_absent([out.as_path()], Overwrite::from_force(a.force))?;
    let mut chain = certgate_pki::pem::read_certs(&crt)?;
    let key_pem = certgate_pki::fs::read(&key)?;
    let key_der = certgate_pki::keys::pkcs8_der_from_pem(&key, &key_pem, None)?;
    let with_root = append_root(&mut chain, &a.dir_ca.ca_dir.join("root.crt"));
    let der = certgate_pki::pkcs12::export(&chain, &key_der, &password, a.legacy, &a.name)
        .map_err(|e| match e {
            certgate_pki::PkiError::KeyMismatch { .. } => {
                certgate_pki::PkiError::KeyMismatch { path: key.clone() }
            }
            other => other,
        })?;
    certgate_pki::fs::write_atomic(&out, &der, Mode::Secret, Overwrite::from_force(a.force))?;
    let mut stdout = Out::lock();
    let form = if a.legacy { "legacy 3DES/SHA-1" } else { "AES-256/SHA-256" };
    let protection = if password.is_empty() { "NO password" } else { "password-protected" };
    writeln!(stdout, "wrote {} ({form}, {protection}, mode 0600)", out.display())?;
    writeln!(
        stdout,
        "  contains {}'s key and {} certificate(s){}",
        a.name,
        chain.len(),
        if with_root { " including the root" } else { "" }
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Adds the CA's root to a chain when the chain ends at an intermediate the root issued, so
/// importers get the whole path. Returns whether it did.
fn append_root(chain: &mut Vec<rustls_pki_types::CertificateDer<'static>>, root: &Path) -> bool {
    let Ok(roots) = certgate_pki::pem::read_certs(root) else { return false };
    let Some(root) = roots.into_iter().next() else { return false };
    let (Some(last), Ok(root_info)) = (chain.last(), certgate_pki::inspect::cert_info(&root))
    else {
        return false;
    };
    let Ok(last_info) = certgate_pki::inspect::cert_info(last) else { return false };
    if last_info.issuer == root_info.subject && !last_info.self_signed && *last != root {
        chain.push(root);
        return true;
    }
    false
}

fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let authority = Authority::open(&a.dir.ca_dir, None)?;
    let now = OffsetDateTime::now_utc();
    let filter = ListFilter {
        expiring_before: match &a.expiring {
            Some(d) => Some(checked_after("--expiring", now, parse_duration(d)?)?),
            None => None,
        },
        status: a.status,
        ..ListFilter::all(now)
    };
    let records = authority.list(&filter)?;
    let mut stdout = Out::lock();
    if a.json {
        let rows: Vec<_> = records.iter().map(|r| record_json(r, now)).collect();
        writeln!(stdout, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if records.is_empty() {
        writeln!(stdout, "no certificates match")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        stdout,
        "{:<40}  {:<20}  {:<7}  {:<10}  {:<20}  SANS",
        "SERIAL", "NAME", "PROFILE", "STATUS", "NOT AFTER"
    )?;
    for r in &records {
        writeln!(
            stdout,
            "{:<40}  {:<20}  {:<7}  {:<10}  {:<20}  {}",
            r.serial,
            r.name,
            r.profile,
            r.effective_status(now),
            rfc3339(r.not_after),
            r.sans.join(", ")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn show(a: ShowArgs) -> anyhow::Result<ExitCode> {
    let authority = Authority::open(&a.dir.ca_dir, None)?;
    let r = authority.find(&a.query)?;
    let now = OffsetDateTime::now_utc();
    let mut stdout = Out::lock();
    if a.json {
        let mut json = record_json(&r, now);
        json["pem"] = certgate_pki::pem::encode("CERTIFICATE", &r.der).into();
        json["certificate"] = serde_json::to_value(certgate_pki::inspect::cert_info(&r.der)?)?;
        writeln!(stdout, "{}", serde_json::to_string_pretty(&json)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(stdout, "serial      {}", r.serial)?;
    writeln!(stdout, "name        {}", r.name)?;
    writeln!(stdout, "subject     {}", r.subject)?;
    writeln!(stdout, "issuer      {}", r.issuer)?;
    writeln!(stdout, "profile     {}", r.profile)?;
    writeln!(
        stdout,
        "SANs        {}",
        if r.sans.is_empty() { "(none)".into() } else { r.sans.join(", ") }
    )?;
    writeln!(stdout, "not before  {}", format_time(r.not_before))?;
    writeln!(stdout, "not after   {}", format_time(r.not_after))?;
    writeln!(stdout, "issued      {}", format_time(r.issued_at))?;
    writeln!(stdout, "status      {}", r.effective_status(now))?;
    if let Some(at) = r.revoked_at {
        writeln!(
            stdout,
            "revoked     {} ({})",
            format_time(at),
            r.revocation_reason.as_deref().unwrap_or("unspecified")
        )?;
    }
    if let Some(next) = &r.superseded_by {
        writeln!(stdout, "renewed as  {next}")?;
    }
    write!(stdout, "{}", certgate_pki::pem::encode("CERTIFICATE", &r.der))?;
    Ok(ExitCode::SUCCESS)
}

fn revoke(a: RevokeArgs) -> anyhow::Result<ExitCode> {
    let mut authority = Authority::open(&a.dir.ca_dir, None)?;
    let r = authority.revoke(&a.query, a.reason)?;
    let mut stdout = Out::lock();
    writeln!(
        stdout,
        "revoked {} (serial {}) on {}, reason {}",
        r.name,
        r.serial,
        r.revoked_at.map(format_time).unwrap_or_default(),
        a.reason.as_str()
    )?;
    let superseded = ListFilter {
        status: Some(Effective::Superseded),
        name: Some(r.name.clone()),
        ..ListFilter::all(OffsetDateTime::now_utc())
    };
    for earlier in authority.list(&superseded)? {
        writeln!(
            stdout,
            "note: an earlier certificate of {}, serial {} (superseded), stays usable until {}; \
             revoke it by serial if it must stop working too",
            r.name,
            earlier.serial,
            format_time(earlier.not_after)
        )?;
    }
    writeln!(stdout, "publish it: certgate crl --ca-dir {}", a.dir.ca_dir.display())?;
    if r.profile == "ca" {
        writeln!(
            stdout,
            "the root's CRL now lists the intermediate: every certificate it issued is refused \
             where that CRL is loaded; a new CA (ca init --force) is needed to issue again"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn renew(a: RenewArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = &a.ca_url {
        return super::online::renew(&a, url);
    }
    if a.pin.given() {
        anyhow::bail!("--root and --fingerprint pin the online CA: they need --ca-url");
    }
    let mut authority = a.ca.open()?;
    let old = authority.renewable(&a.name)?;
    ca::check_file_name(&old.name)?;
    let (crt, key) = ca::leaf_file_paths(&a.out_dir, &old.name);
    let new_key = (!a.reuse_key).then_some(key.as_path());
    // Checked before the CA signs, and again (by the writes) when the files are replaced.
    ca::renewal_overwrite(&old, &crt, new_key, a.force)?;
    create_dir(&a.out_dir)?;
    let mut written = None;
    let (issued, old) = authority.renew(&a.name, a.reuse_key, |issued| {
        let (crt_overwrite, key_overwrite) = ca::renewal_overwrite(&old, &crt, new_key, a.force)?;
        written = Some(ca::write_leaf_files_at(&crt, &key, issued, crt_overwrite, key_overwrite)?);
        Ok(())
    })?;
    let mut stdout = Out::lock();
    print_issued(&mut stdout, "renewed", &issued, written)?;
    writeln!(
        stdout,
        "  replaces   serial {} (now superseded; valid until {})",
        old.serial,
        format_time(old.not_after)
    )?;
    Ok(ExitCode::SUCCESS)
}

fn print_issued(
    stdout: &mut Out,
    verb: &str,
    issued: &Issued,
    written: Option<(PathBuf, Option<PathBuf>)>,
) -> anyhow::Result<()> {
    let r = &issued.record;
    writeln!(stdout, "{verb} {} ({} certificate, serial {})", r.name, issued.profile, r.serial)?;
    writeln!(stdout, "  subject    {}", r.subject)?;
    writeln!(
        stdout,
        "  SANs       {}",
        if r.sans.is_empty() { "(none)".into() } else { r.sans.join(", ") }
    )?;
    writeln!(stdout, "  valid      {} to {}", format_time(r.not_before), format_time(r.not_after))?;
    if let Some((crt, key)) = written {
        writeln!(stdout, "  wrote      {} (certificate + chain)", crt.display())?;
        if let Some(key) = key {
            writeln!(stdout, "  wrote      {} (private key, mode 0600)", key.display())?;
        }
    }
    Ok(())
}

fn record_json(r: &Record, now: OffsetDateTime) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    v["status"] = r.effective_status(now).as_str().into();
    v
}

/// `--status`: one of the statuses a person sees, listed in `--help`.
fn status_parser() -> impl clap::builder::TypedValueParser<Value = Effective> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Effective::ALL.map(Effective::as_str))
        .try_map(|s| s.parse::<Effective>())
}

pub(super) fn create_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}
