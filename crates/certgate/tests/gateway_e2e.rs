//! End-to-end tests of `certgate serve`: the real binary, driven by curl (HTTP/1.1 and HTTP/2)
//! and openssl s_client, in front of test upstreams on loopback.

// A test that cannot set itself up should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gateway_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use certgate_pki::identity::PeerIdentity;
use certgate_pki::profile::Profile;
use certgate_pki::testkit::{LeafSpec, TestPki};
use gateway_support::*;
use time::OffsetDateTime;

/// A gateway with one route for everything, in `mode`, forwarding to a fresh upstream.
fn simple(dir: &std::path::Path, mode: &str, route_extra: &str) -> Gateway {
    let up = upstream(Duration::ZERO);
    let config = format!(
        "{}{}\n[[route]]\nupstream = \"app\"\n{route_extra}\n",
        listener(mode, ""),
        upstream_block("app", up)
    );
    Gateway::start(dir, &config)
}

/// Required mode: a valid client gets through with its identity; no certificate and a
/// certificate from another CA are refused in the handshake.
#[test]
fn required_mode_refuses_missing_and_foreign_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &["spiffe://example.test/joe"]));
    write_leaf(dir, "mallory", &TestPki::named("rogue").client("mallory", &[]));
    let gw = simple(dir, "required", "");

    let ok = curl_as(&gw, Some("joe"), "/hello", &[]);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(echoed_header(&ok.body, "x-client-subject").as_deref(), Some("CN=joe"));

    let none = curl_as(&gw, None, "/hello", &[]);
    assert_ne!(none.exit, 0, "no certificate must fail: {none:?}");
    assert_eq!(none.status, 0);

    let rogue = curl_as(&gw, Some("mallory"), "/hello", &[]);
    assert_ne!(rogue.exit, 0, "foreign CA must fail: {rogue:?}");
    assert_eq!(rogue.status, 0);

    // openssl s_client sees the CertificateRequest naming our root, and the alerts.
    let anonymous = s_client(&gw, None);
    assert!(anonymous.contains("Acceptable client certificate CA names"), "{anonymous}");
    assert!(anonymous.contains("certgate test root CA"), "{anonymous}");
    assert!(anonymous.contains("alert certificate required"), "{anonymous}");
    assert!(!anonymous.contains("HTTP/1.1 200"), "{anonymous}");
    let foreign = s_client(&gw, Some("mallory"));
    assert!(foreign.contains("alert unknown ca"), "{foreign}");
    let valid = s_client(&gw, Some("joe"));
    assert!(valid.contains("HTTP/1.1 200"), "{valid}");
}

/// Starts `openssl s_client -quiet` as client `name` with piped stdin and stdout, for tests
/// that pace what they send.
fn s_client_session(gw: &Gateway, name: &str) -> std::process::Child {
    let crt = gw.dir.join(format!("{name}.crt"));
    Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &format!("127.0.0.1:{}", gw.port)])
        .args(["-servername", "localhost", "-cert"])
        .arg(&crt)
        .arg("-cert_chain")
        .arg(&crt)
        .arg("-key")
        .arg(gw.dir.join(format!("{name}.key")))
        .arg("-CAfile")
        .arg(gw.dir.join("root.crt"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs `openssl s_client` against the gateway (as client `name`, if given), sends one
/// request, and returns everything it printed.
fn s_client(gw: &Gateway, client: Option<&str>) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{}", gw.port),
        "-servername",
        "localhost",
    ])
    .arg("-CAfile")
    .arg(gw.dir.join("root.crt"))
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(name) = client {
        // -cert sends only the leaf; -cert_chain adds the intermediate from the same file.
        cmd.arg("-cert").arg(gw.dir.join(format!("{name}.crt")));
        cmd.arg("-cert_chain").arg(gw.dir.join(format!("{name}.crt")));
        cmd.arg("-key").arg(gw.dir.join(format!("{name}.key")));
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    // Keep stdin open briefly: s_client exits at EOF before reading a late alert.
    std::thread::sleep(Duration::from_millis(500));
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Optional mode: a route that needs a certificate answers 496 without one; a route that does
/// not answers 200; /admin and /health live on the same host.
#[test]
fn optional_mode_lets_each_route_decide() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &[]));
    let up = upstream(Duration::ZERO);
    let config = format!(
        "{}{}\n[[route]]\npath = \"/health\"\nupstream = \"app\"\nclient_cert = \"optional\"\n\n[[route]]\npath = \"/admin\"\nupstream = \"app\"\n",
        listener("optional", ""),
        upstream_block("app", up)
    );
    let gw = Gateway::start(dir, &config);
    let health = curl_as(&gw, None, "/health", &[]);
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(echoed_header(&health.body, "x-client-verify").as_deref(), Some("NONE"));
    let admin = curl_as(&gw, None, "/admin/users", &[]);
    assert_eq!(admin.status, 496, "{admin:?}");
    assert!(admin.body.contains("client certificate required"), "{admin:?}");
    let admin_ok = curl_as(&gw, Some("joe"), "/admin/users", &[]);
    assert_eq!(admin_ok.status, 200, "{admin_ok:?}");
    let unrouted = curl_as(&gw, Some("joe"), "/other", &[]);
    assert_eq!(unrouted.status, 404, "{unrouted:?}");
}

