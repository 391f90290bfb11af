//! End-to-end tests of live reload: the real binary, changed files on disk, SIGHUP, and
//! curl / openssl s_client seeing the change on their next connection.

// A test that cannot set itself up should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gateway_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use gateway_support::*;

fn one_route(mode: &str, extra_client_auth: &str) -> String {
    let up = upstream(Duration::ZERO);
    format!(
        "{}{extra_client_auth}{}\n[[route]]\nupstream = \"app\"\n",
        listener(mode, "[listener.limits]\nidle_timeout = \"1s\"\n"),
        upstream_block("app", up)
    )
}

/// A new server certificate on disk is served to the next connection after SIGHUP, and the
/// process keeps running.
#[test]
fn sighup_swaps_in_a_new_server_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    let mut gw =
        Gateway::start_with_env(dir, &one_route("optional", ""), &[("CERTGATE_LOG", "info")]);
    let before = served_serial(&gw);
    let renewed = pki.server(&["localhost", "127.0.0.1"]);
    renewed.write(dir, "server");
    assert_ne!(before, renewed.serial_hex);
    for round in 1..=3 {
        gw.signal("HUP");
        gw.wait_for_log("reloaded: serving generation", round);
        assert!(gw.running(), "SIGHUP must not end the process");
    }
    assert_eq!(served_serial(&gw), renewed.serial_hex.trim_start_matches('0'));
}

/// A client revoked in a republished CRL is refused on its next connection after SIGHUP.
#[test]
fn republished_crl_refuses_the_revoked_client_after_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    let joe = pki.client("joe", &[]);
    write_leaf(dir, "joe", &joe);
    std::fs::write(dir.join("crl.pem"), pki.crl(&[])).unwrap();
    let gw = Gateway::start_with_env(
        dir,
        &one_route("optional", "crls = [\"crl.pem\"]\n"),
        &[("CERTGATE_LOG", "info")],
    );
    assert_eq!(curl_as(&gw, Some("joe"), "/", &[]).status, 200);
    std::fs::write(dir.join("crl.pem"), pki.crl(&[&joe])).unwrap();
    gw.signal("HUP");
    gw.wait_for_log("reloaded: serving generation 2", 1);
    for proto in ["--http1.1", "--http2"] {
        let r = curl_as(&gw, Some("joe"), "/", &[proto]);
        assert_eq!(r.status, 495, "{proto}: {r:?}");
        assert!(r.body.contains("was revoked"), "{r:?}");
    }
}

/// A reload with problems changes nothing: the old state keeps serving, every problem is
/// logged with file, field and reason; the next good reload recovers.
#[test]
fn broken_reload_keeps_the_old_state_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &[]));
    pki.client("other", &[]).write(dir, "other");
    let config = one_route("required", "");
    let mut gw = Gateway::start_with_env(dir, &config, &[("CERTGATE_LOG", "info")]);
    let path = dir.join("certgate.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    let before = served_serial(&gw);

    // A key that does not match its certificate, and a garbled TOML file.
    std::fs::write(&path, good.replace("key = \"server.key\"", "key = \"other.key\"")).unwrap();
    gw.signal("HUP");
    let log = gw.wait_for_log("reload failed; still serving generation 1", 1);
    assert!(
        log.contains("listener[0].certificates[0].key: other.key: the private key does not belong"),
        "{log}"
    );
    std::fs::write(&path, "[[listener]\n").unwrap();
    gw.signal("HUP");
    // The watcher may have reloaded already too: wait for this file's own error.
    let log = gw.wait_for_log("certgate.toml: line 1", 1);
    assert!(log.contains("reload failed; still serving generation 1"), "{log}");
    assert!(gw.running());
    assert_eq!(curl_as(&gw, Some("joe"), "/", &[]).status, 200);
    assert_eq!(served_serial(&gw), before);

    std::fs::write(&path, &good).unwrap();
    gw.signal("HUP");
    gw.wait_for_log("reloaded: serving generation 2", 1);
    assert_eq!(curl_as(&gw, Some("joe"), "/", &[]).status, 200);
}

