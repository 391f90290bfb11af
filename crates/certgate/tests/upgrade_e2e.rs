//! End-to-end tests of upgrades and streaming through `certgate serve`: a real WebSocket client
//! and echo server (Python `websockets`), server-sent events, a 256 MiB upload with the
//! gateway's memory watched, and gRPC (Python `grpcio`) over HTTP/2 with trailers.

// A test that cannot set itself up should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gateway_support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use gateway_support::*;

/// A listener in optional mode (so routes decide), `joe` and `mallory` client certificates,
/// and the given routes and upstreams.
fn gateway(dir: &std::path::Path, listener_extra: &str, rest: &str) -> Gateway {
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &["spiffe://example.test/joe"]));
    write_leaf(dir, "mallory", &pki.client("mallory", &["spiffe://example.test/mallory"]));
    let config = format!("{}{rest}", listener("optional", listener_extra));
    Gateway::start_with_env(dir, &config, &[("CERTGATE_LOG", "info")])
}

/// A WebSocket client with a certificate talks to a WebSocket echo through the gateway: text
/// and binary messages echo, and the upstream sees the gateway's identity headers, not the
/// client's. Without a certificate it gets 496, outside the allow-list 403, and on a route
/// without `upgrades` the upstream gets a plain request and refuses it (426).
#[test]
fn websocket_passes_on_routes_that_allow_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_ws, ws_port) = streaming_server("ws-server");
    let gw = gateway(
        dir,
        "",
        &format!(
            "{}
[[route]]
path = \"/ws\"
upstream = \"ws\"
upgrades = [\"websocket\"]
allow = {{ spiffe = [\"spiffe://example.test/joe\"] }}

[[route]]
path = \"/plain\"
upstream = \"ws\"
client_cert = \"optional\"
",
            upstream_block("ws", ws_port)
        ),
    );

    let joe = streaming_client(&gw, "ws-client", Some("joe"), &[]);
    assert_eq!(joe["status"], 101, "{joe}");
    assert_eq!(joe["echo"], "hello", "{joe}");
    assert_eq!(joe["binary"], "0001".to_string() + &hex(b"binary"), "{joe}");
    let seen = &joe["upstream_headers"];
    assert_eq!(seen["x-client-subject"], "CN=joe", "{joe}");
    assert_eq!(seen["x-client-verify"], "SUCCESS", "{joe}");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{joe}");
    assert!(seen["connection"].as_str().unwrap().eq_ignore_ascii_case("upgrade"), "{joe}");
    assert_eq!(seen["upgrade"], "websocket", "{joe}");
    assert!(seen.get("sec-websocket-key").is_some(), "{joe}");
    // The client's own identity header never reaches the upstream.
    assert!(!joe.to_string().contains("CN=admin"), "{joe}");

    let anonymous = streaming_client(&gw, "ws-client", None, &[]);
    assert_eq!(anonymous["status"], 496, "{anonymous}");
    let mallory = streaming_client(&gw, "ws-client", Some("mallory"), &[]);
    assert_eq!(mallory["status"], 403, "{mallory}");
    assert!(mallory["body"].as_str().unwrap().contains("not allowed"), "{mallory}");

    let plain = streaming_client(&gw, "ws-client", Some("joe"), &["--path", "/plain"]);
    assert_eq!(plain["status"], 426, "{plain}");
    gw.wait_for_log("upgraded connection ended", 1);
}

/// WebSockets over HTTP/2 (RFC 8441): a listener with a WebSocket route offers extended
/// CONNECT; the stream is checked like any request, forwarded to the HTTP/1.1 upstream as an
/// upgrade with the gateway's identity headers, answered 200, and echoes. On a route without
/// `upgrades` it is refused (405), as it is without a certificate (496); a listener without
/// WebSocket routes does not offer it.
#[test]
fn websocket_over_http2_extended_connect() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_ws, ws_port) = streaming_server("ws-server");
    let routes = |upgrades: &str| {
        format!(
            "{}
[[route]]
path = \"/ws\"
upstream = \"ws\"
{upgrades}

[[route]]
path = \"/plain\"
upstream = \"ws\"
",
            upstream_block("ws", ws_port)
        )
    };
    let gw = gateway(dir, "", &routes("upgrades = [\"websocket\"]"));
    let joe = streaming_client(&gw, "ws-h2-client", Some("joe"), &[]);
    assert_eq!(joe["enable_connect_protocol"], 1, "{joe}");
    assert_eq!(joe["status"], 200, "{joe}");
    assert_eq!(joe["echo"], "hello", "{joe}");
    assert!(joe["headers"].get("sec-websocket-accept").is_none(), "{joe}");
    let seen = &joe["upstream_headers"];
    assert_eq!(seen["x-client-subject"], "CN=joe", "{joe}");
    assert_eq!(seen["upgrade"], "websocket", "{joe}");
    assert!(seen["sec-websocket-key"].as_str().is_some_and(|k| k.len() == 24), "{joe}");
    let plain = streaming_client(&gw, "ws-h2-client", Some("joe"), &["--path", "/plain"]);
    assert_eq!(plain["status"], 405, "{plain}");
    let anonymous = streaming_client(&gw, "ws-h2-client", None, &[]);
    assert_eq!(anonymous["status"], 496, "{anonymous}");
    gw.wait_for_log("upgraded connection ended", 1);

    let other = tempfile::tempdir().unwrap();
    let gw = gateway(other.path(), "", &routes(""));
    let off = streaming_client(&gw, "ws-h2-client", Some("joe"), &[]);
    assert_eq!(off["enable_connect_protocol"], 0, "{off}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An upgraded connection holds its listener connection slot: with `max_connections = 1`, a
/// second client waits while a WebSocket is open. The WebSocket is closed after its route's
/// `upgrade_idle_timeout` of silence, and the slot is free again.
#[test]
fn upgraded_connections_hold_their_slot_and_time_out_when_idle() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_ws, ws_port) = streaming_server("ws-server");
    let gw = gateway(
        dir,
        "[listener.limits]\nmax_connections = 1\n",
        &format!(
            "{}
[[route]]
upstream = \"ws\"
upgrades = [\"websocket\"]
upgrade_idle_timeout = \"2s\"
",
            upstream_block("ws", ws_port)
        ),
    );
    let port = gw.port.to_string();
    let dir_s = dir.display().to_string();
    let client = std::thread::spawn(move || {
        let out = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/streaming.py"))
            .args(["ws-client", "--port", &port, "--idle", "8"])
            .args(["--ca", &format!("{dir_s}/root.crt")])
            .args(["--cert", &format!("{dir_s}/joe.crt"), "--key", &format!("{dir_s}/joe.key")])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    });
    std::thread::sleep(Duration::from_millis(1200));
    let blocked = curl_as(&gw, Some("joe"), "/", &["--max-time", "0.5"]);
    assert_eq!(blocked.status, 0, "the WebSocket holds the only slot: {blocked:?}");
    let out = client.join().unwrap();
    assert_eq!(out["echo"], "hello", "{out}");
    assert_eq!(out["idle"], "closed", "{out}");
    let after = out["idle_after"].as_f64().unwrap();
    assert!((1.5..4.0).contains(&after), "closed after {after} s: {out}");
    let log = gw.wait_for_log("upgraded connection ended", 1);
    assert!(log.contains("reason=\"idle\"") || log.contains("reason=idle"), "{log}");
    // The slot is free again: an ordinary request on a new connection gets an answer (the
    // WebSocket server refuses a plain GET).
    let freed = curl_as(&gw, Some("joe"), "/", &["--max-time", "5"]);
    assert_eq!(freed.status, 426, "{freed:?}");
}

/// An upgraded connection is still a connection: `max_connection_age` ends it, however busy
/// or idle (its own idle timeout here is far longer).
#[test]
fn upgraded_connections_end_at_max_connection_age() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_ws, ws_port) = streaming_server("ws-server");
    let gw = gateway(
        dir,
        "[listener.limits]\nmax_connection_age = \"2s\"\n",
        &format!(
            "{}
[[route]]
upstream = \"ws\"
upgrades = [\"websocket\"]
",
            upstream_block("ws", ws_port)
        ),
    );
    let out = streaming_client(&gw, "ws-client", Some("joe"), &["--idle", "10"]);
    assert_eq!(out["echo"], "hello", "{out}");
    assert_eq!(out["idle"], "closed", "{out}");
    let after = out["idle_after"].as_f64().unwrap();
    assert!(after < 3.0, "closed {after} s into the wait, past max_connection_age: {out}");
}

/// A WebSocket keeps the decision made at its upgrade only while it holds: when a reloaded CRL
/// revokes the client, the open WebSocket is cut; another client's is not.
#[test]
fn websocket_of_a_revoked_client_ends_after_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    let joe = pki.client("joe", &[]);
    write_leaf(dir, "joe", &joe);
    write_leaf(dir, "ann", &pki.client("ann", &[]));
    std::fs::write(dir.join("crl.pem"), pki.crl(&[])).unwrap();
    let (_ws, ws_port) = streaming_server("ws-server");
    let config = format!(
        "{}crls = [\"crl.pem\"]\n{}\n[[route]]\nupstream = \"ws\"\nupgrades = [\"websocket\"]\n",
        listener("optional", ""),
        upstream_block("ws", ws_port)
    );
    let gw = Gateway::start_with_env(dir, &config, &[("CERTGATE_LOG", "info")]);
    let open = |name: &str| {
        let (port, dir_s, name) =
            (gw.port.to_string(), dir.display().to_string(), name.to_string());
        std::thread::spawn(move || {
            let out = Command::new("python3")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/streaming.py"))
                .args(["ws-client", "--port", &port, "--idle", "4"])
                .args(["--ca", &format!("{dir_s}/root.crt")])
                .args(["--cert", &format!("{dir_s}/{name}.crt")])
                .args(["--key", &format!("{dir_s}/{name}.key")])
                .output()
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        })
    };
    let (joe_ws, ann_ws) = (open("joe"), open("ann"));
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(dir.join("crl.new"), pki.crl(&[&joe])).unwrap();
    std::fs::rename(dir.join("crl.new"), dir.join("crl.pem")).unwrap();
    gw.signal("HUP");
    gw.wait_for_log("closing upgraded connection: its client certificate is refused", 1);
    let joe_out = joe_ws.join().unwrap();
    assert_eq!(joe_out["echo"], "hello", "{joe_out}");
    assert_eq!(joe_out["idle"], "closed", "{joe_out}");
    assert!(joe_out["idle_after"].as_f64().unwrap() < 3.5, "{joe_out}");
    let ann_out = ann_ws.join().unwrap();
    assert_eq!(ann_out["idle"], "open", "ann is not revoked: {ann_out}");
}

