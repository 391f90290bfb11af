//! End-to-end tests of the CA commands: the real `certgate` binary, checked by the tools users
//! compare it with (`openssl verify`, `openssl pkcs12`, `openssl req`, `openssl s_server`,
//! `openssl crl`, curl).

// A test that cannot set itself up should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod pki_support;

use pki_support::*;

/// Client and server profiles carry the EKUs openssl checks with -purpose.
#[test]
fn issued_profiles_pass_openssl_purpose_checks() {
    let s = Scratch::with_ca(&[]);
    s.ok(&["cert", "issue", "joe", "--san", "spiffe://example.test/joe"]);
    s.ok(&["cert", "issue", "web", "--san", "web.example.test", "--san", "10.0.0.1"]);
    s.ok(&["cert", "issue", "peer", "--san", "peer.example.test", "--profile", "dual"]);
    assert!(openssl_verify(&s, "joe.crt", "sslclient").status.success());
    assert!(!openssl_verify(&s, "joe.crt", "sslserver").status.success());
    assert!(openssl_verify(&s, "web.crt", "sslserver").status.success());
    assert!(!openssl_verify(&s, "web.crt", "sslclient").status.success());
    assert!(openssl_verify(&s, "peer.crt", "sslclient").status.success());
    assert!(openssl_verify(&s, "peer.crt", "sslserver").status.success());
    let x509 = text(&s.openssl(&["x509", "-in", "web.crt", "-noout", "-text"]));
    assert!(x509.contains("DNS:web.example.test, IP Address:10.0.0.1"), "{x509}");
    assert!(x509.contains("CA:FALSE") && x509.contains("TLS Web Server Authentication"), "{x509}");
    assert!(x509.contains("X509v3 Authority Key Identifier"), "{x509}");
    let root = text(&s.openssl(&["x509", "-in", "ca/intermediate.crt", "-noout", "-text"]));
    assert!(root.contains("CA:TRUE, pathlen:0"), "{root}");
    assert_eq!(mode(&s.path("joe.key")), 0o600);
    assert_eq!(mode(&s.path("ca/root.key")), 0o600);
    assert_eq!(mode(&s.path("ca/intermediate.key")), 0o600);
    assert_eq!(mode(&s.path("web.crt")), 0o644);
    no_temp_files(&s.dir);
}