/// A Kubernetes-style Secret update (new files in a timestamped directory, then the `..data`
/// symlink swapped) is picked up without a signal.
#[test]
fn kubernetes_secret_symlink_swap_is_picked_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    let secret = dir.join("secret");
    let mount = |name: &str, leaf: &certgate_pki::testkit::TestLeaf| {
        let version = secret.join(name);
        std::fs::create_dir_all(&version).unwrap();
        leaf.write(&version, "tls");
        let tmp_link = secret.join("..data_tmp");
        std::os::unix::fs::symlink(name, &tmp_link).unwrap();
        std::fs::rename(&tmp_link, secret.join("..data")).unwrap();
    };
    let first = pki.server(&["localhost", "127.0.0.1"]);
    mount("..2026_11_23_a", &first);
    for file in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{file}"), secret.join(file)).unwrap();
    }
    let config = one_route("optional", "").replace(
        "{ cert = \"server.crt\", key = \"server.key\" }",
        "{ cert = \"secret/tls.crt\", key = \"secret/tls.key\" }",
    );
    let gw = Gateway::start_with_env(dir, &config, &[("CERTGATE_LOG", "info")]);
    assert_eq!(served_serial(&gw), first.serial_hex.trim_start_matches('0'));
    let second = pki.server(&["localhost", "127.0.0.1"]);
    mount("..2026_11_23_b", &second);
    let log = gw.wait_for_log("reloaded: serving generation 2", 1);
    assert!(log.contains("changed on disk: reloading"), "{log}");
    assert_eq!(served_serial(&gw), second.serial_hex.trim_start_matches('0'));
}

/// When a CRL's next update passes, clients it covers are refused (fail closed) and the stale
/// CRL is reported; a fresh CRL published in its place serves them again without a restart.
#[test]
fn stale_crl_fails_closed_until_a_fresh_one_appears() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    let joe = pki.client("joe", &[]);
    write_leaf(dir, "joe", &joe);
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    std::fs::write(dir.join("crl.pem"), pki.crl_until(&[], soon)).unwrap();
    let gw = Gateway::start_with_env(
        dir,
        &one_route("optional", "crls = [\"crl.pem\"]\n"),
        &[("CERTGATE_LOG", "info")],
    );
    assert_eq!(curl_as(&gw, Some("joe"), "/", &[]).status, 200);
    // After the next update: refused, and the reload at that time reports the stale file.
    let log = gw.wait_for_log("CRL is past its next update", 1);
    assert!(log.contains("crl.pem"), "{log}");
    let stale = curl_as(&gw, Some("joe"), "/", &[]);
    assert_eq!(stale.status, 495, "{stale:?}");
    assert!(stale.body.contains("CRL is out of date"), "{stale:?}");
    // A fresh CRL, written the way editors and `certgate crl` do (rename over the old one).
    std::fs::write(dir.join("crl.new"), pki.crl(&[])).unwrap();
    std::fs::rename(dir.join("crl.new"), dir.join("crl.pem")).unwrap();
    gw.wait_for_log("reloaded: serving generation", 2);
    let fresh = curl_as(&gw, Some("joe"), "/", &[]);
    assert_eq!(fresh.status, 200, "{fresh:?}");
}

/// `dangerous_stale_crl_grace` keeps a stale CRL in use for its length (a revoked client is
/// still refused), with the stale CRL still reported; without it the same CRL refuses everyone.
#[test]
fn stale_crl_grace_serves_until_it_runs_out() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    let (joe, eve) = (pki.client("joe", &[]), pki.client("eve", &[]));
    write_leaf(dir, "joe", &joe);
    write_leaf(dir, "eve", &eve);
    let ago = time::OffsetDateTime::now_utc() - time::Duration::minutes(10);
    std::fs::write(dir.join("crl.pem"), pki.crl_until(&[&eve], ago)).unwrap();
    let grace = "crls = [\"crl.pem\"]\ndangerous_stale_crl_grace = \"1h\"\n";
    let gw =
        Gateway::start_with_env(dir, &one_route("optional", grace), &[("CERTGATE_LOG", "info")]);
    gw.wait_for_log("CRL is past its next update", 1);
    assert_eq!(curl_as(&gw, Some("joe"), "/", &[]).status, 200);
    assert_eq!(curl_as(&gw, Some("eve"), "/", &[]).status, 495);
    drop(gw);
    let strict = Gateway::start(dir, &one_route("optional", "crls = [\"crl.pem\"]\n"));
    assert_eq!(curl_as(&strict, Some("joe"), "/", &[]).status, 495);
}