/// An expired certificate gets 495 naming the expiry date (optional mode) and a
/// handshake failure (required mode).
#[test]
fn expired_client_certificate_is_refused_with_date() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    let t0 = OffsetDateTime::now_utc() - time::Duration::days(30);
    let expired = pki.leaf(LeafSpec {
        cn: "old".into(),
        not_before: Some(t0),
        not_after: Some(t0 + time::Duration::days(1)),
        ..LeafSpec::client()
    });
    write_leaf(dir, "old", &expired);
    let gw = simple(dir, "optional", "");
    let r = curl_as(&gw, Some("old"), "/", &[]);
    assert_eq!(r.status, 495, "{r:?}");
    let expected = certgate_pki::validity::format_time(t0 + time::Duration::days(1));
    assert!(r.body.contains(&format!("certificate CN=old expired on {expected}")), "{r:?}");
    drop(gw);

    let gw = simple(dir, "required", "");
    let r = curl_as(&gw, Some("old"), "/", &[]);
    assert_ne!(r.exit, 0, "{r:?}");
    let out = s_client(&gw, Some("old"));
    assert!(out.contains("alert certificate expired"), "{out}");
}

/// A certificate revoked in the configured CRL is refused with the reason.
#[test]
fn revoked_client_certificate_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    let bad = pki.client("bad", &[]);
    let good = pki.client("good", &[]);
    write_leaf(dir, "bad", &bad);
    write_leaf(dir, "good", &good);
    std::fs::write(dir.join("crl.pem"), pki.crl(&[&bad])).unwrap();
    let up = upstream(Duration::ZERO);
    let config = format!(
        "{}crls = [\"crl.pem\"]\n{}\n[[route]]\nupstream = \"app\"\n",
        listener("optional", ""),
        upstream_block("app", up)
    );
    let gw = Gateway::start(dir, &config);
    let r = curl_as(&gw, Some("bad"), "/", &[]);
    assert_eq!(r.status, 495, "{r:?}");
    assert!(r.body.contains(&format!("serial {} was revoked", bad.serial_hex)), "{r:?}");
    assert!(r.body.contains("keyCompromise"), "{r:?}");
    assert_eq!(curl_as(&gw, Some("good"), "/", &[]).status, 200);
}

/// A client chain root → intermediate → intermediate → leaf is accepted at the default depth.
#[test]
fn two_intermediate_chain_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = TestPki::with_two_intermediates();
    pki.write_root(dir);
    pki.server(&["localhost"]).write(dir, "server");
    write_leaf(dir, "deep", &pki.client("deep", &[]));
    let gw = simple(dir, "required", "");
    let r = curl_as(&gw, Some("deep"), "/", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        echoed_header(&r.body, "x-client-issuer").as_deref(),
        Some("CN=certgate test intermediate CA 2,O=certgate tests")
    );
}

/// Each allow-list kind admits a matching identity and answers 403 naming the identity
/// otherwise.
#[test]
fn allow_lists_admit_matches_and_deny_others() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    let joe = pki.leaf(LeafSpec {
        cn: "joe".into(),
        sans: vec!["spiffe://example.test/ns/prod/sa/web".into(), "joe.example.test".into()],
        subject_o: Some("Acme".into()),
        subject_ou: Some("payments".into()),
        profile: Profile::Client,
        ..LeafSpec::client()
    });
    write_leaf(dir, "joe", &joe);
    write_leaf(dir, "eve", &pki.client("eve", &["spiffe://example.test/ns/prod/sa/db"]));
    let joe_id = PeerIdentity::from_der(&joe.der).unwrap();
    let up = upstream(Duration::ZERO);
    let kinds = [
        ("spiffe", "\"spiffe://example.test/ns/*/sa/web\"".to_string()),
        ("dns", "\"*.example.test\"".to_string()),
        ("cn", "\"joe\"".to_string()),
        ("o", "\"Acme\"".to_string()),
        ("ou", "\"payments\"".to_string()),
        ("issuer", format!("\"{}\"", joe_id.issuer)),
        ("fingerprint_sha256", format!("\"{}\"", joe_id.fingerprint_sha256)),
    ];
    let mut config = format!("{}{}", listener("required", ""), upstream_block("app", up));
    for (kind, value) in &kinds {
        config.push_str(&format!(
            "\n[[route]]\npath = \"/{kind}\"\nupstream = \"app\"\n[route.allow]\n{kind} = [{value}]\n"
        ));
    }
    let gw = Gateway::start(dir, &config);
    for (kind, _) in &kinds {
        let allowed = curl_as(&gw, Some("joe"), &format!("/{kind}"), &[]);
        assert_eq!(allowed.status, 200, "{kind}: {allowed:?}");
        let path = format!("/{kind}");
        let denied = curl_as(&gw, Some("eve"), &path, &[]);
        if *kind == "issuer" {
            // eve has the same issuer: the issuer list admits her too.
            assert_eq!(denied.status, 200, "{kind}: {denied:?}");
            continue;
        }
        assert_eq!(denied.status, 403, "{kind}: {denied:?}");
        assert!(
            denied
                .body
                .contains("client CN=eve (spiffe://example.test/ns/prod/sa/db) is not allowed"),
            "{kind}: {denied:?}"
        );
    }
}

