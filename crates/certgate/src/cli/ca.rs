//! `certgate ca init`, `ca root`, `ca serve` (the online CA) and `ca token`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
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
    /// Run the online CA over HTTPS: GET /health, /roots and /crl/<issuer>.crl, POST /sign (a
    /// CSR with a one-time token from `certgate ca token`), POST /renew (over mTLS, the
    /// certificate presented) and POST /rekey (the same, for the key of a CSR); see
    /// docs/pki.md. It serves a certificate its CA issues to itself for --name (dual-purpose,
    /// kept as serve.crt/serve.key in the CA directory and issued again when missing, for
    /// other names, from another CA or within a third of its lifetime of expiring). Client
    /// certificates are optional and verified against the CA's root. SIGTERM and Ctrl-C stop
    /// it.
    #[command(after_help = "Examples:
  certgate ca serve --listen 127.0.0.1:9443
  certgate ca serve --listen 0.0.0.0:443 --name ca.example.com --name 10.0.0.5
  certgate ca serve --listen 127.0.0.1:9443 --crl-listen 127.0.0.1:8080
  curl --cacert certgate-ca/root.crt https://localhost:9443/health")]
    Serve(ServeArgs),
    /// Print a one-time token for the online CA's POST /sign: a JWS (ES256) signed by a
    /// provisioner key (provisioners.toml in the CA directory), naming NAME and the --san
    /// values the bearer may get a certificate for. Its audience is the CA's root
    /// fingerprint, or URL/sign with --ca-url. It is used once: the CA records its id.
    #[command(after_help = "Examples:
  certgate ca token svc --san svc.example.com
  certgate ca token svc --san svc.example.com --san 10.0.0.7 --ttl 10m
  certgate ca token svc --san svc.example.com --ca-url https://ca.example.com:9443")]
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub dir: CaDir,
    /// The identity the token is for: the certificate's CN (and a SAN when no --san is given).
    pub name: String,
    /// A name the certificate may carry besides NAME (repeatable): DNS name, IP, URI, email.
    #[arg(long = "san", value_name = "SAN")]
    pub sans: Vec<String>,
    /// How long the token can be used (at most 24h).
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub ttl: String,
    /// The provisioner that signs it (a name in provisioners.toml).
    #[arg(long, default_value = certgate_pki::provisioner::DEFAULT_NAME)]
    pub provisioner: String,
    /// The CA's URL (https://HOST:PORT): the token's audience is then URL/sign instead of the
    /// root's SHA-256 fingerprint.
    #[arg(long, value_name = "URL")]
    pub ca_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub dir: CaDir,
    /// Address to listen on, e.g. `127.0.0.1:9443` (port 0: any free port, printed on start).
    #[arg(long, value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Also serve GET /crl/<issuer>.crl and GET /roots over plain HTTP at this address, e.g.
    /// `0.0.0.0:80`: the http:// URLs that `ca init --crl-url` writes into certificates as
    /// their CRL distribution points, which clients fetch without TLS (RFC 5280). Nothing
    /// else is served there; CRLs are signed, so plain HTTP is safe for them.
    #[arg(long, value_name = "ADDR")]
    pub crl_listen: Option<std::net::SocketAddr>,
    /// A name clients reach the CA at: DNS name or IP address (repeatable). Default:
    /// localhost and 127.0.0.1.
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,
    /// The password of encrypted CA keys, in this file (first line).
    #[arg(long, env = "CERTGATE_CA_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// How diagnostics on stderr are written (text or json).
    #[arg(long, value_enum, default_value_t = super::serve::LogFormat::Text)]
    pub log_format: super::serve::LogFormat,
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
    /// serve there what `certgate crl --issuer ISSUER --der` writes, or let `certgate ca serve
    /// --crl-listen` serve them.
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
        CaCommand::Serve(args) => serve(args),
        CaCommand::Token(args) => token(args),
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
    writeln!(
        stdout,
        "  provisioner   {}  (signs one-time tokens: certgate ca token)",
        p.dir.join(certgate_pki::provisioner::DEFAULT_KEY).display()
    )?;
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

