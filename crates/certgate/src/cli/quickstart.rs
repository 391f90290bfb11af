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

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  certgate quickstart                               # in ./certgate-quickstart, on 127.0.0.1:8443
  certgate quickstart --dir /tmp/qs --listen 127.0.0.1:9443")]
pub struct QuickstartArgs {
    /// Where the PKI and config are kept (reused when it already holds them).
    #[arg(long, default_value = "./certgate-quickstart")]
    pub dir: PathBuf,
    /// Gateway address.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
}

const CLIENT_ID: &str = "spiffe://certgate.test/quickstart-client";

pub fn run(args: QuickstartArgs) -> anyhow::Result<ExitCode> {
    super::serve::init_logging(super::serve::LogFormat::Text);
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    prepare_pki(&args.dir)?;
    let runtime = super::serve::runtime(None)?;
    runtime.block_on(async {
        let config_path = args.dir.join("certgate.toml");
        write_config(&config_path, args.listen)?;
        let config =
            certgate_gateway::config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let dir = args.dir.clone();
        certgate_gateway::serve(config, None, super::serve::shutdown_signal(), move |addrs| {
            print_guide(&dir, addrs.listeners.first().map(|(_, a)| *a).unwrap_or(args.listen))
        })
        .await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Creates the CA, server and client certificates unless they exist (keys are never replaced).
fn prepare_pki(dir: &Path) -> anyhow::Result<()> {
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
    ];
    for (name, sans, profile) in leaves {
        let (crt, key) = ca::leaf_file_paths(dir, name);
        if crt.exists() && key.exists() {
            continue;
        }
        let mut req = IssueRequest::new(name, sans);
        req.profile = Some(profile);
        authority
            .issue(&req, |issued| ca::write_leaf_files(dir, name, issued, true).map(|_| ()))?;
    }
    let root = dir.join("root.crt");
    certgate_pki::fs::write_atomic(
        &root,
        authority.root_pem().as_bytes(),
        certgate_pki::fs::Mode::Public,
        certgate_pki::fs::Overwrite::Force,
    )?;
    Ok(())
}

fn write_config(path: &Path, listen: SocketAddr) -> anyhow::Result<()> {
    let text = format!(
        r#"# Written by `certgate quickstart` (rewritten on each start).
# Run it yourself with: certgate serve --config {path}

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
    certgate_pki::fs::write_atomic(
        path,
        text.as_bytes(),
        certgate_pki::fs::Mode::Public,
        certgate_pki::fs::Overwrite::Force,
    )?;
    Ok(())
}

fn print_guide(dir: &Path, addr: SocketAddr) {
    let d = dir.display();
    let url = format!("https://localhost:{}", addr.port());
    let resolve = if addr.ip().is_loopback() {
        String::new()
    } else {
        format!(" --resolve localhost:{}:{}", addr.port(), addr.ip())
    };
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

Ctrl-C stops."#
    );
}