/// The three header formats carry exact values, and spoofed inbound copies (any case, `_`
/// for `-`) never reach the upstream.
#[test]
fn identity_header_formats_are_exact_and_spoofing_is_stripped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    let joe = pki.client("joe", &["spiffe://example.test/joe"]);
    write_leaf(dir, "joe", &joe);
    let id = PeerIdentity::from_der(&joe.der).unwrap();
    let up = upstream(Duration::ZERO);
    let mut config = format!("{}{}", listener("required", ""), upstream_block("app", up));
    for fmt in ["nginx", "xfcc", "rfc9440"] {
        config.push_str(&format!(
            "\n[[route]]\npath = \"/{fmt}\"\nupstream = \"app\"\nidentity_headers = \"{fmt}\"\n"
        ));
    }
    config.push_str("\n[[route]]\npath = \"/custom\"\nupstream = \"app\"\n[route.header_names]\nsubject = \"SSL_Client\"\nsan_uri = \"SSL_Client_San\"\nverify = \"SSL_Client_Verify\"\n");
    let gw = Gateway::start(dir, &config);
    let spoof = [
        "-H",
        "X-Client-Subject: CN=admin",
        "-H",
        "X_Client_Subject: CN=admin",
        "-H",
        "x-CLIENT-verify: SUCCESS",
        "-H",
        "X-Forwarded-Client-Cert: Hash=00;Subject=\"CN=admin\"",
        "-H",
        "Client-Cert: :AAAA:",
        "-H",
        "SSL_Client: CN=admin",
    ];

    let nginx = curl_as(&gw, Some("joe"), "/nginx", &spoof);
    assert_eq!(nginx.status, 200, "{nginx:?}");
    let h = |name| echoed_header(&nginx.body, name);
    assert_eq!(h("x-client-verify").as_deref(), Some("SUCCESS"));
    assert_eq!(h("x-client-subject").as_deref(), Some("CN=joe"));
    assert_eq!(h("x-client-issuer").as_deref(), Some(id.issuer.as_str()));
    assert_eq!(h("x-client-san-uri").as_deref(), Some(r#"["spiffe://example.test/joe"]"#));
    assert_eq!(h("x-client-cert").as_deref(), Some(id.escaped_pem().as_str()));
    assert_eq!(h("x-client-fingerprint").as_deref(), Some(id.fingerprint_sha256.as_str()));
    assert_eq!(h("x-client-serial").as_deref(), Some(joe.serial_hex.as_str()));
    assert_eq!(h("x-client-thumbprint").as_deref(), Some(id.x5t_s256.as_str()));
    assert_eq!(nginx.body.matches("CN=admin").count(), 0, "{}", nginx.body);
    assert!(
        h("x_client_subject").is_none() && h("ssl_client").is_none() && h("client-cert").is_none()
    );
    assert!(h("x-forwarded-client-cert").is_none(), "{}", nginx.body);

    let xfcc = curl_as(&gw, Some("joe"), "/xfcc", &spoof);
    let value = echoed_header(&xfcc.body, "x-forwarded-client-cert").unwrap();
    assert_eq!(
        value,
        format!(
            "Hash={};Cert=\"{}\";Subject=\"CN=joe\";URI=spiffe://example.test/joe",
            id.fingerprint_sha256,
            id.escaped_pem()
        )
    );
    assert!(echoed_header(&xfcc.body, "x-client-subject").is_none(), "{}", xfcc.body);

    let rfc = curl_as(&gw, Some("joe"), "/rfc9440", &spoof);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(
        echoed_header(&rfc.body, "client-cert").unwrap(),
        format!(":{}:", b64.encode(&joe.der))
    );
    let chain = joe.chain_der();
    assert_eq!(
        echoed_header(&rfc.body, "client-cert-chain").unwrap(),
        format!(":{}:", b64.encode(&chain[1]))
    );
    assert_eq!(rfc.body.matches("CN=admin").count(), 0, "{}", rfc.body);

    let custom = curl_as(&gw, Some("joe"), "/custom", &spoof);
    assert_eq!(echoed_header(&custom.body, "ssl_client").as_deref(), Some("CN=joe"));
    assert_eq!(
        echoed_header(&custom.body, "ssl_client_san").as_deref(),
        Some(r#"["spiffe://example.test/joe"]"#)
    );
    assert_eq!(echoed_header(&custom.body, "ssl_client_verify").as_deref(), Some("SUCCESS"));

    // HTTP/2 gets the same treatment.
    let h2 = curl_as(&gw, Some("joe"), "/nginx", &["--http2", "-H", "x_client_subject: CN=admin"]);
    assert_eq!(h2.status, 200, "{h2:?}");
    assert_eq!(echoed_header(&h2.body, "x-client-subject").as_deref(), Some("CN=joe"));
    assert_eq!(h2.body.matches("CN=admin").count(), 0, "{}", h2.body);

    let log = gw.access_log();
    let line = log.lines().next().expect("an access log line");
    let entry: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(entry["client_subject"], "CN=joe");
    assert_eq!(entry["client_spiffe_id"], "spiffe://example.test/joe");
    assert_eq!(entry["client_verify"], "SUCCESS");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["upstream"], "app");
}

/// A Host that differs from the SNI gets 421 on a client-auth listener.
#[test]
fn sni_host_mismatch_is_421() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &[]));
    let gw = simple(dir, "required", "");
    let r = curl_as(&gw, Some("joe"), "/", &["-H", "Host: admin.example.test"]);
    assert_eq!(r.status, 421, "{r:?}");
    assert!(r.body.contains("opened for localhost"), "{r:?}");
    let same = curl_as(&gw, Some("joe"), "/", &["-H", "Host: LOCALHOST:443"]);
    assert_eq!(same.status, 200, "{same:?}");
}

