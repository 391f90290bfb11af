//! `certgate quickstart`: a throw-away PKI and config in a directory, and the gateway in front
//! of a built-in echo service, with curl commands to try.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use certgate_pki::ca::{self, Authority, InitOptions, IssueRequest};
use certgate_pki::profile::Profile;
use clap::Args;

/// Runs the gateway on a throw-away PKI in --dir. quickstart writes only into a new or empty
/// directory, or one it made before (marked by a .certgate-quickstart file), and there only
/// its own files: it refuses, naming them, when the directory holds anything else, and never
/// replaces a file that was changed after it wrote it.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  certgate quickstart                               # in ./certgate-quickstart, on 127.0.0.1:8443
  certgate quickstart --dir /tmp/qs --listen 127.0.0.1:9443")]
pub struct QuickstartArgs {
    /// Where the PKI and config are kept: a new or empty directory, or one an earlier
    /// quickstart made (its PKI is reused). quickstart writes only its own files there: a
    /// directory holding others, or a certgate.toml changed since quickstart wrote it, is
    /// refused, naming them.
    #[arg(long, default_value = "./certgate-quickstart")]
    pub dir: PathBuf,
    /// Gateway address.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Also run certificate-bound OAuth (RFC 8705): the built-in token service at /oauth
    /// issues tokens bound to the client certificate, and /api needs such a token with that
    /// certificate. Adds client.p12 (password "quickstart"), other.crt + other.key (a second
    /// client) and oauth-signing.key.
    #[arg(long)]
    pub oauth: bool,
}

/// The PKCS#12 password of quickstart's client.p12 (a throw-away PKI).
const P12_PASSWORD: &str = "quickstart";
const OTHER_ID: &str = "spiffe://certgate.test/other-client";

const CLIENT_ID: &str = "spiffe://certgate.test/quickstart-client";

/// The file that marks a directory as quickstart's, and records the address it last served.
const MARKER: &str = ".certgate-quickstart";

/// Every entry quickstart writes in its directory; anything else there is not its own.
const OWN: [&str; 12] = [
    MARKER,
    "ca",
    "root.crt",
    "server.crt",
    "server.key",
    "client.crt",
    "client.key",
    "certgate.toml",
    "client.p12",
    "other.crt",
    "other.key",
    "oauth-signing.key",
];

