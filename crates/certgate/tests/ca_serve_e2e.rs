//! The online CA (`certgate ca serve`) as curl and OpenSSL see it: its own dual-purpose
//! certificate for the names it is reached at, `/health`, `/roots`, and each CA's DER CRL at
//! the URL its certificates' CRL distribution points name, the intermediate's kept current
//! online and the root's served from the file made offline.

// A test that cannot set itself up should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gateway_support;
mod pki_support;

use gateway_support::{Gateway, curl, curl_as};
use pki_support::{Scratch, mode, text};

/// `certgate ca serve --listen 127.0.0.1:0` on the scratch CA (`ca/`), with `ca/root.crt`
/// copied to `root.crt` for the curl helpers.
fn ca_serve(s: &Scratch, extra: &[&str]) -> Gateway {
    std::fs::copy(s.path("ca/root.crt"), s.path("root.crt")).unwrap();
    let mut args = vec!["ca", "serve", "--ca-dir", "ca", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Gateway::start_command(&s.dir, &args)
}

/// curl `path` on the CA, trusting its root, writing the body to `out` in the scratch dir;
/// returns the HTTP status.
fn download(s: &Scratch, gw: &Gateway, path: &str, out: &str) -> u16 {
    let got = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "%{http_code}", "--cacert"])
        .arg(s.path("root.crt"))
        .arg("-o")
        .arg(s.path(out))
        .arg(gw.url(path))
        .output()
        .unwrap();
    String::from_utf8_lossy(&got.stdout).trim().parse().unwrap_or(0)
}

/// `openssl crl -text` of a DER CRL, checked against `ca_cert` (fails the test when the
/// signature does not verify).
fn crl_text(s: &Scratch, der: &str, ca_cert: &str) -> String {
    let out = s.openssl(&["crl", "-inform", "DER", "-in", der, "-CAfile", ca_cert, "-noout"]);
    let verified = text(&out);
    assert!(out.status.success() && verified.contains("verify OK"), "{der}: {verified}");
    let out = s.openssl(&["crl", "-inform", "DER", "-in", der, "-noout", "-text"]);
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

/// The serial of `NAME.crt` as `openssl crl -text` prints revoked serials (upper-case hex).
fn serial(s: &Scratch, cert: &str) -> String {
    let out = s.openssl(&["x509", "-in", cert, "-noout", "-serial"]);
    text(&out).trim().trim_start_matches("serial=").to_string()
}

/// The service answers /health and /roots (PEM and JSON), serves the intermediate's CRL at
/// the path the leaves' CRL distribution point names (signed by the intermediate, listing what
/// was revoked, even after the service started), the root's only once it was made offline,
/// and refuses unknown issuers, formats and methods with a JSON reason.
#[test]
fn ca_serve_answers_health_roots_and_crls_at_their_distribution_points() {
    let s = Scratch::with_ca(&["--crl-url", "http://localhost/crl"]);
    s.ok(&["cert", "issue", "api", "--san", "api.example.com"]);
    s.ok(&["cert", "revoke", "api"]);
    let gw = ca_serve(&s, &[]);

    let health = curl_as(&gw, None, "/health", &[]);
    assert_eq!(health.status, 200, "{health:?}");
    let health: serde_json::Value = serde_json::from_str(&health.body).unwrap();
    assert_eq!(health["status"], "ok");

    let root = std::fs::read_to_string(s.path("ca/root.crt")).unwrap();
    let roots = curl_as(&gw, None, "/roots", &[]);
    assert_eq!((roots.status, roots.body.as_str()), (200, root.as_str()));
    let json = curl_as(&gw, None, "/roots?format=json", &[]);
    assert_eq!(json.status, 200, "{json:?}");
    let json: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(json["crts"][0].as_str(), Some(root.as_str()));
    let bad = curl_as(&gw, None, "/roots?format=der", &[]);
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.body.contains("the format must be pem or json"), "{bad:?}");

    // The leaf names its CRL by URL; the service answers at that URL's path.
    let cdp =
        text(&s.openssl(&["x509", "-in", "api.crt", "-noout", "-ext", "crlDistributionPoints"]));
    assert!(cdp.contains("URI:http://localhost/crl/intermediate.crl"), "{cdp}");
    assert_eq!(download(&s, &gw, "/crl/intermediate.crl", "intermediate.crl"), 200);
    let crl = crl_text(&s, "intermediate.crl", "ca/intermediate.crt");
    assert!(crl.contains(&serial(&s, "api.crt")), "{crl}");
    assert!(crl.contains("Next Update"), "{crl}");

    // A revocation made while the service runs is on the next CRL, with a higher number.
    let number = |crl: &str| {
        let line = crl.lines().skip_while(|l| !l.contains("X509v3 CRL Number")).nth(1).unwrap();
        line.trim().parse::<u64>().unwrap()
    };
    s.ok(&["cert", "issue", "web", "--san", "web.example.com"]);
    s.ok(&["cert", "revoke", "web"]);
    assert_eq!(download(&s, &gw, "/crl/intermediate.crl", "intermediate2.crl"), 200);
    let crl2 = crl_text(&s, "intermediate2.crl", "ca/intermediate.crt");
    assert!(crl2.contains(&serial(&s, "web.crt")), "{crl2}");
    assert!(crl2.contains(&serial(&s, "api.crt")), "{crl2}");
    assert!(number(&crl2) > number(&crl), "{crl}\n{crl2}");
    // Unchanged, it is served again as it is.
    download(&s, &gw, "/crl/intermediate.crl", "intermediate3.crl");
    assert_eq!(s.read("intermediate3.crl"), s.read("intermediate2.crl"));

    // The root's key stays offline: its CRL exists once `certgate crl` made it.
    let missing = curl_as(&gw, None, "/crl/root.crl", &[]);
    assert_eq!(missing.status, 404, "{missing:?}");
    assert!(missing.body.contains("certgate crl --issuer root"), "{missing:?}");
    s.ok(&["crl", "--issuer", "root"]);
    assert_eq!(download(&s, &gw, "/crl/root.crl", "root.crl"), 200);
    assert_eq!(s.read("root.crl"), s.read("ca/root.crl"));
    crl_text(&s, "root.crl", "ca/root.crt");

    let unknown = curl_as(&gw, None, "/crl/leaf.crl", &[]);
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let unknown: serde_json::Value = serde_json::from_str(&unknown.body).unwrap();
    assert_eq!(unknown["status"], 404);
    assert!(unknown["message"].as_str().unwrap().contains("no CRL issuer named \"leaf\""));
    let post = curl_as(&gw, None, "/health", &["-X", "POST", "-i"]);
    assert_eq!(post.status, 405, "{post:?}");
    assert!(post.body.to_ascii_lowercase().contains("allow: get, head"), "{post:?}");
    assert_eq!(curl_as(&gw, None, "/nothing", &[]).status, 404);
}

