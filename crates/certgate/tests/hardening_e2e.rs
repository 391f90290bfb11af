//! End-to-end tests of the request path's guarantees (docs/security.md), tried as an attacker
//! would: the real binary driven by curl over HTTP/1.1 and HTTP/2, openssl, and raw clients
//! (tests/support/raw_client.py) for requests no polite client sends.

// A test that cannot set itself up should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gateway_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use certgate_pki::identity::PeerIdentity;
use certgate_pki::testkit::{LeafSpec, TestPki};
use gateway_support::*;

/// `/admin` needs a certificate (and `/ADMIN`-style spellings with `windows = true`), `/` is
/// open; both go to an upstream that reads paths as frameworks do.
fn admin_and_open(dir: &std::path::Path, windows: bool) -> Gateway {
    let up = framework_upstream();
    let matching =
        if windows { "path_ignore_case = true\npath_ignore_trailing_dots = true\n" } else { "" };
    let config = format!(
        "{}{}\n[[route]]\npath = \"/admin\"\nupstream = \"app\"\n{matching}\n[[route]]\npath = \"/\"\nupstream = \"app\"\nclient_cert = \"optional\"\n",
        listener("optional", ""),
        upstream_block("app", up)
    );
    Gateway::start(dir, &config)
}

fn echoed_line(body: &str, key: &str) -> Option<String> {
    body.lines().find_map(|l| l.strip_prefix(&format!("{key}: ")).map(str::to_string))
}

/// Every spelling of `/admin` that a framework would serve as `/admin` gets `/admin`'s policy
/// (496 without a certificate) or a 400, over HTTP/1.1 and HTTP/2 and in absolute form; what
/// the open route does forward never reads as `/admin` to Flask, Express, Go or a servlet
/// container.
#[test]
fn admin_is_never_reached_without_its_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    pki_in(dir);
    let gw = admin_and_open(dir, false);
    let variants = [
        "/admin",
        "/%61dmin",
        "/%61%64%6D%69%6E/users",
        "/admin;x=1",
        "/admin;jsessionid=1/users",
        "/x/..;/admin",
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E./admin",
        "//admin",
        "/./admin",
        "/admin%2fusers",
        "/%2e%2e/admin",
        "/%252e%252e/admin",
        "/admin%00",
        "/a%3Bb/../admin",
        "/public/%61dmin",
        "/ADMIN",
    ];
    for path in variants {
        for proto in ["--http1.1", "--http2"] {
            let r = curl_as(&gw, None, path, &[proto, "--path-as-is"]);
            check_admin_variant(path, proto, &r);
        }
        let absolute = format!("https://localhost:{}{path}", gw.port);
        let r = curl_as(&gw, None, "/", &["--http1.1", "--request-target", &absolute]);
        check_admin_variant(path, "absolute-form", &r);
    }
}

fn check_admin_variant(path: &str, how: &str, r: &Curl) {
    match r.status {
        400 => assert!(r.body.starts_with("refused path"), "{how} {path}: {r:?}"),
        496 => {}
        200 => {
            for reading in ["decoded", "servlet"] {
                let seen = echoed_line(&r.body, reading).unwrap();
                let admin = seen == "/admin" || seen.starts_with("/admin/");
                assert!(
                    !admin,
                    "{how} {path}: a {reading} upstream would serve {seen} without a certificate"
                );
            }
        }
        other => panic!("{how} {path}: unexpected {other}: {r:?}"),
    }
}

/// With a route that ignores case and trailing dots (for IIS or Windows upstreams), every
/// such spelling gets its policy too.
#[test]
fn windows_spellings_get_the_route_policy_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    pki_in(dir);
    let gw = admin_and_open(dir, true);
    for path in ["/ADMIN", "/Admin/users", "/admin.", "/admin%20", "/%41dmin..", "/admin.%20./x"] {
        for proto in ["--http1.1", "--http2"] {
            let r = curl_as(&gw, None, path, &[proto, "--path-as-is"]);
            assert!(r.status == 496 || r.status == 400, "{proto} {path}: {r:?}");
        }
    }
    assert_eq!(curl_as(&gw, None, "/administrator", &[]).status, 200);
}