/// An HTTPS upstream that requires a client certificate is reached with the gateway's own
/// certificate; one whose certificate does not verify gives 502 naming the cause.
#[test]
fn https_upstream_with_mutual_tls_and_unverifiable_upstream() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &[]));
    // The upstream's own PKI; the gateway presents a client certificate from it.
    let (_server, port, _) = mtls_upstream(dir, "gateway");
    let config = format!(
        r#"{}
[[upstream]]
name = "secure"
url = "https://127.0.0.1:{port}"
ca = ["upstream-ca.crt"]
server_name = "api.internal"
client_cert = "gw.crt"
client_key = "gw.key"

[[upstream]]
name = "untrusted"
url = "https://127.0.0.1:{port}"
ca = ["root.crt"]
server_name = "api.internal"

[[upstream]]
name = "no-client-cert"
url = "https://127.0.0.1:{port}"
ca = ["upstream-ca.crt"]
server_name = "api.internal"

[[route]]
path = "/secure"
upstream = "secure"

[[route]]
path = "/untrusted"
upstream = "untrusted"

[[route]]
path = "/anonymous"
upstream = "no-client-cert"
"#,
        listener("required", ""),
    );
    let gw = Gateway::start(dir, &config);
    let ok = curl_as(&gw, Some("joe"), "/secure", &[]);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(ok.body.contains("CN=gateway"), "s_server saw the gateway's certificate: {}", ok.body);
    let bad = curl_as(&gw, Some("joe"), "/untrusted", &[]);
    assert_eq!(bad.status, 502, "{bad:?}");
    // The client learns which upstream failed, never its address or the TLS error: those
    // go to the log.
    assert_eq!(bad.body.trim(), "upstream untrusted is unreachable", "{bad:?}");
    assert!(!bad.body.contains("127.0.0.1"), "{bad:?}");
    let log = gw.stderr();
    assert!(
        log.contains("untrusted") && log.contains("127.0.0.1") && log.contains("UnknownIssuer"),
        "the cause is logged: {log}"
    );
    let anon = curl_as(&gw, Some("joe"), "/anonymous", &[]);
    assert_eq!(anon.status, 502, "{anon:?}");
}

/// An upstream that is down gives 502; one slower than response_timeout gives 504.
#[test]
fn upstream_down_is_502_and_slow_is_504() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &[]));
    let (_held, dead) = dead_port();
    let slow = upstream(Duration::from_secs(3));
    let config = format!(
        "{}{}{}response_timeout = \"1s\"\n\n[[route]]\npath = \"/down\"\nupstream = \"down\"\n\n[[route]]\npath = \"/slow\"\nupstream = \"slow\"\n",
        listener("required", ""),
        upstream_block("down", dead),
        upstream_block("slow", slow),
    );
    let gw = Gateway::start(dir, &config);
    let down = curl_as(&gw, Some("joe"), "/down", &[]);
    assert_eq!(down.status, 502, "{down:?}");
    assert_eq!(down.body.trim(), "upstream down is unreachable", "{down:?}");
    assert!(gw.stderr().contains("Connection refused"), "{}", gw.stderr());
    let started = Instant::now();
    let slow = curl_as(&gw, Some("joe"), "/slow", &[]);
    assert_eq!(slow.status, 504, "{slow:?}");
    assert!(slow.body.contains("did not answer within 1 s"), "{slow:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "the timeout cut the wait short");
}

/// A client sending its request head one byte a second is cut off by header_read_timeout
/// while another client is served.
#[test]
fn slow_request_head_is_cut_off_while_others_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &[]));
    let up = upstream(Duration::ZERO);
    let config = format!(
        "{}{}\n[[route]]\nupstream = \"app\"\n",
        listener("required", "[listener.limits]\nheader_read_timeout = \"2s\"\n"),
        upstream_block("app", up)
    );
    let gw = Gateway::start(dir, &config);
    let mut slow = s_client_session(&gw, "joe");
    let mut stdin = slow.stdin.take().unwrap();
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        for b in b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1111111111\r\n\r\n" {
            if stdin.write_all(&[*b]).is_err() || stdin.flush().is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    // Meanwhile another client is served promptly.
    std::thread::sleep(Duration::from_millis(500));
    let other = curl_as(&gw, Some("joe"), "/", &[]);
    assert_eq!(other.status, 200, "{other:?}");
    let mut out = String::new();
    slow.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let _ = slow.wait();
    let elapsed = started.elapsed();
    // Cut off by the 2 s header timeout: not at once (the handshake worked), not at the end.
    assert!(
        elapsed >= Duration::from_millis(1500),
        "closed too early ({elapsed:?}): not by the timeout"
    );
    assert!(elapsed < Duration::from_secs(10), "the slow client was cut off after {elapsed:?}");
    assert!(!out.contains("200 OK"), "the slow request must not be served: {out}");
    drop(writer);
}