/// The service's certificate: issued by its CA for localhost and 127.0.0.1 by default,
/// dual-purpose, key 0600; kept across restarts; issued again (new key) for other names.
#[test]
fn ca_serve_issues_itself_a_dual_purpose_certificate_for_its_names() {
    let s = Scratch::with_ca(&[]);
    let first = ca_serve(&s, &[]);
    assert_eq!(mode(&s.path("ca/serve.key")), 0o600);
    let ext = text(&s.openssl(&[
        "x509",
        "-in",
        "ca/serve.crt",
        "-noout",
        "-ext",
        "subjectAltName,extendedKeyUsage",
    ]));
    assert!(ext.contains("DNS:localhost") && ext.contains("IP Address:127.0.0.1"), "{ext}");
    assert!(ext.contains("TLS Web Server Authentication"), "{ext}");
    assert!(ext.contains("TLS Web Client Authentication"), "{ext}");
    let verify = s.openssl(&[
        "verify",
        "-CAfile",
        "ca/root.crt",
        "-untrusted",
        "ca/serve.crt",
        "-purpose",
        "sslserver",
        "ca/serve.crt",
    ]);
    assert!(verify.status.success(), "{}", text(&verify));
    // Reached by IP address, too.
    let root = s.path("root.crt").display().to_string();
    let by_ip = curl(&["--cacert", &root, &format!("https://127.0.0.1:{}/health", first.port)]);
    assert_eq!(by_ip.status, 200, "{by_ip:?}");
    let listed = s.ok(&["cert", "list"]);
    assert!(listed.contains("ca-serve"), "{listed}");
    drop(first);

    let (crt, key) = (s.read("ca/serve.crt"), s.read("ca/serve.key"));
    let again = ca_serve(&s, &[]);
    assert_eq!((s.read("ca/serve.crt"), s.read("ca/serve.key")), (crt.clone(), key.clone()));
    drop(again);

    let renamed = ca_serve(&s, &["--name", "ca.test"]);
    assert_ne!(s.read("ca/serve.key"), key);
    let url = format!("https://ca.test:{}/health", renamed.port);
    let resolve = format!("ca.test:{}:127.0.0.1", renamed.port);
    let by_name = curl(&["--cacert", &root, "--resolve", &resolve, &url]);
    assert_eq!(by_name.status, 200, "{by_name:?}");
    let old_name = curl_as(&renamed, None, "/health", &[]);
    assert_ne!(old_name.exit, 0, "localhost is no longer a name of the CA: {old_name:?}");
    assert_eq!(mode(&s.path("ca/serve.key")), 0o600);

    let err = s.fails(&["ca", "serve", "--listen", "127.0.0.1:0", "--name", "spiffe://x/y"]);
    assert!(err.contains("--name spiffe://x/y"), "{err}");
}