/// An open connection whose client is revoked by a reloaded CRL is closed gracefully (HTTP/1.1
/// and HTTP/2), instead of keeping its access for as long as it stays open.
#[test]
fn open_connections_of_a_revoked_client_are_closed_after_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    let joe = pki.client("joe", &[]);
    write_leaf(dir, "joe", &joe);
    write_leaf(dir, "ann", &pki.client("ann", &[]));
    std::fs::write(dir.join("crl.pem"), pki.crl(&[])).unwrap();
    let up = upstream(Duration::ZERO);
    let config = format!(
        "{}crls = [\"crl.pem\"]\n{}\n[[route]]\nupstream = \"app\"\n",
        listener(
            "required",
            "[listener.limits]\nidle_timeout = \"60s\"\nheader_read_timeout = \"60s\"\n"
        ),
        upstream_block("app", up)
    );
    let gw = Gateway::start_with_env(dir, &config, &[("CERTGATE_LOG", "info")]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/raw_client.py");
    let hold = |name: &str, alpn: &str| {
        let mut child = Command::new("python3")
            .args([script, "hold", "--port", &gw.port.to_string(), "--alpn", alpn, "--ca"])
            .arg(dir.join("root.crt"))
            .arg("--cert")
            .arg(dir.join(format!("{name}.crt")))
            .arg("--key")
            .arg(dir.join(format!("{name}.key")))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        use std::io::BufRead;
        out.read_line(&mut first).unwrap();
        assert!(first.starts_with("served"), "{name} {alpn}: {first}");
        (child, out)
    };
    let joe_h1 = hold("joe", "http/1.1");
    let joe_h2 = hold("joe", "h2");
    let (mut ann, _ann_out) = hold("ann", "http/1.1");
    std::fs::write(dir.join("crl.new"), pki.crl(&[&joe])).unwrap();
    std::fs::rename(dir.join("crl.new"), dir.join("crl.pem")).unwrap();
    gw.wait_for_log("its client certificate is refused after the reload", 2);
    for (what, (mut child, mut out)) in [("HTTP/1.1", joe_h1), ("HTTP/2", joe_h2)] {
        let mut rest = String::new();
        use std::io::Read;
        out.read_to_string(&mut rest).unwrap();
        let _ = child.wait();
        let secs: f64 = rest.split_whitespace().nth(2).and_then(|s| s.parse().ok()).unwrap();
        assert!(secs < 10.0, "joe's {what} connection was closed promptly: {rest}");
    }
    // ann is not revoked: her connection stays open.
    assert!(ann.try_wait().unwrap().is_none(), "ann's connection is not touched");
    let _ = ann.kill();
    let _ = ann.wait();
}

/// `--log-format json` writes one JSON object a line on stderr, for log shippers.
#[test]
fn json_log_lines_parse() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    pki_in(dir);
    let gw = Gateway::start_with_args(
        dir,
        &one_route("optional", ""),
        &[("CERTGATE_LOG", "info")],
        &["--log-format", "json"],
    );
    gw.signal("HUP");
    let log = gw.wait_for_log("reloaded: serving generation", 1);
    let line = log.lines().find(|l| l.contains("reloaded: serving generation")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "INFO", "{line}");
    assert!(v["fields"]["message"].as_str().unwrap().starts_with("reloaded"), "{line}");
    assert!(!log.contains('\u{1b}'), "no colour codes off a terminal: {log}");
}