/// `idle_timeout` closes a connection on which nothing moves, and only that one: a client
/// that keeps sending requests on its connection is served past the timeout.
#[test]
fn idle_connection_is_closed_and_busy_one_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &[]));
    let up = upstream(Duration::ZERO);
    let config = format!(
        "{}{}\n[[route]]\nupstream = \"app\"\n",
        listener(
            "required",
            "[listener.limits]\nidle_timeout = \"1s\"\nheader_read_timeout = \"30s\"\n"
        ),
        upstream_block("app", up)
    );
    let gw = Gateway::start(dir, &config);
    let started = Instant::now();
    let mut idle = s_client_session(&gw, "joe");
    let mut busy = s_client_session(&gw, "joe");
    let idle_stdin = idle.stdin.take().unwrap();
    let mut busy_stdin = busy.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for _ in 0..8 {
            let req = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
            if busy_stdin.write_all(req).is_err() || busy_stdin.flush().is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(400));
        }
    });
    let mut out = String::new();
    idle.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let idle_for = started.elapsed();
    let _ = idle.wait();
    drop(idle_stdin);
    assert!(idle_for >= Duration::from_millis(900), "closed before the timeout ({idle_for:?})");
    assert!(idle_for < Duration::from_secs(8), "idle connection kept for {idle_for:?}");
    writer.join().unwrap();
    let _ = busy.kill();
    let mut served = String::new();
    busy.stdout.take().unwrap().read_to_string(&mut served).unwrap();
    let _ = busy.wait();
    assert_eq!(
        served.matches("HTTP/1.1 200").count(),
        8,
        "every request over 3.2 s on one connection is answered: {served}"
    );
}

/// The quickstart serves its curl commands' promises: 200 with identity, 496 without.
#[test]
fn quickstart_serves_what_it_prints() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("qs");
    let port = free_port();
    let log = tmp.path().join("qs.out");
    let mut child = Command::new(CERTGATE)
        .args(["quickstart", "--listen", &format!("127.0.0.1:{port}"), "--dir"])
        .arg(&dir)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port, &mut child, &log);
    let _guard = Proc(child);
    let url = format!("https://localhost:{port}/hello");
    let ca = dir.join("root.crt").display().to_string();
    let crt = dir.join("client.crt").display().to_string();
    let key = dir.join("client.key").display().to_string();
    let ok = curl(&[
        "--cacert",
        &ca,
        "--cert",
        &crt,
        "--key",
        &key,
        "-H",
        "X-Client-Subject: CN=admin",
        &url,
    ]);
    assert_eq!(ok.status, 200, "{ok:?}");
    let echoed: serde_json::Value = serde_json::from_str(&ok.body).unwrap();
    assert_eq!(echoed["headers"]["x-client-subject"], "CN=client");
    assert_eq!(
        echoed["headers"]["x-client-san-uri"],
        r#"["spiffe://certgate.test/quickstart-client"]"#
    );
    let anonymous = curl(&["--cacert", &ca, &url]);
    assert_eq!(anonymous.status, 496, "{anonymous:?}");
    let printed = std::fs::read_to_string(&log).unwrap();
    assert!(printed.contains("curl --cacert") && printed.contains("client.key"), "{printed}");
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dir.join("client.key")).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode, 0o600);
}

/// Starts `certgate quickstart --dir DIR` in `cwd` on a free port and waits until it serves;
/// returns the process, its port and the file holding what it printed.
fn start_quickstart(cwd: &std::path::Path, dir: &str) -> (Proc, u16, std::path::PathBuf) {
    let port = free_port();
    let log = cwd.join(format!("quickstart-{port}.out"));
    let mut child = Command::new(CERTGATE)
        .current_dir(cwd)
        .args(["quickstart", "--listen", &format!("127.0.0.1:{port}"), "--dir", dir])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port, &mut child, &log);
    (Proc(child), port, log)
}