/// The name the service's own certificate has in the inventory.
const SERVE_NAME: &str = "ca-serve";

/// The lifetime of the service's own certificate.
const SERVE_DAYS: u32 = 90;

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    super::serve::init_logging(args.log_format);
    let password = super::ca_password(args.password_file.as_ref())?;
    let mut ca = Authority::open(&args.dir.ca_dir, password)?;
    let names = if args.names.is_empty() {
        vec!["localhost".to_string(), "127.0.0.1".to_string()]
    } else {
        args.names.clone()
    };
    let (cert, key) = server_certificate(&mut ca, &names)?;
    let settings = certgate_gateway::ca::ServeSettings {
        listen: args.listen,
        cert,
        key,
        root: ca.paths().root_crt.clone(),
        origin: ca.paths().dir.clone(),
    };
    if args.crl_listen.is_some() && ca.crl_url().is_none() {
        eprintln!(
            "warning: --crl-listen: this CA was made without --crl-url, so its certificates \
             name no CRL distribution point to fetch from it"
        );
    }
    let service = std::sync::Arc::new(certgate_gateway::ca::CaService::start(
        ca,
        names.clone(),
        certgate_gateway::ca::DEFAULT_QUEUE,
    )?);
    let config = match certgate_gateway::ca::config(&settings, service.clone()) {
        Ok(config) => config,
        Err(errors) => {
            eprint!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    for (_, note) in &config.notes {
        eprintln!("warning: {note}");
    }
    let runtime = super::serve::runtime(config.worker_threads)?;
    runtime.block_on(async {
        if let Some(addr) = args.crl_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--crl-listen {addr}: cannot listen there"))?;
            let bound = listener.local_addr().unwrap_or(addr);
            eprintln!("certgate: CRLs and roots on http://{bound}");
            tokio::spawn(certgate_gateway::ca::serve_plain(listener, service));
        }
        certgate_gateway::serve(config, None, super::serve::shutdown_signal(), |ready| {
            for (_, addr) in ready.listeners {
                eprintln!("certgate: listener ca on https://{addr}");
            }
        })
        .await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `<ca-dir>/serve.crt` and `serve.key`: the service's own certificate (dual-purpose, so it
/// can renew itself over mTLS) for `names`. The files are kept while the certificate is for
/// exactly these names, chains to this CA's root, and has more than a third of its lifetime
/// left; otherwise the CA issues a new key and certificate, recorded as `ca-serve` and
/// written atomically (key 0600) over the old pair, which only this command writes.
fn server_certificate(ca: &mut Authority, names: &[String]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = ca.paths().dir.clone();
    let (crt, key) = (dir.join("serve.crt"), dir.join("serve.key"));
    let wanted: Vec<certgate_pki::names::San> =
        names.iter().map(|n| certgate_pki::names::San::parse(n)).collect::<Result<_, _>>()?;
    if let Some(bad) = wanted.iter().find(|san| san.is_client_identity()) {
        anyhow::bail!(
            "--name {}: the CA is reached at a DNS name or an IP address, not a {} SAN",
            bad.value(),
            bad.kind()
        );
    }
    match reusable(ca, &crt, &key, &wanted) {
        Ok(()) => return Ok((crt, key)),
        Err(why) => tracing::info!(reason = why, "issuing the CA service's certificate"),
    }
    let mut req = certgate_pki::ca::IssueRequest::new(SERVE_NAME, names.to_vec());
    req.profile = Some(certgate_pki::profile::Profile::Dual);
    req.validity = certgate_pki::validity::Validity::Days(SERVE_DAYS);
    let issued = ca.issue(&req, |issued| {
        certgate_pki::ca::write_leaf_files_at(
            &crt,
            &key,
            issued,
            Overwrite::Force,
            Overwrite::Force,
        )
        .map(|_| ())
    })?;
    eprintln!(
        "certgate: issued the CA service's certificate {} for {} (serial {}, until {})",
        crt.display(),
        names.join(", "),
        issued.serial_hex(),
        certgate_pki::validity::format_time(issued.record.not_after)
    );
    Ok((crt, key))
}

/// Why the existing service certificate cannot be kept, or `Ok` when it can.
fn reusable(
    ca: &Authority,
    crt: &std::path::Path,
    key: &std::path::Path,
    wanted: &[certgate_pki::names::San],
) -> Result<(), &'static str> {
    if !crt.exists() || !key.exists() {
        return Err("none yet");
    }
    let chain = certgate_pki::pem::read_certs(crt).map_err(|_| "serve.crt is unreadable")?;
    let leaf = chain.first().ok_or("serve.crt holds no certificate")?;
    let id = certgate_pki::identity::PeerIdentity::from_der(leaf)
        .map_err(|_| "serve.crt is not X.509")?;
    let mut have: Vec<String> = id.sans.dns.to_vec();
    have.extend(id.sans.ip.iter().map(ToString::to_string));
    have.extend(id.sans.uri.iter().cloned());
    have.extend(id.sans.email.iter().cloned());
    let mut want: Vec<String> = wanted.iter().map(|s| s.value()).collect();
    have.sort();
    want.sort();
    if have != want {
        return Err("other names were asked for");
    }
    let now = time::OffsetDateTime::now_utc();
    if id.not_after - now <= (id.not_after - id.not_before) / 3 {
        return Err("it expires within a third of its lifetime");
    }
    let store = certgate_pki::verify::TrustStore::from_der(vec![ca.root_der().clone()], vec![])
        .map_err(|_| "the root is unusable")?;
    let policy = certgate_pki::verify::VerifyPolicy {
        purpose: certgate_pki::verify::Purpose::ServerAuth,
        ..certgate_pki::verify::VerifyPolicy::client()
    };
    store
        .verify(&chain, &policy, rustls_pki_types::UnixTime::now())
        .map_err(|_| "it does not chain to this CA's root")?;
    let key = certgate_pki::keys::load(key, None).map_err(|_| "serve.key is unreadable")?;
    if !certgate_pki::keys::matches_cert(&key, leaf) {
        return Err("serve.key does not match serve.crt");
    }
    Ok(())
}

/// The longest a one-time token may live.
const MAX_TOKEN_TTL: time::Duration = time::Duration::hours(24);

fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    use certgate_token::ott;
    let ca = Authority::open(&args.dir.ca_dir, None)?;
    let provisioners = certgate_pki::provisioner::Provisioners::load(&ca.paths().dir)?;
    let Some(p) = provisioners.find(&args.provisioner) else {
        let known: Vec<&str> = provisioners.list.iter().map(|p| p.name.as_str()).collect();
        anyhow::bail!(
            "--provisioner {}: no such provisioner in {} (there are: {})",
            args.provisioner,
            ca.paths().dir.join(certgate_pki::provisioner::FILE).display(),
            known.join(", ")
        );
    };
    for san in &args.sans {
        certgate_pki::names::San::parse(san)?;
    }
    let ttl = certgate_pki::validity::parse_duration(&args.ttl)?;
    if ttl > MAX_TOKEN_TTL {
        anyhow::bail!("--ttl {}: a one-time token lives at most 24h", args.ttl);
    }
    let aud = match &args.ca_url {
        Some(url) if url.starts_with("https://") => format!("{}/sign", url.trim_end_matches('/')),
        Some(url) => anyhow::bail!("--ca-url {url}: the CA is reached over https://"),
        None => ca.root_fingerprint(),
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let now = u64::try_from(now).unwrap_or(0);
    let claims = ott::OttClaims {
        iss: p.name.clone(),
        aud,
        sub: args.name.clone(),
        sans: args.sans.clone(),
        iat: now,
        nbf: now,
        exp: now + u64::try_from(ttl.whole_seconds()).unwrap_or(0),
        jti: ott::random_jti()?,
    };
    let key = certgate_pki::fs::read(&p.key)?;
    let token =
        ott::sign(&key, &claims).map_err(|e| anyhow::anyhow!("{}: {e}", p.key.display()))?;
    writeln!(Out::lock(), "{token}")?;
    Ok(ExitCode::SUCCESS)
}
