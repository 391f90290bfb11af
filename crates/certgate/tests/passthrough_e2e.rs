//! End-to-end tests of TLS passthrough by SNI: one listener relays some server names
//! undecrypted to upstreams that do their own (m)TLS, and terminates the others itself.

// A test that cannot set itself up should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gateway_support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use certgate_pki::testkit::TestPki;
use gateway_support::*;

/// The gateway's PKI with a server certificate for api.example.test, and a client "joe".
fn gateway_pki(dir: &std::path::Path) -> TestPki {
    let pki = pki_in(dir);
    pki.server(&["api.example.test", "localhost", "127.0.0.1"]).write(dir, "server");
    pki.client("joe", &[]).write(dir, "joe");
    pki
}

/// A TCP upstream that records what each connection sends (until it closes or goes quiet
/// for 500 ms) and reports it on the channel.
fn recording_upstream() -> (u16, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let _ = tx.send(got);
        }
    });
    (port, rx)
}

/// A required-mode listener with an `@echo` route and the passthrough route `idp` for
/// idp.example.test to `up_port`; `listener_extra` goes in the `[[listener]]` table, `extra`
/// after everything.
fn idp_passthrough(up_port: u16, listener_extra: &str, extra: &str) -> String {
    format!(
        "{}\n[[route]]\nupstream = \"@echo\"\n\n[[passthrough]]\nname = \"idp\"\n\
         sni = [\"idp.example.test\"]\nupstream = \"127.0.0.1:{up_port}\"\n{extra}",
        listener("required", listener_extra)
    )
}

/// Runs `raw_client.py hello`: (client's local port, bytes sent, bytes received).
fn send_hello(port: u16, sni: Option<&str>, split: &str) -> (u16, Vec<u8>, Vec<u8>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/raw_client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).args(["hello", "--port", &port.to_string(), "--split", split]);
    if let Some(name) = sni {
        cmd.args(["--sni", name]);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    let hex = |s: String| {
        (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap()).collect()
    };
    (field("local").parse().unwrap(), hex(field("sent")), hex(field("received")))
}