/// A client cannot make the gateway drop Host, an identity header (renamed ones included) or
/// a forwarding header by naming it in Connection; inbound forwarding headers are replaced.
#[test]
fn clients_cannot_remove_or_forge_gateway_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &["spiffe://example.test/joe"]));
    let up = upstream(Duration::ZERO);
    let config = format!(
        "{}{}\n[[route]]\nupstream = \"app\"\n[route.header_names]\nsubject = \"SSL_Client\"\n",
        listener("required", ""),
        upstream_block("app", up)
    );
    let gw = Gateway::start(dir, &config);
    let nominate = [
        "-H",
        "Connection: keep-alive, Host, SSL_Client, ssl-client, X-Client-Verify, X-Forwarded-For, X-Forwarded-Proto",
        "-H",
        "X-Forwarded-For: 6.6.6.6",
        "-H",
        "X_Forwarded_For: 6.6.6.6",
        "-H",
        "Forwarded: for=6.6.6.6",
        "-H",
        "X-Real-IP: 6.6.6.6",
        "-H",
        "SSL-Client: CN=admin",
    ];
    for proto in ["--http1.1", "--http2"] {
        let r = curl_as(&gw, Some("joe"), "/", &[&[proto][..], &nominate[..]].concat());
        assert_eq!(r.status, 200, "{proto}: {r:?}");
        let h = |n| echoed_header(&r.body, n);
        assert_eq!(
            h("host").as_deref(),
            Some(format!("localhost:{}", gw.port).as_str()),
            "{proto}"
        );
        assert_eq!(h("ssl_client").as_deref(), Some("CN=joe"), "{proto}: {}", r.body);
        assert_eq!(h("x-client-verify").as_deref(), Some("SUCCESS"), "{proto}");
        assert_eq!(h("x-forwarded-for").as_deref(), Some("127.0.0.1"), "{proto}");
        assert_eq!(h("x-forwarded-proto").as_deref(), Some("https"), "{proto}");
        assert!(!r.body.contains("6.6.6.6") && !r.body.contains("CN=admin"), "{proto}: {}", r.body);
    }
    // Two Host headers, and an absolute-form target naming another host, are refused.
    let two_hosts = raw_client(
        &gw,
        "request",
        Some("joe"),
        &[
            "--data",
            "GET / HTTP/1.1\\r\\nHost: localhost\\r\\nHost: admin.test\\r\\nConnection: close\\r\\n\\r\\n",
        ],
    );
    assert!(two_hosts.starts_with("HTTP/1.1 400"), "{two_hosts}");
    assert!(two_hosts.contains("more than one Host"), "{two_hosts}");
    let absolute = raw_client(
        &gw,
        "request",
        Some("joe"),
        &[
            "--data",
            "GET https://admin.test/ HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n",
        ],
    );
    assert!(absolute.starts_with("HTTP/1.1 400"), "{absolute}");
}