/// After revoke + crl, openssl -crl_check refuses the revoked certificate, accepts others, and
/// reads the CRL with an increasing number.
#[test]
fn revoked_certificate_fails_openssl_crl_check() {
    let s = Scratch::with_ca(&[]);
    s.ok(&["cert", "issue", "joe", "--san", "joe@example.test"]);
    s.ok(&["cert", "issue", "ann", "--san", "ann@example.test"]);
    s.ok(&["crl"]);
    // The bundle starts with the intermediate's CRL; the root's, signed first, took number 1.
    let first = text(&s.openssl(&["crl", "-in", "ca/crl.pem", "-noout", "-crlnumber"]));
    assert!(first.contains("crlNumber=0x02"), "{first}");
    let out = s.ok(&["cert", "revoke", "joe", "--reason", "key-compromise"]);
    assert!(out.contains("revoked joe"), "{out}");
    s.ok(&["crl", "--next-update", "2d"]);
    let crl = text(&s.openssl(&["crl", "-in", "ca/crl.pem", "-noout", "-text"]));
    assert!(crl.contains("Key Compromise"), "{crl}");
    // The root's CRL is still current and valid for longer than 2 days: reused, not signed.
    let second = text(&s.openssl(&["crl", "-in", "ca/crl.pem", "-noout", "-crlnumber"]));
    assert!(second.contains("crlNumber=0x03"), "{second}");
    let check = |cert: &str| {
        s.openssl(&[
            "verify",
            "-crl_check",
            "-CRLfile",
            "ca/crl.pem",
            "-CAfile",
            "ca/root.crt",
            "-untrusted",
            cert,
            cert,
        ])
    };
    let revoked = check("joe.crt");
    assert!(
        !revoked.status.success() && text(&revoked).contains("certificate revoked"),
        "{}",
        text(&revoked)
    );
    assert!(check("ann.crt").status.success(), "{}", text(&check("ann.crt")));
    let refused = s.run(&["verify", "joe.crt", "--crl", "ca/crl.pem"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused).contains("was revoked on") && text(&refused).contains("keyCompromise"),
        "{}",
        text(&refused)
    );
    let again = s.fails(&["cert", "revoke", "joe"]);
    assert!(again.contains("already revoked"), "{again}");
    let listed = s.ok(&["cert", "list", "--status", "revoked", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["name"], "joe");
    assert_eq!(rows[0]["revocation_reason"], "key-compromise");
}

/// openssl reads both PKCS#12 forms with the password (legacy with -legacy) and refuses a
/// wrong one; a bundle without a password must be asked for.
#[test]
fn pkcs12_both_forms_read_by_openssl() {
    let s = Scratch::with_ca(&[]);
    s.ok(&["cert", "issue", "joe", "--san", "spiffe://example.test/joe"]);
    std::fs::write(s.path("pw"), "s3cret pass\n").unwrap();
    std::fs::write(s.path("wrong"), "nope\n").unwrap();
    s.ok(&["cert", "p12", "joe", "--password-file", "pw"]);
    s.ok(&["cert", "p12", "joe", "--password-file", "pw", "--legacy", "--out", "joe-legacy.p12"]);
    assert_eq!(mode(&s.path("joe.p12")), 0o600);
    let modern = s.openssl(&["pkcs12", "-in", "joe.p12", "-passin", "file:pw", "-nodes"]);
    let pem = text(&modern);
    assert!(modern.status.success(), "{pem}");
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 3, "leaf, intermediate, root: {pem}");
    assert!(pem.contains("BEGIN PRIVATE KEY"), "{pem}");
    let legacy =
        s.openssl(&["pkcs12", "-legacy", "-in", "joe-legacy.p12", "-passin", "file:pw", "-nodes"]);
    assert!(
        legacy.status.success() && text(&legacy).contains("BEGIN PRIVATE KEY"),
        "{}",
        text(&legacy)
    );
    let info = text(&s.openssl(&[
        "pkcs12",
        "-legacy",
        "-in",
        "joe-legacy.p12",
        "-passin",
        "file:pw",
        "-info",
        "-noout",
    ]));
    assert!(info.contains("TripleDES"), "{info}");
    assert!(
        !s.openssl(&["pkcs12", "-in", "joe.p12", "-passin", "file:wrong", "-nodes"])
            .status
            .success()
    );
    let err = s.fails(&["cert", "p12", "joe", "--out", "x.p12"]);
    assert!(err.contains("--password-file") && err.contains("--insecure-no-password"), "{err}");
    s.ok(&["cert", "p12", "joe", "--insecure-no-password", "--out", "open.p12"]);
    assert!(
        s.openssl(&["pkcs12", "-in", "open.p12", "-passin", "pass:", "-nodes"]).status.success()
    );
}

/// An openssl CSR is signed with the CA's usages; CA requests and tampered CSRs are refused.
#[test]
fn openssl_csr_is_signed_under_ca_policy() {
    let s = Scratch::with_ca(&[]);
    let req = s.openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "svc.key",
        "-out",
        "svc.csr",
        "-subj",
        "/C=US/O=Example/CN=svc",
        "-addext",
        "subjectAltName=DNS:svc.example.test",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    assert!(req.status.success(), "{}", text(&req));
    let out = s.ok(&["cert", "sign", "--csr", "svc.csr", "--days", "30"]);
    assert!(out.contains("signed svc"), "{out}");
    assert!(openssl_verify(&s, "svc.crt", "sslserver").status.success());
    let x509 = text(&s.openssl(&["x509", "-in", "svc.crt", "-noout", "-text"]));
    assert!(x509.contains("DNS:svc.example.test"), "{x509}");
    assert!(x509.contains("Subject: C = US, O = Example, CN = svc"), "{x509}");
    assert!(!x509.contains("Certificate Sign"), "the CA decides key usage: {x509}");
    let modulus_key = text(&s.openssl(&["pkey", "-in", "svc.key", "-pubout"]));
    let modulus_cert = text(&s.openssl(&["x509", "-in", "svc.crt", "-noout", "-pubkey"]));
    assert_eq!(modulus_key, modulus_cert);

    let ca_req = s.openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "evil.key",
        "-out",
        "evil.csr",
        "-subj",
        "/CN=evil",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
    ]);
    assert!(ca_req.status.success());
    let err = s.fails(&["cert", "sign", "--csr", "evil.csr"]);
    assert!(err.contains("evil.csr") && err.contains("asks to be a CA"), "{err}");
    assert!(!s.path("evil.crt").exists());

    // Flip one byte inside the signed part (the CN), keeping the PEM well-formed.
    let der = text(&s.openssl(&["req", "-in", "svc.csr", "-outform", "DER", "-out", "svc.der"]));
    let _ = der;
    let mut bytes = s.read("svc.der");
    let pos = bytes.windows(3).position(|w| w == b"svc").unwrap();
    bytes[pos] = b'S';
    std::fs::write(s.path("tampered.der"), bytes).unwrap();
    let err = s.fails(&["cert", "sign", "--csr", "tampered.der", "--out", "tampered.crt"]);
    assert!(err.contains("tampered.der") && err.contains("signature does not verify"), "{err}");
    assert!(!s.path("tampered.crt").exists());
}