/// With `[access_log] path`, lines are appended to the file; after logrotate moves it away,
/// SIGUSR1 makes the gateway write to a fresh file at the same path.
#[test]
fn access_log_file_is_reopened_on_sigusr1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &[]));
    let config = one_route("required", "") + "\n[access_log]\npath = \"logs/access.log\"\n";
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let gw = Gateway::start(dir, &config);
    let wait_for = |file: &str, count: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(dir.join("logs").join(file)).unwrap_or_default();
            if text.lines().count() >= count {
                return text;
            }
            assert!(std::time::Instant::now() < deadline, "{file}: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(curl_as(&gw, Some("joe"), "/before", &[]).status, 200);
    let first = wait_for("access.log", 1);
    assert!(first.contains("\"/before\""), "{first}");
    std::fs::rename(dir.join("logs/access.log"), dir.join("logs/access.log.1")).unwrap();
    gw.signal("USR1");
    // The reopen happens before the next line is written.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(curl_as(&gw, Some("joe"), "/after", &[]).status, 200);
    let fresh = wait_for("access.log", 1);
    assert!(fresh.contains("\"/after\"") && !fresh.contains("/before"), "{fresh}");
    let rotated = std::fs::read_to_string(dir.join("logs/access.log.1")).unwrap();
    assert!(!rotated.contains("/after"), "{rotated}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("logs/access.log")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
}

/// SIGTERM stops accepting, lets an open request finish, then the process exits; a request
/// still running past `shutdown_grace` is cut off.
#[test]
fn sigterm_drains_open_requests_within_the_grace() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &[]));
    let slow = upstream(Duration::from_secs(2));
    let config = format!(
        "{}{}\n[[route]]\nupstream = \"app\"\n\n[runtime]\nshutdown_grace = \"{{grace}}\"\n",
        listener("required", ""),
        upstream_block("app", slow)
    );
    for (grace, finishes) in [("10s", true), ("500ms", false)] {
        let mut gw = Gateway::start(dir, &config.replace("{grace}", grace));
        let url = gw.url("/");
        let (ca, crt, key) = (
            dir.join("root.crt").display().to_string(),
            dir.join("joe.crt").display().to_string(),
            dir.join("joe.key").display().to_string(),
        );
        let request = std::thread::spawn(move || {
            curl(&["--cacert", &ca, "--cert", &crt, "--key", &key, &url])
        });
        std::thread::sleep(Duration::from_millis(500));
        let started = std::time::Instant::now();
        gw.signal("TERM");
        let r = request.join().unwrap();
        if finishes {
            assert_eq!(r.status, 200, "grace {grace}: the open request finishes: {r:?}");
        } else {
            assert_ne!(r.status, 200, "grace {grace}: cut off: {r:?}");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while gw.running() {
            assert!(std::time::Instant::now() < deadline, "the process exits after the drain");
            std::thread::sleep(Duration::from_millis(50));
        }
        let waited = started.elapsed();
        if !finishes {
            assert!(waited < Duration::from_millis(1500), "grace {grace}: exited after {waited:?}");
        }
    }
}

