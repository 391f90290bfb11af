//! CRLs as nginx and OpenSSL read them: `certgate crl` writes every CA's CRL (root →
//! intermediate), so `ssl_crl` and `openssl verify -crl_check_all` find one for each CA in the
//! chain; the root's CRL can live long with its key offline; an intermediate can be revoked;
//! certificates carry a CRL distribution point with `ca init --crl-url`.

// A test that cannot set itself up should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gateway_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use gateway_support::{CERTGATE, Gateway, Proc, curl, curl_as, free_port, listener, wait_for_port};

/// A scratch directory with a CA in `ca/`, `root.crt` beside it and a server certificate for
/// localhost (`server.crt`/`.key`), as the gateway harness expects.
struct Scratch {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Scratch {
    fn with_ca(init: &[&str]) -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        let s = Scratch { dir: tmp.path().to_path_buf(), _tmp: tmp };
        let mut args = vec!["ca", "init"];
        args.extend_from_slice(init);
        s.ok(&args);
        std::fs::copy(s.dir.join("ca/root.crt"), s.dir.join("root.crt")).unwrap();
        s.ok(&["cert", "issue", "server", "--san", "localhost", "--san", "127.0.0.1"]);
        s
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(CERTGATE)
            .current_dir(&self.dir)
            .env("CERTGATE_CA_DIR", "ca")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "certgate {args:?} failed: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "certgate {args:?} should fail: {}", text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn openssl(&self, args: &[&str]) -> Output {
        Command::new("openssl").current_dir(&self.dir).args(args).output().unwrap()
    }

    /// `openssl verify -crl_check_all` of `cert` (leaf + intermediate) with the CRL file.
    fn verify_all(&self, cert: &str, crl: &str) -> Output {
        self.openssl(&[
            "verify",
            "-crl_check_all",
            "-purpose",
            "sslclient",
            "-CAfile",
            "ca/root.crt",
            "-CRLfile",
            crl,
            "-untrusted",
            cert,
            cert,
        ])
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// nginx (`/usr/sbin/nginx`, in the foreground with its own prefix) on a free loopback port,
/// requiring client certificates from `ca/root.crt` and checking them against `crl`.
fn nginx(dir: &Path, crl: &str) -> (Proc, u16) {
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/nginx-tmp;
    proxy_temp_path {d}/nginx-tmp;
    fastcgi_temp_path {d}/nginx-tmp;
    uwsgi_temp_path {d}/nginx-tmp;
    scgi_temp_path {d}/nginx-tmp;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/server.crt;
        ssl_certificate_key {d}/server.key;
        ssl_client_certificate {d}/ca/root.crt;
        ssl_verify_client on;
        ssl_verify_depth 2;
        ssl_crl {d}/{crl};
        location / {{ return 200 "hello $ssl_client_s_dn\n"; }}
    }}
}}
"#
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let log = dir.join("nginx-error.log");
    let child = Command::new("/usr/sbin/nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (apt-get install nginx-full)");
    let mut proc = Proc(child);
    wait_for_port(port, &mut proc.0, &log);
    (proc, port)
}

/// curl to nginx on `port` as client `name` (`name.crt` holds leaf + intermediate).
fn curl_nginx(dir: &Path, port: u16, name: &str) -> gateway_support::Curl {
    let file = |f: String| dir.join(f).display().to_string();
    curl(&[
        "--cacert",
        &file("root.crt".into()),
        "--cert",
        &file(format!("{name}.crt")),
        "--key",
        &file(format!("{name}.key")),
        &format!("https://localhost:{port}/"),
    ])
}

