//! Managed certificates: a gateway whose listener certificate and upstream client
//! certificate come from the online CA (`certgate ca serve`), requested at start with one-time
//! tokens and renewed in the background with no restart, as curl, openssl and an mTLS
//! upstream see it.

// A test that cannot set itself up should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gateway_support;
mod pki_support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gateway_support::{Gateway, admin, curl, parse_metrics, python_server, serve_check};
use pki_support::{Scratch, mode, text};

const MTLS_ECHO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/mtls_echo.py");

/// The online CA on the scratch CA (`ca/`), in `DIR/ca-serve` so its logs stay apart.
fn ca_serve(s: &Scratch) -> Gateway {
    let dir = s.path("ca-serve");
    std::fs::create_dir_all(&dir).unwrap();
    let ca_dir = s.path("ca").display().to_string();
    Gateway::start_command(&dir, &["ca", "serve", "--ca-dir", &ca_dir, "--listen", "127.0.0.1:0"])
}

/// A one-time token for `name` and `sans`, written to `DIR/gw/FILE`.
fn token(s: &Scratch, name: &str, sans: &[&str], file: &str) {
    let mut args = vec!["ca", "token", name];
    for san in sans {
        args.extend(["--san", san]);
    }
    let token = s.ok(&args);
    std::fs::write(s.path("gw").join(file), token.trim()).unwrap();
}

/// The gateway's configuration: listener certificate `gw` and upstream client certificate
/// `gw-client` managed, both with one-minute lifetimes, in front of `upstream_port`.
fn config(ca_url: &str, upstream_port: u16) -> String {
    format!(
        r#"
state_dir = "state"

[[listener]]
listen = "127.0.0.1:{{port}}"
certificates = [{{ managed = "gw", ca_url = "{ca_url}", root = "../ca/root.crt", token_file = "gw.token", lifetime = "1m" }}]
[listener.client_auth]
mode = "required"
trust = ["../ca/root.crt"]

[[upstream]]
name = "app"
url = "https://localhost:{upstream_port}"
ca = ["../ca/root.crt"]
client_cert = {{ managed = "gw-client", ca_url = "{ca_url}", root = "../ca/root.crt", token_file = "client.token", lifetime = "1m" }}

[[route]]
upstream = "app"

[admin]
listen = "127.0.0.1:{{port}}"
"#
    )
}

/// The families deploy/alerts.yaml queries whose names start with `prefix` (those that exist
/// only with managed certificates or CRL URLs), each checked to be in the OpenMetrics
/// `scrape` (as a family, counters with `_total`).
fn alert_families_exported(scrape: &str, prefix: &str) {
    let alerts =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/alerts.yaml"))
            .unwrap();
    let mut found = 0;
    for (at, _) in alerts.match_indices(prefix) {
        let name: String =
            alerts[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let family = name.strip_suffix("_total").unwrap_or(&name);
        assert!(scrape.contains(&format!("# TYPE {family} ")), "{name} is not exported: {scrape}");
        found += 1;
    }
    assert!(found > 0, "deploy/alerts.yaml has no {prefix} rule");
}

/// Runs `certgate serve --config certgate.toml ARGS` in `dir` to its end: a start expected to
/// fail (or `--check`); a gateway that starts would not return.
fn serve_to_end(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(gateway_support::CERTGATE)
        .current_dir(dir)
        .args(["serve", "--config", "certgate.toml"])
        .args(args)
        .output()
        .unwrap()
}

/// The serial of the first certificate in `file`, as openssl prints it (upper-case hex).
fn serial_of(file: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}: {}", file.display(), text(&out));
    text(&out).trim().trim_start_matches("serial=").to_string()
}

/// The serial of the certificate the gateway presents in a handshake, as openssl sees it.
fn served_serial(s: &Scratch, port: u16) -> String {
    let script = format!(
        "openssl s_client -connect 127.0.0.1:{port} -servername localhost -CAfile ca/root.crt \
         -cert alice.crt -key alice.key </dev/null 2>/dev/null | openssl x509 -noout -serial"
    );
    let out = Command::new("sh").current_dir(&s.dir).args(["-c", &script]).output().unwrap();
    text(&out).trim().trim_start_matches("serial=").to_string()
}