/// s_server -Verify with a certgate server certificate: curl with the client certificate
/// gets through, curl without one does not.
#[test]
fn openssl_s_server_accepts_certgate_client_and_refuses_anonymous() {
    let s = Scratch::with_ca(&[]);
    s.ok(&["cert", "issue", "server", "--san", "localhost", "--san", "127.0.0.1"]);
    s.ok(&["cert", "issue", "client", "--san", "spiffe://example.test/client"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("openssl")
        .current_dir(&s.dir)
        .args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-cert", "server.crt"])
        .args(["-cert_chain", "server.crt", "-key", "server.key", "-CAfile", "ca/root.crt"])
        .args(["-Verify", "2", "-www", "-quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Kill(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s_server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("https://localhost:{port}/");
    let curl = |with_cert: bool| {
        let mut cmd = Command::new("curl");
        cmd.current_dir(&s.dir).args([
            "-s",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            "ca/root.crt",
        ]);
        if with_cert {
            cmd.args(["--cert", "client.crt", "--key", "client.key"]);
        }
        let out = cmd.arg(&url).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl(true), "200");
    assert_ne!(curl(false), "200");
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every key type makes a CA and a leaf that openssl verifies.
#[test]
fn every_key_type_issues_and_verifies() {
    for kt in ["ec-p256", "ec-p384", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096"] {
        let s = Scratch::with_ca(&["--key-type", kt]);
        s.ok(&["cert", "issue", "leaf", "--san", "leaf.example.test", "--key-type", kt]);
        let v = openssl_verify(&s, "leaf.crt", "sslserver");
        assert!(v.status.success(), "{kt}: {}", text(&v));
        let ok =
            s.ok(&["verify", "leaf.crt", "--purpose", "server", "--name", "leaf.example.test"]);
        assert!(ok.starts_with("OK"), "{kt}: {ok}");
    }
}

/// Short lifetimes in minutes and hours are exact (plus the one-minute backdate).
#[test]
fn short_lived_certificates_have_exact_lifetimes() {
    let s = Scratch::with_ca(&[]);
    s.ok(&["cert", "issue", "m", "--san", "m.example.test", "--minutes", "5"]);
    s.ok(&["cert", "issue", "h", "--san", "h.example.test", "--hours", "2"]);
    for (name, seconds) in [("m", 6 * 60), ("h", 2 * 3600 + 60)] {
        let json = s.ok(&["inspect", &format!("{name}.crt"), "--json"]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let cert = &v["certificates"][0];
        let parse = |k: &str| {
            time::OffsetDateTime::parse(
                cert[k].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        };
        assert_eq!((parse("not_after") - parse("not_before")).whole_seconds(), seconds, "{name}");
    }
    let expiring = s.ok(&["cert", "list", "--expiring", "1d", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&expiring).unwrap();
    let names: Vec<&str> =
        rows.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["m", "h"]);
    s.ok(&["cert", "issue", "year", "--san", "y.example.test"]);
    let rows: serde_json::Value =
        serde_json::from_str(&s.ok(&["cert", "list", "--expiring", "1d", "--json"])).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);
}

/// Bad input gets a clear error naming the file or value, and nothing is overwritten.
#[test]
fn bad_input_is_refused_clearly_and_changes_nothing() {
    let s = Scratch::new();
    let err = s.fails(&["cert", "issue", "x", "--san", "x.example.test"]);
    assert!(err.contains("no CA in ca") && err.contains("does not exist"), "{err}");

    std::fs::write(s.path("pw"), "right\n").unwrap();
    std::fs::write(s.path("bad-pw"), "wrong\n").unwrap();
    s.ok(&["ca", "init", "--password-file", "pw"]);
    let root_key = s.read("ca/root.key");
    let err = s.fails(&["ca", "init"]);
    assert!(err.contains("already holds a CA") && err.contains("--force"), "{err}");
    assert_eq!(s.read("ca/root.key"), root_key);
    let err =
        s.fails(&["cert", "issue", "x", "--san", "x.example.test", "--password-file", "bad-pw"]);
    assert!(err.contains("wrong password for ca/intermediate.key"), "{err}");
    assert!(!s.path("x.crt").exists() && !s.path("x.key").exists());
    let err = s.fails(&["cert", "issue", "x", "--san", "x.example.test"]);
    assert!(err.contains("encrypted") && err.contains("--password-file"), "{err}");
    let ok = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--password-file", "pw"]);
        s.ok(&all)
    };
    ok(&["cert", "issue", "x", "--san", "x.example.test"]);
    let before = (s.read("x.crt"), s.read("x.key"));
    let err = s.fails(&["cert", "issue", "x", "--san", "x.example.test", "--password-file", "pw"]);
    assert!(err.contains("x.crt already exists") || err.contains("x.key already exists"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!((s.read("x.crt"), s.read("x.key")), before);
    ok(&["cert", "issue", "x", "--san", "x.example.test", "--force"]);
    assert_ne!(s.read("x.crt"), before.0);

    for (san, fragment) in
        [("exa mple.com", "invalid SAN \"exa mple.com\""), ("localhost:8443", "contains ':'")]
    {
        let err = s.fails(&["cert", "issue", "y", "--san", san, "--password-file", "pw"]);
        assert!(err.contains(fragment), "{san}: {err}");
    }
    let err = s.fails(&[
        "cert",
        "issue",
        "y",
        "--san",
        "y.example.test",
        "--days",
        "0",
        "--password-file",
        "pw",
    ]);
    assert!(err.contains("0 days") && err.contains("at least 1"), "{err}");
    assert!(!s.path("y.crt").exists() && !s.path("y.key").exists());

    let err = s.fails(&["cert", "show", "deadbeef"]);
    assert!(err.contains("no certificate with serial or name \"deadbeef\""), "{err}");
    let err = s.fails(&["cert", "revoke", "deadbeef"]);
    assert!(err.contains("deadbeef"), "{err}");

    let pem = String::from_utf8(s.read("x.crt")).unwrap();
    std::fs::write(s.path("truncated.crt"), &pem[..pem.len() / 2]).unwrap();
    let err = s.fails(&["verify", "truncated.crt"]);
    assert!(err.contains("truncated.crt") && err.contains("truncated"), "{err}");
    std::fs::write(s.path("garbage.crt"), "hello, not a certificate\n").unwrap();
    let err = s.fails(&["inspect", "garbage.crt"]);
    assert!(err.contains("garbage.crt") && err.contains("not PEM"), "{err}");
    let err = s.fails(&["inspect", "x.key"]);
    assert!(err.contains("x.key") && err.contains("PRIVATE KEY"), "{err}");
    no_temp_files(&s.dir);
    no_temp_files(&s.path("ca"));
}

/// The inventory lists, shows (even after the file is lost) and renews.
#[test]
fn inventory_shows_lost_certificates_and_tracks_renewal() {
    let s = Scratch::with_ca(&[]);
    s.ok(&["cert", "issue", "api", "--san", "api.example.test", "--hours", "3"]);
    let original = String::from_utf8(s.read("api.crt")).unwrap();
    let leaf_pem: String =
        original.split_inclusive("-----END CERTIFICATE-----\n").next().unwrap().to_string();
    std::fs::remove_file(s.path("api.crt")).unwrap();
    let shown = s.ok(&["cert", "show", "api"]);
    assert!(shown.contains(&leaf_pem), "{shown}");
    let listed: serde_json::Value =
        serde_json::from_str(&s.ok(&["cert", "list", "--json"])).unwrap();
    let row = &listed[0];
    assert_eq!(row["name"], "api");
    assert_eq!(row["subject"], "CN=api");
    assert_eq!(row["sans"][0], "DNS:api.example.test");
    assert_eq!(row["profile"], "server");
    assert_eq!(row["status"], "valid");
    let old_serial = row["serial"].as_str().unwrap().to_string();
    assert!(old_serial.len() >= 32, "at least 128 bits: {old_serial}");

    let old_pub = text(&s.openssl(&["pkey", "-in", "api.key", "-pubout"]));
    s.ok(&["cert", "renew", "api", "--reuse-key"]);
    let new_pub = text(&s.openssl(&["x509", "-in", "api.crt", "-noout", "-pubkey"]));
    assert_eq!(old_pub, new_pub, "--reuse-key keeps the public key");
    // api.crt and api.key hold the certificate being renewed: no --force needed.
    s.ok(&["cert", "renew", "api"]);
    let newer_pub = text(&s.openssl(&["pkey", "-in", "api.key", "-pubout"]));
    assert_ne!(old_pub, newer_pub, "renew makes a new key by default");
    let rows: serde_json::Value = serde_json::from_str(&s.ok(&["cert", "list", "--json"])).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["serial"], old_serial.as_str());
    assert_eq!(rows[0]["status"], "superseded");
    assert_eq!(rows[0]["superseded_by"], rows[1]["serial"]);
    assert_eq!(rows[2]["status"], "valid");
    assert!(openssl_verify(&s, "api.crt", "sslserver").status.success());
}

/// `certgate verify` names each reason: unknown issuer, wrong purpose, name mismatch,
/// expired, and chain too deep.
#[test]
fn verify_explains_each_refusal() {
    use certgate_pki::testkit::{LeafSpec, TestPki};
    let s = Scratch::with_ca(&[]);
    s.ok(&["cert", "issue", "web", "--san", "web.example.test"]);
    let ok = s.ok(&["verify", "web.crt", "--purpose", "server", "--name", "web.example.test"]);
    assert!(
        ok.contains("0: CN=web") && ok.contains("2: CN=certgate Root CA  (trust anchor)"),
        "{ok}"
    );
    let refused = |args: &[&str]| {
        let out = s.run(args);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let purpose = refused(&["verify", "web.crt"]);
    assert!(purpose.contains("not for clientAuth") && purpose.contains("serverAuth"), "{purpose}");
    let name =
        refused(&["verify", "web.crt", "--purpose", "server", "--name", "other.example.test"]);
    assert!(
        name.contains("not valid for other.example.test") && name.contains("web.example.test"),
        "{name}"
    );

    let other = Scratch::with_ca(&["--name", "Other Root CA"]);
    other.ok(&["cert", "issue", "x", "--san", "x@example.test"]);
    std::fs::copy(other.path("x.crt"), s.path("foreign.crt")).unwrap();
    let unknown = refused(&["verify", "foreign.crt"]);
    assert!(
        unknown.contains("CN=Other Intermediate CA was issued by CN=Other Root CA, which is not a trusted CA (trusted: CN=certgate Root CA)"),
        "{unknown}"
    );

    let pki = TestPki::with_two_intermediates();
    std::fs::write(s.path("deep-root.crt"), pki.root_pem()).unwrap();
    std::fs::write(s.path("deep.crt"), pki.client("deep", &[]).chain_pem).unwrap();
    let t0 = time::OffsetDateTime::now_utc() - time::Duration::days(3);
    let expired = pki.leaf(LeafSpec {
        cn: "old".into(),
        not_before: Some(t0),
        not_after: Some(t0 + time::Duration::days(1)),
        ..LeafSpec::client()
    });
    std::fs::write(s.path("old.crt"), expired.chain_pem).unwrap();
    assert!(s.ok(&["verify", "deep.crt", "--ca", "deep-root.crt"]).starts_with("OK"));
    let deep = refused(&["verify", "deep.crt", "--ca", "deep-root.crt", "--max-depth", "2"]);
    assert!(
        deep.contains("chain too deep: 3 CA certificates above the leaf, at most 2 allowed"),
        "{deep}"
    );
    let old = refused(&["verify", "old.crt", "--ca", "deep-root.crt"]);
    let date = certgate_pki::validity::format_time(t0 + time::Duration::days(1));
    assert!(old.contains(&format!("certificate CN=old expired on {date}")), "{old}");
}

/// `certgate inspect` agrees with openssl on the fingerprint and gives the RFC 8705 thumbprint.
#[test]
fn inspect_matches_openssl_fingerprint() {
    let s = Scratch::with_ca(&[]);
    s.ok(&[
        "cert",
        "issue",
        "joe",
        "--san",
        "spiffe://example.test/joe",
        "--san",
        "joe@example.test",
    ]);
    let fp = text(&s.openssl(&["x509", "-in", "joe.crt", "-noout", "-fingerprint", "-sha256"]));
    let fp = fp.trim().rsplit('=').next().unwrap().to_string();
    let human = s.ok(&["inspect", "joe.crt"]);
    assert!(human.contains(&fp), "{human}");
    assert!(human.contains("SAN URI      spiffe://example.test/joe"), "{human}");
    assert!(human.contains("clientAuth"), "{human}");
    let json: serde_json::Value =
        serde_json::from_str(&s.ok(&["inspect", "joe.crt", "--json"])).unwrap();
    let cert = &json["certificates"][0];
    assert_eq!(cert["sha256_fingerprint"], fp.as_str());
    assert_eq!(cert["x5t#S256"].as_str().unwrap().len(), 43);
    assert_eq!(cert["sans"]["email"][0], "joe@example.test");
    assert_eq!(json["certificates"].as_array().unwrap().len(), 2, "leaf and intermediate");
    s.ok(&["crl"]);
    let crl: serde_json::Value =
        serde_json::from_str(&s.ok(&["inspect", "ca/crl.pem", "--json"])).unwrap();
    // The bundle: the intermediate's CRL, then the root's, which was signed first (number 1).
    assert_eq!(crl["kind"], "crls");
    assert_eq!(crl["crls"][0]["issuer"], "CN=certgate Intermediate CA");
    assert_eq!(crl["crls"][0]["crl_number"], "2");
    assert_eq!(crl["crls"][1]["issuer"], "CN=certgate Root CA");
    assert_eq!(crl["crls"][1]["crl_number"], "1");
    s.ok(&["crl", "--issuer", "intermediate"]);
    let one: serde_json::Value =
        serde_json::from_str(&s.ok(&["inspect", "ca/intermediate.crl.pem", "--json"])).unwrap();
    assert_eq!((&one["kind"], &one["crl_number"]), (&"crl".into(), &"3".into()));
    let human = s.ok(&["inspect", "ca/crl.pem"]);
    assert!(human.contains("certificate revocation list #2 of 2"), "{human}");
}

/// An OS error reaches the user once, as the cause of the message that names the file as
/// the user wrote it (never a temporary file's name, nor a `./` the user did not type).
#[test]
fn missing_file_error_names_the_os_error_once() {
    let s = Scratch::with_ca(&[]);
    s.ok(&["cert", "issue", "web", "--san", "web.example.test"]);
    let cases: [(&[&str], &str); 8] = [
        (&["inspect", "/nonexistent"], "cannot read /nonexistent: "),
        (&["verify", "missing.pem"], "certgate: error: cannot read missing.pem: "),
        (&["verify", "web.crt", "--ca", "no/root.pem"], "cannot read no/root.pem: "),
        (&["verify", "web.crt", "--crl", "missing.crl"], "cannot read missing.crl: "),
        (
            &["cert", "p12", "web", "--cert", "missing", "--insecure-no-password"],
            "cannot read missing: ",
        ),
        (
            &["cert", "p12", "web", "--key", "missing.key", "--insecure-no-password"],
            "cannot read missing.key: ",
        ),
        (&["serve", "--config", "missing.toml"], "missing.toml: cannot read: "),
        // The directory of a file to write is missing: the file is named, not the temporary
        // file certgate writes first.
        (&["ca", "root", "--out", "no-such-dir/root.pem"], "cannot write no-such-dir/root.pem: "),
    ];
    for (args, expected) in cases {
        let err = s.fails(args);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(err.matches("No such file or directory").count(), 1, "{args:?}: {err}");
        assert_eq!(err.matches("os error").count(), 1, "{args:?}: {err}");
        assert!(!err.contains(".tmp") && !err.contains("./"), "{args:?}: {err}");
    }
    // Files written in the current directory are named as the user would write them.
    let p12 = s.ok(&["cert", "p12", "web", "--insecure-no-password"]);
    assert!(p12.starts_with("wrote web.p12 ("), "{p12}");
    let issued = s.ok(&["cert", "issue", "api", "--san", "api.example.test"]);
    assert!(issued.contains("wrote      api.crt (") && issued.contains("wrote      api.key ("));
}

/// A URI SAN that is not an RFC 3986 URI is refused, from `--san` and from a CSR, with the
/// offending character and its percent-encoding; nothing is written.
#[test]
fn uri_san_outside_rfc3986_is_refused() {
    let s = Scratch::with_ca(&[]);
    let err = s.fails(&["cert", "issue", "x", "--san", "https://x/a\"b"]);
    assert!(
        err.contains(
            "invalid SAN \"https://x/a\\\"b\": '\"' is not allowed in a URI (RFC 3986); \
             percent-encode it as %22"
        ),
        "{err}"
    );
    assert!(!s.path("x.crt").exists() && !s.path("x.key").exists());
    s.ok(&["cert", "issue", "x", "--san", "https://x/a%22b"]);

    let req = s.openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "q.key",
        "-out",
        "q.csr",
        "-subj",
        "/CN=q",
        "-addext",
        "subjectAltName=URI:https://x/a|b",
    ]);
    assert!(req.status.success(), "{}", text(&req));
    let err = s.fails(&["cert", "sign", "--csr", "q.csr"]);
    assert!(
        err.contains("q.csr: requested URI SAN: invalid SAN \"https://x/a|b\"")
            && err.contains("'|' is not allowed in a URI (RFC 3986); percent-encode it as %7C"),
        "{err}"
    );
    assert!(!s.path("q.crt").exists());
}

/// Numbers too large for a date are refused with a message and exit code 1, never a panic.
#[test]
fn huge_lifetimes_and_durations_are_refused_not_a_crash() {
    let s = Scratch::with_ca(&[]);
    s.ok(&["cert", "issue", "old", "--san", "old.example.test"]);
    for (args, message) in [
        (
            &["cert", "issue", "x", "--san", "x.example", "--days", "4000000"][..],
            "--days 4000000: a certificate lifetime is at most 36500 days",
        ),
        (
            &["cert", "issue", "x", "--san", "x.example", "--minutes", "4294967295"][..],
            "--minutes 4294967295: a certificate lifetime is at most 52560000 minutes",
        ),
        (
            &["cert", "list", "--expiring", "99999999999d"][..],
            "invalid duration \"99999999999d\": a duration is at most 100 years (36500d)",
        ),
        (
            &["crl", "--next-update", "99999999999d"][..],
            "invalid duration \"99999999999d\": a duration is at most 100 years (36500d)",
        ),
        (
            &["ca", "init", "--ca-dir", "ca2", "--days", "4000000"][..],
            "--days 4000000: a certificate lifetime is at most 36500 days",
        ),
    ] {
        let out = s.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    assert!(!s.path("x.crt").exists() && !s.path("x.key").exists() && !s.path("ca2").exists());
    assert!(!s.path("ca/crl.pem").exists());
}

/// A reader that stops after the first line (`certgate inspect --json chain | head -1`) ends
/// certgate quietly with success, in JSON and human output. The chain is long enough (200
/// certificates) that the output does not fit in the pipe buffer, so certgate writes to a
/// closed pipe.
#[test]
fn closed_stdout_ends_quietly_with_success() {
    use std::io::BufRead;
    let s = Scratch::with_ca(&[]);
    s.ok(&["cert", "issue", "joe", "--san", "spiffe://example.test/joe"]);
    let chain = String::from_utf8(s.read("joe.crt")).unwrap();
    std::fs::write(s.path("long.crt"), chain.repeat(100)).unwrap();
    for args in [&["inspect", "--json", "long.crt"][..], &["inspect", "long.crt"][..]] {
        let mut child = Command::new(CERTGATE)
            .current_dir(&s.dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        assert!(!first.is_empty(), "{args:?}: no output");
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

/// `verify --json` prints the verdict, the X-Client-Verify reason code, the message and the
/// chain as JSON on stdout, accepted or refused, with the exit codes of the text form.
#[test]
fn verify_json_reports_verdict_reason_and_chain() {
    let s = Scratch::with_ca(&[]);
    s.ok(&["cert", "issue", "web", "--san", "web.example.test"]);
    let json = |args: &[&str], code: i32| -> serde_json::Value {
        let out = s.run(args);
        assert_eq!(out.status.code(), Some(code), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let ok = json(&["verify", "web.crt", "--json", "--purpose", "server"], 0);
    assert_eq!(ok["verdict"], "SUCCESS");
    assert_eq!(ok["reason"], serde_json::Value::Null);
    assert_eq!(ok["purpose"], "server");
    assert_eq!(ok["cert"], "web.crt");
    let chain: Vec<&str> =
        ok["chain"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(chain, ["CN=web", "CN=certgate Intermediate CA", "CN=certgate Root CA"]);
    assert_eq!(ok["trust_anchor"], "CN=certgate Root CA");
    assert_eq!(ok["presented"].as_array().unwrap().len(), 2, "leaf and intermediate");

    let purpose = json(&["verify", "web.crt", "--json"], 1);
    assert_eq!(purpose["verdict"], "FAILED");
    assert_eq!(purpose["reason"], "wrong_purpose");
    assert!(purpose["message"].as_str().unwrap().contains("not for clientAuth"), "{purpose}");
    assert_eq!(purpose["chain"], serde_json::json!([]));
    assert_eq!(purpose["presented"][0], "CN=web");

    s.ok(&["cert", "revoke", "web", "--reason", "key-compromise"]);
    s.ok(&["crl"]);
    let revoked =
        json(&["verify", "web.crt", "--json", "--purpose", "server", "--crl", "ca/crl.pem"], 1);
    assert_eq!(revoked["reason"], "revoked");
    assert_eq!(revoked["crl_files"], 1);
    // openssl agrees with the verdict.
    let openssl = s.openssl(&[
        "verify",
        "-crl_check_all",
        "-CRLfile",
        "ca/crl.pem",
        "-CAfile",
        "ca/root.crt",
        "-untrusted",
        "web.crt",
        "web.crt",
    ]);
    assert!(!openssl.status.success() && text(&openssl).contains("revoked"), "{}", text(&openssl));
}

/// `cert show --json` gives the inventory record, its status and the certificate's fields,
/// which agree with openssl.
#[test]
fn cert_show_json_gives_record_and_certificate_fields() {
    let s = Scratch::with_ca(&[]);
    s.ok(&["cert", "issue", "joe", "--san", "spiffe://example.test/joe"]);
    s.ok(&["cert", "revoke", "joe", "--reason", "key-compromise"]);
    let out = s.run(&["cert", "show", "joe", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["name"], "joe");
    assert_eq!(shown["subject"], "CN=joe");
    assert_eq!(shown["profile"], "client");
    assert_eq!(shown["status"], "revoked");
    assert_eq!(shown["revocation_reason"], "key-compromise");
    assert!(shown["revoked_at"].is_string(), "{shown}");
    let cert = &shown["certificate"];
    assert_eq!(cert["sans"]["uri"][0], "spiffe://example.test/joe");
    assert_eq!(cert["extended_key_usage"][0], "clientAuth");
    assert_eq!(cert["is_ca"], false);
    let serial = text(&s.openssl(&["x509", "-in", "joe.crt", "-noout", "-serial"]));
    let serial = serial.trim().trim_start_matches("serial=").to_ascii_lowercase();
    assert_eq!(shown["serial"], serial.as_str());
    assert_eq!(cert["serial"], serial.as_str());
    let fp = text(&s.openssl(&["x509", "-in", "joe.crt", "-noout", "-fingerprint", "-sha256"]));
    assert_eq!(cert["sha256_fingerprint"], fp.trim().rsplit('=').next().unwrap());
    let leaf = String::from_utf8(s.read("joe.crt")).unwrap();
    assert!(leaf.starts_with(shown["pem"].as_str().unwrap()), "{shown}");
}
