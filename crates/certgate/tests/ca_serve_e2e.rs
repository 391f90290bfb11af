//! The online CA (`certgate ca serve`) as curl and OpenSSL see it: its own dual-purpose
//! certificate for the names it is reached at, `/health`, `/roots`, and each CA's DER CRL at
//! the URL its certificates' CRL distribution points name, the intermediate's kept current
//! online and the root's served from the file made offline.

// A test that cannot set itself up should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ca_support;
mod gateway_support;
mod pki_support;

use ca_support::{ca_serve, ca_serve_with_env, cert_request, public_key, serial};
use gateway_support::{Curl, Gateway, curl, curl_as};
use pki_support::{Scratch, help_examples, mode, text};
use std::process::Output;

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

/// `openssl req`: a new P-256 key `NAME.key` and CSR `NAME.csr` with `subj` and `ext`.
fn openssl_csr(s: &Scratch, name: &str, subj: &str, ext: &str) {
    let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
    let out = s.openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        subj,
        "-addext",
        ext,
    ]);
    assert!(out.status.success(), "{}", text(&out));
}

/// POSTs `{"csr": <NAME.csr>, "ott": token, extra...}` to /sign (the body kept in
/// `NAME.csr.sign.json`).
fn post_sign(s: &Scratch, gw: &Gateway, csr: &str, token: &str, extra: &[(&str, &str)]) -> Curl {
    let mut body = serde_json::json!({
        "csr": String::from_utf8(s.read(csr)).unwrap(),
        "ott": token,
    });
    for (k, v) in extra {
        body[*k] = serde_json::Value::String(v.to_string());
    }
    // One body file per CSR, so that requests sent at once do not share one.
    let file = s.path(&format!("{csr}.sign.json"));
    std::fs::write(&file, body.to_string()).unwrap();
    let data = format!("@{}", file.display());
    curl_as(gw, None, "/sign", &["-H", "Content-Type: application/json", "--data-binary", &data])
}