/// The admin listener: /livez, /readyz, /status, POST /reload, and /metrics that a real
/// Prometheus parser reads, with reload results and certificate expiry as timestamps.
#[test]
fn admin_listener_reports_health_status_and_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    pki.client("other", &[]).write(dir, "other");
    std::fs::write(dir.join("crl.pem"), pki.crl(&[])).unwrap();
    let config =
        one_route("optional", "crls = [\"crl.pem\"]\n") + "\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let gw = Gateway::start_with_env(dir, &config, &[("CERTGATE_LOG", "info")]);
    assert_eq!(admin(&gw, "GET", "/livez").0, 200);
    assert_eq!(admin(&gw, "GET", "/readyz"), (200, "ready\n".to_string()));
    assert_eq!(admin(&gw, "GET", "/nope").0, 404);

    // One request without a certificate (496 on a route that needs one), one refused
    // handshake shape is covered elsewhere; here: counted by route and status class.
    assert_eq!(curl_as(&gw, None, "/", &[]).status, 496);
    let (status, text) = admin(&gw, "GET", "/metrics");
    assert_eq!(status, 200);
    let parsed = parse_metrics(&text);
    for expected in [
        "certgate_requests counter certgate_requests_total class=4xx,listener=listener-0,route=*/ 1",
        "certgate_handshakes counter certgate_handshakes_total listener=listener-0,outcome=ok",
    ] {
        assert!(parsed.contains(expected), "missing {expected:?} in:\n{parsed}");
    }
    for expected in [
        "certgate_config_last_reload_successful gauge certgate_config_last_reload_successful  1\n",
        "certgate_config_generation gauge certgate_config_generation  1\n",
        "certgate_certificate_not_after_timestamp_seconds gauge",
        "field=listener[0].certificates[0].cert",
        "field=listener[0].client_auth.trust[0]",
        "certgate_crl_next_update_timestamp_seconds gauge",
        "certgate_open_connections gauge",
        "certgate_access_log_dropped_lines counter",
    ] {
        assert!(parsed.contains(expected), "missing {expected:?} in:\n{parsed}");
    }

    let (status, body) = admin(&gw, "GET", "/status");
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["generation"], 1);
    assert!(
        doc["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"].as_str().unwrap().ends_with("server.key"))
    );
    assert!(!body.contains("PRIVATE KEY"), "no secrets in /status");

    // A good reload through the admin listener, then a broken one.
    assert_eq!(admin(&gw, "POST", "/reload").0, 202);
    gw.wait_for_log("reloaded: serving generation 2", 1);
    let path = dir.join("certgate.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, good.replace("key = \"server.key\"", "key = \"other.key\"")).unwrap();
    assert_eq!(admin(&gw, "POST", "/reload").0, 202);
    gw.wait_for_log("reload failed; still serving generation 2", 1);
    let doc: serde_json::Value = serde_json::from_str(&admin(&gw, "GET", "/status").1).unwrap();
    assert_eq!(doc["generation"], 2);
    assert_eq!(doc["last_reload"]["ok"], false);
    assert!(
        doc["last_reload"]["problems"][0].as_str().unwrap().contains("does not belong"),
        "{doc}"
    );
    let parsed = parse_metrics(&admin(&gw, "GET", "/metrics").1);
    assert!(parsed.contains("certgate_config_last_reload_successful gauge certgate_config_last_reload_successful  0\n"), "{parsed}");
    assert!(parsed.contains("certgate_reloads_total result=failure"), "{parsed}");
}