/// Seed 003's topology on one port: idp.example.test is relayed to an `openssl s_server`
/// that does its own mTLS (the client sees the backend's certificate and authenticates to
/// it, the gateway holds no key for that name), while api.example.test is terminated by the
/// gateway with its checks; a Host naming the passed-through host gets 421 on the
/// terminated side, even with the SNI check off; the relay has its access-log line.
#[test]
fn passthrough_relays_by_sni_while_terminating_others_on_one_port() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gateway_pki(dir);
    let idp = TestPki::named("idp");
    std::fs::write(dir.join("idp-ca.crt"), idp.root_pem()).unwrap();
    idp.server(&["idp.example.test"]).write(dir, "idp");
    idp.client("alice", &[]).write(dir, "alice");
    let idp_port = free_port();
    let server = Command::new("openssl")
        .current_dir(dir)
        .args(["s_server", "-accept", &format!("127.0.0.1:{idp_port}")])
        .args(["-cert", "idp.crt", "-cert_chain", "idp.crt", "-key", "idp.key"])
        .args(["-CAfile", "idp-ca.crt", "-Verify", "2", "-www", "-quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Proc(server);
    wait_for_port(idp_port, &mut server.0, &dir.join("none"));
    let config = format!(
        "{}\n[[route]]\nupstream = \"@echo\"\n\n[[passthrough]]\nname = \"idp\"\n\
         sni = [\"idp.example.test\"]\nupstream = \"127.0.0.1:{idp_port}\"\n\n\
         [access_log]\nenabled = true\n",
        listener("required", "sni_host_check = false\n")
    );
    let gw = Gateway::start(dir, &config);

    let mut s_client = Command::new("openssl")
        .current_dir(dir)
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", gw.port)])
        .args(["-servername", "idp.example.test", "-CAfile", "idp-ca.crt"])
        .args(["-cert", "alice.crt", "-key", "alice.key", "-verify_return_error", "-ign_eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    s_client.stdin.take().unwrap().write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let out = s_client.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("s:CN = idp.example.test"), "the backend's own certificate: {text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(text.contains("HTTP/1.0 200 ok"), "the backend accepted alice's certificate: {text}");

    let resolve = format!("api.example.test:{}:127.0.0.1", gw.port);
    let api = format!("https://api.example.test:{}/", gw.port);
    let ca = dir.join("root.crt").display().to_string();
    let (crt, key) = (dir.join("joe.crt"), dir.join("joe.key"));
    let (crt, key) = (crt.display().to_string(), key.display().to_string());
    let terminated =
        curl(&["--resolve", &resolve, "--cacert", &ca, "--cert", &crt, "--key", &key, &api]);
    assert_eq!(terminated.status, 200, "{terminated:?}");
    assert!(terminated.body.contains("\"x-client-subject\": \"CN=joe\""), "{}", terminated.body);
    for proto in ["--http1.1", "--http2"] {
        let sneaky = curl(&[
            proto,
            "--resolve",
            &resolve,
            "--cacert",
            &ca,
            "--cert",
            &crt,
            "--key",
            &key,
            "-H",
            "Host: idp.example.test",
            &api,
        ]);
        assert_eq!(sneaky.status, 421, "{proto}: {sneaky:?}");
    }

    let log = gw.access_log();
    let relay = log
        .lines()
        .find(|l| l.contains("\"passthrough\":\"idp\""))
        .unwrap_or_else(|| panic!("{log}"));
    let line: serde_json::Value = serde_json::from_str(relay).unwrap();
    assert_eq!(line["sni"], "idp.example.test");
    assert!(line["bytes_to_upstream"].as_u64().unwrap() > 500, "{line}");
    assert!(line["bytes_to_client"].as_u64().unwrap() > 500, "{line}");
}

/// With `proxy_protocol = "v2"`, the upstream first gets a PROXY v2 header (read back by the
/// `ppp` crate) naming the client's address and port and carrying the SNI, then exactly the
/// ClientHello's bytes, however they arrived: one byte per write, or split over two TLS
/// records.
#[test]
fn passthrough_sends_proxy_v2_then_the_exact_client_hello() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gateway_pki(dir);
    let (up_port, received) = recording_upstream();
    let config = format!(
        "{}\n[[route]]\nupstream = \"@echo\"\n\n[[passthrough]]\nname = \"idp\"\n\
         sni = [\"*.example.test\"]\nupstream = \"127.0.0.1:{up_port}\"\nproxy_protocol = \"v2\"\n",
        listener("required", "")
    );
    let gw = Gateway::start(dir, &config);
    for split in ["bytes", "records", "whole"] {
        let (local, sent, _) = send_hello(gw.port, Some("idp.example.test"), split);
        let got = received.recv_timeout(Duration::from_secs(10)).unwrap();
        let header = ppp::v2::Header::try_from(got.as_slice()).unwrap();
        assert_eq!(header.command, ppp::v2::Command::Proxy);
        match header.addresses {
            ppp::v2::Addresses::IPv4(a) => {
                assert_eq!(a.source_address, std::net::Ipv4Addr::LOCALHOST);
                assert_eq!(a.source_port, local, "{split}");
                assert_eq!(a.destination_port, gw.port);
            }
            other => panic!("{other:?}"),
        }
        let authority = header.tlvs().flatten().find(|t| t.kind == 0x02).expect("an AUTHORITY TLV");
        assert_eq!(authority.value.as_ref(), b"idp.example.test");
        assert_eq!(&got[header.len()..], sent.as_slice(), "{split}: the ClientHello as sent");
    }
}

/// A ClientHello without SNI gets the listener's `no_sni`: refused (nothing relayed, the
/// client closed on), or relayed to a named passthrough route; a name that is not passed
/// through is still terminated; a plain-HTTP request hears that the port speaks TLS.
#[test]
fn no_sni_default_and_plain_http_on_a_passthrough_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gateway_pki(dir);
    let (up_port, received) = recording_upstream();
    let passthrough = format!(
        "\n[[passthrough]]\nname = \"legacy\"\nsni = [\"legacy.example.test\"]\n\
         upstream = \"127.0.0.1:{up_port}\"\n"
    );
    let config = |no_sni: &str| {
        format!(
            "{}\n[[route]]\nupstream = \"@echo\"\n{passthrough}",
            listener("required", &format!("no_sni = \"{no_sni}\"\n"))
        )
    };
    let refusing = Gateway::start(dir, &config("refuse"));
    let (_, _, back) = send_hello(refusing.port, None, "whole");
    assert!(back.is_empty(), "refused without an answer: {back:?}");
    assert!(received.recv_timeout(Duration::from_millis(800)).is_err(), "nothing relayed");
    // A name that is not passed through: the gateway's own handshake answers (a ServerHello).
    let (_, _, back) = send_hello(refusing.port, Some("api.example.test"), "whole");
    assert_eq!(back.first(), Some(&0x16), "{back:?}");
    let plain = curl(&[&format!("http://127.0.0.1:{}/", refusing.port)]);
    assert_eq!(plain.status, 400, "{plain:?}");
    assert!(plain.body.contains("this port speaks TLS"), "{plain:?}");
    drop(refusing);

    let relaying = Gateway::start(dir, &config("legacy"));
    let (_, sent, _) = send_hello(relaying.port, None, "whole");
    assert_eq!(received.recv_timeout(Duration::from_secs(10)).unwrap(), sent);
}

/// Passthrough routes are checked at load: a name twice on one listener, a bad name, an
/// upstream that is not host:port, an unknown no_sni.
#[test]
fn passthrough_configuration_mistakes_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gateway_pki(dir);
    let config = format!(
        "{}\n[[route]]\nupstream = \"@echo\"\n\
         [[passthrough]]\nname = \"a\"\nsni = [\"idp.example.test\"]\nupstream = \"127.0.0.1:9\"\n\
         [[passthrough]]\nname = \"b\"\nsni = [\"idp.example.test\"]\nupstream = \"127.0.0.1:10\"\n\
         [[passthrough]]\nname = \"d\"\nsni = [\"bad name\"]\nupstream = \"https://idp\"\n",
        listener("required", "no_sni = \"c\"\n")
    );
    let (code, text) = serve_check(dir, &config);
    assert_ne!(code, 0);
    for expected in [
        "passthrough[2].sni[0]: \"bad name\" is not a server name",
        "passthrough[2].upstream: \"https://idp\" is not host:port",
        "idp.example.test is passed through by both a and b on listener listener-0",
        "listener[0].no_sni: \"c\"",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in {text}");
    }
}