/// The "run it yourself" command quickstart prints serves the same gateway, echo service
/// included, after quickstart has exited, from the directory quickstart was started in.
#[test]
fn quickstart_hint_serves_after_quickstart_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let (quickstart, port, log) = start_quickstart(tmp.path(), "qs");
    drop(quickstart);
    let printed = std::fs::read_to_string(&log).unwrap();
    let hint = printed
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("certgate serve --config"))
        .unwrap_or_else(|| panic!("no serve command in {printed}"));
    assert_eq!(hint, "certgate serve --config qs/certgate.toml", "{printed}");
    let words: Vec<&str> = hint.split_whitespace().skip(1).collect();
    let serve_log = tmp.path().join("serve.out");
    let mut child = Command::new(CERTGATE)
        .current_dir(tmp.path())
        .args(&words)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&serve_log).unwrap())
        .spawn()
        .unwrap();
    wait_for_port(port, &mut child, &serve_log);
    let _serve = Proc(child);
    let qs = tmp.path().join("qs");
    let file = |name: &str| qs.join(name).display().to_string();
    let url = format!("https://localhost:{port}/hello");
    let (ca, crt, key) = (file("root.crt"), file("client.crt"), file("client.key"));
    let ok = curl(&["--cacert", &ca, "--cert", &crt, "--key", &key, &url]);
    assert_eq!(ok.status, 200, "{ok:?}");
    let echoed: serde_json::Value = serde_json::from_str(&ok.body).unwrap();
    assert_eq!(echoed["headers"]["x-client-subject"], "CN=client", "{echoed}");
    assert_eq!(curl(&["--cacert", &ca, &url]).status, 496);
    let config = std::fs::read_to_string(qs.join("certgate.toml")).unwrap();
    assert!(config.contains("# Run it yourself, after quickstart has exited: certgate serve"));
    assert!(config.contains("url = \"http://127.0.0.1:3000\""), "{config}");
}

/// quickstart never overwrites a file it did not write: a directory holding other files is
/// refused, naming them, and left as it was; in its own directory, a file added there or a
/// certgate.toml changed after it wrote it is refused too, while an unchanged one is
/// rewritten for a new --listen address and the PKI is reused.
#[test]
fn quickstart_never_overwrites_files_it_did_not_write() {
    let tmp = tempfile::tempdir().unwrap();
    let quickstart = |dir: &str| {
        Command::new(CERTGATE)
            .current_dir(tmp.path())
            .args(["quickstart", "--listen", "127.0.0.1:1", "--dir", dir])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let refused = |dir: &str| {
        let out = quickstart(dir);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Someone else's directory, holding a file with one of quickstart's names.
    let theirs = tmp.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::write(theirs.join("server.key"), "my key").unwrap();
    std::fs::write(theirs.join("notes.txt"), "my notes").unwrap();
    let err = refused("theirs");
    assert!(
        err.contains(
            "theirs holds files that certgate quickstart did not write: notes.txt, server.key;"
        ),
        "{err}"
    );
    let mut left: Vec<String> = std::fs::read_dir(&theirs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["notes.txt", "server.key"], "nothing was added");
    assert_eq!(std::fs::read_to_string(theirs.join("server.key")).unwrap(), "my key");

    // quickstart's own directory: reused, and its config follows --listen.
    let (first, _, _) = start_quickstart(tmp.path(), "qs");
    drop(first);
    let qs = tmp.path().join("qs");
    let client_key = std::fs::read(qs.join("client.key")).unwrap();
    let (second, port, _) = start_quickstart(tmp.path(), "qs");
    drop(second);
    let config = std::fs::read_to_string(qs.join("certgate.toml")).unwrap();
    assert!(config.contains(&format!("listen = \"127.0.0.1:{port}\"")), "{config}");
    assert_eq!(std::fs::read(qs.join("client.key")).unwrap(), client_key, "the PKI is reused");

    // A file added to it is named and left alone.
    std::fs::write(qs.join("app.toml"), "mine").unwrap();
    let err = refused("qs");
    assert!(err.contains("did not write: app.toml;"), "{err}");
    std::fs::remove_file(qs.join("app.toml")).unwrap();

    // A certgate.toml changed after quickstart wrote it (pointed at an app) is not replaced.
    let changed = config.replace("upstream = \"@echo\"", "upstream = \"app\"");
    std::fs::write(qs.join("certgate.toml"), &changed).unwrap();
    let err = refused("qs");
    assert!(
        err.contains("qs/certgate.toml was changed after certgate quickstart wrote it, and is not overwritten"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(qs.join("certgate.toml")).unwrap(), changed);
}

/// TCP connection to a gateway port, for raw probes.
#[allow(dead_code)]
fn raw(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).unwrap()
}

/// Runs `certgate serve --check` and `certgate serve` on `config` in `dir`; both must exit
/// non-zero without serving, and print every one of `expected` fragments.
fn assert_config_refused(dir: &std::path::Path, config: &str, expected: &[&str]) {
    let path = dir.join("bad.toml");
    std::fs::write(&path, config).unwrap();
    for check in [true, false] {
        let mut cmd = Command::new(CERTGATE);
        cmd.arg("serve").arg("--config").arg(&path);
        if check {
            cmd.arg("--check");
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "check={check}: must fail: {stderr}");
        for fragment in expected {
            assert!(stderr.contains(fragment), "check={check}: missing {fragment:?} in: {stderr}");
        }
    }
}

/// Bad configurations are refused by both `--check` and `serve`, naming file, field and
/// reason, every problem at once.
#[test]
fn bad_config_is_refused_with_file_field_and_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    pki.client("other", &[]).write(dir, "other");
    std::fs::write(dir.join("garbage.crt"), "-----BEGIN CERTIFICATE-----\nnot base64!!\n").unwrap();
    let good = format!(
        "{}{}\n[[route]]\nupstream = \"app\"\n",
        listener("required", ""),
        upstream_block("app", 1)
    );
    let good = good.replace("{port}", &free_port().to_string());
    let file = dir.join("bad.toml").display().to_string();

    // The good config passes --check.
    std::fs::write(dir.join("good.toml"), &good).unwrap();
    let ok = Command::new(CERTGATE)
        .args(["serve", "--check", "--config"])
        .arg(dir.join("good.toml"))
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("ok"));

    // Malformed TOML: the line is named.
    assert_config_refused(dir, "[[listener]\nlisten = 1\n", &[&file, "line 1"]);
    // Unknown field.
    assert_config_refused(
        dir,
        &good.replace("mode = \"required\"", "mode = \"required\"\nverify_depth = 2"),
        &[&file, "unknown field `verify_depth`"],
    );
    // Missing key file, mismatched key, unreadable (damaged) CA, and an unknown upstream: all at once.
    let many = good
        .replace("key = \"server.key\"", "key = \"other.key\"")
        .replace("trust = [\"root.crt\"]", "trust = [\"garbage.crt\", \"missing-ca.crt\"]")
        .replace("upstream = \"app\"\n", "upstream = \"nowhere\"\n");
    assert_config_refused(
        dir,
        &many,
        &[
            "listener[0].certificates[0].key: other.key: the private key does not belong to the certificate",
            "listener[0].client_auth.trust[0]",
            "garbage.crt",
            "listener[0].client_auth.trust[1]",
            "missing-ca.crt",
            "route[0].upstream: no upstream named \"nowhere\"",
        ],
    );
    let missing_key = good.replace("key = \"server.key\"", "key = \"absent.key\"");
    assert_config_refused(
        dir,
        &missing_key,
        &["listener[0].certificates[0].key", "absent.key", "No such file"],
    );
    // A dangerous mode must be spelled as such.
    assert_config_refused(
        dir,
        &good.replace("\"required\"", "\"optional_no_ca\""),
        &["dangerous_optional_no_ca"],
    );
}