/// A token made by Python's cryptography with `key` (a PEM file, or "new" for a stranger's
/// key) and these claims.
fn python_token(key: &str, claims: &serde_json::Value) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/ott.py");
    let out = std::process::Command::new("python3")
        .args([script, key, &claims.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn message(c: &Curl) -> String {
    let v: serde_json::Value = serde_json::from_str(&c.body).unwrap_or_default();
    v["message"].as_str().unwrap_or_default().to_string()
}

/// `POST /sign`: a CSR made by openssl with a token from `certgate ca token` gets a
/// dual-purpose certificate that openssl verifies to the root, once: a replay is 401 "token
/// already used"; names outside the token are 403 (and use no token); a token that expired,
/// is for another CA, or is signed by a key that is no provisioner's is 401 with its
/// reason; a lifetime outside the profile is 400; a token made by another JOSE signer
/// (Python's cryptography) with the provisioner key works, within its bounds.
#[test]
fn sign_with_a_one_time_token_issues_once_and_only_what_the_token_allows() {
    let s = Scratch::with_ca(&[]);
    assert_eq!(mode(&s.path("ca/provisioner.key")), 0o600);
    let profile = String::from_utf8(s.read("ca/provisioners.toml")).unwrap();
    assert!(profile.contains("renew_after_expiry = false"), "{profile}");
    let gw = ca_serve(&s, &[]);
    openssl_csr(&s, "svc", "/CN=svc", "subjectAltName=DNS:svc.example.com");
    let token = s.ok(&["ca", "token", "svc", "--san", "svc.example.com", "--ttl", "5m"]);
    let token = token.trim();

    let signed = post_sign(&s, &gw, "svc.csr", token, &[]);
    assert_eq!(signed.status, 201, "{signed:?}");
    let body: serde_json::Value = serde_json::from_str(&signed.body).unwrap();
    std::fs::write(s.path("svc.crt"), body["crt"].as_str().unwrap()).unwrap();
    std::fs::write(s.path("svc-ca.crt"), body["ca"].as_str().unwrap()).unwrap();
    assert_eq!(body["certChain"][0], body["crt"]);
    assert_eq!(body["certChain"][1], body["ca"]);
    for purpose in ["sslserver", "sslclient"] {
        let verify = s.openssl(&[
            "verify",
            "-CAfile",
            "ca/root.crt",
            "-untrusted",
            "svc-ca.crt",
            "-purpose",
            purpose,
            "svc.crt",
        ]);
        assert!(verify.status.success(), "{purpose}: {}", text(&verify));
    }
    let issued = text(&s.openssl(&[
        "x509",
        "-in",
        "svc.crt",
        "-noout",
        "-subject",
        "-ext",
        "subjectAltName",
    ]));
    assert!(issued.replace(" = ", "=").contains("CN=svc"), "{issued}");
    assert!(issued.contains("DNS:svc.example.com"), "{issued}");
    let listed = s.ok(&["cert", "list"]);
    assert!(listed.contains("svc"), "{listed}");

    let replay = post_sign(&s, &gw, "svc.csr", token, &[]);
    assert_eq!((replay.status, message(&replay).as_str()), (401, "token already used"));

    openssl_csr(&s, "evil", "/CN=evil", "subjectAltName=DNS:evil.example.com");
    let other = s.ok(&["ca", "token", "svc", "--san", "svc.example.com"]);
    let refused = post_sign(&s, &gw, "evil.csr", other.trim(), &[]);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(message(&refused).contains("the CSR's CN \"evil\" is not in the token"), "{refused:?}");
    openssl_csr(&s, "sneaky", "/CN=svc", "subjectAltName=DNS:svc.example.com,DNS:evil.example.com");
    let refused = post_sign(&s, &gw, "sneaky.csr", other.trim(), &[]);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(message(&refused).contains("DNS:evil.example.com"), "{refused:?}");
    let too_long =
        post_sign(&s, &gw, "svc.csr", other.trim(), &[("notAfter", "2999-01-01T00:00:00Z")]);
    assert_eq!(too_long.status, 400, "{too_long:?}");
    assert!(
        message(&too_long).contains("outside what provisioner \"default\" allows"),
        "{too_long:?}"
    );
    // Refused requests used no token.
    assert_eq!(post_sign(&s, &gw, "svc.csr", other.trim(), &[]).status, 201);

    let now = unix_now();
    let fingerprint = {
        let out = s.openssl(&["x509", "-in", "ca/root.crt", "-noout", "-fingerprint", "-sha256"]);
        text(&out).trim().rsplit('=').next().unwrap().replace(':', "").to_ascii_lowercase()
    };
    let claims = |aud: &str, exp: u64, jti: &str| {
        serde_json::json!({
            "iss": "default", "aud": aud, "sub": "svc", "sans": ["svc.example.com"],
            "iat": now - 600, "nbf": now - 600, "exp": exp, "jti": jti,
        })
    };
    let key = s.path("ca/provisioner.key").display().to_string();
    for (token, reason) in [
        (python_token(&key, &claims(&fingerprint, now - 120, "expired")), "the token expired"),
        (python_token("new", &claims(&fingerprint, now + 300, "stranger")), "does not verify"),
        (
            python_token(&key, &claims("https://other.example/sign", now + 300, "aud")),
            "another audience",
        ),
    ] {
        let refused = post_sign(&s, &gw, "svc.csr", &token, &[]);
        assert_eq!(refused.status, 401, "{reason}: {refused:?}");
        assert!(message(&refused).contains(reason), "{reason}: {refused:?}");
    }
    let url_aud = format!("https://localhost:{}/sign", gw.port);
    let interop = python_token(&key, &claims(&url_aud, now + 300, "python"));
    let not_after = time::OffsetDateTime::now_utc() + time::Duration::minutes(10);
    let not_after = not_after.format(&time::format_description::well_known::Rfc3339).unwrap();
    let signed = post_sign(&s, &gw, "svc.csr", &interop, &[("notAfter", &not_after)]);
    assert_eq!(signed.status, 201, "{signed:?}");
    let body: serde_json::Value = serde_json::from_str(&signed.body).unwrap();
    std::fs::write(s.path("short.crt"), body["crt"].as_str().unwrap()).unwrap();
    let ten_minutes = s.openssl(&["x509", "-in", "short.crt", "-noout", "-checkend", "660"]);
    assert!(!ten_minutes.status.success(), "it ends within 11 minutes");
    let nine = s.openssl(&["x509", "-in", "short.crt", "-noout", "-checkend", "480"]);
    assert!(nine.status.success(), "it lasts more than 8 minutes: {}", text(&nine));
}

/// curl `POST /renew` presenting `NAME.crt`/`NAME.key` (none: `None`).
fn post_renew(gw: &Gateway, client: Option<&str>) -> Curl {
    curl_as(gw, client, "/renew", &["-X", "POST"])
}

/// `openssl x509 -noout ARGS` of a certificate file, as text.
fn x509(s: &Scratch, cert: &str, args: &[&str]) -> String {
    let mut all = vec!["x509", "-in", cert, "-noout"];
    all.extend_from_slice(args);
    text(&s.openssl(&all))
}

/// `POST /renew` over mTLS: the certificate on the connection is renewed with the same key,
/// subject and SANs and as long a lifetime, and the old one is superseded; renewing the old
/// one again, a revoked one, an expired one (renewal after expiry is off) or none at all is
/// refused with the reason.
#[test]
fn renew_over_mtls_renews_only_the_current_valid_certificate_presented() {
    let s = Scratch::with_ca(&[]);
    s.ok(&[
        "cert",
        "issue",
        "svc",
        "--san",
        "svc.example.com",
        "--profile",
        "dual",
        "--minutes",
        "30",
    ]);
    s.ok(&[
        "cert",
        "issue",
        "short",
        "--san",
        "short.example.com",
        "--profile",
        "dual",
        "--minutes",
        "1",
    ]);
    let expires = std::time::Instant::now() + std::time::Duration::from_secs(62);
    let gw = ca_serve(&s, &[]);
    // The curl helpers read NAME.crt/NAME.key from the scratch directory.
    let renewed = post_renew(&gw, Some("svc"));
    assert_eq!(renewed.status, 201, "{renewed:?}");
    let body: serde_json::Value = serde_json::from_str(&renewed.body).unwrap();
    std::fs::write(
        s.path("new.crt"),
        format!("{}{}", body["crt"].as_str().unwrap(), body["ca"].as_str().unwrap()),
    )
    .unwrap();
    std::fs::copy(s.path("svc.key"), s.path("new.key")).unwrap();
    for what in [&["-subject"][..], &["-ext", "subjectAltName,extendedKeyUsage"], &["-pubkey"]] {
        assert_eq!(x509(&s, "new.crt", what), x509(&s, "svc.crt", what), "{what:?}");
    }
    assert_ne!(x509(&s, "new.crt", &["-serial"]), x509(&s, "svc.crt", &["-serial"]));
    let lifetime = |cert: &str| {
        let out = s.openssl(&["x509", "-in", cert, "-noout", "-checkend", "1680"]);
        let still_valid_in_29m = out.status.success();
        let out = s.openssl(&["x509", "-in", cert, "-noout", "-checkend", "1860"]);
        (still_valid_in_29m, out.status.success())
    };
    assert_eq!(lifetime("new.crt"), (true, false), "30 minutes from now");
    let verify = s.openssl(&[
        "verify",
        "-CAfile",
        "ca/root.crt",
        "-untrusted",
        "new.crt",
        "-purpose",
        "sslclient",
        "new.crt",
    ]);
    assert!(verify.status.success(), "{}", text(&verify));
    let superseded = s.ok(&["cert", "list", "--status", "superseded"]);
    let old_serial =
        x509(&s, "svc.crt", &["-serial"]).trim().trim_start_matches("serial=").to_ascii_lowercase();
    assert!(superseded.to_ascii_lowercase().contains(&old_serial), "{superseded}");

    // Only the latest certificate of a lineage renews.
    let again = post_renew(&gw, Some("svc"));
    assert_eq!(again.status, 401, "{again:?}");
    assert!(message(&again).contains("was already renewed"), "{again:?}");
    // The renewed one renews; once revoked, it does not.
    let new_serial =
        x509(&s, "new.crt", &["-serial"]).trim().trim_start_matches("serial=").to_string();
    s.ok(&["cert", "revoke", &new_serial]);
    let revoked = post_renew(&gw, Some("new"));
    assert_eq!(revoked.status, 401, "{revoked:?}");
    assert!(message(&revoked).contains("is revoked"), "{revoked:?}");
    let none = post_renew(&gw, None);
    assert_eq!(none.status, 400, "{none:?}");
    assert!(message(&none).contains("missing client certificate"), "{none:?}");
    let get = curl_as(&gw, Some("short"), "/renew", &[]);
    assert_eq!(get.status, 405, "{get:?}");

    // An expired certificate: refused, since renewal after expiry is off by default.
    std::thread::sleep(expires.saturating_duration_since(std::time::Instant::now()));
    let expired = post_renew(&gw, Some("short"));
    assert_eq!(expired.status, 401, "{expired:?}");
    assert!(message(&expired).contains("expired on"), "{expired:?}");
}

/// curl `POST /rekey` presenting `NAME.crt`/`NAME.key` (none: `None`) with `{"csr": <csr>}`,
/// where `csr` is a file in the scratch directory, or the literal text after `text:`.
fn post_rekey(s: &Scratch, gw: &Gateway, client: Option<&str>, csr: &str) -> Curl {
    let csr = match csr.strip_prefix("text:") {
        Some(literal) => literal.to_string(),
        None => String::from_utf8(s.read(csr)).unwrap(),
    };
    std::fs::write(s.path("rekey.json"), serde_json::json!({ "csr": csr }).to_string()).unwrap();
    let data = format!("@{}", s.path("rekey.json").display());
    curl_as(gw, client, "/rekey", &["-H", "Content-Type: application/json", "--data-binary", &data])
}

/// `POST /rekey` over mTLS: the certificate presented is renewed for the key of an openssl
/// CSR, keeping its subject, SANs, usages and lifetime (the CSR's names are ignored) and
/// superseding the old one; a CSR for the old key, with a broken signature or that is not PEM
/// is 400 with the reason; a superseded or revoked certificate, 401; no certificate, 400.
#[test]
fn rekey_over_mtls_certifies_the_new_key_with_the_old_identity() {
    let s = Scratch::with_ca(&[]);
    s.ok(&[
        "cert",
        "issue",
        "svc",
        "--san",
        "svc.example.com",
        "--san",
        "10.0.0.7",
        "--profile",
        "dual",
        "--minutes",
        "30",
    ]);
    let gw = ca_serve(&s, &[]);
    // The CSR asks for other names: a rekey keeps the certificate's.
    openssl_csr(&s, "next", "/CN=other", "subjectAltName=DNS:other.example.com");

    // Refusals of the CSR (400), each leaving the certificate renewable.
    let same =
        s.openssl(&["req", "-new", "-key", "svc.key", "-out", "same.csr", "-subj", "/CN=svc"]);
    assert!(same.status.success(), "{}", text(&same));
    let refused = post_rekey(&s, &gw, Some("svc"), "same.csr");
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(message(&refused).contains("a rekey needs a new key"), "{refused:?}");
    let der = s.openssl(&["req", "-in", "next.csr", "-outform", "DER", "-out", "next.der"]);
    assert!(der.status.success(), "{}", text(&der));
    let mut tampered = s.read("next.der");
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    std::fs::write(s.path("tampered.der"), tampered).unwrap();
    let pem = s.openssl(&[
        "req",
        "-inform",
        "DER",
        "-in",
        "tampered.der",
        "-outform",
        "PEM",
        "-out",
        "tampered.csr",
    ]);
    assert!(pem.status.success(), "{}", text(&pem));
    let refused = post_rekey(&s, &gw, Some("svc"), "tampered.csr");
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(message(&refused).contains("signature"), "{refused:?}");
    let refused = post_rekey(&s, &gw, Some("svc"), "text:MIIB not PEM");
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(message(&refused).contains("not a PEM certificate request"), "{refused:?}");
    let none = post_rekey(&s, &gw, None, "next.csr");
    assert_eq!(none.status, 400, "{none:?}");
    assert!(message(&none).contains("missing client certificate"), "{none:?}");

    let rekeyed = post_rekey(&s, &gw, Some("svc"), "next.csr");
    assert_eq!(rekeyed.status, 201, "{rekeyed:?}");
    let body: serde_json::Value = serde_json::from_str(&rekeyed.body).unwrap();
    assert_eq!(body["certChain"][0], body["crt"]);
    std::fs::write(
        s.path("next.crt"),
        format!("{}{}", body["crt"].as_str().unwrap(), body["ca"].as_str().unwrap()),
    )
    .unwrap();
    let csr_key = text(&s.openssl(&["req", "-in", "next.csr", "-noout", "-pubkey"]));
    assert_eq!(x509(&s, "next.crt", &["-pubkey"]), csr_key, "the CSR's key");
    assert_ne!(x509(&s, "next.crt", &["-pubkey"]), x509(&s, "svc.crt", &["-pubkey"]));
    for what in [&["-subject"][..], &["-ext", "subjectAltName,extendedKeyUsage,keyUsage"]] {
        assert_eq!(x509(&s, "next.crt", what), x509(&s, "svc.crt", what), "{what:?}");
    }
    let lives = |secs: &str| s.openssl(&["x509", "-in", "next.crt", "-noout", "-checkend", secs]);
    assert!(lives("1680").status.success() && !lives("1860").status.success(), "30 minutes");
    let verify = pki_support::openssl_verify(&s, "next.crt", "sslclient");
    assert!(verify.status.success(), "{}", text(&verify));
    let old_serial =
        x509(&s, "svc.crt", &["-serial"]).trim().trim_start_matches("serial=").to_ascii_lowercase();
    let superseded = s.ok(&["cert", "list", "--status", "superseded"]);
    assert!(superseded.to_ascii_lowercase().contains(&old_serial), "{superseded}");

    // The old certificate is superseded: it neither renews nor rekeys again.
    let again = post_renew(&gw, Some("svc"));
    assert_eq!(again.status, 401, "{again:?}");
    assert!(message(&again).contains("was already renewed"), "{again:?}");
    openssl_csr(&s, "third", "/CN=svc", "subjectAltName=DNS:svc.example.com");
    let again = post_rekey(&s, &gw, Some("svc"), "third.csr");
    assert_eq!(again.status, 401, "{again:?}");
    // The new pair works over mTLS; once revoked, it is refused.
    let new_serial =
        x509(&s, "next.crt", &["-serial"]).trim().trim_start_matches("serial=").to_string();
    s.ok(&["cert", "revoke", &new_serial]);
    let revoked = post_rekey(&s, &gw, Some("next"), "third.csr");
    assert_eq!(revoked.status, 401, "{revoked:?}");
    assert!(message(&revoked).contains("is revoked"), "{revoked:?}");
    let get = curl_as(&gw, Some("next"), "/rekey", &[]);
    assert_eq!(get.status, 405, "{get:?}");
}

/// `openssl verify -crl_download -crl_check` of `cert` (its chain from `ca/`): openssl fetches
/// the CRL from the leaf's http:// distribution point itself.
fn verify_downloading_crl(s: &Scratch, cert: &str) -> Output {
    std::process::Command::new("openssl")
        .current_dir(&s.dir)
        .env("no_proxy", "127.0.0.1")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .args(["verify", "-crl_download", "-crl_check", "-CAfile", "ca/root.crt"])
        .args(["-untrusted", "ca/intermediate.crt", cert])
        .output()
        .unwrap()
}

/// `ca serve --crl-listen`: the http:// CRL distribution point that `ca init --crl-url` wrote
/// into the certificates is served over plain HTTP, so `openssl verify -crl_download` finds a
/// revoked leaf revoked (also one revoked while the service runs) and a valid one OK; the
/// CRL is `application/pkix-crl`, cacheable up to its nextUpdate, the same bytes as over
/// HTTPS, HEAD works; only CRLs and /roots are served there.
#[test]
fn crl_listen_serves_the_distribution_points_over_plain_http() {
    let port = gateway_support::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let s = Scratch::with_ca(&["--crl-url", &base]);
    for name in ["good", "bad", "late"] {
        s.ok(&["cert", "issue", name, "--san", &format!("{name}.example.com")]);
    }
    s.ok(&["cert", "revoke", "bad"]);
    let addr = format!("127.0.0.1:{port}");
    let gw = ca_serve(&s, &["--crl-listen", &addr]);
    let cdp = x509(&s, "bad.crt", &["-ext", "crlDistributionPoints"]);
    assert!(cdp.contains(&format!("URI:{base}/intermediate.crl")), "{cdp}");

    let revoked = verify_downloading_crl(&s, "bad.crt");
    assert!(!revoked.status.success(), "{}", text(&revoked));
    assert!(text(&revoked).contains("certificate revoked"), "{}", text(&revoked));
    for name in ["good.crt", "late.crt"] {
        let ok = verify_downloading_crl(&s, name);
        assert!(ok.status.success() && text(&ok).contains(": OK"), "{name}: {}", text(&ok));
    }
    // Revoked while the service runs: the next CRL it serves lists it.
    s.ok(&["cert", "revoke", "late"]);
    let revoked = verify_downloading_crl(&s, "late.crt");
    assert!(text(&revoked).contains("certificate revoked"), "{}", text(&revoked));

    // HEAD: the headers only; the CRL cacheable until its nextUpdate (24 h, renewed 8 h before).
    let crl_url = format!("{base}/intermediate.crl");
    let head = curl(&["-I", &crl_url]);
    assert_eq!(head.status, 200, "{head:?}");
    let headers = head.body.to_ascii_lowercase();
    assert!(headers.contains("content-type: application/pkix-crl"), "{headers}");
    let max_age: i64 = headers
        .split("max-age=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no max-age in {headers}"));
    assert!((8 * 3600..=24 * 3600).contains(&max_age), "{headers}");
    let plain = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--noproxy", "*", &crl_url])
        .output()
        .unwrap();
    assert!(plain.status.success(), "{}", text(&plain));
    assert_eq!(download(&s, &gw, "/crl/intermediate.crl", "over-https.crl"), 200);
    assert_eq!(plain.stdout, s.read("over-https.crl"), "the same CRL over HTTP and HTTPS");
    let also = curl(&["--noproxy", "*", &format!("{base}/crl/intermediate.crl")]);
    assert_eq!(also.status, 200, "{also:?}");
    let roots = curl(&["--noproxy", "*", &format!("{base}/roots")]);
    assert_eq!(roots.status, 200, "{roots:?}");
    assert_eq!(roots.body.as_bytes(), s.read("ca/root.crt"));

    // Nothing else over plain HTTP: not the health check, not issuance.
    for (path, method) in [("/health", "GET"), ("/sign", "POST"), ("/renew", "POST"), ("/x", "GET")]
    {
        let refused = curl(&["--noproxy", "*", "-X", method, &format!("{base}{path}")]);
        assert_eq!(refused.status, 404, "{path}: {refused:?}");
        assert!(message(&refused).contains("served over plain HTTP"), "{path}: {refused:?}");
    }
    let unknown = curl(&["--noproxy", "*", &format!("{base}/leaf.crl")]);
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert!(message(&unknown).contains("no CRL issuer named"), "{unknown:?}");
}

/// Rows of `query` on the CA's inventory (`ca/inventory.db`), read with Python's sqlite3
/// while the service runs; columns joined by `|`.
fn inventory_rows(s: &Scratch, query: &str) -> Vec<String> {
    let script = "import sqlite3, sys\n\
        db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n\
        for row in db.execute(sys.argv[2]):\n    print('|'.join(map(str, row)))";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(s.path("ca/inventory.db"))
        .arg(query)
        .output()
        .unwrap();
    assert!(out.status.success(), "{query}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

/// The serial of a PEM certificate as the inventory stores it (lower-case hex).
fn pem_serial(s: &Scratch, pem: &str, file: &str) -> String {
    std::fs::write(s.path(file), pem).unwrap();
    serial(s, file).to_ascii_lowercase()
}

/// Sixteen `POST /renew` of one certificate at once: exactly one is renewed (201), every
/// other is refused as already renewed (401); the inventory holds one valid successor and
/// the old certificate superseded by it, and nothing else for that name.
#[test]
fn concurrent_renewals_of_one_certificate_give_one_successor() {
    let s = Scratch::with_ca(&[]);
    let sans = ["--san", "svc.example.com", "--profile", "dual", "--minutes", "30"];
    s.ok(&[&["cert", "issue", "svc"][..], &sans].concat());
    let old = serial(&s, "svc.crt").to_ascii_lowercase();
    let gw = ca_serve(&s, &[]);
    let answers: Vec<Curl> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..16).map(|_| scope.spawn(|| post_renew(&gw, Some("svc")))).collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let (won, lost): (Vec<&Curl>, Vec<&Curl>) = answers.iter().partition(|c| c.status == 201);
    assert_eq!(won.len(), 1, "{answers:?}");
    for refused in &lost {
        assert_eq!(refused.status, 401, "{refused:?}");
        assert!(message(refused).contains("was already renewed"), "{refused:?}");
    }
    let body: serde_json::Value = serde_json::from_str(&won[0].body).unwrap();
    let new = pem_serial(&s, body["crt"].as_str().unwrap(), "won.crt");
    let mut rows = inventory_rows(
        &s,
        "SELECT serial, status, superseded_by FROM certificates WHERE name = 'svc' ORDER BY status",
    );
    rows.sort();
    let mut want = vec![format!("{old}|superseded|{new}"), format!("{new}|valid|None")];
    want.sort();
    assert_eq!(rows, want);
}

/// Twenty-four `POST /sign` with distinct tokens at once: 24 certificates (201) with 24
/// distinct serials, and 24 rows in the inventory, one per name.
#[test]
fn concurrent_signs_with_distinct_tokens_issue_distinct_serials() {
    let s = Scratch::with_ca(&[]);
    let gw = ca_serve(&s, &[]);
    let requests: Vec<(String, String)> = (0..24)
        .map(|i| {
            let name = format!("svc{i}");
            let san = format!("{name}.example.com");
            openssl_csr(&s, &name, &format!("/CN={name}"), &format!("subjectAltName=DNS:{san}"));
            let token = s.ok(&["ca", "token", &name, "--san", &san]).trim().to_string();
            (format!("{name}.csr"), token)
        })
        .collect();
    let answers: Vec<Curl> = std::thread::scope(|scope| {
        let runs: Vec<_> = requests
            .iter()
            .map(|(csr, token)| scope.spawn(|| post_sign(&s, &gw, csr, token, &[])))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let mut serials = Vec::new();
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer.status, 201, "{answer:?}");
        let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        serials.push(pem_serial(&s, body["crt"].as_str().unwrap(), &format!("signed{i}.crt")));
    }
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 24, "distinct serials");
    let mut rows = inventory_rows(
        &s,
        "SELECT serial FROM certificates WHERE name LIKE 'svc%' AND status = 'valid'",
    );
    rows.sort();
    assert_eq!(rows, serials, "one row per certificate handed out");
}

/// CRLs fetched by three clients at once while certificates are revoked one after another:
/// each client sees CRL numbers that never decrease, a CRL fetched after another was
/// received never has a lower number, and every CRL lists each revocation that had
/// committed (its `cert revoke` had exited) before the request was sent.
#[test]
fn concurrent_crl_fetches_follow_revocations_in_order() {
    use std::sync::Mutex;
    use std::time::Instant;
    let s = Scratch::with_ca(&[]);
    let names: Vec<String> = (0..6).map(|i| format!("r{i}")).collect();
    for name in &names {
        s.ok(&["cert", "issue", name, "--san", &format!("{name}.example.com")]);
    }
    let serials: Vec<String> = names.iter().map(|n| serial(&s, &format!("{n}.crt"))).collect();
    let gw = ca_serve(&s, &[]);
    let committed: Mutex<Vec<(Instant, String)>> = Mutex::new(Vec::new());
    struct Fetch {
        client: usize,
        sent: Instant,
        received: Instant,
        expected: Vec<String>,
        file: String,
    }
    let fetches: Vec<Fetch> = std::thread::scope(|scope| {
        scope.spawn(|| {
            for (name, serial) in names.iter().zip(&serials) {
                s.ok(&["cert", "revoke", name]);
                committed.lock().unwrap().push((Instant::now(), serial.clone()));
                std::thread::sleep(std::time::Duration::from_millis(150));
            }
        });
        let clients: Vec<_> = (0..3)
            .map(|client| {
                let (s, gw, committed) = (&s, &gw, &committed);
                scope.spawn(move || {
                    (0..10)
                        .map(|i| {
                            let sent = Instant::now();
                            let expected: Vec<String> = committed
                                .lock()
                                .unwrap()
                                .iter()
                                .filter(|(at, _)| *at < sent)
                                .map(|(_, serial)| serial.clone())
                                .collect();
                            let file = format!("c{client}-{i}.crl");
                            assert_eq!(download(s, gw, "/crl/intermediate.crl", &file), 200);
                            let received = Instant::now();
                            std::thread::sleep(std::time::Duration::from_millis(60));
                            Fetch { client, sent, received, expected, file }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients.into_iter().flat_map(|c| c.join().unwrap()).collect()
    });
    let number = |file: &str| -> u64 {
        let out = s.openssl(&["crl", "-inform", "DER", "-in", file, "-noout", "-crlnumber"]);
        let line = text(&out);
        let hex = line.trim().trim_start_matches("crlNumber=").trim_start_matches("0x");
        u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("{file}: {line}"))
    };
    let numbers: Vec<u64> = fetches.iter().map(|f| number(&f.file)).collect();
    for (f, n) in fetches.iter().zip(&numbers) {
        let listed = crl_text(&s, &f.file, "ca/intermediate.crt");
        for serial in &f.expected {
            assert!(listed.contains(serial.as_str()), "{}: {serial} missing: {listed}", f.file);
        }
        for (g, m) in fetches.iter().zip(&numbers) {
            if g.sent > f.received || (g.client == f.client && g.sent > f.sent) {
                assert!(m >= n, "{} (#{m}) fetched after {} (#{n})", g.file, f.file);
            }
        }
    }
    let last = fetches.iter().zip(&numbers).max_by_key(|(f, _)| f.sent).unwrap();
    assert!(numbers.iter().min() < Some(last.1), "new CRLs were signed: {numbers:?}");
}

/// Starts `ca serve` paused at `point` (the debug-build fault point, `before-commit` or
/// `after-commit`), sends `POST /sign` for a token for `svc`, waits until the CA thread is
/// paused there, kills the process with SIGKILL and returns what curl got and the token.
fn sign_killed_at(s: &Scratch, point: &str) -> (Curl, String) {
    let marker = s.path("paused");
    let marker_env = marker.display().to_string();
    let env = [("CERTGATE_TEST_PAUSE", point), ("CERTGATE_TEST_PAUSE_MARKER", &marker_env)];
    let gw = ca_serve_with_env(s, &[], &env);
    openssl_csr(s, "svc", "/CN=svc", "subjectAltName=DNS:svc.example.com");
    let token = s.ok(&["ca", "token", "svc", "--san", "svc.example.com"]).trim().to_string();
    let answer = std::thread::scope(|scope| {
        let request = scope.spawn(|| post_sign(s, &gw, "svc.csr", &token, &[]));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !marker.exists() {
            assert!(std::time::Instant::now() < deadline, "never paused: {}", gw.stderr());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), point);
        gw.signal("KILL");
        request.join().unwrap()
    });
    assert_ne!(answer.exit, 0, "no answer from a killed CA: {answer:?}");
    assert!(!answer.body.contains("BEGIN CERTIFICATE"), "{answer:?}");
    (answer, token)
}

/// `PRAGMA integrity_check` of the inventory is `ok`.
fn assert_inventory_intact(s: &Scratch) {
    assert_eq!(inventory_rows(s, "PRAGMA integrity_check"), ["ok"]);
}

/// Killed (SIGKILL) inside the issuance transaction, before it commits: after a restart the
/// inventory is intact and holds no row for the request, and the token was not used (its
/// `jti` is recorded in that same transaction), so the client can retry with it.
#[test]
fn kill_9_before_commit_leaves_no_row_and_the_token_unused() {
    let s = Scratch::with_ca(&[]);
    let (_, token) = sign_killed_at(&s, "before-commit");
    let gw = ca_serve(&s, &[]);
    assert_inventory_intact(&s);
    assert!(inventory_rows(&s, "SELECT serial FROM certificates WHERE name = 'svc'").is_empty());
    assert!(inventory_rows(&s, "SELECT jti FROM used_tokens").is_empty());
    let retried = post_sign(&s, &gw, "svc.csr", &token, &[]);
    assert_eq!(retried.status, 201, "{retried:?}");
    let rows = inventory_rows(&s, "SELECT status FROM certificates WHERE name = 'svc'");
    assert_eq!(rows, ["valid"]);
}

/// Killed (SIGKILL) after the issuance committed, before the answer was sent: the client got
/// no certificate, but after a restart the row is there and valid, its token is used, and it
/// can be revoked: the CRL the service serves then lists it.
#[test]
fn kill_9_after_commit_leaves_a_revocable_row_and_the_token_used() {
    let s = Scratch::with_ca(&[]);
    let (_, token) = sign_killed_at(&s, "after-commit");
    let gw = ca_serve(&s, &[]);
    assert_inventory_intact(&s);
    let rows = inventory_rows(&s, "SELECT serial, status FROM certificates WHERE name = 'svc'");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (serial, status) = rows[0].split_once('|').unwrap();
    assert_eq!(status, "valid");
    assert_eq!(inventory_rows(&s, "SELECT count(*) FROM used_tokens"), ["1"]);
    let replay = post_sign(&s, &gw, "svc.csr", &token, &[]);
    assert_eq!((replay.status, message(&replay).as_str()), (401, "token already used"));
    s.ok(&["cert", "revoke", serial]);
    assert_eq!(download(&s, &gw, "/crl/intermediate.crl", "after-kill.crl"), 200);
    let crl = crl_text(&s, "after-kill.crl", "ca/intermediate.crt");
    assert!(crl.to_ascii_lowercase().contains(serial), "{serial}: {crl}");
}

/// `"@ca"` exists only under `certgate ca serve`: a gateway configuration that routes to it is
/// refused at load, naming the field and why.
#[test]
fn a_gateway_configuration_cannot_route_to_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    gateway_support::pki_in(tmp.path());
    let config = format!(
        "{}\n[[route]]\nupstream = \"@ca\"\nclient_cert = \"optional\"\n",
        gateway_support::listener("optional", "")
    );
    let (code, out) = gateway_support::serve_check(tmp.path(), &config);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("route[0].upstream"), "{out}");
    assert!(out.contains("served by `certgate ca serve` only"), "{out}");
}

/// `certgate cert request`: a key made locally (0600, never sent), a CSR signed by the online
/// CA with a one-time token, the answer checked (our key, chains to the pinned root, given as
/// a file or as a fingerprint checked against /roots) and written as NAME.crt + NAME.key that
/// openssl verifies; existing files are kept without --force; the CA's refusals (a replayed
/// token) and a CA that is not the pinned one fail naming the URL and the reason.
#[test]
fn cert_request_gets_a_certificate_for_a_local_key_from_the_online_ca() {
    let s = Scratch::with_ca(&[]);
    let gw = ca_serve(&s, &[]);
    let token = s.ok(&["ca", "token", "app", "--san", "app.example.com"]);
    let token = token.trim();
    let got = cert_request(
        &s,
        &gw,
        "app",
        token,
        &["--root", "root.crt", "--san", "app.example.com", "--minutes", "30", "--out-dir", "out"],
    );
    let stdout = text(&got);
    assert!(got.status.success(), "{stdout}");
    assert!(stdout.contains("lifetime   30m"), "{stdout}");
    assert!(stdout.contains("renew      after"), "{stdout}");
    assert_eq!(mode(&s.path("out/app.key")), 0o600);
    assert_eq!(public_key(&s, "out/app.crt", true), public_key(&s, "out/app.key", false));
    let ec = text(&s.openssl(&["pkey", "-in", "out/app.key", "-noout", "-text"]));
    assert!(ec.contains("prime256v1") || ec.contains("P-256"), "{ec}");
    let verify = s.openssl(&[
        "verify",
        "-CAfile",
        "ca/root.crt",
        "-untrusted",
        "out/app.crt",
        "-purpose",
        "sslclient",
        "out/app.crt",
    ]);
    assert!(verify.status.success(), "{}", text(&verify));
    let ext = text(&s.openssl(&[
        "x509",
        "-in",
        "out/app.crt",
        "-noout",
        "-subject",
        "-ext",
        "subjectAltName",
        "-dates",
    ]));
    assert!(ext.replace(" = ", "=").contains("CN=app"), "{ext}");
    assert!(ext.contains("DNS:app.example.com"), "{ext}");
    let lifetime = s.openssl(&["x509", "-in", "out/app.crt", "-noout", "-checkend", "1680"]);
    assert!(lifetime.status.success(), "lives 30 minutes: {ext}");
    let lifetime = s.openssl(&["x509", "-in", "out/app.crt", "-noout", "-checkend", "1860"]);
    assert!(!lifetime.status.success(), "lives 30 minutes: {ext}");

    // Existing files are kept; the token is not spent on a request that cannot be written.
    let (crt, key) = (s.read("out/app.crt"), s.read("out/app.key"));
    let other = s.ok(&["ca", "token", "app", "--san", "app.example.com"]);
    let kept =
        cert_request(&s, &gw, "app", other.trim(), &["--root", "root.crt", "--out-dir", "out"]);
    assert!(!kept.status.success());
    assert!(
        text(&kept).contains("out/app.crt") && text(&kept).contains("--force"),
        "{}",
        text(&kept)
    );
    assert_eq!((s.read("out/app.crt"), s.read("out/app.key")), (crt.clone(), key.clone()));

    // A replayed token: the CA's reason and the URL.
    let args = ["--root", "root.crt", "--out-dir", "out", "--force", "--san", "app.example.com"];
    let replay = cert_request(&s, &gw, "app", token, &args);
    assert!(!replay.status.success());
    let err = text(&replay);
    assert!(err.contains("token already used") && err.contains(&gw.url("/sign")), "{err}");
    assert_eq!((s.read("out/app.crt"), s.read("out/app.key")), (crt.clone(), key.clone()));

    // The root by fingerprint: fetched from /roots and used only when it matches.
    let fp = text(&s.openssl(&["x509", "-in", "ca/root.crt", "-noout", "-fingerprint", "-sha256"]));
    let fp = fp.trim().rsplit('=').next().unwrap().to_string();
    let by_fp = cert_request(
        &s,
        &gw,
        "app",
        other.trim(),
        &["--fingerprint", &fp, "--out-dir", "out", "--force", "--san", "app.example.com"],
    );
    assert!(by_fp.status.success(), "{}", text(&by_fp));
    assert_ne!(s.read("out/app.key"), key, "a new key each time");
    assert_eq!(public_key(&s, "out/app.crt", true), public_key(&s, "out/app.key", false));
    let wrong = "00".repeat(32);
    let third = s.ok(&["ca", "token", "app", "--san", "app.example.com"]);
    let refused = cert_request(&s, &gw, "web", third.trim(), &["--fingerprint", &wrong]);
    assert!(!refused.status.success());
    let err = text(&refused);
    assert!(err.contains(&gw.url("/roots")) && err.contains("refusing to trust it"), "{err}");
    assert!(!s.path("web.key").exists(), "nothing written");

    // Another CA's root: the TLS connection to this CA is refused, naming the URL.
    let stranger = Scratch::with_ca(&[]);
    let root = stranger.path("ca/root.crt").display().to_string();
    let refused = cert_request(&s, &gw, "web", third.trim(), &["--root", &root]);
    assert!(!refused.status.success());
    let err = text(&refused);
    assert!(err.contains(&gw.url("/sign")) && err.contains("invalid peer certificate"), "{err}");
    assert!(!s.path("web.key").exists() && !s.path("web.crt").exists());

    // The examples of `cert request --help` run as printed, with this CA's URL, a token for
    // api and its root's fingerprint.
    let examples = help_examples(&s, &["cert", "request"]);
    assert!(examples.len() >= 2, "{examples:?}");
    for example in examples {
        let token = s.ok(&["ca", "token", "api", "--san", "api.example.com"]);
        let args: Vec<String> = example
            .iter()
            .map(|w| match w.as_str() {
                "$TOKEN" => token.trim().to_string(),
                url if url.starts_with("https://ca.example.com") => gw.url(""),
                fingerprint if fingerprint.contains("...") => fp.clone(),
                w => w.to_string(),
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        s.ok(&args);
    }
    assert_eq!(public_key(&s, "tls/api.crt", true), public_key(&s, "tls/api.key", false));
    assert_eq!(public_key(&s, "api.crt", true), public_key(&s, "api.key", false));
}

/// `certgate cert renew NAME --ca-url URL`: NAME.crt/NAME.key presented over mTLS, the key
/// kept, NAME.crt replaced by a new certificate openssl verifies; `--if-needed` exits 3 (and
/// writes nothing) while more than the threshold remains and 0 after renewing; a certificate
/// the CA refuses (already renewed, revoked) fails with the CA's reason; the offline renew
/// refuses the online CA's pin flags without --ca-url.
#[test]
fn cert_renew_with_ca_url_renews_over_mtls_keeping_the_key() {
    let s = Scratch::with_ca(&[]);
    let gw = ca_serve(&s, &[]);
    let url = gw.url("");
    let token = s.ok(&["ca", "token", "app", "--san", "app.example.com"]);
    let got = cert_request(&s, &gw, "app", token.trim(), &["--root", "root.crt", "--hours", "3"]);
    assert!(got.status.success(), "{}", text(&got));
    let (crt, key) = (s.read("app.crt"), s.read("app.key"));
    let old_serial = serial(&s, "app.crt");
    let renew = |extra: &[&str]| {
        let mut args = vec!["cert", "renew", "app", "--ca-url", &url, "--root", "root.crt"];
        args.extend_from_slice(extra);
        s.run(&args)
    };

    // Not due: three hours remain, the threshold is one hour (a third), or 2h.
    for extra in [&["--if-needed"][..], &["--if-needed", "--expires-in", "2h"]] {
        let not_due = renew(extra);
        assert_eq!(not_due.status.code(), Some(3), "{extra:?}: {}", text(&not_due));
        assert!(text(&not_due).contains("app is not due"), "{}", text(&not_due));
        assert_eq!(s.read("app.crt"), crt, "nothing written");
    }

    // Due (a 100% threshold): renewed over mTLS, the key kept, exit 0.
    std::fs::copy(s.path("app.crt"), s.path("old.crt")).unwrap();
    let renewed = renew(&["--if-needed", "--expires-in", "100%"]);
    assert_eq!(renewed.status.code(), Some(0), "{}", text(&renewed));
    assert!(text(&renewed).contains("renewed app"), "{}", text(&renewed));
    assert_eq!(s.read("app.key"), key, "the key is kept");
    assert_ne!(s.read("app.crt"), crt);
    assert_ne!(serial(&s, "app.crt"), old_serial);
    assert_eq!(public_key(&s, "app.crt", true), public_key(&s, "app.key", false));
    let verify = s.openssl(&[
        "verify",
        "-CAfile",
        "ca/root.crt",
        "-untrusted",
        "app.crt",
        "-purpose",
        "sslclient",
        "app.crt",
    ]);
    assert!(verify.status.success(), "{}", text(&verify));
    let listed = s.ok(&["cert", "list", "--status", "superseded"]);
    assert!(
        listed.contains(&old_serial.to_ascii_lowercase()) || listed.contains(&old_serial),
        "{listed}"
    );

    // The superseded certificate cannot renew again: the CA's reason, nothing written.
    std::fs::create_dir(s.path("old")).unwrap();
    std::fs::copy(s.path("old.crt"), s.path("old/app.crt")).unwrap();
    std::fs::copy(s.path("app.key"), s.path("old/app.key")).unwrap();
    let refused = renew(&["--out-dir", "old"]);
    assert!(!refused.status.success());
    let err = text(&refused);
    assert!(err.contains(&gw.url("/renew")) && err.contains("401"), "{err}");
    assert_eq!(s.read("old/app.crt"), crt);

    // Revoked: refused with the CA's reason, also with --if-needed (an error, not 3).
    s.ok(&["cert", "revoke", "app"]);
    let refused = renew(&["--if-needed", "--expires-in", "100%"]);
    assert!(!matches!(refused.status.code(), Some(0 | 3)), "{}", text(&refused));
    assert!(text(&refused).contains("revoked"), "{}", text(&refused));

    let err = s.fails(&["cert", "renew", "app", "--root", "root.crt"]);
    assert!(err.contains("need --ca-url"), "{err}");

    // The one-shot --ca-url examples of `cert renew --help` run as printed against this CA,
    // for a fresh certificate named api: renewed (0), then not due (3). The --daemon ones run
    // in renew_daemon_e2e.rs.
    let token = s.ok(&["ca", "token", "api", "--san", "api.example.com"]);
    let got = cert_request(&s, &gw, "api", token.trim(), &["--root", "root.crt"]);
    assert!(got.status.success(), "{}", text(&got));
    let examples: Vec<Vec<String>> = help_examples(&s, &["cert", "renew"])
        .into_iter()
        .filter(|e| e.contains(&"--ca-url".to_string()) && !e.contains(&"--daemon".to_string()))
        .collect();
    assert_eq!(examples.len(), 2, "{examples:?}");
    for (example, status) in examples.iter().zip([0, 3]) {
        let args: Vec<String> = example
            .iter()
            .map(|w| if w.starts_with("https://ca.example.com") { url.clone() } else { w.clone() })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = s.run(&args);
        assert_eq!(out.status.code(), Some(status), "{args:?}: {}", text(&out));
    }
}