pub fn run(args: QuickstartArgs) -> anyhow::Result<ExitCode> {
    super::serve::init_logging(super::serve::LogFormat::Text);
    let previous = claim_dir(&args.dir)?;
    prepare_pki(&args.dir, args.oauth)?;
    let config_path = args.dir.join("certgate.toml");
    let setup = Setup { listen: args.listen, oauth: args.oauth };
    write_config(&config_path, setup, previous)?;
    write_marker(&args.dir, Some(setup))?;
    let runtime = super::serve::runtime(None)?;
    runtime.block_on(async {
        let config =
            certgate_gateway::config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let dir = args.dir.clone();
        certgate_gateway::serve(config, None, super::serve::shutdown_signal(), move |addrs| {
            let addr = addrs.listeners.first().map(|(_, a)| *a).unwrap_or(args.listen);
            print_guide(&dir, addr);
            if args.oauth {
                print_oauth_guide(&dir, addr);
            }
        })
        .await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// What a quickstart config was written for: the listen address and whether OAuth is on.
#[derive(Debug, Clone, Copy)]
struct Setup {
    listen: SocketAddr,
    oauth: bool,
}

/// Makes `dir` quickstart's, or checks that it is: a missing or empty directory is created and
/// marked; a marked one must hold nothing but quickstart's own files. Returns the setup the
/// last quickstart in it served, as its marker records.
fn claim_dir(dir: &Path) -> anyhow::Result<Option<Setup>> {
    let d = dir.display();
    let entries: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => {
            let mut names = Vec::new();
            for entry in entries {
                let entry = entry.with_context(|| format!("cannot read directory {d}"))?;
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            names
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read directory {d}")),
    };
    let marked = entries.iter().any(|n| n == MARKER);
    let foreign: Vec<&str> =
        entries.iter().map(String::as_str).filter(|n| !marked || !OWN.contains(n)).collect();
    if !foreign.is_empty() {
        anyhow::bail!(
            "{d} holds files that certgate quickstart did not write: {}; quickstart writes only \
             into a new or empty directory, or one it made before: give --dir another directory, \
             or move those files away",
            foreign.join(", ")
        );
    }
    if !marked {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {d}"))?;
        write_marker(dir, None)?;
        return Ok(None);
    }
    let marker = dir.join(MARKER);
    let text = std::fs::read_to_string(&marker)
        .with_context(|| format!("cannot read {}", marker.display()))?;
    let listen =
        text.lines().find_map(|l| l.strip_prefix("listen = ")).and_then(|a| a.parse().ok());
    let oauth = text.lines().any(|l| l == "oauth = true");
    Ok(listen.map(|listen| Setup { listen, oauth }))
}

/// Writes the marker, recording the setup the config in `dir` was written for.
fn write_marker(dir: &Path, setup: Option<Setup>) -> anyhow::Result<()> {
    let mut text = String::from(
        "# This directory was made by `certgate quickstart`, which writes here only the files it\n\
         # made: ca/, root.crt, server.crt, server.key, client.crt, client.key, certgate.toml,\n\
         # and with --oauth client.p12, other.crt, other.key, oauth-signing.key.\n",
    );
    if let Some(setup) = setup {
        text.push_str(&format!("listen = {}\n", setup.listen));
        if setup.oauth {
            text.push_str("oauth = true\n");
        }
    }
    certgate_pki::fs::write_atomic(
        &dir.join(MARKER),
        text.as_bytes(),
        certgate_pki::fs::Mode::Public,
        certgate_pki::fs::Overwrite::Force,
    )?;
    Ok(())
}

/// Creates the CA, server and client certificates unless they exist (keys are never replaced),
/// and with `oauth` a second client, the client's PKCS#12 and the token signing key.
fn prepare_pki(dir: &Path, oauth: bool) -> anyhow::Result<()> {
    let ca_dir = dir.join("ca");
    let mut authority = if ca_dir.join("root.crt").exists() {
        Authority::open(&ca_dir, None)?
    } else {
        let opts =
            InitOptions { name: "certgate quickstart Root CA".into(), ..InitOptions::default() };
        Authority::init(&ca_dir, &opts)?
    };
    let leaves = [
        (
            "server",
            vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()],
            Profile::Server,
        ),
        ("client", vec![CLIENT_ID.to_string()], Profile::Client),
        ("other", vec![OTHER_ID.to_string()], Profile::Client),
    ];
    for (name, sans, profile) in leaves {
        if name == "other" && !oauth {
            continue;
        }
        let (crt, key) = ca::leaf_file_paths(dir, name);
        match (crt.exists(), key.exists()) {
            (true, true) => continue,
            (false, false) => {}
            (true, false) | (false, true) => {
                let (there, missing) = if crt.exists() { (&crt, &key) } else { (&key, &crt) };
                anyhow::bail!(
                    "{} is there without {}; quickstart does not replace it: remove it to \
                     have both made again",
                    there.display(),
                    missing.display()
                );
            }
        }
        let mut req = IssueRequest::new(name, sans);
        req.profile = Some(profile);
        authority
            .issue(&req, |issued| ca::write_leaf_files(dir, name, issued, false).map(|_| ()))?;
    }
    let root = dir.join("root.crt");
    let root_pem = authority.root_pem();
    replace_own(&root, root_pem.as_bytes(), None)?;
    if oauth {
        prepare_oauth(dir)?;
    }
    Ok(())
}

/// The token signing key and the client's PKCS#12, unless they exist.
fn prepare_oauth(dir: &Path) -> anyhow::Result<()> {
    use certgate_pki::fs::{Mode, Overwrite, write_atomic};
    let signing = dir.join("oauth-signing.key");
    if !signing.exists() {
        let key = certgate_pki::keys::KeyType::EcP256.generate()?;
        let pem = certgate_pki::keys::to_pem(&key);
        write_atomic(&signing, pem.as_bytes(), Mode::Secret, Overwrite::Refuse)?;
    }
    let p12 = dir.join("client.p12");
    if !p12.exists() {
        let (crt, key) = ca::leaf_file_paths(dir, "client");
        let chain = certgate_pki::pem::read_certs(&crt)?;
        let key_der = certgate_pki::keys::pkcs8_der_from_pem(&key, &std::fs::read(&key)?, None)?;
        let der = certgate_pki::pkcs12::export(&chain, &key_der, P12_PASSWORD, false, "client")?;
        write_atomic(&p12, &der, Mode::Secret, Overwrite::Refuse)?;
    }
    Ok(())
}

/// Writes `text` to `path` unless the file there already holds it. An existing file is
/// replaced only when it still holds `written_before`, what quickstart wrote there last;
/// otherwise it was changed by someone else, and is left alone with an error naming it.
fn replace_own(path: &Path, text: &[u8], written_before: Option<&[u8]>) -> anyhow::Result<()> {
    match std::fs::read(path) {
        Ok(current) if current == text => return Ok(()),
        Ok(current) if Some(current.as_slice()) == written_before => {}
        Ok(_) => anyhow::bail!(
            "{} was changed after certgate quickstart wrote it, and is not overwritten; remove \
             it to have quickstart write it again, or run the changed setup with `certgate \
             serve --config {}`",
            path.display(),
            path.with_file_name("certgate.toml").display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    certgate_pki::fs::write_atomic(
        path,
        text,
        certgate_pki::fs::Mode::Public,
        certgate_pki::fs::Overwrite::Force,
    )?;
    Ok(())
}

/// Writes certgate.toml for `listen`, replacing the one quickstart wrote for the address it
/// served last (`previous`) but not one changed since.
fn write_config(path: &Path, setup: Setup, previous: Option<Setup>) -> anyhow::Result<()> {
    let before = previous.map(|p| config_text(path, p));
    replace_own(path, config_text(path, setup).as_bytes(), before.as_deref().map(str::as_bytes))
}

/// The configuration quickstart serves. It names only files next to it (relative paths are
/// read from the config file's directory) and the built-in echo service, so `certgate serve
/// --config` runs it the same after quickstart has exited.
fn config_text(path: &Path, setup: Setup) -> String {
    let listen = setup.listen;
    let mut text = format!(
        r#"# Written by `certgate quickstart`, which rewrites it for its --listen address until
# it is changed (a changed file is left alone and quickstart refuses to start).
# Run it yourself, after quickstart has exited: certgate serve --config {path}
# To put your own app behind the gateway, add
#   [[upstream]]
#   name = "app"
#   url = "http://127.0.0.1:3000"
# and set the routes' upstream = "app" instead of "@echo".

[[listener]]
name = "quickstart"
listen = "{listen}"
certificates = [{{ cert = "server.crt", key = "server.key" }}]

[listener.client_auth]
# optional: the handshake asks for a certificate, and each route decides whether it needs one.
mode = "optional"
trust = ["root.crt"]

# "@echo" is the built-in echo service: it answers with the request exactly as an upstream
# would receive it. Point routes at your own [[upstream]] instead.
# /health needs no certificate.
[[route]]
path = "/health"
upstream = "@echo"
client_cert = "optional"

# Everything else needs a certificate whose SPIFFE ID is under spiffe://certgate.test/.
[[route]]
path = "/"
upstream = "@echo"
client_cert = "required"
identity_headers = "nginx"

[route.allow]
spiffe = ["spiffe://certgate.test/*"]
"#,
        path = path.display()
    );
    if setup.oauth {
        text.push_str(&oauth_config_text(listen));
    }
    text
}

/// The `--oauth` part: the token service and an API that needs a certificate-bound token.
fn oauth_config_text(listen: SocketAddr) -> String {
    let issuer = format!("https://localhost:{}/oauth", listen.port());
    format!(
        r#"
# --oauth: certificate-bound access tokens (RFC 8705), docs/oauth.md.
# The built-in token service: client credentials, the client authenticated by its certificate.
[oauth]
issuer = "{issuer}"
audience = ["https://localhost/api"]
token_lifetime = "5m"

[[oauth.signing_key]]
key = "oauth-signing.key"
state = "active"

[[oauth.client]]
client_id = "quickstart-client"
auth = "tls_client_auth"
ca = ["root.crt"]
tls_client_auth_san_uri = "{CLIENT_ID}"
scopes = ["accounts:read", "accounts:write"]
default_scopes = ["accounts:read"]

[[oauth.client]]
client_id = "other-client"
auth = "tls_client_auth"
ca = ["root.crt"]
tls_client_auth_san_uri = "{OTHER_ID}"
scopes = ["accounts:read"]

# Its endpoints (token, JWKS, introspection, metadata) authenticate clients themselves.
[[route]]
path = "/oauth"
upstream = "@oauth"
client_cert = "optional"

[[route]]
path = "/.well-known/oauth-authorization-server"
upstream = "@oauth"
client_cert = "optional"

# The API: a token from the service above, bound to the certificate of this connection.
[[route]]
path = "/api"
upstream = "@echo"
client_cert = "required"

[route.token]
issuer = "{issuer}"
audience = ["https://localhost/api"]
scopes = ["accounts:read"]
require_binding = true
"#
    )
}

/// The URL the guide's curl commands use (`localhost`, which the server certificate names),
/// and the `--resolve` option they need when the gateway listens elsewhere than loopback.
fn curl_target(addr: SocketAddr) -> (String, String) {
    let url = format!("https://localhost:{}", addr.port());
    let resolve = if addr.ip().is_loopback() {
        String::new()
    } else {
        format!(" --resolve localhost:{}:{}", addr.port(), addr.ip())
    };
    (url, resolve)
}

fn print_guide(dir: &Path, addr: SocketAddr) {
    let d = dir.display();
    let (url, resolve) = curl_target(addr);
    // The gateway keeps serving if nobody reads the guide (stdout closed).
    let _ = writeln!(
        std::io::stdout(),
        r#"certgate quickstart: gateway on {url} (listening on {addr}) in front of the built-in echo service
files in {d}: root.crt, client.crt + client.key ({CLIENT_ID}), server.crt + server.key, certgate.toml, ca/

Try:
  # with the client certificate: 200, and the echo shows the identity headers the gateway added
  curl{resolve} --cacert {d}/root.crt --cert {d}/client.crt --key {d}/client.key {url}/hello

  # without it: refused with 496 "client certificate required"
  curl{resolve} --cacert {d}/root.crt {url}/hello

  # a spoofed identity header is stripped: the echo shows the gateway's X-Client-Subject, not yours
  curl{resolve} --cacert {d}/root.crt --cert {d}/client.crt --key {d}/client.key -H 'X-Client-Subject: CN=admin' {url}/hello

  # /health needs no certificate
  curl{resolve} --cacert {d}/root.crt {url}/health

Ctrl-C stops. The same gateway runs afterwards with:
  certgate serve --config {config}
with "@echo", the echo service built into certgate, as its upstream; to put your own app
behind it, add an [[upstream]] with your app's url to that file and point the routes at it
(the file says how)."#,
        config = dir.join("certgate.toml").display()
    );
}

fn print_oauth_guide(dir: &Path, addr: SocketAddr) {
    let d = dir.display();
    let (url, resolve) = curl_target(addr);
    let _ = writeln!(
        std::io::stdout(),
        r#"
OAuth (--oauth): tokens bound to the client certificate (RFC 8705)
  # 1. a token, the client authenticated by its certificate (client.p12, password "{P12_PASSWORD}")
  TOKEN=$(curl -s{resolve} --cacert {d}/root.crt --cert {d}/client.p12:{P12_PASSWORD} --cert-type P12 \
    -d grant_type=client_credentials -d client_id=quickstart-client {url}/oauth/token \
    | sed 's/.*"access_token":"\([^"]*\)".*/\1/')

  # 2. the API with the token and the same certificate: 200
  curl{resolve} --cacert {d}/root.crt --cert {d}/client.crt --key {d}/client.key -H "Authorization: Bearer $TOKEN" {url}/api/accounts

  # 3. the same token with another valid certificate: 401 invalid_token (bound to another certificate)
  curl -i{resolve} --cacert {d}/root.crt --cert {d}/other.crt --key {d}/other.key -H "Authorization: Bearer $TOKEN" {url}/api/accounts

  # the keys that verify tokens, and the server's metadata (RFC 8414)
  curl{resolve} --cacert {d}/root.crt {url}/oauth/jwks
  curl{resolve} --cacert {d}/root.crt {url}/.well-known/oauth-authorization-server/oauth"#
    );
}