/// The documented example configuration loads (`serve --check`), given the PKI files it names.
#[test]
fn documented_example_config_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let pki_dir = tmp.path().join("example-pki");
    std::fs::create_dir_all(&pki_dir).unwrap();
    pki_in(&pki_dir);
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/example.certgate.toml");
    let config = tmp.path().join("example.certgate.toml");
    std::fs::copy(example, &config).unwrap();
    let out = Command::new(CERTGATE)
        .args(["serve", "--check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok"));
}

/// Seed 004's `error_page 495 496 =400 /400.html`: the gateway's own refusals get the
/// branded page and status chosen by `Accept` (HTML for browsers, JSON for API clients, the
/// text for curl), with certificate text escaped; a route's pages come before the
/// listener's; the access log records the status sent.
#[test]
fn error_pages_brand_refusals_by_accept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    // A trusted certificate whose subject carries markup and quotes, and one from another CA.
    pki.client("<script>\"x\"</script>", &[]).write(dir, "evil");
    TestPki::named("other").client("stranger", &[]).write(dir, "stranger");
    std::fs::write(
        dir.join("400.html"),
        "<html><h1>{{status}}</h1><p class=\"{{code}}\">{{reason}}</p></html>\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("400.json"),
        "{\"status\": {{status}}, \"error\": \"{{code}}\", \"detail\": \"{{reason}}\"}\n",
    )
    .unwrap();
    std::fs::write(dir.join("api.json"), "{\"api_error\": \"{{code}}\"}\n").unwrap();
    let listener_pages = "[[listener.error_page]]\non = [403, 495, 496]\nstatus = 400\nhtml = \"400.html\"\njson = \"400.json\"\n";
    let config = format!(
        "{}\n[[route]]\nupstream = \"@echo\"\n\n[[route]]\npath = \"/admin\"\nupstream = \"@echo\"\nallow = {{ cn = [\"admin\"] }}\n\n[[route]]\npath = \"/api\"\nupstream = \"@echo\"\n\
         [[route.error_page]]\non = [496]\njson = \"api.json\"\n\n[access_log]\nenabled = true\n",
        listener("optional", listener_pages)
    );
    let gw = Gateway::start(dir, &config);
    let html = ["-H", "Accept: text/html,application/xhtml+xml,*/*;q=0.8", "-i"];
    let page = curl_as(&gw, None, "/", &html);
    assert_eq!(page.status, 400, "{page:?}");
    assert!(page.body.to_ascii_lowercase().contains("content-type: text/html"), "{}", page.body);
    assert!(page.body.to_ascii_lowercase().contains("vary: accept"), "{}", page.body);
    assert!(page.body.contains("<p class=\"certificate_required\">client certificate required"));

    let json = curl_as(&gw, None, "/", &["-H", "Accept: application/json"]);
    assert_eq!(json.status, 400);
    let doc: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(doc["status"], 400);
    assert_eq!(doc["error"], "certificate_required");

    let plain = curl_as(&gw, None, "/", &[]);
    assert_eq!(plain.status, 400);
    assert!(plain.body.starts_with("client certificate required"), "{plain:?}");

    let stranger = curl_as(&gw, Some("stranger"), "/", &html);
    assert_eq!(stranger.status, 400, "{stranger:?}");
    assert!(stranger.body.contains("class=\"unknown_issuer\""), "{}", stranger.body);

    // The evil subject (refused by the allow-list, 403 → 400) reaches the page only
    // escaped, in HTML and in JSON.
    let evil = curl_as(&gw, Some("evil"), "/admin", &html);
    assert_eq!(evil.status, 400, "{evil:?}");
    assert!(evil.body.contains("class=\"forbidden\""), "{}", evil.body);
    assert!(!evil.body.contains("<script"), "{}", evil.body);
    assert!(evil.body.contains("&lt;script"), "{}", evil.body);
    let evil = curl_as(&gw, Some("evil"), "/admin", &["-H", "Accept: application/json"]);
    let doc: serde_json::Value = serde_json::from_str(&evil.body).unwrap();
    assert!(doc["detail"].as_str().unwrap().contains("<script"), "{doc}");

    // The route's own page for 496; its 495 falls through to the listener's rule.
    let api = curl_as(&gw, None, "/api", &["-H", "Accept: application/json"]);
    assert_eq!(api.status, 496, "the route's rule keeps the status: {api:?}");
    let doc: serde_json::Value = serde_json::from_str(&api.body).unwrap();
    assert_eq!(doc["api_error"], "certificate_required");
    let api = curl_as(&gw, Some("stranger"), "/api", &["-H", "Accept: application/json"]);
    assert_eq!(api.status, 400);

    let log = gw.access_log();
    assert!(log.lines().filter(|l| l.contains("\"status\":400")).count() >= 5, "{log}");
    assert!(log.contains("\"status\":496"), "{log}");
}