/// The value of the sample whose line starts with `prefix` in [`parse_metrics`] output.
fn sample(parsed: &str, prefix: &str) -> f64 {
    let line = parsed
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no sample {prefix:?} in:\n{parsed}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Request durations (a histogram by route name), bytes each way, identity headers a client
/// sent itself, and upstream errors by kind (connect, tls), as a Prometheus parser reads them.
#[test]
fn traffic_durations_strips_and_upstream_errors_are_measured() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &[]));
    let (_held, dead) = dead_port();
    // An upstream whose certificate the gateway cannot verify (it trusts the wrong CA).
    let (_server, tls_port, _) = mtls_upstream(dir, "gw");
    let config = format!(
        "{}\n[[upstream]]\nname = \"down\"\nurl = \"http://127.0.0.1:{dead}\"\n\
         \n[[upstream]]\nname = \"mistrusted\"\nurl = \"https://127.0.0.1:{tls_port}\"\n\
         ca = [\"root.crt\"]\nserver_name = \"api.internal\"\n\
         \n[[route]]\nname = \"api\"\npath = \"/api\"\nupstream = \"@echo\"\nclient_cert = \"optional\"\n\
         \n[[route]]\npath = \"/down\"\nupstream = \"down\"\nclient_cert = \"optional\"\n\
         \n[[route]]\npath = \"/tls\"\nupstream = \"mistrusted\"\nclient_cert = \"optional\"\n\
         \n[admin]\nlisten = \"127.0.0.1:0\"\n",
        listener("optional", "")
    );
    let gw = Gateway::start(dir, &config);
    for _ in 0..3 {
        assert_eq!(curl_as(&gw, Some("joe"), "/api/x", &[]).status, 200);
    }
    let spoofed = curl_as(&gw, None, "/api/x", &["-H", "X-Client-Subject: CN=admin"]);
    assert_eq!(spoofed.status, 200);
    assert_eq!(curl_as(&gw, None, "/api/x", &["-H", "X-Forwarded-For: 10.0.0.1"]).status, 200);
    assert_eq!(curl_as(&gw, None, "/down", &[]).status, 502);
    assert_eq!(curl_as(&gw, None, "/tls", &[]).status, 502);

    let parsed = parse_metrics(&admin(&gw, "GET", "/metrics").1);
    let count =
        "certgate_request_duration_seconds histogram certgate_request_duration_seconds_count";
    assert_eq!(sample(&parsed, &format!("{count} listener=listener-0,route=api ")), 5.0);
    let inf =
        "certgate_request_duration_seconds histogram certgate_request_duration_seconds_bucket";
    assert_eq!(sample(&parsed, &format!("{inf} le=+Inf,listener=listener-0,route=api ")), 5.0);
    assert!(parsed.contains(&format!("{count} listener=listener-0,route=*/down 1")), "{parsed}");
    // Only the request that brought an identity header of its own, not X-Forwarded-For.
    let stripped = "certgate_identity_headers_stripped counter certgate_identity_headers_stripped_total listener=listener-0 ";
    assert_eq!(sample(&parsed, stripped), 1.0);
    let errors = "certgate_upstream_errors counter certgate_upstream_errors_total";
    assert_eq!(sample(&parsed, &format!("{errors} kind=connect,upstream=down ")), 1.0);
    assert_eq!(sample(&parsed, &format!("{errors} kind=tls,upstream=mistrusted ")), 1.0);
    let received =
        "certgate_received_bytes counter certgate_received_bytes_total listener=listener-0 ";
    let sent = "certgate_sent_bytes counter certgate_sent_bytes_total listener=listener-0 ";
    // Seven TLS connections, each a handshake of well over a kilobyte one way or the other;
    // a connection adds its bytes when it closes, so the last ones may not be in yet.
    assert!(sample(&parsed, received) > 5.0 * 500.0, "{parsed}");
    assert!(sample(&parsed, sent) > 5.0 * 1000.0, "{parsed}");
    let ok =
        "certgate_handshakes counter certgate_handshakes_total listener=listener-0,outcome=ok ";
    assert_eq!(sample(&parsed, ok), 7.0);
}