/// With the default root → intermediate CA, `certgate crl` writes both CAs' CRLs in one PEM
/// bundle: `openssl verify -crl_check_all` passes a valid leaf and refuses a revoked one; nginx
/// (`ssl_verify_client on; ssl_crl`) answers 200 to a valid client and refuses the revoked
/// one, where the intermediate's CRL alone makes it refuse everyone; and the gateway loads the
/// same bundle, even when it wants a CRL from every CA (`full_chain_crls`).
#[test]
fn crl_bundle_satisfies_openssl_crl_check_all_nginx_and_the_gateway() {
    let s = Scratch::with_ca(&[]);
    s.ok(&["cert", "issue", "joe", "--san", "spiffe://example.test/joe"]);
    s.ok(&["cert", "issue", "bad", "--san", "spiffe://example.test/bad"]);
    s.ok(&["cert", "revoke", "bad", "--reason", "key-compromise"]);
    let out = s.ok(&["crl"]);
    assert!(out.contains("signed the intermediate's CRL") && out.contains("(1 revoked"), "{out}");
    assert!(out.contains("signed the root's CRL") && out.contains("(0 revoked"), "{out}");
    let bundle = std::fs::read_to_string(s.dir.join("ca/crl.pem")).unwrap();
    assert_eq!(bundle.matches("-----BEGIN X509 CRL-----").count(), 2, "{bundle}");

    let good = s.verify_all("joe.crt", "ca/crl.pem");
    assert!(good.status.success(), "{}", text(&good));
    let revoked = s.verify_all("bad.crt", "ca/crl.pem");
    assert!(!revoked.status.success() && text(&revoked).contains("certificate revoked"));
    s.ok(&["crl", "--issuer", "intermediate"]);
    let alone = s.verify_all("joe.crt", "ca/intermediate.crl.pem");
    assert!(text(&alone).contains("unable to get certificate CRL"), "{}", text(&alone));

    let (_nginx, port) = nginx(&s.dir, "ca/crl.pem");
    let r = curl_nginx(&s.dir, port, "joe");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("hello CN=joe"), "{r:?}");
    let r = curl_nginx(&s.dir, port, "bad");
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("SSL certificate error"), "{r:?}");
    drop(_nginx);
    let (_nginx, port) = nginx(&s.dir, "ca/intermediate.crl.pem");
    let r = curl_nginx(&s.dir, port, "joe");
    assert_eq!(r.status, 400, "nginx wants the root's CRL too: {r:?}");

    let config = format!(
        "{}crls = [\"ca/crl.pem\"]\nfull_chain_crls = true\n\n[[route]]\nupstream = \"@echo\"\n",
        listener("required", "")
    );
    let gw = Gateway::start(&s.dir, &config);
    let r = curl_as(&gw, Some("joe"), "/", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let r = curl_as(&gw, Some("bad"), "/", &[]);
    assert_ne!(r.status, 200, "{r:?}");
    assert!(r.stderr.contains("certificate revoked"), "curl reads the alert: {r:?}");
}

/// `cert revoke intermediate` puts the intermediate on the root's CRL: every leaf it issued is
/// then refused by `openssl verify -crl_check_all`, `certgate verify` and the gateway.
#[test]
fn revoked_intermediate_is_on_the_roots_crl() {
    let s = Scratch::with_ca(&[]);
    s.ok(&["cert", "issue", "joe", "--san", "spiffe://example.test/joe"]);
    let out = s.ok(&["cert", "revoke", "intermediate", "--reason", "ca-compromise"]);
    assert!(out.contains("revoked intermediate") && out.contains("root's CRL"), "{out}");
    let listed = s.ok(&["cert", "list", "--status", "revoked"]);
    assert!(listed.contains("intermediate"), "{listed}");
    let out = s.ok(&["crl"]);
    assert!(out.contains("root's CRL") && out.contains("(1 revoked"), "{out}");

    let root_crl = text(&s.openssl(&["crl", "-inform", "DER", "-in", "ca/root.crl", "-text"]));
    let serial = text(&s.openssl(&["x509", "-in", "ca/intermediate.crt", "-noout", "-serial"]));
    let serial = serial.trim().trim_start_matches("serial=");
    assert!(root_crl.contains(serial) && root_crl.contains("CA Compromise"), "{root_crl}");

    let refused = s.verify_all("joe.crt", "ca/crl.pem");
    let out = text(&refused);
    assert!(!refused.status.success() && out.contains("at 1 depth"), "{out}");
    assert!(out.contains("certificate revoked"), "{out}");
    let refused = s.run(&["verify", "joe.crt", "--crl", "ca/crl.pem"]);
    assert!(text(&refused).contains("Intermediate CA") && text(&refused).contains("revoked"));

    let config = format!(
        "{}crls = [\"ca/crl.pem\"]\n\n[[route]]\nupstream = \"@echo\"\n",
        listener("required", "")
    );
    let gw = Gateway::start(&s.dir, &config);
    let r = curl_as(&gw, Some("joe"), "/", &[]);
    assert_ne!(r.status, 200, "{r:?}");
}