/// Envoy's XFCC grammar, independently: elements by `,`, pairs by `;`, values optionally
/// quoted with `\"` and `\\` escapes. Returns each element's (key, value) pairs.
fn parse_xfcc(v: &str) -> Vec<Vec<(String, String)>> {
    let mut elements = vec![vec![]];
    let (mut key, mut value, mut in_key, mut quoted, mut escaped) =
        (String::new(), String::new(), true, false, false);
    for c in v.chars() {
        if quoted {
            match (escaped, c) {
                (true, _) => {
                    value.push(c);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                (false, _) => value.push(c),
            }
            continue;
        }
        match c {
            '=' if in_key => in_key = false,
            '"' if !in_key && value.is_empty() => quoted = true,
            ';' | ',' => {
                elements
                    .last_mut()
                    .unwrap()
                    .push((std::mem::take(&mut key), std::mem::take(&mut value)));
                in_key = true;
                if c == ',' {
                    elements.push(vec![]);
                }
            }
            _ if in_key => key.push(c),
            _ => value.push(c),
        }
    }
    elements.last_mut().unwrap().push((key, value));
    elements
}

/// Certificate contents cannot add or end a header value: hostile URI SANs and subjects
/// (from a CA that allowed them) come out escaped in XFCC, JSON and RFC 9440, and
/// Client-Cert-Chain carries the verified path, not extra certificates the client sent.
#[test]
fn certificate_contents_cannot_forge_identity_values() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    let hostile_uris = vec![
        "spiffe://example.test/joe\";URI=spiffe://example.test/admin".to_string(),
        "spiffe://example.test/a,Hash=00;By=x".to_string(),
        "spiffe://example.test/back\\slash\\\"".to_string(),
    ];
    let joe = pki.leaf(LeafSpec {
        cn: "joe\", Subject=\"CN=admin\\".into(),
        raw_uri_sans: hostile_uris.clone(),
        ..LeafSpec::client()
    });
    write_leaf(dir, "joe", &joe);
    // The client also sends a stranger's root after its chain.
    let stranger = TestPki::named("stranger");
    let chain_pem = std::fs::read_to_string(dir.join("joe.crt")).unwrap() + &stranger.root_pem();
    std::fs::write(dir.join("joe-extra.crt"), chain_pem).unwrap();
    std::fs::copy(dir.join("joe.key"), dir.join("joe-extra.key")).unwrap();
    let id = PeerIdentity::from_der(&joe.der).unwrap();
    let up = upstream(Duration::ZERO);
    let mut config = format!("{}{}", listener("required", ""), upstream_block("app", up));
    for fmt in ["nginx", "xfcc", "rfc9440"] {
        config.push_str(&format!(
            "\n[[route]]\npath = \"/{fmt}\"\nupstream = \"app\"\nidentity_headers = \"{fmt}\"\n"
        ));
    }
    let gw = Gateway::start(dir, &config);
    for proto in ["--http1.1", "--http2"] {
        let x = curl_as(&gw, Some("joe"), "/xfcc", &[proto]);
        assert_eq!(x.status, 200, "{x:?}");
        let xfcc = echoed_header(&x.body, "x-forwarded-client-cert").unwrap();
        let elements = parse_xfcc(&xfcc);
        assert_eq!(elements.len(), 1, "one element only: {xfcc}");
        let uris: Vec<&str> =
            elements[0].iter().filter(|(k, _)| k == "URI").map(|(_, v)| v.as_str()).collect();
        assert_eq!(uris, hostile_uris.iter().map(String::as_str).collect::<Vec<_>>(), "{xfcc}");
        let subjects: Vec<&str> =
            elements[0].iter().filter(|(k, _)| k == "Subject").map(|(_, v)| v.as_str()).collect();
        assert_eq!(subjects, vec![id.subject.as_str()], "{xfcc}");

        let n = curl_as(&gw, Some("joe"), "/nginx", &[proto]);
        let list: Vec<String> =
            serde_json::from_str(&echoed_header(&n.body, "x-client-san-uri").unwrap()).unwrap();
        assert_eq!(list, hostile_uris);

        let r = curl_as(&gw, Some("joe-extra"), "/rfc9440", &[proto]);
        assert_eq!(r.status, 200, "{r:?}");
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(
            echoed_header(&r.body, "client-cert-chain").unwrap(),
            format!(":{}:", b64.encode(&joe.chain_der()[1])),
            "the verified path's intermediate only, not the stranger's root"
        );
    }
}

/// A SPIFFE allow-list wildcard never matches an empty or dot segment.
#[test]
fn spiffe_wildcards_skip_hollow_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    let ids = [
        ("good", "spiffe://example.test/ns/prod/sa/web", 200),
        ("empty", "spiffe://example.test/ns//sa/web", 403),
        ("dot", "spiffe://example.test/ns/./sa/web", 403),
        ("dotdot", "spiffe://example.test/ns/../sa/web", 403),
        ("encoded", "spiffe://example.test/ns/%2e%2e/sa/web", 403),
    ];
    for (name, uri, _) in ids {
        let leaf = pki.leaf(LeafSpec {
            cn: name.into(),
            raw_uri_sans: vec![uri.into()],
            ..LeafSpec::client()
        });
        write_leaf(dir, name, &leaf);
    }
    let up = upstream(Duration::ZERO);
    let config = format!(
        "{}{}\n[[route]]\nupstream = \"app\"\n[route.allow]\nspiffe = [\"spiffe://example.test/ns/*/sa/web\"]\n",
        listener("required", ""),
        upstream_block("app", up)
    );
    let gw = Gateway::start(dir, &config);
    for (name, uri, expected) in ids {
        let r = curl_as(&gw, Some(name), "/", &[]);
        assert_eq!(r.status, expected, "{uri}: {r:?}");
    }
}