/// An open WebSocket ends when the gateway stops, once the shutdown grace period is over.
#[test]
fn upgraded_connections_end_after_the_shutdown_grace() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_ws, ws_port) = streaming_server("ws-server");
    let mut gw = gateway(
        dir,
        "",
        &format!(
            "{}
[[route]]
upstream = \"ws\"
upgrades = [\"websocket\"]

[runtime]
shutdown_grace = \"1s\"
",
            upstream_block("ws", ws_port)
        ),
    );
    let port = gw.port.to_string();
    let dir_s = dir.display().to_string();
    let client = std::thread::spawn(move || {
        let out = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/streaming.py"))
            .args(["ws-client", "--port", &port, "--idle", "15"])
            .args(["--ca", &format!("{dir_s}/root.crt")])
            .args(["--cert", &format!("{dir_s}/joe.crt"), "--key", &format!("{dir_s}/joe.key")])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    });
    std::thread::sleep(Duration::from_millis(1500));
    let stopped = Instant::now();
    gw.signal("TERM");
    let out = client.join().unwrap();
    assert_eq!(out["idle"], "closed", "{out}");
    let took = stopped.elapsed();
    assert!(took >= Duration::from_millis(900), "closed before the grace period: {took:?}");
    assert!(took < Duration::from_secs(6), "still open {took:?} after SIGTERM: {out}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.running() {
        assert!(Instant::now() < deadline, "the gateway did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An upstream that answers every request with `answer` and records the request heads.
fn scripted_upstream(answer: &'static str) -> (u16, std::sync::Arc<std::sync::Mutex<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = stream.read(&mut chunk) {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buf.drain(..end + 4).collect();
                        seen.lock().unwrap().push_str(&String::from_utf8_lossy(&head));
                        if stream.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, heads)
}

const UPGRADE_HEAD: &str = "GET /ws HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: Upgrade\\r\\n\
     Upgrade: websocket\\r\\nSec-WebSocket-Version: 13\\r\\n\
     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n\\r\\n";

/// Attacks on the upgrade path. A refused upgrade (the upstream answers 200) is relayed with
/// `Connection: close`, and what the client sent after it is never read as a request (no
/// smuggling); `Upgrade: h2c` is never forwarded; a 101 the gateway did not ask for, or one
/// switching to another protocol, is a 502; CONNECT is a 405.
#[test]
fn upgrade_attacks_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ok_port, ok_heads) = scripted_upstream(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nno",
    );
    let (switch_port, _) = scripted_upstream(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
    );
    let gw = gateway(
        dir,
        "",
        &format!(
            "{}{}
[[route]]
path = \"/ws\"
upstream = \"refuses\"
upgrades = [\"websocket\"]

[[route]]
path = \"/switch\"
upstream = \"switches\"
upgrades = [\"websocket\"]
",
            upstream_block("refuses", ok_port),
            upstream_block("switches", switch_port)
        ),
    );

    let smuggle = format!(
        "{UPGRADE_HEAD}GET /ws/smuggled HTTP/1.1\\r\\nHost: localhost\\r\\nX-Client-Subject: CN=admin\\r\\n\\r\\n"
    );
    let out = raw_client(&gw, "request", Some("joe"), &["--data", &smuggle]);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.to_ascii_lowercase().contains("connection: close"), "{out}");
    assert_eq!(out.matches("HTTP/1.1").count(), 1, "{out}");
    let heads = ok_heads.lock().unwrap().clone();
    assert!(heads.to_ascii_lowercase().contains("upgrade: websocket"), "{heads}");
    assert!(!heads.contains("smuggled"), "{heads}");

    // h2c is never forwarded, even on a route that allows WebSocket.
    ok_heads.lock().unwrap().clear();
    let h2c = "GET /ws HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: Upgrade, HTTP2-Settings\\r\\n\
               Upgrade: h2c\\r\\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\\r\\n\\r\\n";
    let out = raw_client(&gw, "request", Some("joe"), &["--data", h2c]);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let heads = ok_heads.lock().unwrap().to_ascii_lowercase();
    assert!(heads.starts_with("get /ws "), "{heads}");
    assert!(!heads.contains("upgrade") && !heads.contains("http2-settings"), "{heads}");

    // A 101 to an ordinary request, and a 101 to another protocol than asked for: 502.
    let plain = curl_as(&gw, Some("joe"), "/switch", &[]);
    assert_eq!(plain.status, 502, "{plain:?}");
    let other = raw_client(
        &gw,
        "request",
        Some("joe"),
        &["--data", &UPGRADE_HEAD.replace("GET /ws", "GET /switch")],
    );
    assert!(other.starts_with("HTTP/1.1 502"), "{other}");
    assert!(other.contains("switched protocols without being asked"), "{other}");
    assert!(other.to_ascii_lowercase().contains("connection: close"), "{other}");

    let started = Instant::now();
    let connect = raw_client(
        &gw,
        "request",
        Some("joe"),
        &["--data", "CONNECT localhost:443 HTTP/1.1\\r\\nHost: localhost:443\\r\\n\\r\\n"],
    );
    assert!(connect.starts_with("HTTP/1.1 405"), "{connect}");
    // Refused upgrade requests close their connection (the client does not wait for it).
    assert!(connect.to_ascii_lowercase().contains("connection: close"), "{connect}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

/// `upgrades` refuses what would let requests bypass the gateway, and upstreams that cannot
/// take an HTTP/1.1 upgrade, naming the field.
#[test]
fn upgrade_configuration_errors_name_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    pki_in(dir);
    let config = format!(
        "{}{}\nhttp2 = true\n
[[route]]
path = \"/a\"
upstream = \"h2\"
upgrades = [\"websocket\"]

[[route]]
path = \"/b\"
upstream = \"@echo\"
upgrades = [\"h2c\"]

[[route]]
path = \"/c\"
upstream = \"h2\"
upgrade_idle_timeout = \"1m\"
",
        listener("optional", ""),
        upstream_block("h2", 9)
    );
    std::fs::write(dir.join("certgate.toml"), config).unwrap();
    let out = run(Command::new(CERTGATE)
        .args(["serve", "--check", "--config"])
        .arg(dir.join("certgate.toml")));
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("route[0].upgrades") && text.contains("http2 = true"), "{text}");
    assert!(text.contains("route[1].upgrades") && text.contains("h2c smuggling"), "{text}");
    assert!(text.contains("the built-in services do not take upgrades"), "{text}");
    assert!(text.contains("route[2].upgrade_idle_timeout"), "{text}");
}