/// A JSON error page whose placeholders would make invalid JSON, or an unknown placeholder,
/// is refused at load with the file and the reason.
#[test]
fn broken_error_page_templates_are_refused_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    pki_in(dir);
    std::fs::write(dir.join("bad.json"), "{\"error\": {{reason}}}\n").unwrap();
    std::fs::write(dir.join("bad.html"), "<p>{{subject}}</p>\n").unwrap();
    let pages =
        "[[listener.error_page]]\non = [496, 200]\nhtml = \"bad.html\"\njson = \"bad.json\"\n";
    let config = format!("{}\n[[route]]\nupstream = \"@echo\"\n", listener("optional", pages));
    let (code, text) = serve_check(dir, &config);
    assert_ne!(code, 0);
    assert!(
        text.contains("listener[0].error_page[0].json") && text.contains("bad.json: not JSON"),
        "{text}"
    );
    assert!(text.contains("unknown placeholder {{subject}}"), "{text}");
    assert!(text.contains("200 is not an answer of the gateway's own"), "{text}");
}

/// `quickstart --oauth` runs the flow it prints: a token for client.p12's certificate, 200 on
/// the API with that certificate, 401 invalid_token with another valid one.
#[test]
fn quickstart_oauth_runs_the_commands_it_prints() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = tmp.path().join("qs.out");
    let mut child = Command::new(CERTGATE)
        .current_dir(tmp.path())
        .args(["quickstart", "--oauth", "--listen", &format!("127.0.0.1:{port}"), "--dir", "qs"])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port, &mut child, &log);
    let _guard = Proc(child);
    let printed = std::fs::read_to_string(&log).unwrap();
    let guide = &printed[printed.find("OAuth (--oauth)").expect("the OAuth guide")..];
    // The printed commands, continuation lines joined, comments left out.
    let script = guide
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("TOKEN=") || l.starts_with("curl"))
        .take(3)
        .map(|l| format!("{l}; echo '<<END>>'"))
        .collect::<Vec<_>>()
        .join("\n");
    let out = Command::new("bash").args(["-c", &script]).current_dir(tmp.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let parts: Vec<&str> = text.split("<<END>>").collect();
    assert!(parts.len() >= 3, "{script}\n{text}");
    let api: serde_json::Value = serde_json::from_str(parts[1].trim()).unwrap_or_else(|e| {
        panic!("the API answer is the echo: {e}\n{text}");
    });
    assert_eq!(api["headers"]["x-token-client-id"], "quickstart-client", "{text}");
    assert_eq!(api["headers"]["x-token-scope"], "accounts:read", "{text}");
    let stolen = parts[2];
    assert!(stolen.contains(" 401"), "{stolen}");
    assert!(stolen.contains("error=\"invalid_token\""), "{stolen}");
    assert!(stolen.contains("bound to another client certificate"), "{stolen}");
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        let meta = |name: &str| std::fs::metadata(tmp.path().join("qs").join(name)).unwrap();
        [meta("oauth-signing.key"), meta("client.p12")].map(|m| m.permissions().mode() & 0o777)
    };
    assert_eq!(mode, [0o600, 0o600]);
}