/// An intermediate revoked by the root's CRL is refused by the gateway (495 in optional mode,
/// the alert in required mode), by `certgate verify` with the same code, and by openssl.
#[test]
fn revoked_intermediate_is_refused_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &[]));
    let crls = pki.root_crl(true) + &pki.crl(&[]);
    std::fs::write(dir.join("crls.pem"), &crls).unwrap();
    let up = upstream(Duration::ZERO);
    let config = |mode: &str| {
        format!(
            "{}crls = [\"crls.pem\"]\n{}\n[[route]]\nupstream = \"app\"\n",
            listener(mode, ""),
            upstream_block("app", up)
        )
    };
    let gw = Gateway::start(dir, &config("optional"));
    let r = curl_as(&gw, Some("joe"), "/", &[]);
    assert_eq!(r.status, 495, "{r:?}");
    assert!(
        r.body.contains("CN=certgate test intermediate CA") && r.body.contains("revoked"),
        "{r:?}"
    );
    drop(gw);
    let gw = Gateway::start(dir, &config("required"));
    let r = curl_as(&gw, Some("joe"), "/", &["--http2"]);
    assert_ne!(r.exit, 0, "{r:?}");
    assert!(r.stderr.contains("certificate revoked"), "curl reads the alert: {r:?}");

    let verify = Command::new(CERTGATE)
        .arg("verify")
        .arg(dir.join("joe.crt"))
        .arg("--ca")
        .arg(dir.join("root.crt"))
        .arg("--crl")
        .arg(dir.join("crls.pem"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert_eq!(verify.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("intermediate CA") && stderr.contains("(code: revoked)"), "{stderr}");

    let openssl = Command::new("openssl")
        .args(["verify", "-crl_check_all", "-purpose", "sslclient", "-CAfile"])
        .arg(dir.join("root.crt"))
        .arg("-CRLfile")
        .arg(dir.join("crls.pem"))
        .arg("-untrusted")
        .arg(dir.join("joe.crt"))
        .arg(dir.join("joe.crt"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&openssl.stdout) + String::from_utf8_lossy(&openssl.stderr);
    assert!(!openssl.status.success() && out.contains("revoked"), "{out}");
}

/// A client leaf whose keyUsage lacks digitalSignature is refused by the gateway, by
/// `certgate verify` and by `openssl verify -purpose sslclient`.
#[test]
fn client_leaf_without_digital_signature_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    let leaf = pki.leaf(LeafSpec {
        cn: "enc".into(),
        key_usages: Some(vec![rcgen::KeyUsagePurpose::KeyEncipherment]),
        ..LeafSpec::client()
    });
    write_leaf(dir, "enc", &leaf);
    let up = upstream(Duration::ZERO);
    let config = format!(
        "{}{}\n[[route]]\nupstream = \"app\"\n",
        listener("optional", ""),
        upstream_block("app", up)
    );
    let gw = Gateway::start(dir, &config);
    let r = curl_as(&gw, Some("enc"), "/", &[]);
    // The TLS client itself may refuse to sign with it; if it does sign, the gateway refuses.
    if r.exit == 0 {
        assert_eq!(r.status, 495, "{r:?}");
        assert!(r.body.contains("without digitalSignature"), "{r:?}");
    }
    let verify = Command::new(CERTGATE)
        .arg("verify")
        .arg(dir.join("enc.crt"))
        .arg("--ca")
        .arg(dir.join("root.crt"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(stderr.contains("(code: wrong_key_usage)"), "{stderr}");
    let openssl = Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(dir.join("root.crt"))
        .arg("-untrusted")
        .arg(dir.join("enc.crt"))
        .arg(dir.join("enc.crt"))
        .output()
        .unwrap();
    assert!(!openssl.status.success(), "openssl agrees");
}

/// With mode = "required", curl over HTTP/1.1 and HTTP/2 and openssl s_client see the TLS
/// alert, not a reset; the refusal is logged at info with the peer.
#[test]
fn handshake_refusals_reach_the_client_as_alerts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "mallory", &TestPki::named("rogue").client("mallory", &[]));
    let _ = pki;
    let up = upstream(Duration::ZERO);
    let config = format!(
        "{}{}\n[[route]]\nupstream = \"app\"\n",
        listener("required", ""),
        upstream_block("app", up)
    );
    let gw = Gateway::start_with_env(dir, &config, &[("CERTGATE_LOG", "info")]);
    for _ in 0..3 {
        for proto in ["--http1.1", "--http2"] {
            let none = curl_as(&gw, None, "/", &[proto]);
            assert_ne!(none.exit, 0);
            assert!(none.stderr.contains("certificate required"), "{proto}: {none:?}");
            let rogue = curl_as(&gw, Some("mallory"), "/", &[proto]);
            assert!(rogue.stderr.contains("unknown ca"), "{proto}: {rogue:?}");
        }
    }
    let log = gw.stderr();
    assert!(log.contains("client certificate refused in the handshake"), "{log}");
    assert!(log.contains("127.0.0.1:"), "the peer is named: {log}");
}

/// An idle HTTP/2 connection is closed after idle_timeout although the gateway's own PINGs
/// (answered by the client) keep bytes moving.
#[test]
fn idle_http2_connection_is_closed_despite_pings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &[]));
    let up = upstream(Duration::ZERO);
    let config = format!(
        "{}{}\n[[route]]\nupstream = \"app\"\n",
        listener("required", "[listener.limits]\nidle_timeout = \"2s\""),
        upstream_block("app", up)
    );
    let gw = Gateway::start(dir, &config);
    let out = raw_client(&gw, "h2idle", Some("joe"), &[]);
    let secs: f64 = out
        .split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    let pings: u32 = out.rsplit(' ').next().and_then(|s| s.trim().parse().ok()).unwrap();
    assert!(pings >= 1, "the gateway pinged while idle: {out}");
    assert!((1.9..8.0).contains(&secs), "closed after {secs} s: {out}");
}

