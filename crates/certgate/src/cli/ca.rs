//! `certgate ca init`.

use std::path::PathBuf;
use std::process::ExitCode;

use certgate_pki::ca::{Authority, InitOptions};
use certgate_pki::fs::{Mode, Overwrite};
use certgate_pki::issue::Subject;
use certgate_pki::keys::KeyType;
use certgate_pki::names::Permit;
use clap::{Args, Subcommand};

use super::CaDir;
use super::out::Out;

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a root CA and, unless --no-intermediate, an intermediate (pathlen 0) that signs
    /// day-to-day certificates. Writes root.crt: the trust anchor for clients and gateways.
    #[command(after_help = "Examples:
  certgate ca init --name \"Example Root CA\"
  certgate ca init --subject \"/C=US/ST=State/O=YourOrg/CN=Internal-CA\"
  certgate ca init --no-intermediate --pathlen 0
  certgate ca init --permit-dns example.com --permit-ip 10.0.0.0/8")]
    Init(InitArgs),
    /// Print the trust anchor (root.crt) as PEM, or write it to --out: what clients
    /// (`curl --cacert`), browsers and gateways need to trust this CA.
    #[command(after_help = "Examples:
  certgate ca root > root_certificate.pem
  certgate ca root --out /etc/nginx/client_certs/root_certificate.pem")]
    Root(RootArgs),
}

#[derive(Debug, Args)]
pub struct RootArgs {
    #[command(flatten)]
    pub dir: CaDir,
    /// Write the root certificate to this file instead of printing it, e.g. `--out
    /// root_certificate.pem`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Overwrite an existing --out file.
    #[arg(long, requires = "out")]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub dir: CaDir,
    /// Root CA common name (the intermediate is named after it).
    #[arg(long, default_value = "certgate Root CA")]
    pub name: String,
    /// The root's subject, in the order written: `/C=US/O=Example/CN=Example Root CA` (openssl
    /// req -subj) or `C=US, O=Example, CN=Example Root CA` (as openssl x509 -subject prints
    /// it). Without CN, --name is the CN. The intermediate gets the same attributes and its
    /// own CN.
    #[arg(long, value_parser = parse_subject, value_name = "SUBJECT")]
    pub subject: Option<Subject>,
    /// Key type of the CA keys.
    #[arg(long, default_value = "ec-p256", value_parser = super::values::key_type())]
    pub key_type: KeyType,
    /// Lifetime of the CA certificates, in days.
    #[arg(long, default_value_t = 3650)]
    pub days: u32,
    /// Sign leaves with the root itself (no intermediate).
    #[arg(long)]
    pub no_intermediate: bool,
    /// The root's pathlen: how many CAs may sit below it. `--no-intermediate --pathlen 0`
    /// makes a root that signs only leaves (openssl's `CA:true, pathlen:0`); with an
    /// intermediate it is at least 1. Default: no limit.
    #[arg(long, value_name = "N")]
    pub pathlen: Option<u8>,
    /// Limit the intermediate to DNS names in this domain and below it (repeatable), e.g.
    /// `--permit-dns example.com`. A critical nameConstraints extension: certgate, OpenSSL,
    /// browsers and curl refuse certificates for other DNS names.
    #[arg(long = "permit-dns", value_name = "DOMAIN", value_parser = parse_permit_dns)]
    pub permit_dns: Vec<Permit>,
    /// Limit the intermediate to IP addresses in this block (repeatable), e.g.
    /// `--permit-ip 10.0.0.0/8`. URI and email SANs stay unconstrained.
    #[arg(long = "permit-ip", value_name = "CIDR", value_parser = parse_permit_ip)]
    pub permit_ip: Vec<Permit>,
    /// Encrypt the CA keys with the password in this file (first line).
    #[arg(long, env = "CERTGATE_CA_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Base URL where the CRLs will be published (http://): certificates then carry the CRL
    /// distribution point BASE/root.crl (the intermediate) or BASE/intermediate.crl (leaves);
    /// serve there what `certgate crl --issuer ISSUER --der` writes.
    #[arg(long, value_name = "BASE")]
    pub crl_url: Option<String>,
    /// Replace an existing CA in the directory (its inventory is kept aside).
    #[arg(long)]
    pub force: bool,
}

fn parse_permit_dns(s: &str) -> Result<Permit, String> {
    Permit::dns(s).map_err(|e| e.to_string())
}

fn parse_permit_ip(s: &str) -> Result<Permit, String> {
    Permit::ip(s).map_err(|e| e.to_string())
}

pub fn parse_subject(s: &str) -> Result<Subject, String> {
    Subject::parse(s).map_err(|e| e.to_string())
}

pub fn run(cmd: CaCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CaCommand::Init(args) => init(args),
        CaCommand::Root(args) => root(args),
    }
}

fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let opts = InitOptions {
        name: args.name,
        subject: args.subject,
        key_type: args.key_type,
        days: args.days,
        intermediate: !args.no_intermediate,
        root_path_len: args.pathlen,
        permits: args.permit_dns.into_iter().chain(args.permit_ip).collect(),
        password: super::ca_password(args.password_file.as_ref())?,
        crl_url: args.crl_url,
        force: args.force,
    };
    let ca = Authority::init(&args.dir.ca_dir, &opts)?;
    let p = ca.paths();
    let mut stdout = Out::lock();
    writeln!(stdout, "created CA in {}", p.dir.display())?;
    let pathlen = opts.root_path_len.map(|n| format!(", pathlen {n}")).unwrap_or_default();
    writeln!(
        stdout,
        "  root          {}  ({}, {} days{pathlen})",
        p.root_crt.display(),
        opts.key_type,
        opts.days
    )?;
    if opts.intermediate {
        writeln!(
            stdout,
            "  intermediate  {}  (issues certificates, pathlen 0)",
            p.intermediate_crt.display()
        )?;
    }
    if !opts.permits.is_empty() {
        let permits: Vec<String> = opts.permits.iter().map(ToString::to_string).collect();
        writeln!(stdout, "  permitted     {} (name constraints)", permits.join(", "))?;
    }
    let encrypted = if opts.password.is_some() { ", encrypted" } else { "" };
    writeln!(stdout, "  keys          mode 0600{encrypted}")?;
    writeln!(stdout, "  issuing CA    {}", ca.issuing_subject())?;
    if let Some(base) = &opts.crl_url {
        writeln!(
            stdout,
            "  CRLs at       {base}/<issuer>.crl (certgate crl --issuer ISSUER --der)"
        )?;
    }
    writeln!(stdout)?;
    writeln!(stdout, "Hand {} to clients and gateways as the trust anchor.", p.root_crt.display())?;
    Ok(ExitCode::SUCCESS)
}

fn root(args: RootArgs) -> anyhow::Result<ExitCode> {
    let ca = Authority::open(&args.dir.ca_dir, None)?;
    let pem = ca.root_pem();
    match &args.out {
        None => write!(Out::lock(), "{pem}")?,
        Some(path) => {
            certgate_pki::fs::write_atomic(
                path,
                pem.as_bytes(),
                Mode::Public,
                Overwrite::from_force(args.force),
            )?;
            let subject = certgate_pki::inspect::cert_info(ca.root_der())?.subject;
            writeln!(Out::lock(), "wrote {} ({subject})", path.display())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