/// One request through the gateway as alice: (HTTP status, the upstream's body).
fn request(s: &Scratch, gw: &Gateway, http2: bool) -> (u16, String) {
    let version = if http2 { "--http2" } else { "--http1.1" };
    let ca = s.path("ca/root.crt").display().to_string();
    let cert = s.path("alice.crt").display().to_string();
    let key = s.path("alice.key").display().to_string();
    let r = curl(&[version, "--cacert", &ca, "--cert", &cert, "--key", &key, &gw.url("/")]);
    (r.status, r.body)
}

/// The gateway requests both certificates at start with its tokens (key 0600 in a 0700
/// state directory), serves with them, and renews each at least twice while curl sends a
/// steady trickle of mTLS requests over HTTP/1.1 and HTTP/2: none fails, new handshakes get
/// the renewed listener certificate, the upstream sees the renewed client certificate, and
/// /metrics, /status and /readyz report the renewals; then, with the CA stopped, the failing
/// renewals are logged, counted and named on /readyz.
#[test]
fn managed_certificates_are_requested_at_start_and_renewed_without_a_restart() {
    let s = Scratch::with_ca(&[]);
    s.ok(&["cert", "issue", "upstream", "--san", "localhost"]);
    s.ok(&["cert", "issue", "alice", "--san", "spiffe://example.com/alice", "--profile", "client"]);
    let ca = ca_serve(&s);
    let ca_url = format!("https://127.0.0.1:{}", ca.port);
    let up_args = ["upstream.crt", "upstream.key", "ca/root.crt"].map(|f| s.path(f));
    let up_args: Vec<String> = up_args.iter().map(|p| p.display().to_string()).collect();
    let up_args: Vec<&str> = up_args.iter().map(String::as_str).collect();
    let (_upstream, up_port) = python_server(MTLS_ECHO, &up_args);
    let dir = s.path("gw");
    std::fs::create_dir_all(&dir).unwrap();
    token(&s, "gw", &["localhost", "127.0.0.1"], "gw.token");
    token(&s, "gw-client", &["gw.internal", "spiffe://example.com/gw"], "client.token");

    let gw = Gateway::start_with_env(&dir, &config(&ca_url, up_port), &[("CERTGATE_LOG", "info")]);
    let log = gw.stderr();
    assert!(log.contains("managed certificate gw (no certificate yet): received serial"), "{log}");
    assert!(log.contains("managed certificate gw-client (no certificate yet)"), "{log}");
    assert_eq!(mode(&dir.join("state")), 0o700);
    assert_eq!(mode(&dir.join("state/gw.key")), 0o600);
    assert_eq!(mode(&dir.join("state/gw-client.key")), 0o600);
    let first_listener = serial_of(&dir.join("state/gw.crt"));
    let first_client = serial_of(&dir.join("state/gw-client.crt"));
    assert_eq!(served_serial(&s, gw.port), first_listener);
    let (status, body) = request(&s, &gw, false);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("client-serial: {first_client}")), "{body}");

    // A trickle of requests until each certificate was renewed twice (each lives two
    // minutes with the CA's one-minute backdate: due about 20 s after issuance).
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut sent, mut failed, mut client_serials) = (0, Vec::new(), Vec::new());
    loop {
        let log = gw.stderr();
        let renewed =
            |name: &str| log.matches(&format!("managed certificate {name} renewed")).count();
        if renewed("gw") >= 2 && renewed("gw-client") >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "not renewed twice within 90 s: {log}");
        let (status, body) = request(&s, &gw, sent % 2 == 1);
        sent += 1;
        if status != 200 {
            failed.push(format!("{status} {body}"));
        }
        if let Some(serial) = body.trim().strip_prefix("client-serial: ") {
            client_serials.push(serial.to_string());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(failed.is_empty(), "{} of {sent} requests failed: {failed:?}", failed.len());
    assert!(sent > 20, "only {sent} requests");

    // New handshakes get the renewed listener certificate, which chains to the CA's root.
    let served = served_serial(&s, gw.port);
    assert_ne!(served, first_listener);
    let chain = "gw/state/gw.crt";
    let verify = s.openssl(&[
        "verify",
        "-CAfile",
        "ca/root.crt",
        "-untrusted",
        chain,
        "-purpose",
        "sslserver",
        chain,
    ]);
    assert!(verify.status.success(), "{}", text(&verify));
    // The upstream saw a renewed client certificate (new upstream connections get it).
    let renewed_client = serial_of(&dir.join("state/gw-client.crt"));
    assert_ne!(renewed_client, first_client);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !client_serials.iter().any(|c| c != &first_client) {
        assert!(Instant::now() < deadline, "the upstream never saw a renewed client certificate");
        let (_, body) = request(&s, &gw, false);
        if let Some(serial) = body.trim().strip_prefix("client-serial: ") {
            client_serials.push(serial.to_string());
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    // Reported: renewals counted (read by Prometheus's own parser), state in /status, ready.
    let (code, metrics) = admin(&gw, "GET", "/metrics");
    assert_eq!(code, 200);
    let samples = parse_metrics(&metrics);
    alert_families_exported(&metrics, "certgate_certificate_renewal");
    for name in ["gw", "gw-client"] {
        let line = samples
            .lines()
            .find(|l| {
                l.starts_with("certgate_certificate_renewals counter")
                    && l.contains(&format!("name={name},result=success"))
            })
            .unwrap_or_else(|| panic!("no success count for {name}: {samples}"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value >= 2.0, "{line}");
        assert!(
            samples
                .lines()
                .any(|l| l.starts_with("certgate_certificate_renewal_last_success_timestamp")
                    && l.contains(&format!("name={name}"))),
            "{samples}"
        );
    }
    let (code, status) = admin(&gw, "GET", "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let managed = status["managed"].as_array().unwrap();
    assert_eq!(managed.len(), 2, "{status}");
    assert!(managed.iter().all(|m| m["failures_in_a_row"] == 0 && m["last_success"].is_string()));
    assert_eq!(admin(&gw, "GET", "/readyz"), (200, "ready\n".to_string()));

    // With the CA gone, failing renewals are logged, counted and named on /readyz, which
    // stays 200 while the certificates are valid; requests still succeed.
    drop(ca);
    let failed = "managed certificate gw: renewal failed";
    let deadline = Instant::now() + Duration::from_secs(40);
    while !gw.stderr().contains(failed) {
        assert!(Instant::now() < deadline, "no failed renewal logged: {}", gw.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, ready) = admin(&gw, "GET", "/readyz");
    assert_eq!(code, 200, "{ready}");
    assert!(ready.starts_with("ready\n") && ready.contains("managed certificate gw: "), "{ready}");
    assert!(ready.contains("renewal attempt(s) failed"), "{ready}");
    let samples = parse_metrics(&admin(&gw, "GET", "/metrics").1);
    assert!(
        samples.lines().any(|l| l.starts_with("certgate_certificate_renewals counter")
            && l.contains("name=gw,result=failure")),
        "{samples}"
    );
    let failures = samples
        .lines()
        .find(|l| {
            l.starts_with("certgate_certificate_renewal_failures_in_a_row")
                && l.contains("name=gw ")
        })
        .unwrap_or_else(|| panic!("{samples}"));
    assert!(!failures.ends_with(" 0.0") && !failures.ends_with(" 0"), "{failures}");
    let (status, body) = request(&s, &gw, true);
    assert_eq!(status, 200, "{body}");
}

/// A token is never sent twice: with the certificate gone but the record of its token kept,
/// the gateway refuses to start and says to put a new token; with the record gone too, the
/// CA refuses the replay and the gateway says so. Nothing is written either way.
#[test]
fn a_used_token_is_not_used_again_and_the_refusal_is_clear() {
    let s = Scratch::with_ca(&[]);
    s.ok(&["cert", "issue", "upstream", "--san", "localhost"]);
    let ca = ca_serve(&s);
    let ca_url = format!("https://127.0.0.1:{}", ca.port);
    let dir = s.path("gw");
    std::fs::create_dir_all(&dir).unwrap();
    token(&s, "gw", &["localhost"], "gw.token");
    token(&s, "gw-client", &["gw.internal", "spiffe://example.com/gw"], "client.token");
    let config = config(&ca_url, 9);
    let serve = || {
        std::fs::write(dir.join("certgate.toml"), config.replace("{port}", "0")).unwrap();
        let out = serve_to_end(&dir, &["--check"]);
        (out.status.code(), text(&out))
    };
    // --check reads only: it reports the missing certificate and requests nothing.
    let (code, out) = serve();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("does not exist yet") && out.contains("token_file"), "{out}");
    assert!(!dir.join("state/gw.crt").exists());

    // A real start requests both, then stop it.
    {
        let _gw = Gateway::start(&dir, &config);
        assert!(dir.join("state/gw.crt").exists());
    }
    std::fs::remove_file(dir.join("state/gw.crt")).unwrap();
    let start = || serve_to_end(&dir, &[]);
    let out = start();
    assert!(!out.status.success());
    let err = text(&out);
    assert!(
        err.contains("gw.token was used already") && err.contains("certgate ca token"),
        "{err}"
    );
    assert!(!dir.join("state/gw.crt").exists());

    std::fs::remove_file(dir.join("state/gw.token-used")).unwrap();
    let out = start();
    assert!(!out.status.success());
    let err = text(&out);
    assert!(err.contains("token already used") && err.contains(&ca_url), "{err}");
    assert!(!dir.join("state/gw.crt").exists(), "nothing written after a refusal");

    // Something that is not a token in token_file: refused before the CA is asked.
    std::fs::write(dir.join("gw.token"), "not a token\n").unwrap();
    let out = start();
    assert!(!out.status.success());
    let err = text(&out);
    assert!(err.contains("gw.token") && err.contains("not a one-time token"), "{err}");
    assert!(!dir.join("state/gw.crt").exists());
}

/// Managed certificates are checked like the rest of the file: state_dir is required, cert
/// and key files do not mix with managed, a managed client_cert has no client_key, a name
/// declared twice must be declared alike, the CA must be https:// and pinned.
#[test]
fn managed_certificate_mistakes_are_named() {
    let s = Scratch::new();
    let cases = [
        (
            "[[listener]]\nlisten = \"127.0.0.1:0\"\ncertificates = [{ managed = \"gw\", ca_url = \"https://ca:9443\", root = \"root.crt\" }]\n[[route]]\nupstream = \"@echo\"\n",
            "managed certificates need state_dir",
        ),
        (
            "state_dir = \"st\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\ncertificates = [{ managed = \"gw\", cert = \"a.crt\", ca_url = \"https://ca:9443\", root = \"root.crt\" }]\n[[route]]\nupstream = \"@echo\"\n",
            "a managed certificate has no cert or key files",
        ),
        (
            "state_dir = \"st\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\ncertificates = [{ managed = \"gw\", ca_url = \"http://ca:9443\", fingerprint = \"ab\" }]\n[[route]]\nupstream = \"@echo\"\n",
            "the online CA is reached over https://",
        ),
        (
            "state_dir = \"st\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\ncertificates = [{ managed = \"gw\", ca_url = \"https://ca:9443\" }]\n[[route]]\nupstream = \"@echo\"\n",
            "the CA's root (root = FILE or fingerprint = SHA256) is needed",
        ),
        (
            "state_dir = \"st\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\ncertificates = [{ managed = \"gw\", ca_url = \"https://ca:9443\", fingerprint = \"ab\" }]\n[[upstream]]\nname = \"app\"\nurl = \"https://localhost:1\"\nclient_cert = { managed = \"gw\", ca_url = \"https://other:9443\" }\n[[route]]\nupstream = \"app\"\n",
            "declare it alike",
        ),
        (
            "state_dir = \"st\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\ncertificates = [{ cert = \"a.crt\", key = \"a.key\" }]\n[[upstream]]\nname = \"app\"\nurl = \"https://localhost:1\"\nclient_cert = { managed = \"c\", ca_url = \"https://ca:9443\", fingerprint = \"ab\" }\nclient_key = \"c.key\"\n[[route]]\nupstream = \"app\"\n",
            "leave client_key out",
        ),
        (
            "state_dir = \"st\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\ncertificates = [{ managed = \"../gw\", ca_url = \"https://ca:9443\", fingerprint = \"ab\" }]\n[[route]]\nupstream = \"@echo\"\n",
            "a managed certificate's name is a plain file name",
        ),
    ];
    for (config, want) in cases {
        let (code, out) = serve_check(&s.dir, config);
        assert_eq!(code, 1, "{config}\n{out}");
        assert!(out.contains(want), "{config}\nwanted {want:?} in:\n{out}");
    }
}

/// `crls = ["https://…/crl/intermediate.crl"]`: the gateway fetches the CA's CRL at start
/// (over TLS verified against the listener's trust anchors), keeps a copy in state_dir,
/// fetches it again every `crl_refresh` and reloads when it changed, so a revocation made
/// at the CA is refused within seconds with no shared file. With the CA down, a restart
/// serves from the copy; with no copy either, the start fails and says why.
#[test]
fn crls_fetched_by_url_pick_up_revocations_and_survive_a_ca_outage() {
    let s = Scratch::with_ca(&[]);
    s.ok(&["cert", "issue", "server", "--san", "localhost"]);
    for name in ["alice", "bob"] {
        let san = format!("spiffe://example.com/{name}");
        s.ok(&["cert", "issue", name, "--san", &san, "--profile", "client"]);
    }
    let ca = ca_serve(&s);
    let crl_url = format!("https://127.0.0.1:{}/crl/intermediate.crl", ca.port);
    let dir = s.path("gw");
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        r#"
state_dir = "state"

[[listener]]
listen = "127.0.0.1:{{port}}"
certificates = [{{ cert = "../server.crt", key = "../server.key" }}]
[listener.client_auth]
mode = "required"
trust = ["../ca/root.crt"]
crls = ["{crl_url}"]
crl_refresh = "1s"

[[route]]
upstream = "@echo"

[admin]
listen = "127.0.0.1:{{port}}"
"#
    );
    let as_client = |gw: &Gateway, name: &str| {
        let ca = s.path("ca/root.crt").display().to_string();
        let cert = s.path(&format!("{name}.crt")).display().to_string();
        let key = s.path(&format!("{name}.key")).display().to_string();
        curl(&["--cacert", &ca, "--cert", &cert, "--key", &key, &gw.url("/")]).status
    };
    let gw = Gateway::start_with_env(&dir, &config, &[("CERTGATE_LOG", "info")]);
    assert!(gw.stderr().contains(&format!("CRL {crl_url}: fetched into")), "{}", gw.stderr());
    assert_eq!((as_client(&gw, "alice"), as_client(&gw, "bob")), (200, 200));

    s.ok(&["cert", "revoke", "bob"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while as_client(&gw, "bob") == 200 {
        assert!(Instant::now() < deadline, "bob still accepted: {}", gw.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(gw.stderr().contains(&format!("CRL {crl_url} changed; reloading")));
    assert_eq!(as_client(&gw, "alice"), 200);
    let scrape = admin(&gw, "GET", "/metrics").1;
    alert_families_exported(&scrape, "certgate_crl_fetches");
    let samples = parse_metrics(&scrape);
    assert!(
        samples.lines().any(|l| l.starts_with("certgate_crl_fetches counter")
            && l.contains("result=success")
            && l.contains("url=https://127.0.0.1:")),
        "{samples}"
    );
    drop(gw);

    // The CA goes away: a restart serves from the copy, still refusing bob.
    drop(ca);
    let gw = Gateway::start_with_env(&dir, &config, &[("CERTGATE_LOG", "info")]);
    assert_eq!((as_client(&gw, "alice"), as_client(&gw, "bob")), (200, 0));
    let log = gw.wait_for_log("keeping the cached copy", 1);
    assert!(log.contains(&crl_url), "{log}");
    drop(gw);

    // No copy and no CA: the start fails, naming the URL and the reason.
    std::fs::remove_dir_all(dir.join("state/crls")).unwrap();
    let out = serve_to_end(&dir, &[]);
    assert!(!out.status.success());
    let err = text(&out);
    assert!(err.contains(&crl_url) && err.contains("no copy yet, and fetching it failed"), "{err}");
}

/// A CRL URL served over TLS by a server the listener's trust anchors do not vouch for
/// (here the online CA of another CA) is not fetched: the start fails naming the URL and
/// the certificate problem, and nothing is cached.
#[test]
fn a_crl_url_whose_server_the_trust_anchors_do_not_vouch_for_is_refused() {
    let s = Scratch::with_ca(&[]);
    s.ok(&["cert", "issue", "server", "--san", "localhost"]);
    let other = Scratch::with_ca(&[]);
    let ca = ca_serve(&other);
    let crl_url = format!("https://127.0.0.1:{}/crl/intermediate.crl", ca.port);
    let dir = s.path("gw");
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "state_dir = \"state\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n\
         certificates = [{{ cert = \"../server.crt\", key = \"../server.key\" }}]\n\
         [listener.client_auth]\nmode = \"required\"\ntrust = [\"../ca/root.crt\"]\n\
         crls = [\"{crl_url}\"]\n[[route]]\nupstream = \"@echo\"\n"
    );
    std::fs::write(dir.join("certgate.toml"), config).unwrap();
    let out = serve_to_end(&dir, &[]);
    assert!(!out.status.success());
    let err = text(&out);
    assert!(err.contains(&crl_url) && err.contains("no copy yet, and fetching it failed"), "{err}");
    // Both CAs have the default names, so rustls finds the issuer and refuses its signature.
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(
        !dir.join("state/crls").exists()
            || std::fs::read_dir(dir.join("state/crls")).unwrap().next().is_none()
    );
}