/// A request body that stops arriving gets 408 after body_timeout; one over the route's
/// max_body_bytes gets 413, by Content-Length or while streaming.
#[test]
fn stalled_and_oversized_bodies_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &[]));
    let config = format!(
        "{}\n[[route]]\npath = \"/small\"\nupstream = \"@echo\"\nmax_body_bytes = 1000\n\n[[route]]\nupstream = \"@echo\"\n",
        listener("required", "[listener.limits]\nbody_timeout = \"1s\""),
    );
    let gw = Gateway::start(dir, &config);
    let slow = raw_client(
        &gw,
        "slowbody",
        Some("joe"),
        &["--path", "/", "--length", "100", "--send", "10"],
    );
    assert!(slow.starts_with("HTTP/1.1 408"), "{slow}");
    let secs: f64 =
        slow.rsplit("[after ").next().unwrap().trim_end_matches(" s]\n").parse().unwrap();
    assert!((0.9..5.0).contains(&secs), "{slow}");

    let big = "x".repeat(5000);
    for proto in ["--http1.1", "--http2"] {
        let declared = curl_as(&gw, Some("joe"), "/small", &[proto, "--data-binary", &big]);
        assert_eq!(declared.status, 413, "{proto}: {declared:?}");
        // No declared length: chunked over HTTP/1.1, bare DATA frames over HTTP/2.
        let no_length =
            if proto == "--http1.1" { "Transfer-Encoding: chunked" } else { "Content-Length:" };
        let chunked =
            curl_as(&gw, Some("joe"), "/small", &[proto, "-H", no_length, "--data-binary", &big]);
        assert_eq!(chunked.status, 413, "{proto}: {chunked:?}");
        let ok = curl_as(&gw, Some("joe"), "/small", &[proto, "--data-binary", "small"]);
        assert_eq!(ok.status, 200, "{proto}: {ok:?}");
        let unlimited = curl_as(&gw, Some("joe"), "/big", &[proto, "--data-binary", &big]);
        assert!(unlimited.body.contains("\"body_bytes\": 5000"), "{proto}: {unlimited:?}");
    }
}

/// Thousands of idle and half-handshaken connections do not starve a real client: it is
/// served promptly while they are held.
#[test]
fn connection_flood_does_not_starve_real_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &[]));
    let up = upstream(Duration::ZERO);
    let config = format!(
        "{}{}\n[[route]]\nupstream = \"app\"\n",
        listener("required", "[listener.limits]\nhandshake_timeout = \"20s\""),
        upstream_block("app", up)
    );
    let gw = Gateway::start(dir, &config);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/raw_client.py");
    let mut flood = Command::new("python3")
        .args([script, "flood", "--port", &gw.port.to_string()])
        .args(["--idle", "2000", "--slow", "1000", "--hold", "15"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(flood.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the flood could not open its connections");
    for _ in 0..5 {
        let started = Instant::now();
        let r = curl_as(&gw, Some("joe"), "/", &[]);
        assert_eq!(r.status, 200, "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "served in {:?}", started.elapsed());
    }
    let _ = flood.kill();
    let _ = flood.wait();
}

/// A stalled access-log reader never stalls requests: lines queue, then are dropped and
/// counted, while every request is answered.
#[test]
fn stalled_access_log_never_blocks_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &[]));
    let up = upstream(Duration::ZERO);
    let config = format!(
        "{}{}\n[[route]]\nupstream = \"app\"\n",
        listener("required", ""),
        upstream_block("app", up)
    );
    // stdout is a pipe nobody reads: it fills after a few hundred lines.
    let (gw, _unread) = Gateway::start_with_piped_stdout(dir, &config);
    let out = raw_client(&gw, "pipe", Some("joe"), &["--requests", "3000"]);
    assert_eq!(out.trim(), "ok 3000", "{out}");
}