/// docs/examples/seed-003-passthrough.toml passes `serve --check` once its files exist.
#[test]
fn seed_003_example_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let pki = TestPki::new();
    pki.server(&["api.example.com"]).write(&certs, "example.tls");
    std::fs::rename(certs.join("example.tls.crt"), certs.join("example.tls.pem")).unwrap();
    std::fs::write(certs.join("root.pem"), pki.root_pem()).unwrap();
    let example =
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/examples/seed-003-passthrough.toml");
    std::fs::copy(example, dir.join("certgate.toml")).unwrap();
    let out = Command::new(CERTGATE)
        .current_dir(dir)
        .args(["serve", "--check", "--config", "certgate.toml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Behind an L4 load balancer: connections from `proxy_protocol_from` start with a PROXY
/// header (v2 or v1), whose client address is the one the upstream sees in
/// `X-Forwarded-For` and the access log records; from such a peer a connection without a
/// header is refused, and a listener that does not expect one refuses a header.
#[test]
fn proxy_protocol_from_load_balancers_gives_the_real_client() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gateway_pki(dir);
    let routes = "\n[[route]]\nupstream = \"@echo\"\nclient_cert = \"optional\"\n\n[access_log]\nenabled = true\n";
    let behind =
        format!("{}{routes}", listener("optional", "proxy_protocol_from = [\"127.0.0.1/32\"]\n"));
    let gw = Gateway::start(dir, &behind);
    for (v, source) in [("2", "203.0.113.7:4242"), ("1", "198.51.100.9:5151")] {
        let out = raw_client(&gw, "proxied", Some("joe"), &["--source", source, "--v", v]);
        assert!(out.starts_with("HTTP/1.1 200"), "v{v}: {out}");
        let ip = source.split(':').next().unwrap();
        assert!(out.contains(&format!("\"x-forwarded-for\": \"{ip}\"")), "v{v}: {out}");
        let log = gw.access_log();
        assert!(log.contains(&format!("\"client\":\"{source}\"")), "v{v}: {log}");
    }
    let direct = curl_as(&gw, Some("joe"), "/", &[]);
    assert_ne!(direct.status, 200, "no header from a load balancer's address: {direct:?}");
    drop(gw);

    let plain = Gateway::start(dir, &format!("{}{routes}", listener("optional", "")));
    let out = raw_client(&plain, "proxied", Some("joe"), &["--source", "203.0.113.7:4242"]);
    assert!(!out.contains("HTTP/1.1 200"), "a header from anyone else is not TLS: {out}");
    assert_eq!(curl_as(&plain, Some("joe"), "/", &[]).status, 200);
}

/// A post-quantum ClientHello (an ML-KEM-1024 key share: 1,568 bytes for the share alone,
/// so the hello is larger than one Ethernet packet) written in pieces of 512 bytes is
/// still routed by its SNI and relayed byte for byte; the same hello for a terminated name
/// gets the gateway's own handshake (here a HelloRetryRequest for X25519) and nothing is
/// relayed.
#[test]
fn post_quantum_client_hello_larger_than_a_packet_is_routed() {
    use std::sync::Arc;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gateway_pki(dir);
    let (up_port, received) = recording_upstream();
    let config = idp_passthrough(up_port, "", "");
    let gw = Gateway::start(dir, &config);
    let hello = |sni: &str| -> Vec<u8> {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        // The key share is sent for the first group only; X25519 lets a server that does
        // not do ML-KEM-1024 ask again (HelloRetryRequest) rather than refuse.
        provider.kx_groups = vec![
            rustls::crypto::aws_lc_rs::kx_group::MLKEM1024,
            rustls::crypto::aws_lc_rs::kx_group::X25519,
        ];
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    };
    let send = |bytes: &[u8]| -> Vec<u8> {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        tcp.set_nodelay(true).unwrap();
        for piece in bytes.chunks(512) {
            tcp.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut back = vec![0u8; 5];
        match tcp.read_exact(&mut back) {
            Ok(()) => back,
            Err(_) => Vec::new(),
        }
    };
    let relayed = hello("idp.example.test");
    assert!(relayed.len() > 1500, "a post-quantum ClientHello: {} bytes", relayed.len());
    send(&relayed);
    assert_eq!(received.recv_timeout(Duration::from_secs(10)).unwrap(), relayed);
    let terminated = send(&hello("api.example.test"));
    assert_eq!(terminated.first(), Some(&0x16), "a handshake record: {terminated:?}");
    assert!(received.recv_timeout(Duration::from_millis(500)).is_err(), "nothing relayed");
}

/// Client-certificate policy per server name on one listener (`[[listener.sni]]`):
/// admin.example.test requires a certificate from its own CA and refuses others in the
/// handshake, while api.example.test keeps the listener's policy; a request whose Host has
/// another policy than its connection's SNI gets 421, even with the SNI check off.
#[test]
fn client_certificate_policy_per_server_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = gateway_pki(dir);
    pki.server(&["api.example.test", "admin.example.test"]).write(dir, "server");
    let admins = TestPki::named("admins");
    std::fs::write(dir.join("admins-ca.crt"), admins.root_pem()).unwrap();
    admins.client("boss", &[]).write(dir, "boss");
    let policy = "sni_host_check = false\n\n[[listener.sni]]\nnames = [\"admin.example.test\"]\n\
                  client_auth = { mode = \"required\", trust = [\"admins-ca.crt\"] }\n";
    let config = format!("{}\n[[route]]\nupstream = \"@echo\"\n", listener("optional", policy));
    let gw = Gateway::start(dir, &config);
    let ca = dir.join("root.crt").display().to_string();
    let get = |host: &str, client: Option<&str>, extra: &[&str]| {
        let resolve = format!("{host}:{}:127.0.0.1", gw.port);
        let url = format!("https://{host}:{}/", gw.port);
        let mut args: Vec<String> =
            vec!["--resolve".into(), resolve, "--cacert".into(), ca.clone()];
        if let Some(name) = client {
            for (flag, ext) in [("--cert", "crt"), ("--key", "key")] {
                args.push(flag.into());
                args.push(dir.join(format!("{name}.{ext}")).display().to_string());
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(url);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&refs)
    };
    let boss = get("admin.example.test", Some("boss"), &[]);
    assert_eq!(boss.status, 200, "{boss:?}");
    assert!(boss.body.contains("\"x-client-subject\": \"CN=boss\""), "{}", boss.body);
    let joe = get("admin.example.test", Some("joe"), &[]);
    assert_ne!(joe.exit, 0, "another CA is refused in the handshake: {joe:?}");
    let nobody = get("admin.example.test", None, &[]);
    assert_ne!(nobody.exit, 0, "required on this name: {nobody:?}");
    let api = get("api.example.test", Some("joe"), &[]);
    assert_eq!(api.status, 200, "{api:?}");
    assert_eq!(get("api.example.test", Some("boss"), &[]).status, 495, "not this name's CA");
    for proto in ["--http1.1", "--http2"] {
        let sneaky =
            get("api.example.test", Some("joe"), &[proto, "-H", "Host: admin.example.test"]);
        assert_eq!(sneaky.status, 421, "{proto}: {sneaky:?}");
    }
}

/// A relay ends at the listener's `max_connection_age` even while its client keeps it open,
/// and the access log says so.
#[test]
fn relays_end_at_max_connection_age() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gateway_pki(dir);
    // An upstream that reads and never closes first.
    let holding = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_port = holding.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in holding.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    let config = idp_passthrough(
        up_port,
        "[listener.limits]\nmax_connection_age = \"1s\"\n",
        "\n[access_log]\nenabled = true\n",
    );
    let gw = Gateway::start(dir, &config);
    let started = std::time::Instant::now();
    // The client waits up to 3 s for the server to close.
    send_hello(gw.port, Some("idp.example.test"), "whole");
    assert!(started.elapsed() < Duration::from_millis(2900), "closed by the gateway first");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !gw.access_log().contains("\"close\":\"max_age\"") {
        assert!(std::time::Instant::now() < deadline, "{}", gw.access_log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An oversized ClientHello (a record stream past 16 KiB with no complete hello) and garbage
/// are closed, while a client connecting at the same time is served.
#[test]
fn oversized_and_garbage_client_hellos_are_closed_while_others_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gateway_pki(dir);
    let (up_port, _received) = recording_upstream();
    let config = idp_passthrough(up_port, "", "");
    let gw = Gateway::start(dir, &config);
    let open = |first: &[u8]| {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        tcp.write_all(first).unwrap();
        tcp
    };
    // A handshake record announcing 16 KiB, then more handshake records, never a whole hello.
    let mut big = Vec::new();
    for _ in 0..5 {
        big.extend_from_slice(&[0x16, 0x03, 0x01, 0x10, 0x00]);
        big.extend_from_slice(&[0x01; 4096]);
    }
    let mut oversized = open(&big[..8192]);
    let mut garbage = open(b"\x16\x03\x01\x00\x05hello");
    let _ = oversized.write_all(&big[8192..]);
    assert_eq!(curl_as(&gw, Some("joe"), "/", &[]).status, 200, "served meanwhile");
    for (name, tcp) in [("oversized", &mut oversized), ("garbage", &mut garbage)] {
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let closed = loop {
            match tcp.read(&mut buf) {
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break false;
                }
                Ok(0) | Err(_) => break true,
                Ok(_) => continue,
            }
        };
        assert!(closed, "{name} is closed");
    }
}