/// The root's CRL can be signed for a year (`--issuer root --next-update 365d`); later bundles
/// reuse it, so `certgate crl` works with the root key offline, until a revocation by the root
/// makes it out of date (then the root key is needed, and the error says why).
#[test]
fn roots_crl_lives_long_and_its_key_can_stay_offline() {
    let s = Scratch::with_ca(&[]);
    s.ok(&["cert", "issue", "joe", "--san", "spiffe://example.test/joe"]);
    let out = s.ok(&["crl", "--issuer", "root", "--next-update", "365d"]);
    assert!(out.contains("signed the root's CRL") && out.contains("root.crl.pem"), "{out}");
    let year = time::OffsetDateTime::now_utc().year() + 1;
    let next = text(&s.openssl(&["crl", "-in", "ca/root.crl.pem", "-noout", "-nextupdate"]));
    assert!(next.contains(&year.to_string()), "{next}");

    std::fs::rename(s.dir.join("ca/root.key"), s.dir.join("root.key.offline")).unwrap();
    let out = s.ok(&["crl"]);
    assert!(out.contains("reused the root's CRL"), "{out}");
    assert!(out.contains("signed the intermediate's CRL"), "{out}");
    let good = s.verify_all("joe.crt", "ca/crl.pem");
    assert!(good.status.success(), "{}", text(&good));
    let err = s.fails(&["crl", "--next-update", "400d"]);
    assert!(err.contains("root's CRL must be signed again"), "valid for less: {err}");

    s.ok(&["cert", "revoke", "intermediate"]);
    let err = s.fails(&["crl"]);
    assert!(err.contains("root's CRL must be signed again") && err.contains("root.key"), "{err}");
    std::fs::rename(s.dir.join("root.key.offline"), s.dir.join("ca/root.key")).unwrap();
    assert!(s.ok(&["crl"]).contains("signed the root's CRL"));
}

/// `ca init --crl-url BASE` puts `BASE/root.crl` in the intermediate and
/// `BASE/intermediate.crl` in the leaves (RFC 5280 §4.2.1.13), and `crl --issuer X --der`
/// writes the DER CRL that URL serves; OpenSSL and the gateway still accept the bundle.
#[test]
fn crl_url_puts_a_distribution_point_per_issuer() {
    let s = Scratch::with_ca(&["--crl-url", "http://pki.example.test/crl/"]);
    s.ok(&["cert", "issue", "joe", "--san", "spiffe://example.test/joe"]);
    let cdp = |file: &str| {
        text(&s.openssl(&["x509", "-in", file, "-noout", "-ext", "crlDistributionPoints"]))
    };
    assert!(cdp("joe.crt").contains("URI:http://pki.example.test/crl/intermediate.crl"));
    assert!(cdp("ca/intermediate.crt").contains("URI:http://pki.example.test/crl/root.crl"));
    assert!(!cdp("ca/root.crt").contains("URI:"), "a root has no distribution point");

    s.ok(&["crl", "--issuer", "intermediate", "--der"]);
    let der = s.openssl(&["crl", "-inform", "DER", "-in", "ca/intermediate.crl", "-noout"]);
    assert!(der.status.success(), "{}", text(&der));
    s.ok(&["crl"]);
    let good = s.verify_all("joe.crt", "ca/crl.pem");
    assert!(good.status.success(), "{}", text(&good));
    let config = format!(
        "{}crls = [\"ca/crl.pem\"]\nfull_chain_crls = true\n\n[[route]]\nupstream = \"@echo\"\n",
        listener("required", "")
    );
    let gw = Gateway::start(&s.dir, &config);
    assert_eq!(curl_as(&gw, Some("joe"), "/", &[]).status, 200);

    let err = Scratch::with_ca(&[]).fails(&["ca", "init", "--force", "--crl-url", "https://x"]);
    assert!(err.contains("invalid CRL URL \"https://x\""), "{err}");
    let err = s.fails(&["crl", "--der"]);
    assert!(err.contains("--issuer"), "{err}");
}

/// A duration without a unit is refused wherever the CLI takes one (`crl --next-update`,
/// `cert list --expiring`), naming the value and the units; the CRL lifetime stays 7 days by
/// default.
#[test]
fn durations_without_a_unit_are_refused() {
    let s = Scratch::with_ca(&[]);
    for args in [&["crl", "--next-update", "7"][..], &["cert", "list", "--expiring", "30"]] {
        let err = s.fails(args);
        assert!(
            err.contains("invalid duration \"") && err.contains("a unit is needed: 7d, 12h, 30m"),
            "{args:?}: {err}"
        );
    }
    assert!(!s.dir.join("ca/crl.pem").exists(), "nothing is signed");
    s.ok(&["crl"]);
    let week = time::OffsetDateTime::now_utc() + time::Duration::days(7);
    let next = text(&s.openssl(&["crl", "-in", "ca/crl.pem", "-noout", "-nextupdate"]));
    let day = format!("{} {:>2} ", &format!("{}", week.month())[..3], week.day());
    assert!(next.contains(&day) && next.contains(&week.year().to_string()), "{day}: {next}");
}