/// Mistakes in the configuration are errors naming the field, never a panic or a silently
/// ignored key.
#[test]
fn config_mistakes_are_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    pki_in(dir);
    let base = format!(
        "{}{}\n[[route]]\nupstream = \"app\"\n",
        listener("required", ""),
        upstream_block("app", 1)
    );
    for (config, expected) in [
        (base.replace("[[route]]", "[[upstream]]\nname = \"x\"\nurl = \"https://x\"\ndangerous_skip_verify = true\n\n[[route]]"), "unknown field `dangerous_skip_verify`"),
        (listener("required", "[listener.limits]\nidle_timeout = \"99999999999d\"") + &upstream_block("app", 1) + "\n[[route]]\nupstream = \"app\"\n", "idle_timeout"),
        (listener("required", "[listener.limits]\nbody_timeout = \"2d\"") + &upstream_block("app", 1) + "\n[[route]]\nupstream = \"app\"\n", "at most 1d"),
        (base.replace("trust = [\"root.crt\"]", ""), "client_auth.trust: client certificates need at least one trust anchor"),
        (base.clone() + "\n[runtime]\nworker_threads = 0\n", "runtime.worker_threads"),
        (base.clone() + "\n[admin]\nlisten = \"0.0.0.0:9901\"\n", "admin.listen: 0.0.0.0:9901 is not a loopback address"),
        (base.replace("[[route]]\nupstream = \"app\"", "[[route]]\npath = \"/a/../admin\"\nupstream = \"app\""), "route[0].path"),
        (base.replace("[[route]]\nupstream = \"app\"", "[[route]]\npath = \"/%61dmin\"\nupstream = \"app\""), "not a normalized path"),
        (listener("required", "trusted_proxies = [\"10.0.0.0/33\"]") + &upstream_block("app", 1) + "\n[[route]]\nupstream = \"app\"\n", "trusted_proxies[0]"),
    ] {
        let path = dir.join("bad.toml");
        std::fs::write(&path, config.replace("{port}", "0")).unwrap();
        let out = Command::new(CERTGATE).args(["serve", "--check", "--config"]).arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{expected}: {stderr}");
        assert!(stderr.contains(expected), "missing {expected:?} in: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// When max_connections cannot fit under the open-files limit, the gateway says so with the
/// numbers at start (and still serves).
#[test]
fn too_small_open_files_limit_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    pki_in(dir);
    let config = format!(
        "{}\n[[route]]\nupstream = \"@echo\"\n",
        listener("optional", "[listener.limits]\nmax_connections = 5000")
    )
    .replace("{port}", "0");
    std::fs::write(dir.join("certgate.toml"), config).unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n 512 && exec {CERTGATE} serve --config certgate.toml"))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    use std::io::BufRead;
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("certgate: listener") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("the open-files limit is 512"), "{seen}");
    assert!(seen.contains("max_connections (5000"), "{seen}");
    assert!(seen.contains("certgate: listener"), "it still serves: {seen}");
}

/// A request refused before it is forwarded still has its body read (bounded), so an HTTP/2
/// client sending one gets the refusal rather than a stream reset (curl: "Stream error in the
/// HTTP/2 framing layer"). Every kind of early refusal, each several times over.
#[test]
fn refusals_of_requests_with_bodies_reach_http2_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    pki_in(dir);
    let config =
        format!("{}\n[[route]]\npath = \"/api\"\nupstream = \"@echo\"\n", listener("optional", ""));
    let gw = Gateway::start(dir, &config);
    let body = dir.join("body.bin");
    // Within the bound the gateway reads of a refused body (256 KiB): beyond it, a client still
    // sending may see the reset, as it does from nginx after its lingering close.
    std::fs::write(&body, vec![b'x'; 192 * 1024]).unwrap();
    let upload = format!("@{}", body.display());
    for (path, status) in [("/api/x", 496), ("/nowhere", 404), ("/%2e%2e/api", 400)] {
        for http in ["--http2", "--http1.1"] {
            for _ in 0..5 {
                let r = curl_as(&gw, None, path, &[http, "--data-binary", &upload]);
                assert_eq!((r.exit, r.status), (0, status), "{path} {http}: {r:?}");
            }
        }
    }
}