/// With certificates and client_auth, the admin listener speaks mTLS: a client certificate
/// from its trust anchors reads /metrics, a client without one is refused in the handshake,
/// and a plain admin listener off loopback is refused at load.
#[test]
fn admin_listener_over_mtls_requires_a_client_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "prometheus", &pki.client("prometheus", &[]));
    let admin_block = "\n[admin]\nlisten = \"127.0.0.1:0\"\n\
        certificates = [{ cert = \"server.crt\", key = \"server.key\" }]\n\
        client_auth = { mode = \"required\", trust = [\"root.crt\"] }\n";
    let gw = Gateway::start(dir, &(one_route("optional", "") + admin_block));
    let url = format!("https://{}/metrics", gw.admin.unwrap());
    let ca = dir.join("root.crt").display().to_string();
    let (crt, key) = (dir.join("prometheus.crt"), dir.join("prometheus.key"));
    let (crt, key) = (crt.display().to_string(), key.display().to_string());
    let with = curl(&["--cacert", &ca, "--cert", &crt, "--key", &key, &url]);
    assert_eq!(with.status, 200, "{with:?}");
    assert!(with.body.contains("certgate_config_generation"), "{}", with.body);
    let without = curl(&["--cacert", &ca, &url]);
    assert_ne!(without.exit, 0, "no certificate, no admin: {without:?}");
    assert_ne!(without.status, 200);
    let plain = curl(&[&url.replace("https://", "http://")]);
    assert_ne!(plain.status, 200, "{plain:?}");

    let open = one_route("optional", "") + "\n[admin]\nlisten = \"0.0.0.0:9901\"\n";
    std::fs::write(dir.join("open.toml"), open.replace("{port}", "0")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_certgate"))
        .current_dir(dir)
        .args(["serve", "--check", "--config", "open.toml"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("admin.listen") && text.contains("mTLS"), "{text}");
}

/// A renewed upstream client certificate, replaced on disk, is presented on the gateway's
/// next upstream connections without a restart (seed 001's short-lived certificates).
#[test]
fn renewed_upstream_client_certificate_is_presented_after_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &[]));
    let (_server, port, up_pki) = mtls_upstream(dir, "gateway-before");
    let config = format!(
        "{}\n[[upstream]]\nname = \"secure\"\nurl = \"https://127.0.0.1:{port}\"\nca = [\"upstream-ca.crt\"]\nserver_name = \"api.internal\"\nclient_cert = \"gw.crt\"\nclient_key = \"gw.key\"\n\n[[route]]\nupstream = \"secure\"\n",
        listener("required", "")
    );
    let gw = Gateway::start_with_env(dir, &config, &[("CERTGATE_LOG", "info")]);
    let before = curl_as(&gw, Some("joe"), "/", &[]);
    assert_eq!(before.status, 200, "{before:?}");
    assert!(before.body.contains("CN=gateway-before"), "{}", before.body);
    // The renewal writes the certificate and the key; the watcher reloads.
    up_pki.client("gateway-after", &[]).write(dir, "gw");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = curl_as(&gw, Some("joe"), "/", &[]);
        if r.status == 200 && r.body.contains("CN=gateway-after") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still the old certificate: {r:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A reload that leaves an upstream's settings unchanged keeps its pool: the next request,
/// on a new client connection, reuses the open upstream connection instead of reconnecting.
#[test]
fn unchanged_upstream_keeps_its_pool_across_reloads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &[]));
    let (port, accepted) = counting_upstream();
    let config = format!(
        "{}{}\n[[route]]\nupstream = \"app\"\n",
        listener("required", ""),
        upstream_block("app", port)
    );
    let gw = Gateway::start_with_env(dir, &config, &[("CERTGATE_LOG", "info")]);
    let count = || accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(curl_as(&gw, Some("joe"), "/", &[]).status, 200);
    assert_eq!(count(), 1);
    for round in 1..=3 {
        gw.signal("HUP");
        gw.wait_for_log(&format!("reloaded: serving generation {}", round + 1), 1);
        assert_eq!(curl_as(&gw, Some("joe"), "/", &[]).status, 200);
    }
    assert_eq!(count(), 1, "the pooled upstream connection was reused across reloads");
}

/// A reload that moves a listener keeps serving on the bound address and says that the move
/// needs a restart, in the log and in /status; the rest of the reload applies.
#[test]
fn moved_listener_needs_a_restart_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &[]));
    let config = one_route("required", "") + "\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let gw = Gateway::start_with_env(dir, &config, &[("CERTGATE_LOG", "info")]);
    let path = dir.join("certgate.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let (_held, other) = dead_port();
    std::fs::write(
        &path,
        text.replace("127.0.0.1:0\"\ncertificates", &format!("127.0.0.1:{other}\"\ncertificates")),
    )
    .unwrap();
    gw.signal("HUP");
    let log = gw.wait_for_log("needs a restart", 1);
    assert!(log.contains(&format!("moved from 127.0.0.1:0 to 127.0.0.1:{other}")), "{log}");
    assert_eq!(curl_as(&gw, Some("joe"), "/", &[]).status, 200, "still served where it was bound");
    let status: serde_json::Value = serde_json::from_str(&admin(&gw, "GET", "/status").1).unwrap();
    let notes = status["needs_restart"].to_string();
    assert!(notes.contains("listener listener-0 moved"), "{status}");
}
